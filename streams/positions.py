"""Where a detector's current window starts: event time and offset of its oldest value.

A detection reports ``n_current``, the values in the window it judged, ending at the trigger. To
name the window's first record, `PositionLog` remembers the (event time, offset) of the last
``capacity`` values a detector was fed (finite values only, as detectors skip the others).

Examples
--------
>>> log = PositionLog(capacity=3)
>>> log.extend(np.array([100, 110, 120]), np.array([0, 1, 2]), np.array([True, False, True]))
>>> log.window_start(np.array([130, 140]), np.array([3, 4]), np.array([True, True]), 1, 4)
(100, 0)
>>> log.window_start(np.array([130, 140]), np.array([3, 4]), np.array([True, True]), 1, 2)
(130, 3)
>>> log.window_start(np.array([130]), np.array([3]), np.array([True]), 0, 9) is None
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.snapshots import reading_snapshot

__all__ = ["PositionLog"]


class PositionLog:
    """The (event time, offset) of the last ``capacity`` values fed to a detector.

    Parameters
    ----------
    capacity
        Values remembered (>= 1); older window starts are reported as unknown (None).
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise SpecError(f"capacity: got {capacity!r}; expected an integer >= 1")
        self.capacity = capacity
        self.ts = np.empty(0, dtype=np.int64)
        self.offsets = np.empty(0, dtype=np.int64)

    def window_start(
        self,
        ts: np.ndarray,
        offsets: np.ndarray,
        finite: np.ndarray,
        index: int,
        n_current: int,
    ) -> tuple[int, int] | None:
        """Position of the first of the ``n_current`` values ending at batch row ``index``.

        ``ts``, ``offsets`` and ``finite`` describe the batch being fed (not yet `extend`-ed).
        """
        if n_current < 1:
            return None
        rows = np.flatnonzero(finite[: index + 1])
        back = n_current - 1
        if back < rows.size:
            r = int(rows[rows.size - 1 - back])
            return int(ts[r]), int(offsets[r])
        back -= rows.size
        if back < self.ts.size:
            return int(self.ts[-1 - back]), int(self.offsets[-1 - back])
        return None

    def extend(self, ts: np.ndarray, offsets: np.ndarray, finite: np.ndarray) -> None:
        """Remember the batch's finite rows (keeping the last ``capacity``)."""
        keep = np.flatnonzero(finite)[-self.capacity :]
        self.ts = np.concatenate([self.ts, np.asarray(ts, dtype=np.int64)[keep]])[-self.capacity :]
        self.offsets = np.concatenate([self.offsets, np.asarray(offsets, dtype=np.int64)[keep]])[
            -self.capacity :
        ]

    def snapshot(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "ts": self.ts.tolist(), "offsets": self.offsets.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        with reading_snapshot("position log"):
            ts = np.asarray(state["ts"], dtype=np.int64)
            off = np.asarray(state["offsets"], dtype=np.int64)
        if ts.shape != off.shape or ts.ndim != 1:
            raise DriftlineError("state: position log columns differ in length")
        self.ts, self.offsets = ts[-self.capacity :], off[-self.capacity :]
