"""Tumbling window arithmetic: flooring, half-open ends, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.errors import DriftlineError, SpecError
from driftline.streams.windows import check_size_ms, tumbling_start_ms, window_end_ms

MIN = 60_000


@pytest.mark.parametrize(
    ("ts", "size", "start"),
    [
        (0, MIN, 0),
        (1, MIN, 0),
        (59_999, MIN, 0),
        (60_000, MIN, 60_000),  # the end is exclusive: next window
        (60_001, MIN, 60_000),
        (-1, MIN, -60_000),  # floor, not truncation towards zero
        (-59_999, MIN, -60_000),
        (-60_000, MIN, -60_000),
        (-60_001, MIN, -120_000),
        (1_732_000_123_456, MIN, 1_732_000_080_000),
        (7, 1, 7),
        (-7, 1, -7),
        (12, 5, 10),
        (-12, 5, -15),
    ],
)
def test_tumbling_start_table(ts: int, size: int, start: int) -> None:
    got = tumbling_start_ms(ts, size)
    assert got == start
    assert type(got) is int
    arr = tumbling_start_ms(np.array([ts], dtype=np.int64), size)
    assert arr.dtype == np.int64
    assert arr.tolist() == [start]
    assert start <= ts < window_end_ms(start, size)


def test_array_matches_python_floor_and_keeps_shape() -> None:
    rng = np.random.default_rng(0)
    ts = rng.integers(-(10**13), 10**13, size=(50, 4))
    out = tumbling_start_ms(ts, 3_600_000)
    assert out.shape == ts.shape
    assert out.ravel().tolist() == [(t // 3_600_000) * 3_600_000 for t in ts.ravel().tolist()]


def test_accepts_numpy_integer_scalars_and_unsigned_arrays() -> None:
    assert tumbling_start_ms(np.int64(-1), np.int64(10)) == -10
    assert tumbling_start_ms(np.array([15], dtype=np.uint32), 10).tolist() == [10]


def test_window_end() -> None:
    assert window_end_ms(120_000, MIN) == 180_000
    assert window_end_ms(np.array([-60_000, 0]), MIN).tolist() == [0, 60_000]
    assert window_end_ms(np.array([-60_000, 0]), MIN).dtype == np.int64


@pytest.mark.parametrize("size", [0, -1, 1.5, 60_000.0, True, "60000", None])
def test_invalid_size_raises_spec_error(size: object) -> None:
    with pytest.raises(SpecError, match=r"size_ms: got .*expected an integer number"):
        tumbling_start_ms(0, size)  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        window_end_ms(0, size)  # type: ignore[arg-type]


def test_check_size_ms_names_the_key() -> None:
    with pytest.raises(SpecError, match=r"^features\[0\]\.window_ms: got 0;"):
        check_size_ms(0, "features[0].window_ms")


@pytest.mark.parametrize("ts", [np.array([1.0, 2.0]), np.array(["1"]), True, 1.5])
def test_non_integer_timestamps_raise(ts: object) -> None:
    with pytest.raises(DriftlineError, match="integer milliseconds"):
        tumbling_start_ms(ts, 10)  # type: ignore[arg-type]


@given(st.integers(-(2**52), 2**52), st.integers(1, 10**10))
def test_property_start_contains_ts(ts: int, size: int) -> None:
    start = tumbling_start_ms(ts, size)
    assert start % size == 0
    assert start <= ts < window_end_ms(start, size)
    assert tumbling_start_ms(np.array([ts]), size)[0] == start


# ---------------------------------------------------------------------------- hopping, sliding
from driftline.streams.windows import check_step_ms, hopping_starts_ms, sliding_range_ms  # noqa: E402


@given(
    ts=st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=30),
    step=st.integers(1, 5_000),
    hops=st.integers(1, 6),
)
def test_hopping_windows_are_exactly_those_containing_the_event(ts, step, hops) -> None:
    size = step * hops
    starts = hopping_starts_ms(np.array(ts, dtype=np.int64), size, step)
    assert starts.shape == (len(ts), hops) and starts.dtype == np.int64
    for t, row in zip(ts, starts.tolist(), strict=True):
        # every multiple of step s with s <= t < s + size, latest first
        lo = -((size - 1 - t) // step)  # smallest k with k*step > t - size
        expect = [k * step for k in range(t // step, lo - 1, -1)]
        assert row == expect
        assert all(s <= t < s + size for s in row)


@pytest.mark.parametrize(
    ("size", "step", "ok"),
    [
        (60, 15, True),
        (60, 60, True),
        (60, 7, False),
        (60, 120, False),
        (60, 0, False),
        (1000, 1, True),
        (1001, 1, False),
        (3_600_000, 3600, True),
        (3_600_000, 1800, False),
    ],
)
def test_check_step(size, step, ok) -> None:
    if ok:
        assert check_step_ms(size, step) == step
    else:
        with pytest.raises(SpecError, match="step_ms: got"):
            check_step_ms(size, step)


@given(t=st.integers(-(10**12), 10**12), size=st.integers(1, 10**6), u=st.integers(-3, 3))
def test_sliding_range_is_size_ms_back_inclusive_of_the_event(t, size, u) -> None:
    lo, hi = sliding_range_ms(t, size)
    assert hi - lo == size and hi == t + 1
    probe = t - size + u  # around the lower edge
    assert (lo <= probe < hi) == (t - size < probe <= t)
    alo, ahi = sliding_range_ms(np.array([t]), size)
    assert (alo.tolist(), ahi.tolist()) == ([lo], [hi])
