"""The PCA reconstruction drift detector: known answers (sklearn), calibration, batching,
snapshots, and the correlation flip that only it sees."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from scipy.special import ndtr
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.factory import DETECTORS, build_detector
from driftline.streams.multivariate import PCAReconstructionDetector, error_limits
from driftline.streams.pca_reference import (
    CAP_QUANTILE,
    PCAReference,
    n_components_for,
    reconstruction_errors,
)


def corr_stream(rng: np.random.Generator, n: int, d: int, rho: float) -> np.ndarray:
    """``d`` standard-normal features; features 0 and 1 correlated ``rho``, the rest
    independent (every marginal is N(0, 1) whatever ``rho``)."""
    cov = np.eye(d)
    cov[0, 1] = cov[1, 0] = rho
    return rng.multivariate_normal(np.zeros(d), cov, size=n)


def flip_stream(seed: int, n_before: int, n_after: int, d: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([corr_stream(rng, n_before, d, 0.8), corr_stream(rng, n_after, d, -0.8)])


# ------------------------------------------------------------------ known answers (sklearn)
@pytest.mark.parametrize(
    ("seed", "d", "variance", "scale"),
    [(0, 2, 0.65, 1.0), (1, 5, 0.65, 10.0), (2, 8, 0.9, 0.01), (3, 3, 0.3, 1e3)],
)
def test_reconstruction_matches_sklearn(seed: int, d: int, variance: float, scale: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    x = rng.multivariate_normal(rng.normal(size=d), a @ a.T + 0.1 * np.eye(d), 3000) * scale
    new = rng.multivariate_normal(np.zeros(d), np.eye(d), 200) * scale
    ref = PCAReference.fit(x, variance)
    scaler = StandardScaler().fit(x)
    pca = PCA(n_components=variance, svd_solver="full").fit(scaler.transform(x))
    assert ref.n_components == pca.n_components_
    np.testing.assert_allclose(ref.mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(ref.scale, scaler.scale_, rtol=1e-12)
    np.testing.assert_allclose(np.abs(ref.components), np.abs(pca.components_), atol=1e-8)
    z = scaler.transform(new)
    expected = np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)
    got = reconstruction_errors(new, np.array(ref.mean), np.array(ref.scale),
                                np.array(ref.components))  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ref.errors(new), np.minimum(expected, ref.error_cap), rtol=1e-9,
                               atol=1e-12)  # fmt: skip


@pytest.mark.parametrize(
    ("eigen", "variance", "k"),
    [([1.8, 0.2], 0.65, 1), ([1.8, 0.2], 0.9, 2), ([1, 1, 1, 1], 0.5, 3), ([3, 1], 0.75, 2),
     ([3, 1], 0.74, 1), ([0.0, 0.0], 0.5, 1)],
)  # fmt: skip
def test_components_kept_as_sklearn(eigen: list[float], variance: float, k: int) -> None:
    assert n_components_for(np.array(eigen, dtype=float), variance) == k


def test_held_out_moments_and_cap() -> None:
    rng = np.random.default_rng(5)
    x = corr_stream(rng, 5000, 3, 0.6)
    ref = PCAReference.fit(x)
    new = ref.errors(corr_stream(rng, 200_000, 3, 0.6))
    assert ref.error_cap == pytest.approx(np.quantile(new, CAP_QUANTILE), rel=0.05)
    assert ref.error_mean == pytest.approx(new.mean(), rel=0.02)
    assert ref.error_std == pytest.approx(new.std(), rel=0.05)
    assert new.max() <= ref.error_cap


def test_limits_hand_computed() -> None:
    # no skew/kurtosis: mean +- z(level/2) * sd * sqrt(1/W + 2/N)
    ref = PCAReference([0, 0], [1, 1], [[1, 0]], 400, 9.0, 2.0, 0.5, 0.0, 0.0)
    lo, hi = error_limits(ref, 100, 0.01)
    half = 2.5758293035489004 * 0.5 * math.sqrt(1 / 100 + 2 / 400)
    assert (lo, hi) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-12)
    skewed = PCAReference([0, 0], [1, 1], [[1, 0]], 400, 9.0, 2.0, 0.5, 2.0, 0.0)
    slo, shi = error_limits(skewed, 100, 0.01)
    assert shi > hi and slo > lo  # right skew moves both limits up


# ------------------------------------------------------------------ calibration
@pytest.mark.parametrize("marginal", ["normal", "exponential", "student_t4"])
def test_false_alarm_rate_at_raised_level(marginal: str) -> None:
    """At false_alarm_rate 1e-3 per row and stride 100, an evaluation is beyond with
    probability 0.1 on a stationary correlated stream (pooled over 40 references)."""
    rng = np.random.default_rng(11)
    d = 4
    a = rng.normal(size=(d, d))
    cov = a @ a.T + np.eye(d)
    cov /= np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    beyond = evals = 0
    for _ in range(40):
        x = rng.multivariate_normal(np.zeros(d), cov, size=12_000)
        if marginal == "exponential":
            x = -np.log1p(-ndtr(x))
        elif marginal == "student_t4":
            x = x / np.sqrt(rng.chisquare(4, size=(x.shape[0], 1)) / 4)
        det = PCAReconstructionDetector(d, reference_size=2000, window_size=100,
                                        false_alarm_rate=1e-3, n_clear=1)  # fmt: skip
        ref = PCAReference.fit(x[:2000])
        lo, hi = error_limits(ref, 100, 0.1)
        det.update_many(x)
        means = ref.errors(x[2000:]).reshape(-1, 100).mean(axis=1)
        beyond += int(((means > hi) | (means < lo)).sum())
        evals += det.n_evaluations
    assert evals == 40 * 100
    rate = beyond / evals
    assert 0.07 <= rate <= 0.12, rate


# ------------------------------------------------------------------ detection
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_correlation_flip_caught_in_first_window(seed: int) -> None:
    det = PCAReconstructionDetector(4)
    ds = det.update_many(flip_stream(seed, 6000, 2000))
    assert [d.status for d in ds] == ["firing"]
    assert 6000 <= ds[0].index < 6000 + 2 * det.window_size
    assert ds[0].statistic > ds[0].threshold == det.limits[1]
    assert ds[0].n_reference == 2000 and ds[0].n_current == 500
    assert "outside" in ds[0].detail


def test_strengthened_correlation_caught_below() -> None:
    rng = np.random.default_rng(4)
    x = np.vstack([corr_stream(rng, 4000, 3, 0.5), corr_stream(rng, 2000, 3, 0.95)])
    ds = PCAReconstructionDetector(3, variance=0.5).update_many(x)
    assert ds and ds[0].status == "firing" and ds[0].statistic < ds[0].threshold


def test_resolves_after_n_clear_quiet_windows() -> None:
    rng = np.random.default_rng(6)
    x = np.vstack([corr_stream(rng, 3000, 2, 0.8), corr_stream(rng, 1000, 2, -0.8),
                   corr_stream(rng, 3000, 2, 0.8)])  # fmt: skip
    det = PCAReconstructionDetector(2, window_size=250, n_clear=3)
    ds = det.update_many(x)
    assert [d.status for d in ds] == ["firing", "resolved"]
    assert ds[1].index == 4000 + 3 * 250 - 1
    assert "back within" in ds[1].detail and not det.in_drift


def univariate_inputs(x: np.ndarray, kind: str) -> list[np.ndarray]:
    """Each column of ``x`` (N(0, 1) marginals) as a detector of input ``kind`` takes it;
    every transform is per value, so the marginal stays identical across the flip."""
    cols = [x[:, j] for j in range(x.shape[1])]
    if kind == "real":
        return cols
    if kind == "unit_interval":
        return [ndtr(c) for c in cols]
    if kind == "binary":
        return [(c > 0).astype(np.float64) for c in cols]
    bins = np.array(["a", "b", "c", "d"], dtype=object)
    return [bins[np.digitize(c, [-0.7, 0.0, 0.7])] for c in cols]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", sorted(DETECTORS))
def test_univariate_detectors_miss_the_flip(seed: int, dtype: str) -> None:
    """The flip keeps every marginal: no registered univariate detector (defaults) fires on any
    feature, while the multivariate one does."""
    x = flip_stream(seed, 6000, 6000)
    for col in univariate_inputs(x, DETECTORS[dtype].inputs):
        det = build_detector(dtype)
        fired = [d for d in det.update_many(col) if d.status == "firing"]
        assert fired == [], (dtype, fired[:1])
    assert [d.status for d in PCAReconstructionDetector(4).update_many(x)] == ["firing"]


# ------------------------------------------------------------------ batching and state
@pytest.mark.parametrize("splits", [[1], [7, 1, 500, 2000], [2000, 1], [333]])
def test_batched_equals_per_row(splits: list[int]) -> None:
    x = flip_stream(9, 2600, 1400, d=3)
    x[[5, 2100, 3001]] = np.nan  # skipped rows
    x[2500, 1] = np.inf
    whole = PCAReconstructionDetector(3, reference_size=1000, window_size=200, stride=50)
    expected = [(d.index, d.status, d.statistic) for d in whole.update_many(x)]
    det = PCAReconstructionDetector(3, reference_size=1000, window_size=200, stride=50)
    got, at, i = [], 0, 0
    while at < len(x):
        size = splits[i % len(splits)]
        got += [(d.index + at, d.status, d.statistic) for d in det.update_many(x[at : at + size])]
        at, i = at + size, i + 1
    assert got == expected and len(expected) >= 1
    assert det.snapshot() == whole.snapshot()
    assert det.n_seen == len(x) - 4


@pytest.mark.parametrize("cut", [0, 500, 999, 1000, 1001, 2650, 3100])
def test_snapshot_round_trip_continues_identically(cut: int) -> None:
    x = flip_stream(10, 2600, 1400, d=3)
    kw = {"reference_size": 1000, "window_size": 200, "stride": 80, "n_clear": 2}
    whole = PCAReconstructionDetector(3, **kw)
    expected = [(d.index, d.status, d.statistic) for d in whole.update_many(x)]
    first = PCAReconstructionDetector(3, **kw)
    got = [(d.index, d.status, d.statistic) for d in first.update_many(x[:cut])]
    snap = orjson.loads(orjson.dumps(first.snapshot()))  # plain JSON
    second = PCAReconstructionDetector(3, **kw)
    second.restore(snap)
    got += [(d.index + cut, d.status, d.statistic) for d in second.update_many(x[cut:])]
    assert got == expected
    assert second.snapshot() == whole.snapshot()


def test_given_reference_monitors_from_the_first_row() -> None:
    x = flip_stream(12, 3000, 1000, d=3)
    ref = PCAReference.fit(x[:2000])
    det = PCAReconstructionDetector(3, window_size=250, reference=ref)
    ds = det.update_many(x[2000:])
    assert det.n_evaluations == 8 and [d.status for d in ds] == ["firing"]
    assert 1000 <= ds[0].index < 1250
    restored = PCAReconstructionDetector(3, window_size=250, reference=ref)
    restored.restore(orjson.loads(orjson.dumps(det.snapshot())))
    assert restored.snapshot() == det.snapshot()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_features": 1}, "n_features: got 1; expected an integer between 2 and 10000"),
        ({"variance": 1.0}, "variance: got 1.0; expected a number strictly between 0 and 1"),
        ({"window_size": 1}, "window_size: got 1; expected an integer between 2 and"),
        ({"reference_size": 5}, "reference_size: got 5; expected an integer between 10 and"),
        ({"stride": 0}, "stride: got 0; expected an integer between 1 and"),
        ({"false_alarm_rate": 0.01}, "false_alarm_rate: got 0.01; times stride (500) it must"),
        ({"false_alarm_rate": 0}, "false_alarm_rate: got 0; expected a number strictly between"),
        ({"n_clear": 0}, "n_clear: got 0; expected an integer >= 1"),
    ],
)
def test_parameter_errors(kwargs: dict, message: str) -> None:
    kw = {"n_features": 3, **kwargs}
    with pytest.raises(SpecError) as e:
        PCAReconstructionDetector(**kw)
    assert str(e.value).startswith(message)


def test_wrong_shapes_and_damaged_snapshots() -> None:
    det = PCAReconstructionDetector(3, reference_size=20, window_size=10)
    with pytest.raises(DriftlineError, match=r"expected \(n, 3\)"):
        det.update_many(np.zeros((4, 2)))
    det.update_many(np.random.default_rng(0).normal(size=(40, 3)))
    snap = det.snapshot()
    other = PCAReconstructionDetector(3, reference_size=20, window_size=12)
    with pytest.raises(DriftlineError, match="hyperparameters"):
        other.restore(snap)
    for damage in ({"errors": [1.0]}, {"reference": None}, {"buffer": [[1.0, 2.0, 3.0]]}):
        with pytest.raises(DriftlineError, match="state: malformed"):
            PCAReconstructionDetector(3, reference_size=20, window_size=10).restore(
                {**snap, **damage}
            )
    bad_ref = {**snap, "reference": {**snap["reference"], "scale": [1.0, 0.0, 1.0]}}
    with pytest.raises(DriftlineError, match="malformed PCA reference"):
        PCAReconstructionDetector(3, reference_size=20, window_size=10).restore(bad_ref)


@pytest.mark.parametrize(("d", "k"), [(2, 1), (5, 2), (37, 13), (200, 35)])
def test_errors_do_not_depend_on_the_batch(d: int, k: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.normal(size=(700, d)) * 3 + 1
    comp = np.linalg.qr(rng.normal(size=(d, k)))[0].T.copy()
    mean, scale = x.mean(axis=0), x.std(axis=0)
    whole = reconstruction_errors(x, mean, scale, comp)
    for size in (1, 2, 3, 64, 333):
        parts = [reconstruction_errors(x[a : a + size], mean, scale, comp)
                 for a in range(0, 700, size)]  # fmt: skip
        assert np.array_equal(np.concatenate(parts), whole), size
