"""Training-serving skew: a batch feature and its streaming twin should agree.

A pair such as a 7-day count computed offline and the same count computed online is compared on
every event that has both. A disagreement beyond the tolerance is counted; when the share of
disagreements among the last ``window`` compared events rises above ``max_rate`` (with at least
``min_samples`` compared) the check fires, and it resolves once the share falls to
``max_rate / 2`` or below (hysteresis, so a rate hovering at the limit does not flap).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.streams.detectors.base import Detection
from driftline.streams.params import choice_param, float_param, int_param

MODES = ("relative", "absolute")


class SkewCheck:
    """Rolling disagreement rate between two aligned value streams.

    Parameters
    ----------
    tolerance
        Allowed difference: ``|b - s| <= tolerance * max(|b|, 1)`` (relative) or
        ``|b - s| <= tolerance`` (absolute).
    mode
        ``"relative"`` or ``"absolute"``.
    window
        Number of most recent compared events the rate is computed over.
    max_rate
        Disagreement share above which the check fires.
    min_samples
        Compared events needed before the check may fire.

    Examples
    --------
    >>> import numpy as np
    >>> c = SkewCheck(tolerance=0.1, window=10, max_rate=0.2, min_samples=5)
    >>> b = np.full(20, 10.0)
    >>> s = np.r_[np.full(10, 10.5), np.full(10, 13.0)]
    >>> n, changes = c.update(b, s)
    >>> n, [(d.index, d.status) for d in changes]
    (10, [(12, 'firing')])
    """

    def __init__(
        self,
        tolerance: float = 0.01,
        mode: str = "relative",
        window: int = 1000,
        max_rate: float = 0.01,
        min_samples: int = 100,
    ) -> None:
        self.tolerance = float_param("tolerance", tolerance, low=0.0, low_open=False)
        self.mode = choice_param("mode", mode, MODES)
        self.window = int_param("window", window, minimum=1)
        self.max_rate = float_param("max_rate", max_rate, low=0.0, high=1.0, low_open=False)
        self.min_samples = int_param("min_samples", min_samples, minimum=1)
        self._flags = np.zeros(0, dtype=np.int8)  # the last ``window`` compared events
        self._compared = 0
        self._firing = False
        self._rate = float("nan")

    @property
    def drift_detected(self) -> bool:
        return self._firing

    @property
    def statistic(self) -> float:
        """Disagreement share over the window after the last update (NaN before any)."""
        return self._rate

    @property
    def p_value(self) -> None:
        return None

    def update(self, batch: np.ndarray, streaming: np.ndarray) -> tuple[int, list[Detection]]:
        """Compare a batch of aligned pairs; return (disagreements, firing/resolved changes)."""
        b = np.asarray(batch, dtype=np.float64)
        s = np.asarray(streaming, dtype=np.float64)
        ok = np.isfinite(b) & np.isfinite(s)
        pos = np.flatnonzero(ok)
        diff = np.abs(b[pos] - s[pos])
        limit = self.tolerance * (np.maximum(np.abs(b[pos]), 1.0) if self.mode == "relative"
                                  else 1.0)  # fmt: skip
        flags = (diff > limit).astype(np.int8)
        if flags.size == 0:
            return 0, []
        hist = np.concatenate([self._flags, flags])
        c = np.concatenate([[0], np.cumsum(hist, dtype=np.int64)])
        n_prev = self._flags.size
        ends = np.arange(n_prev + 1, hist.size + 1)  # window ends after each new flag
        starts = np.maximum(ends - self.window, 0)
        counts = ends - starts
        rates = (c[ends] - c[starts]) / counts
        seen = self._compared + np.arange(1, flags.size + 1)
        high = (rates > self.max_rate) & (seen >= self.min_samples)
        low = rates <= self.max_rate / 2
        out: list[Detection] = []
        firing = self._firing
        j = 0
        while j < flags.size:
            cand = np.flatnonzero(low[j:] if firing else high[j:])
            if cand.size == 0:
                break
            j += int(cand[0])
            firing = not firing
            out.append(Detection(
                index=int(pos[j]), statistic=float(rates[j]), p_value=None,
                threshold=self.max_rate, n_reference=0, n_current=int(counts[j]),
                status="firing" if firing else "resolved",
            ))  # fmt: skip
            j += 1
        self._firing = firing
        self._flags = hist[-self.window :].copy()
        self._compared += int(flags.size)
        self._rate = float(rates[-1])
        return int(flags.sum()), out

    def snapshot(self) -> dict[str, Any]:
        return {"flags": self._flags.tolist(), "compared": self._compared,
                "firing": self._firing, "rate": self._rate}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self._flags = np.asarray(state["flags"], dtype=np.int8)
        self._compared = int(state["compared"])
        self._firing = bool(state["firing"])
        self._rate = float(state["rate"]) if state["rate"] is not None else float("nan")
