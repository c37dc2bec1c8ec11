"""Exact two-sample KS machinery for sliding windows: p-values as scipy, D over many windows.

Two pieces, both pure numpy/scipy:

* `ks_pvalue` reproduces ``scipy.stats.ks_2samp(a, b)`` (``method="auto"``, two-sided) from the
  sample sizes and the integer ``h = D * lcm(n1, n2)``: the exact distribution (SciPy's
  algorithm, vendored in `streams.detectors._scipy_ks`: SciPy keeps it private) when
  ``max(n1, n2) <= 10000`` and it succeeds, else ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))`` --
  the same decision logic as scipy 1.13-1.17, memoised. `ks_pvalues` gives the same values
  for many triples at once, the exact ones in one batched sweep (`exact_two_sided_pvalues`: far
  cheaper per p-value than one call each). `critical_h` is the smallest ``h`` with
  ``p < alpha`` (p is non-increasing in h).
* `sweep_steps` / `sweep_growing` compute, for every event of a chunk, ``max_x |diff(x)|`` where
  ``diff = n2 * F_ref_count - n1 * F_cur_count`` is kept as integers (exactly representable
  float64) over a sorted grid of "slots". ``D = max|diff| / (n1 n2)``.

`sweep_steps` handles windows of constant sizes: every event adds a step ``+w`` on
``[pos, end)`` of the grid. Between the chunk's step positions ``diff`` moves by a constant,
so the grid is cut into at most ``steps + 1`` segments whose max/min are taken once
(``reduceat``); a ``(events x segments)`` matrix of cumulative steps then gives every event's D.
Cost per chunk: ``O(grid + events * steps)`` vectorised -- O(sqrt(grid)) per event for
chunks of about ``sqrt(grid)`` events.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
from scipy.special import kolmogorov
from scipy.stats import kstwo

from driftline.streams.detectors._scipy_ks import (
    exact_two_sided_pvalue,
    exact_two_sided_pvalues,
)

__all__ = [
    "MAX_AUTO_N",
    "critical_h",
    "ks_pvalue",
    "ks_pvalues",
    "sweep_growing",
    "sweep_steps",
]

#: scipy's ``ks_2samp(method="auto")`` uses the exact distribution up to this sample size.
MAX_AUTO_N = 10_000


#: p-values memoised by `ks_pvalue` and `ks_pvalues` (least recently used ones dropped).
_CACHE_SIZE = 65_536
_cache: OrderedDict[tuple[int, int, int], float] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple[int, int, int]) -> float | None:
    with _cache_lock:
        prob = _cache.get(key)
        if prob is not None:
            _cache.move_to_end(key)
        return prob


def _remember(key: tuple[int, int, int], prob: float) -> None:
    with _cache_lock:
        _cache[key] = prob
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def ks_pvalue(n1: int, n2: int, h: int) -> float:
    """Two-sided p-value of ``ks_2samp`` for sizes ``n1, n2`` and ``D = h / lcm(n1, n2)``.

    Examples
    --------
    >>> from scipy.stats import ks_2samp
    >>> a, b = np.arange(10.0), np.arange(5.0, 17.0)
    >>> res = ks_2samp(a, b)
    >>> h = round(res.statistic * math.lcm(10, 12))
    >>> bool(abs(ks_pvalue(10, 12, h) - res.pvalue) < 1e-15)
    True
    """
    key = (n1, n2, h)
    prob = _cached(key)
    if prob is None:
        prob = exact_two_sided_pvalue(n1, n2, h) if max(n1, n2) <= MAX_AUTO_N else None
        if prob is None:
            prob = _asymptotic_pvalue(n1, n2, h)
        _remember(key, prob)
    return prob


def ks_pvalues(n1: np.ndarray, n2: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`ks_pvalue` of every ``(n1[i], n2[i], h[i])`` (integer arrays of one length), the same
    values bit for bit: the exact ones not memoised yet in one batched sweep.

    Examples
    --------
    >>> n1, n2, h = [500, 500, 20, 12_000], [300, 300, 20, 300], [150, 150, 7, 40_000]
    >>> p = ks_pvalues(np.array(n1), np.array(n2), np.array(h))
    >>> p.tolist() == [ks_pvalue(a, b, c) for a, b, c in zip(n1, n2, h)]
    True
    """
    keys = list(
        zip(*(np.asarray(v, dtype=np.int64).ravel().tolist() for v in (n1, n2, h)), strict=True)
    )
    out = np.empty(len(keys))
    todo: dict[tuple[int, int, int], list[int]] = {}
    for i, key in enumerate(keys):
        prob = _cached(key)
        if prob is None:
            todo.setdefault(key, []).append(i)
        else:
            out[i] = prob
    if todo:
        new = list(todo)
        a, b, c = (np.array(v, dtype=np.int64) for v in zip(*new, strict=True))
        exact = np.flatnonzero(np.maximum(a, b) <= MAX_AUTO_N)
        probs = np.full(len(new), np.nan)
        probs[exact] = exact_two_sided_pvalues(a[exact], b[exact], c[exact])
        for key, prob in zip(new, probs.tolist(), strict=True):
            if math.isnan(prob):  # beyond the exact range, or SciPy's exact sum fails
                prob = _asymptotic_pvalue(*key)
            _remember(key, prob)
            out[todo[key]] = prob
    return out


def _asymptotic_pvalue(n1: int, n2: int, h: int) -> float:
    """SciPy's fallback: ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``, clipped to [0, 1]."""
    d = h / ((n1 // math.gcd(n1, n2)) * n2)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


@lru_cache(maxsize=4_096)
def critical_h(n1: int, n2: int, alpha: float) -> int:
    """Smallest ``h`` (``D = h / lcm``) with ``ks_pvalue(n1, n2, h) < alpha``; ``lcm + 1`` if none.

    p is non-increasing in h, so the answer is the end of a bracket ``p(lo) >= alpha > p(hi)``
    shrunk to ``hi - lo == 1``. The first probe is the asymptotic critical value, the next ones
    step away from it until the crossing is bracketed, then go where ``sqrt(-log p)``, nearly
    linear in h (``-log p ~ 2 en D^2``), crosses ``sqrt(-log alpha)`` (regula falsi), with
    bisection whenever that stalls. So every probe stays near the critical value (the exact
    sweep costs more the larger h is), and there are fewer of them than a bisection's 15-20.

    Examples
    --------
    >>> h = critical_h(50, 50, 0.01)
    >>> ks_pvalue(50, 50, h) < 0.01 <= ks_pvalue(50, 50, h - 1)
    True
    >>> h = critical_h(500, 333, 1e-4)
    >>> ks_pvalue(500, 333, h) < 1e-4 <= ks_pvalue(500, 333, h - 1)
    True
    """
    lcm = (n1 // math.gcd(n1, n2)) * n2
    if not _some_h_below(n1, n2, lcm, alpha):
        return lcm + 1
    # f(h) = sqrt(-log p(h)) - sqrt(-log alpha): about linear in h (-log p ~ 2 en D^2) apart
    # from small stairs, negative at the bracket's low end, positive at its high end
    target = math.sqrt(max(0.0, -math.log(alpha)))
    f = {0: -target, lcm: math.sqrt(-_log_tail(n1, n2)) - target}  # p(0) = 1; lcm: estimate
    lo, hi = 0, lcm

    def below(h: int) -> bool:  # evaluates p(h) and moves an end of the bracket to h
        nonlocal lo, hi
        p = ks_pvalue(n1, n2, h)
        f[h] = (math.sqrt(-math.log(p)) if p > 0.0 else math.inf) - target
        if p < alpha:
            hi = h
            return True
        lo = h
        return False

    # 1. the asymptotic critical value (finite-size corrected), then steps away from it that
    # double until the crossing is bracketed
    en = n1 * n2 / (n1 + n2)
    root = math.sqrt(en)
    start = min(max(int(lcm * _kolmogorov_isf(alpha) / (root + 0.12 + 0.11 / root)), 1), lcm - 1)
    if hi - lo > 1:
        down = below(start)
        step = max(1, start // 512)
        h = start
        while hi - lo > 1:
            h = h - step if down else h + step
            if not lo < h < hi or below(h) != down:
                break
            step *= 2
    # 2. regula falsi on f inside the bracket (Illinois: an end kept twice has its f halved),
    # bisection when a probe does not halve the bracket twice in a row
    f_lo, f_hi, kept, stalls = f[lo], f[hi], 0, 0
    while hi - lo > 1:
        if stalls >= 2 or not math.isfinite(f_hi) or f_hi <= f_lo:
            h, stalls = (lo + hi) // 2, 0
        else:
            h = min(max(lo + int((hi - lo) * -f_lo / (f_hi - f_lo)), lo + 1), hi - 1)
        width = hi - lo
        if below(h):
            f_hi = f[h]
            if kept == -1:
                f_lo /= 2
            kept = -1
        else:
            f_lo = f[h]
            if kept == 1:
                f_hi /= 2
            kept = 1
        stalls = stalls + 1 if hi - lo > width // 2 else 0
    return hi


def _log_tail(n1: int, n2: int) -> float:
    """``log P(D = 1) = log(2 / binom(n1 + n2, n1))`` (``D = 1``: one sample wholly below the
    other), at most 0."""
    log_binom = math.lgamma(n1 + n2 + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)
    return min(0.0, math.log(2.0) - log_binom)


def _some_h_below(n1: int, n2: int, lcm: int, alpha: float) -> bool:
    """Whether ``ks_pvalue(n1, n2, lcm) < alpha`` (the smallest p-value there is).

    In the exact range that p-value is ``P(D = 1) = 2 / binom(n1 + n2, n1)``; the exact sweep
    runs only when alpha is within a relative 1e-6 of it.
    """
    if max(n1, n2) > MAX_AUTO_N:
        return ks_pvalue(n1, n2, lcm) < alpha
    gap = _log_tail(n1, n2) - math.log(alpha)
    if abs(gap) > 1e-6:
        return gap < 0
    return ks_pvalue(n1, n2, lcm) < alpha


def _kolmogorov_isf(alpha: float) -> float:
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if kolmogorov(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def asymptotic_pvalues(d: np.ndarray, n1: int, n2: np.ndarray) -> np.ndarray:
    """Kolmogorov's limit ``P(sqrt(en) D_inf > sqrt(en) d)``: a cheap screen for `ks_pvalue`."""
    en = n1 * n2 / (n1 + n2)
    return kolmogorov(np.sqrt(en) * d)


def sweep_steps(
    diff0: np.ndarray, pos: np.ndarray, t_idx: np.ndarray, w: np.ndarray, n_events: int
) -> tuple[np.ndarray, np.ndarray]:
    """``max|diff|`` after each event of a chunk of steps; and ``diff`` after the chunk.

    Parameters
    ----------
    diff0
        float64 grid values (exact integers) before the chunk.
    pos, t_idx, w
        Step ``j`` adds ``w[j]`` to ``diff[pos[j]:]`` at event ``t_idx[j]`` (0-based, sorted
        not required).
    n_events
        Number of events in the chunk.

    Examples
    --------
    >>> pos, t, w = np.array([1, 3]), np.array([0, 1]), np.array([2.0, -5.0])
    >>> d, end = sweep_steps(np.zeros(4), pos, t, w, 2)
    >>> d.tolist(), end.tolist()
    ([2.0, 3.0], [0.0, 2.0, 2.0, -3.0])
    """
    k = diff0.size
    bp = np.unique(np.concatenate((np.zeros(1, dtype=pos.dtype), pos)))
    g = bp.size
    hi = np.maximum.reduceat(diff0, bp)
    lo = np.minimum.reduceat(diff0, bp)
    seg = np.searchsorted(bp, pos)
    inc = np.bincount(t_idx * g + seg, weights=w, minlength=n_events * g).reshape(n_events, g)
    np.cumsum(inc, axis=1, out=inc)
    np.cumsum(inc, axis=0, out=inc)
    mx = (inc + hi).max(axis=1)
    mn = (inc + lo).min(axis=1)
    out = np.maximum(mx, -mn)
    lengths = np.diff(np.append(bp, k))
    return out, diff0 + np.repeat(inc[-1], lengths)


def sweep_growing(
    ref_counts: np.ndarray, n1: int, p0: np.ndarray, n2_0: int, slots: np.ndarray
) -> np.ndarray:
    """``max|n2_t R - n1 P_t|`` after each insertion of a chunk into a growing current sample.

    Parameters
    ----------
    ref_counts
        ``R``: reference counts ``<=`` each slot (non-decreasing).
    n1
        Reference size.
    p0
        Current-sample counts ``<=`` each slot before the chunk.
    n2_0
        Current-sample size before the chunk.
    slots
        Slot of each inserted value, in order.

    Examples
    --------
    >>> sweep_growing(np.array([0., 1., 1., 2., 2.]), 2, np.zeros(5), 0, np.array([4, 0])).tolist()
    [2.0, 2.0]
    """
    c, k = slots.size, ref_counts.size
    inc = np.bincount(np.arange(c) * k + slots, minlength=c * k).reshape(c, k).astype(np.float64)
    np.cumsum(inc, axis=1, out=inc)
    np.cumsum(inc, axis=0, out=inc)
    inc += p0
    inc *= -float(n1)
    n2 = (n2_0 + np.arange(1, c + 1, dtype=np.float64))[:, None]
    inc += n2 * ref_counts
    return np.abs(inc).max(axis=1)
