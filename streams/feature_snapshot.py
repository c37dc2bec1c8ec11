"""The plain-data snapshot of a `streams.features.FeatureEngine`: its format and its checks.

A snapshot is JSON-able data (lists, dicts, ints, floats, strs, None)::

    {"version": 2, "grace_ms": ..., "watermark_ms": ..., "seq": ...,
     "features": [FeatureDef as a dict, ...],
     "states": [{"features": [names], "entities": [...], ...state columns...}, ...]}

with one entry in ``states`` per shared window state (`streams.feature_time_state`,
`streams.feature_member_state` write and read their own columns). `EngineSnapshot.parse`
checks a snapshot against the engine it is restored into: state is never carried across a change
of the features or of ``grace_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from driftline.errors import DriftlineError, SpecError
from driftline.streams.feature_defs import FeatureDef

__all__ = ["SNAPSHOT_VERSION", "EngineSnapshot"]

SNAPSHOT_VERSION = 2


@dataclass(frozen=True)
class EngineSnapshot:
    """A feature engine's state: position in the stream and one entry per window state."""

    grace_ms: int
    watermark_ms: int | None
    seq: int
    features: list[dict[str, Any]]
    states: list[Mapping[str, Any]]

    def to_data(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "grace_ms": self.grace_ms,
            "watermark_ms": self.watermark_ms,
            "seq": self.seq,
            "features": self.features,
            "states": self.states,
        }

    @classmethod
    def parse(
        cls, state: Mapping[str, Any], features: Sequence[FeatureDef], grace_ms: int
    ) -> EngineSnapshot:
        """Read `to_data` output (possibly after a JSON or pickle round trip) taken by an
        engine with ``features`` and ``grace_ms``.

        Raises
        ------
        SpecError
            If the snapshot was taken with other features or another ``grace_ms``.
        DriftlineError
            If ``state`` is not a snapshot of this version.
        """
        try:
            version = state["version"]
            snap_feats = [dict(f) for f in state["features"]]
            snap_grace = state["grace_ms"]
            watermark = state["watermark_ms"]
            seq = state["seq"]
            states = list(state["states"])
        except (KeyError, TypeError) as exc:
            raise DriftlineError(f"state: not a FeatureEngine snapshot ({exc!r})") from exc
        if version != SNAPSHOT_VERSION:
            raise DriftlineError(
                f"state: snapshot version {version!r}; expected {SNAPSHOT_VERSION}"
            )
        own = [asdict(f) for f in features]
        if snap_feats != own or snap_grace != grace_ms:
            raise SpecError(
                f"restore: the snapshot was taken with features {snap_feats} and grace_ms "
                f"{snap_grace}; got {own} and {grace_ms}. "
                "Pass the same features and grace_ms (state is not carried across spec changes)"
            )
        for key, val in (("watermark_ms", watermark), ("seq", seq)):
            if (val is not None or key == "seq") and (
                isinstance(val, bool) or not isinstance(val, int)
            ):
                raise DriftlineError(f"state: {key} {val!r}; expected an int")
        return cls(snap_grace, watermark, seq, snap_feats, states)
