"""What the detectors that wrap one river detector share: firing/resolved state with a cooldown,
the read-only properties, and snapshots that pickle the river object."""

from __future__ import annotations

import base64
import math
import pickle
from typing import Any, ClassVar

from driftline.errors import DriftlineError
from driftline.streams.detectors.base import DriftDetector, check_state_params

__all__ = ["RiverWrapper"]


class RiverWrapper(DriftDetector):
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
    def drift_detected(self) -> bool:
        """True from a detection until ``cooldown`` values pass without another."""
        return self._firing

    @property
    def statistic(self) -> float:
        """See the class docstring (NaN before any value)."""
        return self._statistic

    @property
    def p_value(self) -> float | None:
        """Always None: these are bound / threshold tests."""
        return None

    @property
    def n_seen(self) -> int:
        """Finite values consumed."""
        return self._n_seen

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
        """Plain-data state; the river detector is pickled, base64-encoded, under ``"river"``.

        Only `restore` snapshots you produced yourself: unpickling runs code.
        """
        return {
            "detector": self.name,
            "params": self._params(),
            "river": base64.b64encode(pickle.dumps(self._river, protocol=5)).decode("ascii"),
            "firing": self._firing,
            "since": self._since,
            "statistic": None if math.isnan(self._statistic) else self._statistic,
            "n_seen": self._n_seen,
            "n_detections": self._n_detections,
            **self._extra_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` taken by a detector with the same hyperparameters.

        Raises
        ------
        DriftlineError
            If ``state`` is not a snapshot of this kind with these hyperparameters.
        """
        check_state_params(self.name, state, self._params())
        noun = self._noun or f"a {self.name}"
        try:
            river = pickle.loads(base64.b64decode(state["river"]))
            firing, since = bool(state["firing"]), int(state["since"])
            stat = state["statistic"]
            n_seen, n_det = int(state["n_seen"]), int(state["n_detections"])
            extra = self._load_extra(state)
        except (KeyError, TypeError, ValueError, pickle.UnpicklingError) as exc:
            raise DriftlineError(f"state: not {noun} detector snapshot ({exc!r})") from exc
        if type(river) is not type(self._river):
            raise DriftlineError(
                f"state: 'river' holds a {type(river).__name__}, not {noun} detector"
            )
        self._river, self._firing, self._since = river, firing, since
        self._statistic = math.nan if stat is None else float(stat)
        self._n_seen, self._n_detections = n_seen, n_det
        self._apply_extra(extra)
