"""The arithmetic of the FOCuS-family detectors (`streams.detectors.focus`), shared with the
simulation that calibrates them (``bench/calibrate_sequential.py``).

A change at ``tau`` splits the values seen so far, ``y_1..y_n``, into a pre-change segment
``y_1..y_tau`` and a post-change segment ``y_tau+1..y_n``, both with unknown parameters. For an
exponential family the log-likelihood of a split, for fixed pre/post parameters, is linear in
the point ``(tau, C_tau)`` (``C`` the cumulative sum of the sufficient statistic), so the best
split over every ``tau`` and every pair of parameters lies on the convex hull of those points
(Romano, Eckley, Fearnhead & Rigaill, "Fast online changepoint detection via functional pruning
CUSUM statistics", JMLR 24, 2023, the pre-change-parameter-unknown case): the lower hull holds
the increases, the upper hull the decreases. A random walk's hull has O(log n) vertices, and
appending a point to Andrew's monotone chain costs O(1) amortised.

`Hull.push` appends the points of a block in order (a tight Python loop that records only the
position each point takes) and lays out the candidates of each value of the block as a row of a
block x hull-size array, without copying the hull per value; `glr_mean` / `glr_scale` are the
likelihood-ratio statistics of a split, elementwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "CLIP",
    "FLOOR",
    "Hull",
    "dispersion",
    "glr_mean",
    "glr_scale",
    "mean_may_exceed",
    "reference_transform",
    "scale_may_exceed",
]

#: Standardised values are clipped to +-CLIP robust standard deviations (heavy tails, outliers).
CLIP = 3.0
#: Smallest squared standardised value the scale statistic uses (a value at the reference
#: centre is not infinite evidence of a smaller spread).
FLOOR = 0.05
#: Smallest dispersion `dispersion` returns.
MIN_DISPERSION = 1.0
#: Relative margin of `mean_may_exceed` / `scale_may_exceed` (far above rounding errors).
SLACK = 1e-9


def reference_transform(warm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, scale and squared-value floor from warm-up samples (along the last axis).

    The centre is the median; the scale 1.4826 x the median absolute deviation (a normal's
    standard deviation), else 1.2533 x the mean absolute deviation when more than half the values
    are equal, else 1 (all equal). The floor of the squared standardised values is
    ``max(FLOOR, (q / scale)**2 / 4)`` with ``q`` the smallest gap between distinct values
    (integers, rounded values: a run of equal values is not a collapse of the spread).

    Examples
    --------
    >>> c, s, f = reference_transform(np.array([1.0, 2.0, 2.0, 3.0, 10.0]))
    >>> float(c), round(float(s), 4), round(float(f), 4)
    (2.0, 1.4826, 0.1137)
    """
    warm = np.asarray(warm, dtype=np.float64)
    centre = np.median(warm, axis=-1)
    dev = np.abs(warm - centre[..., None])
    mad = 1.4826 * np.median(dev, axis=-1)
    mean_dev = 1.2533 * dev.mean(axis=-1)
    scale = np.where(mad > 0, mad, np.where(mean_dev > 0, mean_dev, 1.0))
    srt = np.sort(warm, axis=-1)
    gaps = np.diff(srt, axis=-1)
    gaps = np.where(gaps > 0, gaps, np.inf)
    q = gaps.min(axis=-1) if gaps.shape[-1] else np.full(centre.shape, np.inf)
    q = np.where(np.isfinite(q), q, 0.0)
    floor = np.maximum(FLOOR, (q / scale) ** 2 / 4.0)
    return centre, scale, floor


def standardise(xs: np.ndarray, centre: float, scale: float) -> np.ndarray:
    """``(xs - centre) / scale`` clipped to +-`CLIP`."""
    return np.clip((xs - centre) / scale, -CLIP, CLIP)


def glr_mean(n: Any, cn: Any, qn: Any, tau: Any, ctau: Any) -> Any:
    """Log-likelihood ratio of a mean change after ``tau`` of ``n`` normal values (common
    unknown variance): ``(n / 2) log(S / (S - D))`` with ``S`` the total sum of squares about the
    mean and ``D`` the between-segment one. ``cn`` / ``qn``: sums of ``y`` / ``y**2``.

    Examples
    --------
    >>> y = np.array([0.1, -0.2, 0.0, 1.1, 0.9])
    >>> round(float(glr_mean(5, y.sum(), (y**2).sum(), 3, y[:3].sum())), 4)
    7.5167
    """
    ss = qn - cn * cn / n
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (ctau - tau * (cn / n)) ** 2 * (n / (tau * (n - tau)))
        ratio = np.minimum(np.divide(d, ss, out=np.zeros_like(d * ss), where=ss > 0), 1 - 1e-12)
        return -0.5 * n * np.log1p(-ratio)


def glr_scale(n: Any, cn: Any, tau: Any, ctau: Any) -> Any:
    """Log-likelihood ratio of a change of variance after ``tau`` of ``n`` centred normal values
    (``y`` = squared values, ``cn`` their sum): ``(n log(cn / n) - tau log(ctau / tau) -
    (n - tau) log((cn - ctau) / (n - tau))) / 2``.

    Examples
    --------
    >>> y = np.array([1.0, 0.8, 1.2, 4.0, 3.6])
    >>> round(float(glr_scale(5, y.sum(), 3, y[:3].sum())), 4)
    0.5435
    """
    post = np.maximum(cn - ctau, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * (
            n * np.log(cn / n) - tau * np.log(ctau / tau) - (n - tau) * np.log(post / (n - tau))
        )


def dispersion(n: Any, cn: Any, qn: Any) -> Any:
    """Dispersion of squared values relative to a normal's, ``var(y) / (2 mean(y)**2)`` (1 for
    normal values, above 1 for heavy tails), at least `MIN_DISPERSION`; the scale statistic is
    divided by it (a quasi-likelihood), so heavy- and light-tailed streams keep the rate.

    Examples
    --------
    >>> y = np.array([0.01, 0.02, 0.05, 9.0])  # one large squared value among small ones
    >>> round(float(dispersion(4, y.sum(), (y**2).sum())), 4)
    1.465
    """
    m = cn / n
    return np.maximum((qn / n - m * m) / (2.0 * m * m), MIN_DISPERSION)


def mean_may_exceed(
    n: np.ndarray, cn: np.ndarray, qn: np.ndarray, cands: tuple[np.ndarray, ...], h: np.ndarray
) -> np.ndarray:
    """Values (the last axis) whose `glr_mean` over the candidates ``cands`` (``tau``,
    ``ctau``, ``ok`` from `Hull.push`, candidates on the first axis) may exceed ``h``; False
    means it does not, exactly as computed.

    ``glr_mean`` exceeds ``h`` iff ``D / S`` exceeds ``rc = 1 - exp(-2 h / n)``; ``D`` is
    ``e**2 n / (tau (n - tau))`` with ``e`` and ``tau (n - tau)`` computed as `glr_mean` does,
    so ``e**2 <= tau (n - tau) rc S / n (1 - SLACK)`` bounds its ratio below ``rc (1 - SLACK)``
    up to a few roundings, and ``-log1p(-r)`` grows at least in proportion to ``r``: the
    statistic stays below ``h (1 - SLACK)`` up to a few ulps.
    """
    tau, ctau, ok = cands
    ss = qn - cn * cn / n
    lim = -np.expm1(-2.0 * h / n) * ss / n * (1.0 - SLACK)
    e = ctau - tau * (cn / n)
    e *= e
    p = tau * (n - tau)
    p *= lim
    return ((e > p) & ok).any(axis=0) | ~(h > 0)


def scale_may_exceed(
    n: np.ndarray, cn: np.ndarray, cands: tuple[np.ndarray, ...], bound: np.ndarray
) -> np.ndarray:
    """Values (the last axis) whose `glr_scale` over the candidates ``cands`` (as
    `mean_may_exceed`) may exceed ``bound``; False means it does not, exactly as computed.

    With ``m = cn / n`` and ``log x <= x - 1``, ``glr_scale = (tau log(m tau / ctau) +
    (n - tau) log(m (n - tau) / post)) / 2 <= (m (tau**2 / ctau + (n - tau)**2 / post) - n) /
    2``. The statistic's rounding error is below ``1e-11 n`` (terms at most ``n`` x 750 in size,
    each correct to a few ulps): the test allows ``SLACK (n + bound)``.
    """
    tau, ctau, ok = cands
    m = cn / n
    nt = n - tau
    post = np.maximum(cn - ctau, 1e-300)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = tau * tau / ctau
        nt *= nt
        nt /= post
        s += nt
        lim = np.where(m > 0, (n + 2.0 * (bound - SLACK * (n + bound))) / m, -np.inf)
    return ((s > lim) & ok).any(axis=0) | ~(bound > 0)


class Hull:
    """The lower (``lower=True``) or upper convex hull of the points ``(t, C_t)``, t = 0..n.

    Vertices are kept in plain lists (``t`` integral floats, ``c`` floats; `state` gives ``t``
    as integers, so snapshots are JSON). The first vertex, ``(0, 0)``, is never removed.

    Examples
    --------
    >>> h = Hull(lower=True)
    >>> tau, ctau, ok = h.push(0, [1.0, 1.5, 1.6, 3.0])
    >>> h.state()
    [[0, 3, 4], [0.0, 1.6, 3.0]]
    >>> [tau[ok[:, k], k].tolist() for k in range(4)]  # t=1 is removed by t=2, t=2 by t=3
    [[], [], [], [3.0]]
    """

    def __init__(self, lower: bool) -> None:
        self.lower = lower
        self.t: list[float] = [0.0]
        self.c: list[float] = [0.0]

    def push(self, t0: int, cs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Append the points ``(t0 + k + 1, cs[k])`` in order.

        Returns ``tau``, ``ctau`` and ``ok`` (``w`` x ``len(cs)`` arrays): column ``k`` holds
        the candidates of the point of index ``k``, the vertices of the hull after it other
        than ``(0, 0)`` and the point itself, in increasing ``t`` where ``ok`` (``ok[:, k]`` is
        a prefix of the column; ``w`` the most any column holds).
        """
        cs = np.asarray(cs, dtype=np.float64)
        old_t, old_c = self.t[1:], self.c[1:]
        pos = self._chain(float(t0), cs.tolist())
        return _candidates(old_t, old_c, t0, cs, pos)

    def _chain(self, t0: float, cs: list[float]) -> list[int]:
        """Andrew's monotone chain over the points ``(t0 + k + 1, cs[k])``; returns the
        position (index in the hull's lists) each point takes."""
        t, c = self.t, self.c
        m = len(t)  # vertices in use: t[:m] (the lists are overwritten in place, cut at the end)
        b = len(cs)
        t.extend([0.0] * b)
        c.extend([0.0] * b)
        pos = [0] * b
        tb, cb = t[m - 1], c[m - 1]  # the last vertex
        sign = 1.0 if self.lower else -1.0  # lower hull: remove while the turn is not left
        tk = t0
        k = 0
        for ck in cs:
            tk += 1.0
            while m > 1:
                ta, ca = t[m - 2], c[m - 2]
                if sign * ((tb - ta) * (ck - ca) - (cb - ca) * (tk - ta)) > 0.0:
                    break
                m -= 1
                tb, cb = ta, ca
            t[m] = tb = tk
            c[m] = cb = ck
            pos[k] = m
            k += 1
            m += 1
        del t[m:], c[m:]
        return pos

    def reset(self) -> None:
        """Back to the origin alone."""
        self.t, self.c = [0.0], [0.0]

    def state(self) -> list[list[Any]]:
        """Plain data: ``[t, c]`` (``t`` integers)."""
        return [[int(v) for v in self.t], list(self.c)]

    def load(self, state: list[list[Any]]) -> None:
        """Load `state` (raises TypeError / ValueError if malformed)."""
        t, c = state
        if len(t) != len(c) or not t or t[0] != 0 or c[0] != 0.0:
            raise ValueError("a hull starts at (0, 0) and has as many t as c")
        if any(type(v) is not int for v in t) or any(type(v) not in (int, float) for v in c):
            raise TypeError("hull t must be integers and c numbers")
        self.t, self.c = [float(v) for v in t], [float(v) for v in c]


def _candidates(
    old_t: list[float], old_c: list[float], t0: int, cs: np.ndarray, pos: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`Hull.push`'s candidate arrays from the vertices before the block (without the origin)
    and the position each point of the block took.

    A point pops the vertices above its position, so the vertex at position ``p`` when the
    point of index ``k`` arrives is the last earlier point of the block that took position
    ``p``, else the vertex there before the block; the candidates of ``k`` are positions
    ``1 .. pos[k] - 1``.
    """
    if len(pos) == 1:  # one value (the common small batch): the vertices below it
        w = pos[0] - 1
        return np.array(old_t[:w])[:, None], np.array(old_c[:w])[:, None], np.ones((w, 1), bool)
    at = np.fromiter(pos, np.int64, len(pos))
    b = at.size
    w = int(at.max()) - 1 if b else 0
    if w <= 0:
        empty = np.zeros((0, b))
        return empty, empty, np.zeros((0, b), dtype=bool)
    # which vertex sits at each position for each point: index into [the w vertices before
    # the block (padded), the b points]; later points have larger indices (a running maximum)
    n_old = min(len(old_t), w)
    vt, vc = np.zeros(w + b), np.zeros(w + b)
    vt[:n_old], vc[:n_old] = old_t[:n_old], old_c[:n_old]
    vt[w:], vc[w:] = np.arange(b) + (t0 + 1.0), cs
    idx = np.full((w, b), -1)
    idx[:, 0] = np.arange(w)
    j = np.flatnonzero(at[:-1] <= w)
    idx[at[j] - 1, j + 1] = w + j
    np.maximum.accumulate(idx, axis=1, out=idx)
    return vt[idx], vc[idx], np.arange(1, w + 1)[:, None] < at
