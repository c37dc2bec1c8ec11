"""Multivariate stage: each ``[[multivariate]]`` detector on the rows of its features.

A batch's rows are the frame's vector columns of the entry's features, stacked (rows with a
missing value are skipped by the detector). Episode changes become alerts of kind
``multivariate``; the window's mean reconstruction error is the detector's reading, and its
limits go to ``driftline_multivariate_limit``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.agents.stages.alert_episodes import AlertEpisodes
from driftline.agents.stages.alerts import AlertDocs
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome
from driftline.spec import MultivariateSpec, PipelineSpec, build_multivariate


def multivariate_target(m: MultivariateSpec) -> str:
    """What alerts and metrics name as the target of entry ``m``: its features, comma-joined."""
    return ",".join(m.features)


class MultivariateDetection:
    """One partition's ``[[multivariate]]`` detectors (state in the partition's snapshot)."""

    def __init__(self, spec: PipelineSpec, episodes: AlertEpisodes, alerts: AlertDocs) -> None:
        self.detectors = [(m, build_multivariate(m)) for m in spec.multivariate]
        self.episodes = episodes
        self.alerts = alerts

    def detect(self, frame: Frame, out: BatchOutcome, now_ms: int) -> None:
        """Update every detector with the batch's rows; alerts and readings go to ``out``."""
        for m, det in self.detectors:
            rows = np.column_stack(
                [np.asarray(frame.vector[f], dtype=np.float64) for f in m.features]
            )
            target = multivariate_target(m)
            for d in det.update_many(rows):
                if not self.episodes.changes(m.name, d.status):
                    continue
                i = d.index
                off, t = frame.records.offsets[i], int(frame.times[i])
                doc = self.alerts.multivariate(m, d, frame.records.topic, off, t, now_ms)
                self.alerts.emit(out, target, doc)
            out.detector_readings.append((m.name, target, det.statistic, None))
            out.multivariate_limits.append((m.name, *det.limits))

    @staticmethod
    def _key(m: MultivariateSpec) -> str:
        return f"{m.name}|{m.method}|{m.features}|{sorted(m.params.items())}|{m.reference_profile}"

    def snapshot(self) -> dict[str, Any]:
        return {self._key(m): det.snapshot() for m, det in self.detectors}

    def restore(self, saved: dict[str, Any]) -> None:
        """Detectors whose definition changed (or are new) start afresh."""
        for m, det in self.detectors:
            snap = saved.get(self._key(m))
            if snap is not None:
                det.restore(snap)
