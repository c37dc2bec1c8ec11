"""The pipeline spec: one TOML file, validated at start, turned into frozen objects.

Every error names the offending key (``detectors[1].alpha``) and what was expected.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import ValidationError

from driftline.errors import SpecError
from driftline.schemas import validator

NUMERIC_TYPES = frozenset({"float", "int", "bool"})
PREDICTION_TARGET = "prediction"
#: Detector targets fed by joined labels: the model's error stream and the observed labels.
ERROR_TARGET = "error"
LABEL_TARGET = "label"
LABEL_TARGETS = frozenset({ERROR_TARGET, LABEL_TARGET})

DEFAULT_OUTPUT = {
    "features_topic": "driftline.features",
    "predictions_topic": "driftline.predictions",
    "alerts_topic": "driftline.alerts",
    "dlq_topic": "driftline.dlq",
    "late_topic": "driftline.late",
    "model_metrics_topic": "driftline.model_metrics",
}
DEFAULT_WORKER: dict[str, Any] = {
    "batch_max_records": 10000,
    "batch_timeout_ms": 100,
    "web_host": "127.0.0.1",
    "web_port": 6066,
    "auto_offset_reset": "earliest",
    "processing_guarantee": "exactly_once",
    "commit_interval_ms": 1000,
}
#: Detectors that test a hypothesis at level ``alpha`` (subject to the family-wise correction).
TEST_DETECTORS = frozenset({"ks", "chi2"})
#: Detectors that compare category frequencies; their target may be a string field.
CATEGORICAL_DETECTORS = frozenset({"chi2", "psi", "jsd"})
DEFAULT_ALPHA = 1e-6


@dataclass(frozen=True)
class InputSpec:
    topic: str
    key_field: str
    time_field: str
    fields: Mapping[str, str]
    max_message_bytes: int = 1_048_576
    event_id_field: str | None = None


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    agg: str
    window_ms: int | None
    field: str | None = None
    window: str = "tumbling"
    step_ms: int | None = None
    count: int | None = None
    idle_ttl_ms: int | None = None
    where_field: str | None = None
    where_equals: str | int | float | bool | None = None


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[str, ...]
    path: Path | None = None
    builtin: str | None = None
    version: str | None = None
    label_field: str | None = None


@dataclass(frozen=True)
class SkewCheckSpec:
    name: str
    batch: str
    streaming: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchFeaturesSpec:
    topic: str
    key_field: str
    fields: Mapping[str, str]
    defaults: Mapping[str, float]
    load_timeout_ms: int = 60_000

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.fields)


@dataclass(frozen=True)
class ImportanceSpec:
    method: str = "permutation"
    window: int = 2000
    every: int = 500
    threshold: float = 0.2
    min_examples: int = 500
    n_confirm: int = 2
    n_clear: int = 3
    seed: int = 0


@dataclass(frozen=True)
class LabelsSpec:
    """``[labels]``: where delayed labels come from and what is computed from them."""

    topic: str = "driftline.labels"
    join_key: str = "prediction_id"
    label_field: str = "label"
    time_field: str | None = None
    ttl_ms: int = 7 * 86_400_000
    max_pending: int = 1_000_000
    threshold: float = 0.5
    count_window: int = 1000
    time_window_ms: int = 3_600_000
    learn: bool = False
    importance: ImportanceSpec | None = None


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
    model_metrics_topic: str = "driftline.model_metrics"

    @property
    def all_topics(self) -> list[str]:
        """Every topic the worker writes (besides its state changelog)."""
        return [
            self.features_topic,
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
    processing_guarantee: str = "exactly_once"
    commit_interval_ms: int = 1000


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    input: InputSpec
    features: tuple[FeatureSpec, ...]
    model: ModelSpec | None
    detectors: tuple[DetectorSpec, ...]
    output: OutputSpec
    worker: WorkerSpec
    grace_ms: int = 0
    correction: str = "bonferroni"
    batch_features: BatchFeaturesSpec | None = None
    skew_checks: tuple[SkewCheckSpec, ...] = ()
    labels: LabelsSpec | None = None
    source_path: Path | None = None

    @property
    def group_id(self) -> str:
        """The Kafka consumer group shared by every worker of this pipeline."""
        return f"driftline.{self.name}"

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


def _key_path(error: ValidationError) -> str:
    parts: list[str] = []
    for p in error.absolute_path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def _schema_error(error: ValidationError) -> SpecError:
    where = _key_path(error)
    if error.validator == "additionalProperties":
        return SpecError(f"spec key {where}: {error.message} (remove it or fix its spelling)")
    if error.validator == "required":
        return SpecError(f"spec key {where}: {error.message}")
    expected = error.schema.get("description") if isinstance(error.schema, dict) else None
    hint = f" Expected: {expected}" if expected else ""
    return SpecError(f"spec key {where}: {error.message}.{hint}")


def parse_spec(
    data: Mapping[str, Any], *, base_dir: Path | None = None, model_file_required: bool = True
) -> PipelineSpec:
    """Validate a spec already parsed from TOML and build a :class:`PipelineSpec`."""
    errors = sorted(validator("spec").iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        best = min(errors, key=lambda e: (len(list(e.context or [])), -len(list(e.absolute_path))))
        raise _schema_error(best)
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
        max_message_bytes=inp.get("max_message_bytes", 1_048_576),
        event_id_field=inp.get("event_id_field"),
    )
    eid = input_spec.event_id_field
    if eid is not None and fields.get(eid) not in ("string", "int"):
        raise SpecError(
            f"spec key input.event_id_field: {eid!r} must be a 'string' or 'int' field of "
            "input.fields"
        )
    numeric = {n for n, t in fields.items() if t in NUMERIC_TYPES and n != key}

    features = [
        _parse_feature(i, f, fields, numeric) for i, f in enumerate(data.get("features", []))
    ]
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
        m = data["model"]
        if ("path" in m) == ("builtin" in m):
            raise SpecError("spec key model: give exactly one of model.path or model.builtin")
        for j, name in enumerate(m["inputs"]):
            if name not in names:
                raise SpecError(
                    f"spec key model.inputs[{j}]: {name!r} is not a numeric field or "
                    f"feature ({names})"
                )
        path = None
        if "path" in m:
            path = Path(m["path"])
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if model_file_required and not path.is_file():
                raise SpecError(
                    f"spec key model.path: no model file at {path}; train one or fix the path"
                )
        model = ModelSpec(
            inputs=tuple(m["inputs"]),
            path=path,
            builtin=m.get("builtin"),
            version=m.get("version"),
            label_field=m.get("label_field"),
        )

    labels = _parse_labels(data, input_spec, model)
    detectors = _parse_detectors(data, names, fields, model is not None, base_dir, labels)

    return PipelineSpec(
        name=data["pipeline"]["name"],
        input=input_spec,
        features=tuple(features),
        model=model,
        detectors=tuple(detectors),
        output=OutputSpec(**{**DEFAULT_OUTPUT, **data.get("output", {})}),
        worker=_parse_worker(data.get("worker", {})),
        grace_ms=data.get("windows", {}).get("grace_ms", 0),
        correction=data.get("drift", {}).get("correction", "bonferroni"),
        batch_features=batch,
        skew_checks=_parse_skew(
            data, batch, [n for n in names if batch is None or n not in batch.names]
        ),
        labels=labels,
    )


def load_spec(path: str | Path, *, model_file_required: bool = True) -> PipelineSpec:
    """Read, validate and build the spec at ``path``; raise :class:`SpecError` if it is wrong."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError(
            f"cannot read spec file {p}: {e.strerror}; pass an existing TOML file with -c"
        ) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec file {p} is not valid TOML: {e}") from e
    spec = parse_spec(data, base_dir=p.resolve().parent, model_file_required=model_file_required)
    return PipelineSpec(**{**spec.__dict__, "source_path": p.resolve()})


_NO_FIELD_AGGS = frozenset({"count", "rate", "since_prev"})


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
    spec = FeatureSpec(
        name=f["name"],
        agg=agg,
        window_ms=f.get("window_ms"),
        field=src,
        window=f.get("window", "tumbling"),
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


def build_spec_detector(d: DetectorSpec) -> Any:
    """A fresh detector for ``d`` (with its reference profile, if any)."""
    from driftline.streams.detectors.factory import build_detector

    params = dict(d.params)
    if d.reference_profile is not None:
        import orjson

        from driftline.streams.profile import Profile

        doc = orjson.loads(d.reference_profile.read_bytes())
        columns = doc.get("columns", {d.target: doc}) if isinstance(doc, dict) else {}
        if d.target not in columns:
            raise SpecError(
                f"reference_profile: {d.reference_profile} has no column {d.target!r} "
                f"(it has {sorted(columns)}); build it with `driftline profile` from this spec"
            )
        profile = Profile.from_dict(columns[d.target])
        if d.type == "ks":
            params["reference"] = profile.sample(int(params.get("reference_size", 500)))
        elif d.type in ("summary", "chi2", "psi", "jsd"):
            params["reference"] = profile
    return build_detector(d.type, **params)


def _parse_detectors(
    data: Mapping[str, Any],
    names: list[str],
    fields: Mapping[str, str],
    has_model: bool,
    base_dir: Path | None,
    labels: LabelsSpec | None = None,
) -> list[DetectorSpec]:
    """``[[detectors]]``: targets exist, hyperparameters accepted by the detector itself.

    With ``[drift] correction = "bonferroni"`` (the default) the m test-based detectors
    (ks, chi2) each test at ``alpha / m``, so the family-wise false-alarm rate stays at alpha.
    """
    raw = list(data.get("detectors", []))
    correction = data.get("drift", {}).get("correction", "bonferroni")
    m = sum(1 for d in raw if d["type"] in TEST_DETECTORS)
    numeric_targets = set(names) | ({PREDICTION_TARGET} if has_model else set())
    if labels is not None:
        numeric_targets |= LABEL_TARGETS
    strings = {n for n, t in fields.items() if t == "string"}
    out: list[DetectorSpec] = []
    seen: set[str] = set()
    for i, d in enumerate(raw):
        if d["name"] in seen:
            raise SpecError(f"spec key detectors[{i}].name: {d['name']!r} is used twice")
        seen.add(d["name"])
        targets = numeric_targets | (strings if d["type"] in CATEGORICAL_DETECTORS else set())
        if d["target"] not in targets:
            kinds = "a numeric field, feature, 'prediction' (with a model)"
            kinds += " or 'error'/'label' (with [labels])"
            if d["type"] in CATEGORICAL_DETECTORS:
                kinds += ", or a string field"
            raise SpecError(
                f"spec key detectors[{i}].target: {d['target']!r} is not {kinds}; "
                f"choose one of {sorted(targets)}"
            )
        params = {
            k: v for k, v in d.items() if k not in ("name", "type", "target", "reference_profile")
        }
        family_alpha = None
        if d["type"] in TEST_DETECTORS:
            # bonferroni: alpha / m throughout; benjamini_hochberg: alpha / m until the others'
            # p-values allow more (streams.fdr.bh_levels, applied per batch by the pipeline)
            from driftline.streams.params import probability_param

            try:  # the user's level, checked before it is split
                family_alpha = alpha = probability_param(
                    "alpha", params.get("alpha", DEFAULT_ALPHA)
                )
            except SpecError as e:
                raise _keyed(f"detectors[{i}]", e) from None
            params["alpha"] = alpha / m if correction != "none" and m > 1 else alpha
        profile = None
        if "reference_profile" in d:
            profile = Path(d["reference_profile"])
            if not profile.is_absolute() and base_dir is not None:
                profile = base_dir / profile
            if not profile.is_file():
                raise SpecError(
                    f"spec key detectors[{i}].reference_profile: no profile at {profile}; "
                    "build one with `driftline profile`"
                )
        _check_detector_params(i, d["type"], params)
        spec = DetectorSpec(d["name"], d["type"], d["target"], params, profile, family_alpha)
        try:
            build_spec_detector(spec)
        except SpecError as e:
            raise _keyed(f"detectors[{i}]", e) from None
        out.append(spec)
    return out


def _keyed(where: str, e: SpecError) -> SpecError:
    """Prefix a component's message (``alpha: got 2.0; ...``) with the spec key it came from."""
    m = re.match(r"^(\w+): (.*)$", str(e), re.S)
    if m:
        return SpecError(f"spec key {where}.{m.group(1)}: {m.group(2)}")
    return SpecError(f"spec key {where}: {e}")


def _check_detector_params(i: int, dtype: str, params: Mapping[str, Any]) -> None:
    import inspect

    from driftline.streams.detectors.factory import DETECTORS

    accepted = [
        n
        for n in inspect.signature(DETECTORS[dtype].__init__).parameters
        if n not in ("self", "reference")
    ]
    for k in params:
        if k not in accepted:
            raise SpecError(
                f"spec key detectors[{i}].{k}: the {dtype} detector has no parameter {k!r}; "
                f"it takes {', '.join(accepted)}"
            )


def _parse_worker(raw: Mapping[str, Any]) -> WorkerSpec:
    if "commit_interval_ms" in raw and raw.get("processing_guarantee") != "at_least_once":
        raise SpecError(
            "spec key worker.commit_interval_ms: only with processing_guarantee = "
            '"at_least_once"; exactly_once commits every batch in one transaction'
        )
    return WorkerSpec(**{**DEFAULT_WORKER, **raw})


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
    if spec.topic == inp.topic:
        raise SpecError("spec key labels.topic: must differ from input.topic")
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
        topic=b.get("topic", "driftline.batch_features"),
        key_field=b.get("key_field", key_field),
        fields=dict(b["fields"]),
        defaults={k: float(v) for k, v in defaults.items()},
        load_timeout_ms=b.get("load_timeout_ms", 60_000),
    )


def _parse_skew(
    data: Mapping[str, Any], batch: BatchFeaturesSpec | None, streaming: list[str]
) -> tuple[SkewCheckSpec, ...]:
    from driftline.streams.skew import SkewCheck

    out = []
    for i, c in enumerate(data.get("skew_checks", [])):
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
