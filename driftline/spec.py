"""The pipeline spec: one TOML file, validated at start, turned into frozen objects.

Every error names the offending key (``detectors[1].alpha``) and what was expected.
"""

from __future__ import annotations

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

DEFAULT_OUTPUT = {
    "features_topic": "driftline.features",
    "predictions_topic": "driftline.predictions",
    "alerts_topic": "driftline.alerts",
    "dlq_topic": "driftline.dlq",
    "late_topic": "driftline.late",
}
DEFAULT_WORKER: dict[str, Any] = {
    "batch_max_records": 5000,
    "batch_timeout_ms": 100,
    "web_host": "127.0.0.1",
    "web_port": 6066,
    "auto_offset_reset": "earliest",
}
DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "ks": {"reference_size": 500, "window_size": 500, "alpha": 0.001, "stride": 50},
    "adwin": {"delta": 0.002, "cooldown": 1000},
}


@dataclass(frozen=True)
class InputSpec:
    topic: str
    key_field: str
    time_field: str
    fields: Mapping[str, str]
    max_message_bytes: int = 1_048_576


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    agg: str
    window_ms: int
    field: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[str, ...]
    path: Path | None = None
    builtin: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    type: str
    target: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSpec:
    features_topic: str
    predictions_topic: str
    alerts_topic: str
    dlq_topic: str
    late_topic: str

    @property
    def all_topics(self) -> list[str]:
        """Every topic the worker writes (besides its state changelog)."""
        return [
            self.features_topic,
            self.predictions_topic,
            self.alerts_topic,
            self.dlq_topic,
            self.late_topic,
        ]


@dataclass(frozen=True)
class WorkerSpec:
    batch_max_records: int
    batch_timeout_ms: int
    web_host: str
    web_port: int
    auto_offset_reset: str


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
        """Names a model input or a detector target may use: numeric fields, then features."""
        return self.numeric_fields + tuple(f.name for f in self.features)


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


def parse_spec(data: Mapping[str, Any], *, base_dir: Path | None = None) -> PipelineSpec:
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
    )
    numeric = {n for n, t in fields.items() if t in NUMERIC_TYPES and n != key}

    features: list[FeatureSpec] = []
    seen: set[str] = set(fields)
    for i, f in enumerate(data.get("features", [])):
        if f["name"] in seen:
            raise SpecError(
                f"spec key features[{i}].name: {f['name']!r} is already used; names must be unique"
            )
        seen.add(f["name"])
        src = f.get("field")
        if f["agg"] != "count" and src is None:
            raise SpecError(
                f"spec key features[{i}].field: agg {f['agg']!r} needs a numeric source field"
            )
        if src is not None and src not in numeric:
            raise SpecError(
                f"spec key features[{i}].field: {src!r} is not a numeric field of input.fields "
                f"(numeric fields: {sorted(numeric)})"
            )
        features.append(
            FeatureSpec(name=f["name"], agg=f["agg"], window_ms=f["window_ms"], field=src)
        )
    names = [n for n in fields if n in numeric] + [f.name for f in features]

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
            if not path.is_file():
                raise SpecError(
                    f"spec key model.path: no model file at {path}; train one or fix the path"
                )
        model = ModelSpec(
            inputs=tuple(m["inputs"]), path=path, builtin=m.get("builtin"), version=m.get("version")
        )

    detectors: list[DetectorSpec] = []
    dnames: set[str] = set()
    targets = set(names) | ({PREDICTION_TARGET} if model else set())
    for i, d in enumerate(data.get("detectors", [])):
        if d["name"] in dnames:
            raise SpecError(f"spec key detectors[{i}].name: {d['name']!r} is used twice")
        dnames.add(d["name"])
        if d["target"] not in targets:
            raise SpecError(
                f"spec key detectors[{i}].target: {d['target']!r} is not a numeric field, feature "
                f"or 'prediction' (with a model); choose one of {sorted(targets)}"
            )
        params = {**DETECTOR_DEFAULTS[d["type"]]}
        params.update({k: v for k, v in d.items() if k not in ("name", "type", "target")})
        detectors.append(
            DetectorSpec(name=d["name"], type=d["type"], target=d["target"], params=params)
        )

    return PipelineSpec(
        name=data["pipeline"]["name"],
        input=input_spec,
        features=tuple(features),
        model=model,
        detectors=tuple(detectors),
        output=OutputSpec(**{**DEFAULT_OUTPUT, **data.get("output", {})}),
        worker=WorkerSpec(**{**DEFAULT_WORKER, **data.get("worker", {})}),
        grace_ms=data.get("windows", {}).get("grace_ms", 0),
    )


def load_spec(path: str | Path) -> PipelineSpec:
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
    spec = parse_spec(data, base_dir=p.resolve().parent)
    return PipelineSpec(**{**spec.__dict__, "source_path": p.resolve()})
