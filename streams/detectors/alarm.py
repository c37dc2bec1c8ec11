"""False-alarm control shared by detectors: hysteresis, cooldown and resolution.

A detector turns each evaluation into a boolean "beyond threshold" (``p < alpha``, a summary
statistic out of bounds, ...). `Alarm` turns that boolean sequence into ``"firing"`` /
``"resolved"`` state changes:

* fire after ``n_confirm`` consecutive evaluations beyond the threshold;
* resolve after ``n_clear`` consecutive *quiet* evaluations: by default those within the
  threshold, or, when the detector gives a separate ``quiet`` mask, those clearly back to the
  reference (e.g. ``p >= clear_alpha`` with ``clear_alpha`` much larger than ``alpha``), so that
  a sustained drift whose statistic hovers around the firing threshold stays one episode;
* after resolving, do not fire again before ``cooldown`` more values have been consumed.

The per-detector ``min_samples`` (no evaluation before enough data) lives in the detectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.streams.params import int_param
from driftline.streams.snapshots import reading_snapshot

__all__ = ["Alarm"]


class Alarm:
    """Hysteresis state machine over evaluations.

    Parameters
    ----------
    n_confirm
        Consecutive beyond-threshold evaluations needed to fire (>= 1).
    n_clear
        Consecutive within-threshold evaluations needed to resolve (>= 1).
    cooldown
        Values to consume after a resolution before the next firing is allowed (>= 0).

    Examples
    --------
    >>> a = Alarm(n_confirm=2, n_clear=3)
    >>> a.feed(np.array([True, False, True, True, True, False, False, False]), np.arange(1, 9))
    [(3, 'firing'), (7, 'resolved')]
    >>> a.firing
    False
    """

    def __init__(self, n_confirm: int = 1, n_clear: int = 1, cooldown: int = 0) -> None:
        self.n_confirm = int_param("n_confirm", n_confirm, 1)
        self.n_clear = int_param("n_clear", n_clear, 1)
        self.cooldown = int_param("cooldown", cooldown, 0)
        self.firing = False
        self.run = 0  # consecutive evaluations pushing towards the other state
        self.resolved_at: int | None = None  # n_seen when the last resolution happened

    def params(self) -> dict[str, int]:
        """The hyperparameters, for snapshots."""
        return {"n_confirm": self.n_confirm, "n_clear": self.n_clear, "cooldown": self.cooldown}

    def feed(
        self, beyond: np.ndarray, seen: np.ndarray, quiet: np.ndarray | None = None
    ) -> list[tuple[int, str]]:
        """Consume evaluations; return ``(evaluation position, status)`` of each state change.

        Parameters
        ----------
        beyond
            Boolean per evaluation: the statistic is beyond the detector's threshold.
        seen
            The detector's value count (``n_seen``) at each evaluation, for the cooldown.
        quiet
            Boolean per evaluation: the statistic is back to the reference (counts towards
            resolving). Default ``~beyond``.

        Examples
        --------
        A statistic that hovers around its threshold stays one episode when only clearly
        quiet evaluations count towards resolving:

        >>> a = Alarm(n_confirm=1, n_clear=2)
        >>> beyond = np.array([True, False, False, True, False, False, False])
        >>> quiet = np.array([False, False, False, False, False, True, True])
        >>> a.feed(beyond, np.arange(1, 8), quiet)
        [(0, 'firing'), (6, 'resolved')]
        """
        n = beyond.size
        if n == 0:
            return []
        if quiet is None:
            quiet = ~beyond
        if not self.firing and not beyond.any():
            self.run = 0
            return []
        if self.firing and not quiet.any():
            self.run = 0
            return []
        out: list[tuple[int, str]] = []
        firing, run, resolved_at = self.firing, self.run, self.resolved_at
        need_on, need_off, cooldown = self.n_confirm, self.n_clear, self.cooldown
        for i, (b, q, s) in enumerate(
            zip(beyond.tolist(), quiet.tolist(), seen.tolist(), strict=True)
        ):
            if firing:
                run = run + 1 if q else 0
                if run >= need_off:
                    firing, run, resolved_at = False, 0, s
                    out.append((i, "resolved"))
            else:
                run = run + 1 if b else 0
                if run >= need_on and (resolved_at is None or s - resolved_at >= cooldown):
                    firing, run = True, 0
                    out.append((i, "firing"))
        self.firing, self.run, self.resolved_at = firing, run, resolved_at
        return out

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state."""
        return {"firing": self.firing, "run": self.run, "resolved_at": self.resolved_at}

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot`."""
        with reading_snapshot("alarm"):
            firing, run, resolved_at = (
                bool(state["firing"]),
                int(state["run"]),
                state["resolved_at"],
            )
        self.firing, self.run = firing, run
        self.resolved_at = None if resolved_at is None else int(resolved_at)
