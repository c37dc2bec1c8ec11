"""The contract of every registered detector and aggregator, run over the registries.

Parametrized over `DETECTORS` (`register_detector`) and `AGGREGATORS` (`register_aggregator`):
a class added to either is covered here without editing this file. For each one:

* batching: ``update_many`` in random chunk sizes (empty ones too) gives the same detections
  and the same state as one value at a time, and as ``update(x)`` value by value (aggregators:
  ``add`` in random chunks gives the same state as value by value);
* snapshot / restore: a JSON round trip of the state at any point continues identically
  (aggregators: their state is plain Python data and survives pickling and continues);
* parameter validation: a bad value of each constructor parameter raises the shared
  `SpecError` whose message starts with the parameter's name and quotes the value;
* documentation: a numpydoc docstring naming every parameter, with a seeded example that
  prints values (run, like every docstring, by ``tests/test_doctests.py``).

Detector streams come from the detector's declared ``inputs`` (`INPUT_KINDS`); every stream
drifts and drifts back, and each test checks the detector did fire, so the invariances are not
checked on a quiet stream only.
"""

from __future__ import annotations

import doctest
import inspect
import json
import math
import pickle
import re
import typing
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from driftline.errors import SpecError
from driftline.streams.aggregators import AGGREGATORS, build_aggregator
from driftline.streams.detectors.base import INPUT_KINDS, Detection, DriftDetector
from driftline.streams.detectors.factory import DETECTORS, build_detector, detector_parameters
from tests.test_doctests import MODULES as DOCTEST_MODULES

DETECTOR_NAMES = sorted(DETECTORS)
AGGREGATOR_NAMES = sorted(AGGREGATORS)
CATS = np.array(["a", "b", "c", "d", "e"], dtype=object)
N = 6_000  # three segments: before, during and after a drift

#: Besides its defaults, each detector is also checked with these hyperparameters (more
#: evaluations, shorter windows and cooldowns, other modes). Optional: a registered detector
#: without an entry is checked with its defaults.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "ks": [
        {"reference_size": 300, "window_size": 200, "min_samples": 20, "n_clear": 5},
        {"reference_mode": "sliding", "reference_size": 200, "window_size": 250, "stride": 3},
        {"reference_size": 300, "window_size": 200, "stride": 40, "n_clear": 2},
    ],
    "adwin": [{"clock": 1, "cooldown": 100}],
    "summary": [{"window_size": 300, "reference_size": 500, "n_clear": 3}],
    "chi2": [{"window_size": 300, "reference_size": 500, "n_clear": 3, "alpha": 1e-4}],
    "psi": [{"window_size": 300, "reference_size": 500, "n_clear": 3}],
    "jsd": [{"window_size": 300, "reference_size": 500, "n_clear": 3}],
    "page_hinkley": [{"threshold": 20.0, "cooldown": 100, "alpha": 1.0, "mode": "up"}],
    "ddm": [{"warm_start": 100, "cooldown": 100}],
    "hddm_a": [{"two_sided_test": True, "cooldown": 100}],
    "hddm_w": [{"cooldown": 100, "lambda_val": 0.1}],
    "focus": [{"direction": "up", "warmup": 20, "false_alarms_per_million": 100.0}],
    "focus_scale": [{"direction": "up", "warmup": 100}],
    "np_focus": [{"warmup": 30, "false_alarms_per_million": 100.0}],
    "focus_categorical": [{"warmup": 50, "max_categories": 2, "false_alarms_per_million": 0.01}],
}
CONFIGS = [(name, {}) for name in DETECTOR_NAMES] + [
    (name, params) for name, variants in VARIANTS.items() for params in variants
]


def config_id(config: tuple[str, dict[str, Any]]) -> str:
    name, params = config
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def detector_stream(kind: str, seed: int) -> np.ndarray:
    """A stream of values of ``kind`` whose middle third drifts."""
    rng = np.random.default_rng(seed)
    third = N // 3
    if kind == "real":
        xs = np.concatenate(
            [rng.normal(0, 1, third), rng.normal(2.0, 1.0, third), rng.normal(0, 1, third)]
        )
        xs[rng.random(N) < 0.01] = np.nan  # skipped (or nulls, for summary)
        return xs
    if kind == "binary":
        rates = (0.1, 0.5, 0.1)
        return np.concatenate([rng.random(third) < p for p in rates]).astype(np.float64)
    if kind == "unit_interval":
        return np.concatenate(
            [rng.uniform(0, 0.2, third), rng.uniform(0.3, 1.0, third), rng.uniform(0, 0.2, third)]
        )
    if kind == "categorical":
        p0, p1 = [0.4, 0.25, 0.15, 0.12, 0.08], [0.1, 0.1, 0.2, 0.3, 0.3]
        xs = np.concatenate(
            [rng.choice(CATS, third, p=p0), rng.choice(CATS, third, p=p1),
             rng.choice(CATS, third, p=p0)]
        )  # fmt: skip
        xs[rng.random(N) < 0.01] = None  # nulls
        return xs
    raise AssertionError(f"no contract stream for inputs {kind!r}; add one to this test")


def random_cuts(seed: int, n: int) -> list[int]:
    """Sorted chunk boundaries in [0, n] with repeats (empty chunks) and single values."""
    rng = np.random.default_rng(seed)
    cuts = [*rng.integers(0, n + 1, 40).tolist(), 1, 2, n // 2, n // 2, n - 1]
    return sorted(cuts)


def rebase(ds: list[Detection], off: int) -> list[Detection]:
    return [Detection(**{**d.__dict__, "index": d.index + off}) for d in ds]


def feed(det: DriftDetector, xs: np.ndarray, cuts: list[int]) -> list[Detection]:
    """``update_many`` over the chunks between ``cuts``; detections indexed into ``xs``."""
    out: list[Detection] = []
    for a, b in pairwise([0, *cuts, len(xs)]):
        out += rebase(det.update_many(xs[a:b]), a)
    return out


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(state, allow_nan=False))


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------- the registries
def test_the_registries_are_keyed_by_the_class_names_and_build_every_class() -> None:
    assert len(DETECTOR_NAMES) >= 10 and len(AGGREGATOR_NAMES) >= 12
    assert set(VARIANTS) <= set(DETECTORS)
    for name, cls in DETECTORS.items():
        assert cls.name == name and cls.inputs in INPUT_KINDS
        assert type(build_detector(name)) is cls
    for name, agg_cls in AGGREGATORS.items():
        assert agg_cls.name == name
        assert type(build_aggregator(name)) is agg_cls


# --------------------------------------------------------------------------- detectors
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_detector_batching_invariance(config: tuple[str, dict[str, Any]], seed: int) -> None:
    name, params = config
    cls = DETECTORS[name]
    xs = detector_stream(cls.inputs, seed)

    def make() -> DriftDetector:
        return build_detector(name, **params)

    one_by_one = make()
    single: list[Detection] = []
    detected_at: list[int] = []  # updates after which drift_detected was true
    in_drift: list[bool] = []
    for i in range(len(xs)):
        single += rebase(one_by_one.update_many(xs[i : i + 1]), i)
        if one_by_one.drift_detected:
            detected_at.append(i)
        in_drift.append(one_by_one.in_drift)
    statuses = [d.status for d in single]
    assert "firing" in statuses and "resolved" in statuses, (name, statuses)
    # episodes alternate firing / resolved; drift_detected (river's meaning) is true on exactly
    # the update that opened each episode, in_drift from there until the resolving update
    assert statuses == ["firing", "resolved"] * (len(statuses) // 2) + ["firing"] * (
        len(statuses) % 2
    ), statuses
    assert detected_at == [d.index for d in single if d.status == "firing"]
    expected_in = np.zeros(len(xs), dtype=bool)
    for fire, res in zip(single[::2], [*single[1::2], None], strict=False):
        end = len(xs) if res is None else res.index
        expected_in[fire.index : end] = True
        if res is not None and res.index == fire.index:  # opened and closed by one value
            expected_in[fire.index] = False
    assert in_drift == expected_in.tolist()

    chunked = make()
    assert feed(chunked, xs, random_cuts(seed, len(xs))) == single
    whole = make()
    assert feed(whole, xs, []) == single
    by_update = make()
    for x in xs:
        assert by_update.update(x) is None

    expected = one_by_one.snapshot()
    for det in (chunked, whole, by_update):
        assert det.snapshot() == expected
        assert det.n_seen == one_by_one.n_seen
        assert det.drift_detected == one_by_one.drift_detected
        assert det.in_drift == one_by_one.in_drift
        assert same_float(det.statistic, one_by_one.statistic)
        assert det.p_value == one_by_one.p_value


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_detector_snapshot_restore_continues_identically(
    config: tuple[str, dict[str, Any]],
) -> None:
    name, params = config
    cls = DETECTORS[name]
    xs = detector_stream(cls.inputs, 2)

    def make() -> DriftDetector:
        return build_detector(name, **params)

    uninterrupted = make()
    whole = feed(uninterrupted, xs, random_cuts(2, len(xs)))
    assert "firing" in [d.status for d in whole], name
    for cut in (0, 1, 777, N // 3 + 50, N // 2, N - 1, N):
        first = make()
        got = feed(first, xs[:cut], [])
        snap = roundtrip(first.snapshot())  # plain JSON data
        second = make()
        second.restore(snap)
        assert second.snapshot() == first.snapshot(), cut
        got += rebase(feed(second, xs[cut:], random_cuts(cut, len(xs) - cut)), cut)
        assert got == whole, (name, cut)
        assert second.snapshot() == uninterrupted.snapshot(), (name, cut)


def detector_parameter_cases() -> list[tuple[str, str]]:
    return [(name, p) for name in DETECTOR_NAMES for p in detector_parameters(name)]


def bad_values(cls: type, param: str) -> list[Any]:
    """Values no hyperparameter of this shape accepts, from its default and its type hint."""
    sig = inspect.signature(cls.__init__).parameters[param]
    hint = typing.get_type_hints(cls.__init__)[param]
    default = sig.default
    if np.ndarray in typing.get_args(hint) or hint is np.ndarray:
        return [np.array([]), np.zeros((2, 2))]  # a reference sample: empty, not 1-D
    if isinstance(default, bool):
        return ["yes", 1, None]
    if isinstance(default, str):
        return ["no such option", 1, None]
    # numbers (default None: "off" or "derived from the others", numbers otherwise)
    return ["1", -1, math.nan, math.inf, True, [1]]


JARGON = ("NoneType", "__init__", "keyword argument", "np.float64", "expected None", "positional")


def check_message(exc: SpecError, param: str, value: Any) -> None:
    msg = str(exc)
    assert msg.startswith(f"{param}: "), msg
    if not isinstance(value, np.ndarray):
        assert f"got {value!r}" in msg or msg.startswith(f"{param}: got None"), msg
    for word in JARGON:
        assert word not in msg, msg


@pytest.mark.parametrize(("name", "param"), detector_parameter_cases())
def test_detector_bad_hyperparameters_raise_the_shared_error(name: str, param: str) -> None:
    cls = DETECTORS[name]
    values = bad_values(cls, param)
    assert values
    for value in values:
        with pytest.raises(SpecError) as e:
            build_detector(name, **{param: value})
        check_message(e.value, param, value)
    with pytest.raises(SpecError, match=rf"^no_such: the {name} detector has no parameter"):
        build_detector(name, no_such=1)


def documented_parameters(doc: str) -> set[str]:
    """Names in a numpydoc ``Parameters`` section (``a``, ``a, b``, ``a : type``)."""
    m = re.search(r"\n    Parameters\n    -+\n(.*?)(?:\n    [A-Z]\w+\n    -+\n|\Z)", doc, re.S)
    assert m, "no numpydoc Parameters section"
    names: set[str] = set()
    for line in m.group(1).splitlines():
        if re.match(r"^    \w", line):
            head = line.strip().split(" : ")[0]
            names.update(n.strip() for n in head.split(","))
    return names


def check_documented(cls: type, params: list[str]) -> None:
    doc = inspect.getdoc(cls) or ""
    doc = "\n" + "\n".join("    " + line if line else line for line in doc.splitlines())
    if params:
        assert set(params) <= documented_parameters(doc), cls.__name__
    examples = doc.split("\n    Examples\n    --------\n", 1)
    assert len(examples) == 2, f"{cls.__name__}: no Examples section"
    assert "np.random.default_rng(" in examples[1], f"{cls.__name__}: example not seeded"
    parsed = doctest.DocTestParser().get_examples(examples[1])
    # a seeded stream, the class used on it, and printed values the doctest compares
    assert len(parsed) >= 3 and any(e.want.strip() for e in parsed), cls.__name__
    # tests/test_doctests.py runs it: the class's module is in the package walk
    assert cls.__module__ in DOCTEST_MODULES, cls.__module__


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_detector_docstring_documents_parameters_and_has_a_seeded_example(name: str) -> None:
    check_documented(DETECTORS[name], detector_parameters(name))


# --------------------------------------------------------------------------- aggregators
def aggregator_params(name: str) -> list[str]:
    params = inspect.signature(AGGREGATORS[name].__init__).parameters
    return [p for p, v in params.items() if p != "self" and v.kind is v.POSITIONAL_OR_KEYWORD]


def aggregator_stream(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = 1e6 + rng.normal(0.0, 3.0, n).round(2)  # offset and ties: stability and distinct
    ts = rng.integers(0, 60_000, n)  # out of order, with ties
    return xs, ts


def result(agg: Any, state: Any) -> float:
    if "ts_ms" in inspect.signature(agg.result).parameters:
        return agg.result(state, 60_000)
    return agg.result(state)


def is_plain(state: Any) -> bool:
    if state is None or type(state) in (int, float, str, bool):
        return True
    if type(state) in (tuple, list):
        return all(is_plain(v) for v in state)
    if type(state) is dict:
        return all(is_plain(k) and is_plain(v) for k, v in state.items())
    return False


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_aggregator_batching_invariance(name: str, seed: int) -> None:
    agg = build_aggregator(name)
    xs, ts = aggregator_stream(seed)
    one = agg.initialise()
    for i in range(len(xs)):
        one = agg.add(one, xs[i : i + 1], ts[i : i + 1])
    chunked = agg.initialise()
    for a, b in pairwise([0, *random_cuts(seed, len(xs)), len(xs)]):
        chunked = agg.add(chunked, xs[a:b], ts[a:b])
    whole = agg.add(agg.initialise(), xs, ts)
    assert chunked == one and whole == one
    assert same_float(result(agg, chunked), result(agg, one))
    assert not math.isnan(result(agg, one)) or name == "var"  # var of >= 2 values is a number


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_aggregator_state_round_trip_continues_identically(name: str) -> None:
    agg = build_aggregator(name)
    xs, ts = aggregator_stream(3)
    whole = agg.add(agg.initialise(), xs, ts)
    assert is_plain(agg.initialise()) and is_plain(whole), name
    for cut in (0, 1, 250, len(xs)):
        state = pickle.loads(pickle.dumps(agg.add(agg.initialise(), xs[:cut], ts[:cut])))
        state = agg.add(state, xs[cut:], ts[cut:])
        assert state == whole and same_float(result(agg, state), result(agg, whole)), cut
        # merge: the state of the first part with that of the second, in arrival order
        a = agg.add(agg.initialise(), xs[:cut], ts[:cut])
        b = agg.add(agg.initialise(), xs[cut:], ts[cut:])
        assert result(agg, agg.merge(a, b)) == pytest.approx(result(agg, whole), rel=1e-9)


def aggregator_parameter_cases() -> list[tuple[str, str]]:
    return [(name, p) for name in AGGREGATOR_NAMES for p in aggregator_params(name)]


@pytest.mark.parametrize(("name", "param"), aggregator_parameter_cases())
def test_aggregator_bad_parameters_raise_the_shared_error(name: str, param: str) -> None:
    for value in ["1", -1, 0, math.nan, True]:
        with pytest.raises(SpecError) as e:
            build_aggregator(name, **{param: value})
        check_message(e.value, param, value)


def test_aggregator_unknown_names_and_parameters() -> None:
    assert aggregator_parameter_cases()  # some aggregators have parameters
    with pytest.raises(SpecError, match=r"^agg: got 'median'; expected one of count, distinct"):
        build_aggregator("median")
    for name in AGGREGATOR_NAMES:
        with pytest.raises(SpecError, match=rf"^no_such: the {name} aggregator has no parameter"):
            build_aggregator(name, no_such=1)


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_aggregator_docstring_documents_parameters_and_has_a_seeded_example(name: str) -> None:
    check_documented(AGGREGATORS[name], aggregator_params(name))
