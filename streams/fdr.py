"""Multiple-testing control over a family of drift tests.

Pure functions. `bonferroni` and `benjamini_hochberg` take p-values tested together and return
the rejected mask; there ``None`` / NaN p-values (detectors without a p-value, or not evaluated)
are never rejected and do not count in ``m``.

Streaming detectors evaluate at their own strides, so there is no simultaneous vector of p-values
to correct. `bh_levels` turns Benjamini-Hochberg into one significance level per test instead:
the level at which BH would reject that test given the latest p-values of the others. Setting
each detector's level to it between updates (``set_alpha``) makes every detector reject exactly
when BH over the family's latest p-values would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from driftline.errors import SpecError
from driftline.streams.params import probability_param

__all__ = ["benjamini_hochberg", "bh_levels", "bonferroni"]


def _prepare(p_values: Sequence[float | None] | np.ndarray, alpha: float) -> np.ndarray:
    probability_param("alpha", alpha)
    p = np.array(
        [np.nan if v is None else v for v in np.asarray(p_values, dtype=object).ravel()],
        dtype=np.float64,
    )
    bad = ~np.isnan(p) & ((p < 0.0) | (p > 1.0))
    if bad.any():
        raise SpecError(f"p_values: got {p[bad][:3].tolist()}; expected values in [0, 1]")
    return p


def bonferroni(p_values: Sequence[float | None] | np.ndarray, alpha: float) -> np.ndarray:
    """Reject ``p <= alpha / m`` (family-wise error rate <= alpha).

    Examples
    --------
    >>> bonferroni([0.01, 0.02, 0.3, None], alpha=0.05).tolist()
    [True, False, False, False]
    """
    p = _prepare(p_values, alpha)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    return ok & (p <= alpha / max(m, 1))


def benjamini_hochberg(p_values: Sequence[float | None] | np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini-Hochberg step-up: reject the ``k`` smallest, ``k = max{i: p_(i) <= i alpha / m}``.

    Controls the false discovery rate at ``alpha`` for independent (or positively dependent)
    tests; same decisions as ``statsmodels.stats.multitest.multipletests(method="fdr_bh")``.

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.005], alpha=0.05).tolist()
    [True, True, True, True]
    >>> benjamini_hochberg([0.01, 0.04, 0.2, 0.005, None], alpha=0.05).tolist()
    [True, False, False, True, False]
    """
    p = _prepare(p_values, alpha)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.zeros(p.size, dtype=bool)
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    below = p[order] <= alpha * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.flatnonzero(below)[-1]) + 1
        out[order[:k]] = True
    return out


def bh_levels(p_values: Sequence[float | None] | np.ndarray, alpha: float) -> np.ndarray:
    """Per-test Benjamini-Hochberg levels: test ``i`` is rejected iff ``p_i <= level_i``.

    ``p_values`` holds one entry per test of the family, so ``m = len(p_values)`` is the family
    size; ``None`` / NaN means "no p-value yet" and counts as a test that is not rejected (as a
    p-value of 1). For each test ``i``, with the other tests' p-values held fixed and its own
    treated as unknown,

    ``level_i = alpha k* / m``,  ``k* = max{k in 1..m : 1 + #{j != i : p_j <= alpha k / m} >= k}``

    is the largest BH step-up threshold at which ``i`` would be rejected. Hence
    ``p_i <= level_i`` exactly when ``benjamini_hochberg`` (with the missing p-values set to 1)
    rejects ``i``, and ``level_i`` does not depend on ``p_i``: a detector can test its next
    p-value against it. ``alpha / m`` (Bonferroni) <= ``level_i`` <= ``alpha`` (up to the
    rounding of ``alpha * k / m``); the level is ``alpha / m`` when no other test has a p-value
    ``<= alpha``, and it rises with the number of other small p-values.

    Detectors in `streams.detectors` reject when ``p < alpha`` (strict); set to ``level_i`` they
    match BH up to ties ``p_i == level_i``.

    Parameters
    ----------
    p_values
        Latest p-value of each test of the family (in [0, 1]), None / NaN if it has none yet.
    alpha
        False discovery rate, in (0, 1).

    Returns
    -------
    np.ndarray
        float64 levels, one per test, each ``alpha k / m`` for an integer ``1 <= k <= m``
        (computed as ``alpha * k / m``, exactly as `benjamini_hochberg` compares).

    Raises
    ------
    SpecError
        If ``alpha`` is not in (0, 1) or a p-value is outside [0, 1].

    Examples
    --------
    No p-value <= alpha: every test gets Bonferroni's ``alpha / m``.

    >>> bh_levels([0.5, 0.9, None, 0.3], alpha=0.04).tolist()
    [0.01, 0.01, 0.01, 0.01]

    Small p-values of the others raise a test's level: the first three have two other
    p-values <= ``3 alpha / m``, the last one three others <= ``4 alpha / m = alpha``.

    >>> p = [0.001, 0.015, 0.028, 0.9]
    >>> levels = bh_levels(p, alpha=0.04)
    >>> levels.tolist()
    [0.03, 0.03, 0.03, 0.04]
    >>> (np.array(p) <= levels).tolist(), benjamini_hochberg(p, alpha=0.04).tolist()
    ([True, True, True, False], [True, True, True, False])

    A test without a p-value yet still counts in ``m`` and gets a level too:

    >>> bh_levels([0.001, None], alpha=0.05).tolist()
    [0.025, 0.05]
    """
    p = _prepare(p_values, alpha)
    m = p.size
    if m == 0:
        return np.empty(0, dtype=np.float64)
    t = alpha * np.arange(1, m + 1) / m  # BH thresholds t_k, k = 1..m (as benjamini_hochberg)
    finite = np.sort(p[~np.isnan(p)])
    c = np.searchsorted(finite, t, side="right")  # C(k) = #{j : p_j <= t_k}
    k = np.arange(1, m + 1)
    # Own p counted at k (p_i <= t_k, i.e. k >= r_i): condition C(k) >= k; else C(k) + 1 >= k.
    # r_i = smallest k with p_i <= t_k (m + 1 if none, or p_i unknown).
    r = np.full(m, m + 1, dtype=np.int64)
    known = ~np.isnan(p)
    r[known] = np.searchsorted(t, p[known], side="left") + 1
    ok0 = c >= k
    k0 = int(k[ok0][-1]) if ok0.any() else 0  # largest k with C(k) >= k (the BH count)
    # largest k <= r - 1 with C(k) >= k - 1 (k = 1 always qualifies); index 0 means none
    last_ok1 = np.maximum.accumulate(np.concatenate([[0], np.where(c >= k - 1, k, 0)]))
    k_star = np.maximum(last_ok1[r - 1], np.where(r <= k0, k0, 0))
    return t[k_star - 1]
