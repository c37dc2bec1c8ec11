"""Slices: the events split by a categorical field, with bounded cardinality.

`SliceIndex` maps a column of a categorical field (strings, ints or bools) to slice codes
``0 .. k-1`` for the tracked values and ``k`` (`SliceIndex.other`) for every other value (and
missing ones). The tracked values are the declared ones, or the first ``max_values`` distinct
values seen, in arrival order (then frozen: a value admitted keeps its code for good, so a
slice's series never changes meaning). Codes are small ints; `SliceIndex.labels` gives each
code's label value for Prometheus and alerts (`label_value`: printable, at most 64 characters).

`SliceMetrics` keeps the model-metric windows of `streams.model_metrics` per slice value, and
`SliceGapMonitor` turns "one slice is worse than the whole by more than ``margin``" into
firing / resolved events (see `SliceGapMonitor` for the rule).

Examples
--------
>>> ix = SliceIndex(None, max_values=2)
>>> ix.codes(np.array(["de", "fr", "de", "us", None], dtype=object)).tolist()
[0, 1, 0, 2, 2]
>>> ix.labels
['de', 'fr', 'other']
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.labels import float_array, floats_to_json
from driftline.streams.model_metrics import CountWindowMetrics, TimeWindowMetrics
from driftline.streams.params import float_param, int_param

__all__ = [
    "OTHER",
    "SliceEstimates",
    "SliceGapEvent",
    "SliceGapMonitor",
    "SliceIndex",
    "SliceMetrics",
    "canonical",
    "label_value",
    "worse_by",
]

#: The label of the bucket holding every value that is not tracked.
OTHER = "other"
#: Longest label value; longer ones are cut and end in a hash of the whole value.
MAX_LABEL_CHARS = 64
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def canonical(value: Any) -> str | None:
    """A field value as the text slices compare: strings as they are, ints in decimal, bools
    ``true``/``false``, floats holding an int (how int fields are decoded) as that int; None
    and NaN are missing.

    Examples
    --------
    >>> [canonical(v) for v in ("de", 3, 3.0, True, 1.5, None, float("nan"))]
    ['de', '3', '3', 'true', '1.5', None, None]
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value)


def label_value(text: str) -> str:
    """``text`` as a Prometheus label value: control characters replaced by ``?``, at most
    `MAX_LABEL_CHARS` characters (a longer one is cut and ends in ``~`` and 8 hex digits of
    its SHA-256, so two long values stay apart); a real value ``other`` is ``other~value`` so
    that it never merges with the bucket.

    Examples
    --------
    >>> label_value("de"), label_value("a\\nb"), label_value("other")
    ('de', 'a?b', 'other~value')
    >>> len(label_value("x" * 500)), label_value("x" * 500)[-9:]
    (64, '~c38c2bf3')
    """
    clean = "".join(c if c.isprintable() else "?" for c in text)
    if clean == OTHER:
        return "other~value"
    if len(clean) > MAX_LABEL_CHARS:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        clean = clean[: MAX_LABEL_CHARS - 9] + "~" + digest
    return clean


class SliceIndex:
    """Slice codes of a categorical column (see the module docstring).

    Parameters
    ----------
    values
        The tracked values (ints, strings, bools), or None to admit the first ``max_values``
        distinct values seen.
    max_values
        Without ``values``: how many values are admitted (>= 1).
    kind
        The field's type: ``"bool"`` reads a numeric column's 1.0 / 0.0 (how bool fields are
        decoded) as ``true`` / ``false``; ``"string"`` and ``"int"`` as they are.
    """

    def __init__(
        self, values: Sequence[Any] | None, max_values: int = 20, kind: str = "string"
    ) -> None:
        self.kind = kind
        self.declared = values is not None
        n = len(values) if values is not None else max_values
        self.max_values = int_param("max_values", n, 1)
        self._codes: dict[str, int] = {}
        for v in values or ():
            c = canonical(v)
            if c is not None and c not in self._codes:
                self._codes[c] = len(self._codes)

    @property
    def other(self) -> int:
        """The code of the 'other' bucket (fixed: it does not move as values are admitted)."""
        return self.max_values

    @property
    def values(self) -> list[str]:
        """The tracked values (canonical text), in code order."""
        return list(self._codes)

    @property
    def labels(self) -> list[str]:
        """Label value of each code in use: the tracked values', then 'other'."""
        return [label_value(v) for v in self._codes] + [OTHER]

    def label(self, code: int) -> str:
        """The label value of ``code``."""
        if code == self.other:
            return OTHER
        return label_value(self.values[code])

    def _code_of(self, value: Any) -> int:
        """The code of one value; admits it while there is room."""
        if self.kind == "bool" and isinstance(value, float) and value in (0.0, 1.0):
            value = value == 1.0
        c = canonical(value)
        if c is None:
            return self.other
        code = self._codes.get(c)
        if code is None:
            if self.declared or len(self._codes) >= self.max_values:
                return self.other
            code = self._codes[c] = len(self._codes)
        return code

    def codes(self, column: np.ndarray) -> np.ndarray:
        """The code of each row (int64); admits new values while there is room, in arrival
        order. Known strings are looked up in one pass; numeric columns (int and bool fields)
        by their distinct values."""
        n = len(column)
        if column.dtype != object:  # int / bool fields, decoded as float64
            uniq, first, inv = np.unique(column, return_index=True, return_inverse=True)
            ucodes = np.empty(uniq.size, dtype=np.int64)
            for k in np.argsort(first, kind="stable").tolist():  # in arrival order
                ucodes[k] = self._code_of(uniq[k].item())
            return ucodes[inv.reshape(-1)]
        values = column.tolist()
        try:
            out = np.fromiter(map(self._codes.get, values, repeat(-1)), dtype=np.int64, count=n)
        except TypeError:  # an unhashable value: one at a time
            out = np.full(n, -1, dtype=np.int64)
        for i in np.flatnonzero(out < 0).tolist():
            out[i] = self._code_of(values[i])
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"values": self.values}

    def restore(self, state: dict[str, Any]) -> None:
        """Admitted values of a `snapshot` (declared values stay as declared)."""
        if self.declared:
            return
        values = state.get("values")
        if type(values) is not list or not all(type(v) is str for v in values):
            raise DriftlineError("state: slice values must be a list of strings")
        self._codes = {v: i for i, v in enumerate(values[: self.max_values])}


class SliceMetrics:
    """Model-metric windows per slice code: the last ``count_window`` joined examples of the
    value, and the sliding event-time window (the global windows' parameters).

    Parameters
    ----------
    task, count_window, time_window_ms, threshold
        As `streams.model_metrics.CountWindowMetrics` / `TimeWindowMetrics`.
    """

    WINDOWS = ("count", "time")

    def __init__(self, task: str, count_window: int, time_window_ms: int,
                 threshold: float = 0.5) -> None:  # fmt: skip
        self.task, self.count_window = task, count_window
        self.time_window_ms, self.threshold = time_window_ms, threshold
        self.windows: dict[int, dict[str, Any]] = {}
        self._results: dict[str, dict[int, dict[str, float]]] = {}  # until the next change

    def _new(self) -> dict[str, Any]:
        return {
            "count": CountWindowMetrics(self.task, self.count_window, self.threshold),
            "time": TimeWindowMetrics(self.task, self.time_window_ms, self.threshold),
        }

    def update(self, codes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
               time_ms: np.ndarray) -> None:  # fmt: skip
        """Add joined examples (in arrival order) to their slices' windows; every value's time
        window then ends at the latest time seen (of any value)."""
        self._results = {}
        for code in np.unique(codes).tolist():
            rows = np.flatnonzero(codes == code)
            w = self.windows.get(code)
            if w is None:
                w = self.windows[code] = self._new()
            w["count"].update_many(scores[rows], labels[rows])
            w["time"].update_many(scores[rows], labels[rows], time_ms[rows])
        if len(time_ms):  # one clock for every value: the window ends where the global one does
            self.advance(int(np.max(time_ms)))

    def advance(self, now_ms: int) -> None:
        """Slide every time window to ``now_ms`` (as the global one)."""
        for w in self.windows.values():
            end = w["time"].window_end_ms
            if end is None or now_ms > end:
                self._results.pop("time", None)
                w["time"].advance(now_ms)

    def results(self, window: str) -> dict[int, dict[str, float]]:
        """Metrics of ``window`` ("count" or "time") per code seen (computed once per change
        of the windows)."""
        got = self._results.get(window)
        if got is None:
            got = self._results[window] = {
                code: w[window].result() for code, w in sorted(self.windows.items())
            }
        return got

    def snapshot(self) -> dict[str, Any]:
        return {
            str(code): {k: m.snapshot() for k, m in w.items()}
            for code, w in sorted(self.windows.items())
        }

    def restore(self, state: dict[str, Any]) -> None:
        windows = {}
        for code, snap in state.items():
            w = self._new()
            for k, m in w.items():
                m.restore(snap[k])
            windows[int(code)] = w
        self.windows = windows
        self._results = {}


def worse_by(metric: str, slice_value: float, global_value: float) -> float:
    """How much worse the slice is than the whole: ``global - slice`` for metrics where higher
    is better, ``slice - global`` for errors (mae, rmse); NaN if either is.

    Examples
    --------
    >>> worse_by("accuracy", 0.7, 0.9), worse_by("mae", 2.0, 1.5)
    (0.20000000000000007, 0.5)
    """
    if metric in LOWER_IS_BETTER:
        return slice_value - global_value
    return global_value - slice_value


@dataclass(frozen=True)
class SliceGapEvent:
    """A slice's episode opening (``firing``) or closing (``resolved``)."""

    code: int
    status: str
    metric: str
    slice_value: float
    global_value: float
    gap: float
    n_slice: int
    n_global: int


class SliceGapMonitor:
    """Fires when one slice's metric is worse than the global one by more than ``margin``.

    At each evaluation (after a batch that joined labels), for each slice value whose window
    holds at least ``min_samples`` examples, while the global window holds at least as many:
    ``gap = worse_by(metric, slice, global)``; a slice not firing fires when ``gap > margin``,
    a firing one resolves when ``gap <= margin / 2`` (hysteresis: no flapping at the edge).
    Slices (or a global window) with too few examples, or an undefined metric, keep their
    state. Because the slice is compared with the global metric over the same window, a
    degradation that hits every slice alike moves both and fires no slice alert: the slice
    alert says "this segment is worse than the whole".

    Parameters
    ----------
    metric
        A key of the metric results (accuracy, precision, recall, f1, auc, mae, rmse).
    margin
        Absolute gap that fires (> 0).
    min_samples
        Examples the slice and the global window need before they are compared (>= 1).

    Examples
    --------
    >>> m = SliceGapMonitor("accuracy", margin=0.1, min_samples=100)
    >>> g = {"n": 1000.0, "accuracy": 0.9}
    >>> [e.status for e in m.evaluate(g, {0: {"n": 200.0, "accuracy": 0.75}})]
    ['firing']
    >>> m.evaluate(g, {0: {"n": 200.0, "accuracy": 0.84}}), m.firing
    ([], [0])
    >>> [e.status for e in m.evaluate(g, {0: {"n": 200.0, "accuracy": 0.86}})]
    ['resolved']
    """

    def __init__(self, metric: str, margin: float, min_samples: int) -> None:
        self.metric = metric
        self.margin = float_param("margin", margin, low=0.0)
        self.min_samples = int_param("min_samples", min_samples, 1)
        self._firing: set[int] = set()

    @property
    def firing(self) -> list[int]:
        """Codes whose episode is open."""
        return sorted(self._firing)

    def evaluate(
        self, global_result: dict[str, float], slice_results: dict[int, dict[str, float]]
    ) -> list[SliceGapEvent]:
        """The episode changes of this evaluation, by code."""
        n_global = int(global_result.get("n", 0))
        g = float(global_result.get(self.metric, math.nan))
        if n_global < self.min_samples or not math.isfinite(g):
            return []
        events = []
        for code, r in sorted(slice_results.items()):
            n = int(r.get("n", 0))
            v = float(r.get(self.metric, math.nan))
            if n < self.min_samples or not math.isfinite(v):
                continue
            gap = worse_by(self.metric, v, g)
            firing = code in self._firing
            if not firing and gap > self.margin:
                self._firing.add(code)
                events.append(SliceGapEvent(code, "firing", self.metric, v, g, gap, n, n_global))
            elif firing and gap <= self.margin / 2:
                self._firing.discard(code)
                events.append(SliceGapEvent(code, "resolved", self.metric, v, g, gap, n, n_global))
        return events

    def snapshot(self) -> dict[str, Any]:
        return {"firing": self.firing}

    def restore(self, state: dict[str, Any]) -> None:
        self._firing = {int(c) for c in state.get("firing", [])}


class SliceEstimates:
    """Label-free performance estimates (CBPE) per slice value: each value's predictions are cut
    into chunks of ``chunk_size``, and each chunk is scored with the expected metrics of
    `streams.performance_estimation.expected_metrics` under the partition's calibration (one
    calibration for every value: CBPE's assumption that the scores are calibrated holds per
    segment too). Chunks completed before the calibration is fitted are dropped.

    Examples
    --------
    >>> from driftline.streams.performance_estimation import IsotonicCalibrator
    >>> cal = IsotonicCalibrator()
    >>> _ = cal.fit(np.array([0.1, 0.4, 0.6, 0.9]), np.array([0.0, 0.0, 1.0, 1.0]))
    >>> est = SliceEstimates(chunk_size=2)
    >>> est.update(np.array([0, 1, 0]), np.array([0.9, 0.2, 0.1]), cal, 0.5)
    [0]
    >>> est.latest[0]["accuracy"], est.latest[0]["n"]
    (1.0, 2.0)
    """

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = int_param("chunk_size", chunk_size, 2)
        self._buffers: dict[int, np.ndarray] = {}
        #: the last completed chunk's estimates per code (with ``n``, its predictions)
        self.latest: dict[int, dict[str, float]] = {}

    def pending(self, code: int) -> int:
        """Predictions of ``code`` in its incomplete chunk."""
        buf = self._buffers.get(code)
        return 0 if buf is None else int(buf.size)

    def update(
        self, codes: np.ndarray, scores: np.ndarray, calibrator: Any, threshold: float
    ) -> list[int]:
        """Add predictions (finite scores) by code; the codes whose chunk completed."""
        from driftline.streams.performance_estimation import expected_metrics

        done = []
        ok = np.isfinite(scores)
        for code in np.unique(codes[ok]).tolist():
            new = scores[ok & (codes == code)]
            buf = np.concatenate([self._buffers.get(code, np.empty(0)), new])
            while buf.size >= self.chunk_size:
                chunk, buf = buf[: self.chunk_size], buf[self.chunk_size :]
                if calibrator.fitted:
                    probs = calibrator.predict(chunk)
                    m = expected_metrics(probs, chunk, threshold)
                    self.latest[code] = {"n": float(chunk.size), **m}
                    done.append(code)
            self._buffers[code] = buf
        return sorted(set(done))

    def snapshot(self) -> dict[str, Any]:
        return {
            "chunk_size": self.chunk_size,
            "buffers": {str(c): floats_to_json(b) for c, b in sorted(self._buffers.items())},
            "latest": {
                str(c): {k: floats_to_json(np.array([v]))[0] for k, v in m.items()}
                for c, m in sorted(self.latest.items())
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("chunk_size") != self.chunk_size:
            return
        self._buffers = {int(c): float_array(b) for c, b in state["buffers"].items()}
        self.latest = {
            int(c): {k: float(float_array([v])[0]) for k, v in m.items()}
            for c, m in state["latest"].items()
        }
