"""ADWIN (adaptive windowing) drift detection, wrapping `river.drift.ADWIN`."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from river.drift import ADWIN

from driftline.streams.detectors.base import (
    FIRING,
    RESOLVED,
    Detection,
    finite_values,
)
from driftline.streams.detectors.river_base import RiverWrapper
from driftline.streams.params import int_param, probability_param

__all__ = ["AdwinDetector"]


class AdwinDetector(RiverWrapper):
    """River's ADWIN with firing/resolved states.

    Every change river's ADWIN detects becomes a ``"firing"`` `Detection` whose ``statistic``
    is ``|mean(dropped) - mean(kept)|``: the absolute difference between the mean of the older
    sub-window ADWIN cut off and the mean of the window it kept. The detector stays firing until
    ``cooldown`` further values pass without a new detection, then emits ``"resolved"`` on the
    value that completes the cooldown (with ``cooldown=0``, right after the firing one). A new
    river detection while already firing emits another ``"firing"`` `Detection` (one per river
    detection) and restarts the cooldown.

    Values are fed to river one at a time (ADWIN is sequential); non-finite ones are skipped.

    Parameters
    ----------
    delta
        Confidence of the cut test, strictly between 0 and 1 (default 0.002). Smaller: fewer
        false alarms, later detections.
    clock
        Check for a change every ``clock`` values (integer >= 1, default 32).
    max_buckets
        Buckets of each size kept by ADWIN's exponential histogram (integer >= 2, default 5).
    min_window_length
        Smallest sub-window a cut may leave (integer >= 1, default 5).
    grace_period
        Values before the first check (integer >= 0, default 10).
    cooldown
        Values without detection after which a firing detector resolves (integer >= 0,
        default 1000).

    Raises
    ------
    SpecError
        If a hyperparameter is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> det = AdwinDetector(delta=0.002, cooldown=500)
    >>> det.update_many(rng.normal(0.0, 1.0, 2_000))
    []
    >>> changes = det.update_many(rng.normal(1.5, 1.0, 2_000))
    >>> [(c.status, c.index, round(c.statistic, 2)) for c in changes]
    [('firing', 47, 1.28), ('resolved', 547, 1.28)]
    >>> det.drift_detected, det.n_detections
    (False, 1)
    """

    name: ClassVar[str] = "adwin"
    _noun: ClassVar[str] = "an ADWIN"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        cooldown: int = 1000,
    ) -> None:
        self.delta = probability_param("delta", delta)
        self.clock = int_param("clock", clock, 1)
        self.max_buckets = int_param("max_buckets", max_buckets, 2)
        self.min_window_length = int_param("min_window_length", min_window_length, 1)
        self.grace_period = int_param("grace_period", grace_period, 0)
        self.cooldown = int_param("cooldown", cooldown, 0)
        self._river = self._new_adwin()
        self._reset_state()

    def _new_adwin(self) -> ADWIN:
        return ADWIN(
            delta=self.delta,
            clock=self.clock,
            max_buckets=self.max_buckets,
            min_window_length=self.min_window_length,
            grace_period=self.grace_period,
        )

    # ------------------------------------------------------------------ state
    @property
    def width(self) -> int:
        """Current ADWIN window length."""
        return int(self._river.width)

    # ------------------------------------------------------------------ update
    def update_many(self, xs: np.ndarray) -> list[Detection]:
        """Feed a batch to ADWIN in order; return firing/resolved events with batch positions.

        Parameters
        ----------
        xs
            1-D array of values; non-finite ones are skipped.

        Returns
        -------
        list of Detection
            In order; empty when nothing happened.
        """
        vals, pos = finite_values(xs)
        out: list[Detection] = []
        if vals.size == 0:
            return out
        adwin = self._river
        cooldown = self.cooldown
        # river's ADWIN.update is ``if drift_detected: _reset()`` then ``_helper.update(x)``;
        # calling its Cython helper directly does the same without the Python-level overhead
        helper = adwin._helper
        for j, x in enumerate(vals.tolist()):
            # river resets the whole window on the update after a detection
            if adwin._drift_detected:
                adwin._reset()
                helper = adwin._helper
                pre_width, pre_total = 0.0, 0.0
            else:
                pre_width, pre_total = helper.get_width(), helper.get_total()
            detected = helper.update(x)
            adwin._drift_detected = detected
            if detected:
                width, total = helper.get_width(), helper.get_total()
                n_old = pre_width + 1.0 - width
                if n_old > 0 and width > 0:
                    stat = abs((pre_total + x - total) / n_old - total / width)
                else:  # pragma: no cover - river always keeps and drops something
                    stat = abs(adwin.estimation)
                self._statistic = stat
                self._n_detections += 1
                self._firing = True
                self._since = 0
                out.append(
                    Detection(
                        index=int(pos[j]),
                        statistic=stat,
                        p_value=None,
                        threshold=self.delta,
                        n_reference=int(n_old),
                        n_current=int(width),
                        status=FIRING,
                    )
                )
            elif self._firing:
                self._since += 1
            if self._firing and self._since >= cooldown:
                self._firing = False
                out.append(
                    Detection(
                        index=int(pos[j]),
                        statistic=self._statistic,
                        p_value=None,
                        threshold=self.delta,
                        n_reference=0,
                        n_current=int(adwin.width),
                        status=RESOLVED,
                    )
                )
        self._n_seen += vals.size
        return out
