"""Cumulative bucket counts for latency histograms, updated a numpy batch at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Seconds; fine enough to read p50/p90/p95/p99 from 1 ms to 60 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
)


class BucketCounts:
    """Prometheus-style histogram state: ``le`` buckets, sum and count.

    Examples
    --------
    >>> import numpy as np
    >>> h = BucketCounts([1.0, 2.0])
    >>> h.add(np.array([0.5, 1.0, 1.5, 3.0]))
    >>> h.cumulative(), h.count, h.total
    ([2, 3, 4], 4, 6.0)
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        b = np.asarray(bounds, dtype=np.float64)
        if b.ndim != 1 or len(b) == 0 or np.any(np.diff(b) <= 0):
            raise ValueError("bucket bounds must be a non-empty, strictly increasing sequence")
        self.bounds = b
        self._counts = np.zeros(len(b) + 1, dtype=np.int64)
        self.total = 0.0
        self.count = 0

    def add(self, values: np.ndarray) -> None:
        """Count a batch of observations (``v`` goes to the first bucket with ``v <= le``)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        idx = np.searchsorted(self.bounds, v, side="left")
        self._counts += np.bincount(idx, minlength=len(self._counts))
        self.total += float(v.sum())
        self.count += int(v.size)

    def cumulative(self) -> list[int]:
        """Cumulative counts per bucket, the last one being ``+Inf``."""
        return np.cumsum(self._counts).tolist()

    def quantile(self, q: float) -> float:
        """Estimate the ``q`` quantile by linear interpolation inside a bucket (like PromQL)."""
        if self.count == 0:
            return float("nan")
        cum = np.cumsum(self._counts)
        rank = q * self.count
        i = int(np.searchsorted(cum, rank, side="left"))
        if i >= len(self.bounds):
            return float(self.bounds[-1])
        lo = 0.0 if i == 0 else float(self.bounds[i - 1])
        below = 0 if i == 0 else int(cum[i - 1])
        inside = int(self._counts[i])
        return lo + (float(self.bounds[i]) - lo) * ((rank - below) / inside if inside else 0.0)
