"""Late events: older than the partition's watermark minus grace, so not in any window.

They go to the late topic as dead letters (reason ``late_event``), never silently dropped.
"""

from __future__ import annotations

import numpy as np

from driftline.agents.stages.dead_letters import DeadLetters
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome


class LateEvents:
    """Splits the late rows off a frame (``FeatureBatch.late`` says which)."""

    def __init__(self, late_topic: str, grace_ms: int, dead: DeadLetters) -> None:
        self.late_topic = late_topic
        self.grace_ms = grace_ms
        self.dead = dead

    def split(
        self,
        frame: Frame,
        late: np.ndarray,
        watermark_ms: int | None,
        out: BatchOutcome,
        now_ms: int,
    ) -> Frame:
        """The frame without its late rows; each late row is one message on the late topic."""
        late = np.asarray(late, dtype=bool)
        if not late.any():
            return frame
        for i in np.flatnonzero(late).tolist():
            err = (
                f"event time {int(frame.times[i])} ms is older than the partition watermark "
                f"minus grace (watermark {watermark_ms} ms, grace {self.grace_ms} ms); raise "
                "windows.grace_ms to accept it"
            )
            out.late_events += 1
            out.messages.append(
                self.dead.letter(frame.records[i], "late_event", err, now_ms, self.late_topic)
            )
        return frame.take(np.flatnonzero(~late))
