"""Feature importance: known answers, sklearn, and importance events on a stream whose second
feature stops mattering."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from river import compose, linear_model, optim, preprocessing, tree

import driftline.streams.importance as imp
from driftline.errors import DriftlineError, SpecError
from driftline.streams.importance import (
    ImportanceMonitor,
    LabelledWindow,
    linear_importance,
    permutation_importance,
    shares,
)
from driftline.streams.labels import LabelJoin
from driftline.streams.model import BatchPredictor

NAMES = ["x0", "x1", "x2", "x3"]


def _json(x):
    return orjson.loads(orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY))


# ---------------------------------------------------------------------------- permutation
@pytest.mark.parametrize("n_repeats", [1, 3])
def test_permutation_known_answer_squared_error(n_repeats: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)) * [1.0, 2.0, 0.5]
    w = np.array([1.5, -0.5, 0.0])
    y = X @ w + rng.normal(0, 0.1, 500)
    r = permutation_importance(lambda A: A @ w, X, y, "squared_error", n_repeats, seed=42)
    # the same shuffles, by hand
    g = np.random.default_rng(42)
    base = np.mean((X @ w - y) ** 2)
    want = np.zeros(3)
    for _ in range(n_repeats):
        for j in range(3):
            Xp = X.copy()
            Xp[:, j] = X[g.permutation(500), j]
            want[j] += (np.mean((Xp @ w - y) ** 2) - base) / n_repeats
    assert r.baseline_loss == pytest.approx(base, rel=1e-12)
    np.testing.assert_allclose(r.increase, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        r.shares, np.maximum(want, 0) / np.maximum(want, 0).sum(), atol=1e-12
    )
    assert abs(r.increase[2]) < 1e-15 and r.shares.sum() == pytest.approx(1.0)


def test_permutation_log_loss_equals_sklearn() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(800, 2))

    def p(A):
        return 1 / (1 + np.exp(-(2 * A[:, 0] - A[:, 1])))

    y = (rng.random(800) < p(X)).astype(float)
    r = permutation_importance(p, X, y, "log_loss", seed=3)
    g = np.random.default_rng(3)
    base = skm.log_loss(y, p(X))
    assert r.baseline_loss == pytest.approx(base, rel=1e-12)
    for j in range(2):
        Xp = X.copy()
        Xp[:, j] = X[g.permutation(800), j]
        assert r.increase[j] == pytest.approx(skm.log_loss(y, p(Xp)) - base, rel=1e-9)


def test_permutation_close_to_sklearn_inspection() -> None:
    """Different shuffles, same expectation: sklearn's mean importance within a few percent."""
    inspection = pytest.importorskip("sklearn.inspection")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2_000, 3))
    w = np.array([2.0, 1.0, 0.5])
    y = X @ w

    from sklearn.base import BaseEstimator, RegressorMixin

    class Lin(RegressorMixin, BaseEstimator):
        def fit(self, X, y):
            return self

        def predict(self, A):
            return A @ w

    sk = inspection.permutation_importance(
        Lin(), X, y, scoring="neg_mean_squared_error", n_repeats=30, random_state=0
    )
    ours = permutation_importance(Lin().predict, X, y, "squared_error", n_repeats=30, seed=0)
    np.testing.assert_allclose(ours.increase, sk.importances_mean, rtol=0.05)
    np.testing.assert_allclose(ours.increase, 2 * w**2, rtol=0.1)  # E = 2 w^2 var


def test_permutation_chunking_does_not_change_results(monkeypatch) -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 5))
    y = X @ np.arange(5.0)
    calls = []

    def score(A):
        calls.append(A.shape[0])
        return A @ np.arange(5.0)

    whole = permutation_importance(score, X, y, "squared_error", n_repeats=2, seed=1)
    assert calls == [300, 3_000]  # the window, then all 10 shuffled copies in one call
    monkeypatch.setattr(imp, "_MAX_CELLS", 300 * 5 * 3)
    calls.clear()
    chunked = permutation_importance(score, X, y, "squared_error", n_repeats=2, seed=1)
    assert calls == [300, 900, 900, 900, 300]
    np.testing.assert_array_equal(whole.increase, chunked.increase)


def test_permutation_with_a_non_linear_river_model() -> None:
    rng = np.random.default_rng(5)
    model = tree.HoeffdingTreeRegressor()
    X = rng.normal(size=(1_500, 2))
    y = 3 * (X[:, 0] > 0) + 0.01 * X[:, 1]
    for row, t in zip(X.tolist(), y.tolist(), strict=True):
        model.learn_one(dict(zip(["a", "b"], row, strict=True)), t)
    r = permutation_importance(
        BatchPredictor(model, ["a", "b"]).predict, X[:300], y[:300], "squared_error", seed=0
    )
    assert r.shares[0] > 0.9


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"loss": "hinge"}, SpecError, "loss"),
        ({"n_repeats": 0}, SpecError, "n_repeats"),
        ({"X": np.zeros((1, 2)), "y": np.zeros(1)}, DriftlineError, "n >= 2"),
        ({"y": np.zeros(3)}, DriftlineError, "shapes"),
        ({"score": lambda A: A[:, 0][:-1]}, DriftlineError, "score: returned"),
    ],
)
def test_permutation_bad_inputs(kw, exc, match) -> None:
    args = {"score": lambda A: A[:, 0], "X": np.zeros((4, 2)), "y": np.zeros(4)} | kw
    with pytest.raises(exc, match=match):
        permutation_importance(**args)


def test_shares_edge_cases() -> None:
    assert shares(np.array([2.0, 2.0])).tolist() == [0.5, 0.5]
    assert np.isnan(shares(np.array([-1.0, 0.0]))).all()
    assert np.isnan(shares(np.array([np.inf, 1.0]))).all()
    assert np.isnan(shares(np.array([1.0, np.nan]))).all()  # undefined, not renormalised


# ---------------------------------------------------------------------------- linear
def _fit(model, X, y):
    for row, t in zip(X.tolist(), y.tolist(), strict=True):
        model.learn_one(dict(zip(NAMES, row, strict=True)), t)
    return model


def _weights(model) -> np.ndarray:
    lin = model[-1] if isinstance(model, compose.Pipeline) else model
    return np.array([lin._weights.get(c, 0.0) for c in NAMES])


def test_linear_behind_scaler_is_weight_share() -> None:
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3_000, 4)) * [1.0, 5.0, 0.1, 1.0]
    y = X @ [1.0, 0.2, 10.0, 0.0]  # every input contributes std 1, except x3
    m = _fit(
        compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression()), X, y
    )
    got = linear_importance(m, NAMES)
    w = np.abs(_weights(m))
    np.testing.assert_allclose(got, w / w.sum(), rtol=1e-12)
    np.testing.assert_allclose(got, [1 / 3, 1 / 3, 1 / 3, 0.0], atol=0.02)
    # on a window: stds of the scaled inputs over that window
    win = X[-500:]
    sc = m[0]
    mu = np.array([sc.means[c] for c in NAMES])
    sd = np.sqrt([sc.vars[c] for c in NAMES])
    v = w * ((win - mu) / sd).std(axis=0)
    np.testing.assert_allclose(linear_importance(m, NAMES, win), v / v.sum(), rtol=1e-12)


def test_linear_without_scaler_needs_a_window() -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4_000, 4)) * [1.0, 2.0, 1.0, 1.0]
    y = (rng.random(4_000) < 1 / (1 + np.exp(-(X @ [1.0, 0.5, 0.0, 0.0])))).astype(bool)
    m = _fit(linear_model.LogisticRegression(optimizer=optim.SGD(0.05)), X, y)
    with pytest.raises(DriftlineError, match="X"):
        linear_importance(m, NAMES)
    got = linear_importance(m, NAMES, X)
    v = np.abs(_weights(m)) * X.std(axis=0)
    np.testing.assert_allclose(got, v / v.sum(), rtol=1e-12)
    # truth |1| * 1 vs |0.5| * 2; river's SGD estimates are noisy
    assert got[0] > 0.3 and got[1] > 0.3 and got[2] + got[3] < 0.05


def test_linear_rejects_other_models_and_shapes() -> None:
    with pytest.raises(DriftlineError, match="LinearRegression"):
        linear_importance(tree.HoeffdingTreeClassifier(), NAMES)
    m = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())
    with pytest.raises(DriftlineError, match="shape"):
        linear_importance(m, NAMES, np.zeros((3, 2)))
    assert np.isnan(linear_importance(m, NAMES)).all()  # untrained: no weight anywhere


# ---------------------------------------------------------------------------- over time
K = 6_000  # step after which x1 stops mattering


def _drifting_stream(seed: int, n: int = 12_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    w = np.where(np.arange(n)[:, None] < K, [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0])
    return X, (X * w).sum(axis=1) + rng.normal(0, 0.3, n)


@pytest.mark.parametrize("measure", ["linear", "permutation"])
@pytest.mark.parametrize("seed", [0, 1])
def test_irrelevant_feature_fires_after_k_only(measure: str, seed: int) -> None:
    X, y = _drifting_stream(seed)
    model = compose.Pipeline(
        preprocessing.StandardScaler(), linear_model.LinearRegression(optimizer=optim.SGD(0.01))
    )
    pred = BatchPredictor(model, NAMES)
    window = LabelledWindow(1_000)
    mon = ImportanceMonitor(threshold=0.15, min_examples=1_000, features=NAMES)
    events = []
    for a in range(0, len(y), 500):
        Xb, yb = X[a : a + 500], y[a : a + 500]
        window.update_many(Xb, yb)
        _fit(model, Xb, yb)
        if measure == "linear":
            s = linear_importance(model, NAMES, window.X)
        else:
            s = permutation_importance(pred.predict, window.X, window.y, "squared_error").shares
        events += [(a + 500, e) for e in mon.update(s, len(window), time_ms=a + 500)]
    assert mon.reference is not None and mon.reference[1] > 0.2
    assert events, "x1 lost its importance: an event was expected"
    assert all(step > K for step, _ in events)
    first_step, first = events[0]
    assert (first.feature, first.status) == ("x1", "firing")
    assert first_step <= K + 3_000
    assert first.current_share < first.reference_share - 0.15
    assert {e.feature for _, e in events} == {"x1"}
    assert mon.firing == ["x1"]


def test_stable_stream_never_fires() -> None:
    rng = np.random.default_rng(3)
    w = np.array([1.0, 0.5, 2.0, 0.0])
    mon = ImportanceMonitor(threshold=0.1, min_examples=500)
    for step in range(40):
        X = rng.normal(size=(1_000, 4))
        y = X @ w + rng.normal(0, 0.5, 1_000)
        r = permutation_importance(lambda A: A @ w, X, y, "squared_error", seed=step)
        assert mon.update(r.shares, 1_000) == []
    assert mon.n_evaluations == 40 and mon.firing == []


# ---------------------------------------------------------------------------- monitor
@pytest.mark.parametrize(
    ("kw", "seq", "want"),
    [
        # (n_examples, shares) per update; want: (evaluation, feature, status)
        (
            {},
            [(50, [0.5, 0.5]), (300, [0.5, 0.5]), (300, [0.75, 0.25])],
            [(2, "0", "firing"), (2, "1", "firing")],
        ),
        # a move of exactly the threshold is within (0.25 is exact in binary)
        ({"threshold": 0.25}, [(300, [0.5, 0.5]), (300, [0.75, 0.25])], []),
        ({}, [(300, [0.5, 0.5]), (300, [np.nan, 0.5]), (300, [0.5, 0.5])], []),  # NaN ignored
        (
            {"n_confirm": 2, "n_clear": 1},
            [
                (300, [0.5, 0.5]),
                (300, [0.8, 0.2]),
                (300, [0.5, 0.5]),
                (300, [0.8, 0.2]),
                (300, [0.8, 0.2]),
                (300, [0.6, 0.4]),
            ],
            [(5, "0", "firing"), (5, "1", "firing"), (6, "0", "resolved"), (6, "1", "resolved")],
        ),
        (
            {"n_clear": 1, "cooldown": 3},
            [
                (300, [0.5, 0.5, 0.0]),
                (300, [0.1, 0.5, 0.4]),
                (300, [0.5, 0.5, 0.0]),
                (300, [0.1, 0.5, 0.4]),
                (300, [0.1, 0.5, 0.4]),
                (300, [0.1, 0.5, 0.4]),
            ],
            [
                (2, "0", "firing"),
                (2, "2", "firing"),
                (3, "0", "resolved"),
                (3, "2", "resolved"),
                (6, "0", "firing"),
                (6, "2", "firing"),
            ],
        ),
    ],
)
def test_monitor_table(kw, seq, want) -> None:
    mon = ImportanceMonitor(**({"threshold": 0.2, "min_examples": 200} | kw))
    got = []
    for n, s in seq:
        got += [(e.evaluation, e.feature, e.status) for e in mon.update(np.array(s), n)]
    assert got == want


def test_monitor_event_fields_and_shape_check() -> None:
    mon = ImportanceMonitor(features=["a", "b"], min_examples=1)
    mon.update(np.array([0.9, 0.1]), 10)
    (e, _) = mon.update(np.array([0.4, 0.6]), 12, time_ms=1_234)
    assert (e.kind, e.feature, e.reference_share, e.current_share, e.n_examples, e.time_ms) == (
        "importance",
        "a",
        0.9,
        0.4,
        12,
        1_234,
    )
    with pytest.raises(DriftlineError, match="shape"):
        mon.update(np.array([0.2, 0.3, 0.5]), 12)
    with pytest.raises(DriftlineError, match="shape"):
        ImportanceMonitor(features=["a"]).update(np.array([0.5, 0.5]), 500)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"min_examples": 0}, "min_examples"),
        ({"n_confirm": 0}, "n_confirm"),
        ({"n_clear": 0}, "n_clear"),
        ({"cooldown": -1}, "cooldown"),
        ({"features": ["a", "a"]}, "features"),
        ({"features": []}, "features"),
    ],
)
def test_monitor_bad_hyperparameters(kw, match) -> None:
    with pytest.raises(SpecError, match=match):
        ImportanceMonitor(**kw)


def test_monitor_snapshot_restore_mid_stream() -> None:
    rng = np.random.default_rng(8)
    seq = [rng.dirichlet([1, 1, 1]) for _ in range(60)]
    a = ImportanceMonitor(threshold=0.25, min_examples=10, n_confirm=2, features=["p", "q", "r"])
    for s in seq[:30]:
        a.update(s, 100)
    state = _json(a.snapshot())
    b = ImportanceMonitor(threshold=0.25, min_examples=10, n_confirm=2, features=["p", "q", "r"])
    b.restore(state)
    assert _json(b.snapshot()) == state
    ea = [e for s in seq[30:] for e in a.update(s, 100)]
    eb = [e for s in seq[30:] for e in b.update(s, 100)]
    assert ea == eb and len(ea) > 0
    assert a.snapshot() == b.snapshot()
    with pytest.raises(DriftlineError, match="hyperparameters"):
        ImportanceMonitor(threshold=0.3, min_examples=10, n_confirm=2).restore(state)
    with pytest.raises(DriftlineError, match="disagree"):
        b.restore({**state, "alarms": []})


def test_empty_monitor_round_trips() -> None:
    a = ImportanceMonitor()
    b = ImportanceMonitor()
    b.restore(_json(a.snapshot()))
    assert b.snapshot() == a.snapshot() and b.reference is None


# ---------------------------------------------------------------------------- window
def test_labelled_window_from_label_join_and_snapshot() -> None:
    j = LabelJoin(ttl_ms=10_000)
    ids = np.array([f"p{i}" for i in range(6)], dtype=object)
    feats = np.arange(12.0).reshape(6, 2)
    feats[2, 1] = np.nan
    j.add_predictions(ids, np.arange(6), np.full(6, 0.5), features=feats)
    w = LabelledWindow(3)
    w.update(j.add_labels(ids[:4], np.array([1.0, 0.0, 1.0, 0.0]), 10))
    assert w.X.tolist() == [[0.0, 1.0], [2.0, 3.0], [6.0, 7.0]] and w.n_skipped == 1
    state = _json(w.snapshot())
    w2 = LabelledWindow(3)
    w2.restore(state)
    batch = j.add_labels(ids[4:], np.array([1.0, 1.0]), 11)
    w.update(batch)
    w2.update(batch)
    assert w.snapshot() == w2.snapshot()
    assert w.y.tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(DriftlineError, match="columns"):
        w.update_many(np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(SpecError, match="size"):
        LabelledWindow(1)
    empty = LabelledWindow(5)
    empty.restore(_json(LabelledWindow(5).snapshot()))
    assert len(empty) == 0
