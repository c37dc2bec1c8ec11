"""Alert episodes: one ``firing`` alert when a detector starts firing, one ``resolved`` when it
stops; detections while it fires extend the episode without new alerts."""

from __future__ import annotations

from typing import Any


class AlertEpisodes:
    """Which detectors (by name) of one partition have an open episode; kept in the snapshot."""

    def __init__(self) -> None:
        self._open: dict[str, bool] = {}

    def changes(self, detector: str, status: str) -> bool:
        """Whether a detection of ``status`` opens or closes ``detector``'s episode (an alert).

        A detector that detects again while firing (ADWIN and the sequential tests report every
        river detection; each restarts their cooldown) adds nothing: its statistic stays on
        ``/metrics``."""
        firing = self._open.get(detector, False)
        if (status == "firing") == firing:
            return False
        self._open[detector] = status == "firing"
        return True

    def snapshot(self) -> dict[str, bool]:
        return dict(self._open)

    def restore(self, saved: dict[str, Any]) -> None:
        self._open = {k: bool(v) for k, v in saved.items()}
