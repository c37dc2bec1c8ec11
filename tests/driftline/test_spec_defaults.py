"""One source for every spec default: the ``default`` keywords of ``schemas/spec.schema.json``.

A minimal spec (every optional section present, no optional key set) parses to exactly the
schema's defaults, and no ``DEFAULT_*`` constant, inline ``.get(key, default)`` or spec dataclass
field default repeats one of them.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from driftline import spec as spec_module
from driftline.errors import SpecError
from driftline.schemas import load_schema
from driftline.spec import PipelineSpec, default_of, parse_spec, schema_defaults

ROOT = Path(__file__).resolve().parents[2]

#: every optional section present, no optional key given
MINIMAL: dict[str, Any] = {
    "pipeline": {"name": "d"},
    "input": {
        "topic": "events",
        "key_field": "user",
        "time_field": "ts",
        "fields": {"user": "string", "ts": "int", "amount": "float", "country": "string"},
    },
    "features": [{"name": "n_1m", "agg": "count", "window_ms": 60_000}],
    "model": {"builtin": "logistic_regression", "inputs": ["amount"]},
    "detectors": [{"name": "k", "type": "ks", "target": "amount"}],
    "batch_features": {"fields": {"score": "float"}},
    "skew_checks": [{"name": "s", "batch": "score", "streaming": "n_1m"}],
    "multivariate": [{"name": "mv", "features": ["amount", "n_1m"]}],
    "labels": {"importance": {}},
    "slices": [{"field": "country"}],
    "business": {"topic": "orders", "field": "revenue"},
    "performance_estimation": {},
}
#: the arrays left out
BARE = {k: v for k, v in MINIMAL.items() if k in ("pipeline", "input")}
#: a Schema Registry input (the section is refused with the default input.format, json)
REGISTRY = {**BARE, "input": {**BARE["input"], "format": "avro"},
            "schema_registry": {"url": "mock://d"}}  # fmt: skip

#: schema section (``[]``: an array's items) -> where the parsed spec keeps its keys
SECTIONS: dict[str, Callable[[PipelineSpec], Any]] = {
    "input": lambda s: s.input,
    "features[]": lambda s: s.features[0],
    "windows": lambda s: SimpleNamespace(grace_ms=s.grace_ms),
    "output": lambda s: s.output,
    "worker": lambda s: s.worker,
    "drift": lambda s: SimpleNamespace(
        correction=s.correction,
        watch=[d.target for d in s.detectors if d.name == f"{d.target}_{d.type}"],
        error_direction=next(
            d.params["direction"] for d in _watching().detectors if d.target == "error"
        ),
    ),
    "drift.default_detectors": lambda s: SimpleNamespace(**{
        kind: [{"type": d.type} for d in _watching().detectors
               if d.name == f"{target}_{d.type}"]
        for kind, target in (("numeric", "amount"), ("categorical", "country"), ("error", "error"))
    }),
    "batch_features": lambda s: s.batch_features,
    "skew_checks[]": lambda s: SimpleNamespace(**s.skew_checks[0].params),
    "multivariate[]": lambda s: SimpleNamespace(
        method=s.multivariate[0].method, **s.multivariate[0].params
    ),
    "labels": lambda s: s.labels,
    "labels.importance": lambda s: s.labels.importance,  # type: ignore[union-attr]
    "performance_estimation": lambda s: s.performance_estimation,
    "schema_registry": lambda s: parse_spec(REGISTRY).schema_registry,
    "slices[]": lambda s: s.slices[0],
    "business": lambda s: s.business,
    "topics": lambda s: s.topics,
    "topics.outputs": lambda s: s.topics.outputs,
    "topics.dlq": lambda s: s.topics.dlq,
    "topics.late": lambda s: s.topics.late,
}


def _watching() -> PipelineSpec:
    """MINIMAL with ``[drift] watch`` on a number, a string and the model's error."""
    return parse_spec({**MINIMAL, "drift": {"watch": ["amount", "country", "error"]}})


def _plain(v: Any) -> Any:
    """Tuples as lists, so a parsed ``()`` compares with the schema's ``[]``."""
    return [_plain(x) for x in v] if isinstance(v, tuple | list) else v


def test_every_schema_default_is_applied_when_absent() -> None:
    full, bare = parse_spec(MINIMAL), parse_spec(BARE)
    defaults = schema_defaults()
    assert len(defaults) > 40  # the walk reached the nested sections
    checked = []
    for key, default in defaults.items():
        if default == {}:
            continue  # a section that defaults to empty: its keys are checked one by one
        section, _, name = key.rpartition(".")
        if not section:  # a top-level array: left out of BARE
            assert _plain(getattr(bare, name)) == default, key
        else:
            assert section in SECTIONS, f"map schema section {section!r} in SECTIONS"
            assert _plain(getattr(SECTIONS[section](full), name)) == default, key
        checked.append(key)
    some = {"worker.commit_interval_ms", "features[].window", "labels.importance.seed",
            "skew_checks[].max_rate", "input.max_message_bytes", "features"}  # fmt: skip
    assert some <= set(checked)


def test_given_values_win_over_defaults() -> None:
    data = {**BARE, "worker": {"web_port": 7000}, "windows": {"grace_ms": 5}}
    s = parse_spec(data)
    assert (s.worker.web_port, s.grace_ms) == (7000, 5)
    assert s.worker.batch_timeout_ms == default_of("worker.batch_timeout_ms") == 100
    assert data["worker"] == {"web_port": 7000}  # the caller's data is not filled in


def test_default_of_names_keys_without_a_default() -> None:
    assert default_of("labels.ttl_ms") == 604_800_000
    assert default_of("features") == [] and default_of("features") is not default_of("features")
    with pytest.raises(SpecError, match=r"spec key input\.topic: the spec schema gives it no"):
        default_of("input.topic")


def test_the_schema_walk_sees_every_default_keyword() -> None:
    def keywords(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "default" in node:
                yield node["default"]
            for v in node.values():
                yield from keywords(v)
        elif isinstance(node, list):
            for v in node:
                yield from keywords(v)

    assert len(list(keywords(load_schema("spec")))) == len(schema_defaults())


# -- no second copy ---------------------------------------------------------------------------
def _pairs() -> set[tuple[str, str]]:
    """(last key, repr of the default) of every schema default that is not an empty section."""
    return {
        (k.rpartition(".")[2], repr(_plain(v))) for k, v in schema_defaults().items() if v != {}
    }


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for folder in ("driftline", "agents", "streams"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text())


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def test_no_default_constant_repeats_a_schema_default() -> None:
    pairs, found, dupes = _pairs(), [], []
    for path, tree in _sources():
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            if not (isinstance(target, ast.Name) and target.id.startswith("DEFAULT_")):
                continue
            found.append(target.id)
            ok, value = _literal(node.value)  # type: ignore[union-attr]
            if not ok:
                continue
            items = value.items() if isinstance(value, dict) else [(target.id[8:].lower(), value)]
            dupes += [f"{path.name}: {target.id}[{k}]" for k, v in items
                      if (str(k), repr(_plain(v))) in pairs]  # fmt: skip
    assert dupes == []
    assert not [n for n in dir(spec_module) if n.startswith("DEFAULT_")]


def test_no_inline_get_default_repeats_a_schema_default() -> None:
    pairs, dupes = _pairs(), []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
            ):
                continue
            ok, value = _literal(node.args[1])
            if ok and (str(node.args[0].value), repr(_plain(value))) in pairs:
                dupes.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert dupes == []


def test_spec_dataclasses_take_no_schema_default() -> None:
    pairs, dupes = _pairs(), []
    for name in dir(spec_module):
        cls = getattr(spec_module, name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            continue
        if cls.__module__ != spec_module.__name__:
            continue
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING and (f.name, repr(_plain(f.default))) in pairs:
                dupes.append(f"{name}.{f.name} = {f.default!r}")
    assert dupes == []
