"""Rolling model metrics equal scikit-learn on the window, and river's rolling metrics."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from river import metrics, utils

from driftline.errors import DriftlineError, SpecError
from driftline.streams.labels import JoinedBatch, LabelJoin
from driftline.streams.model_metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    CountWindowMetrics,
    TimeWindowMetrics,
    classification_metrics,
    regression_metrics,
    roc_auc,
)

skm = pytest.importorskip("sklearn.metrics")


def _sk_classification(y: np.ndarray, s: np.ndarray, thr: float = 0.5) -> dict[str, float]:
    if y.size == 0:
        return dict.fromkeys(CLASSIFICATION_METRICS, math.nan) | {"n": 0.0}
    p = (s >= thr).astype(int)
    y = y.astype(int)
    kw = {"zero_division": np.nan, "labels": [0, 1], "pos_label": 1}
    return {
        "n": float(y.size),
        "accuracy": skm.accuracy_score(y, p),
        "precision": skm.precision_score(y, p, **kw),
        "recall": skm.recall_score(y, p, **kw),
        "f1": skm.f1_score(y, p, **kw),
        "auc": skm.roc_auc_score(y, s) if 0 < y.sum() < y.size else math.nan,
    }


def _sk_regression(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    if y.size == 0:
        return {"n": 0.0, "mae": math.nan, "rmse": math.nan}
    return {
        "n": float(y.size),
        "mae": skm.mean_absolute_error(y, s),
        "rmse": skm.root_mean_squared_error(y, s),
    }


def _close(got: dict[str, float], want: dict[str, float], tol: float = 1e-12) -> None:
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=tol, abs=tol), k


def _data(seed: int, n: int, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    s = np.clip(0.35 * y + rng.normal(0.35, 0.2, n), 0, 1)
    if ties:
        s = np.round(s, 1)  # many tied scores, some exactly at the threshold
    return y, s


# ---------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [True, False])
def test_classification_kernel_equals_sklearn(seed: int, ties: bool) -> None:
    y, s = _data(seed, 500, ties)
    _close(classification_metrics(y, s), _sk_classification(y, s))
    _close(classification_metrics(y, s, 0.3), _sk_classification(y, s, 0.3))


@pytest.mark.parametrize("seed", range(3))
def test_regression_kernel_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=300)
    s = y + rng.standard_t(3, 300)
    _close(regression_metrics(y, s), _sk_regression(y, s))


@pytest.mark.parametrize(
    ("y", "s", "expected"),
    [
        # empty
        ([], [], dict.fromkeys(CLASSIFICATION_METRICS, math.nan) | {"n": 0.0}),
        # one class only: auc and the undefined ratios are NaN
        (
            [1, 1],
            [0.9, 0.2],
            {"n": 2.0, "accuracy": 0.5, "precision": 1.0, "recall": 0.5, "f1": 2 / 3},
        ),
        (
            [0, 0],
            [0.1, 0.2],
            {"n": 2.0, "accuracy": 1.0, "precision": math.nan, "recall": math.nan},
        ),
        # all tied scores: auc 0.5; 0.5 is on the positive side of the threshold
        ([0, 1, 0, 1], [0.5] * 4, {"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "auc": 0.5}),
        # perfectly wrong ranking
        ([1, 0], [0.2, 0.8], {"accuracy": 0.0, "f1": 0.0, "auc": 0.0}),
        # hand-computed: tp=2 fp=1 fn=1 tn=2; auc pairs: 7.5 of 9
        (
            [1, 1, 1, 0, 0, 0],
            [0.9, 0.6, 0.4, 0.6, 0.3, 0.1],
            {"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "auc": 7.5 / 9},
        ),
    ],
)
def test_classification_edge_cases(y, s, expected) -> None:
    got = classification_metrics(np.array(y, float), np.array(s, float))
    if len(y) and len(set(y)) == 1:
        assert math.isnan(got["auc"])
    _close({k: got[k] for k in expected}, expected)


def test_roc_auc_ties_equal_sklearn() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 1_000)
    s = rng.integers(0, 4, 1_000).astype(float)  # 4 distinct scores only
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-14)


# ---------------------------------------------------------------------------- windows
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("size", [1, 50, 700])
def test_count_window_equals_sklearn_on_last_n(task: str, size: int) -> None:
    y, s = _data(1, 2_000)
    if task == "regression":
        s = s * 3 - y
    y[::97] = np.nan  # skipped
    s[5::101] = np.inf  # skipped
    if task == "classification":
        y[7::89] = 2.0  # not a 0/1 label: skipped
    ok = np.isfinite(y) & np.isfinite(s) & ((y <= 1) if task == "classification" else True)
    m = CountWindowMetrics(task, size)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, 2_000), 15, replace=False))
    ref = _sk_classification if task == "classification" else _sk_regression
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, 2_000], strict=True):
        m.update_many(s[a:b], y[a:b])
        vy, vs = y[:b][ok[:b]][-size:], s[:b][ok[:b]][-size:]
        _close(m.result(), ref(vy, vs))
    assert m.n_skipped == int((~ok).sum()) and m.n_seen == 2_000


@pytest.mark.parametrize("clock", ["label", "event"])
def test_time_window_equals_brute_force(clock: str) -> None:
    rng = np.random.default_rng(4)
    n, w = 3_000, 5_000
    y, s = _data(2, n)
    t_event = np.sort(rng.integers(0, 100_000, n))
    t_label = t_event + rng.integers(0, 20_000, n)  # delayed, so out of order
    arrive = np.argsort(t_label, kind="stable")  # labels arrive in label-time order
    y, s, t_event, t_label = y[arrive], s[arrive], t_event[arrive], t_label[arrive]
    t = t_label if clock == "label" else t_event
    m = TimeWindowMetrics("classification", w, clock=clock)
    ids = np.array([str(i) for i in range(n)], dtype=object)
    for a in range(0, n, 250):
        sl = slice(a, a + 250)
        m.update(
            JoinedBatch(
                ids[sl],
                t_event[sl],
                t_label[sl],
                t_label[sl] - t_event[sl],
                s[sl],
                np.full(len(ids[sl]), np.nan),
                y[sl],
                np.empty((len(ids[sl]), 0)),
            )
        )
        end = int(t[: a + 250].max())
        inside = t[: a + 250] > end - w
        _close(m.result(), _sk_classification(y[: a + 250][inside], s[: a + 250][inside]))
        assert m.window_end_ms == end
    batch_end = np.repeat(np.maximum.accumulate(t.reshape(-1, 250).max(axis=1)), 250)
    assert m.n_late == int((t <= batch_end - w).sum())
    assert m.n_late > 0  # 250 labels span more than the window: the batch's oldest are late


def test_time_window_boundaries_and_advance() -> None:
    m = TimeWindowMetrics("regression", 100)
    m.update_many(np.array([1.0, 2.0, 3.0]), np.zeros(3), np.array([0, 50, 100]))
    assert (m.n, m.n_late) == (2, 1)  # (0, 100]: the batch's own end drops t=0
    m.update_many(np.array([4.0]), np.zeros(1), np.array([101]))
    assert m.n == 3 and m.result()["mae"] == 3.0  # (1, 101]: 2, 3, 4
    m.update_many(np.array([9.0]), np.zeros(1), np.array([1]))  # too old: dropped
    assert (m.n, m.n_late) == (3, 2)
    m.advance(50)  # earlier than the end: no effect
    assert m.window_end_ms == 101
    m.advance(10_000)
    assert m.n == 0 and math.isnan(m.result()["rmse"])


def test_window_includes_its_end_only() -> None:
    m = TimeWindowMetrics("regression", 100)
    m.update_many(np.array([1.0, 2.0]), np.zeros(2), np.array([0, 100]))
    assert m.n == 1 and m.result()["mae"] == 2.0


# ---------------------------------------------------------------------------- river
@pytest.mark.parametrize("size", [200, 1_000])
def test_count_window_equals_river_rolling_accuracy_and_f1(size: int) -> None:
    y, s = _data(3, 3_000)
    acc = utils.Rolling(metrics.Accuracy, window_size=size)
    f1 = utils.Rolling(metrics.F1, window_size=size)
    m = CountWindowMetrics("classification", size)
    for i, (yt, sc) in enumerate(zip(y.tolist(), s.tolist(), strict=True)):
        acc.update(bool(yt), sc >= 0.5)
        f1.update(bool(yt), sc >= 0.5)
        if i % 250 == 249:
            m.update_many(s[i - 249 : i + 1], y[i - 249 : i + 1])
            r = m.result()
            assert r["accuracy"] == pytest.approx(acc.get(), abs=1e-12)
            assert r["f1"] == pytest.approx(f1.get(), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_exact_vs_river_rocauc_approximation(seed: int) -> None:
    """river's ROCAUC bins scores on n_thresholds points: close to the exact AUC, not equal."""
    y, s = _data(seed, 4_000, ties=False)
    approx = {k: metrics.ROCAUC(n_thresholds=k) for k in (10, 100)}
    for yt, sc in zip(y.tolist(), s.tolist(), strict=True):
        for r in approx.values():
            r.update(bool(yt), {True: sc, False: 1 - sc})
    m = CountWindowMetrics("classification", 10_000)
    m.update_many(s, y)
    exact = m.result()["auc"]
    assert exact == pytest.approx(skm.roc_auc_score(y, s), abs=1e-14)
    assert abs(approx[10].get() - exact) < 0.02
    assert abs(approx[100].get() - exact) < abs(approx[10].get() - exact) + 1e-3
    assert abs(approx[100].get() - exact) < 0.005


# ---------------------------------------------------------------------------- state, params
def _json(x):
    return orjson.loads(orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY))


@pytest.mark.parametrize(
    "make",
    [
        lambda: CountWindowMetrics("classification", 300),
        lambda: CountWindowMetrics("regression", 300),
        lambda: TimeWindowMetrics("classification", 2_000, clock="event"),
        lambda: TimeWindowMetrics("regression", 2_000, threshold=0.7),
    ],
)
def test_snapshot_restore_mid_stream(make) -> None:
    y, s = _data(9, 2_000)
    t = np.arange(2_000) * 7 + np.random.default_rng(0).integers(0, 500, 2_000)
    a = make()

    def feed(m, sl):
        if isinstance(m, TimeWindowMetrics):
            m.update_many(s[sl], y[sl], t[sl])
        else:
            m.update_many(s[sl], y[sl])

    feed(a, slice(0, 900))
    state = _json(a.snapshot())
    b = make()
    b.restore(state)
    assert _json(b.snapshot()) == state
    for k in range(900, 2_000, 100):
        feed(a, slice(k, k + 100))
        feed(b, slice(k, k + 100))
        _close(a.result(), b.result(), 0.0)
    assert a.snapshot() == b.snapshot()


def test_restore_rejects_mismatch() -> None:
    state = CountWindowMetrics("classification", 10).snapshot()
    with pytest.raises(DriftlineError, match="hyperparameters"):
        CountWindowMetrics("classification", 11).restore(state)
    with pytest.raises(DriftlineError, match="not a time_window_metrics"):
        TimeWindowMetrics("classification", 10).restore(state)
    with pytest.raises(DriftlineError, match="malformed"):
        CountWindowMetrics("classification", 10).restore({**state, "labels": [1.0]})


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: CountWindowMetrics("ranking", 10), "task"),
        (lambda: CountWindowMetrics("regression", 0), "size"),
        (lambda: CountWindowMetrics("classification", 10, threshold=1.5), "threshold"),
        (lambda: TimeWindowMetrics("regression", 0), "window_ms"),
        (lambda: TimeWindowMetrics("regression", 10, clock="wall"), "clock"),
    ],
)
def test_bad_hyperparameters(make, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        make()


def test_metrics_of_a_label_join() -> None:
    j = LabelJoin(ttl_ms=1_000)
    j.add_predictions(
        np.array(["a", "b", "c"], dtype=object), np.array([0, 1, 2]), np.array([0.9, 0.6, 0.1])
    )
    m = CountWindowMetrics("classification", 10)
    m.update(j.add_labels(np.array(["c", "a", "b"], dtype=object), np.array([0.0, 1, 0]), 5))
    assert m.result()["accuracy"] == pytest.approx(2 / 3)
    assert m.result()["auc"] == 1.0
    assert REGRESSION_METRICS == tuple(CountWindowMetrics("regression", 1).result())
