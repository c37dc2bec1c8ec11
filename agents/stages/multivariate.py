"""Multivariate stage: each ``[[multivariate]]`` detector on the rows of its features.

A batch's rows are the frame's vector columns of the entry's features, stacked (rows with a
missing value are skipped by the detector). Episode changes become alerts of kind
``multivariate`` (with the window's first row, from a
:class:`~driftline.streams.positions.PositionLog` of the complete rows); the window's mean
reconstruction error is the detector's reading, and its limits go to
``driftline_multivariate_limit``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.agents.stages.alert_episodes import AlertEpisodes
from driftline.agents.stages.alerts import AlertDocs
from driftline.agents.stages.detect import POSITIONS_MAX
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome
from driftline.spec import MultivariateSpec, PipelineSpec, build_multivariate
from driftline.streams.positions import PositionLog


def multivariate_target(m: MultivariateSpec) -> str:
    """What alerts and metrics name as the target of entry ``m``: its features, comma-joined."""
    return ",".join(m.features)


class MultivariateDetection:
    """One partition's ``[[multivariate]]`` detectors (state in the partition's snapshot)."""

    def __init__(self, spec: PipelineSpec, episodes: AlertEpisodes, alerts: AlertDocs) -> None:
        self.detectors = [(m, build_multivariate(m)) for m in spec.multivariate]
        self.episodes = episodes
        self.alerts = alerts
        # where each detector's window starts (alerts' window bounds): its complete rows
        self.positions = {
            m.name: PositionLog(min(int(det.window_size), POSITIONS_MAX))
            for m, det in self.detectors
        }

    def detect(self, frame: Frame, out: BatchOutcome, now_ms: int) -> None:
        """Update every detector with the batch's rows; alerts and readings go to ``out``."""
        off_arr = np.asarray(frame.records.offsets, dtype=np.int64)
        for m, det in self.detectors:
            rows = np.column_stack(
                [np.asarray(frame.vector[f], dtype=np.float64) for f in m.features]
            )
            complete = np.isfinite(rows).all(axis=1)
            target = multivariate_target(m)
            log = self.positions[m.name]
            for d in det.update_many(rows):
                if not self.episodes.changes(m.name, d.status):
                    continue
                i = d.index
                start = log.window_start(frame.times, off_arr, complete, i, d.n_current)
                off, t = frame.records.offsets[i], int(frame.times[i])
                doc = self.alerts.multivariate(m, d, frame.records.topic, off, t, now_ms, start)
                self.alerts.emit(out, target, doc)
            log.extend(frame.times, off_arr, complete)
            out.detector_readings.append((m.name, target, det.statistic, None))
            out.multivariate_limits.append((m.name, *det.limits))

    @staticmethod
    def _key(m: MultivariateSpec) -> str:
        return f"{m.name}|{m.method}|{m.features}|{sorted(m.params.items())}|{m.reference_profile}"

    def snapshot(self) -> dict[str, Any]:
        return {
            "detectors": {self._key(m): det.snapshot() for m, det in self.detectors},
            "positions": {self._key(m): self.positions[m.name].snapshot()
                          for m, _ in self.detectors},
        }  # fmt: skip

    def restore(self, saved: dict[str, Any]) -> None:
        """Detectors whose definition changed (or are new) start afresh."""
        detectors, positions = saved.get("detectors", {}), saved.get("positions", {})
        for m, det in self.detectors:
            snap = detectors.get(self._key(m))
            if snap is not None:
                det.restore(snap)
                if self._key(m) in positions:
                    self.positions[m.name].restore(positions[self._key(m)])
