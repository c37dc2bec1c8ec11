"""set_alpha on the test-based detectors (KS, chi2): a changed level is a constructed level.

Used by the Benjamini-Hochberg correction (`streams.fdr.bh_levels`), which moves each
detector's level between updates.
"""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.detectors.base import Detection
from driftline.streams.detectors.ks import KSWindowDetector
from driftline.streams.detectors.windowed import Chi2Detector

CATS = np.array(["a", "b", "c", "d", "e"], dtype=object)
P0 = [0.4, 0.25, 0.15, 0.12, 0.08]


def rebase(ds: list[Detection], off: int) -> list[Detection]:
    return [Detection(**{**d.__dict__, "index": d.index + off}) for d in ds]


def feed(det, xs, cuts, ts=None, alphas=None) -> list[Detection]:
    """Batches cut at ``cuts``; before batch ``b``, ``set_alpha(alphas[b])`` if given."""
    out = []
    for b, (lo, hi) in enumerate(pairwise([0, *cuts, len(xs)])):
        if alphas is not None:
            det.set_alpha(alphas[b])
        kw = {} if ts is None else {"ts_ms": ts[lo:hi]}
        out += rebase(det.update_many(xs[lo:hi], **kw), lo)
    return out


def ks_stream(seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = np.concatenate([rng.normal(0, 1, 1_500), rng.normal(0.6, 1, 700), rng.normal(0, 1, 800)])
    return np.round(xs, 2), np.arange(xs.size) * 2  # ties; 500 events per second


def cat_stream(seed: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.choice(CATS, 1_500, p=P0),
            rng.choice(CATS, 700, p=[0.2, 0.2, 0.25, 0.2, 0.15]),
            rng.choice(CATS, 800, p=P0),
        ]
    )


KS_CONFIGS = {
    # full window: the exact critical D (critical_h, memoised per level)
    "fixed": {"reference_size": 300, "window_size": 200, "n_clear": 5},
    # growing window first (min_samples < window_size): the asymptotic screen alpha * _SCREEN
    "fixed-growing": {"reference_size": 300, "window_size": 400, "min_samples": 20, "n_clear": 5},
    # sparse evaluations: the direct (sorted merge) path
    "fixed-direct": {"reference_size": 300, "window_size": 200, "stride": 40, "n_clear": 2},
    "sliding": {
        "reference_size": 250,
        "window_size": 250,
        "reference_mode": "sliding",
        "stride": 3,
        "n_clear": 5,
    },
    "previous_window": {
        "reference_mode": "previous_window",
        "window_ms": 1_000,
        "min_samples": 30,
        "n_clear": 5,
    },
}
CUTS = [1, 299, 300, 777, 1_501, 1_502, 1_800, 2_222, 2_600]


def make_ks(config: str, alpha: float) -> KSWindowDetector:
    return KSWindowDetector(alpha=alpha, **KS_CONFIGS[config])


def make_chi2(alpha: float) -> Chi2Detector:
    return Chi2Detector(reference_size=500, window_size=300, stride=10, n_clear=5, alpha=alpha)


# ---------------------------------------------------------------- same as constructed
@pytest.mark.parametrize("config", list(KS_CONFIGS))
@pytest.mark.parametrize(("a1", "a2"), [(1e-6, 1e-3), (0.2, 1e-5)])
def test_ks_set_alpha_equals_constructed_with_that_alpha(config: str, a1: float, a2: float) -> None:
    xs, ts = ks_stream()
    # warm the per-level caches (critical_h) with the first level
    feed(make_ks(config, a1), xs, CUTS, ts)
    expected = feed(make_ks(config, a2), xs, CUTS, ts)
    assert any(d.status == "firing" for d in expected)
    assert {d.threshold for d in expected} == {a2}
    det = make_ks(config, a1)
    det.set_alpha(a2)
    assert det.alpha == a2
    assert feed(det, xs, CUTS, ts) == expected  # indices, statistics, p-values, thresholds
    # and with the switch after the stream has started, before the first evaluation
    det = make_ks(config, a1)
    got = feed(det, xs[:100], [], ts[:100])
    det.set_alpha(a2)
    got += rebase(feed(det, xs[100:], [c - 100 for c in CUTS if c > 100], ts[100:]), 100)
    assert got == expected


@pytest.mark.parametrize(("a1", "a2"), [(1e-6, 1e-3), (0.2, 1e-5)])
def test_chi2_set_alpha_equals_constructed_with_that_alpha(a1: float, a2: float) -> None:
    xs = cat_stream()
    feed(make_chi2(a1), xs, CUTS)
    expected = feed(make_chi2(a2), xs, CUTS)
    assert any(d.status == "firing" for d in expected)
    assert {d.threshold for d in expected} == {a2}
    det = make_chi2(a1)
    det.set_alpha(a2)
    assert det.alpha == a2
    assert feed(det, xs, CUTS) == expected


# ---------------------------------------------------------------- levels changing mid-stream
ALPHAS = [1e-2, 1e-2, 1e-8, 1e-3, 0.3, 1e-8, 1e-4, 1e-2, 1e-6, 0.05]  # one per batch of CUTS


def expected_with_levels(n_confirm, n_clear, evaluations) -> list[tuple[int, str, float, float]]:
    """(index, status, p, threshold) from the per-evaluation p-values and levels in force."""
    alarm = Alarm(n_confirm, n_clear)
    idx = np.array([e[0] for e in evaluations])
    p = np.array([e[1] for e in evaluations])
    level = np.array([e[2] for e in evaluations])
    # quiet (towards resolving) when p >= max(clear_alpha, level); clear_alpha defaults to 0.01
    changes = alarm.feed(p < level, np.arange(1, idx.size + 1), p >= np.maximum(0.01, level))
    return [(int(idx[k]), s, float(p[k]), float(level[k])) for k, s in changes]


@pytest.mark.parametrize("config", list(KS_CONFIGS))
def test_ks_levels_changed_between_batches_decide_each_evaluation(config: str) -> None:
    xs, ts = ks_stream()
    det = make_ks(config, 1e-6)
    got, evaluations = [], []
    for b, (lo, hi) in enumerate(pairwise([0, *CUTS, len(xs)])):
        det.set_alpha(ALPHAS[b])
        got += rebase(det.update_many(xs[lo:hi], ts_ms=ts[lo:hi]), lo)
        ev = det.last_evaluations
        evaluations += [
            (int(i) + lo, float(p), ALPHAS[b])
            for i, p in zip(ev["index"], ev["p_value"], strict=True)
        ]
    assert len(evaluations) == det.n_evaluations
    expected = expected_with_levels(1, KS_CONFIGS[config]["n_clear"], evaluations)
    assert len(expected) >= 2  # the levels matter: firing / resolving happen
    assert [(d.index, d.status, d.p_value, d.threshold) for d in got] == expected


def test_chi2_levels_changed_between_batches_decide_each_evaluation() -> None:
    xs = cat_stream()
    # per-evaluation p-values from a probe fed one value at a time
    probe, ps = make_chi2(1e-6), {}
    for i in range(len(xs)):
        n = probe.n_evaluations
        probe.update(xs[i])
        if probe.n_evaluations > n:
            ps[i] = probe.p_value
    batch_of = np.searchsorted(CUTS, np.arange(len(xs)), side="right")
    evaluations = [(i, p, ALPHAS[batch_of[i]]) for i, p in ps.items()]
    expected = expected_with_levels(1, 5, evaluations)
    assert len(expected) >= 2
    got = feed(make_chi2(1e-6), xs, CUTS, alphas=ALPHAS)
    assert [(d.index, d.status, d.p_value, d.threshold) for d in got] == expected


# ---------------------------------------------------------------- snapshot / restore
def roundtrip(snapshot: dict) -> dict:
    return json.loads(json.dumps(snapshot, allow_nan=False))


@pytest.mark.parametrize("config", list(KS_CONFIGS))
def test_ks_snapshot_keeps_the_level(config: str) -> None:
    xs, ts = ks_stream()
    whole = feed(make_ks(config, 1e-6), xs, CUTS, ts, alphas=ALPHAS)
    for b, cut in enumerate(CUTS):
        first = make_ks(config, 1e-6)
        got = feed(first, xs[:cut], [c for c in CUTS if c < cut], ts[:cut], alphas=ALPHAS)
        snap = roundtrip(first.snapshot())
        assert snap["alpha"] == ALPHAS[b] and snap["params"]["alpha"] == 1e-6
        second = make_ks(config, 1e-6)  # built with the base level, as after a restart
        second.restore(snap)
        assert second.alpha == ALPHAS[b]
        assert second.snapshot() == first.snapshot()
        rest = [c - cut for c in CUTS if c > cut]
        got += rebase(feed(second, xs[cut:], rest, ts[cut:], alphas=ALPHAS[b + 1 :]), cut)
        assert got == whole, (config, cut)


def test_chi2_snapshot_keeps_the_level() -> None:
    xs = cat_stream()
    whole = feed(make_chi2(1e-6), xs, CUTS, alphas=ALPHAS)
    for b, cut in enumerate(CUTS):
        first = make_chi2(1e-6)
        got = feed(first, xs[:cut], [c for c in CUTS if c < cut], alphas=ALPHAS)
        snap = roundtrip(first.snapshot())
        assert snap["alpha"] == ALPHAS[b] and snap["params"]["alpha"] == 1e-6
        second = make_chi2(1e-6)
        second.restore(snap)
        assert second.alpha == ALPHAS[b]
        assert second.snapshot() == first.snapshot()
        rest = [c - cut for c in CUTS if c > cut]
        got += rebase(feed(second, xs[cut:], rest, alphas=ALPHAS[b + 1 :]), cut)
        assert got == whole, cut


@pytest.mark.parametrize(
    "make", [lambda a: KSWindowDetector(alpha=a), lambda a: Chi2Detector(alpha=a)]
)
def test_restore_checks_the_base_alpha_and_the_level(make) -> None:
    det = make(1e-6)
    det.set_alpha(0.01)
    snap = roundtrip(det.snapshot())
    with pytest.raises(DriftlineError, match="hyperparameters"):
        make(0.01).restore(snap)  # the constructor's alpha is the hyperparameter
    older = {k: v for k, v in snap.items() if k != "alpha"}  # snapshot from before set_alpha
    restored = make(1e-6)
    restored.set_alpha(0.2)
    restored.restore(older)
    assert restored.alpha == 1e-6
    for bad in (0.0, 1.5, "0.1", None, True):
        target = make(1e-6)
        with pytest.raises(DriftlineError, match="snapshot"):
            target.restore({**snap, "alpha": bad})
        assert target.alpha == 1e-6


@pytest.mark.parametrize("make", [lambda: KSWindowDetector(alpha=1e-6), lambda: Chi2Detector()])
def test_set_alpha_is_validated_like_the_constructor(make) -> None:
    det = make()
    for bad, match in [
        (0.0, "alpha: got 0.0; expected a number strictly between 0 and 1"),
        (1.0, "alpha: got 1.0"),
        (-0.1, "alpha: got -0.1"),
        (float("nan"), "alpha: got nan"),
        (True, "alpha: got True"),
        ("0.01", "alpha: got '0.01'"),
        (None, "alpha: got None"),
    ]:
        with pytest.raises(SpecError, match=match):
            det.set_alpha(bad)
        assert det.alpha == 1e-6
    det.set_alpha(np.float64(0.25))
    assert det.alpha == 0.25 and type(det.alpha) is float
    with pytest.raises(AttributeError):
        det.alpha = 0.1  # read-only: go through set_alpha
