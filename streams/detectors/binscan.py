"""Binned likelihood-ratio scans: the machinery of `np_focus` and `focus_categorical`.

Both detectors turn each value into a bin (a range between quantiles of the warm-up values, or a
category) and, after every value, compare the bin counts of the last ``w`` values with those of
every earlier value of the current reference, for each ``w`` of a geometric grid (`window_grid`:
16, 23, 32, ... values, ratio sqrt(2), up to the detector's `max_window`: 4,096 for `np_focus`,
16,384 for `focus_categorical`, whose small share changes need long windows). Each comparison is
a two-sample likelihood ratio of counts (`g_multinomial` over all bins, or `g_bernoulli_max`:
the largest of the one-bin-against-the-rest ratios); the detector's statistic is the largest
over the grid, i.e. a CUSUM-like scan over change points ``t - w`` for every change size at
once, as FOCuS does for known distributions, at ``len(windows)`` comparisons per value. A change
older than the longest window is still seen by it, but fades as the reference absorbs the
changed values: the longest window bounds how small a change can be and still be found.

Episodes. The reference is every value since the warm-up that was not part of an episode.
When the statistic exceeds the calibrated threshold ``h`` the detector fires and freezes the
reference at the values before the window that fired (the change's estimated start); from then
on it compares the values since that start -- the last `RESOLVE_SPAN` x ``w`` of them (at most
`max_window`), ``w`` being the window that fired -- with the frozen reference after every value,
and resolves when that likelihood ratio falls below ``h / 2``: while the data still differ from
the reference the episode stays open, however long (a drift seen in ``w`` values gives about
four times the threshold over ``4 w`` of them), and it closes about ``4 w`` values after they
stop differing. After a resolution the episode's values stay out of the reference and the scan
starts again with windows inside the values since the resolution.

Everything is counted in integers, so feeding values one by one or in batches of any sizes
gives the same statistics bit for bit (each is computed from the same counts by the same
elementwise arithmetic).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.detectors.base import (
    FIRING,
    RESOLVED,
    AdjustableRate,
    AlarmedDetector,
    Detection,
    check_state_params,
    detector_noun,
)
from driftline.streams.params import MAX_VALUES, int_param
from driftline.streams.snapshots import reading_snapshot

__all__ = [
    "MAX_WINDOW",
    "MIN_WINDOW",
    "WINDOWS",
    "BinScanDetector",
    "g_bernoulli",
    "g_bernoulli_max",
    "g_multinomial",
    "threshold_for",
    "window_grid",
    "xlogx",
]

MIN_WINDOW = 16
MAX_WINDOW = 4096


def window_grid(longest: int) -> np.ndarray:
    """Window lengths ``16 * 2**(i/2)`` (rounded) up to ``longest`` (a power of two).

    Examples
    --------
    >>> window_grid(64).tolist()
    [16, 23, 32, 45, 64]
    """
    k = 2 * round(math.log2(longest / MIN_WINDOW))
    sizes = {round(MIN_WINDOW * 2 ** (i / 2)) for i in range(k + 1)}
    return np.array(sorted(sizes), dtype=np.int64)


#: Window lengths ``np_focus`` compares with the reference after every value: 16 ... 4096.
WINDOWS: np.ndarray = window_grid(MAX_WINDOW)
#: While firing, the last ``RESOLVE_SPAN * w`` values since the change (at most `max_window`)
#: are compared with the reference, ``w`` being the window that fired.
RESOLVE_SPAN = 4
CHUNK = 256  # values per vectorised step (bounds the (chunk, windows, bins) arrays)
#: Range of ``false_alarms_per_million`` the calibration tables cover.
RATE_RANGE = (0.001, 1000.0)


def xlogx(n: np.ndarray | float) -> np.ndarray:
    """``n * log(n)`` elementwise for counts ``n >= 0`` (0 at 0), as float64.

    Examples
    --------
    >>> xlogx(np.array([0, 1, 2, 10])).round(4).tolist()
    [0.0, 0.0, 1.3863, 23.0259]
    """
    arr = np.asarray(n)
    if arr.dtype.kind in "iu" and arr.size > 64:
        top = int(arr.max(initial=0))
        if top < _LUT_CAP:  # counts: read them from the table (below 0: 0, as computed)
            return _lut(top).take(arr, mode="clip")
    x = arr.astype(np.float64, copy=False)
    return x * np.log(np.maximum(x, 1.0))


#: Counts below this are read from a table of ``n log n`` (16 MB at most, built as needed)
#: instead of computed: the scans evaluate hundreds per value; the same float64 values.
_LUT_CAP = 1 << 21
_LUT = np.zeros(1)


def _lut(top: int) -> np.ndarray:
    """The table of `xlogx` for 0 ... at least ``top`` (grown by powers of two)."""
    global _LUT
    if top >= _LUT.size:
        size = min(_LUT_CAP, 1 << max(12, top.bit_length()))
        x = np.arange(size, dtype=np.float64)
        _LUT = x * np.log(np.maximum(x, 1.0))
    return _LUT


def g_multinomial(a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Log likelihood ratio of two multinomial samples with their own bin probabilities
    against one shared set: half the G-test statistic of the 2 x bins table.

    ``a``, ``b``: counts per bin (last axis); ``na``, ``nb``: their totals (shape ``a.shape[:-1]``).

    Examples
    --------
    >>> from scipy.stats import chi2_contingency
    >>> a, b = np.array([30, 50, 20]), np.array([300, 400, 300])
    >>> g = g_multinomial(a, np.array(100), b, np.array(1000))
    >>> stat = chi2_contingency([a, b], lambda_="log-likelihood")[0]
    >>> bool(round(float(g), 6) == round(stat / 2, 6)), round(float(g), 4)
    (True, 2.782)
    """
    na = np.asarray(na)
    nb = np.asarray(nb)
    bins = (xlogx(a) + xlogx(b) - xlogx(a + b)).sum(axis=-1)
    return np.maximum(bins - xlogx(na) - xlogx(nb) + xlogx(na + nb), 0.0)


def g_bernoulli(a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Per bin (last axis): log likelihood ratio of "this bin's share differs between the two
    samples" (a 2 x 2 table: the bin against all others).

    Examples
    --------
    >>> g = g_bernoulli(np.array([36, 64]), np.array(100), np.array([300, 700]), np.array(1000))
    >>> g.round(4).tolist()
    [0.7507, 0.7507]
    """
    na = np.asarray(na)[..., None]
    nb = np.asarray(nb)[..., None]
    g = (
        xlogx(a) + xlogx(na - a) + xlogx(b) + xlogx(nb - b)
        - xlogx(a + b) - xlogx(na + nb - a - b)
        - xlogx(na) - xlogx(nb) + xlogx(na + nb)
    )  # fmt: skip
    return np.maximum(g, 0.0)


def g_bernoulli_max(a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """The largest `g_bernoulli` over the bins (the one share that changed most).

    Examples
    --------
    >>> a, b = np.array([36, 34, 30]), np.array([300, 400, 300])
    >>> round(float(g_bernoulli_max(a, np.array(100), b, np.array(1000))), 4)
    0.7507
    """
    return g_bernoulli(a, na, b, nb).max(axis=-1)


def threshold_for(rate: float, table: tuple[tuple[float, float], ...]) -> float:
    """The threshold giving ``rate`` false alarms per 10^6 values, interpolated in a calibration
    ``table`` of ``(false alarms per 10^6, threshold)`` rows (log-linear in the rate).

    Examples
    --------
    >>> table = ((0.1, 20.0), (1.0, 18.0), (10.0, 16.0))
    >>> threshold_for(1.0, table), threshold_for(3.1622776601683795, table)
    (18.0, 17.0)
    """
    rates = np.log10([r for r, _ in table])
    hs = np.array([h for _, h in table])
    order = np.argsort(rates)
    return float(np.interp(math.log10(rate), rates[order], hs[order]))


def encode_bins(bins: np.ndarray) -> str:
    """Bin numbers (0 ... 74) as one character each, for compact snapshots.

    Examples
    --------
    >>> s = encode_bins(np.array([0, 1, 15, 16]))
    >>> s, decode_bins(s).tolist()
    ('01?@', [0, 1, 15, 16])
    """
    return (bins.astype(np.uint8) + 48).tobytes().decode("ascii")


def decode_bins(text: str) -> np.ndarray:
    """Inverse of `encode_bins`."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48


def _cumcounts(bins: np.ndarray, n_bins: int) -> np.ndarray:
    """Running counts per bin along the last axis: ``out[..., i, j]`` = values equal to ``j``
    among ``bins[..., :i + 1]`` (bins >= n_bins, the padding, are not counted)."""
    onehot = bins[..., None] == np.arange(n_bins)
    return np.cumsum(onehot, axis=-2, dtype=np.int64)


class BinScanDetector(AdjustableRate, AlarmedDetector):
    """The scan and episode logic shared by `np_focus` and `focus_categorical` (see the module).

    Subclasses define how values become bins (`_prepare`, `_set_up`, `_bins`), the statistic
    (`_g`), the threshold (`_calibrated_threshold`, from the rate in force ``_rate``) and the
    words of a detection (`_detail`).
    """

    rate_range = RATE_RANGE
    #: The longest window and the grid of window lengths (`window_grid`) of this detector.
    max_window: ClassVar[int] = MAX_WINDOW
    windows: ClassVar[np.ndarray] = WINDOWS

    def __init__(self, warmup: int, false_alarms_per_million: float, min_warmup: int) -> None:
        self.warmup = int_param("warmup", warmup, min_warmup, MAX_VALUES)
        self._init_rate(false_alarms_per_million)  # in force: set_level (Bonferroni, ...)
        self._alarm = Alarm()
        self._n_seen = 0
        self._n_eval = 0
        self._statistic = math.nan
        self._warm: list[Any] = []
        self._n_bins = 0
        self._threshold = math.nan
        self._ring = np.zeros(0, dtype=np.int64)
        self._wc = np.zeros((self.windows.size, 0), dtype=np.int64)
        self._ref = np.zeros(0, dtype=np.int64)
        self._run = 0
        self._span = 0  # while firing: values of the episode's window (RESOLVE_SPAN x its w)

    # ------------------------------------------------------------------ subclass hooks
    def _prepare(self, xs: Any) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """Non-null values of a batch and their positions."""
        raise NotImplementedError

    def _set_up(self, warm: list[Any]) -> int:  # pragma: no cover
        """Fix the bins from the warm-up values; return their number."""
        raise NotImplementedError

    def _bins(self, values: np.ndarray | list[Any]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _g(self, a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def _calibrated_threshold(self) -> float:  # pragma: no cover
        raise NotImplementedError

    def _detail(self, window: np.ndarray, ref: np.ndarray) -> str:  # pragma: no cover
        raise NotImplementedError

    def _setup_state(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _load_setup(self, state: dict[str, Any]) -> int:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    @property
    def p_value(self) -> None:
        """Always None: the threshold is calibrated by simulation, not from a p-value."""
        return None

    @property
    def threshold(self) -> float:
        """The likelihood ratio above which the detector fires (NaN before the warm-up ends)."""
        return self._threshold

    @property
    def n_reference(self) -> int:
        """Values in the reference (frozen while an episode is open)."""
        return int(self._ref.sum())

    # ------------------------------------------------------------------ update
    def update_many(self, xs: Any) -> list[Detection]:
        """Consume a batch in order; return the firing/resolved changes with batch positions."""
        values, pos = self._prepare(xs)
        out: list[Detection] = []
        start = 0
        if self._n_bins == 0:
            start = min(self.warmup - len(self._warm), len(values))
            self._warm += values[:start].tolist()
            self._n_seen += start
            if len(self._warm) < self.warmup:
                return out
            self._finish_warmup()
        if start == len(values):
            return out
        bins = self._bins(values[start:])
        i = 0
        while i < bins.size:
            j = min(bins.size, i + CHUNK)
            k, det = self._scan(bins[i:j])
            if det is not None:
                out.append(Detection(**{**det, "index": int(pos[start + i + k])}))
                i += k + 1
            else:
                i = j
        return out

    def _finish_warmup(self) -> None:
        warm, self._warm = self._warm, []
        self._n_bins = self._set_up(warm)
        self._threshold = self._calibrated_threshold()
        bins = self._bins(warm)
        self._ref = np.bincount(bins, minlength=self._n_bins).astype(np.int64)
        self._run = len(warm)
        self._set_ring(bins[-self.max_window :])

    def _set_ring(self, bins: np.ndarray) -> None:
        """The last `max_window` bins (padded with the bin number ``n_bins``) and the window
        counts derived from them."""
        pad = np.full(self.max_window - bins.size, self._n_bins, dtype=np.int64)
        self._ring = np.concatenate([pad, bins.astype(np.int64)])
        self._wc = np.stack([self._counts(self._ring[-w:]) for w in self.windows.tolist()])

    def _counts(self, bins: np.ndarray) -> np.ndarray:
        return np.bincount(bins, minlength=self._n_bins + 1)[: self._n_bins].astype(np.int64)

    def _scan(self, new: np.ndarray) -> tuple[int, dict[str, Any] | None]:
        """Consume ``new`` (bins) up to and including the first state change; return its
        position in ``new`` and the `Detection` fields (index excluded), or (len, None)."""
        n, nb = new.size, self._n_bins
        windows, longest = self.windows, self.max_window
        hist = np.concatenate([self._ring, new])
        new_c = _cumcounts(new, nb)  # (n, nb)
        leaving = hist[(longest - windows)[:, None] + np.arange(n)]  # (windows, n)
        win = self._wc[:, None, :] + new_c[None] - _cumcounts(leaving, nb)  # (windows, n, nb)
        win = np.ascontiguousarray(win.transpose(1, 0, 2))  # (n, windows, nb), C order
        run = self._run + 1 + np.arange(n)  # segment values up to each new one
        firing = self._alarm.firing
        if not firing:
            ref = self._ref + new_c[:, None, :] - win
            n_ref = ref.sum(axis=-1)
            valid = (windows <= run[:, None]) & (n_ref >= self.warmup)
            sizes = np.broadcast_to(windows, n_ref.shape)
            g = np.where(valid, self._g(win, sizes, ref, n_ref), -np.inf)
            stat = g.max(axis=1)
            evaluated = valid.any(axis=1)
            hits = np.flatnonzero(stat > self._threshold)
        else:
            span = self._span
            length = np.minimum(run, span)
            since = self._counts(self._ring[longest - min(self._run, span) :])
            leaves = run > span  # the value `span` back leaves the episode's window
            gone = np.where(leaves, hist[longest - span + np.arange(n)], nb)
            episode = since + new_c - _cumcounts(gone, nb)  # (n, nb): the last `length` values
            n_ref_f = int(self._ref.sum())
            stat = self._g(episode, length, self._ref, np.full(n, n_ref_f))
            evaluated = np.ones(n, dtype=bool)
            hits = np.flatnonzero(stat < self._threshold / 2)
        k = int(hits[0]) if hits.size else n - 1
        done = evaluated[: k + 1]
        self._n_eval += int(done.sum())
        if done.any():
            self._statistic = float(stat[: k + 1][done][-1])
        self._n_seen += k + 1
        self._ring = hist[k + 1 : k + 1 + longest]
        self._wc = win[k]
        if not hits.size:
            if not firing:
                self._ref = self._ref + new_c[-1]
            self._run += n
            return n, None
        if not firing:
            w_idx = int(np.argmax(g[k]))
            w = int(windows[w_idx])
            window = win[k, w_idx]
            self._ref = ref[k, w_idx]
            self._run = w
            self._span = min(RESOLVE_SPAN * w, longest)
            self._alarm.firing = True
            detail = self._detail(window, self._ref)
            fields = {"statistic": float(stat[k]), "n_reference": int(n_ref[k, w_idx]),
                      "n_current": w, "status": FIRING, "detail": detail}  # fmt: skip
        else:
            self._run = self._span = 0
            self._alarm.firing = False
            self._alarm.resolved_at = self._n_seen
            fields = {"statistic": float(stat[k]), "n_reference": n_ref_f,
                      "n_current": int(length[k]), "status": RESOLVED, "detail": ""}  # fmt: skip
        return k, {"p_value": None, "threshold": self._threshold, **fields}

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON-able): warm-up values or bins, reference counts, the last
        `max_window` bins as a string."""
        ready = self._n_bins > 0
        return {
            "detector": self.name,
            "params": self._params(),
            "n_seen": self._n_seen,
            "n_evaluations": self._n_eval,
            "statistic": None if math.isnan(self._statistic) else self._statistic,
            "alarm": self._alarm.snapshot(),
            "warm": list(self._warm),
            "setup": self._setup_state() if ready else None,
            "reference": self._ref.tolist(),
            "run": self._run,
            "span": self._span,
            "ring": encode_bins(self._ring[self._ring < self._n_bins]) if ready else "",
            "rate": self._rate,
        }

    def set_level(self, value: float) -> None:
        """Calibrate the next updates to ``value`` false alarms per 10^6 values (the threshold
        is recomputed once the warm-up has set the bins)."""
        super().set_level(value)
        if self._n_bins:
            self._threshold = self._calibrated_threshold()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a `snapshot` taken with the same hyperparameters."""
        check_state_params(self.name, state, self._params())
        with reading_snapshot(detector_noun(self.name)):
            n_seen, n_eval = int(state["n_seen"]), int(state["n_evaluations"])
            stat = math.nan if state["statistic"] is None else float(state["statistic"])
            alarm = Alarm()
            alarm.restore(state["alarm"])
            warm = list(state["warm"])
            setup = state["setup"]
            ref = np.array(state["reference"], dtype=np.int64).reshape(-1)
            run = int(state["run"])
            span = int(state["span"])
            ring = decode_bins(str(state["ring"]))
        with reading_snapshot(detector_noun(self.name), SpecError):
            rate = self._saved_rate(state)
        n_bins = 0
        if setup is not None:
            with reading_snapshot(detector_noun(self.name)):
                n_bins = self._load_setup(setup)
            bad_span = not 0 <= span <= self.max_window or (span == 0) == alarm.firing
            if (
                ref.size != n_bins
                or (ring >= n_bins).any()
                or (ring < 0).any()
                or run < 0
                or bad_span
            ):
                raise DriftlineError(
                    f"state: malformed {detector_noun(self.name)} snapshot (reference and bins "
                    f"disagree with its {n_bins} bins)"
                )
        self._rate = rate
        self._n_seen, self._n_eval, self._statistic = n_seen, n_eval, stat
        self._alarm, self._warm, self._n_bins = alarm, warm, n_bins
        self._ref, self._run, self._span = ref, run, span
        if n_bins:
            self._threshold = self._calibrated_threshold()
            # a ring shorter than the values it should hold (a snapshot taken with a shorter
            # longest window): the longer windows wait until they are filled
            if ring.size < min(run, self.max_window):
                self._run = ring.size
            self._set_ring(ring[-self.max_window :])
        else:
            self._threshold = math.nan
            self._ring = np.zeros(0, dtype=np.int64)
