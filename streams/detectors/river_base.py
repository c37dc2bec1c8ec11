"""What the detectors that wrap one river detector share: firing/resolved state with a cooldown,
the read-only properties (`streams.detectors.base.FlaggedDetector`), and snapshots holding the
river object's state as plain data."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from driftline.errors import DriftlineError
from driftline.streams.detectors.base import FlaggedDetector, check_state_params
from driftline.streams.plain_state import restore_river_detector, river_detector_state

__all__ = ["RiverWrapper"]


class RiverWrapper(FlaggedDetector):
    """Base of `AdwinDetector` and the sequential detectors (`_river` is the river object).

    Subclasses set ``_river`` and call ``_reset_state`` in ``__init__``; they may keep more state
    through ``_extra_state`` / ``_load_extra``.
    """

    #: "an ADWIN", "a ddm", ...: how errors name a snapshot of this kind
    _noun: ClassVar[str] = ""

    _river: Any

    def _reset_state(self) -> None:
        self._firing = False
        self._since = 0  # values since the last detection, while firing
        self._statistic = math.nan
        self._n_seen = 0
        self._n_detections = 0

    # ------------------------------------------------------------------ read-only state
    @property
    def n_detections(self) -> int:
        """River detections so far."""
        return self._n_detections

    # ------------------------------------------------------------------ snapshot
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: dict[str, Any]) -> Any:
        """Parse the extra state (raise KeyError/TypeError/ValueError if malformed)."""
        return None

    def _apply_extra(self, parsed: Any) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state; the river detector's fields under ``"river"``
        (`streams.plain_state.river_detector_state`: numbers and lists, no pickle)."""
        return {
            "detector": self.name,
            "params": self._params(),
            "river": river_detector_state(self._river),
            "firing": self._firing,
            "since": self._since,
            "statistic": None if math.isnan(self._statistic) else self._statistic,
            "n_seen": self._n_seen,
            "n_detections": self._n_detections,
            **self._extra_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` taken by a detector with the same hyperparameters.

        The river detector is rebuilt from this detector's hyperparameters, then its state
        fields are set from ``state["river"]``, each checked; nothing in ``state`` is executed.

        Raises
        ------
        DriftlineError
            If ``state`` is not a snapshot of this kind with these hyperparameters.
        """
        check_state_params(self.name, state, self._params())
        noun = self._noun or f"a {self.name}"
        try:
            river = restore_river_detector(self._river, state["river"])
            firing, since = state["firing"], state["since"]
            stat = state["statistic"]
            n_seen, n_det = state["n_seen"], state["n_detections"]
            if type(firing) is not bool or any(type(v) is not int for v in (since, n_seen, n_det)):
                raise TypeError("firing must be a boolean, since/n_seen/n_detections integers")
            if stat is not None and type(stat) not in (int, float):
                raise TypeError(f"statistic must be a number or null, got {stat!r}"[:120])
            extra = self._load_extra(state)
        except (KeyError, TypeError, ValueError, DriftlineError) as exc:
            raise DriftlineError(f"state: not {noun} detector snapshot ({exc})") from exc
        self._river, self._firing, self._since = river, firing, since
        self._statistic = math.nan if stat is None else float(stat)
        self._n_seen, self._n_detections = n_seen, n_det
        self._apply_extra(extra)
