"""Spec fuzzing: a seeded generator of spec mutations, each run through ``driftline validate``.

Whatever a spec file holds, ``validate`` either accepts it or exits 2 with one clear line (which
key or file is wrong), never a traceback. The mutations start from the demo, the minimal and a
full spec (every section), and are drawn from the JSON Schema itself, so a section added to
``schemas/spec.schema.json`` is fuzzed without touching this file: type swaps, huge, negative
and non-finite numbers, bounds +-1, deleted and unknown keys, long and bad-unicode strings, deep
nesting, duplicate topics, TOML datetimes, binary garbage, truncated and bit-flipped files, and
broken model and reference-profile files. Runs in-process (the CLI's ``main``) for speed, plus a
few subprocess cases.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import io
import json
import math
import random
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline import cli
from driftline.agents.demo import ks_adwin_spec_text
from driftline.cli import EXIT_OK, EXIT_USAGE, main
from driftline.model_io import save_model
from driftline.schemas import load_schema
from driftline.streams.model import build_builtin
from driftline.streams.profile import Profile
from tests.specs import minimal_spec

SEED = 20261130
CASES = 400
#: What a clear one-line error starts with: the spec key or the spec file it is about.
CLEAR = re.compile(r"^driftline: error: (spec key \S|spec file |cannot read spec file )")
MAX_MESSAGE = 1000

# -- a small TOML writer (inline tables: any document, any key) ----------------------------------
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def toml_value(v: Any) -> str:
    """``v`` as a TOML value; a lone surrogate comes out as an escape TOML refuses (on purpose)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{_key(k)} = {toml_value(v)}\n" for k, v in doc.items())


# -- the seeds -----------------------------------------------------------------------------------
def _seeds() -> dict[str, dict[str, Any]]:
    demo = tomllib.loads(ks_adwin_spec_text())
    full = copy.deepcopy(demo)
    full["labels"] = {"learn": True, "importance": {"window": 100, "min_examples": 50}}
    full["batch_features"] = {"topic": "fuzz.batch", "fields": {"score_30d": "float"},
                              "defaults": {"score_30d": 0.5}}  # fmt: skip
    full["skew_checks"] = [{"name": "skew", "batch": "score_30d", "streaming": "amount_mean_1m"}]
    full["detectors"].append(
        {"name": "amount_summary", "type": "summary", "target": "amount",
         "reference_profile": "ref.json"}
    )  # fmt: skip
    full["drift"] = {"correction": "benjamini_hochberg"}
    full["features"].append(
        {"name": "big_count", "agg": "count", "window": "count", "count": 10,
         "where": {"field": "country", "equals": "de"}}
    )  # fmt: skip
    registry = tomllib.loads(minimal_spec("fuzz-registry"))
    registry["input"]["format"] = "avro"
    registry["schema_registry"] = {"url": "mock://fuzz"}
    return {
        "demo": demo,
        "minimal": tomllib.loads(minimal_spec("fuzz-minimal")),
        "full": full,
        "registry": registry,
    }


SEEDS = _seeds()


# -- the schema's key paths, so sections added later are fuzzed too ------------------------------
def schema_paths() -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every ``(key path, schema node)`` of the spec schema: ``[]`` stands for an array item,
    ``*`` for a key of a free-form table (``input.fields.*``); a recursive ``$ref`` is followed
    once."""
    root = load_schema("spec")
    out: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def walk(node: Any, path: tuple[str, ...], refs: frozenset[str]) -> None:
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            ref = node["$ref"]
            if ref in refs:
                return
            extra = {k: v for k, v in node.items() if k != "$ref"}
            node, refs = {**root["$defs"][ref.rsplit("/", 1)[-1]], **extra}, refs | {ref}
        if path:
            out.append((path, node))
        for k, sub in node.get("properties", {}).items():
            walk(sub, (*path, k), refs)
        if isinstance(node.get("items"), dict):
            walk(node["items"], (*path, "[]"), refs)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], (*path, "*"), refs)
        for alt in ("oneOf", "anyOf"):
            for sub in node.get(alt, []):
                walk(sub, path, refs)

    walk(root, (), frozenset())
    return out


PATHS = schema_paths()
TOPIC_PATHS = [p for p, _ in PATHS if p[-1] == "topic" or p[-1].endswith("_topic")]


# -- values ----------------------------------------------------------------------------------------
class _Deep:
    """A value nested ``depth`` deep, written into the TOML text directly."""

    def __init__(self, depth: int, kind: str) -> None:
        self.depth, self.kind = depth, kind

    def text(self) -> str:
        if self.kind == "array":
            return "[" * self.depth + "1" + "]" * self.depth
        return "{a = " * self.depth + "1" + "}" * self.depth


GARBAGE: list[Any] = [
    10**20, -(10**20), 2**63, 2**64 + 1, -1, 0, 1, 1.5, -0.0, 1e308, -1e308, 5e-324,
    math.inf, -math.inf, math.nan, True, False, "", " ", "x" * 10_000, "\u202eevil",
    "\U0001f600", "\ud800", "a\x00b", "\x7f", "é\u0301", "../../etc/passwd", "/dev/zero",
    "-1", "1e999", "nan", "true", [], [1, "a", None], [[[]]], {}, {"a": {"b": 1}},
    dt.datetime(1979, 5, 27, 7, 32, tzinfo=dt.UTC), dt.date(2026, 1, 1),
]  # fmt: skip
GARBAGE = [g for g in GARBAGE if g is not None]
GARBAGE[GARBAGE.index([1, "a", None])] = [1, "a", 2.5]  # TOML has no null


def boundary_values(node: dict[str, Any]) -> list[Any]:
    """Values at and just beyond what ``node`` allows."""
    out: list[Any] = []
    for k in ("minimum", "exclusiveMinimum"):
        if k in node:
            out += [node[k] - 1, node[k], node[k] + 1]
    for k in ("maximum", "exclusiveMaximum"):
        if k in node:
            out += [node[k] - 1, node[k], node[k] + 1, node[k] * 10]
    for k in ("maxLength", "maxItems"):
        if k in node:
            out += ["y" * (node[k] + 1), ["y"] * (node[k] + 1)]
    for k in ("minLength", "minItems", "minProperties"):
        if k in node:
            out += ["", [], {}]
    out += [v for v in node.get("enum", []) if v is not None]
    if "default" in node:
        out.append(node["default"])
    return out


# -- applying a mutation -------------------------------------------------------------------------
def _set_path(rng: random.Random, doc: Any, path: tuple[str, ...], value: Any) -> bool:
    """Set ``path`` (``[]``: an existing or new item, ``*``: an existing or new key) in
    ``doc``, making the tables on the way; False when the document's shape does not allow it."""
    cur = doc
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if part == "[]":
            if not isinstance(cur, list):
                return False
            if not cur:
                cur.append({})
            idx = rng.randrange(len(cur))
            if last:
                cur[idx] = value
                return True
            cur = cur[idx]
            continue
        if not isinstance(cur, dict):
            return False
        key = part
        if part == "*":
            key = rng.choice([*cur, "fuzz_key"]) if cur else "fuzz_key"
        if last:
            cur[key] = value
            return True
        nxt = cur.get(key)
        if not isinstance(nxt, dict | list):
            nxt = [] if path[i + 1] == "[]" else {}
            cur[key] = nxt
        cur = nxt
    return False


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


class Case:
    """One mutated spec: its text or bytes, the files beside it, and what was done."""

    def __init__(self, what: str, content: bytes, model: bytes | None, profile: bytes | None):
        self.what, self.content, self.model, self.profile = what, content, model, profile


def _render(doc: dict[str, Any], deep: tuple[tuple[str, ...], _Deep] | None = None) -> bytes:
    text = to_toml(doc)
    if deep is not None:
        path, value = deep
        text += f"[{'.'.join(_key(p) for p in path[:-1]) or 'fuzz_deep'}]\n"
        text += f"{_key(path[-1])} = {value.text()}\n"
    return text.encode("utf-8", "surrogatepass")


def mutations(rng: random.Random, good_model: bytes, good_profile: bytes) -> Iterator[Case]:
    """``CASES`` seeded mutations, cycling through the operators."""

    def doc_case(name: str, seed: str, doc: dict[str, Any], deep: Any = None) -> Case:
        return Case(f"{seed}: {name}", _render(doc, deep), good_model, good_profile)

    def schema_value(seed: str, doc: dict[str, Any]) -> Case:
        path, node = rng.choice(PATHS)
        value = rng.choice(boundary_values(node) + GARBAGE)
        if not _set_path(rng, doc, path, value):
            doc[path[0]] = value
        return doc_case(f"{'.'.join(path)} = {value!r:.60}", seed, doc)

    def swap_existing(seed: str, doc: dict[str, Any]) -> Case:
        path = rng.choice(list(_leaves(doc)))
        value = rng.choice(GARBAGE)
        _parent(doc, path)[path[-1]] = value
        return doc_case(f"{path} = {value!r:.60}", seed, doc)

    def delete(seed: str, doc: dict[str, Any]) -> Case:
        path = rng.choice(list(_leaves(doc)))
        parent = _parent(doc, path)
        del parent[path[-1]]
        return doc_case(f"del {path}", seed, doc)

    def unknown_key(seed: str, doc: dict[str, Any]) -> Case:
        tables = [p for p in _leaves(doc) if isinstance(_parent(doc, (*p, 0)), dict)]
        target = _parent(doc, (*rng.choice(tables), 0)) if tables else doc
        key = rng.choice(["typo", "web_bind", "Topic", "ünïcode", "a b", "\u200b"])
        target[key] = rng.choice(GARBAGE)
        return doc_case(f"unknown key {key!r}", seed, doc)

    def duplicate_topic(seed: str, doc: dict[str, Any]) -> Case:
        first, second = rng.sample(TOPIC_PATHS, 2)
        name = rng.choice([doc["input"]["topic"], "fuzz.shared", "driftline.dlq",
                           f"driftline.{doc['pipeline']['name']}.state-changelog"])  # fmt: skip
        for p in (first, second):
            _set_path(rng, doc, p, name)
        return doc_case(f"{'.'.join(first)} = {'.'.join(second)} = {name!r}", seed, doc)

    def deep(seed: str, doc: dict[str, Any]) -> Case:
        path, _ = rng.choice(PATHS)
        path = tuple(p for p in path if p not in ("[]", "*")) or ("fuzz",)
        depth = rng.choice([17, 100, 999, 3000])
        value = _Deep(depth, rng.choice(["array", "table"]))
        return doc_case(f"{'.'.join(path)} nested {depth} deep", seed, doc, (path, value))

    def raw_bytes(seed: str, doc: dict[str, Any]) -> Case:
        text = _render(doc)
        kind = rng.choice(["random", "truncate", "flip", "bom", "latin1", "nul", "utf16"])
        if kind == "random":
            data = rng.randbytes(rng.choice([1, 64, 4096]))
        elif kind == "truncate":
            data = text[: rng.randrange(len(text))]
        elif kind == "flip":
            data = bytearray(text)
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + text
        elif kind == "latin1":
            data = text.replace(b'"', b'"\xe9', 1)
        elif kind == "nul":
            data = text[:10] + b"\x00" + text[10:]
        else:
            data = text.decode().encode("utf-16")
        return Case(f"{seed}: bytes {kind}", data, good_model, good_profile)

    def broken_files(seed: str, doc: dict[str, Any]) -> Case:
        model, profile = good_model, good_profile
        kind = rng.choice(["model-truncate", "model-flip", "model-garbage", "profile-garbage",
                           "profile-flip", "profile-json"])  # fmt: skip
        if kind == "model-truncate":
            model = good_model[: rng.randrange(len(good_model))]
        elif kind == "model-flip":
            b = bytearray(good_model)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            model = bytes(b)
        elif kind == "model-garbage":
            model = rng.randbytes(100)
        elif kind == "profile-garbage":
            profile = rng.randbytes(50)
        elif kind == "profile-flip":
            b = bytearray(good_profile)
            b[rng.randrange(len(b))] = rng.randrange(256)
            profile = bytes(b)
        else:
            profile = json.dumps({"columns": {"amount": rng.choice(GARBAGE[:20])}}).encode()
        return Case(f"{seed}: {kind}", _render(doc), model, profile)

    operators: list[Callable[[str, dict[str, Any]], Case]] = [
        schema_value, schema_value, schema_value, swap_existing, swap_existing, delete,
        unknown_key, duplicate_topic, deep, raw_bytes, broken_files,
    ]  # fmt: skip
    for i in range(CASES):
        seed = rng.choice(sorted(SEEDS))
        doc = copy.deepcopy(SEEDS[seed])
        yield operators[i % len(operators)](seed, doc)


# -- running ---------------------------------------------------------------------------------------
def _files(tmp: Path) -> tuple[bytes, bytes]:
    model = tmp / "demo-model.pkl"
    save_model(build_builtin("logistic_regression"), model)
    prof = Profile.from_values(np.random.default_rng(0).normal(size=300), n_quantiles=51)
    profile = orjson.dumps({"format": "driftline-profile/1", "columns": {"amount": prof.to_dict()}})
    return model.read_bytes(), profile


def _run(tmp: Path, case: Case) -> tuple[int, str, str]:
    (tmp / "demo-model.pkl").write_bytes(case.model or b"")
    (tmp / "ref.json").write_bytes(case.profile or b"")
    spec = tmp / "spec.toml"
    spec.write_bytes(case.content)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(["validate", "-c", str(spec)])
        except SystemExit as e:  # argparse only: never for a spec
            code = 100 + int(e.code or 0)
        except BaseException as e:
            return -1, "", f"Traceback (raised {type(e).__name__}: {e})"[:500]
    return code, out.getvalue(), err.getvalue()


def _problem(code: int, out: str, err: str) -> str | None:
    """What is wrong with validate's answer, or None."""
    if "Traceback" in err or "Traceback" in out:
        return "traceback"
    if code == EXIT_OK:
        return None if (err == "" and "valid pipeline" in out) else "exit 0 without 'valid'"
    if code != EXIT_USAGE:
        return f"exit {code}"
    if out or err.count("\n") != 1 or not CLEAR.match(err):
        return "not one clear line"
    if len(err) > MAX_MESSAGE:
        return f"a {len(err)}-character message"
    return None


def test_the_seeds_are_valid(tmp_path: Path) -> None:
    model, profile = _files(tmp_path)
    for name, doc in SEEDS.items():
        code, _, err = _run(tmp_path, Case(name, _render(doc), model, profile))
        assert (code, err) == (EXIT_OK, ""), (name, err)


def test_the_writer_round_trips() -> None:
    for doc in SEEDS.values():
        assert tomllib.loads(to_toml(doc)) == doc


@pytest.fixture
def one_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` builds its argparse parser on each call (most of a case's time): build it once."""
    monkeypatch.setattr(cli, "build_parser", functools.cache(cli.build_parser))


@pytest.mark.usefixtures("one_parser")
def test_fuzzed_specs_are_valid_or_one_clear_error(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    model, profile = _files(tmp_path)
    problems, outcomes = [], {EXIT_OK: 0, EXIT_USAGE: 0}
    for i, case in enumerate(mutations(rng, model, profile)):
        code, out, err = _run(tmp_path, case)
        problem = _problem(code, out, err)
        if problem is not None:
            problems.append(f"#{i} {case.what}: {problem}: exit {code} {err[:300]!r}")
        else:
            outcomes[code] += 1
    assert not problems, "\n".join(problems[:15])
    # the generator reaches both answers, mostly errors
    assert outcomes[EXIT_USAGE] > CASES // 2 and outcomes[EXIT_OK] > 10, outcomes


def test_every_schema_value_is_bounded() -> None:
    """Numbers have both bounds, strings a length (or a pattern / enum), arrays a size: a
    section added to the schema without them fails here."""
    unbounded = []
    for path, node in PATHS:
        types = node.get("type", [])
        types = types if isinstance(types, list) else [types]
        where = ".".join(path)
        if {"integer", "number"} & set(types):
            if not {"maximum", "exclusiveMaximum"} & set(node):
                unbounded.append(f"{where}: no maximum")
            if not {"minimum", "exclusiveMinimum"} & set(node) and "seed" not in path:
                unbounded.append(f"{where}: no minimum")
        if "string" in types and not {"maxLength", "pattern", "enum", "const"} & set(node):
            unbounded.append(f"{where}: no maxLength")
        if "array" in types and "maxItems" not in node:
            unbounded.append(f"{where}: no maxItems")
    assert not unbounded, unbounded


SUBPROCESS = [
    ("binary", b"\x00\xff\xfe\x80garbage", "is not UTF-8 text"),
    ("deep", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests arrays or tables more than"),
    ("same topic", None, "spec key output.dlq_topic: topic 'driftline.demo.events' is also"),
]


def test_subprocess_cases(tmp_path: Path) -> None:
    """The same through ``python -m driftline.cli`` (the processes run side by side)."""
    _files(tmp_path)
    same = ks_adwin_spec_text().replace(
        'dlq_topic = "driftline.dlq"', 'dlq_topic = "driftline.demo.events"'
    )
    procs = []
    for i, (_, content, _) in enumerate(SUBPROCESS):
        spec = tmp_path / f"spec{i}.toml"
        spec.write_bytes(content if content is not None else same.encode())
        cmd = [sys.executable, "-m", "driftline.cli", "validate", "-c", str(spec)]
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for (what, _, message), p in zip(SUBPROCESS, procs, strict=True):
        out, err = p.communicate(timeout=120)
        assert p.returncode == EXIT_USAGE and out == "", (what, out, err)
        assert err.startswith("driftline: error: ") and message in err, (what, err)
        assert "Traceback" not in err and err.count("\n") == 1, (what, err)
