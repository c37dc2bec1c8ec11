"""Multiple-testing control over the features tested together at one evaluation.

Pure functions: p-values in, rejected mask out. ``None`` / NaN p-values (detectors without a
p-value, or not evaluated) are never rejected and do not count in ``m``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from driftline.errors import SpecError

__all__ = ["benjamini_hochberg", "bonferroni"]


def _prepare(p_values: Sequence[float | None] | np.ndarray, alpha: float) -> np.ndarray:
    if isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        raise SpecError(f"alpha: got {alpha!r}; expected a number strictly between 0 and 1")
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
