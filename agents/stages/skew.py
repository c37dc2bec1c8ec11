"""Training-serving skew: each batch feature against its streaming twin, per event."""

from __future__ import annotations

from typing import Any

from driftline.agents.stages.alerts import AlertDocs
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome
from driftline.spec import PipelineSpec, SkewCheckSpec
from driftline.streams.skew import SkewCheck


class SkewChecks:
    """The spec's ``[[skew_checks]]`` of one partition; an alert (kind ``skew``) when the share
    of disagreeing events crosses ``max_rate``, and when it falls back."""

    def __init__(self, spec: PipelineSpec, alerts: AlertDocs) -> None:
        self.checks = [(c, SkewCheck(**c.params)) for c in spec.skew_checks]
        self.alerts = alerts

    def check(self, frame: Frame, out: BatchOutcome, now_ms: int) -> None:
        """Compare the joined ``frame.vector`` columns; count disagreements, emit alerts."""
        for c, chk in self.checks:
            n_dis, changes = chk.update(frame.vector[c.batch], frame.vector[c.streaming])
            out.skew_disagreements[c.name] += n_dis
            for d in changes:
                off, t = frame.records.offsets[d.index], int(frame.times[d.index])
                doc = self.alerts.skew(c, d, frame.records.topic, off, t, now_ms)
                self.alerts.emit(out, doc["target"], doc)

    @staticmethod
    def _key(c: SkewCheckSpec) -> str:
        return f"{c.name}|{sorted(c.params.items())}"

    def snapshot(self) -> dict[str, Any]:
        return {self._key(c): chk.snapshot() for c, chk in self.checks}

    def restore(self, saved: dict[str, Any]) -> None:
        """Checks whose definition changed (or are new) start afresh."""
        for c, chk in self.checks:
            snap = saved.get(self._key(c))
            if snap is not None:
                chk.restore(snap)
