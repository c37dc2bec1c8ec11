"""streams.fdr.bh_levels: per-test Benjamini-Hochberg levels for streaming detectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.errors import SpecError
from driftline.streams.fdr import benjamini_hochberg, bh_levels, bonferroni


def levels_by_definition(p: list[float | None], alpha: float) -> list[float]:
    """``alpha k* / m``, ``k* = max{k : 1 + #{j != i : p_j <= alpha k / m} >= k}``, O(m^2)."""
    m = len(p)
    known = [None if v is None or math.isnan(v) else v for v in p]
    out = []
    for i in range(m):
        others = [v for j, v in enumerate(known) if j != i and v is not None]
        k_star = max(k for k in range(1, m + 1) if 1 + sum(v <= alpha * k / m for v in others) >= k)
        out.append(alpha * k_star / m)
    return out


def bh_with_missing_as_one(p: list[float | None], alpha: float) -> np.ndarray:
    """BH over the whole family: a missing p-value is a test that is not rejected (p = 1)."""
    return benjamini_hochberg([1.0 if v is None or math.isnan(v) else v for v in p], alpha)


# ---------------------------------------------------------------- known answers
@pytest.mark.parametrize(
    ("p", "alpha", "expected"),
    [
        # m = 1: the level is alpha, whether or not the test has a p-value
        ([0.3], 0.05, [0.05]),
        ([None], 0.05, [0.05]),
        ([float("nan")], 0.05, [0.05]),
        # nothing small among the others: Bonferroni alpha / m for everyone
        ([0.5, 0.9, 0.7, 0.2], 0.04, [0.01, 0.01, 0.01, 0.01]),
        # thresholds 0.01 0.02 0.03 0.04. Test 0: others {0.015, 0.028, 0.9} -> k=3 (1 + 2);
        # test 3: others {0.001, 0.015, 0.028} all <= 0.04 -> k=4
        ([0.001, 0.015, 0.028, 0.9], 0.04, [0.03, 0.03, 0.03, 0.04]),
        # test 0 (p=0.02): others {0.011, 0.5, 0.6} -> k=2 (0.011 <= 0.02); test 1: others
        # {0.02, ...}: 0.02 <= 0.02 -> k=2; tests 2, 3: others {0.02, 0.011} <= 0.03 -> k=3
        ([0.02, 0.011, 0.5, 0.6], 0.04, [0.02, 0.02, 0.03, 0.03]),
        # None / NaN count in m = 5 (thresholds 0.01 .. 0.05) and are never small.
        # Others of test 0: {0.005, 0.015} -> k=3 (1 + 2 >= 3; k=4 needs 3 others <= 0.04)
        ([0.001, None, 0.005, float("nan"), 0.015], 0.05, [0.03, 0.04, 0.03, 0.04, 0.03]),
        # ties on the thresholds (p <= t counts): thresholds 0.0125 0.025 0.0375 0.05. Tests
        # 0-2 have two others <= 0.0375 (k=3), test 3 three others <= 0.05 (k=4)
        ([0.025, 0.025, 0.0375, 0.9], 0.05, [0.0375, 0.0375, 0.0375, 0.05]),
        # thresholds 0.01 0.02 0.03: test 0 has no other <= 0.02 (k=1), tests 1-2 have 0.01
        ([0.01, 0.5, 0.9], 0.03, [0.01, 0.02, 0.02]),
        # identical p-values
        ([0.02, 0.02, 0.02], 0.03, [0.03, 0.03, 0.03]),
        ([0.5, 0.5, None], 0.03, [0.01, 0.01, 0.01]),
        # zeros among the others
        ([0.0, 0.0, 0.7], 0.06, [0.04, 0.04, 0.06]),
        ([], 0.05, []),
    ],
)
def test_bh_levels_known_answers(p, alpha, expected) -> None:
    got = bh_levels(p, alpha)
    assert got.dtype == np.float64 and got.shape == (len(p),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    assert got.tolist() == levels_by_definition(p, alpha)  # bit for bit: alpha * k / m


def test_bh_levels_levels_are_bh_thresholds_and_agree_with_bh() -> None:
    p = [0.001, 0.015, 0.028, 0.9]
    levels = bh_levels(p, 0.04)
    assert ((np.array(p) <= levels) == benjamini_hochberg(p, 0.04)).all()
    # test 0 has no other small p-value: Bonferroni's level; the others see p_0 <= 2 alpha / m
    q = np.array([0.004, 0.5, 0.8, 0.9, 0.95])
    assert bh_levels(q, 0.05).tolist() == [0.05 / 5, 0.05 * 2 / 5, 0.02, 0.02, 0.02]
    assert ((q <= bh_levels(q, 0.05)) == bonferroni(q, 0.05)).all()
    # a test's level does not depend on its own p-value
    others = [0.001, 0.02, 0.7]
    unknown = bh_levels([None, *others], 0.05)[0]
    for own in (0.0, 0.004, 0.3, 1.0):
        assert bh_levels([own, *others], 0.05)[0] == unknown


def test_bh_levels_accepts_arrays_and_validates() -> None:
    np.testing.assert_array_equal(
        bh_levels(np.array([0.001, np.nan, 0.5]), 0.3), bh_levels([0.001, None, 0.5], 0.3)
    )
    with pytest.raises(SpecError, match="alpha: got 0"):
        bh_levels([0.1], 0)
    with pytest.raises(SpecError, match="alpha: got True"):
        bh_levels([0.1], True)
    with pytest.raises(SpecError, match=r"p_values: got \[1.5\]"):
        bh_levels([0.2, 1.5], 0.05)


def test_bh_levels_large_families() -> None:
    rng = np.random.default_rng(0)
    m = 1_000
    p = np.concatenate([rng.uniform(0, 1e-4, 20), rng.uniform(0, 1, m - 20)])
    p[rng.choice(m, 30, replace=False)] = np.nan
    levels = bh_levels(p, 0.05)
    # the definition, vectorised over k: C[i, k] = #{j != i : p_j <= t_k}
    t = 0.05 * np.arange(1, m + 1) / m
    q = np.where(np.isnan(p), np.inf, p)
    c = (q[:, None] <= t[None, :]).sum(axis=0)[None, :] - (q[:, None] <= t[None, :])
    k_star = np.where(1 + c >= np.arange(1, m + 1), np.arange(1, m + 1), 0).max(axis=1)
    assert levels.tolist() == t[k_star - 1].tolist()
    assert 0.05 / m < levels.min()  # 20 tiny p-values lift everyone
    with np.errstate(invalid="ignore"):
        assert ((p <= levels) == bh_with_missing_as_one(list(p), 0.05)).all()


# ---------------------------------------------------------------- property
@st.composite
def families(draw) -> tuple[list[float | None], float]:
    alpha = draw(st.sampled_from([0.01, 0.05, 0.2, 0.5, 0.9]) | st.floats(1e-6, 0.99))
    m = draw(st.integers(1, 12))
    grid = [alpha * k / m for k in range(1, m + 1)]  # ties exactly on the BH thresholds
    p = draw(
        st.lists(
            st.none()
            | st.just(float("nan"))
            | st.sampled_from([0.0, 1.0, *grid])
            | st.floats(0.0, min(1.0, alpha * 1.2))
            | st.floats(0.0, 1.0),
            min_size=m,
            max_size=m,
        )
    )
    return p, alpha


@settings(max_examples=500, deadline=None)
@given(families())
def test_bh_levels_reject_exactly_as_benjamini_hochberg(family) -> None:
    p, alpha = family
    levels = bh_levels(p, alpha)
    m = len(p)
    assert levels.tolist() == levels_by_definition(p, alpha)
    assert (levels >= alpha * 1 / m).all() and (levels <= alpha * m / m).all()
    known = np.array([v is not None and not math.isnan(v) for v in p])
    pv = np.array([v if k else np.nan for v, k in zip(p, known, strict=True)], dtype=float)
    with np.errstate(invalid="ignore"):
        rejected = pv <= levels  # NaN: never
    assert rejected.tolist() == bh_with_missing_as_one(p, alpha).tolist()
    if known.all():  # without missing p-values: plain benjamini_hochberg
        assert rejected.tolist() == benjamini_hochberg(p, alpha).tolist()
    # no other test at or below BH's largest level (alpha*m/m, rounded as bh_levels rounds it):
    # Bonferroni
    for i in range(m):
        if all(not known[j] or pv[j] > alpha * m / m for j in range(m) if j != i):
            assert levels[i] == alpha * 1 / m
