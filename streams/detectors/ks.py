"""Exact two-sample Kolmogorov-Smirnov drift test, cheap enough to evaluate after every event.

At every evaluation the statistic and the p-value are those of
``scipy.stats.ks_2samp(reference, current)`` (two-sided, ``method="auto"``): D is computed
exactly as an integer ``max|n2 F_ref - n1 F_cur|`` over a sorted grid and the p-value comes from
scipy's own exact / asymptotic routines (`streams.detectors._ksexact`), memoised per
``(n1, n2, D)``. Instead of re-sorting both samples per evaluation (``ks_2samp``: ``O(n log n)``
plus Python overhead, ~2k evaluations/s), the reference is sorted once and a chunk of events is
swept at a time: every event is a pair of steps on the grid, and D for all events of a chunk
comes from one small vectorised matrix (``O(sqrt(n))`` per event).

Reference modes
---------------
``"fixed"``
    The reference is ``reference`` (e.g. training data, or `streams.profile.Profile.sample`), or
    else the first ``reference_size`` values of the stream. Current = the last ``window_size``
    values (they never overlap the reference).
``"sliding"``
    Reference = the ``reference_size`` values just before the current window; both slide.
``"previous_window"``
    Two adjacent event-time windows of ``window_ms`` each ("today" against "yesterday") that
    slide by a sub-window of ``window_ms / sub_windows``: whenever a sub-window completes, the
    last ``window_ms`` of events is tested against the ``window_ms`` before it
    (`streams.detectors.ks_subwindows`), so a change is seen wherever it falls inside a window.
    Needs ``ts_ms`` in `KSWindowDetector.update_many`. Events of an older sub-window than the
    current one are skipped (``n_late``). Cost: one sort per sub-window and one merge of the
    two samples per evaluation, ``O(sub_windows log n)`` per event (measured: see
    ``bench/detection_bench.py --previous-window``).

Episodes: an evaluation fires when ``p < alpha`` and counts as quiet (towards the ``n_clear``
that resolve) only when ``p >= clear_alpha`` (default 0.01): while the current window still
differs from the reference, one sustained drift stays one open episode.

Defaults and false alarms
-------------------------
Defaults: ``window_size=500``, ``reference_size=500``, ``stride=1`` (test after every event),
``min_samples=50`` (first test 50 values after the reference: the exact p-value keeps each
test at ``alpha`` however small the window), ``alpha=1e-6``, ``clear_alpha=0.01``,
``n_confirm=1``, ``n_clear=ceil(window_size / stride)`` = 500 (resolve after a window's worth of
quiet evaluations), ``cooldown=0``. Measured on seeded stationary N(0, 1)
streams (each stream with its own head-of-stream reference; ``bench/detectors_bench.py``), alarms
per 10^6 events:

============  ==========  ==========  ==========  ============================
mode          alpha=1e-4  alpha=1e-5  alpha=1e-6  events
============  ==========  ==========  ==========  ============================
``fixed``     0.3         0           0           10^7 (10 streams of 10^6)
``sliding``   3.2         0.8         0           5 x 10^6 (5 streams of 10^6)
============  ==========  ==========  ==========  ============================

and at the defaults the benchmark again saw 0 alarms in 5 x 10^6 further events per mode. So the
default rate is below 1 per 10^6 events per feature (0 observed in 1.5 x 10^7 ``fixed`` events:
< 0.2 per 10^6 at 95% confidence). Median delay for a 0.5-sigma mean shift: ~370 events
(``fixed``), ~340 (``sliding``); 20 seeds, none missed, no alarm before the shift. The spec's
older defaults (``alpha=1e-3``, ``stride=50``) alarm far more often on long stationary streams.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors._ksexact import (
    asymptotic_pvalues,
    critical_h,
    ks_pvalue,
    ks_pvalues,
    sweep_growing,
    sweep_steps,
)
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.detectors.base import (
    AdjustableLevel,
    AlarmedDetector,
    Detection,
    check_state_params,
    detector_noun,
    finite_values,
    min_samples_param,
)
from driftline.streams.detectors.ks_subwindows import SubWindows, ks_numerator
from driftline.streams.params import (
    MAX_DURATION_MS,
    MAX_VALUES,
    choice_param,
    int_param,
    probability_param,
    show,
)
from driftline.streams.snapshots import reading_snapshot

__all__ = ["KSWindowDetector"]

ReferenceMode = Literal["fixed", "sliding", "previous_window"]
_MODES: tuple[ReferenceMode, ...] = ("fixed", "sliding", "previous_window")
#: Strides from which fixed-mode evaluations are computed one by one instead of by a sweep.
_DIRECT_STRIDE = 32
#: Exact p-values are computed when Kolmogorov's limit p is below ``alpha * _SCREEN`` (growing
#: samples only; fixed sizes use the exact critical D). Measured worst ratio limit/exact for
#: n >= 20 at p < 1e-3 is about 3; 1e4 leaves a wide margin.
_SCREEN = 1e4
_SCREEN_MIN_N = 20
_GRID_CELLS = 1 << 18
#: Default current-sample size of the first test (``min_samples``) in modes "fixed"/"sliding".
_WARMUP = 50  # max matrix cells per chunk for growing samples


def _slots(u: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Grid slot of each x w.r.t. sorted unique reference values ``u`` (``2k + 1`` slots)."""
    j = np.searchsorted(u, x, side="left")
    eq = u[np.minimum(j, u.size - 1)] == x
    return 2 * j + eq


class KSWindowDetector(AdjustableLevel, AlarmedDetector):
    """Exact KS test of a reference sample against a current window, after every event.

    The current window is the last ``window_size`` values (modes ``"fixed"``, ``"sliding"``) or
    the last ``window_ms`` of event time (``"previous_window"``, tested at every sub-window
    boundary against the ``window_ms`` before it). It is tested once it holds
    ``min_samples`` values and then every ``stride`` values; each evaluation is "beyond" when
    ``p < alpha``. The detector fires after ``n_confirm`` consecutive beyond evaluations,
    resolves after ``n_clear`` consecutive ones with ``p >= clear_alpha``, and does not fire again
    within ``cooldown`` values of a resolution. `update_many` returns a `Detection` per change.
    ``statistic`` is the KS D of the last evaluation as ``ks_2samp`` reports it; ``n_seen``
    counts the finite values consumed (late ones excluded), reference included.

    Parameters
    ----------
    reference_size
        Size of the reference (integer >= 1, default 500): head of the stream (``"fixed"``
        without ``reference``) or the values just before the current window (``"sliding"``).
        Ignored otherwise (with ``reference`` it is the reference's length).
    window_size
        Size of the sliding current window (integer >= 1, default 500); unused by
        ``"previous_window"``.
    alpha
        Significance level per evaluation, strictly between 0 and 1 (default 1e-6).
        `set_alpha` changes it between updates (e.g. to a Benjamini-Hochberg level,
        `streams.fdr.bh_levels`).
    stride
        Evaluate every ``stride`` values once ``min_samples`` are there (integer >= 1,
        default 1: after every value).
    reference
        Fixed reference sample (1-D, finite, non-empty) for ``"fixed"``, e.g. training data
        or `streams.profile.Profile.sample`; default None (the head of the stream).
    reference_mode
        ``"fixed"`` (default), ``"sliding"`` or ``"previous_window"`` (see the module
        docstring).
    window_ms
        Tumbling window length in milliseconds (integer >= 1), required by
        ``"previous_window"`` and refused by the other modes.
    min_samples
        Current-sample size of the first evaluation: ``1 <= min_samples <= window_size``
        (default ``min(50, window_size)``). ``"sliding"`` always waits for both windows to be
        full. ``"previous_window"``: the least size of either sample for a test (integer >= 1,
        default 100).
    n_confirm
        Consecutive beyond evaluations needed to fire (integer >= 1, default 1).
    n_clear
        Consecutive quiet evaluations needed to resolve (integer >= 1, default
        ``ceil(window_size / stride)``: a window's worth of quiet values).
    cooldown
        Values after a resolution before the detector may fire again (integer >= 0,
        default 0).
    clear_alpha
        An evaluation counts towards resolving only when ``p >= max(clear_alpha, alpha)``
        (strictly between 0 and 1; default 0.01): the current data no longer differ from the
        reference.
    sub_windows
        ``"previous_window"`` only (refused otherwise): sub-windows per window, the test runs
        every ``window_ms / sub_windows`` of event time (integer in [1, 10000], default 10).

    Raises
    ------
    SpecError
        If a hyperparameter is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> det = KSWindowDetector(reference_size=200, window_size=200, alpha=0.001, stride=20,
    ...                        n_clear=1)
    >>> det.update_many(rng.normal(0.0, 1.0, 1_000))
    []
    >>> changes = det.update_many(rng.normal(2.0, 1.0, 300))
    >>> [(c.status, c.index, c.p_value < 0.001) for c in changes]
    [('firing', 49, True)]
    >>> det.in_drift, det.drift_detected, det.n_seen, det.n_evaluations
    (True, False, 1300, 53)

    Yesterday against today, tested every 100 ms of event time; the change falls in the middle
    of a window:

    >>> det = KSWindowDetector(reference_mode="previous_window", window_ms=1_000, alpha=1e-4)
    >>> ts = np.arange(4_000) * 2  # 500 events per second
    >>> xs = np.concatenate([rng.normal(0, 1, 3_250), rng.normal(1, 1, 750)])
    >>> [(c.status, c.index, c.n_reference, c.n_current) for c in det.update_many(xs, ts_ms=ts)]
    [('firing', 3500, 500, 500)]
    """

    name: ClassVar[str] = "ks"

    def __init__(
        self,
        reference_size: int = 500,
        window_size: int = 500,
        alpha: float = 1e-6,
        stride: int = 1,
        *,
        reference: np.ndarray | None = None,
        reference_mode: ReferenceMode = "fixed",
        window_ms: int | None = None,
        min_samples: int | None = None,
        n_confirm: int = 1,
        n_clear: int | None = None,
        cooldown: int = 0,
        clear_alpha: float = 0.01,
        sub_windows: int | None = None,
    ) -> None:
        self.reference_mode: ReferenceMode = choice_param("reference_mode", reference_mode, _MODES)
        self.window_size = int_param("window_size", window_size, 1, MAX_VALUES)
        self.stride = int_param("stride", stride, 1, MAX_VALUES)
        self._init_alpha(alpha)
        self.clear_alpha = probability_param("clear_alpha", clear_alpha)
        if n_clear is None:  # quiet for a window's worth of values
            n_clear = max(1, -(-self.window_size // self.stride))
        self._alarm = Alarm(n_confirm, n_clear, cooldown)
        if reference_mode == "previous_window":
            if window_ms is None:
                raise SpecError(
                    "window_ms: got None; reference_mode='previous_window' needs the tumbling "
                    "window length, an integer number of milliseconds >= 1"
                )
            self.window_ms: int | None = int_param(
                "window_ms", window_ms, 1, MAX_DURATION_MS, unit="milliseconds"
            )
            self.min_samples = int_param(
                "min_samples", 100 if min_samples is None else min_samples, 1
            )
            self.sub_windows: int | None = int_param(
                "sub_windows", 10 if sub_windows is None else sub_windows, 1, 10_000
            )
        else:
            for key, given in (("window_ms", window_ms), ("sub_windows", sub_windows)):
                if given is not None:
                    raise SpecError(
                        f"{key}: got {show(given)}; only reference_mode='previous_window' "
                        "uses it: leave it out, or set that mode"
                    )
            self.window_ms = None
            self.sub_windows = None
            if min_samples is None:  # a short warm-up; exact p-values keep alpha per test
                min_samples = min(_WARMUP, self.window_size)
            self.min_samples = min_samples_param(min_samples, self.window_size)
        if reference is not None:
            if reference_mode != "fixed":
                raise SpecError(
                    f"reference: given with reference_mode={reference_mode!r}; a fixed reference "
                    "sample needs reference_mode='fixed'"
                )
            ref = np.asarray(reference, dtype=np.float64)
            if ref.ndim != 1 or ref.size == 0 or not np.isfinite(ref).all():
                raise SpecError(
                    f"reference: got an array of shape {ref.shape} "
                    f"({int((~np.isfinite(ref)).sum())} non-finite); "
                    "expected a non-empty 1-D array of finite numbers"
                )
            self.reference_size = int(ref.size)
            self._given_reference = True
        else:
            self.reference_size = int_param("reference_size", reference_size, 1, MAX_VALUES)
            self._given_reference = False
            ref = np.empty(0, dtype=np.float64)
        self._reset_state(ref)

    # ------------------------------------------------------------------ internal state
    def _reset_state(self, ref: np.ndarray) -> None:
        self._n_seen = 0
        self._n_eval = 0
        self._n_late = 0
        self._statistic = math.nan
        self._last: tuple[int, int, int] | None = None  # (n1, n2, h) of the last evaluation
        self._trace: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._alarm.firing, self._alarm.run, self._alarm.resolved_at = False, 0, None
        # "fixed" / "previous_window": reference grid and current sample
        self._ref_head = np.empty(0, dtype=np.float64)  # head-of-stream reference being filled
        self._u: np.ndarray | None = None
        self._R: np.ndarray | None = None
        self._n1 = 0
        self._ref_sorted = np.empty(0, dtype=np.float64)
        if self.reference_mode == "fixed" and ref.size:
            self._set_reference(ref)
        # current values (oldest first) and their slots; sliding modes keep <= window (+ ref)
        self._cur = np.empty(0, dtype=np.float64)
        self._cur_slots = np.empty(0, dtype=np.int64)
        self._diff: np.ndarray | None = None  # fixed mode, full window: n2 R - n1 P per slot
        self._n_cur_total = 0  # fixed mode: values consumed after the reference was complete
        self._sub = SubWindows(self.window_ms or 1, self.sub_windows or 1)

    def _set_reference(self, ref: np.ndarray) -> None:
        s = np.sort(ref)
        u, cnt = np.unique(s, return_counts=True)
        c = np.cumsum(cnt).astype(np.float64)
        R = np.zeros(2 * u.size + 1, dtype=np.float64)
        R[1::2] = c
        R[2::2] = c
        self._ref_sorted, self._u, self._R, self._n1 = s, u, R, int(s.size)
        self._diff = None

    # ------------------------------------------------------------------ state
    @property
    def p_value(self) -> float | None:
        """p-value of the last evaluation (None before the first), as ``ks_2samp`` reports it."""
        if self._last is None:
            return None
        return ks_pvalue(*self._last)

    @property
    def n_late(self) -> int:
        """Values skipped because their event-time window was already closed."""
        return self._n_late

    @property
    def reference(self) -> np.ndarray:
        """Copy of the current reference sample (sorted once complete; "sliding": in order)."""
        if self.reference_mode == "sliding":
            n = max(0, self._cur.size - self.window_size)
            return self._cur[:n].copy()
        if self.reference_mode == "previous_window":
            return self._sub.latest()[0].copy()
        if self._u is None:
            return self._ref_head.copy()
        return self._ref_sorted.copy()

    @property
    def current_window(self) -> np.ndarray:
        """Copy of the current sample, oldest first."""
        if self.reference_mode == "sliding":
            n = max(0, self._cur.size - self.window_size)
            return self._cur[n:].copy()
        if self.reference_mode == "previous_window":
            return self._sub.latest()[1].copy()
        return self._cur.copy()

    @property
    def last_evaluations(self) -> dict[str, np.ndarray]:
        """Every evaluation of the last `update_many` call.

        ``index`` (batch positions), ``statistic``, ``p_value`` (computed on access, memoised),
        ``n_reference``, ``n_current``.
        """
        if self._trace is None:
            e = np.empty(0)
            return {
                "index": e.astype(np.int64),
                "statistic": e,
                "p_value": e,
                "n_reference": e.astype(np.int64),
                "n_current": e.astype(np.int64),
            }
        idx, n1, n2, h = self._trace
        lcm = n1 // np.gcd(n1, n2) * n2
        p = ks_pvalues(n1, n2, h)
        return {
            "index": idx,
            "statistic": h / lcm,
            "p_value": p,
            "n_reference": n1,
            "n_current": n2,
        }

    # ------------------------------------------------------------------ update
    def update_many(self, xs: np.ndarray, ts_ms: np.ndarray | None = None) -> list[Detection]:
        """Consume a batch; return the firing/resolved changes with their batch positions.

        Parameters
        ----------
        xs
            1-D array of values; non-finite ones are skipped.
        ts_ms
            Event times (epoch ms), same length as ``xs``; required by ``"previous_window"``,
            ignored otherwise.

        Returns
        -------
        list of Detection
            In order; empty when the state did not change.
        """
        vals, pos = finite_values(xs)
        self._trace = None
        if self.reference_mode == "previous_window":
            if ts_ms is None:
                raise DriftlineError(
                    "ts_ms: got None; reference_mode='previous_window' needs event times"
                )
            ts = np.asarray(ts_ms, dtype=np.int64).reshape(-1)
            if ts.size != np.asarray(xs).reshape(-1).size:
                raise DriftlineError(
                    f"ts_ms: got {ts.size} times for {np.asarray(xs).size} values; expected one "
                    "per value"
                )
            return self._update_previous_window(vals, pos, ts[pos])
        if vals.size == 0:
            return []
        if self.reference_mode == "fixed":
            return self._update_fixed(vals, pos)
        return self._update_sliding(vals, pos)

    def update(self, x: float, ts_ms: int | None = None) -> None:
        """Consume one value (skipped if not finite)."""
        self.update_many(
            np.array([x], dtype=np.float64),
            None if ts_ms is None else np.array([ts_ms], dtype=np.int64),
        )

    def _schedule(self, counts: np.ndarray) -> np.ndarray:
        """Positions (into ``counts``) where a current sample of that size is evaluated."""
        m, s = self.min_samples, self.stride
        return np.flatnonzero((counts >= m) & ((counts - m) % s == 0))

    # fixed ---------------------------------------------------------------------------------
    def _update_fixed(self, vals: np.ndarray, pos: np.ndarray) -> list[Detection]:
        self._n_seen += vals.size
        i = 0
        if self._u is None:
            i = min(self.reference_size - self._ref_head.size, vals.size)
            self._ref_head = np.concatenate([self._ref_head, vals[:i]])
            if self._ref_head.size < self.reference_size:
                return []
            self._set_reference(self._ref_head)
            self._ref_head = np.empty(0, dtype=np.float64)
        new, new_pos = vals[i:], pos[i:]
        if new.size == 0:
            return []
        seen0 = self._n_seen - new.size
        w = self.window_size
        slots = _slots(self._u, new)
        counts = self._n_cur_total + np.arange(1, new.size + 1)
        js = self._schedule(counts)
        self._n_cur_total += new.size
        nums = np.empty(js.size)
        # growing phase: the window is not full yet
        g = min(max(w - self._cur.size, 0), new.size)
        ng = int(np.searchsorted(js, g))  # evaluations in the growing phase
        if ng:
            grow = slots[: int(js[ng - 1]) + 1]
            if self.stride >= _DIRECT_STRIDE:
                # sparse evaluations: the counts at each one, not a sweep over every step
                nums[:ng] = self._growing_direct(grow, self._cur_slots, js[:ng])
            else:
                nums[:ng] = self._growing_nums(grow, self._cur_slots)[js[:ng]]
        if g:
            self._cur = np.concatenate([self._cur, new[:g]])
            self._cur_slots = np.concatenate([self._cur_slots, slots[:g]])
        if g < new.size:
            rest, rest_slots = new[g:], slots[g:]
            if ng < js.size:
                last = int(js[-1]) - g + 1  # only step as far as the last evaluation needs
                if self.stride >= _DIRECT_STRIDE:
                    # sparse evaluations: one sorted merge per evaluation beats a sweep
                    # over every step between them
                    nums[ng:] = self._direct_nums(rest[:last], js[ng:] - g)
                    self._diff = None
                else:
                    nums[ng:] = self._sliding_nums(rest_slots[:last])[js[ng:] - g]
                if last < rest.size:  # later events: no evaluation, just move the window
                    self._diff = None
                    self._cur_slots = np.concatenate([self._cur_slots, rest_slots[:last]])[-w:]
                    self._cur = np.concatenate([self._cur, rest[:last]])[-w:]
                    rest, rest_slots = rest[last:], rest_slots[last:]
                else:
                    self._cur_slots = np.concatenate([self._cur_slots, rest_slots])[-w:]
                    self._cur = np.concatenate([self._cur, rest])[-w:]
                    rest = rest[:0]
            if rest.size:
                self._diff = None
                self._cur_slots = np.concatenate([self._cur_slots, rest_slots])[-w:]
                self._cur = np.concatenate([self._cur, rest])[-w:]
        if js.size == 0:
            return []
        n1 = np.full(js.size, self._n1)
        n2 = np.minimum(counts[js], w)
        return self._decide(new_pos[js], seen0 + js + 1, n1, n2, nums)

    def _direct_nums(self, rest: np.ndarray, at: np.ndarray) -> np.ndarray:
        """``n1 n2 D`` of the full window after each of ``rest[: j + 1]``, for j in ``at``.

        Exact integers, as ``ks_2samp`` computes them: both empirical CDFs (right-continuous)
        at every point of both samples.
        """
        w, n1, ref = self.window_size, self._n1, self._ref_sorted
        buf = np.concatenate([self._cur, rest])
        base = self._cur.size  # == w: the window is full before ``rest``
        out = np.empty(at.size, dtype=np.float64)
        for t, j in enumerate(at.tolist()):
            cur = np.sort(buf[base + j + 1 - w : base + j + 1])
            pts = np.concatenate([ref, cur])
            c1 = np.searchsorted(ref, pts, side="right")
            c2 = np.searchsorted(cur, pts, side="right")
            out[t] = float(np.abs(w * c1 - n1 * c2).max())
        return out

    def _growing_nums(self, slots: np.ndarray, cur_slots: np.ndarray) -> np.ndarray:
        R = self._R
        k = R.size
        p0 = np.cumsum(np.bincount(cur_slots, minlength=k)).astype(np.float64)
        n2_0 = cur_slots.size
        out = np.empty(slots.size, dtype=np.float64)
        c = max(1, _GRID_CELLS // k)
        for a in range(0, slots.size, c):
            chunk = slots[a : a + c]
            out[a : a + chunk.size] = sweep_growing(R, self._n1, p0, n2_0, chunk)
            p0 = p0 + np.cumsum(np.bincount(chunk, minlength=k))
            n2_0 += chunk.size
        return out

    def _growing_direct(
        self, slots: np.ndarray, cur_slots: np.ndarray, at: np.ndarray
    ) -> np.ndarray:
        """`_growing_nums` at the positions ``at`` (increasing) only: the current sample's counts
        at each, one bincount per evaluation (exact integers, the same values as the sweep)."""
        R = self._R
        k = R.size
        n1 = float(self._n1)
        p = np.cumsum(np.bincount(cur_slots, minlength=k)).astype(np.float64)
        n2 = cur_slots.size
        out = np.empty(at.size, dtype=np.float64)
        prev = 0
        for t, j in enumerate(at.tolist()):
            chunk = slots[prev : j + 1]
            p += np.cumsum(np.bincount(chunk, minlength=k))
            n2 += chunk.size
            prev = j + 1
            out[t] = np.abs(n2 * R - n1 * p).max()
        return out

    def _full_diff(self) -> np.ndarray:
        if self._diff is None:
            k = self._R.size
            p = np.cumsum(np.bincount(self._cur_slots, minlength=k)).astype(np.float64)
            self._diff = self.window_size * self._R - self._n1 * p
        return self._diff

    def _sliding_nums(self, slots: np.ndarray) -> np.ndarray:
        """Window full: each new slot enters, the oldest leaves; max|diff| after each event."""
        w, n1 = self.window_size, float(self._n1)
        diff = self._full_diff()
        combined = np.concatenate([self._cur_slots[-w:], slots])
        out = np.empty(slots.size, dtype=np.float64)
        c = _chunk_size(diff.size)
        for a in range(0, slots.size, c):
            b = min(a + c, slots.size)
            t = np.arange(b - a)
            step_pos = np.concatenate([combined[w + a : w + b], combined[a:b]])
            step_t = np.concatenate([t, t])
            step_w = np.concatenate([np.full(t.size, -n1), np.full(t.size, n1)])
            out[a:b], diff = sweep_steps(diff, step_pos, step_t, step_w, b - a)
        self._diff = diff
        return out

    # sliding -------------------------------------------------------------------------------
    def _update_sliding(self, vals: np.ndarray, pos: np.ndarray) -> list[Detection]:
        span = self.reference_size + self.window_size
        seen0 = self._n_seen
        self._n_seen += vals.size
        stream = np.concatenate([self._cur, vals])
        counts = seen0 + np.arange(1, vals.size + 1)
        js = np.flatnonzero((counts >= span) & ((counts - span) % self.stride == 0))
        self._cur = stream[-span:].copy()
        if js.size == 0:
            return []
        starts = stream.size - vals.size + js + 1 - span  # window start in `stream` per evaluation
        e0, e1 = int(starts[0]), int(starts[-1])
        nums = self._sliding_ref_nums(stream[e0 : e1 + span])[starts - e0]
        r, w = self.reference_size, self.window_size
        return self._decide(pos[js], seen0 + js + 1, np.full(js.size, r), np.full(js.size, w), nums)

    def _sliding_ref_nums(self, stream: np.ndarray) -> np.ndarray:
        """max|diff| per window start e: reference = [e, e+r), current = [e+r, e+r+w)."""
        r, w = self.reference_size, self.window_size
        span = r + w
        n1, n2 = float(r), float(w)
        n_win = stream.size - span + 1
        out = np.empty(n_win)
        block = 4 * span  # windows sharing one sorted grid
        for b0 in range(0, n_win, block + 1):
            b1 = min(b0 + block, n_win - 1)  # windows b0..b1
            grid, idx = np.unique(stream[b0 : b1 + span], return_inverse=True)
            k = grid.size
            pr = np.cumsum(np.bincount(idx[:r], minlength=k)).astype(np.float64)
            pc = np.cumsum(np.bincount(idx[r:span], minlength=k)).astype(np.float64)
            diff = n2 * pr - n1 * pc
            out[b0] = np.abs(diff).max()
            c = _chunk_size(k)
            for e0 in range(0, b1 - b0, c):  # steps e0 .. e0+c-1 move window b0+e to b0+e+1
                t = np.arange(min(c, b1 - b0 - e0))
                e = e0 + t
                step_pos = np.concatenate([idx[span + e], idx[r + e], idx[e]])
                step_t = np.concatenate([t, t, t])
                step_w = np.concatenate(
                    [np.full(t.size, -n1), np.full(t.size, n1 + n2), np.full(t.size, -n2)]
                )
                d, diff = sweep_steps(diff, step_pos, step_t, step_w, t.size)
                out[b0 + e0 + 1 : b0 + e0 + 1 + t.size] = d
        return out

    # previous_window -----------------------------------------------------------------------
    def _update_previous_window(
        self, vals: np.ndarray, pos: np.ndarray, ts: np.ndarray
    ) -> list[Detection]:
        sw = self._sub
        sid = sw.ids(ts)
        start = -(2**62) if sw.open_id is None else sw.open_id
        newest = np.maximum.accumulate(np.concatenate([[start], sid]))[1:]
        late = sid < newest
        if late.any():
            self._n_late += int(late.sum())
            keep = ~late
            vals, pos, sid = vals[keep], pos[keep], sid[keep]
        seen0 = self._n_seen
        self._n_seen += vals.size
        if vals.size == 0:
            return []
        # runs of one sub-window each (ids are non-decreasing now)
        cuts = np.flatnonzero(sid[1:] != sid[:-1]) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [vals.size]])
        ev_idx, ev_seen, ev_n1, ev_n2, ev_num = [], [], [], [], []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            s = int(sid[a])
            if sw.open_id != s:
                samples = sw.close(s)
                if samples is not None:
                    ref, cur = samples
                    m = self.min_samples
                    if ref.size >= m and cur.size >= m:
                        # the boundary is crossed by the value at ``a``
                        ev_idx.append(int(pos[a]))
                        ev_seen.append(seen0 + a + 1)
                        ev_n1.append(ref.size)
                        ev_n2.append(cur.size)
                        ev_num.append(ks_numerator(ref, cur))
            sw.add(vals[a:b])
        if not ev_idx:
            return []
        return self._decide(
            np.asarray(ev_idx),
            np.asarray(ev_seen),
            np.asarray(ev_n1),
            np.asarray(ev_n2),
            np.asarray(ev_num, dtype=np.float64),
        )

    # decisions -----------------------------------------------------------------------------
    def _decide(
        self,
        idx: np.ndarray,
        seen: np.ndarray,
        n1: np.ndarray,
        n2: np.ndarray,
        nums: np.ndarray,
    ) -> list[Detection]:
        if idx.size == 0:
            return []
        n1 = n1.astype(np.int64)
        n2 = n2.astype(np.int64)
        g = np.gcd(n1, n2)
        h = np.rint(nums / g).astype(np.int64)
        lcm = n1 // g * n2
        beyond = self._beyond(n1, n2, h, lcm, self._alpha)
        quiet = None
        if self._alarm.firing or beyond.any():  # resolving needs p >= clear_alpha
            quiet = ~self._beyond(n1, n2, h, lcm, max(self.clear_alpha, self._alpha))
        self._n_eval += idx.size
        if self._trace is None:
            self._trace = (idx.astype(np.int64), n1, n2, h)
        else:  # "previous_window": one call per event-time window of the batch
            i0, a0, b0, h0 = self._trace
            self._trace = (
                np.concatenate([i0, idx.astype(np.int64)]),
                np.concatenate([a0, n1]),
                np.concatenate([b0, n2]),
                np.concatenate([h0, h]),
            )
        last = idx.size - 1
        self._last = (int(n1[last]), int(n2[last]), int(h[last]))
        self._statistic = float(h[last] / lcm[last])
        out = []
        for k, status in self._alarm.feed(beyond, seen, quiet):
            a, b, c = int(n1[k]), int(n2[k]), int(h[k])
            out.append(
                Detection(
                    index=int(idx[k]),
                    statistic=float(c / lcm[k]),
                    p_value=ks_pvalue(a, b, c),
                    threshold=self._alpha,
                    n_reference=a,
                    n_current=b,
                    status=status,
                )
            )
        return out

    def _beyond(
        self, n1: np.ndarray, n2: np.ndarray, h: np.ndarray, lcm: np.ndarray, alpha: float
    ) -> np.ndarray:
        # fixed sizes: the exact critical D, memoised per (n1, n2, alpha); the event-time windows
        # of "previous_window" change size at every test, so they are screened instead
        if (
            self.reference_mode != "previous_window"
            and n1[0] == n1[-1]
            and n2[0] == n2[-1]
            and (n1 == n1[0]).all()
            and (n2 == n2[0]).all()
        ):
            return h >= critical_h(int(n1[0]), int(n2[0]), alpha)
        beyond = np.zeros(h.size, dtype=bool)
        small = np.minimum(n1, n2) < _SCREEN_MIN_N
        screen = asymptotic_pvalues(h / lcm, n1, n2) < min(1.0, alpha * _SCREEN)
        ks = np.flatnonzero(small | screen)  # exact p-values: one batched sweep
        beyond[ks] = ks_pvalues(n1[ks], n2[ks], h[ks]) < alpha
        return beyond

    # ------------------------------------------------------------------ snapshot
    def _params(self) -> dict[str, Any]:
        return {
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "alpha": self._base_alpha,
            "stride": self.stride,
            "reference_mode": self.reference_mode,
            "window_ms": self.window_ms,
            "min_samples": self.min_samples,
            **self._alarm.params(),
            "clear_alpha": self.clear_alpha,
            "sub_windows": self.sub_windows,
        }

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON-able); `restore` continues exactly."""
        if self._u is None:
            ref = self._ref_head
        else:
            ref = self._ref_sorted
        return {
            "detector": self.name,
            "params": self._params(),
            "reference": ref.tolist(),
            "reference_complete": self._u is not None,
            "window": self._cur.tolist(),
            "n_current_total": self._n_cur_total,
            "sub_windows_state": self._sub.snapshot(),
            "n_seen": self._n_seen,
            "n_evaluations": self._n_eval,
            "n_late": self._n_late,
            "alpha": self._alpha,
            "alarm": self._alarm.snapshot(),
            "statistic": None if math.isnan(self._statistic) else self._statistic,
            "last": None if self._last is None else list(self._last),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` taken by a detector with the same hyperparameters.

        The constructor's ``alpha`` is a hyperparameter; the level in force (`set_alpha`) is
        restored from the snapshot.

        Raises
        ------
        DriftlineError
            If ``state`` is not a KS snapshot with these hyperparameters.
        """
        check_state_params(self.name, state, self._params())
        with reading_snapshot(detector_noun(self.name), SpecError):
            ref = np.asarray(state["reference"], dtype=np.float64)
            complete = bool(state["reference_complete"])
            window = np.asarray(state["window"], dtype=np.float64)
            n_total = int(state["n_current_total"])
            sub_state = state["sub_windows_state"]
            n_seen = int(state["n_seen"])
            n_eval = int(state["n_evaluations"])
            n_late = int(state["n_late"])
            alarm = state["alarm"]
            stat = state["statistic"]
            last = state["last"]
            alpha = self._saved_alpha(state)
        cap = self.window_size + (self.reference_size if self.reference_mode == "sliding" else 0)
        if (
            ref.ndim != 1
            or window.ndim != 1
            or (self.reference_mode != "previous_window" and window.size > cap)
            or (self.reference_mode == "fixed" and complete and ref.size != self.reference_size)
        ):
            raise DriftlineError("state: inconsistent KS snapshot (reference/window sizes)")
        self._reset_state(np.empty(0))
        if complete:
            self._set_reference(ref)
        else:
            self._ref_head = ref
        self._cur = window
        if self._u is not None:
            self._cur_slots = _slots(self._u, window)
        self._n_cur_total = n_total
        with reading_snapshot(detector_noun(self.name), SpecError):
            self._sub.restore(sub_state)
        self._n_seen, self._n_eval, self._n_late = n_seen, n_eval, n_late
        self._alarm.restore(alarm)
        self._statistic = math.nan if stat is None else float(stat)
        self._last = None if last is None else (int(last[0]), int(last[1]), int(last[2]))
        self._alpha = alpha


def _chunk_size(grid: int) -> int:
    return int(min(96, max(16, 2 * math.sqrt(grid))))
