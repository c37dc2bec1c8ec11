"""Plain-data state of river detectors and online models: bit-identical continuation after a
JSON round trip, typed checks on every field, no pickle, clear refusals."""

from __future__ import annotations

import copy
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from river import compose, linear_model, optim, preprocessing, tree
from river.drift import ADWIN, PageHinkley
from river.drift.binary import DDM, HDDMA, HDDMW

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.adwin import AdwinDetector
from driftline.streams.detectors.sequential import (
    DDMDetector,
    HDDMADetector,
    HDDMWDetector,
    PageHinkleyDetector,
)
from driftline.streams.model import build_builtin
from driftline.streams.plain_state import (
    LEARNABLE_MODELS,
    ModelMismatch,
    check_learnable,
    model_state,
    restore_model,
    restore_river_detector,
    river_detector_state,
)


def deep_state(obj: Any, memo: dict[int, int] | None = None) -> Any:
    """Everything an object holds, recursively, as comparable data: Python objects by their
    attributes, river's Rust objects by their own binary state, floats by their bits, and an
    object met again by the order it was first met in (so aliasing must match too)."""
    memo = {} if memo is None else memo
    if isinstance(obj, float):
        return ("float", obj.hex())
    if obj is None or isinstance(obj, bool | int | str):
        return (type(obj).__name__, obj)
    if isinstance(obj, list | tuple):
        return [deep_state(x, memo) for x in obj]
    if isinstance(obj, set | frozenset):
        return ("set", sorted(map(repr, obj)))
    if isinstance(obj, dict):
        return [(deep_state(k, memo), deep_state(v, memo)) for k, v in obj.items()]
    if hasattr(obj, "__func__"):  # a bound method (Page-Hinkley's test)
        return ("method", obj.__func__.__qualname__, deep_state(obj.__self__, memo))
    if id(obj) in memo:
        return ("seen", memo[id(obj)])
    memo[id(obj)] = len(memo)
    if type(obj).__module__.startswith("river._river_rust"):
        if type(obj).__name__ == "VectorDict":
            return ("VectorDict", deep_state(obj.to_dict(), memo))
        return (type(obj).__name__, obj.__getstate__())
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "__dict__")):
        return ("callable", repr(obj))
    return (type(obj).__qualname__, deep_state(dict(vars(obj)), memo))


def bad_values(v: Any, evil: str) -> list[Any]:
    """Values of another type than ``v`` (as it appears in a JSON snapshot)."""
    if v is None:  # an optional number (DDM's minimum before it has one)
        return [evil, True, 1.0, [v], {"v": v}]
    if isinstance(v, bool):
        return [evil, 1, 1.5, None, [v]]
    if isinstance(v, dict):
        return [evil, [v], 1.0, None]
    if isinstance(v, list):
        return [evil, {"x": v}, 1.0, None]
    if isinstance(v, int):
        return [evil, 1.5, True, None, [v]]
    if isinstance(v, float) or v in ("nan", "inf", "-inf"):
        return [evil, True, None, [v], {"v": v}, "1.5"]
    assert isinstance(v, str)
    return [1.0, None, [v]]


def via_json(state: dict[str, Any]) -> dict[str, Any]:
    """A snapshot as a restart reads it back: strict JSON (no NaN/inf literals)."""
    return json.loads(json.dumps(state, allow_nan=False))


# ---------------------------------------------------------------------------- streams
def error_stream(seed: int, n: int = 6_000) -> np.ndarray:
    """0/1 errors whose rate rises twice, then falls (both directions of drift)."""
    rng = np.random.default_rng(seed)
    p = np.repeat([0.05, 0.25, 0.5, 0.1], n // 4)
    return (rng.random(p.size) < p).astype(np.float64)


def real_stream(seed: int, n: int = 8_000) -> np.ndarray:
    """Real values with mean shifts up and down, and a variance change."""
    rng = np.random.default_rng(seed)
    mu = np.repeat([0.0, 1.5, -1.0, 0.5], n // 4)
    sd = np.repeat([1.0, 1.0, 3.0, 0.5], n // 4)
    return rng.normal(mu, sd)


RIVER: list[tuple[str, Callable[[], Any], Callable[[int], np.ndarray]]] = [
    ("ADWIN", lambda: ADWIN(delta=0.01, clock=4, max_buckets=3, grace_period=5), real_stream),
    ("ADWIN-default", ADWIN, real_stream),
    ("PageHinkley", lambda: PageHinkley(threshold=20.0, mode="both"), real_stream),
    ("PageHinkley-up", lambda: PageHinkley(threshold=10.0, alpha=1.0, mode="up"), real_stream),
    ("DDM", lambda: DDM(warm_start=50), error_stream),
    ("HDDMA", lambda: HDDMA(two_sided_test=True), error_stream),
    ("HDDMW", lambda: HDDMW(two_sided_test=True, lambda_val=0.1), error_stream),
    ("HDDMW-one-sided", HDDMW, error_stream),
]


def drive(det: Any, xs: np.ndarray) -> list[int]:
    out = []
    for i, x in enumerate(xs.tolist()):
        det.update(x)
        if det.drift_detected:
            out.append(i)
    return out


@pytest.mark.parametrize(("name", "make", "stream"), RIVER, ids=[r[0] for r in RIVER])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_restored_river_detector_continues_bit_identically(
    name: str, make: Callable[[], Any], stream: Callable[[int], np.ndarray], seed: int
) -> None:
    xs = stream(seed)
    whole = make()
    expected = drive(whole, xs)
    assert len(expected) >= 2, f"{name}: the stream should make it detect"
    # cut everywhere interesting: the start, right at and after each detection, elsewhere
    cuts = {0, 1, 2, 37, len(xs) // 3, len(xs) - 1, len(xs)}
    cuts |= {i for d in expected for i in (d, d + 1)}
    for cut in sorted(c for c in cuts if c <= len(xs)):
        first = make()
        got = drive(first, xs[:cut])
        state = via_json(river_detector_state(first))
        template = make()
        second = restore_river_detector(template, state)
        assert deep_state(template) == deep_state(make()), "the template was modified"
        assert type(second) is type(first)
        assert deep_state(second) == deep_state(first), f"{name} cut {cut}: state differs"
        got += [i + cut for i in drive(second, xs[cut:])]
        assert got == expected, f"{name} cut {cut}"
        assert deep_state(second) == deep_state(whole), f"{name} cut {cut}: end state differs"


WRAPPED: list[tuple[str, Callable[[], Any], Callable[[int], np.ndarray]]] = [
    ("adwin", lambda: AdwinDetector(delta=0.01, cooldown=300), real_stream),
    ("page_hinkley", lambda: PageHinkleyDetector(threshold=20.0, cooldown=200), real_stream),
    ("ddm", lambda: DDMDetector(warm_start=50, cooldown=100), error_stream),
    ("hddm_a", lambda: HDDMADetector(two_sided_test=True, cooldown=100), error_stream),
    ("hddm_w", lambda: HDDMWDetector(two_sided_test=True, cooldown=100), error_stream),
]


@pytest.mark.parametrize(("name", "make", "stream"), WRAPPED, ids=[w[0] for w in WRAPPED])
def test_every_wrapped_detector_resumes_from_a_json_snapshot_as_if_uninterrupted(
    name: str, make: Callable[[], Any], stream: Callable[[int], np.ndarray]
) -> None:
    xs = stream(7)
    whole = make()
    expected = [(d.index, d.status, d.statistic) for d in whole.update_many(xs)]
    assert sum(1 for e in expected if e[1] == "firing") >= 2
    for cut in (0, 1, 999, len(xs) // 2, expected[0][0], expected[0][0] + 1, len(xs)):
        first = make()
        got = [(d.index, d.status, d.statistic) for d in first.update_many(xs[:cut])]
        snap = first.snapshot()
        blob = json.dumps(snap, allow_nan=False)
        assert "river" in snap and isinstance(snap["river"], dict)
        second = make()
        second.restore(json.loads(blob))
        rest = second.update_many(xs[cut:])
        got += [(d.index + cut, d.status, d.statistic) for d in rest]
        assert got == expected, f"{name} cut {cut}"
        assert deep_state(second._river) == deep_state(whole._river)
        assert second.snapshot() == whole.snapshot()


def _all_paths(state: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(state, dict):
        for k, v in state.items():
            out += _all_paths(v, (*path, k))
    elif isinstance(state, list):
        for i, v in enumerate(state):
            out += _all_paths(v, (*path, i))
    return out


def _replace(state: Any, path: tuple[Any, ...], value: Any) -> Any:
    state = copy.deepcopy(state)
    node = state
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return state


def _evil_pickle(marker: Path) -> str:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    import base64

    return base64.b64encode(pickle.dumps(Evil())).decode()


@pytest.mark.parametrize(("name", "make", "stream"), RIVER, ids=[r[0] for r in RIVER])
def test_every_field_is_type_checked(
    name: str, make: Callable[[], Any], stream: Callable[[int], np.ndarray], tmp_path: Path
) -> None:
    det = make()
    drive(det, stream(3)[:500])
    state = via_json(river_detector_state(det))
    marker = tmp_path / "pwned"
    evil = _evil_pickle(marker)
    paths = _all_paths(state)
    assert len(paths) >= 5
    for path in paths:
        for bad in bad_values(_get(state, path), evil):
            with pytest.raises(DriftlineError):
                restore_river_detector(make(), _replace(state, path, bad))
    for broken in (
        {**state, "extra": 1},
        {k: v for k, v in state.items() if k != "drift_detected"},
        {**state, "type": "Evil"},
        evil,
        [state],
        None,
    ):
        with pytest.raises(DriftlineError):
            restore_river_detector(make(), broken)
    assert not marker.exists()


def _get(state: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        state = state[k]
    return state


def test_a_state_of_one_class_does_not_restore_into_another() -> None:
    ddm = DDM()
    drive(ddm, error_stream(1)[:300])
    with pytest.raises(DriftlineError, match="type: got 'DDM'; expected 'HDDMA'"):
        restore_river_detector(HDDMA(), river_detector_state(ddm))


def test_adwin_state_is_checked_for_consistency() -> None:
    d = ADWIN()
    drive(d, real_stream(2)[:3000])
    state = via_json(river_detector_state(d))
    assert len(state["buckets"]) > 3
    with pytest.raises(DriftlineError, match="the buckets hold"):
        restore_river_detector(ADWIN(), {**state, "width": state["width"] + 1.0})
    too_long = copy.deepcopy(state)
    too_long["buckets"][0]["totals"] += [1.0] * 10
    too_long["buckets"][0]["variances"] += [1.0] * 10
    with pytest.raises(DriftlineError, match="at most 5 items"):
        restore_river_detector(ADWIN(), too_long)
    ragged = copy.deepcopy(state)
    ragged["buckets"][1]["variances"].pop()
    with pytest.raises(DriftlineError, match="differ in length"):
        restore_river_detector(ADWIN(), ragged)
    with pytest.raises(DriftlineError, match="n_detections"):
        restore_river_detector(ADWIN(), {**state, "n_detections": 2**40})
    # hyperparameters come from the template: another max_buckets reads the lists differently
    with pytest.raises(DriftlineError):
        restore_river_detector(ADWIN(max_buckets=2), state)


def test_non_finite_floats_survive_strict_json() -> None:
    ph = PageHinkley()  # _min_increase starts at +inf
    hw = HDDMW()  # cut points start at +-inf
    for det in (ph, hw):
        state = river_detector_state(det)
        text = json.dumps(state, allow_nan=False)
        assert "inf" in text
        assert deep_state(restore_river_detector(type(det)(), json.loads(text))) == deep_state(det)


def test_snapshot_size_is_small() -> None:
    d = AdwinDetector(delta=0.002, cooldown=100)
    d.update_many(real_stream(4, 100_000))
    assert len(json.dumps(d.snapshot())) < 8_000  # log2(width) buckets of <= 5 sums


# ---------------------------------------------------------------------------- online models
def _rows(seed: int, n: int, inputs: list[str]) -> list[tuple[dict[str, float], float]]:
    rng = np.random.default_rng(seed)
    X = rng.normal([100.0, 50.0, 3.0][: len(inputs)], [30.0, 10.0, 1.0][: len(inputs)],
                   (n, len(inputs)))  # fmt: skip
    z = 0.03 * (X[:, 0] - 100.0) - 0.1 * (X[:, 1] - 50.0) + rng.normal(0, 0.5, n)
    return [
        (dict(zip(inputs, row, strict=True)), float(v))
        for row, v in zip(X.tolist(), z, strict=True)
    ]


def _learn(model: Any, rows: list[tuple[dict[str, float], float]], clf: bool) -> None:
    for x, z in rows:
        model.learn_one(x, bool(z > 0) if clf else z)


def _scores(model: Any, rows: list[tuple[dict[str, float], float]], clf: bool) -> list[float]:
    if clf:
        return [model.predict_proba_one(x)[True] for x, _ in rows]
    return [model.predict_one(x) for x, _ in rows]


MODELS: list[tuple[str, Callable[[], Any], bool]] = [
    ("builtin-logistic", lambda: build_builtin("logistic_regression"), True),
    ("builtin-linear", lambda: build_builtin("linear_regression"), False),
    ("bare-linear", lambda: linear_model.LinearRegression(l2=0.01, intercept_lr=0.05), False),
    (
        "pipeline-huber-no-std",
        lambda: compose.Pipeline(
            preprocessing.StandardScaler(with_std=False),
            linear_model.LinearRegression(optimizer=optim.SGD(0.001), loss=optim.losses.Huber()),
        ),
        False,
    ),
    (
        "logistic-hinge",
        lambda: linear_model.LogisticRegression(
            loss=optim.losses.Hinge(), initializer=optim.initializers.Constant(0.1)
        ),
        True,
    ),
]


@pytest.mark.parametrize(("name", "make", "clf"), MODELS, ids=[m[0] for m in MODELS])
def test_online_model_restores_with_identical_predictions(
    name: str, make: Callable[[], Any], clf: bool
) -> None:
    inputs = ["amount", "latency_ms", "amount_mean_1m"]
    train, more, probe = _rows(1, 800, inputs), _rows(2, 500, inputs), _rows(3, 300, inputs)
    check_learnable(make())
    configured = make()
    _learn(configured, _rows(0, 200, inputs), clf)  # the model file: trained offline
    live = copy.deepcopy(configured)
    _learn(live, train, clf)
    state = via_json(model_state(live))
    assert state["n_iterations"] == 1000
    restored = restore_model(configured, state)
    assert deep_state(restored) == deep_state(live)
    assert _scores(restored, probe, clf) == _scores(live, probe, clf)
    _learn(live, more, clf)
    _learn(restored, more, clf)
    assert _scores(restored, probe, clf) == _scores(live, probe, clf)
    assert deep_state(restored) == deep_state(live)
    assert model_state(restored) == model_state(live)
    # the configured model is untouched, and differs from what was learnt
    assert _scores(configured, probe, clf) != _scores(live, probe, clf)


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (tree.HoeffdingTreeClassifier(), "HoeffdingTreeClassifier"),
        (linear_model.LogisticRegression(optimizer=optim.Adam()), "not SGD"),
        (
            linear_model.LinearRegression(
                optimizer=optim.SGD(optim.schedulers.InverseScaling(0.1))
            ),
            "not a constant rate",
        ),
        (linear_model.LinearRegression(l1=0.1), "l1=0.1"),
        (linear_model.LinearRegression(initializer=optim.initializers.Normal(seed=1)), "Normal"),
        (linear_model.LinearRegression(loss=optim.losses.Poisson()), "Poisson"),
        (
            compose.Pipeline(
                preprocessing.StandardScaler(window_size=10), linear_model.LinearRegression()
            ),
            "window_size",
        ),
        (
            compose.Pipeline(preprocessing.MinMaxScaler(), linear_model.LinearRegression()),
            "MinMaxScaler",
        ),
    ],
)
def test_models_without_a_plain_encoding_are_refused_naming_the_supported_ones(
    model: Any, why: str
) -> None:
    with pytest.raises(SpecError) as e:
        check_learnable(model)
    msg = str(e.value)
    assert msg.startswith("labels.learn = true:") and why in msg and LEARNABLE_MODELS in msg
    assert "logistic_regression and linear_regression" in msg


def test_a_model_state_of_other_hyperparameters_is_a_mismatch() -> None:
    live = build_builtin("logistic_regression")
    _learn(live, _rows(1, 100, ["a", "b"]), True)
    state = via_json(model_state(live))
    other = compose.Pipeline(
        preprocessing.StandardScaler(), linear_model.LogisticRegression(optimizer=optim.SGD(0.1))
    )
    with pytest.raises(ModelMismatch, match="hyperparameters"):
        restore_model(other, state)
    with pytest.raises(ModelMismatch):
        restore_model(linear_model.LogisticRegression(optimizer=optim.SGD(0.05)), state)


def test_every_model_field_is_type_checked(tmp_path: Path) -> None:
    live = build_builtin("linear_regression")
    _learn(live, _rows(1, 50, ["a", "b"]), False)
    state = via_json(model_state(live))
    marker = tmp_path / "pwned"
    evil = _evil_pickle(marker)
    checked = 0
    for path in _all_paths(state):
        if path[0] in ("spec", "kind"):
            continue  # compared as a whole with the configured model's
        value = _get(state, path)
        bads = bad_values(value, evil)
        if path == ("y_name",) or (path[-1] == 0 and isinstance(value, str)):
            bads = [1.0, [value], {"x": 1}]  # names are any strings
        if path[0] == "n_iterations" or (path[:2] == ("scaler", "counts") and path[-1] == 1):
            bads.append(-1)  # counts are >= 0
        for bad in bads:
            with pytest.raises(DriftlineError):
                restore_model(build_builtin("linear_regression"), _replace(state, path, bad))
            checked += 1
    assert checked > 50
    dup = copy.deepcopy(state)
    dup["weights"].append(dup["weights"][0])
    for broken in (evil, None, {**state, "extra": 1}, {**state, "kind": "pickle"}, dup):
        with pytest.raises(DriftlineError):
            restore_model(build_builtin("linear_regression"), broken)
    assert not marker.exists()


def test_a_model_file_of_another_river_version_is_a_clear_error(tmp_path: Path) -> None:
    """The configured model file stays a pickle (the operator's own file); one naming a class
    this river does not have fails with what to do, not a bare AttributeError."""
    from driftline.model_io import FORMAT, load_model, save_model

    path = tmp_path / "m.pkl"
    save_model(build_builtin("linear_regression"), path, version="v1")
    assert load_model(path)[1] == "v1"
    gone = b"criver.linear_model\nLinearRegressionFromTheFuture\n."  # a class river lacks
    path.write_bytes(pickle.dumps({"format": FORMAT, "version": "v2", "model": gone}))
    with pytest.raises(DriftlineError, match="another river version"):
        load_model(path)
