"""The pipeline spec: one TOML file, validated at start, turned into frozen objects.

Every error names the offending key (``detectors[1].alpha``) and what was expected.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match

from driftline.errors import DriftlineError, SpecError
from driftline.schemas import load_schema

#: Largest spec file read (a spec is a few KiB).
MAX_SPEC_BYTES = 1024 * 1024
#: Deepest nesting of tables and arrays a spec may have (it needs 4).
MAX_SPEC_DEPTH = 16
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")

NUMERIC_TYPES = frozenset({"float", "int", "bool"})
PREDICTION_TARGET = "prediction"
#: Detector targets fed by joined labels: the model's error stream and the observed labels.
ERROR_TARGET = "error"
LABEL_TARGET = "label"
LABEL_TARGETS = frozenset({ERROR_TARGET, LABEL_TARGET})

#: Slice metrics of regressors (the others are classifiers').
REGRESSION_SLICE_METRICS = frozenset({"mae", "rmse"})


def level_param(dtype: str) -> str | None:
    """The hyperparameter that sets detector ``dtype``'s false-alarm budget (``"alpha"``,
    ``"false_alarms_per_million"``), None for a detector whose false alarms are not calibrated
    (`streams.detectors.base.AdjustableLevel` / ``AdjustableRate``).

    >>> level_param("ks"), level_param("adwin")
    ('alpha', None)
    """
    from driftline.streams.detectors.base import level_param_of
    from driftline.streams.detectors.factory import DETECTORS

    return level_param_of(DETECTORS[dtype])


def p_value_level(dtype: str) -> bool:
    """Whether detector ``dtype``'s level is a significance level compared with p-values (the
    detectors Benjamini-Hochberg can correct).

    >>> p_value_level("chi2"), p_value_level("adwin")
    (True, False)
    """
    from driftline.streams.detectors.factory import DETECTORS

    return level_param(dtype) is not None and bool(DETECTORS[dtype].level_is_p_value)


#: Detectors that compare category frequencies; their target may be a string field.
CATEGORICAL_DETECTORS = frozenset({"chi2", "psi", "jsd", "focus_categorical"})


@dataclass(frozen=True)
class InputSpec:
    topic: str
    key_field: str
    time_field: str
    fields: Mapping[str, str]
    max_message_bytes: int
    #: ``json``, or a Schema Registry wire format: ``avro``, ``protobuf``, ``json_schema``
    format: str
    max_key_bytes: int
    max_future_ms: int
    event_id_field: str | None = None


#: Input formats read through a Schema Registry (``[schema_registry]``).
REGISTRY_FORMATS = frozenset({"avro", "protobuf", "json_schema"})


@dataclass(frozen=True)
class SchemaRegistrySpec:
    """``[schema_registry]``: where schema ids are resolved. Secrets are not here: they come
    from the environment or the files named (``agents.registry.registry_client_config``)."""

    url: str
    timeout_ms: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    basic_auth_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password_file: Path | None = None


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    agg: str
    window_ms: int | None
    window: str
    field: str | None = None
    step_ms: int | None = None
    count: int | None = None
    idle_ttl_ms: int | None = None
    where_field: str | None = None
    where_equals: str | int | float | bool | None = None


@dataclass(frozen=True)
class OneHotSpec:
    """A categorical model input: one 0/1 model column ``<field>=<category>`` per category."""

    field: str
    categories: tuple[str | int, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        from driftline.streams.model import one_hot_columns

        return one_hot_columns(self.field, self.categories)


@dataclass(frozen=True)
class ModelSpec:
    #: the model's columns, in order; a one-hot input stands there as its columns
    inputs: tuple[str, ...]
    path: Path | None = None
    builtin: str | None = None
    version: str | None = None
    label_field: str | None = None
    one_hot: tuple[OneHotSpec, ...] = ()

    @property
    def categorical_fields(self) -> tuple[str, ...]:
        """The event fields one-hot inputs encode."""
        return tuple(o.field for o in self.one_hot)

    def encode(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """The one-hot model columns from their fields' values in ``columns`` (a batch's
        arrays, or one event's values)."""
        from driftline.streams.model import one_hot

        out: dict[str, Any] = {}
        for o in self.one_hot:
            out.update(zip(o.columns, one_hot(columns[o.field], o.categories), strict=True))
        return out


@dataclass(frozen=True)
class SkewCheckSpec:
    name: str
    batch: str
    streaming: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MultivariateSpec:
    """One ``[[multivariate]]`` entry: a detector over several features at once."""

    name: str
    method: str
    features: tuple[str, ...]
    #: the detector's hyperparameters (every schema key but name, method, features and
    #: reference_profile; defaults filled in)
    params: Mapping[str, Any]
    reference_profile: Path | None


@dataclass(frozen=True)
class BatchFeaturesSpec:
    topic: str
    key_field: str
    fields: Mapping[str, str]
    defaults: Mapping[str, float]
    load_timeout_ms: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.fields)


@dataclass(frozen=True)
class ImportanceSpec:
    """``[labels.importance]`` (every key present: the schema's defaults are filled in)."""

    method: str
    window: int
    every: int
    threshold: float
    min_examples: int
    n_confirm: int
    n_clear: int
    seed: int


@dataclass(frozen=True)
class LabelsSpec:
    """``[labels]``: where delayed labels come from and what is computed from them."""

    topic: str
    join_key: str
    label_field: str
    ttl_ms: int
    max_pending: int
    threshold: float
    count_window: int
    time_window_ms: int
    learn: bool
    time_field: str | None = None
    importance: ImportanceSpec | None = None


@dataclass(frozen=True)
class SliceSpec:
    """``[[slices]]``: per-value model metrics and detectors over a categorical input field."""

    name: str
    field: str
    #: the declared values (their own slices), or None: the first ``max_values`` seen
    values: tuple[Any, ...] | None
    max_values: int
    #: compared with the global metric; "" = the task's default (`metric_for`)
    metric: str
    window: str
    margin: float
    min_samples: int
    detectors: tuple[str, ...]

    def metric_for(self, task: str) -> str:
        """The compared metric for the model's task (``classification`` / ``regression``);
        `SpecError` if the spec names one of the other task."""
        regression = task == "regression"
        metric = self.metric or ("mae" if regression else "accuracy")
        if (metric in REGRESSION_SLICE_METRICS) != regression:
            raise SpecError(
                f"spec key slices.{self.name}.metric: {metric!r} is not a metric of a "
                f"{'regressor' if regression else 'classifier'}"
            )
        return metric

    @property
    def n_values(self) -> int:
        """Slice values tracked per partition, the 'other' bucket included."""
        return (len(self.values) if self.values is not None else self.max_values) + 1


@dataclass(frozen=True)
class BusinessSpec:
    """``[business]``: a business metric read from its own topic."""

    name: str
    topic: str
    field: str
    agg: str
    window_ms: int
    history_ms: int
    buckets_per_window: int
    time_field: str | None = None

    @property
    def bucket_ms(self) -> int:
        """Width of one history bucket (the window is summed from whole buckets)."""
        return max(1, self.window_ms // self.buckets_per_window)


@dataclass(frozen=True)
class PerformanceEstimationSpec:
    """``[performance_estimation]``: label-free performance estimation (CBPE) of a classifier."""

    chunk_size: int
    reference_size: int
    draws: int
    band_sigmas: float
    #: a score >= threshold predicts class 1 (``labels.threshold``, or its default)
    threshold: float
    #: metric -> lowest acceptable estimate (alert kind ``estimated_performance`` below it)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    #: a profile with a ``calibration`` (from ``driftline profile``); None: first joined labels
    reference_profile: Path | None = None


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    type: str
    target: str
    params: Mapping[str, Any] = field(default_factory=dict)
    reference_profile: Path | None = None
    #: the spec's alpha before the correction (test-based detectors only)
    family_alpha: float | None = None


@dataclass(frozen=True)
class OutputSpec:
    features_topic: str
    predictions_topic: str
    alerts_topic: str
    dlq_topic: str
    late_topic: str
    model_metrics_topic: str
    #: ``json``, or ``avro`` (Schema Registry wire format, schemas registered per topic)
    format: str
    #: one feature vector per event on ``features_topic`` (false: predictions and alerts only)
    emit_features: bool

    @property
    def all_topics(self) -> list[str]:
        """Every topic the worker writes (besides its state changelog)."""
        return [
            *([self.features_topic] if self.emit_features else []),
            self.predictions_topic,
            self.alerts_topic,
            self.dlq_topic,
            self.late_topic,
            self.model_metrics_topic,
        ]


@dataclass(frozen=True)
class WorkerSpec:
    batch_max_records: int
    batch_timeout_ms: int
    web_host: str
    web_port: int
    auto_offset_reset: str
    processing_guarantee: str
    commit_interval_ms: int
    #: /status and /status.json show input values (KS histograms, min/max in alert details)
    status_values: bool


@dataclass(frozen=True)
class TopicSettings:
    """``[topics.<role>]``: how one kind of topic is created (None: not written in the spec;
    the ``[topics]`` value or, for partitions, the input topic's count applies)."""

    partitions: int | None
    replication_factor: int | None
    min_insync_replicas: int | None
    retention_ms: int | None
    retention_bytes: int | None


@dataclass(frozen=True)
class TopicsSpec:
    """``[topics]``: replication and retention of the topics driftline creates.

    ``replication_factor`` and ``min_insync_replicas`` are the schema's defaults unless
    ``*_set`` says the spec wrote them: defaults shrink to what a smaller cluster can do, values
    written in the spec are required of it (see :mod:`driftline.agents.topics`)."""

    replication_factor: int
    min_insync_replicas: int
    replication_factor_set: bool
    min_insync_replicas_set: bool
    outputs: TopicSettings
    dlq: TopicSettings
    late: TopicSettings
    changelog: TopicSettings
    host: TopicSettings

    def role(self, name: str) -> TopicSettings:
        """The settings of ``name`` (outputs, dlq, late, changelog or host)."""
        return getattr(self, name)  # type: ignore[no-any-return]

    def replication(self, role: str | None, brokers: int | None) -> tuple[int, int]:
        """``(replication factor, min.insync.replicas)`` of a ``role`` topic (None: a topic of
        no role, e.g. the input) on a cluster of ``brokers`` (None: any size).

        Defaults shrink to the cluster: ``min(replication_factor, brokers)`` replicas and a min
        ISR of at most replicas - 1 (at least 1), so one broker may be lost. Values written in
        the spec are kept, and refused (:class:`SpecError`) if the cluster cannot do them.

        >>> t = parse_spec({"pipeline": {"name": "p"}, "input": {"topic": "t", "key_field": "k",
        ...     "time_field": "ts", "fields": {"k": "string", "ts": "int"}}}).topics
        >>> t.replication("outputs", 1), t.replication("outputs", 2), t.replication("dlq", 5)
        ((1, 1), (2, 1), (3, 2))
        """
        t = self.role(role) if role is not None else None
        key = f"topics.{role}." if t is not None else "topics."
        rf, rf_key = (t.replication_factor, key) if t is not None else (None, key)
        if rf is None:
            rf, rf_key = self.replication_factor, "topics."
            if not self.replication_factor_set:
                rf_key = ""
                rf = min(rf, brokers) if brokers is not None else rf
        if rf_key and brokers is not None and rf > brokers:
            raise SpecError(
                f"spec key {rf_key}replication_factor: {rf} replicas, but the cluster lists "
                f"{brokers} live broker{'' if brokers == 1 else 's'}; lower it or leave it out "
                f"(one replica per broker, up to {self.replication_factor})"
            )
        isr, isr_key = (t.min_insync_replicas, key) if t is not None else (None, key)
        if isr is None:
            isr, isr_key = self.min_insync_replicas, "topics."
            if not self.min_insync_replicas_set:
                return rf, max(1, min(isr, rf - 1))
        if isr > rf:
            raise SpecError(
                f"spec key {isr_key}min_insync_replicas: {isr} is more than the {rf} "
                f"replica{'' if rf == 1 else 's'} of the {role + ' ' if role else ''}topics, "
                f"so no write (acks=all) could succeed; lower it to at most {rf}"
            )
        return rf, isr


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    input: InputSpec
    features: tuple[FeatureSpec, ...]
    model: ModelSpec | None
    detectors: tuple[DetectorSpec, ...]
    output: OutputSpec
    worker: WorkerSpec
    grace_ms: int
    correction: str
    skew_checks: tuple[SkewCheckSpec, ...]
    topics: TopicsSpec
    multivariate: tuple[MultivariateSpec, ...]
    batch_features: BatchFeaturesSpec | None = None
    labels: LabelsSpec | None = None
    schema_registry: SchemaRegistrySpec | None = None
    slices: tuple[SliceSpec, ...] = field(default_factory=tuple)
    business: BusinessSpec | None = None
    source_path: Path | None = None
    performance_estimation: PerformanceEstimationSpec | None = None
    #: ``[kafka]``: librdkafka client settings, flattened (``security.protocol`` -> ``SSL``)
    kafka: Mapping[str, str] = field(default_factory=dict)
    #: ``[windows] max_entities``: entities a partition's windows hold at most (None: unbounded)
    max_entities: int | None = None

    @property
    def group_id(self) -> str:
        """The Kafka consumer group shared by every worker of this pipeline."""
        return f"driftline.{self.name}"

    @property
    def changelog_topic(self) -> str:
        """The compacted topic holding this pipeline's state snapshots."""
        return changelog_topic_of(self.name)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(
            n
            for n, t in self.input.fields.items()
            if t in NUMERIC_TYPES and n != self.input.key_field
        )

    @property
    def vector_names(self) -> tuple[str, ...]:
        """Names a model input or a detector target may use: numeric fields, streaming
        features, then batch features."""
        batch = self.batch_features.names if self.batch_features else ()
        return self.numeric_fields + tuple(f.name for f in self.features) + batch


def changelog_topic_of(pipeline: str) -> str:
    """The state changelog topic of the pipeline named ``pipeline``."""
    return f"driftline.{pipeline}.state-changelog"


def host_leader_topic_of(pipeline: str) -> str:
    """faust's leader-election topic of the worker host of the pipeline named ``pipeline``
    (the host app ``driftline.<name>.host``)."""
    return f"driftline.{pipeline}.host-__assignor-__leader"


def _key_path(error: ValidationError) -> str:
    parts: list[str] = []
    for p in error.absolute_path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def _schema_error(error: ValidationError) -> SpecError:
    if error.validator == "oneOf" and error.context:
        # the alternatives the value has the type of say what is wrong with it
        near = [e for e in error.context if e.validator != "type" or e.relative_path]
        if near:
            return _schema_error(max(near, key=lambda e: len(e.absolute_path)))
    where = _shorten(_key_path(error))
    message = error.message
    if len(message) > 200:  # jsonschema quotes the whole value: a long string, a whole table
        message = message.replace(repr(error.instance), _shorten(repr(error.instance)))
    if error.validator == "additionalProperties":
        return SpecError(f"spec key {where}: {message} (remove it or fix its spelling)")
    if error.validator == "required":
        return SpecError(f"spec key {where}: {message}")
    expected = error.schema.get("description") if isinstance(error.schema, dict) else None
    hint = f" Expected: {expected}" if expected else ""
    return SpecError(f"spec key {where}: {message}.{hint}")


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (an error quotes what was written, not all of it)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# -- defaults: the schema's ``default`` keywords are their only source ---------------------------
def _filling(properties: Any) -> Any:
    """The ``properties`` keyword, first setting each absent property that has a default."""

    def fill(v: Any, props: Mapping[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from properties(v, props, instance, schema)

    return fill


@cache
def _filling_validator() -> Draft202012Validator:
    cls = validators.extend(
        Draft202012Validator,
        {"properties": _filling(Draft202012Validator.VALIDATORS["properties"])},
    )
    return cls(load_schema("spec"))


@cache
def schema_defaults() -> dict[str, Any]:
    """Every ``default`` of ``schemas/spec.schema.json`` by key path (``worker.web_port``;
    ``[]`` marks an array's items: ``features[].window``).

    >>> schema_defaults()["worker.web_port"], schema_defaults()["features[].window"]
    (6066, 'tumbling')
    """
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            key = f"{path}.{name}" if path else name
            if "default" in sub:
                out[key] = sub["default"]
            walk(sub, key)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]")
        for alt in ("oneOf", "anyOf", "allOf"):
            for sub in node.get(alt, []):
                walk(sub, path)

    walk(load_schema("spec"), "")
    return out


def default_of(key: str) -> Any:
    """The schema's default for ``key`` (a path as in :func:`schema_defaults`).

    >>> default_of("output.alerts_topic")
    'driftline.alerts'
    """
    try:
        return copy.deepcopy(schema_defaults()[key])
    except KeyError:
        raise SpecError(f"spec key {key}: the spec schema gives it no default") from None


def with_defaults(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[ValidationError]]:
    """A copy of ``data`` with every absent key that has a schema default set to it, and the
    schema errors of ``data`` (sorted by key path)."""
    filled = copy.deepcopy(dict(data))
    errors = sorted(_filling_validator().iter_errors(filled), key=lambda e: list(e.absolute_path))
    return filled, errors


def _dotted_fields(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with nested tables of ``input.fields`` as dotted names: TOML reads
    ``user.id = "string"`` as ``{"user": {"id": "string"}}``, which means field ``user.id``
    (the ``id`` of the nested object ``user``).

    >>> _dotted_fields({"input": {"fields": {"user": {"id": "string"}, "ts": "timestamp"}}})
    {'input': {'fields': {'user.id': 'string', 'ts': 'timestamp'}}}
    """
    inp = data.get("input")
    fields = inp.get("fields") if isinstance(inp, Mapping) else None
    if not isinstance(fields, Mapping) or not any(isinstance(v, Mapping) for v in fields.values()):
        return data

    def flat(prefix: str, node: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        for k, v in node.items():
            if isinstance(v, Mapping) and v:
                yield from flat(f"{prefix}{k}.", v)
            else:
                yield f"{prefix}{k}", v

    return {**data, "input": {**inp, "fields": dict(flat("", fields))}}


def parse_spec(
    data: Mapping[str, Any], *, base_dir: Path | None = None, model_file_required: bool = True
) -> PipelineSpec:
    """Validate a spec already parsed from TOML and build a :class:`PipelineSpec`.

    Absent keys take the defaults of ``schemas/spec.schema.json``, filled in while validating.
    """
    _check_depth(data)
    given = _dotted_fields(data)
    data, errors = with_defaults(given)
    if errors:
        best = min(errors, key=lambda e: (len(list(e.context or [])), -len(list(e.absolute_path))))
        raise _schema_error(best)
    _check_topics(data, data["pipeline"]["name"])
    inp = data["input"]
    fields = dict(inp["fields"])
    key, tfield = inp["key_field"], inp["time_field"]
    if key not in fields:
        raise SpecError(f"spec key input.key_field: {key!r} is not declared in input.fields")
    if fields[key] not in ("string", "int"):
        raise SpecError(f"spec key input.fields.{key}: an entity key must be 'string' or 'int'")
    if tfield not in fields:
        raise SpecError(f"spec key input.time_field: {tfield!r} is not declared in input.fields")
    if fields[tfield] not in ("timestamp", "int"):
        raise SpecError(
            f"spec key input.fields.{tfield}: the time field must be 'timestamp' "
            "(epoch ms or ISO-8601 with a zone) or 'int' (epoch ms)"
        )
    fields[tfield] = "timestamp"
    input_spec = InputSpec(
        topic=inp["topic"],
        key_field=key,
        time_field=tfield,
        fields=fields,
        max_message_bytes=inp["max_message_bytes"],
        event_id_field=inp.get("event_id_field"),
        format=inp["format"],
        max_key_bytes=inp["max_key_bytes"],
        max_future_ms=inp["max_future_ms"],
    )
    registry = _parse_schema_registry(data, input_spec.format, data["output"]["format"], base_dir)
    eid = input_spec.event_id_field
    if eid is not None and fields.get(eid) not in ("string", "int"):
        raise SpecError(
            f"spec key input.event_id_field: {eid!r} must be a 'string' or 'int' field of "
            "input.fields"
        )
    numeric = {n for n, t in fields.items() if t in NUMERIC_TYPES and n != key}

    features = [_parse_feature(i, f, fields, numeric) for i, f in enumerate(data["features"])]
    seen: set[str] = set(fields)
    for i, f in enumerate(features):
        if f.name in seen:
            raise SpecError(
                f"spec key features[{i}].name: {f.name!r} is already used; names must be unique"
            )
        seen.add(f.name)
    names = [n for n in fields if n in numeric] + [f.name for f in features]
    batch = _parse_batch_features(data, key, set(names))
    if batch is not None:
        names += list(batch.names)

    model = None
    if "model" in data:
        model = _parse_model(data["model"], names, input_spec, base_dir, model_file_required)

    labels = _parse_labels(data, input_spec, model)
    kinds = _target_kinds(input_spec, names, batch, model is not None, labels is not None)
    detectors = _parse_detectors(data, kinds, base_dir)
    slices = _parse_slices(data, input_spec, detectors, model, labels)

    return PipelineSpec(
        name=data["pipeline"]["name"],
        input=input_spec,
        features=tuple(features),
        model=model,
        detectors=tuple(detectors),
        output=OutputSpec(**data["output"]),
        worker=_parse_worker(given.get("worker", {}), data["worker"]),
        topics=_parse_topics(given.get("topics", {}), data["topics"]),
        grace_ms=data["windows"]["grace_ms"],
        max_entities=data["windows"].get("max_entities"),
        correction=data["drift"]["correction"],
        batch_features=batch,
        skew_checks=_parse_skew(
            data, batch, [n for n in names if batch is None or n not in batch.names]
        ),
        labels=labels,
        schema_registry=registry,
        slices=slices,
        business=_parse_business(data),
        kafka=_parse_kafka(data["kafka"]),
        multivariate=_parse_multivariate(data, names, base_dir),
        performance_estimation=_parse_performance_estimation(data, model, labels, base_dir),
    )


def _parse_schema_registry(
    data: Mapping[str, Any], fmt: str, out_fmt: str, base_dir: Path | None
) -> SchemaRegistrySpec | None:
    """``[schema_registry]``: present exactly when the input or output format needs it; file
    paths are relative to the spec file."""
    raw = data.get("schema_registry")
    if raw is None and (fmt in REGISTRY_FORMATS or out_fmt == "avro"):
        key, what = (
            ("input", f'"{fmt}" values name their schema')
            if fmt in REGISTRY_FORMATS
            else ("output", '"avro" outputs register their schemas')
        )
        raise SpecError(
            f"spec key {key}.format: {what} in a Schema Registry; add a [schema_registry] "
            'section with its url (e.g. url = "http://registry:8081")'
        )
    if raw is None:
        return None
    if fmt not in REGISTRY_FORMATS and out_fmt != "avro":
        raise SpecError(
            f'spec key schema_registry: input.format is "{fmt}" and output.format "{out_fmt}", '
            'which need no registry; set input.format = "avro", "protobuf" or "json_schema" '
            'or output.format = "avro", or remove the section'
        )
    kw: dict[str, Any] = dict(raw)
    for url in kw["url"].split(","):
        scheme, sep, rest = url.strip().partition("://")
        if "@" in url:  # never echo it: it holds a password
            raise SpecError(
                "spec key schema_registry.url: has user:password@ in it; take them out and set "
                "$DRIFTLINE_SCHEMA_REGISTRY_BASIC_AUTH=user:password (or basic_auth_file)"
            )
        if not sep or scheme not in ("http", "https", "mock") or not rest:
            raise SpecError(
                f"spec key schema_registry.url: {url.strip()!r} is not an http://, https:// or "
                "mock:// URL (several: comma-separated)"
            )
    for k in ("basic_auth_file", "ca_file", "cert_file", "key_file", "key_password_file"):
        if k in kw:
            path = Path(kw[k])
            kw[k] = base_dir / path if not path.is_absolute() and base_dir is not None else path
    if ("cert_file" in kw) != ("key_file" in kw):
        raise SpecError("spec key schema_registry: mutual TLS needs both cert_file and key_file")
    if "key_password_file" in kw and "key_file" not in kw:
        raise SpecError("spec key schema_registry.key_password_file: only with key_file")
    return SchemaRegistrySpec(**kw)


def load_spec(path: str | Path, *, model_file_required: bool = True) -> PipelineSpec:
    """Read, validate and build the spec at ``path``; raise :class:`SpecError` if it is wrong
    (whatever the file holds: binary data, text that is not UTF-8, TOML nested too deeply)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(
            f"cannot read spec file {p}: {e.strerror}; pass an existing TOML file with -c"
        ) from e
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec file {p} is larger than {MAX_SPEC_BYTES // 1024} KiB; is it the pipeline "
            "spec? Pass the TOML file with -c"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SpecError(
            f"spec file {p} is not UTF-8 text (line {line}, byte "
            f"offset {e.start}: {raw[e.start : e.start + 1]!r}); pass the TOML file with -c, "
            "saved as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec file {p} is not valid TOML: {e}") from None
    except RecursionError:
        raise SpecError(
            f"spec file {p} nests arrays or tables more than {MAX_SPEC_DEPTH} deep; a spec "
            "needs a few levels"
        ) from None
    spec = parse_spec(data, base_dir=p.resolve().parent, model_file_required=model_file_required)
    return PipelineSpec(**{**spec.__dict__, "source_path": p.resolve()})


def _check_depth(data: Any, depth: int = 0, where: str = "") -> None:
    """Refuse tables and arrays nested deeper than :data:`MAX_SPEC_DEPTH` (a spec needs 4)."""
    if depth > MAX_SPEC_DEPTH:
        raise SpecError(
            f"spec key {where or '(top level)'}: nested more than {MAX_SPEC_DEPTH} levels deep; "
            "a spec needs a few levels"
        )
    if isinstance(data, dict):
        for k, v in data.items():
            _check_depth(v, depth + 1, f"{where}.{k}" if where else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _check_depth(v, depth + 1, f"{where}[{i}]")


def _topic_keys(data: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every ``(spec key, topic)`` of the spec (with defaults): each string under a key named
    ``topic`` or ``*_topic``, wherever its section is."""
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{where}.{k}" if where else str(k)
            if isinstance(v, str) and (k == "topic" or str(k).endswith("_topic")):
                yield key, v
            else:
                yield from _topic_keys(v, key)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _topic_keys(v, f"{where}[{i}]")


def _check_topics(data: Mapping[str, Any], pipeline: str) -> None:
    """Every topic the pipeline reads or writes is its own: an output on the input (or on
    another output, or on a topic driftline keeps for itself) would be read back or mixed, e.g.
    each dead letter consumed again."""
    seen = {
        changelog_topic_of(pipeline): "the pipeline's state changelog",
        host_leader_topic_of(pipeline): "the worker host's leader topic (faust's)",
    }
    for key, topic in _topic_keys(data):
        if topic in seen:
            raise SpecError(
                f"spec key {key}: topic {topic!r} is also {seen[topic]}; every topic the "
                "pipeline reads or writes must be its own: give it another name"
            )
        seen[topic] = f"spec key {key}"


def check_web_host(host: str, where: str = "spec key worker.web_host") -> None:
    """``worker.web_host`` (or ``where``) is an IP address or a host name (what the web server
    binds to)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    ok = len(host) <= 253 and all(_HOST_LABEL.fullmatch(lb) for lb in labels)
    if not ok or labels[-1].isdigit():
        raise SpecError(
            f"{where}: {host!r} is not an IP address or a host name; give "
            "the address the web server binds to (127.0.0.1: this host only)"
        )


_NO_FIELD_AGGS = frozenset({"count", "rate", "since_prev"})
#: Size keys of a feature: what each means and the window kinds that take it.
_WINDOW_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "window_ms": ("the window's length in ms", ("tumbling", "hopping", "sliding")),
    "step_ms": ("the hop in ms, dividing window_ms", ("hopping",)),
    "count": ("how many of the entity's latest events", ("count",)),
    "idle_ttl_ms": ("forget an entity idle this long", ("sliding", "count")),
}
#: Size keys each window kind needs.
_WINDOW_NEEDS = {
    "tumbling": ("window_ms",),
    "hopping": ("window_ms", "step_ms"),
    "sliding": ("window_ms",),
    "count": ("count",),
}


def _check_window_keys(i: int, f: Mapping[str, Any]) -> None:
    """The feature's size keys fit its window kind; say which key to remove or add."""
    window = f["window"]
    for k, (what, kinds) in _WINDOW_KEYS.items():
        if k in f and window not in kinds:
            only = " and ".join(kinds)
            raise SpecError(
                f"spec key features[{i}].{k}: a {window} window has no {k} ({what}: {only} "
                f"windows only); remove it or change features[{i}].window"
            )
    for k in _WINDOW_NEEDS[window]:
        if k not in f:
            raise SpecError(
                f"spec key features[{i}].{k}: a {window} window needs {k} ({_WINDOW_KEYS[k][0]})"
            )


def _parse_feature(
    i: int, f: Mapping[str, Any], fields: Mapping[str, str], numeric: set[str]
) -> FeatureSpec:
    """One ``[[features]]`` entry, checked against the declared fields and the window rules."""
    from driftline.streams.features import FeatureDef  # pure; imported here to keep the spec light

    where = f.get("where")
    src = f.get("field")
    agg = f["agg"]
    if agg in _NO_FIELD_AGGS:
        if src is not None and agg != "count":
            raise SpecError(f"spec key features[{i}].field: agg {agg!r} takes no field")
    elif src is None:
        raise SpecError(f"spec key features[{i}].field: agg {agg!r} needs a source field")
    elif agg == "distinct":
        if src not in fields:
            raise SpecError(f"spec key features[{i}].field: {src!r} is not in input.fields")
    elif src not in numeric:
        raise SpecError(
            f"spec key features[{i}].field: {src!r} is not a numeric field of input.fields "
            f"(numeric fields: {sorted(numeric)})"
        )
    if where is not None and where["field"] not in fields:
        raise SpecError(
            f"spec key features[{i}].where.field: {where['field']!r} is not in input.fields"
        )
    _check_window_keys(i, f)
    spec = FeatureSpec(
        name=f["name"],
        agg=agg,
        window_ms=f.get("window_ms"),
        field=src,
        window=f["window"],
        step_ms=f.get("step_ms"),
        count=f.get("count"),
        idle_ttl_ms=f.get("idle_ttl_ms"),
        where_field=None if where is None else where["field"],
        where_equals=None if where is None else where["equals"],
    )
    try:
        to_feature_def(spec, FeatureDef)
    except SpecError as e:
        raise _keyed(f"features[{i}]", e) from None
    return spec


def to_feature_def(f: FeatureSpec, cls: Any = None) -> Any:
    """The ``streams.features.FeatureDef`` for a feature of the spec."""
    if cls is None:
        from driftline.streams.features import FeatureDef as cls
    kw: dict[str, Any] = {"window": f.window}
    for k in ("step_ms", "count", "idle_ttl_ms", "where_field", "where_equals"):
        v = getattr(f, k)
        if v is not None:
            kw[k] = v
    src = None if f.agg == "count" else f.field
    return cls(f.name, src, f.agg, f.window_ms, **kw)


def _profile_error(path: Path, why: str) -> SpecError:
    return SpecError(
        f"reference_profile: {path} {why}; build it with `driftline profile` from this spec"
    )


def _profile_doc(path: Path) -> Any:
    """The reference profile file at ``path``, read and checked against
    ``schemas/profile.schema.json`` (a `SpecError` saying what is wrong otherwise)."""
    import orjson

    from driftline.schemas import validator

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _profile_error(path, f"cannot be read ({e.strerror})") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _profile_error(path, f"is not JSON ({e})") from None
    e = best_match(validator("profile").iter_errors(doc))
    if e is not None:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        why = f"is not a reference profile: at {where}: {str(e.message)[:200]}"
        raise _profile_error(path, why)
    return doc


def read_calibration(path: Path) -> Any:
    """The ``streams.calibration.IsotonicCalibrator`` of the reference profile at ``path``
    (``driftline profile`` on labelled events writes it); a `SpecError` otherwise."""
    from driftline.streams.calibration import IsotonicCalibrator

    doc = _profile_doc(path)
    if "calibration" not in doc:
        raise _profile_error(
            path,
            "has no calibration (profile events that carry the labels.label_field, 0/1, with a "
            "classifier [model])",
        )
    try:
        return IsotonicCalibrator.from_snapshot(doc["calibration"])
    except DriftlineError as e:
        raise _profile_error(path, f"has a calibration that cannot be used ({e})") from None


def read_profile(path: Path, target: str) -> Any:
    """The ``streams.profile.Profile`` of column ``target`` in the reference profile file at
    ``path`` (written by ``driftline profile``); a `SpecError` saying what is wrong with the
    file otherwise."""
    from driftline.streams.profile import Profile

    def bad(why: str) -> SpecError:
        return _profile_error(path, why)

    doc = _profile_doc(path)
    columns = doc.get("columns", {target: doc})
    if target not in columns:
        raise bad(f"has no column {target!r} (it has {sorted(columns)[:20]})")
    col = columns[target]
    q = col.get("quantiles", [])
    if any(b < a for a, b in itertools.pairwise(q)):
        raise bad(f"is not a reference profile: the quantiles of {target!r} are not ascending")
    try:
        return Profile.from_dict(col)
    except DriftlineError as e:
        raise bad(f"is not a reference profile ({e})") from None


def build_spec_detector(d: DetectorSpec) -> Any:
    """A fresh detector for ``d`` (with its reference profile, if any)."""
    from driftline.streams.detectors.factory import build_detector

    params = dict(d.params)
    if d.reference_profile is not None:
        profile = read_profile(d.reference_profile, d.target)
        try:
            if d.type == "ks":
                from driftline.streams.params import MAX_VALUES, int_param

                size = params.get("reference_size", detector_params("ks")["reference_size"].default)
                params["reference"] = profile.sample(
                    int_param("reference_size", size, 1, MAX_VALUES)
                )
            elif d.type in ("summary", "chi2", "psi", "jsd"):
                params["reference"] = profile
            return build_detector(d.type, **params)
        except SpecError:
            raise
        except DriftlineError as e:  # the profile does not suit the detector (empty, other kind)
            raise SpecError(
                f"reference_profile: {d.reference_profile} cannot be the {d.type} detector's "
                f"reference for {d.target!r} ({e}); build it with `driftline profile`"
            ) from None
    return build_detector(d.type, **params)


def _parse_model(
    m: Mapping[str, Any],
    names: list[str],
    inp: InputSpec,
    base_dir: Path | None,
    model_file_required: bool,
) -> ModelSpec:
    """``[model]``: one source, inputs that exist (one-hot inputs expanded to their columns)."""
    if ("path" in m) == ("builtin" in m):
        raise SpecError("spec key model: give exactly one of model.path or model.builtin")
    inputs: list[str] = []
    one_hot: list[OneHotSpec] = []
    for j, item in enumerate(m["inputs"]):
        if isinstance(item, str):
            if item not in names:
                hint = ""
                if inp.fields.get(item) == "string":
                    hint = (
                        f"; {item!r} is a string field: give it as {{field = {item!r}, "
                        'one_hot = ["<category>", ...]}'
                    )
                raise SpecError(
                    f"spec key model.inputs[{j}]: {item!r} is not a numeric field or "
                    f"feature ({names}){hint}"
                )
            columns: tuple[str, ...] = (item,)
        else:
            one_hot.append(_parse_one_hot(j, item, inp))
            columns = one_hot[-1].columns
            clash = sorted(set(columns) & (set(names) | set(inp.fields)))
            if clash:
                raise SpecError(
                    f"spec key model.inputs[{j}]: one-hot columns {clash} have the names of "
                    "fields or features; rename those"
                )
        for c in columns:
            if c in inputs:
                raise SpecError(
                    f"spec key model.inputs[{j}]: {c!r} is already a model input; list each "
                    "input once"
                )
            inputs.append(c)
    path = None
    if "path" in m:
        path = Path(m["path"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if model_file_required and not path.is_file():
            raise SpecError(
                f"spec key model.path: no model file at {path}; train one or fix the path"
            )
    return ModelSpec(
        inputs=tuple(inputs),
        path=path,
        builtin=m.get("builtin"),
        version=m.get("version"),
        label_field=m.get("label_field"),
        one_hot=tuple(one_hot),
    )


def _parse_one_hot(j: int, item: Mapping[str, Any], inp: InputSpec) -> OneHotSpec:
    """``{field = "country", one_hot = ["de", "fr"]}``: a string or int event field and
    categories of its type."""
    name, categories = item["field"], item["one_hot"]
    kind = inp.fields.get(name)
    where = f"spec key model.inputs[{j}]"
    if name == inp.key_field or kind not in ("string", "int"):
        what = "not in input.fields" if kind is None else f"a {kind} field"
        if name == inp.key_field:
            what = "the entity key"
        elif name == inp.time_field:
            what = "the event time"
        raise SpecError(
            f"{where}.field: {name!r} is {what}; one_hot encodes a string or int field of "
            "input.fields (give numeric fields by name)"
        )
    want, plural = (str, "strings") if kind == "string" else (int, "integers")
    for k, c in enumerate(categories):
        if type(c) is not want:
            raise SpecError(
                f"{where}.one_hot[{k}]: {name!r} is a {kind} field; list its categories as "
                f"{plural} (got {c!r})"
            )
    return OneHotSpec(name, tuple(categories))


def _target_kinds(
    inp: InputSpec, names: list[str], batch: BatchFeaturesSpec | None, model: bool, labels: bool
) -> dict[str, str]:
    """Every detector target of the spec -> its kind: ``string``, ``int``, ``bool``, ``float``
    (a field or batch feature of that type), ``feature`` (streaming, a float), ``prediction``
    (a float score), ``error`` / ``label`` (from joined labels)."""
    kinds = {
        n: t
        for n, t in inp.fields.items()
        if t == "string" or (t in NUMERIC_TYPES and n != inp.key_field)
    }
    kinds |= {n: "feature" for n in names if n not in kinds}
    if batch is not None:
        kinds |= dict(batch.fields)
    if model:
        kinds[PREDICTION_TARGET] = PREDICTION_TARGET
    if labels:
        kinds |= {t: t for t in LABEL_TARGETS}
    return kinds


def _check_target(i: int, dtype: str, target: str, kinds: Mapping[str, str]) -> None:
    """The detector can read ``target``; else say what is wrong and what to do."""
    where = f"spec key detectors[{i}].target: {target!r}"
    kind = kinds.get(target)
    categorical = dtype in CATEGORICAL_DETECTORS
    if kind is None and target in LABEL_TARGETS:
        what = "the model's error stream" if target == ERROR_TARGET else "the observed labels"
        raise SpecError(
            f"{where} is {what}: the targets 'error'/'label' (with [labels]) come from delayed "
            "labels joined to the predictions; add a [labels] section"
        )
    if kind is None and target == PREDICTION_TARGET:
        raise SpecError(f"{where} is the model's score: add a [model] section")
    if kind is None:
        raise SpecError(
            f"{where} is not a field, feature or stream of this spec; choose one of "
            f"{sorted(t for t, k in kinds.items() if categorical or k != 'string')}"
        )
    if kind == "string" and not categorical:
        raise SpecError(
            f"{where} is a string field and {dtype} compares numbers; use chi2 (or psi, jsd) "
            "for categorical fields"
        )
    if dtype in ("chi2", "focus_categorical") and kind in ("float", "feature", PREDICTION_TARGET):
        what = {"feature": "a feature (a float)", PREDICTION_TARGET: "the score (a float)"}
        raise SpecError(
            f"{where} is {what.get(kind, 'a float field')}, but {dtype} needs a categorical "
            "(string/int) field; use ks or np_focus for numeric fields"
        )


@cache
def detector_params(dtype: str) -> Mapping[str, Any]:
    """The spec keys a detector type takes: its constructor's parameters (``inspect``) by name,
    each with the detector's own default."""
    import inspect

    from driftline.streams.detectors.factory import DETECTORS

    params = inspect.signature(DETECTORS[dtype].__init__).parameters
    return {n: p for n, p in params.items() if n not in ("self", "reference")}


def _default_set(kind: str) -> str:
    """Which of ``[drift] default_detectors`` a target of ``kind`` (`_target_kinds`) gets."""
    if kind == ERROR_TARGET:
        return "error"
    return "categorical" if kind in ("string", "bool", LABEL_TARGET) else "numeric"


def _watched(data: Mapping[str, Any], kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    """``[drift] watch``: the ``[[detectors]]`` entries of each watched target's default set,
    named ``<target>_<type>``."""
    out: list[dict[str, Any]] = []
    sets = data["drift"]["default_detectors"]
    for k, target in enumerate(data["drift"]["watch"]):
        kind = kinds.get(target)
        if kind is None:
            raise SpecError(
                f"spec key drift.watch[{k}]: {target!r} is not a field, feature or stream of "
                f"this spec; choose among {sorted(kinds)}"
            )
        for entry in sets[_default_set(kind)]:
            if "type" not in entry or {"name", "target"} & set(entry):
                raise SpecError(
                    f"spec key drift.default_detectors: got {entry!r}; expected an entry with a "
                    "type and hyperparameters, no name or target"
                )
            out.append({**entry, "name": f"{target}_{entry['type']}", "target": target})
    return out


#: The parameter that makes a detector one-sided, for those whose default is two-sided.
_ERROR_SIDE = {"adwin": "direction", "page_hinkley": "mode"}


def _parse_detectors(
    data: Mapping[str, Any],
    kinds: Mapping[str, str],
    base_dir: Path | None,
) -> list[DetectorSpec]:
    """``[[detectors]]``: targets exist, hyperparameters accepted by the detector itself.

    With ``[drift] correction = "bonferroni"`` (the default) the m calibrated detectors (those
    with a `level_param`: ks, chi2 by ``alpha``, the sequential ones by
    ``false_alarms_per_million``) each get ``1 / m`` of their budget, so the pipeline's false
    alarms stay within one detector's budget (union bound). With ``"benjamini_hochberg"`` the
    p-value tests (ks, chi2) start at ``alpha / m_tests`` and move per batch; the others keep
    their Bonferroni share ``1 / m``.
    """
    raw = [*data["detectors"], *_watched(data, kinds)]
    correction = data["drift"]["correction"]
    m = sum(1 for d in raw if level_param(d["type"]) is not None)
    m_tests = sum(1 for d in raw if p_value_level(d["type"]))
    out: list[DetectorSpec] = []
    seen: set[str] = set()
    for i, d in enumerate(raw):
        if d["name"] in seen:
            raise SpecError(f"spec key detectors[{i}].name: {d['name']!r} is used twice")
        seen.add(d["name"])
        _check_target(i, d["type"], d["target"], kinds)
        params = {
            k: v for k, v in d.items() if k not in ("name", "type", "target", "reference_profile")
        }
        side = _ERROR_SIDE.get(d["type"])
        if d["target"] == ERROR_TARGET and side is not None and side not in params:
            # concept drift is a worse model: one-sided unless [drift] error_direction = "both"
            params[side] = data["drift"]["error_direction"]
        family_alpha = None
        split = ""  # how the budget was split, for errors
        lp = level_param(d["type"])
        if lp is not None:
            # bonferroni: level / m throughout; benjamini_hochberg: the p-value tests alpha /
            # m_tests until the others' p-values allow more (streams.fdr.bh_levels, applied per
            # batch by the pipeline), the rest level / m
            from driftline.streams.detectors.base import check_level
            from driftline.streams.detectors.factory import DETECTORS

            try:  # the user's level, checked before it is split
                default = detector_params(d["type"])[lp].default
                level = check_level(DETECTORS[d["type"]], params.get(lp, default))
            except SpecError as e:
                raise _keyed(f"detectors[{i}]", e) from None
            is_test = p_value_level(d["type"])
            share = m_tests if correction == "benjamini_hochberg" and is_test else m
            if is_test:
                family_alpha = level
            if correction != "none" and share > 1:
                params[lp] = level / share
                split = (
                    f" ({lp} = {level:g} split over the {share} calibrated detectors of the "
                    f'pipeline by [drift] correction = "{correction}"; raise {lp} or set '
                    'correction = "none")'
                )
            else:
                params[lp] = level
        profile = _profile_path(f"detectors[{i}]", d, base_dir)
        _check_detector_params(i, d["type"], params)
        spec = DetectorSpec(d["name"], d["type"], d["target"], params, profile, family_alpha)
        try:
            build_spec_detector(spec)
        except SpecError as e:
            if split and str(e).startswith(f"{lp}:"):
                e = SpecError(f"{e}{split}")
            raise _keyed(f"detectors[{i}]", e) from None
        out.append(spec)
    return out


def _profile_path(
    where: str, entry: Mapping[str, Any], base_dir: Path | None, source: str = ""
) -> Path | None:
    """The ``reference_profile`` file of a spec entry (relative to the spec file's folder), None
    without one; a `SpecError` naming ``where`` (and what to profile, ``source``) if there is no
    such file."""
    if "reference_profile" not in entry:
        return None
    profile = Path(entry["reference_profile"])
    if not profile.is_absolute() and base_dir is not None:
        profile = base_dir / profile
    if not profile.is_file():
        raise SpecError(
            f"spec key {where}.reference_profile: no profile at {profile}; build one with "
            f"`driftline profile`{source}"
        )
    return profile


def _keyed(where: str, e: SpecError) -> SpecError:
    """Prefix a component's message (``alpha: got 2.0; ...``) with the spec key it came from."""
    m = re.match(r"^(\w+): (.*)$", str(e), re.S)
    if m:
        return SpecError(f"spec key {where}.{m.group(1)}: {m.group(2)}")
    return SpecError(f"spec key {where}: {e}")


def _check_detector_params(i: int, dtype: str, params: Mapping[str, Any]) -> None:
    accepted = list(detector_params(dtype))
    for k in params:
        if k not in accepted:
            raise SpecError(
                f"spec key detectors[{i}].{k}: the {dtype} detector has no parameter {k!r}; "
                f"it takes {', '.join(accepted)}"
            )


def _parse_worker(given: Mapping[str, Any], filled: Mapping[str, Any]) -> WorkerSpec:
    """``[worker]`` as written (``given``) and with the schema's defaults (``filled``)."""
    if "commit_interval_ms" in given and filled["processing_guarantee"] != "at_least_once":
        raise SpecError(
            "spec key worker.commit_interval_ms: only with processing_guarantee = "
            '"at_least_once"; exactly_once commits every batch in one transaction'
        )
    check_web_host(filled["web_host"])
    return WorkerSpec(**filled)


def _parse_kafka(section: Mapping[str, Any]) -> dict[str, str]:
    """``[kafka]`` flattened to property -> text; secrets and reserved properties refused."""
    from driftline.kafka_config import flatten_section, spec_section_errors

    for problem in spec_section_errors(section):
        raise SpecError(problem)
    return flatten_section(section)


def _parse_labels(
    data: Mapping[str, Any], inp: InputSpec, model: ModelSpec | None
) -> LabelsSpec | None:
    raw = data.get("labels")
    if raw is None:
        return None
    if model is None:
        raise SpecError("spec key labels: labels grade predictions; add a [model] section")
    clash = LABEL_TARGETS & set(inp.fields)
    if clash:
        raise SpecError(
            f"spec key input.fields: {sorted(clash)} are reserved for the label-stream "
            "detector targets when [labels] is set; rename the field"
        )
    kw = {k: v for k, v in raw.items() if k != "importance"}
    spec = LabelsSpec(**kw)
    if spec.join_key == "event_id" and inp.event_id_field is None:
        raise SpecError(
            "spec key labels.join_key: 'event_id' needs input.event_id_field (the field with "
            "each event's unique id)"
        )
    imp = raw.get("importance")
    if imp is not None:
        importance = ImportanceSpec(**imp)
        if importance.min_examples > importance.window:
            raise SpecError(
                f"spec key labels.importance.min_examples: {importance.min_examples} is more "
                f"than labels.importance.window ({importance.window}); it could never be met"
            )
        spec = LabelsSpec(**{**spec.__dict__, "importance": importance})
    return spec


#: Most slice values (the 'other' buckets included) over all [[slices]] of a pipeline: bounds
#: the Prometheus series of the ``slice`` label and the per-partition slice state.
MAX_SLICE_VALUES = 200
#: Most per-slice-value detector instances per partition (values times ``slices.detectors``).
MAX_SLICE_DETECTORS = 400


def _parse_slices(
    data: Mapping[str, Any],
    inp: InputSpec,
    detectors: list[DetectorSpec],
    model: ModelSpec | None,
    labels: LabelsSpec | None,
) -> tuple[SliceSpec, ...]:
    """``[[slices]]``: a categorical field each, something to compute, a bounded cardinality."""
    by_name = {d.name: d for d in detectors}
    out: list[SliceSpec] = []
    seen: set[str] = set()
    for i, s in enumerate(data["slices"]):
        where = f"spec key slices[{i}]"
        f = s["field"]
        dtype = inp.fields.get(f)
        if dtype not in ("string", "int", "bool") or f in (inp.key_field, inp.time_field):
            raise SpecError(
                f"{where}.field: {f!r} is not a string, int or bool field of input.fields "
                "(nor the key or time field); a slice splits the events by a categorical field"
            )
        name = s.get("name", f)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,100}", name):
            raise SpecError(
                f"{where}.name: the field {f!r} is no valid slice name; give the slice a name "
                "(letters, digits, _)"
            )
        if name in seen:
            raise SpecError(f"{where}.name: {name!r} is used twice; slice names must be unique")
        seen.add(name)
        values = s.get("values")
        if values is not None:
            want = {"string": str, "int": int, "bool": bool}[dtype]
            bad = [v for v in values if type(v) is not want]
            if bad:
                raise SpecError(f"{where}.values: {bad[0]!r} is not a {dtype} like the field {f!r}")
            values = tuple(values)
        for j, dn in enumerate(s["detectors"]):
            d = by_name.get(dn)
            if d is None:
                raise SpecError(f"{where}.detectors[{j}]: no [[detectors]] entry named {dn!r}")
            if d.target in LABEL_TARGETS:
                raise SpecError(
                    f"{where}.detectors[{j}]: {dn!r} reads the label stream ({d.target!r}); "
                    "slices run input-side detectors only (fields, features, prediction)"
                )
        if labels is None and not s["detectors"] and "performance_estimation" not in data:
            raise SpecError(
                f"{where}: a slice computes model metrics from joined labels (add [labels]), "
                "estimates them ([performance_estimation]) or runs detectors per value (list "
                "them in slices.detectors)"
            )
        out.append(SliceSpec(
            name=name, field=f, values=values, max_values=s["max_values"],
            metric=s.get("metric", ""),
            window=s["window"], margin=float(s["margin"]), min_samples=s["min_samples"],
            detectors=tuple(s["detectors"]),
        ))  # fmt: skip
    instances = sum(sl.n_values * len(sl.detectors) for sl in out)
    if instances > MAX_SLICE_DETECTORS:
        raise SpecError(
            f"spec key slices: {instances} detector instances per partition (values times "
            f"slices.detectors); at most {MAX_SLICE_DETECTORS}: list fewer detectors or values"
        )
    total = sum(sl.n_values for sl in out)
    if total > MAX_SLICE_VALUES:
        raise SpecError(
            f"spec key slices: {total} slice values ('other' included) over all slices; at most "
            f"{MAX_SLICE_VALUES} (Prometheus series stay bounded): lower max_values or list fewer "
            "values"
        )
    return tuple(out)


def _parse_business(data: Mapping[str, Any]) -> BusinessSpec | None:
    b = data.get("business")
    if b is None:
        return None
    if b["history_ms"] < b["window_ms"]:
        raise SpecError(
            f"spec key business.history_ms: {b['history_ms']} is shorter than business.window_ms "
            f"({b['window_ms']}); the history must hold at least one window"
        )
    spec = BusinessSpec(**b)
    if spec.history_ms // spec.bucket_ms > 100_000:
        raise SpecError(
            f"spec key business.history_ms: {spec.history_ms // spec.bucket_ms} buckets of "
            f"{spec.bucket_ms} ms; at most 100000: shorten it or lower buckets_per_window"
        )
    return spec


def _parse_performance_estimation(
    data: Mapping[str, Any],
    model: ModelSpec | None,
    labels: LabelsSpec | None,
    base_dir: Path | None,
) -> PerformanceEstimationSpec | None:
    """``[performance_estimation]``: needs a model, and labels or a reference profile (the
    model being a classifier is checked where it is loaded, `agents.predictor`)."""
    raw = data.get("performance_estimation")
    if raw is None:
        return None
    key = "spec key performance_estimation"
    if model is None:
        raise SpecError(f"{key}: it estimates a classifier's performance; add a [model] section")
    profile = _profile_path("performance_estimation", raw, base_dir, " from labelled events")
    if profile is not None:
        try:
            read_calibration(profile)
        except SpecError as e:
            raise SpecError(f"{key}.{e}") from None
    elif labels is None:
        raise SpecError(
            f"{key}: the calibration needs labelled examples: add a [labels] section (the first "
            "reference_size joined labels) or set reference_profile"
        )
    kw = {k: v for k, v in raw.items() if k != "reference_profile"}
    threshold = labels.threshold if labels is not None else default_of("labels.threshold")
    return PerformanceEstimationSpec(**kw, reference_profile=profile, threshold=threshold)


def _parse_batch_features(
    data: Mapping[str, Any], key_field: str, taken: set[str]
) -> BatchFeaturesSpec | None:
    b = data.get("batch_features")
    if b is None:
        return None
    for name in b["fields"]:
        if name in taken:
            raise SpecError(
                f"spec key batch_features.fields.{name}: the name is already an input field or "
                "a streaming feature; batch feature names must be unique"
            )
    defaults = dict(b.get("defaults", {}))
    for name in defaults:
        if name not in b["fields"]:
            raise SpecError(
                f"spec key batch_features.defaults.{name}: not a field of batch_features.fields"
            )
    return BatchFeaturesSpec(
        topic=b["topic"],
        key_field=b.get("key_field", key_field),
        fields=dict(b["fields"]),
        defaults={k: float(v) for k, v in defaults.items()},
        load_timeout_ms=b["load_timeout_ms"],
    )


def _parse_skew(
    data: Mapping[str, Any], batch: BatchFeaturesSpec | None, streaming: list[str]
) -> tuple[SkewCheckSpec, ...]:
    from driftline.streams.skew import SkewCheck

    out = []
    for i, c in enumerate(data["skew_checks"]):
        if batch is None or c["batch"] not in batch.names:
            raise SpecError(
                f"spec key skew_checks[{i}].batch: {c['batch']!r} is not a field of "
                "[batch_features]"
            )
        if c["streaming"] not in streaming:
            raise SpecError(
                f"spec key skew_checks[{i}].streaming: {c['streaming']!r} is not a streaming "
                f"feature or numeric field ({streaming})"
            )
        params = {k: v for k, v in c.items() if k not in ("name", "batch", "streaming")}
        try:
            SkewCheck(**params)
        except SpecError as e:
            raise _keyed(f"skew_checks[{i}]", e) from None
        out.append(SkewCheckSpec(c["name"], c["batch"], c["streaming"], params))
    return tuple(out)


# -- [[multivariate]] ----------------------------------------------------------------------------
def _parse_multivariate(
    data: Mapping[str, Any], names: list[str], base_dir: Path | None
) -> tuple[MultivariateSpec, ...]:
    """``[[multivariate]]``: features that are numeric columns of the vector, names unique among
    every detector, hyperparameters accepted by the detector itself (built once here)."""
    taken = {d["name"]: "detectors" for d in data["detectors"]}
    out = []
    for i, m in enumerate(data["multivariate"]):
        where = f"spec key multivariate[{i}]"
        if m["name"] in taken:
            raise SpecError(
                f"{where}.name: {m['name']!r} is already the name of one of {taken[m['name']]}; "
                "alerts and metrics name detectors, so names must be unique"
            )
        taken[m["name"]] = "multivariate"
        for j, f in enumerate(m["features"]):
            if f not in names:
                raise SpecError(
                    f"{where}.features[{j}]: {f!r} is not a numeric field, feature or batch "
                    f"feature of this spec; choose from {names[:30]}"
                )
        profile = _profile_path(f"multivariate[{i}]", m, base_dir)
        skip = ("name", "method", "features", "reference_profile")
        params = {k: v for k, v in m.items() if k not in skip}
        spec = MultivariateSpec(m["name"], m["method"], tuple(m["features"]), params, profile)
        try:
            build_multivariate(spec)
        except SpecError as e:
            raise _keyed(f"multivariate[{i}]", e) from None
        out.append(spec)
    return tuple(out)


def read_multivariate_profile(path: Path, name: str, n_features: int) -> Any:
    """The ``streams.pca_reference.PCAReference`` of ``[[multivariate]]`` entry ``name`` in the
    profile file at ``path``; a `SpecError` saying what is wrong otherwise."""
    from driftline.streams.pca_reference import PCAReference

    def bad(why: str) -> SpecError:
        return _profile_error(path, why)

    doc = _profile_doc(path)
    refs = doc.get("multivariate", {}) if "columns" in doc else {}
    if name not in refs:
        raise bad(f"has no multivariate reference {name!r} (it has {sorted(refs)[:20]})")
    try:
        ref = PCAReference.from_dict(refs[name])
    except DriftlineError as e:
        raise bad(f"is not a reference profile ({e})") from None
    if ref.n_features != n_features:
        raise bad(
            f"holds a reference of {ref.n_features} features for {name!r}, which has "
            f"{n_features}; rebuild it"
        )
    return ref


def build_multivariate(m: MultivariateSpec) -> Any:
    """A fresh detector for ``[[multivariate]]`` entry ``m`` (its profile's reference, if any)."""
    from driftline.streams.multivariate import PCAReconstructionDetector

    ref = None
    if m.reference_profile is not None:
        ref = read_multivariate_profile(m.reference_profile, m.name, len(m.features))
    return PCAReconstructionDetector(len(m.features), reference=ref, **m.params)


# -- [topics] ------------------------------------------------------------------------------------
TOPIC_ROLES = ("outputs", "dlq", "late", "changelog", "host")


def _parse_topics(given: Mapping[str, Any], filled: Mapping[str, Any]) -> TopicsSpec:
    """``[topics]`` as written (``given``: which replication keys the spec sets) and with the
    schema's defaults (``filled``)."""
    roles = {
        r: TopicSettings(**{k: filled[r].get(k) for k in TopicSettings.__dataclass_fields__})
        for r in TOPIC_ROLES
    }
    topics = TopicsSpec(
        replication_factor=filled["replication_factor"],
        min_insync_replicas=filled["min_insync_replicas"],
        replication_factor_set="replication_factor" in given,
        min_insync_replicas_set="min_insync_replicas" in given,
        **roles,
    )
    for r in TOPIC_ROLES:
        topics.replication(r, None)  # what the spec writes must hold on any cluster
    return topics
