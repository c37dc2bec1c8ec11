"""Exact two-sided two-sample Kolmogorov-Smirnov p-values, as ``scipy.stats.ks_2samp`` computes
them, without SciPy's private functions.

SciPy (1.13 to 1.17) computes the exact p-value of ``ks_2samp(method="exact")`` in private
functions (``scipy.stats._stats_py._attempt_exact_2kssamp``, ``_compute_prob_outside_square``
and the Pythran-compiled ``scipy.stats._stats_pythran._compute_outer_prob_inside_method``) that
may change or vanish in any release. This module carries the same algorithms, written for
driftline and kept to SciPy's floating-point operations, in the same order, so that the
p-values are bit-for-bit SciPy's (``tests/streams/detectors/test_scipy_ks.py`` checks them
against ``ks_2samp(method="exact")`` on many seeded cases and against a brute-force count):

* equal sizes ``n1 == n2 == n``: the alternating sum of binomial ratios for paths that leave
  the band ``|x - y| < h`` (Gnedenko-Korolyuk), evaluated Horner-style as SciPy does;
* unequal sizes: the lattice-path "inside method" of Hodges (1958) with Viehmann's recursion
  for ``1 - p`` (arXiv:2102.08037): ``q(x, y) = (q(x-1, y) x + q(x, y-1) y) / (x + y)`` on the
  band ``|ng x - mg y| < h``, 1 off it. SciPy runs it column by column in compiled (Pythran)
  code, about 4 ns a cell. Here every cell gets the same three roundings in the same order,
  so the value is SciPy's, by one of three schedules:

  - a narrow band row by row in plain Python (about 0.1 us a cell);
  - a wide band one anti-diagonal ``x + y = s`` at a time with numpy (every cell of one depends
    only on the previous one: about 3 us a diagonal, whatever its length);
  - many p-values at once (`prob_outside_band_many`): all their bands advance together, one
    anti-diagonal per step, each band in a ring buffer of its own width, so one numpy pass per
    step serves them all -- the per-step cost that makes one sweep slow is shared.

  No single p-value can match compiled code in pure Python/numpy (it is either per cell or per
  diagonal); the batch does, on workloads of hundreds of p-values.

References: J. L. Hodges Jr., "The significance probability of the Smirnov two-sample test",
Arkiv for Matematik 3 (1958) 469-486; T. Viehmann, "Numerically more stable computation of the
p-values for the two-sample Kolmogorov-Smirnov test", arXiv:2102.08037 (2021).

The algorithms and their numerics come from SciPy, distributed under this license:

    Copyright (c) 2001-2002 Enthought, Inc. 2003, SciPy Developers.
    All rights reserved.

    Redistribution and use in source and binary forms, with or without
    modification, are permitted provided that the following conditions
    are met:

    1. Redistributions of source code must retain the above copyright
       notice, this list of conditions and the following disclaimer.

    2. Redistributions in binary form must reproduce the above
       copyright notice, this list of conditions and the following
       disclaimer in the documentation and/or other materials provided
       with the distribution.

    3. Neither the name of the copyright holder nor the names of its
       contributors may be used to endorse or promote products derived
       from this software without specific prior written permission.

    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS
    "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT
    LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR
    A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT
    OWNER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
    SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT
    LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
    DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY
    THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
    (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
    OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "exact_two_sided_pvalue",
    "exact_two_sided_pvalues",
    "prob_outside_band",
    "prob_outside_band_many",
    "prob_outside_square",
]

#: The row sweep costs about 0.1 us per band cell in Python, the anti-diagonal sweep about
#: 3 us per diagonal in numpy: rows while a diagonal has at most this many band cells.
_CELLS_PER_DIAGONAL = 28
#: `prob_outside_square` loops over the terms in numpy (about 2 us per factor index, all
#: terms at once) instead of Python (about 0.15 us per factor of each term) below h = n / this.
_SQUARE_TERMS = 14
#: `prob_outside_band_many` sweeps one by one below this many bands (a batched step costs about
#: two steps of a single numpy sweep).
_MIN_BATCH = 4
#: `prob_outside_band_many` prepares band edges for this many (diagonal, band) pairs at a time.
_EDGE_BLOCK = 1 << 18


def prob_outside_square(n: int, h: int) -> float:
    """``P(D >= h / n)`` for two samples of size ``n`` (``1 <= h <= n``).

    ``2 * sum_k (-1)^(k+1) binom(2n, n - k h) / binom(2n, n)``, each ratio a product of ``h``
    factors, nested as ``2 A0 (1 - A1 (1 - A2 (...)))`` to avoid cancellation. For small ``h``
    (many terms of few factors) the terms' products run side by side in numpy, factor by
    factor, with the same roundings.

    Examples
    --------
    >>> prob_outside_square(2, 2)  # both values of one sample below both of the other
    0.3333333333333333
    >>> prob_outside_square(1000, 30) == _prob_outside_square_loop(1000, 30)
    True
    """
    if h * _SQUARE_TERMS >= n:
        return _prob_outside_square_loop(n, h)
    kh = np.arange(n // h, -1, -1, dtype=np.float64) * h  # k h for k = n // h, ..., 0
    ratio = np.ones(kh.size)
    num, den = n - kh, n + kh + 1.0
    for j in range(h):  # ratio = (n - k h - j) * ratio / (n + k h + j + 1), as SciPy
        np.multiply(num - j, ratio, out=ratio)
        np.divide(ratio, den + j, out=ratio)
    total = 0.0
    for r in ratio.tolist():
        total = r * (1.0 - total)
    return 2 * total


def _prob_outside_square_loop(n: int, h: int) -> float:
    total = 0.0
    for k in range(n // h, -1, -1):
        ratio = 1.0
        for j in range(h):
            ratio = (n - k * h - j) * ratio / (n + k * h + j + 1)
        total = ratio * (1.0 - total)
    return 2 * total


def _sweep_rows(m: int, n: int, g: int, h: int) -> float:
    """Row by row (y = 0..n) over the columns x of the band ``|ng x - mg y| < h``.

    ``q(x, y)``: the share of lattice paths from (0, 0) to (x, y) that touched the band's
    edge; 1 off the band, and ``(q(x-1, y) x + q(x, y-1) y) / (x + y)`` on it (SciPy's
    expression, summed in its order). Cells with ``ng x < h`` and ``mg y < h`` are 0 (no path
    to them leaves the band) and are not computed.
    """
    mg, ng = m // g, n // g
    ys = np.arange(n + 1, dtype=np.int64)
    x_lo = np.maximum((mg * ys - h) // ng + 1, 0)
    x_hi = np.minimum(-(-(mg * ys + h) // ng), m + 1)
    if (x_hi <= x_lo).any():
        return 1.0  # no path crosses that row inside the band
    los, his = x_lo.tolist(), x_hi.tolist()
    fx = [float(v) for v in range(m + n + 2)]  # exact; fx[x + y] is the divisor
    x_zero, y_zero = -(-h // ng), -(-h // mg)
    row, plo, phi = [0.0] * his[0], 0, his[0]
    for y in range(1, n + 1):
        lo, hi = los[y], his[y]
        fy = fx[y]
        if y < y_zero:  # lo == 0 here, and q(x, y) = 0 for x < x_zero
            start = min(x_zero, hi)
            new = [0.0] * start
            val = 0.0
        else:
            start = lo
            new = []
            val = 0.0 if lo == 0 else 1.0  # left of the band (times x = 0 when lo == 0)
        below = row[start - plo :]  # empty if the band jumps past the previous row's
        if hi > phi:
            below += [1.0] * (hi - max(phi, start))  # above the previous row's band
        append = new.append
        for b, x, d in zip(below, fx[start:hi], fx[start + y : hi + y], strict=True):
            val = (val * x + b * fy) / d
            append(val)
        row, plo, phi = new, lo, hi
    return row[-1]


def _sweep_diagonals(m: int, n: int, g: int, h: int) -> float:
    """The same recursion one anti-diagonal ``x + y = s`` at a time, vectorised over x.

    Every cell of a diagonal needs only the previous diagonal: ``q(x-1, y)`` and ``q(x, y-1)``.
    Diagonals with ``s < min(h / ng, h / mg)`` lie where q is 0 and are skipped.
    """
    mg, ng = m // g, n // g
    # on the band: |ng x - mg (s - x)| < h, and 0 <= x <= m, 0 <= s - x <= n
    s_all = np.arange(0, m + n + 1, dtype=np.int64)
    step = mg + ng
    los = np.maximum(np.maximum((mg * s_all - h) // step + 1, 0), s_all - n)
    his = np.minimum(np.minimum(-(-(mg * s_all + h) // step), m + 1), s_all + 1)
    if (his <= los).any():
        return 1.0  # no path crosses that diagonal inside the band
    # diagonal s0: q = 0 all along the band (x < h / ng and y < h / mg there)
    s0 = min(max(min(-(-h // ng), -(-h // mg)) - 1, 0), m + n - 1)
    size = m + n + 2
    xs = np.arange(-1, m + 1, dtype=np.float64)  # xs[i] = i - 1: the x of buffer slot i
    ys = np.arange(size - 1, -1, -1, dtype=np.float64)  # ys[i] = size - 1 - i
    # diagonal s - 1: slot x + 1 holds q(x, s - 1 - x). Diagonal s reads slots [lo, hi + 1] of
    # it (both ends move by 0 or 1 per diagonal): slots lo and hi + 1 are off the band, 1.0
    prev = np.ones(m + 3)
    spare = np.ones(m + 3)  # diagonal s - 2, overwritten with diagonal s
    left = np.empty(m + 2)
    prev[los[s0] + 1 : his[s0] + 1] = 0.0
    mul, add, div = np.multiply, np.add, np.divide
    lo_s, hi_s = los[s0 + 1 :].tolist(), his[s0 + 1 :].tolist()
    for s, lo, hi in zip(range(s0 + 1, m + n + 1), lo_s, hi_s, strict=True):
        k = hi - lo
        y0 = size - 1 - s + lo  # ys[y0:y0 + k] = s - x for x in [lo, hi)
        # q(x, y) = (q(x-1, y) x + q(x, y-1) y) / (x + y): q(x-1, y) in slot x, q(x, y-1) in x+1
        t = left[:k]
        mul(prev[lo:hi], xs[lo + 1 : hi + 1], out=t)
        out = spare[lo + 1 : hi + 1]
        mul(prev[lo + 1 : hi + 1], ys[y0 : y0 + k], out=out)
        add(t, out, out=out)
        div(out, s, out=out)
        spare[lo] = spare[hi + 1] = 1.0
        prev, spare = spare, prev
    return float(prev[m + 1])


def prob_outside_band(n1: int, n2: int, g: int, h: int) -> float:
    """``P(D >= h / lcm(n1, n2))`` for samples of sizes ``n1, n2`` with ``g = gcd(n1, n2)``.

    Examples
    --------
    >>> round(prob_outside_band(3, 2, 1, 6), 12)  # D = 1: 2 of the 10 orderings
    0.2
    """
    m, n = max(n1, n2), min(n1, n2)  # x runs over the larger sample
    if 2 * h <= _CELLS_PER_DIAGONAL * (m + n) // g:  # band cells per diagonal: about 2h / step
        return _sweep_rows(m, n, g, h)
    return _sweep_diagonals(m, n, g, h)


def prob_outside_band_many(n1: np.ndarray, n2: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`prob_outside_band` for many ``(n1, n2, h)`` at once, the same values bit for bit.

    ``n1 != n2`` and ``h >= 1`` everywhere (1-d integer arrays of one length). The bands all
    advance one anti-diagonal per step (`_sweep_rings`); few bands, and bands so narrow that
    a diagonal may hold none of their cells, go one by one.

    Examples
    --------
    >>> p = prob_outside_band_many([500, 300, 40, 7], [700, 500, 41, 500], [400, 2000, 300, 900])
    >>> bool(p[1] == prob_outside_band(300, 500, 100, 2000))
    True
    """
    n1, n2, h = (np.asarray(v, dtype=np.int64).ravel() for v in (n1, n2, h))
    m, n = np.maximum(n1, n2), np.minimum(n1, n2)
    g = np.gcd(m, n)
    out = np.empty(h.size)
    alone = h <= (m + n) // g  # 2h / step <= 2: some diagonal may miss the band
    if h.size - np.count_nonzero(alone) < _MIN_BATCH:
        alone[:] = True
    for i in np.flatnonzero(alone).tolist():
        out[i] = prob_outside_band(int(m[i]), int(n[i]), int(g[i]), int(h[i]))
    rest = np.flatnonzero(~alone)
    if rest.size:
        out[rest] = _sweep_rings(m[rest], n[rest], g[rest], h[rest])
    return out


def _sweep_rings(m: np.ndarray, n: np.ndarray, g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The anti-diagonal sweep of many bands side by side (``m > n``, ``2h > m/g + n/g``).

    Band ``p`` lives in a ring of ``R_p`` slots (at least its widest diagonal plus 3): on
    diagonal ``s``, slot ``y mod R_p`` holds ``q(s - y, y)``, for the ``R_p`` values of ``y``
    from the band's lower wall ``w = s - hi`` (the cell just right of the band) on. Then, for
    every band at once, a cell's left neighbour ``q(x-1, y)`` is in its own slot and the one
    below, ``q(x, y-1)``, in the slot before (each ring is preceded by a copy of its last
    slot), so one numpy expression over the concatenated rings steps every band:
    ``new = (old * (s - Y) + shifted(old) * Y) / s`` with ``Y`` the slots' y. After it the
    two walls of each band are set to 1. Every other off-band slot comes out exactly 1 by
    itself (both its neighbours are 1 and ``((s - y) + y) / s == 1``), and the multipliers
    are exact integers, so band cells get SciPy's roundings. When a band's lower wall moves
    up by one, the slot it leaves takes the next y (``+ R_p``).

    Bands finishing earlier (smaller ``m + n``) sit at the end and drop out of the pass.
    """
    order = np.argsort(-(m + n), kind="stable")
    m, n, g, h = m[order], n[order], g[order], h[order]
    count = m.size
    mg, ng = m // g, n // g
    step = mg + ng
    ends = m + n  # the last diagonal of each band: the cell (m, n)
    zero_to = np.maximum(np.minimum(-(-h // ng), -(-h // mg)), 1) - 1  # q = 0 up to there
    s_first = int(np.minimum(zero_to, ends - 1).min())
    # a diagonal holds at most 2h // step + 1 and n + 1 band cells: rings of at least that + 3
    ring = np.minimum(2 * h // step + 5, n + 4)
    base = 1 + np.cumsum(ring + 1) - ring  # ring p: slots [base, base + ring); base - 1: copy
    size = int(base[-1] + ring[-1])  # slot 0: a dummy, always 1 (y = 0, shifted = 0)
    mirror, last = base - 1, base + ring - 1
    f_mg, f_h, f_step = mg.astype(float), h.astype(float), step.astype(float)
    f_m1, f_n, f_ends = (m + 1).astype(float), n.astype(float), ends.astype(float)

    def walls(s_lo: int, s_hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper wall y (``s - hi`` and ``s - lo + 1``) of every band on diagonals
        ``[s_lo, s_hi)`` (held at their last values past a band's end). Float division is
        exact enough here, as in SciPy: the numerators stay far below 2**53."""
        s = np.minimum(np.arange(s_lo, s_hi, dtype=np.float64)[:, None], f_ends)
        hi = np.ceil((f_mg * s + f_h) / f_step)
        np.minimum(hi, f_m1, out=hi)
        np.minimum(hi, s + 1, out=hi)
        lo = np.floor((f_mg * s - f_h) / f_step)
        lo += 1
        np.maximum(lo, 0.0, out=lo)
        np.maximum(lo, s - f_n, out=lo)
        return (s - hi).astype(np.int64), (s - lo).astype(np.int64) + 1

    # diagonal s_first: the band is all 0 on it (q = 0 where no path can have left the band)
    w_lo, w_hi = walls(s_first, s_first + 1)
    owner = np.repeat(np.arange(count), ring)
    local = np.arange(owner.size) - np.repeat(np.cumsum(ring) - ring, ring)
    w0 = w_lo[0][owner]
    y_of = w0 + (local - w0) % ring[owner]
    slots = base[owner] + local
    ys = np.zeros(size)
    ys[slots] = y_of
    cur = np.ones(size)
    cur[slots[(y_of > w0) & (y_of < w_hi[0][owner])]] = 0.0
    cur[mirror] = cur[last]
    nxt, below, xs = np.empty(size), np.zeros(size), np.empty(size)
    result = np.empty(count)
    stops = (base + ring).tolist()
    ends_l = ends.tolist()
    active = count
    mul, add, div, sub = np.multiply, np.add, np.divide, np.subtract
    block = max(8, _EDGE_BLOCK // count)
    s_last = int(ends[0])
    prev_lo = w_lo[0]
    for s_lo in range(s_first + 1, s_last + 1, block):
        s_hi = min(s_lo + block, s_last + 1)
        w_lo, w_hi = walls(s_lo, s_hi)
        # slots whose y moves up by ring: where the lower wall rises (by 1), its old slot
        rows, cols = np.nonzero(np.diff(w_lo, axis=0, prepend=prev_lo[None, :]))
        moved_at = base[cols] + (w_lo[rows, cols] - 1) % ring[cols]
        moved_by = ring[cols].astype(np.float64)
        cuts = np.searchsorted(rows, np.arange(s_hi - s_lo + 1)).tolist()
        prev_lo = w_lo[-1]
        wall_at = np.empty((s_hi - s_lo, count, 2), dtype=np.int64)
        np.add(base, w_lo % ring, out=wall_at[:, :, 0])
        np.add(base, w_hi % ring, out=wall_at[:, :, 1])
        wall_at = wall_at.reshape(s_hi - s_lo, 2 * count)
        for i, s in enumerate(range(s_lo, s_hi)):
            while ends_l[active - 1] < s:
                active -= 1
            if cuts[i + 1] > cuts[i]:
                ys[moved_at[cuts[i] : cuts[i + 1]]] += moved_by[cuts[i] : cuts[i + 1]]
            e = stops[active - 1]
            y = ys[:e]
            x = xs[:e]
            new = nxt[:e]
            sub(s, y, out=x)  # x = s - y: q(x-1, y) x + q(x, y-1) y, as SciPy sums it
            mul(cur[:e], x, out=new)
            mul(cur[: e - 1], y[1:], out=below[1:e])
            add(new, below[:e], out=new)
            div(new, s, out=new)
            nxt[wall_at[i, : 2 * active]] = 1.0
            nxt[mirror[:active]] = nxt[last[:active]]
            cur, nxt = nxt, cur
            done = active
            while done and ends_l[done - 1] == s:
                done -= 1
            if done < active:  # these bands reached (m, n): y = n
                result[done:active] = cur[base[done:active] + n[done:active] % ring[done:active]]
    out = np.empty(count)
    out[order] = result
    return out


def exact_two_sided_pvalue(n1: int, n2: int, h: int) -> float | None:
    """The exact two-sided p-value of ``ks_2samp`` for ``D = h / lcm(n1, n2)``, or None where
    SciPy's exact computation does not succeed (it then falls back to the asymptotic one).

    Examples
    --------
    >>> exact_two_sided_pvalue(10, 12, 0)
    1.0
    >>> from scipy.stats import ks_2samp
    >>> res = ks_2samp([1, 2, 3, 4], [0, 5, 6, 7, 8, 9], method="exact")
    >>> bool(exact_two_sided_pvalue(4, 6, round(res.statistic * 12)) == res.pvalue)
    True
    """
    if h == 0:
        return 1.0
    g = math.gcd(n1, n2)
    prob = prob_outside_square(n1, h) if n1 == n2 else prob_outside_band(n1, n2, g, h)
    if not 0.0 <= prob <= 1.0:  # also NaN
        return None
    return prob


def exact_two_sided_pvalues(n1: np.ndarray, n2: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`exact_two_sided_pvalue` for many ``(n1, n2, h)`` (1-d integer arrays of one length),
    NaN where it gives None; the unequal sizes in one batch (`prob_outside_band_many`).

    Examples
    --------
    >>> exact_two_sided_pvalues([10, 4, 9, 500], [12, 6, 9, 333], [0, 8, 3, 20000]).tolist() == [
    ...     exact_two_sided_pvalue(10, 12, 0), exact_two_sided_pvalue(4, 6, 8),
    ...     exact_two_sided_pvalue(9, 9, 3), exact_two_sided_pvalue(500, 333, 20000)]
    True
    """
    n1, n2, h = (np.asarray(v, dtype=np.int64).ravel() for v in (n1, n2, h))
    if not n1.size == n2.size == h.size:
        raise ValueError("n1, n2 and h must have the same length")
    out = np.ones(h.size)
    band = np.flatnonzero((h != 0) & (n1 != n2))
    if band.size:
        out[band] = prob_outside_band_many(n1[band], n2[band], h[band])
    for i in np.flatnonzero((h != 0) & (n1 == n2)).tolist():
        out[i] = prob_outside_square(int(n1[i]), int(h[i]))
    out[~((out >= 0.0) & (out <= 1.0))] = np.nan
    return out
