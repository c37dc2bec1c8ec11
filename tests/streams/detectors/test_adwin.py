"""AdwinDetector: identical detections to river's ADWIN, cooldown states, state round trip."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
from river.drift import ADWIN

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.adwin import AdwinDetector
from driftline.streams.detectors.base import Detection


def river_detections(xs: np.ndarray, **kw) -> list[int]:
    adwin = ADWIN(**kw)
    out = []
    for i, x in enumerate(xs.tolist()):
        adwin.update(x)
        if adwin.drift_detected:
            out.append(i)
    return out


def multi_shift_stream(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal(0, 1, 3_000),
            rng.normal(2, 1, 2_000),
            rng.normal(-1, 0.5, 2_000),
            rng.exponential(1.0, 3_000),
        ]
    )


def rebased(dets: list[Detection], offset: int) -> list[Detection]:
    return [Detection(**{**d.__dict__, "index": d.index + offset}) for d in dets]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "kw", [{}, {"delta": 0.05, "clock": 1}, {"delta": 1e-5, "clock": 8, "grace_period": 100}]
)
def test_firings_equal_river_adwin_fed_the_same_values(seed: int, kw: dict) -> None:
    xs = multi_shift_stream(seed)
    expected = river_detections(xs, **kw)
    assert len(expected) >= 3
    # with cooldown 0 every river detection is an episode of its own
    det = AdwinDetector(**kw, cooldown=0)
    changes = det.update_many(xs)
    assert [c.index for c in changes if c.status == "firing"] == expected
    assert [c.index for c in changes if c.status == "resolved"] == expected
    # with a cooldown that never elapses, one episode: later detections extend it
    det = AdwinDetector(**kw, cooldown=10**9)
    changes = det.update_many(xs)
    assert [(c.index, c.status) for c in changes] == [(expected[0], "firing")]
    assert det.n_detections == len(expected)
    assert det.in_drift and not det.drift_detected


def test_statistic_is_the_mean_difference_of_the_cut() -> None:
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.normal(0, 1, 4_000), rng.normal(3, 1, 2_000)])
    det = AdwinDetector(cooldown=10**6)
    (c,) = det.update_many(xs)
    assert c.status == "firing" and 4_000 <= c.index < 4_200
    assert c.statistic == pytest.approx(3.0, abs=0.5)
    assert c.p_value is None and c.threshold == 0.002
    assert c.n_reference + c.n_current == c.index + 1  # river dropped the older part
    assert c.n_current > 0 and c.n_reference > 3_500
    # recompute from the raw values: mean(dropped) vs mean(kept)
    dropped, kept = xs[: c.n_reference], xs[c.n_reference : c.index + 1]
    assert c.statistic == pytest.approx(abs(dropped.mean() - kept.mean()), rel=1e-9)
    assert det.statistic == c.statistic


@pytest.mark.parametrize("seed", range(5))
def test_detects_a_seeded_mean_shift_with_no_alarm_before(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    xs = np.concatenate([rng.normal(10, 2, 8_000), rng.normal(11, 2, 4_000)])
    changes = AdwinDetector().update_many(xs)
    assert changes and changes[0].status == "firing"
    assert all(c.index >= 8_000 for c in changes)
    assert changes[0].index < 9_000


def test_cooldown_resolves_after_quiet_values_and_restarts_on_new_detection() -> None:
    xs = multi_shift_stream(1)
    fired = river_detections(xs)
    cooldown = 700
    changes = AdwinDetector(cooldown=cooldown).update_many(xs)
    # expected state machine from river's detection indices
    expected: list[tuple[str, int]] = []
    last = None
    for i in range(len(xs)):
        if i in fired:
            expected.append(("firing", i))
            last = i
        elif last is not None and i - last == cooldown:
            expected.append(("resolved", i))
            last = None
    assert [(c.status, c.index) for c in changes] == expected
    assert ("resolved", fired[0] + cooldown) in expected or fired[1] - fired[0] <= cooldown
    resolved = [c for c in changes if c.status == "resolved"]
    assert resolved and all(r.p_value is None for r in resolved)


def test_cooldown_zero_fires_and_resolves_on_the_same_value() -> None:
    xs = multi_shift_stream(2)
    fired = river_detections(xs)
    det = AdwinDetector(cooldown=0)
    changes = det.update_many(xs)
    assert [(c.status, c.index) for c in changes] == [
        (s, i) for i in fired for s in ("firing", "resolved")
    ]
    assert not det.drift_detected


def test_update_equals_update_many_and_batching_does_not_matter() -> None:
    xs = multi_shift_stream(3)[:6_000]
    a = AdwinDetector(cooldown=300)
    singles = []
    for i, x in enumerate(xs):
        before = a.snapshot()
        a.update(float(x))
        b = AdwinDetector(cooldown=300)
        b.restore(before)
        singles += rebased(b.update_many(np.array([x])), i)
    batched = AdwinDetector(cooldown=300)
    got = []
    bounds = [0, 1, 17, 2_000, 2_001, 4_444, 6_000]
    for lo, hi in pairwise(bounds):
        got += rebased(batched.update_many(xs[lo:hi]), lo)
    assert got == singles
    assert [c.status for c in got].count("firing") >= 1
    assert a.snapshot() == batched.snapshot()


def test_nan_and_inf_are_skipped() -> None:
    xs = multi_shift_stream(0)[:5_000]
    clean = AdwinDetector().update_many(xs)
    dirty = np.insert(xs, [0, 100, 3_000, 3_000], [np.nan, np.inf, np.nan, -np.inf])
    positions = np.flatnonzero(np.isfinite(dirty))
    det = AdwinDetector()
    got = det.update_many(dirty)
    assert [(d.status, d.statistic) for d in got] == [(d.status, d.statistic) for d in clean]
    assert [d.index for d in got] == [int(positions[d.index]) for d in clean]
    assert det.n_seen == len(xs)


@pytest.mark.parametrize("cut", [0, 1, 2_999, 3_050, 5_500, 10_000])
def test_snapshot_restore_mid_stream(cut: int) -> None:
    xs = multi_shift_stream(4)
    expected = AdwinDetector(cooldown=400).update_many(xs)
    assert len(expected) >= 4
    first = AdwinDetector(cooldown=400)
    got = first.update_many(xs[:cut])
    state = json.loads(json.dumps(first.snapshot(), allow_nan=False))
    second = AdwinDetector(cooldown=400)
    second.restore(state)
    assert (second.drift_detected, second.n_seen, second.width) == (
        first.drift_detected,
        first.n_seen,
        first.width,
    )
    got += rebased(second.update_many(xs[cut:]), cut)
    assert got == expected


def test_restore_rejects_other_hyperparameters_or_garbage() -> None:
    snap = AdwinDetector(cooldown=5).snapshot()
    with pytest.raises(DriftlineError, match="hyperparameters"):
        AdwinDetector(cooldown=6).restore(snap)
    with pytest.raises(DriftlineError, match="not a 'adwin' detector snapshot"):
        AdwinDetector().restore({"detector": "ks"})
    with pytest.raises(DriftlineError, match="not an ADWIN detector snapshot"):
        AdwinDetector(cooldown=5).restore({**snap, "river": "bm90IGEgcGlja2xl"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delta": 0.0}, "delta: got 0.0; expected a number strictly between 0 and 1"),
        ({"delta": 1.5}, "delta: got 1.5"),
        ({"delta": None}, "delta: got None"),
        ({"clock": 0}, "clock: got 0; expected an integer >= 1"),
        ({"clock": 2.0}, "clock: got 2.0"),
        ({"max_buckets": 1}, "max_buckets: got 1; expected an integer >= 2"),
        ({"min_window_length": 0}, "min_window_length: got 0"),
        ({"grace_period": -1}, "grace_period: got -1"),
        ({"cooldown": -1}, "cooldown: got -1; expected an integer >= 0"),
        ({"cooldown": True}, "cooldown: got True"),
    ],
)
def test_hyperparameter_validation(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        AdwinDetector(**kwargs)


def test_initial_state() -> None:
    det = AdwinDetector()
    assert AdwinDetector.name == "adwin"
    assert (det.drift_detected, det.n_seen, det.p_value, det.n_detections) == (False, 0, None, 0)
    assert det.statistic != det.statistic  # NaN before the first detection
    assert det.update_many(np.array([])) == []
    assert det.update(1.0) is None and det.n_seen == 1


@pytest.mark.parametrize("scale", [1.0, 1e6, 1e-3])
def test_the_window_before_an_update_is_the_last_plus_the_value(scale: float) -> None:
    """update_many keeps the window's width and total itself between detections (no call into
    river per value): river's helper adds the same floats, so they are its own, exactly."""
    rng = np.random.default_rng(5)
    parts = [rng.normal(0, 1, 20_000), rng.normal(2, 1, 20_000), rng.lognormal(0, 2, 20_000),
             rng.integers(0, 5, 20_000)]  # fmt: skip
    xs = np.concatenate(parts) * scale
    a = ADWIN(delta=1e-5)
    helper = a._helper
    width, total, detections = helper.get_width(), helper.get_total(), 0
    for x in xs.tolist():
        if a._drift_detected:
            a._reset()
            helper, width, total = a._helper, 0.0, 0.0
        a._drift_detected = helper.update(x)
        if a._drift_detected:
            detections += 1
            continue
        width, total = width + 1.0, total + x
        assert (width, total) == (helper.get_width(), helper.get_total())
    assert detections >= 3
    det = AdwinDetector(delta=1e-5, cooldown=0)
    firings = [d for d in det.update_many(xs) if d.status == "firing"]
    assert len(firings) == detections and det.statistic > 0
