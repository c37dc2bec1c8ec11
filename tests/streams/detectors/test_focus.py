"""``focus`` / ``focus_scale``: known answers, calibration, delays, episodes, state.

The batching / snapshot / parameter contract is in ``tests/streams/test_contract.py``.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pytest
from scipy.stats import poisson

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors import focus, focus_table
from driftline.streams.detectors._hull import (
    Hull,
    dispersion,
    glr_mean,
    glr_scale,
    mean_may_exceed,
    reference_transform,
    scale_may_exceed,
    standardise,
)
from driftline.streams.detectors.base import Detection
from driftline.streams.detectors.factory import build_detector
from driftline.streams.detectors.focus import FocusDetector, FocusScaleDetector, threshold
from driftline.streams.detectors.focus_panel import PANEL


def rebase(ds: list[Detection], off: int) -> list[Detection]:
    return [Detection(**{**d.__dict__, "index": d.index + off}) for d in ds]


# --------------------------------------------------------------------------- known answers
def test_likelihood_ratios_by_hand() -> None:
    # y = 1, -1 | 3, 5: means 0 and 4, total sum of squares 20, within 4: (4/2) log(20/4)
    y = np.array([1.0, -1.0, 3.0, 5.0])
    assert glr_mean(4, y.sum(), (y**2).sum(), 2, y[:2].sum()) == pytest.approx(2 * math.log(5))
    # squared values 1, 1 | 4, 4: (4 log 2.5 - 2 log 1 - 2 log 4) / 2
    s = np.array([1.0, 1.0, 4.0, 4.0])
    want = 0.5 * (4 * math.log(2.5) - 2 * math.log(4.0))
    assert glr_scale(4, s.sum(), 2, s[:2].sum()) == pytest.approx(want)


def brute_force(kind: str, direction: str, y: np.ndarray) -> float:
    """Max over every split of the two-segment likelihood ratio, from segment means directly."""
    n = y.size
    best = 0.0
    for tau in range(1, n):
        pre, post = y[:tau], y[tau:]
        up = post.mean() > pre.mean()
        if (direction == "up" and not up) or (direction == "down" and up):
            continue
        if kind == "mean":
            rss0 = ((y - y.mean()) ** 2).sum()
            rss1 = ((pre - pre.mean()) ** 2).sum() + ((post - post.mean()) ** 2).sum()
            lr = 0.5 * n * math.log(rss0 / rss1)
        else:
            lr = 0.5 * (
                n * math.log(y.mean())
                - tau * math.log(pre.mean())
                - (n - tau) * math.log(post.mean())
            )
        best = max(best, lr)
    if kind == "scale":
        best /= max(y.var() / (2 * y.mean() ** 2), 1.0)
    return best


STREAMS = {
    "normal": lambda r: r.normal(5.0, 2.0, 160),
    "shift": lambda r: np.concatenate([r.normal(0, 1, 100), r.normal(0.8, 1.5, 60)]),
    "integers": lambda r: r.poisson(3.0, 160).astype(float),
}


@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize("direction", ["both", "up", "down"])
@pytest.mark.parametrize("cls", [FocusDetector, FocusScaleDetector], ids=["focus", "scale"])
def test_statistic_is_the_brute_force_max_over_every_change_point(
    monkeypatch: pytest.MonkeyPatch, cls: type, direction: str, stream: str
) -> None:
    never = {k: [[1e9, 1e9]] * 2 for k in focus_table.THRESHOLDS}
    monkeypatch.setattr(focus_table, "THRESHOLDS", never)
    monkeypatch.setattr(focus_table, "N_GRID", (10, 100))
    monkeypatch.setattr(focus_table, "RATES", (0.1, 10_000.0))
    xs = STREAMS[stream](np.random.default_rng(len(stream)))
    det = cls(direction=direction, warmup=30)
    centre, scale, floor = reference_transform(xs[:30])
    z = standardise(xs, float(centre), float(scale))
    y = z if cls is FocusDetector else np.maximum(z * z, float(floor))
    kind = "mean" if cls is FocusDetector else "scale"
    rng = np.random.default_rng(1)
    i = 0
    while i < xs.size:  # random chunks: the block evaluation equals the brute force at each n
        j = min(xs.size, i + int(rng.integers(1, 90)))
        det.update_many(xs[i:j])
        i = j
        if j > 30:
            assert det.statistic == pytest.approx(brute_force(kind, direction, y[:j]), rel=1e-9)
    assert det.n_alarms == 0


def test_the_hull_is_convex_holds_every_point_and_stays_small() -> None:
    rng = np.random.default_rng(0)
    c = np.cumsum(rng.normal(0, 1, 20_000))
    for lower in (True, False):
        h = Hull(lower=lower)
        for a, b in pairwise([0, 7, 8, 500, 501, 20_000]):
            h.push(a, c[a:b].tolist())
        t, v = np.array(h.t, dtype=float), np.array(h.c)
        pts_t, pts_c = np.arange(20_001, dtype=float), np.concatenate([[0.0], c])
        sign = 1.0 if lower else -1.0
        for k in range(len(t) - 1):  # every point on the right side of every hull edge
            cross = (t[k + 1] - t[k]) * (pts_c - v[k]) - (v[k + 1] - v[k]) * (pts_t - t[k])
            assert (sign * cross >= -1e-6).all()
        assert t[0] == 0 and t[-1] == 20_000 and 3 <= len(t) < 60


def exact_best(kind: str, cand: tuple[np.ndarray, ...], n, cn, qn) -> np.ndarray:
    """The statistic of each value over its candidates, as `focus` computes it."""
    tau, ctau, ok = cand
    g = glr_mean(n, cn, qn, tau, ctau) if kind == "mean" else glr_scale(n, cn, tau, ctau)
    s = np.maximum(np.where(ok, g, -np.inf).max(axis=0), 0.0)
    return s if kind == "mean" else s / dispersion(n, cn, qn)


@pytest.mark.parametrize("lower", [True, False], ids=["up", "down"])
@pytest.mark.parametrize("kind", ["mean", "scale"])
def test_may_exceed_flags_every_statistic_above_the_threshold(kind: str, lower: bool) -> None:
    """The screen that spares `_watch` the statistic of most values: a threshold a hair below
    the exact statistic is always flagged; for the mean one 3x above it never is (after the
    first few values, where the ratio is capped), for the spread (a looser bound, log x <=
    x - 1) seldom."""
    rng = np.random.default_rng(3)
    y = np.concatenate([rng.normal(0, 1, 1500), rng.normal(0.3, 1.4, 500)])
    if kind == "scale":
        y = np.maximum(np.clip(y, -3, 3) ** 2, 0.05)
    cs, qs, ns = np.cumsum(y), np.cumsum(y * y), np.arange(1.0, y.size + 1)
    hull = Hull(lower=lower)
    judged, high = 0, 0
    for i in range(0, y.size, 250):
        n, cn, qn = ns[i : i + 250], cs[i : i + 250], qs[i : i + 250]
        cand = hull.push(i, cn)
        s = exact_best(kind, cand, n, cn, qn)
        disp = dispersion(n, cn, qn)
        rows = (s > 0) & (n > 10)
        for f in (1 - 1e-15, 1 - 1e-12, 0.5, 3.0):
            h = np.where(s > 0, s * f, 1.0)
            if kind == "mean":
                flagged = mean_may_exceed(n, cn, qn, cand, h)
            else:
                flagged = scale_may_exceed(n, cn, cand, h * disp)
            if f < 1:
                assert flagged[rows].all(), (i, f)
            else:
                high += int(flagged[rows].sum())
        judged += int(rows.sum())
    assert judged > 1800
    assert high == 0 if kind == "mean" else high < 0.2 * judged


# --------------------------------------------------------------------------- calibration
def test_threshold_table_shape_and_order() -> None:
    assert focus_table.RATES == tuple(sorted(focus_table.RATES))
    for rows in focus_table.THRESHOLDS.values():
        assert len(rows) == len(focus_table.RATES)
        assert all(len(r) == len(focus_table.N_GRID) for r in rows)
    for kind in ("mean", "scale"):
        for d in ("both", "up", "down"):
            n = np.array(focus_table.N_GRID)
            hi, lo = threshold(kind, d, 1.0, n), threshold(kind, d, 1000.0, n)
            assert (hi > lo).all() and (lo > 0).all()


RATE = 1000.0  # per 10^6: a raised rate, so a few 10^5 values measure it


@pytest.mark.parametrize("cls", [FocusDetector, FocusScaleDetector], ids=["focus", "scale"])
def test_false_alarm_rate_within_its_confidence_interval(cls: type) -> None:
    """On every stationary stream of the calibration panel, alarms per value at most the set
    rate (upper 99.9% Poisson bound); the panel's worst stream near it (the table is the
    largest threshold over the panel)."""
    n, streams = 20_000, 4
    counts = {}
    for name, gen in PANEL.items():
        fired = 0
        for seed in range(streams):
            det = cls(false_alarms_per_million=RATE)
            ds = det.update_many(gen(np.random.default_rng(seed), n))
            fired += sum(d.status == "firing" for d in ds)
        counts[name] = fired
    expected = RATE * n * streams / 1e6
    assert max(counts.values()) <= poisson.ppf(0.999, expected), counts
    assert max(counts.values()) >= poisson.ppf(0.001, expected) / 4, counts


# --------------------------------------------------------------------------- power
SHIFTS = [
    (FocusDetector, "both", lambda r, n: r.normal(1.0, 1.0, n), 60),
    (FocusDetector, "up", lambda r, n: r.normal(0.5, 1.0, n), 200),
    (FocusDetector, "down", lambda r, n: r.normal(-1.0, 1.0, n), 60),
    (FocusScaleDetector, "both", lambda r, n: r.normal(0.0, 2.0, n), 80),
    (FocusScaleDetector, "down", lambda r, n: r.normal(0.0, 0.5, n), 150),
]


@pytest.mark.parametrize(("cls", "direction", "gen", "within"), SHIFTS)
def test_shifts_are_found_quickly(cls: type, direction: str, gen, within: int) -> None:
    delays = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        det = cls(direction=direction)
        assert det.update_many(rng.normal(0.0, 1.0, 3_000)) == []
        ds = det.update_many(gen(rng, 1_000))
        delays.append(ds[0].index if ds else math.inf)
    assert np.median(delays) <= within, delays


@pytest.mark.parametrize(
    ("cls", "direction", "gen"),
    [
        (FocusDetector, "up", lambda r, n: r.normal(-2.0, 1.0, n)),
        (FocusDetector, "down", lambda r, n: r.normal(2.0, 1.0, n)),
        (FocusScaleDetector, "up", lambda r, n: r.normal(0.0, 0.3, n)),
        (FocusScaleDetector, "down", lambda r, n: r.normal(0.0, 3.0, n)),
    ],
)
def test_one_sided_detectors_ignore_the_other_side(cls: type, direction: str, gen) -> None:
    rng = np.random.default_rng(3)
    det = cls(direction=direction)
    assert det.update_many(np.concatenate([rng.normal(0, 1, 2_000), gen(rng, 3_000)])) == []


@pytest.mark.parametrize("cls", [FocusDetector, FocusScaleDetector], ids=["focus", "scale"])
def test_a_sustained_drift_is_one_episode_resolved_when_data_are_back(cls: type) -> None:
    rng = np.random.default_rng(11)
    drift = rng.normal(1.0, 1.0, 30_000) if cls is FocusDetector else rng.normal(0, 2, 30_000)
    det = cls()
    det.update_many(rng.normal(0.0, 1.0, 5_000))
    during = det.update_many(drift)
    assert [d.status for d in during] == ["firing"] and det.in_drift
    assert during[0].n_reference > 4_900  # the reference is the data before the change
    back = det.update_many(rng.normal(0.0, 1.0, 5_000))
    assert [d.status for d in back] == ["resolved"] and not det.in_drift
    assert back[0].index < 2_000 and back[0].statistic < back[0].threshold


def test_constant_and_tied_streams() -> None:
    det = FocusDetector()
    assert det.update_many(np.full(5_000, 3.0)) == []  # all equal: no evidence of anything
    (d,) = det.update_many(np.full(100, 4.0))
    assert (d.status, d.index, d.detail) == ("firing", 0, "mean increased")
    rng = np.random.default_rng(2)
    for cls in (FocusDetector, FocusScaleDetector):
        det = cls()
        assert det.update_many(rng.integers(0, 3, 50_000).astype(float)) == []


def test_warmup_values_and_nan() -> None:
    det = FocusDetector(warmup=10)
    assert det.update_many(np.array([np.nan, 1.0, np.inf, 2.0])) == []
    assert det.n_seen == 2 and det.reference is None and math.isnan(det.statistic)
    det.update_many(np.arange(8.0))
    assert det.reference == (2.5, pytest.approx(1.4826 * 1.5))  # 0, 1, 1, 2, 2, 3 .. 7


# --------------------------------------------------------------------------- state, params
def test_snapshot_is_json_and_refuses_others() -> None:
    rng = np.random.default_rng(0)
    det = FocusScaleDetector(direction="up")
    det.update_many(np.concatenate([rng.normal(0, 1, 500), rng.normal(0, 3, 100)]))
    assert det.in_drift
    snap = json.loads(json.dumps(det.snapshot(), allow_nan=False))
    other = FocusScaleDetector(direction="up")
    other.restore(snap)
    assert other.snapshot() == det.snapshot()
    with pytest.raises(DriftlineError, match="hyperparameters"):
        FocusScaleDetector().restore(snap)
    bad = {**snap, "hulls": {"up": [[1], [0.0]]}}
    with pytest.raises(DriftlineError, match="not a focus_scale detector snapshot"):
        other.restore(bad)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"false_alarms_per_million": 0.0001}, "expected a number in [0.001, 10000]"),
        ({"direction": "sideways"}, "expected one of both, up, down"),
        ({"warmup": 5}, "expected an integer between 10 and 100000"),
    ],
)
def test_parameters_out_of_range(params: dict, message: str) -> None:
    with pytest.raises(SpecError) as e:
        build_detector("focus", **params)
    assert message in str(e.value)


def test_lower_rates_mean_higher_thresholds_and_later_alarms() -> None:
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.normal(0, 1, 3_000), rng.normal(0.7, 1, 1_000)])
    first = {}
    for rate in (0.1, 1.0, 100.0):
        (d, *_) = FocusDetector(false_alarms_per_million=rate).update_many(xs)
        first[rate] = (d.index, d.threshold)
    assert first[0.1][1] > first[1.0][1] > first[100.0][1]
    assert first[0.1][0] >= first[1.0][0] >= first[100.0][0] > 3_000
    assert focus.MAX_WINDOW >= focus.MIN_WINDOW
