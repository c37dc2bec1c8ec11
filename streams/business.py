"""A business metric over event time: bucketed history, rolling value, "during vs before".

`BusinessHistory` keeps, per bucket of ``bucket_ms`` event-time ms, the sum and the count of a
numeric field (revenue per order, 0/1 conversions) for the last ``history_ms``, in a ring of
fixed size. Its value over any span inside the history is the ``mean`` (sum / count: revenue per
event, conversion rate) or the ``sum`` of the buckets the span covers, to bucket resolution (a
bucket counts when its start lies in the span). The clock is the largest event time seen;
values older than the history when they arrive are dropped and counted in ``n_too_old``.
Results do not depend on how the stream is batched (as long as no value is too old).

`EpisodeSpans` remembers when each alert episode opened, to report for an alert the business
metric before the episode (the ``window_ms`` before it opened) and during it (from its opening
to the alert: for a resolved alert the whole episode; for a firing one, what the history has
after the trigger so far). With ``agg = "sum"`` the "during" total is scaled to a total per
``window_ms`` (what "before" is), so the two compare whatever the episode's length.

Examples
--------
>>> h = BusinessHistory(bucket_ms=1_000, history_ms=10_000, agg="mean")
>>> h.update(np.array([10.0, 20.0, 30.0]), np.array([500, 1_500, 1_600]))
>>> h.span(0, 2_000), h.span(1_000, 2_000), h.clock_ms
((20.0, 3), (25.0, 2), 1600)
>>> h.rolling(window_ms=1_000)  # the last window: (1600 - 1000, 1600], bucket-aligned
(25.0, 2)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.labels import float_array, floats_to_json
from driftline.streams.params import choice_param, int_param

__all__ = ["AGGS", "BusinessHistory", "EpisodeSpans"]

AGGS = ("mean", "sum")


class BusinessHistory:
    """Sums and counts of a numeric stream per event-time bucket (see the module docstring).

    Parameters
    ----------
    bucket_ms
        Bucket width in ms (>= 1).
    history_ms
        How far back from the clock buckets are kept (>= ``bucket_ms``).
    agg
        ``"mean"`` or ``"sum"``.
    """

    def __init__(self, bucket_ms: int, history_ms: int, agg: str = "mean") -> None:
        self.bucket_ms = int_param("bucket_ms", bucket_ms, 1)
        self.history_ms = int_param("history_ms", history_ms, self.bucket_ms)
        self.agg = choice_param("agg", agg, AGGS)
        self.n_buckets = self.history_ms // self.bucket_ms + 1
        self._ids = np.full(self.n_buckets, -1, dtype=np.int64)  # bucket number in each slot
        self._sum = np.zeros(self.n_buckets)
        self._count = np.zeros(self.n_buckets, dtype=np.int64)
        self.clock_ms: int | None = None
        self.n_seen = 0
        self.n_too_old = 0

    def update(self, values: np.ndarray, time_ms: np.ndarray) -> None:
        """Add finite ``values`` timed ``time_ms`` (int64 ms, any order)."""
        v = np.asarray(values, dtype=np.float64)
        t = np.asarray(time_ms, dtype=np.int64)
        if v.shape != t.shape or v.ndim != 1:
            raise DriftlineError(f"values {v.shape} and times {t.shape}: expected equal 1-D")
        if not v.size:
            return
        self.n_seen += int(v.size)
        top = int(t.max())
        self.clock_ms = top if self.clock_ms is None else max(self.clock_ms, top)
        b = t // self.bucket_ms
        oldest = self.clock_ms // self.bucket_ms - self.n_buckets + 1
        keep = b >= oldest
        self.n_too_old += int(keep.size - np.count_nonzero(keep))
        b, v = b[keep], v[keep]
        for bucket in np.unique(b).tolist():
            slot = bucket % self.n_buckets
            if self._ids[slot] != bucket:  # an older bucket's slot: recycle it
                self._ids[slot], self._sum[slot], self._count[slot] = bucket, 0.0, 0
        slots = b % self.n_buckets
        np.add.at(self._sum, slots, v)
        np.add.at(self._count, slots, 1)

    def span(self, from_ms: int, to_ms: int) -> tuple[float | None, int]:
        """(value, events) of the buckets starting in ``[from_ms, to_ms)``; the value is None
        (mean) or 0.0 (sum) without events."""
        lo = -(-int(from_ms) // self.bucket_ms)  # first bucket starting at or after from_ms
        hi = -(-int(to_ms) // self.bucket_ms)  # first bucket starting at or after to_ms
        if self.clock_ms is not None:
            oldest = self.clock_ms // self.bucket_ms - self.n_buckets + 1
            live = (self._ids >= max(lo, oldest)) & (self._ids < hi)
        else:
            live = np.zeros(self.n_buckets, dtype=bool)
        n = int(self._count[live].sum())
        total = float(self._sum[live].sum())
        if self.agg == "sum":
            return total, n
        return (total / n if n else None), n

    def rolling(self, window_ms: int) -> tuple[float | None, int]:
        """(value, events) over the last ``window_ms`` up to the clock (bucket-aligned: the
        buckets starting in ``(clock - window_ms, clock]``)."""
        if self.clock_ms is None:
            return self.span(0, 0)
        return self.span(self.clock_ms - window_ms + 1, self.clock_ms + 1)

    def snapshot(self) -> dict[str, Any]:
        live = np.flatnonzero(self._ids >= 0)
        return {
            "params": [self.bucket_ms, self.history_ms, self.agg],
            "clock_ms": self.clock_ms,
            "n_seen": self.n_seen,
            "n_too_old": self.n_too_old,
            "ids": self._ids[live].tolist(),
            "sums": floats_to_json(self._sum[live]),
            "counts": self._count[live].tolist(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a `snapshot` taken with the same parameters (else start empty)."""
        if state.get("params") != [self.bucket_ms, self.history_ms, self.agg]:
            return
        ids = np.asarray(state["ids"], dtype=np.int64)
        sums = float_array(state["sums"], ids.shape)
        counts = np.asarray(state["counts"], dtype=np.int64).reshape(ids.shape)
        self.__init__(self.bucket_ms, self.history_ms, self.agg)  # type: ignore[misc]
        slots = ids % self.n_buckets
        self._ids[slots], self._sum[slots], self._count[slots] = ids, sums, counts
        self.clock_ms = None if state["clock_ms"] is None else int(state["clock_ms"])
        self.n_seen, self.n_too_old = int(state["n_seen"]), int(state["n_too_old"])


def _part(value: float | None, n: int, lo: int, hi: int) -> dict[str, Any]:
    ok = value is not None and math.isfinite(value)
    return {"value": value if ok else None, "n": n, "from_ms": int(lo), "to_ms": int(hi)}


class EpisodeSpans:
    """When each open alert episode started (event time), for "during vs before" lines.

    Examples
    --------
    >>> h = BusinessHistory(bucket_ms=1_000, history_ms=100_000, agg="mean")
    >>> h.update(np.array([10.0] * 5 + [4.0] * 5), np.arange(0, 10_000, 1_000))
    >>> e = EpisodeSpans(window_ms=5_000)
    >>> e.compare("k", "firing", 5_000, h)["before"]
    {'value': 10.0, 'n': 5, 'from_ms': 0, 'to_ms': 5000}
    >>> r = e.compare("k", "resolved", 10_000, h)
    >>> r["during"]["value"], r["change"]
    (4.0, -6.0)
    """

    def __init__(self, window_ms: int) -> None:
        self.window_ms = int_param("window_ms", window_ms, 1)
        self._open: dict[str, int] = {}

    def compare(
        self, key: str, status: str, event_time_ms: int, history: BusinessHistory
    ) -> dict[str, Any]:
        """``before`` (the window before the episode opened), ``during`` (from the opening to
        ``event_time_ms``, or to the business clock while firing) and ``change``."""
        t = int(event_time_ms)
        if status == "firing":
            start = self._open[key] = t
            end = max(t, (history.clock_ms or t) + 1)
        else:
            start = self._open.pop(key, t)
            end = max(t, start)
        before = history.span(start - self.window_ms, start)
        during = history.span(start, end) if end > start else (None, 0)
        if history.agg == "sum" and during[0] is not None:  # a total per window_ms, like before
            during = (during[0] * self.window_ms / (end - start), during[1])
        b = _part(*before, start - self.window_ms, start)
        d = _part(*during, start, end)
        change = None
        if b["value"] is not None and d["value"] is not None and d["n"]:
            change = d["value"] - b["value"]
        return {"before": b, "during": d, "change": change}

    def snapshot(self) -> dict[str, int]:
        return dict(self._open)

    def restore(self, state: dict[str, Any]) -> None:
        self._open = {str(k): int(v) for k, v in state.items()}
