"""KSWindowDetector: exact scipy agreement at every evaluation, modes, power, alarms, state."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pytest
from scipy.stats import ks_2samp

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors._ksexact import critical_h, ks_pvalue
from driftline.streams.detectors.base import Detection
from driftline.streams.detectors.ks import KSWindowDetector


def rebase(ds: list[Detection], off: int) -> list[Detection]:
    return [Detection(**{**d.__dict__, "index": d.index + off}) for d in ds]


def feed(det: KSWindowDetector, xs: np.ndarray, cuts: list[int], ts=None) -> list[Detection]:
    out = []
    for a, b in pairwise([0, *sorted(cuts), len(xs)]):
        out += rebase(det.update_many(xs[a:b], None if ts is None else ts[a:b]), a)
    return out


def evaluations(det, xs, cuts, ts=None):
    """(stream index, D, p) of every evaluation, batch by batch."""
    got = []
    for a, b in pairwise([0, *sorted(cuts), len(xs)]):
        det.update_many(xs[a:b], None if ts is None else ts[a:b])
        ev = det.last_evaluations
        got += list(zip((ev["index"] + a).tolist(), ev["statistic"], ev["p_value"], strict=True))
    return got


def shifted(seed: int, n_before: int, n_after: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, n_before), rng.normal(shift, 1, n_after)])


def drifting_with_ties(seed: int, n: int = 2_400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xs = np.concatenate([rng.normal(0, 1, n // 2), rng.standard_t(3, n - n // 2) * 1.3 + 0.3])
    return np.round(xs, 1)  # many ties


# ---------------------------------------------------------------- exactness against scipy
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_head_reference_equals_scipy_at_every_event(seed: int) -> None:
    xs = drifting_with_ties(seed)
    R, W = 300, 200
    det = KSWindowDetector(R, W, alpha=0.01, stride=1, min_samples=30)
    cuts = sorted(np.random.default_rng(seed).choice(np.arange(1, len(xs)), 25, False).tolist())
    got = evaluations(det, xs, cuts)
    assert len(got) == det.n_evaluations == len(xs) - R - 30 + 1
    for j, d, p in got:
        exp = ks_2samp(xs[:R], xs[max(R, j - W + 1) : j + 1])
        assert abs(d - exp.statistic) <= 1e-9 and abs(p - exp.pvalue) <= 1e-9, j


def test_fixed_given_reference_unequal_sizes_and_stride_equal_scipy() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 1, 377)
    xs = np.round(np.concatenate([rng.normal(0, 1, 1_500), rng.normal(0.4, 1, 900)]), 2)
    det = KSWindowDetector(window_size=250, alpha=0.01, stride=7, reference=ref, min_samples=250)
    got = evaluations(det, xs, [1, 249, 250, 251, 1_000, 1_003])
    assert len(got) == (len(xs) - 250) // 7 + 1
    for j, d, p in got:
        exp = ks_2samp(ref, xs[j - 249 : j + 1])
        assert abs(d - exp.statistic) <= 1e-9 and abs(p - exp.pvalue) <= 1e-9


def test_sliding_reference_equals_scipy_at_every_event() -> None:
    xs = drifting_with_ties(2)
    R, W = 250, 150
    det = KSWindowDetector(R, W, alpha=0.01, reference_mode="sliding")
    got = evaluations(det, xs, [3, 399, 400, 401, 1_234])
    assert len(got) == len(xs) - R - W + 1
    for j, d, p in got:
        exp = ks_2samp(xs[j - W - R + 1 : j - W + 1], xs[j - W + 1 : j + 1])
        assert abs(d - exp.statistic) <= 1e-9 and abs(p - exp.pvalue) <= 1e-9
    np.testing.assert_array_equal(det.reference, xs[-W - R : -W])
    np.testing.assert_array_equal(det.current_window, xs[-W:])


@pytest.mark.parametrize(("k", "window_ms"), [(1, 1_000), (4, 1_000), (10, 700), (3, 1_001)])
def test_previous_window_equals_scipy_last_window_vs_the_one_before(k: int, window_ms: int) -> None:
    xs = drifting_with_ties(3, 6_000)
    ts = np.cumsum(np.random.default_rng(3).integers(1, 6, len(xs)))
    sid = ts * k // window_ms
    det = KSWindowDetector(reference_mode="previous_window", window_ms=window_ms, alpha=0.01,
                           min_samples=20, sub_windows=k)  # fmt: skip
    got = evaluations(det, xs, [10, 500, 501, 2_222], ts)
    # one evaluation per completed sub-window once both samples hold min_samples values
    expected = {}
    for j in (np.flatnonzero(np.diff(sid)) + 1).tolist():
        last = sid[j - 1]
        today = xs[(sid > last - k) & (sid <= last)]
        yesterday = xs[(sid > last - 2 * k) & (sid <= last - k)]
        if min(today.size, yesterday.size) >= 20:
            expected[j] = (yesterday, today)
    assert [j for j, _, _ in got] == list(expected) and len(expected) > 10
    for j, d, p in got:
        exp = ks_2samp(*expected[j])
        assert abs(d - exp.statistic) <= 1e-9 and abs(p - exp.pvalue) <= 1e-9


@pytest.mark.parametrize("offset", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize(
    ("shift", "scale", "bound"), [(0.5, 1.0, 1.4), (1.0, 1.0, 1.2), (0.0, 2.0, 1.2)]
)
def test_previous_window_finds_a_change_wherever_it_falls_in_the_window(
    offset: float, shift: float, scale: float, bound: float
) -> None:
    # 1,000 events per window, 10 sub-windows: found within ``bound`` windows of the change
    rng = np.random.default_rng(int(offset * 100))
    change = 5_000 + int(offset * 1_000)
    xs = np.concatenate([rng.normal(0, 1, change), rng.normal(shift, scale, 10_000 - change)])
    ts = np.arange(xs.size)  # 1 event per ms
    det = KSWindowDetector(reference_mode="previous_window", window_ms=1_000)
    changes = det.update_many(xs, ts_ms=ts)
    assert changes and changes[0].status == "firing"
    assert change < changes[0].index <= change + bound * 1_000


def test_previous_window_skips_late_events_and_needs_times() -> None:
    det = KSWindowDetector(reference_mode="previous_window", window_ms=10, min_samples=1)
    det.update_many(np.arange(5.0), ts_ms=np.array([0, 1, 12, 3, 13]))
    assert det.n_late == 1 and det.n_seen == 4
    with pytest.raises(DriftlineError, match="ts_ms"):
        det.update_many(np.arange(3.0))


@pytest.mark.parametrize(
    ("n1", "n2"), [(5, 7), (50, 50), (300, 200), (500, 500), (1_000, 999), (12_000, 300)]
)
def test_pvalue_reproduces_scipy_decision_logic(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1 + n2)
    for shift in (0.0, 0.1, 0.3, 1.0):
        a, b = rng.normal(0, 1, n1), rng.normal(shift, 1, n2)
        exp = ks_2samp(a, b)
        h = round(exp.statistic * math.lcm(n1, n2))
        assert abs(ks_pvalue(n1, n2, h) - exp.pvalue) <= 1e-12


@pytest.mark.parametrize(("n1", "n2", "alpha"), [(500, 500, 1e-6), (300, 200, 1e-3), (40, 7, 0.05)])
def test_critical_h_is_the_exact_threshold(n1: int, n2: int, alpha: float) -> None:
    h = critical_h(n1, n2, alpha)
    assert ks_pvalue(n1, n2, h) < alpha <= ks_pvalue(n1, n2, h - 1)


# ---------------------------------------------------------------- behaviour
@pytest.mark.parametrize("seed", range(4))
def test_covariate_shift_detected_after_change_within_delay(seed: int) -> None:
    xs = shifted(seed, 20_000, 5_000, 0.5)  # 0.5 sigma mean shift at 20,000
    changes = KSWindowDetector().update_many(xs)
    assert changes and changes[0].status == "firing"
    assert 20_000 <= changes[0].index < 21_000
    assert changes[0].p_value < 1e-6


@pytest.mark.parametrize("mode", ["fixed", "sliding"])
def test_stationary_stream_has_no_alarm_with_defaults(mode: str) -> None:
    xs = np.random.default_rng(77).normal(3.0, 2.0, 200_000)
    det = KSWindowDetector(reference_mode=mode)
    assert det.update_many(xs) == []
    first = 1_000 if mode == "sliding" else 550  # reference + min_samples (50)
    assert det.n_evaluations == 200_000 - first + 1 and not det.in_drift


def test_resolves_after_n_clear_quiet_evaluations() -> None:
    rng = np.random.default_rng(8)
    xs = np.concatenate([rng.normal(0, 1, 2_000), rng.normal(2, 1, 1_000), rng.normal(0, 1, 3_000)])
    det = KSWindowDetector(alpha=1e-6, n_clear=200)
    changes = det.update_many(xs)
    assert [c.status for c in changes] == ["firing", "resolved"]
    fire, res = changes
    assert 2_000 <= fire.index < 2_200 and fire.p_value < 1e-6
    assert 3_000 <= res.index < 4_000 and res.p_value >= 1e-6
    assert not det.in_drift


def test_n_confirm_and_cooldown() -> None:
    rng = np.random.default_rng(9)
    xs = np.concatenate([rng.normal(0, 1, 1_000), rng.normal(2, 1, 600), rng.normal(0, 1, 1_000),
                         rng.normal(2, 1, 600)])  # fmt: skip
    kw = {"reference_size": 300, "window_size": 200, "alpha": 1e-4, "n_clear": 50}
    base = KSWindowDetector(**kw).update_many(xs)
    late = KSWindowDetector(**kw, n_confirm=25).update_many(xs)
    assert [c.status for c in base] == [c.status for c in late] == ["firing", "resolved", "firing"]
    assert late[0].index == base[0].index + 24
    quiet = KSWindowDetector(**kw, cooldown=5_000).update_many(xs)
    assert [c.status for c in quiet] == ["firing", "resolved"]


@pytest.mark.parametrize("mode", ["fixed", "sliding", "previous_window"])
def test_any_batching_equals_one_value_at_a_time_and_snapshot_restore(mode: str) -> None:
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.normal(0, 1, 1_500), rng.normal(1.5, 1, 500), rng.normal(0, 1, 1_000)])
    ts = np.arange(len(xs)) * 2
    kw = {"reference_size": 250, "window_size": 150, "alpha": 1e-4, "n_clear": 30,
          "reference_mode": mode}  # fmt: skip
    if mode == "previous_window":
        kw.update(window_ms=1_000, min_samples=50)
    one = KSWindowDetector(**kw)
    single = []
    for i in range(len(xs)):
        single += rebase(one.update_many(xs[i : i + 1], ts[i : i + 1]), i)
    assert "firing" in [d.status for d in single]
    cuts = sorted(rng.choice(np.arange(1, len(xs)), size=40, replace=False).tolist())
    batched = KSWindowDetector(**kw)
    assert feed(batched, xs, cuts, ts) == single
    assert batched.snapshot() == one.snapshot()
    for cut in (0, 1, 249, 400, 1_777, 2_999):
        first = KSWindowDetector(**kw)
        got = feed(first, xs[:cut], [], ts[:cut])
        second = KSWindowDetector(**kw)
        second.restore(json.loads(json.dumps(first.snapshot(), allow_nan=False)))
        assert second.snapshot() == first.snapshot()
        got += rebase(feed(second, xs[cut:], [], ts[cut:]), cut)
        assert got == single, (mode, cut)


def test_nan_and_inf_are_skipped() -> None:
    xs = shifted(3, 1_500, 1_000, 1.0)
    kw = {"reference_size": 300, "window_size": 300, "alpha": 1e-4}
    clean = KSWindowDetector(**kw).update_many(xs)
    assert clean
    dirty = np.insert(xs, [0, 10, 10, 700, 1_600], [np.nan, np.nan, np.inf, -np.inf, np.nan])
    positions = np.flatnonzero(np.isfinite(dirty))
    det = KSWindowDetector(**kw)
    got = det.update_many(dirty)
    assert [(d.status, d.statistic, d.p_value) for d in got] == [
        (d.status, d.statistic, d.p_value) for d in clean
    ]
    assert [d.index for d in got] == [int(positions[d.index]) for d in clean]
    assert det.n_seen == len(xs)


def test_given_reference_is_copied_and_evaluation_starts_after_one_window() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, 400)
    det = KSWindowDetector(window_size=100, stride=10, alpha=0.01, reference=ref, min_samples=100)
    assert det.reference_size == 400
    xs = rng.normal(0, 1, 99)
    det.update_many(xs)
    assert det.n_evaluations == 0
    det.update(0.0)
    assert det.n_evaluations == 1
    exp = ks_2samp(ref, np.append(xs, 0.0))
    assert det.statistic == pytest.approx(exp.statistic, abs=1e-12)
    assert det.p_value == pytest.approx(exp.pvalue, abs=1e-12)
    np.testing.assert_array_equal(det.reference, np.sort(ref))
    ref[:] = 99.0
    assert det.reference[0] != 99.0


def test_restore_rejects_other_hyperparameters_or_garbage() -> None:
    snap = KSWindowDetector(window_size=100).snapshot()
    with pytest.raises(DriftlineError, match="hyperparameters"):
        KSWindowDetector(window_size=200).restore(snap)
    with pytest.raises(DriftlineError, match="not a 'ks' detector snapshot"):
        KSWindowDetector().restore({"detector": "adwin"})
    with pytest.raises(DriftlineError, match="inconsistent"):
        KSWindowDetector(window_size=100).restore({**snap, "window": [0.0] * 101})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference_size": 0}, "reference_size: got 0; expected an integer between 1 and 1000"),
        ({"window_size": 10**7 + 1}, "window_size: got 10000001; expected an integer between"),
        ({"reference_size": 10.0}, "reference_size: got 10.0"),
        ({"window_size": -1}, "window_size: got -1"),
        ({"stride": 0}, "stride: got 0"),
        ({"stride": True}, "stride: got True"),
        ({"alpha": 0.0}, "alpha: got 0.0; expected a number strictly between 0 and 1"),
        ({"alpha": "0.01"}, "alpha: got '0.01'"),
        ({"reference": np.array([])}, "reference: got an array of shape \\(0,\\)"),
        ({"reference": np.array([1.0, np.nan])}, "1 non-finite"),
        ({"reference_mode": "daily"}, "reference_mode: got 'daily'; expected one of fixed"),
        ({"reference_mode": "previous_window"}, "window_ms: got None"),
        ({"window_ms": 10}, "window_ms: got 10; only reference_mode='previous_window' uses it"),
        ({"min_samples": 600}, "min_samples: got 600; expected at most window_size"),
        ({"n_confirm": 0}, "n_confirm: got 0"),
        ({"n_clear": 0}, "n_clear: got 0"),
        ({"cooldown": -1}, "cooldown: got -1"),
        ({"reference_mode": "sliding", "reference": np.ones(3)}, "needs reference_mode='fixed'"),
    ],
)
def test_hyperparameter_validation(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        KSWindowDetector(**kwargs)


def test_initial_state() -> None:
    det = KSWindowDetector(reference_size=5, window_size=5)
    assert det.update(1.0) is None
    assert det.n_seen == 1 and det.statistic != det.statistic and det.p_value is None
    assert KSWindowDetector.name == "ks"


@pytest.mark.parametrize(
    ("stride", "cuts"), [(32, [5, 700, 701]), (500, [1, 999, 2_000]), (97, [])]
)
def test_large_strides_take_the_direct_path_and_equal_scipy(stride: int, cuts: list[int]) -> None:
    xs = drifting_with_ties(7, n=4_000)
    R, W = 600, 400
    det = KSWindowDetector(R, W, alpha=0.01, stride=stride, min_samples=W)
    got = evaluations(det, xs, cuts)
    assert len(got) == (len(xs) - R - W) // stride + 1
    for j, d, p in got:
        exp = ks_2samp(xs[:R], xs[j - W + 1 : j + 1])
        assert abs(d - exp.statistic) <= 1e-9 and abs(p - exp.pvalue) <= 1e-9, j
    # and the same detections as the sweep (stride 1 evaluates a superset of the points)
    sweep = KSWindowDetector(R, W, alpha=0.01, stride=1, min_samples=W)
    every = {j: (d, p) for j, d, p in evaluations(sweep, xs, cuts)}
    for j, d, p in got:
        assert (d, p) == every[j]


@pytest.mark.parametrize(
    ("stride", "min_samples", "cuts"),
    [(32, 50, [5, 700, 701]), (500, 50, [1, 999, 2_000]), (97, 20, []), (40, 1, [650])],
)
def test_growing_window_evaluations_of_large_strides_equal_the_sweep_and_scipy(
    stride: int, min_samples: int, cuts: list[int]
) -> None:
    """While the current window grows, the direct path evaluates only the scheduled sizes:
    the same D and p as the sweep over every step and as scipy on the same samples."""
    xs = drifting_with_ties(11, n=2_000)
    R, W = 600, 400
    det = KSWindowDetector(R, W, alpha=0.01, stride=stride, min_samples=min_samples)
    got = evaluations(det, xs, cuts)
    growing = [g for g in got if g[0] < R + W - 1]
    assert len(growing) == (W - 1 - min_samples) // stride + 1
    for j, d, p in got:
        exp = ks_2samp(xs[:R], xs[max(R, j - W + 1) : j + 1])
        assert abs(d - exp.statistic) <= 1e-9 and abs(p - exp.pvalue) <= 1e-9, j
    sweep = KSWindowDetector(R, W, alpha=0.01, stride=1, min_samples=min_samples)
    every = {j: (d, p) for j, d, p in evaluations(sweep, xs, cuts)}
    for j, d, p in got:
        assert (d, p) == every[j], j
