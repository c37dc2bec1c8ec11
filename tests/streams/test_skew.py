"""Training-serving skew check: rolling disagreement share with hysteresis, exact and batch-free."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.errors import SpecError
from driftline.streams.skew import SkewCheck


def brute(b, s, tol, mode, window, max_rate, min_samples):
    flags, out, firing, seen = [], [], False, 0
    for i, (x, y) in enumerate(zip(b, s, strict=True)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        lim = tol * max(abs(x), 1.0) if mode == "relative" else tol
        flags.append(abs(x - y) > lim)
        seen += 1
        last = flags[-window:]
        rate = sum(last) / len(last)
        if not firing and rate > max_rate and seen >= min_samples:
            firing = True
            out.append((i, "firing", rate))
        elif firing and rate <= max_rate / 2:
            firing = False
            out.append((i, "resolved", rate))
    return sum(flags), out


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**31), st.sampled_from(["relative", "absolute"]), st.integers(1, 40),
    st.floats(0.0, 0.6), st.integers(1, 30), st.lists(st.integers(1, 60), min_size=1, max_size=6),
)  # fmt: skip
def test_equals_a_per_event_loop_for_any_batching(seed, mode, window, max_rate, min_samples,
                                                  cuts) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    n = 150
    b = rng.integers(0, 20, n).astype(float)
    s = b + rng.choice([0.0, 0.0, 0.05, 3.0], n) * (rng.random(n) < 0.5)
    s[rng.random(n) < 0.05] = np.nan
    exp_n, exp = brute(b, s, 0.1, mode, window, max_rate, min_samples)
    c = SkewCheck(0.1, mode, window, max_rate, min_samples)
    got, total, start = [], 0, 0
    for k in [*sorted(set(np.cumsum(cuts).tolist())), n]:
        k = min(k, n)
        if k <= start:
            continue
        m, det = c.update(b[start:k], s[start:k])
        total += m
        got += [(start + d.index, d.status, d.statistic) for d in det]
        if start == 0:  # and a snapshot/restore round trip mid-stream
            state = c.snapshot()
            c = SkewCheck(0.1, mode, window, max_rate, min_samples)
            c.restore(state)
        start = k
    assert total == exp_n
    assert [(i, st_) for i, st_, _ in got] == [(i, st_) for i, st_, _ in exp]
    assert [r for *_, r in got] == pytest.approx([r for *_, r in exp])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"tolerance": -1}, "tolerance: got -1; expected a number >= 0"),
     ({"tolerance": float("inf")}, "tolerance: got inf; expected a finite number >= 0"),
     ({"tolerance": float("nan")}, "tolerance: got nan"),
     ({"tolerance": True}, "tolerance: got True"),
     ({"mode": "ratio"}, "mode: got 'ratio'; expected one of relative, absolute"),
     ({"window": 0}, "window: got 0; expected an integer >= 1"),
     ({"window": 10.0}, "window: got 10.0"),
     ({"max_rate": 1.0}, r"max_rate: got 1.0; expected a number in \[0, 1\)"),
     ({"max_rate": -0.1}, "max_rate: got -0.1"),
     ({"min_samples": 0}, "min_samples: got 0; expected an integer >= 1")],
)  # fmt: skip
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        SkewCheck(**kwargs)


def test_agreeing_streams_never_fire() -> None:
    c = SkewCheck(tolerance=0.0, window=100, max_rate=0.0, min_samples=1)
    x = np.arange(10_000, dtype=float)
    assert c.update(x, x.copy()) == (0, [])
    assert c.statistic == 0.0 and not c.drift_detected
