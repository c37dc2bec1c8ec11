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

`Hull.push` appends the points of a block in order and records, for every vertex, when it
appeared and was removed, so the candidates of each value of the block are known without
copying the hull per value; `glr_mean` / `glr_scale` are the likelihood-ratio statistics of a
split, elementwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CLIP", "FLOOR", "Hull", "dispersion", "glr_mean", "glr_scale", "reference_transform"]

#: Standardised values are clipped to +-CLIP robust standard deviations (heavy tails, outliers).
CLIP = 3.0
#: Smallest squared standardised value the scale statistic uses (a value at the reference
#: centre is not infinite evidence of a smaller spread).
FLOOR = 0.05
#: Smallest dispersion `dispersion` returns.
MIN_DISPERSION = 1.0


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


class Hull:
    """The lower (``lower=True``) or upper convex hull of the points ``(t, C_t)``, t = 0..n.

    Vertices are kept in plain lists (``t`` integers, ``c`` floats) so snapshots are JSON.
    The first vertex, ``(0, 0)``, is never removed.

    Examples
    --------
    >>> h = Hull(lower=True)
    >>> born, dead, ct, cc = h.push(0, [1.0, 1.5, 1.6, 3.0])
    >>> h.t, h.c
    ([0, 3, 4], [0.0, 1.6, 3.0])
    >>> dead.tolist()  # t=1 was removed by the point of index 1 (t=2), t=2 by t=3
    [1, 2, 4, 4]
    """

    def __init__(self, lower: bool) -> None:
        self.lower = lower
        self.t: list[int] = [0]
        self.c: list[float] = [0.0]

    def push(
        self, t0: int, cs: list[float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Append the points ``(t0 + k + 1, cs[k])`` in order.

        Returns ``born``, ``dead``, ``tau``, ``ctau`` for the candidates of the block: the
        vertices there at its start (other than ``(0, 0)``; ``born`` -1) and its points
        (``born`` = k). A candidate is a vertex of the hull after the point of index ``k`` and
        not that point itself iff ``born < k < dead`` (``dead`` = the index of the point that
        removed it, or ``len(cs)``).
        """
        t, c = self.t, self.c
        old = len(t) - 1
        b = len(cs)
        tau = t[1:] + list(range(t0 + 1, t0 + b + 1))
        ctau = c[1:] + cs
        dead = [b] * (old + b)
        ids = list(range(-1, old))  # candidate index of each vertex (-1: the origin)
        sign = 1.0 if self.lower else -1.0  # lower hull: remove while the turn is not left
        m = len(t)  # vertices in use: t[:m] (the lists are overwritten in place, cut at the end)
        tk = t0
        for k, ck in enumerate(cs):
            tk += 1
            while m >= 2:
                ta, ca = t[m - 2], c[m - 2]
                if sign * ((t[m - 1] - ta) * (ck - ca) - (c[m - 1] - ca) * (tk - ta)) > 0.0:
                    break
                m -= 1
                dead[ids[m]] = k
            if m < len(t):
                t[m], c[m], ids[m] = tk, ck, old + k
            else:
                t.append(tk)
                c.append(ck)
                ids.append(old + k)
            m += 1
        del t[m:], c[m:]
        born = np.concatenate([np.full(old, -1), np.arange(b)])
        return born, np.asarray(dead), np.asarray(tau, dtype=np.float64), np.asarray(ctau)

    def reset(self) -> None:
        """Back to the origin alone."""
        self.t, self.c = [0], [0.0]

    def state(self) -> list[list[Any]]:
        """Plain data: ``[t, c]``."""
        return [list(self.t), list(self.c)]

    def load(self, state: list[list[Any]]) -> None:
        """Load `state` (raises TypeError / ValueError if malformed)."""
        t, c = state
        if len(t) != len(c) or not t or t[0] != 0 or c[0] != 0.0:
            raise ValueError("a hull starts at (0, 0) and has as many t as c")
        if any(type(v) is not int for v in t) or any(type(v) not in (int, float) for v in c):
            raise TypeError("hull t must be integers and c numbers")
        self.t, self.c = list(t), [float(v) for v in c]


def candidates_mask(born: np.ndarray, dead: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns that are a candidate for some value of the block, and the (b x columns) mask."""
    keep = np.flatnonzero(dead > born + 1)
    k = np.arange(b)[:, None]
    return keep, (born[keep][None, :] < k) & (k < dead[keep][None, :])
