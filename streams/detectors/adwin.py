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
from driftline.streams.params import choice_param, int_param, probability_param

__all__ = ["DIRECTIONS", "AdwinDetector"]

#: The ways a one-sided detector may watch: increases, decreases or both.
DIRECTIONS = ("both", "up", "down")


class AdwinDetector(RiverWrapper):
    """River's ADWIN with firing/resolved states, optionally one-sided.

    A change river's ADWIN detects opens an episode (a ``"firing"`` `Detection`) when it goes
    the watched way (``direction``): ``"up"`` counts only cuts where the mean of the window ADWIN
    kept is above the mean of the older part it dropped (an error rate that got worse),
    ``"down"`` only the opposite, ``"both"`` every cut. ``statistic`` is ``|mean(dropped) -
    mean(kept)|`` of the last counted cut. The episode stays open until ``cooldown`` further
    values pass without another counted cut, then ``"resolved"`` is emitted on the value that
    completes the cooldown (with ``cooldown=0``, right after the firing one). A counted cut while
    the episode is open extends it (restarts the cooldown) without a new `Detection`;
    `n_detections` counts every counted cut. A cut the other way still shortens ADWIN's window
    (river forgets the older data) but raises nothing.

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
    direction
        Which changes of the mean open an episode: ``"both"`` (default), ``"up"`` (increases
        only; the default of a spec's ``adwin`` on the ``error`` target, where only a worse
        model is concept drift) or ``"down"``.

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
    >>> det.in_drift, det.n_detections
    (False, 1)

    Watching increases only, a fall of the mean raises nothing:

    >>> up = AdwinDetector(cooldown=500, direction="up")
    >>> up.update_many(np.concatenate([rng.normal(1.5, 1.0, 2_000), rng.normal(0, 1, 2_000)]))
    []
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
        direction: str = "both",
    ) -> None:
        self.delta = probability_param("delta", delta)
        self.clock = int_param("clock", clock, 1)
        self.max_buckets = int_param("max_buckets", max_buckets, 2)
        self.min_window_length = int_param("min_window_length", min_window_length, 1)
        self.grace_period = int_param("grace_period", grace_period, 0)
        self.cooldown = int_param("cooldown", cooldown, 0)
        self.direction = choice_param("direction", direction, DIRECTIONS)
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
        sign = {"both": 0, "up": 1, "down": -1}[self.direction]
        # river's ADWIN.update is ``if drift_detected: _reset()`` then ``_helper.update(x)``;
        # calling its Cython helper directly does the same without the Python-level overhead
        helper = adwin._helper
        # the window before each update: an update that detects nothing drops nothing, so it is
        # the previous one's plus the value (river's helper adds the same floats: tested)
        pre_width, pre_total = helper.get_width(), helper.get_total()
        for j, x in enumerate(vals.tolist()):
            # river resets the whole window on the update after a detection
            if adwin._drift_detected:
                adwin._reset()
                helper = adwin._helper
                pre_width, pre_total = 0.0, 0.0
            detected = helper.update(x)
            adwin._drift_detected = detected
            counted = False
            if not detected:
                pre_width += 1.0
                pre_total += x
            else:
                width, total = helper.get_width(), helper.get_total()
                n_old = pre_width + 1.0 - width
                if n_old > 0 and width > 0:
                    signed = total / width - (pre_total + x - total) / n_old
                else:  # pragma: no cover - river always keeps and drops something
                    signed = adwin.estimation
                counted = sign == 0 or signed * sign > 0
            if counted:
                self._statistic = abs(signed)
                self._n_detections += 1
                self._since = 0
                if not self._firing:
                    self._firing = True
                    out.append(self._change(int(pos[j]), int(n_old), int(width), FIRING))
            elif self._firing:
                self._since += 1
            if self._firing and self._since >= cooldown:
                self._firing = False
                out.append(self._change(int(pos[j]), 0, int(adwin.width), RESOLVED))
        self._n_seen += vals.size
        return out

    def _change(self, index: int, n_reference: int, n_current: int, status: str) -> Detection:
        return Detection(
            index=index,
            statistic=self._statistic,
            p_value=None,
            threshold=self.delta,
            n_reference=n_reference,
            n_current=n_current,
            status=status,
        )
