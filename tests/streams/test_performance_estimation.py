"""CBPE: calibration equal to sklearn's isotonic regression, estimates equal to NannyML's CBPE
on the same chunks, and estimates against realized metrics on seeded streams (bench/cbpe_bench)."""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.errors import DriftlineError
from driftline.streams.calibration import IsotonicCalibrator, pool_adjacent_violators
from driftline.streams.model_metrics import classification_metrics
from driftline.streams.performance_estimation import (
    ESTIMATED_METRICS,
    PerformanceEstimator,
    expected_auc,
    expected_metrics,
    sampled_spread,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cbpe_bench.py"


def _bench():
    if "cbpe_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("cbpe_bench", BENCH)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["cbpe_bench"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["cbpe_bench"]


# ---------------------------------------------------------------- calibration vs sklearn
@pytest.mark.parametrize(
    ("n", "decimals", "seed"),
    [(1, 3, 0), (2, 3, 1), (7, 1, 2), (50, 2, 3), (2_000, 2, 4), (5_000, 6, 5), (300, 0, 6)],
)
def test_isotonic_equals_sklearn(n: int, decimals: int, seed: int) -> None:
    isotonic = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(0, 1, n), decimals)  # ties when rounded
    y = (rng.uniform(0, 1, n) < s**2).astype(float)
    ref = isotonic.IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, y)
    cal = IsotonicCalibrator().fit(s, y)
    t = np.r_[rng.uniform(-0.5, 1.5, 500), s]
    np.testing.assert_allclose(cal.predict(t), ref.predict(t), atol=1e-12)
    if n > 1:
        np.testing.assert_allclose(cal.x, ref.X_thresholds_)
        np.testing.assert_allclose(cal.y, ref.y_thresholds_, atol=1e-12)


@pytest.mark.parametrize(
    ("y", "w", "expected"),
    [
        ([], [], []),
        ([1.0], [2.0], [1.0]),
        ([1.0, 2.0, 3.0], [1, 1, 1], [1.0, 2.0, 3.0]),
        ([3.0, 2.0, 1.0], [1, 1, 1], [2.0, 2.0, 2.0]),
        ([1.0, 3.0, 2.0, 4.0], [1, 1, 1, 1], [1.0, 2.5, 2.5, 4.0]),
        ([0.0, 1.0, 0.0, 0.0, 1.0], [1, 1, 1, 1, 1], [0.0, 1 / 3, 1 / 3, 1 / 3, 1.0]),
        ([2.0, 1.0], [3.0, 1.0], [1.75, 1.75]),
    ],
)
def test_pool_adjacent_violators(y: list, w: list, expected: list) -> None:
    got = pool_adjacent_violators(np.array(y, dtype=float), np.array(w, dtype=float))
    np.testing.assert_allclose(got, expected)


def test_calibrator_state_and_errors() -> None:
    cal = IsotonicCalibrator().fit(np.array([0.1, 0.5, 0.9]), np.array([0.0, 1.0, 1.0]))
    back = IsotonicCalibrator.from_snapshot(orjson.loads(orjson.dumps(cal.snapshot())))
    assert back.x.tolist() == cal.x.tolist() and back.y.tolist() == cal.y.tolist()
    assert back.n_fit == 3
    with pytest.raises(DriftlineError, match="predict before fit"):
        IsotonicCalibrator().predict(np.array([0.5]))
    with pytest.raises(DriftlineError, match="no finite"):
        IsotonicCalibrator().fit(np.array([np.nan]), np.array([1.0]))
    bad = {**cal.snapshot(), "y": [1.0, 0.5, 0.0]}
    with pytest.raises(DriftlineError, match="not increasing"):
        IsotonicCalibrator.from_snapshot(bad)


# ---------------------------------------------------------------- estimates, by hand
@pytest.mark.parametrize(
    ("probs", "scores", "expected"),
    [
        # certain labels: the expected metrics are the realized ones
        ([1, 0, 1, 0], [0.9, 0.2, 0.3, 0.6],
         {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "auc": 0.75}),
        ([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1],
         {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "auc": 1.0}),
        # nothing predicted positive: precision undefined; recall 0
        ([0.3, 0.2], [0.1, 0.2],
         {"accuracy": 0.75, "precision": math.nan, "recall": 0.0, "f1": 0.0, "auc": 13 / 30}),
        # all tied: AUC one half
        ([0.5, 0.5, 0.5], [0.7, 0.7, 0.7],
         {"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "auc": 0.5}),
        # no positive expected: recall, F1 and AUC undefined
        ([0.0, 0.0], [0.7, 0.2],
         {"accuracy": 0.5, "precision": 0.0, "recall": math.nan, "f1": 0.0, "auc": math.nan}),
        ([], [], dict.fromkeys(ESTIMATED_METRICS, math.nan)),
    ],
)  # fmt: skip
def test_expected_metrics_by_hand(probs: list, scores: list, expected: dict) -> None:
    got = expected_metrics(np.array(probs, dtype=float), np.array(scores, dtype=float), 0.5)
    for m, v in expected.items():
        if math.isnan(v):
            assert math.isnan(got[m]), m
        else:
            assert got[m] == pytest.approx(v), m


def test_expected_metrics_equal_sklearn_on_certain_labels() -> None:
    """With 0/1 probabilities, the estimates are the realized metrics (sklearn's)."""
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500).astype(float)
    s = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, y.size), 0, 1), 2)  # ties
    got = expected_metrics(y, s, 0.5)
    p = (s >= 0.5).astype(int)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert got["precision"] == pytest.approx(skm.precision_score(y, p))
    assert got["recall"] == pytest.approx(skm.recall_score(y, p))
    assert got["f1"] == pytest.approx(skm.f1_score(y, p))
    assert got["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert expected_auc(y, s) == pytest.approx(classification_metrics(y, s)["auc"])


def test_sampled_spread_matches_the_binomial_and_is_seeded() -> None:
    p = np.full(900, 0.7)
    sd = sampled_spread(p, p, 0.5, 4_000, 1)
    assert sd["accuracy"] == pytest.approx(math.sqrt(0.7 * 0.3 / 900), rel=0.05)
    assert sd == sampled_spread(p, p, 0.5, 4_000, 1)
    assert sd != sampled_spread(p, p, 0.5, 4_000, 2)
    assert all(math.isnan(v) for v in sampled_spread(p[:0], p[:0], 0.5, 10, 0).values())


# ---------------------------------------------------------------- the streaming estimator
def _feed(est: PerformanceEstimator, s: np.ndarray, batch: int) -> list:
    out = []
    off = np.arange(s.size) + 100
    t = 1_000 * np.arange(s.size)
    for i in range(0, s.size, batch):
        out += est.update(s[i : i + batch], off[i : i + batch], t[i : i + batch])
    return out


@pytest.mark.parametrize("batch", [1, 7, 333, 1_000, 10_000])
def test_chunks_do_not_depend_on_batching(batch: int) -> None:
    s_ref, y_ref, s, _y = _bench().seeded_stream(0, "covariate")
    whole = PerformanceEstimator(1_000, 5_000)
    whole.add_reference(s_ref, y_ref)
    expected = _feed(whole, s[:4_500], 4_500)
    est = PerformanceEstimator(1_000, 5_000)
    for i in range(0, 5_000, 999):  # the reference offered in pieces
        est.add_reference(s_ref[i : i + 999], y_ref[i : i + 999])
    got = _feed(est, s[:4_500], batch)
    assert [c.to_json() for c in got] == [c.to_json() for c in expected]
    assert [c.first_offset for c in got] == [100, 1_100, 2_100, 3_100]
    assert got[0].last_offset == 1_099 and got[0].end_event_time_ms == 999_000
    assert est.n_pending == 500


def test_snapshot_round_trip_continues_exactly() -> None:
    s_ref, y_ref, s, _y = _bench().seeded_stream(1, "covariate")
    a = PerformanceEstimator(1_000, 5_000, draws=50)
    a.add_reference(s_ref[:3_000], y_ref[:3_000])
    b = PerformanceEstimator(1_000, 5_000, draws=50)
    b.restore(orjson.loads(orjson.dumps(a.snapshot())))  # mid-reference
    for e in (a, b):
        e.add_reference(s_ref[3_000:], y_ref[3_000:])
        _feed(e, s[:1_500], 500)
    c = PerformanceEstimator(1_000, 5_000, draws=50)
    c.restore(orjson.loads(orjson.dumps(b.snapshot())))  # mid-chunk
    assert c.snapshot() == a.snapshot()
    assert [x.to_json() for x in _feed(a, s[1_500:3_000], 250)] == [
        x.to_json() for x in _feed(c, s[1_500:3_000], 1_500)
    ]
    with pytest.raises(DriftlineError, match="hyperparameters"):
        PerformanceEstimator(500, 5_000, draws=50).restore(a.snapshot())


def test_chunks_before_calibration_are_counted_not_estimated() -> None:
    est = PerformanceEstimator(chunk_size=10, reference_size=5)
    assert _feed(est, np.linspace(0, 1, 25), 25) == []
    assert est.n_uncalibrated_chunks == 2 and est.n_chunks == 2 and est.n_pending == 5
    assert not est.add_reference(np.array([0.1, 0.9, np.nan]), np.array([0.0, 1.0, 1.0]))
    assert not est.add_reference(np.array([0.2, 0.8]), np.array([0.0, 2.0]))  # 2 is no label
    assert est.add_reference(np.array([0.3, 0.7, 0.6]), np.array([0.0, 1.0, 1.0]))
    assert est.n_reference == 5
    [c] = _feed(est, np.linspace(0, 1, 5), 5)
    assert c.index == 2 and set(c.metrics) == set(ESTIMATED_METRICS)


def test_given_calibration_is_used_from_the_start() -> None:
    cal = IsotonicCalibrator().fit(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    est = PerformanceEstimator(chunk_size=4, reference_size=2, calibration=cal)
    assert not est.add_reference(np.array([0.5, 0.5]), np.array([0.0, 0.0]))  # ignored
    [c] = _feed(est, np.array([0.9, 0.8, 0.3, 0.1]), 4)
    assert c.metrics["accuracy"][0] == pytest.approx(0.825)


# ---------------------------------------------------------------- against realized metrics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_covariate_shift_realized_within_band(seed: int) -> None:
    """Inputs move, the concept holds: every chunk's realized accuracy and F1 lie inside the
    3-sigma band but for at most one chunk in 20 (AUC: three), and the estimates are close."""
    b = _bench()
    r = b.run(seed, "covariate")
    # the realized values are sklearn's on each chunk
    skm = pytest.importorskip("sklearn.metrics")
    _s_ref, _y_ref, s, y = b.seeded_stream(seed, "covariate")
    for k in range(b.CHUNKS):
        sl = slice(k * b.CHUNK, (k + 1) * b.CHUNK)
        pred = (s[sl] >= 0.5).astype(int)
        assert r.realized["accuracy"][k] == pytest.approx(skm.accuracy_score(y[sl], pred))
        assert r.realized["f1"][k] == pytest.approx(skm.f1_score(y[sl], pred))
        assert r.realized["auc"][k] == pytest.approx(skm.roc_auc_score(y[sl], s[sl]))
    assert r.inside("accuracy") >= 0.95 and r.inside("f1") >= 0.95
    assert r.inside("auc") >= 0.85
    assert r.mae("accuracy") < 0.02 and r.mae("f1") < 0.02 and r.mae("auc") < 0.03
    # the realized accuracy does move under the shift, and the estimate moves with it
    moved = r.realized["accuracy"][-1] - r.realized["accuracy"][0]
    assert abs(moved) > 0.05
    assert r.estimate["accuracy"][-1] - r.estimate["accuracy"][0] == pytest.approx(moved, abs=0.04)


@pytest.mark.parametrize("seed", [0, 1])
def test_concept_shift_is_the_documented_limit(seed: int) -> None:
    """The concept flips, the inputs stay: the estimate stays at the reference's level, the
    realized metrics collapse outside the band (what the README says CBPE cannot see)."""
    b = _bench()
    before = b.run(seed, "none")
    after = b.run(seed, "concept")
    for m in ("accuracy", "f1", "auc"):
        assert np.mean(after.estimate[m]) == pytest.approx(np.mean(before.estimate[m]), abs=0.02)
        assert after.inside(m) == 0.0
        assert np.all(after.realized[m] < after.lower[m])


# ---------------------------------------------------------------- against NannyML's CBPE
ATOL_NANNYML = {"accuracy": 1e-9, "precision": 1e-9, "recall": 1e-9, "f1": 1e-9, "auc": 1e-4}


@pytest.mark.parametrize(("seed", "shift"), [(0, "covariate"), (3, "none"), (4, "covariate")])
def test_equal_to_nannyml_cbpe(seed: int, shift: str) -> None:
    """Same reference, same chunks of 1,000: our estimates equal NannyML's (AUC: NannyML rounds
    its expected counts to 5 decimals, hence 1e-4); NannyML's isotonic calibration is on."""
    pd = pytest.importorskip("pandas")
    nml = pytest.importorskip("nannyml")
    s_ref, y_ref, s, _y = _bench().seeded_stream(seed, shift)
    ref = pd.DataFrame({"score": s_ref, "pred": (s_ref >= 0.5).astype(int), "y": y_ref})
    ana = pd.DataFrame({"score": s, "pred": (s >= 0.5).astype(int)})
    metrics = {"accuracy": "accuracy", "precision": "precision", "recall": "recall",
               "f1": "f1", "auc": "roc_auc"}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cbpe = nml.CBPE(
            y_pred_proba="score", y_pred="pred", y_true="y", problem_type="classification_binary",
            metrics=list(metrics.values()), chunk_size=1_000,
        )  # fmt: skip
        cbpe.fit(ref)
        theirs = cbpe.estimate(ana).filter(period="analysis").to_df()
    assert cbpe.needs_calibration
    est = PerformanceEstimator(1_000, s_ref.size)
    est.add_reference(s_ref, y_ref)
    ours = _feed(est, s, 1_234)
    assert len(ours) == len(theirs) == 20
    for m, name in metrics.items():
        np.testing.assert_allclose(
            [c.metrics[m][0] for c in ours], theirs[(name, "value")].to_numpy(),
            atol=ATOL_NANNYML[m], err_msg=m,
        )  # fmt: skip
