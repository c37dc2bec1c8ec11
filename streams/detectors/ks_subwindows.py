"""The samples of KS ``reference_mode="previous_window"``: two adjacent event-time windows that
slide by a sub-window.

Event time is cut into sub-windows of ``window_ms / sub_windows`` milliseconds (sub-window ``s``
holds the events with ``s <= ts * sub_windows / window_ms < s + 1``). When sub-window ``s``
completes (the first event of a later one arrives), the current sample is sub-windows
``s - k + 1 .. s`` (the last ``window_ms``) and the reference ``s - 2k + 1 .. s - k`` (the
``window_ms`` before), ``k = sub_windows``: "today against yesterday", every ``window_ms / k``.
A change anywhere inside a window is therefore compared, ``k`` sub-windows later, with a
current sample that lies wholly after it and a reference at most one sub-window of which lies
after it; with ``k = 1`` this is the tumbling "window against the previous window".

Each completed sub-window is sorted once; an evaluation merges ``2k`` sorted arrays and computes
the exact integer ``n1 n2 D`` from them (`ks_numerator`), so the cost per event is
``O(k log n)`` amortised, independent of when evaluations happen inside a batch.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

__all__ = ["SubWindows", "ks_numerator"]


def ks_numerator(ref: np.ndarray, cur: np.ndarray) -> float:
    """``n1 n2 D`` of two sorted samples, exactly as ``scipy.stats.ks_2samp`` computes D.

    Examples
    --------
    >>> from scipy.stats import ks_2samp
    >>> rng = np.random.default_rng(0)
    >>> a, b = np.sort(rng.normal(size=300)), np.sort(rng.normal(0.3, 1, size=200))
    >>> bool(ks_numerator(a, b) / (a.size * b.size) == ks_2samp(a, b).statistic)
    True
    """
    pts = np.concatenate([ref, cur])
    c1 = np.searchsorted(ref, pts, side="right")
    c2 = np.searchsorted(cur, pts, side="right")
    return float(np.abs(cur.size * c1 - ref.size * c2).max())


class SubWindows:
    """Completed sub-windows (sorted) and the open one, for ``2 k`` sub-windows of history.

    Parameters
    ----------
    window_ms
        Length of each of the two compared windows, in milliseconds.
    k
        Sub-windows per window: evaluations every ``window_ms / k``.
    """

    def __init__(self, window_ms: int, k: int) -> None:
        self.window_ms = window_ms
        self.k = k
        self.open_id: int | None = None
        self.open: list[np.ndarray] = []  # values of the open sub-window, unsorted chunks
        self.done: deque[tuple[int, np.ndarray]] = deque()  # (sub-window id, sorted values)

    def ids(self, ts: np.ndarray) -> np.ndarray:
        """Sub-window id of each event time."""
        return np.floor_divide(ts * self.k, self.window_ms)

    def open_count(self) -> int:
        """Values in the open sub-window."""
        return sum(a.size for a in self.open)

    def add(self, values: np.ndarray) -> None:
        """Values of the open sub-window."""
        if values.size:
            self.open.append(values)

    def close(self, new_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Complete the open sub-window and open ``new_id``; return the (reference, current)
        samples of the evaluation at the completed boundary, sorted, or None if there is no open
        sub-window yet."""
        last, self.open_id = self.open_id, new_id
        if last is None:
            return None
        vals = np.sort(np.concatenate(self.open)) if self.open else np.empty(0)
        self.open = []
        self.done.append((last, vals))
        first_kept = last - 2 * self.k + 1
        while self.done and self.done[0][0] < first_kept:
            self.done.popleft()
        return self.samples(last)

    def samples(self, last: int) -> tuple[np.ndarray, np.ndarray]:
        """(reference, current) for the boundary after sub-window ``last``, sorted."""
        split = last - self.k + 1
        ref = [v for s, v in self.done if s < split and v.size]
        cur = [v for s, v in self.done if s >= split and v.size]
        return _merged(ref), _merged(cur)

    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """The samples of the last completed boundary (empty before one)."""
        if not self.done:
            return np.empty(0), np.empty(0)
        return self.samples(self.done[-1][0])

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state."""
        return {
            "open_id": self.open_id,
            "open": np.concatenate(self.open).tolist() if self.open else [],
            "done": [[s, v.tolist()] for s, v in self.done],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` (raises KeyError / TypeError / ValueError if malformed)."""
        open_id = state["open_id"]
        open_vals = np.asarray(state["open"], dtype=np.float64)
        done = deque((int(s), np.sort(np.asarray(v, dtype=np.float64))) for s, v in state["done"])
        if open_vals.ndim != 1 or any(v.ndim != 1 for _, v in done):
            raise ValueError("sub-window values must be lists of numbers")
        ids = [s for s, _ in done]
        if ids != sorted(set(ids)) or (ids and open_id is not None and ids[-1] >= int(open_id)):
            raise ValueError("sub-window ids must increase, up to the open one")
        self.open_id = None if open_id is None else int(open_id)
        self.open = [open_vals] if open_vals.size else []
        self.done = done


def _merged(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.empty(0)
    if len(parts) == 1:
        return parts[0]
    return np.sort(np.concatenate(parts), kind="stable")
