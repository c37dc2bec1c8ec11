"""FOCuS-family sequential detectors with a calibrated false-alarm rate: ``focus`` (a change of
the mean) and ``focus_scale`` (a change of the spread), for real-valued streams.

How they work
-------------
1. **Reference transform.** The first ``warmup`` values fix a robust centre (median) and scale
   (1.4826 x MAD); every value becomes ``z = (x - centre) / scale`` clipped to +-3 (`_hull.CLIP`)
   so one outlier, a heavy tail or a skewed distribution cannot make a short segment look like a
   change. ``focus`` watches ``y = z``; ``focus_scale`` watches ``y = max(z**2, floor)`` (the
   floor keeps tied values, e.g. integers, from looking like a collapse of the spread).
2. **CUSUM over every change point and size at once.** At each value the detector computes the
   likelihood-ratio statistic of "the values since the (re)start changed after some ``tau``"
   against "no change", maximised over every ``tau`` and every pre- and post-change parameter
   (both unknown: the pre-change segment is the reference, and it grows): normal with a common
   unknown variance for ``focus``, the variance of centred normal values for ``focus_scale``.
   The best ``tau`` is always a vertex of the convex hull of the cumulative sums (`_hull`), so
   an update costs O(1) amortised plus the hull's size (O(log n) vertices), as FOCuS (Romano,
   Eckley, Fearnhead & Rigaill, JMLR 2023). ``update_many`` evaluates a block of values at once
   with numpy, exactly as value by value.
3. **Calibrated threshold.** The statistic is compared with ``h(n)`` (``n`` = values since the
   (re)start), taken from a table simulated by ``bench/calibrate_sequential.py``
   (`streams.detectors.focus_table`) so that a stationary stream raises
   ``false_alarms_per_million`` alarms per 10^6 values, from the first test on (the table
   depends on ``n``: the reference is small at first). The table is the largest threshold over
   a panel of stationary streams (normal, lognormal, Student-t(3), uniform, bimodal, Poisson,
   rounded values).
4. **One episode per sustained drift.** After firing, the reference stays the pre-change
   segment (its mean, and its variance or dispersion), and the detector resolves only when the
   last ``w`` values no longer differ from it: their log-likelihood ratio against the reference
   is below 0.5 (`RESOLVE_AT`; for a mean, the window mean within one standard error of the
   reference mean). ``w`` is 4 x the values after the change point at the firing, between 100
   and 2,000 (`WINDOW_FACTOR`, `MIN_WINDOW`, `MAX_WINDOW`): a drift that persists keeps the
   window far from the reference, so it stays one open episode however long it lasts; the
   check starts ``w`` values after the firing. Then the detector starts afresh: the next
   ``warmup`` values (same centre and scale) form the new reference before it tests again.

``statistic`` is the likelihood-ratio statistic of the last value while watching, and the
window's log-likelihood ratio against the reference while firing; ``p_value`` is None. A
firing `Detection` has ``threshold`` = ``h(n)``, ``n_reference`` = ``tau`` and ``n_current`` =
values after ``tau``, and ``detail`` says what changed ("mean increased", "spread decreased");
a resolved one has ``threshold`` = 0.5 and the window's statistic.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors import focus_table
from driftline.streams.detectors._hull import (
    Hull,
    dispersion,
    glr_mean,
    glr_scale,
    mean_may_exceed,
    reference_transform,
    scale_may_exceed,
    standardise,
)
from driftline.streams.detectors.base import (
    FIRING,
    RESOLVED,
    AdjustableRate,
    Detection,
    FlaggedDetector,
    check_state_params,
    finite_values,
)
from driftline.streams.params import choice_param, int_param

__all__ = ["FocusDetector", "FocusScaleDetector", "threshold"]

DIRECTIONS = ("both", "up", "down")
#: Values evaluated together by `update_many` (the candidate arrays are block x hull size; the
#: result does not depend on it, a larger block spreads numpy's per-call cost).
BLOCK = 1024
#: Blocks this long or longer are screened (`_Focus._watch`); shorter ones are evaluated whole.
SCREEN_FROM = 128
#: Window of the resolution check: WINDOW_FACTOR x the values that fired (after the estimated
#: change point), at least MIN_WINDOW and at most MAX_WINDOW values.
WINDOW_FACTOR, MIN_WINDOW, MAX_WINDOW = 4, 100, 2000
#: The detector resolves when the last window's log-likelihood ratio against the reference is
#: below this (for a mean: the window mean within one standard error of the reference mean).
RESOLVE_AT = 0.5
#: Smallest and largest ``false_alarms_per_million`` the calibration table covers.
MIN_RATE, MAX_RATE = focus_table.RATES[0], focus_table.RATES[-1]


def threshold(kind: str, direction: str, rate: float, n: np.ndarray) -> np.ndarray:
    """The calibrated threshold ``h(n)`` of `focus_table` for ``kind`` (``"mean"`` /
    ``"scale"``), ``direction`` and ``rate`` false alarms per 10^6 values: linear in
    ``log n`` between the table's points (constant beyond them) and in ``log rate``.

    Examples
    --------
    >>> h = threshold("mean", "both", 1.0, np.array([100, 10_000]))
    >>> bool(h[0] > threshold("mean", "both", 1000.0, np.array([100]))[0])
    True
    """
    rows = tuple(tuple(r) for r in focus_table.THRESHOLDS[f"{kind}:{direction}"])
    ln, col = _column(rows, tuple(focus_table.RATES), tuple(focus_table.N_GRID), rate)
    return np.interp(np.log(np.asarray(n, dtype=np.float64)), ln, col)


@functools.lru_cache(maxsize=256)
def _column(
    rows: tuple[tuple[float, ...], ...],
    rates: tuple[float, ...],
    grid: tuple[int, ...],
    rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``log grid`` and the thresholds at ``rate`` there (cached)."""
    table = np.asarray(rows, dtype=np.float64)
    lr = np.log(np.asarray(rates, dtype=np.float64))
    col = np.array([np.interp(math.log(rate), lr, table[:, j]) for j in range(table.shape[1])])
    return np.log(np.asarray(grid, dtype=np.float64)), col


class _Focus(AdjustableRate, FlaggedDetector):
    """What ``focus`` and ``focus_scale`` share (see the module docstring)."""

    _kind: ClassVar[str]
    _words: ClassVar[tuple[str, str]]  # what "up" / "down" mean, for Detection.detail
    rate_range: ClassVar[tuple[float, float]] = (MIN_RATE, MAX_RATE)

    def __init__(
        self, direction: str = "both", false_alarms_per_million: float = 1.0, warmup: int = 50
    ) -> None:
        self.direction = choice_param("direction", direction, DIRECTIONS)
        self._init_rate(false_alarms_per_million)  # in force: set_level (Bonferroni, ...)
        self.warmup = int_param("warmup", warmup, 10, 100_000)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._warm: list[float] = []
        self._ref: tuple[float, float, float] | None = None  # centre, scale, floor
        self._statistic = math.nan
        self._n_seen = 0
        self._n_alarms = 0
        self._restart()

    def _restart(self) -> None:
        """Forget the history (not the transform): the next values form a new reference."""
        self._n, self._c, self._q = 0, 0.0, 0.0
        self._hulls = {d: Hull(lower=d == "up") for d in ("up", "down") if self._watches(d)}
        self._firing = False
        # tau, C_tau, variance (mean) or dispersion (scale), window, n at the firing
        self._split: tuple[int, float, float, int, int] = (0, 0.0, 0.0, 0, 0)
        self._ring: list[float] = []  # while firing: the sums C of the last window + 1 values

    def _watches(self, d: str) -> bool:
        return self.direction in ("both", d)

    @property
    def n_alarms(self) -> int:
        """Firings so far."""
        return self._n_alarms

    @property
    def reference(self) -> tuple[float, float] | None:
        """``(centre, scale)`` of the standardisation (None during the first warm-up)."""
        return None if self._ref is None else self._ref[:2]

    # ------------------------------------------------------------------ the statistic
    def _y(self, xs: np.ndarray) -> np.ndarray:
        assert self._ref is not None
        centre, scale, floor = self._ref
        z = standardise(xs, centre, scale)
        return z if self._kind == "mean" else np.maximum(z * z, floor)

    def _glr(self, n: Any, cn: Any, qn: Any, tau: Any, ctau: Any) -> Any:
        if self._kind == "mean":
            return glr_mean(n, cn, qn, tau, ctau)
        return glr_scale(n, cn, tau, ctau)

    def _watch(self, ys: np.ndarray) -> tuple[int, float, int, float, str] | None:
        """Feed ``ys`` (at most `BLOCK`); stop at the first alarm: ``(index, statistic, tau,
        C_tau, direction)``; None if none.

        The statistic is evaluated only for the values whose candidates may exceed the
        threshold (`_hull.mean_may_exceed` / `_hull.scale_may_exceed`: False only where it
        cannot) and the last value: the others cannot alarm and their statistic is not kept.
        """
        b = ys.size
        n0 = self._n
        cs = np.cumsum(np.concatenate([[self._c], ys]))[1:]
        qs = np.cumsum(np.concatenate([[self._q], ys * ys]))[1:]
        ns = np.arange(n0 + 1, n0 + b + 1, dtype=np.float64)
        testable = ns > self.warmup
        h = threshold(self._kind, self.direction, self._rate, ns)
        disp = dispersion(ns, cs, qs) if self._kind == "scale" else None
        cands = {d: hull.push(n0, cs) for d, hull in self._hulls.items()}
        if b < SCREEN_FROM:
            rows = np.arange(b)
        else:
            maybe = np.zeros(b, dtype=bool)
            for cand in cands.values():
                if cand[0].shape[0]:
                    maybe |= self._may_exceed(ns, cs, qs, cand, h, disp)
            maybe &= testable
            maybe[-1] = True
            rows = np.flatnonzero(maybe)
        n, cn, qn = ns[rows], cs[rows], qs[rows]
        cols = np.arange(rows.size)
        arg: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for d, (tau, ctau, ok) in cands.items():
            if tau.shape[0] == 0:
                arg[d] = (np.zeros(rows.size), np.zeros(rows.size), np.zeros(rows.size))
                continue
            tau, ctau = tau[:, rows], ctau[:, rows]
            stat = np.where(ok[:, rows], self._glr(n, cn, qn, tau, ctau), -np.inf)
            j = np.argmax(stat, axis=0)
            s = np.maximum(stat[j, cols], 0.0)
            if disp is not None:
                s = s / disp[rows]
            arg[d] = (s, tau[j, cols], ctau[j, cols])
        dirs = list(arg)
        stats = np.stack([arg[d][0] for d in dirs])
        which = np.argmax(stats, axis=0)
        best = stats[which, cols]
        hits = np.flatnonzero(testable[rows] & (best > h[rows]))
        i = rows.size - 1 if hits.size == 0 else int(hits[0])
        last = int(rows[i])
        self._n, self._c, self._q = n0 + last + 1, float(cs[last]), float(qs[last])
        if testable[last]:
            self._statistic = float(best[i])
        if hits.size == 0:
            return None
        d = dirs[int(which[i])]
        _, taus, ctaus = arg[d]
        return last, float(best[i]), int(taus[i]), float(ctaus[i]), d

    def _may_exceed(
        self,
        ns: np.ndarray,
        cs: np.ndarray,
        qs: np.ndarray,
        cand: tuple[np.ndarray, ...],
        h: np.ndarray,
        disp: np.ndarray | None,
    ) -> np.ndarray:
        if disp is None:
            return mean_may_exceed(ns, cs, qs, cand, h)
        return scale_may_exceed(ns, cs, cand, h * disp)

    def _fire(self, stat: float, tau: int, ctau: float) -> None:
        n, cn, qn = self._n, self._c, self._q
        if self._kind == "mean":
            ss = qn - cn * cn / n
            d = (ctau - tau * (cn / n)) ** 2 * (n / (tau * (n - tau)))
            var = max((ss - d) / max(n - 2, 1), 1e-6)
        else:
            var = float(dispersion(n, cn, qn))  # the scale's LLR is divided by it
        w = min(max(WINDOW_FACTOR * (n - tau), MIN_WINDOW), MAX_WINDOW)
        self._split = (tau, ctau, var, w, n)
        self._ring = [cn]
        self._firing = True
        self._statistic = math.nan
        self._n_alarms += 1
        for hull in self._hulls.values():
            hull.reset()

    def _back(self, ys: np.ndarray) -> int | None:
        """Feed ``ys`` while firing; stop at the resolution (its index), None if none."""
        tau, ctau, var, w, n_fire = self._split
        b = ys.size
        n0 = self._n
        cs = np.cumsum(np.concatenate([[self._c], ys]))[1:]
        qs = np.cumsum(np.concatenate([[self._q], ys * ys]))[1:]
        ring = len(self._ring)
        cat = np.concatenate([np.asarray(self._ring), cs])
        ts = np.arange(n0 + 1, n0 + b + 1)
        ready = ts - n_fire >= w
        at = np.arange(ring, ring + b)
        start = cat[np.maximum(at - w, 0)]
        mean = (cs - start) / w
        mu0 = ctau / tau
        if self._kind == "mean":
            llr = 0.5 * w * (mean - mu0) ** 2 / var
        else:
            r = mean / mu0
            llr = 0.5 * w * (r - 1.0 - np.log(r)) / var
        hits = np.flatnonzero(ready & (llr < RESOLVE_AT))
        last = b - 1 if hits.size == 0 else int(hits[0])
        self._n = n0 + last + 1
        self._c, self._q = float(cs[last]), float(qs[last])
        self._ring = cat[max(ring + last + 1 - (w + 1), 0) : ring + last + 1].tolist()
        if ready[last]:
            self._statistic = float(llr[last])
        return None if hits.size == 0 else last

    # ------------------------------------------------------------------ updates
    def update_many(self, xs: np.ndarray) -> list[Detection]:
        """Consume a batch in order; return the firings and resolutions it caused."""
        vals, pos = finite_values(xs)
        out: list[Detection] = []
        if vals.size == 0:
            return out
        self._n_seen += vals.size
        offset = 0  # position in vals of ys[0]
        if self._ref is None:
            need = self.warmup - len(self._warm)
            self._warm.extend(vals[:need].tolist())
            if len(self._warm) < self.warmup:
                return out
            centre, scale, floor = reference_transform(np.asarray(self._warm))
            self._ref = (float(centre), float(scale), float(floor))
            warm, self._warm = np.asarray(self._warm), []
            ys = np.concatenate([self._y(warm), self._y(vals[need:])])
            offset = -self.warmup + need
        else:
            ys = self._y(vals)
        i = 0
        while i < ys.size:
            if self._firing:
                k = self._back(ys[i:])
                if k is None:
                    break
                out.append(self._detection(i + k + offset, pos, RESOLVE_AT, RESOLVED, ""))
                self._restart()
                i += k + 1
                continue
            k_alarm = self._watch(ys[i : i + BLOCK])
            if k_alarm is None:
                i += BLOCK
                continue
            k, stat, tau, ctau, d = k_alarm
            h = float(threshold(self._kind, self.direction, self._rate,
                                np.array([self._n]))[0])  # fmt: skip
            self._fire(stat, tau, ctau)
            word = self._words[0] if d == "up" else self._words[1]
            out.append(self._detection(i + k + offset, pos, h, FIRING, word, stat))
            i += k + 1
        return out

    def _detection(
        self, k: int, pos: np.ndarray, thr: float, status: str, detail: str, stat: float = 0.0
    ) -> Detection:
        tau = self._split[0]
        value = stat if status == FIRING else self._statistic
        index = int(pos[max(k, 0)])  # an alarm inside the warm-up values: at the last of them
        return Detection(index, value, None, thr, tau, self._n - tau, status, detail)

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON): the warm-up values or the transform, the sums, the hulls,
        the firing state and the sums of its resolution window."""
        return {
            "detector": self.name,
            "params": self._params(),
            "warm": list(self._warm),
            "ref": None if self._ref is None else list(self._ref),
            "n": self._n,
            "c": self._c,
            "q": self._q,
            "hulls": {d: h.state() for d, h in self._hulls.items()},
            "firing": self._firing,
            "split": list(self._split),
            "ring": list(self._ring),
            "statistic": None if math.isnan(self._statistic) else self._statistic,
            "n_seen": self._n_seen,
            "n_alarms": self._n_alarms,
            "rate": self._rate,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` taken by a detector with the same hyperparameters.

        Raises
        ------
        DriftlineError
            If ``state`` is not a snapshot of this detector or is malformed.
        """
        check_state_params(self.name, state, self._params())
        try:
            warm = [float(v) for v in state["warm"]]
            ref = state["ref"]
            ref_t = None if ref is None else (float(ref[0]), float(ref[1]), float(ref[2]))
            n, c, q = state["n"], float(state["c"]), float(state["q"])
            firing, n_seen, n_alarms = state["firing"], state["n_seen"], state["n_alarms"]
            if type(firing) is not bool or any(type(v) is not int for v in (n, n_seen, n_alarms)):
                raise TypeError("firing must be a boolean, n/n_seen/n_alarms integers")
            tau, ctau, var, w, n_fire = state["split"]
            split = (int(tau), float(ctau), float(var), int(w), int(n_fire))
            ring = [float(v) for v in state["ring"]]
            stat = state["statistic"]
            statistic = math.nan if stat is None else float(stat)
            rate = self._saved_rate(state)
            hulls = {d: Hull(lower=d == "up") for d in ("up", "down") if self._watches(d)}
            if set(state["hulls"]) != set(hulls):
                raise ValueError(f"hulls {sorted(state['hulls'])} for direction {self.direction}")
            for d, h in hulls.items():
                h.load(state["hulls"][d])
        except (KeyError, TypeError, ValueError, SpecError) as exc:
            raise DriftlineError(f"state: not a {self.name} detector snapshot ({exc})") from exc
        self._rate = rate
        self._warm, self._ref, self._n, self._c, self._q = warm, ref_t, n, c, q
        self._hulls, self._firing, self._split, self._ring = hulls, firing, split, ring
        self._statistic, self._n_seen, self._n_alarms = statistic, n_seen, n_alarms


class FocusDetector(_Focus):
    """Change of the mean, any size, at a calibrated false-alarm rate (FOCuS family).

    See `streams.detectors.focus` for the method. Values are robustly standardised with the
    first ``warmup`` values, and the likelihood ratio of a mean change is maximised over every
    change point and size at O(log n) per value; the threshold comes from a simulated table so
    stationary streams raise ``false_alarms_per_million`` alarms per 10^6 values.

    Parameters
    ----------
    direction
        ``"both"`` (default), ``"up"`` (increases of the mean only) or ``"down"``.
    false_alarms_per_million
        False alarms per 10^6 values of a stationary stream, from 0.001 to 10,000 (default 1;
        below 0.1 along the simulated tail, see `focus_table`).
    warmup
        Values that fix the standardisation and form the first reference before the first
        test (integer from 10 to 100,000, default 50); also the values after a resolution
        before the detector tests again.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> det = FocusDetector()
    >>> det.update_many(rng.normal(10.0, 2.0, 5_000))
    []
    >>> (d,) = det.update_many(rng.normal(11.0, 2.0, 1_000))  # +0.5 standard deviations
    >>> d.status, d.index, d.detail, d.n_current, det.in_drift
    ('firing', 77, 'mean increased', 80, True)
    >>> [(d.status, d.index) for d in det.update_many(rng.normal(10.0, 2.0, 1_000))]
    [('resolved', 269)]
    """

    name: ClassVar[str] = "focus"
    _kind: ClassVar[str] = "mean"
    _words = ("mean increased", "mean decreased")


class FocusScaleDetector(_Focus):
    """Change of the spread (standard deviation), any size, at a calibrated false-alarm rate.

    See `streams.detectors.focus` for the method: the same as `FocusDetector` on the squared
    standardised values with the likelihood of a normal's variance. A change of the mean also
    increases the squared deviations from the reference centre: pair it with ``focus`` to tell
    them apart.

    Parameters
    ----------
    direction
        ``"both"`` (default), ``"up"`` (larger spread only) or ``"down"`` (smaller only).
    false_alarms_per_million, warmup
        As for `FocusDetector` (default 1 per 10^6 values; 50 values).

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> det = FocusScaleDetector()
    >>> det.update_many(rng.normal(10.0, 2.0, 5_000))
    []
    >>> (d,) = det.update_many(rng.normal(10.0, 4.0, 1_000))  # twice the spread
    >>> d.status, d.index, d.detail, det.in_drift
    ('firing', 79, 'spread increased', True)
    """

    name: ClassVar[str] = "focus_scale"
    _kind: ClassVar[str] = "scale"
    _words = ("spread increased", "spread decreased")
