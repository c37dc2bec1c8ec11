"""Aggregator reference classes (initialise/add/merge/result) and the segment kernels."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.aggregators import (
    AGGREGATORS,
    DISTINCT_CAP,
    Count,
    Distinct,
    First,
    Last,
    Max,
    Mean,
    Min,
    Rate,
    SincePrev,
    Std,
    Sum,
    Variance,
    count_le,
    segment_bounds,
    segment_ffill,
    segmented_accumulate,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _mergeable():
    return [Count(), Sum(), Mean(), Variance(), Std(), Min(), Max(), Distinct(cap=5)]


@pytest.mark.parametrize("agg", _mergeable(), ids=lambda a: a.name)
@settings(max_examples=60, deadline=None)
@given(xs=st.lists(finite, max_size=40), cut=st.integers(0, 40))
def test_merge_of_two_halves_equals_one_pass(agg, xs, cut) -> None:
    x = np.array(xs, dtype=np.float64)
    cut = min(cut, len(xs))
    whole = agg.result(agg.add(agg.initialise(), x))
    merged = agg.result(
        agg.merge(agg.add(agg.initialise(), x[:cut]), agg.add(agg.initialise(), x[cut:]))
    )
    if agg.name in ("var", "std", "mean", "sum"):
        np.testing.assert_allclose(merged, whole, rtol=1e-9, atol=1e-6)
    else:
        assert merged == whole or (math.isnan(merged) and math.isnan(whole))


@pytest.mark.parametrize("agg", _mergeable(), ids=lambda a: a.name)
def test_state_is_plain_and_picklable(agg) -> None:
    s = agg.add(agg.initialise(), np.array([1.0, 2.0, 2.0]))
    assert pickle.loads(pickle.dumps(s)) == s


@pytest.mark.parametrize(
    ("agg", "values", "ts", "expected"),
    [
        (Count(), [], None, 0.0),
        (Sum(), [], None, 0.0),
        (Mean(), [], None, math.nan),
        (Variance(), [3.0], None, math.nan),
        (Variance(), [1.0, 2.0, 3.0, 4.0], None, np.var([1, 2, 3, 4], ddof=1)),
        (Std(), [2.0, 4.0], None, math.sqrt(2.0)),
        (Min(), [], None, math.nan),
        (Max(), [-1.0, -5.0], None, -1.0),
        (First(), [1.0, 2.0, 3.0], [5, 5, 4], 3.0),
        (First(), [1.0, 2.0], [5, 5], 1.0),  # tie: earliest arrival
        (Last(), [1.0, 2.0, 3.0], [5, 5, 4], 2.0),  # tie: latest arrival
        (Last(), [], [], math.nan),
        (Distinct(), [1.0, 1.0, -0.0, 0.0], None, 2.0),
        (Rate(10_000), [1.0] * 5, None, 0.5),
    ],
)
def test_known_answers(agg, values, ts, expected) -> None:
    tsa = None if ts is None else np.array(ts, dtype=np.int64)
    got = agg.result(agg.add(agg.initialise(), np.array(values, dtype=np.float64), tsa))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("offset", [0.0, 1e6, 1e9, 1e12])
def test_variance_is_stable_with_large_offsets(offset: float) -> None:
    rng = np.random.default_rng(7)
    x = offset + rng.normal(0.0, 1.0, 10_000)
    v = Variance()
    got = v.result(v.add(v.initialise(), x))
    assert got == pytest.approx(np.var(x, ddof=1), rel=1e-6)
    # naive sum-of-squares would lose every digit at 1e9: show the shifted sums do not
    parts = [v.add(v.initialise(), c) for c in np.array_split(x, 7)]
    merged = parts[0]
    for p in parts[1:]:
        merged = v.merge(merged, p)
    assert v.result(merged) == pytest.approx(np.var(x, ddof=1), rel=1e-6)


def test_distinct_caps_and_strings() -> None:
    d = Distinct()
    s = d.add(d.initialise(), np.arange(DISTINCT_CAP + 50, dtype=np.float64))
    assert d.result(s) == DISTINCT_CAP and len(s) == DISTINCT_CAP
    s = d.add(d.initialise(), np.array(["a", "b", "a"], dtype=object))
    assert d.result(d.merge(s, {"c": None, "a": None})) == 3.0


def test_since_prev() -> None:
    s = SincePrev()
    st_ = s.add(s.initialise(), np.zeros(3), np.array([10, 30, 20]))
    assert s.result(st_, 35) == 5.0
    assert s.result(s.merge(st_, s.add(s.initialise(), np.zeros(1), np.array([34]))), 35) == 1.0
    assert math.isnan(s.result(s.initialise(), 0))


def test_table_names() -> None:
    assert set(AGGREGATORS) == {
        "count", "sum", "mean", "var", "std", "min", "max", "first", "last", "distinct", "rate",
        "since_prev",
    }  # fmt: skip


# ---------------------------------------------------------------------------- kernels
@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=10),
    data=st.data(),
)
def test_segmented_accumulate_is_a_left_fold(sizes, data) -> None:
    m = sum(sizes)
    x = np.array(data.draw(st.lists(finite, min_size=m, max_size=m)))
    prior = np.array(data.draw(st.lists(finite, min_size=len(sizes), max_size=len(sizes))))
    gsize = np.array(sizes)
    gstart = np.cumsum(gsize) - gsize
    for op, fold in ((np.add, lambda a, b: a + b), (np.minimum, min), (np.maximum, max)):
        got = segmented_accumulate(op, x, gstart, gsize, prior)
        exp = []
        for g, (a, n) in enumerate(zip(gstart.tolist(), sizes, strict=True)):
            acc = float(prior[g])
            for v in x[a : a + n].tolist():
                acc = fold(acc, v)
                exp.append(acc)
        np.testing.assert_array_equal(got, exp)


def test_segment_helpers() -> None:
    gstart, gsize, gid = segment_bounds([np.array([0, 0, 1, 1, 1]), np.array([5, 6, 6, 6, 7])])
    assert gstart.tolist() == [0, 1, 2, 4] and gsize.tolist() == [1, 1, 2, 1]
    assert gid.tolist() == [0, 1, 2, 2, 3]
    flag = np.array([True, False, False, True, False])
    assert segment_ffill(flag, gstart[gid]).tolist() == [0, -1, -1, 3, -1]
    members = [np.array([0, 0, 1, 1]), np.array([1, 3, 3, 3])]
    queries = [np.array([0, 0, 1, 1, 2, -1]), np.array([0, 3, 2, 3, 0, 9])]
    assert count_le(members, queries).tolist() == [0, 2, 2, 4, 4, 0]
