"""Detect stage: the drift detectors on the batch's own values (fields, features, prediction).

Detectors on the label side (``error``, ``label``) are fed by joined labels instead (see
:mod:`.labels`). Alerts name where the detector's window starts, from each target's
:class:`~driftline.streams.positions.PositionLog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from driftline.agents.stages.alert_episodes import AlertEpisodes
from driftline.agents.stages.alerts import AlertDocs
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome, DetectorInputs
from driftline.spec import LABEL_TARGETS, PREDICTION_TARGET, DetectorSpec
from driftline.streams.positions import PositionLog

#: Values whose positions are kept per detector target, to report where alert windows start
#: (at least a KS window_size; adaptive windows beyond this report an unknown start).
POSITIONS_DEFAULT, POSITIONS_MAX = 2_000, 20_000


class InputDetection:
    """Feeds each input-side detector its column, turns episode changes into alerts."""

    def __init__(
        self,
        detectors: Sequence[tuple[DetectorSpec, Any]],
        episodes: AlertEpisodes,
        alerts: AlertDocs,
    ) -> None:
        self.detectors = [(d, det) for d, det in detectors if d.target not in LABEL_TARGETS]
        self.episodes = episodes
        self.alerts = alerts
        #: keep each batch's detector inputs on its outcome (offline reports; off in a worker)
        self.keep_inputs = False
        # where each input target's detector windows start (alerts' window bounds)
        self.positions: dict[str, PositionLog] = {}
        for d, _ in self.detectors:
            cap = max(int(d.params.get("window_size", 0) or 0), POSITIONS_DEFAULT)
            old = self.positions.get(d.target)
            if old is None or old.capacity < cap:
                self.positions[d.target] = PositionLog(min(cap, POSITIONS_MAX))

    def detect(self, frame: Frame, out: BatchOutcome, now_ms: int) -> None:
        """Update every detector with the batch; alerts and readings go to ``out``."""
        n = len(frame)
        ts_arr, scores, vector = frame.times, frame.scores, frame.vector
        off_arr = np.asarray(frame.records.offsets, dtype=np.int64)
        topic, offsets = frame.records.topic, frame.records.offsets
        finite: dict[str, np.ndarray] = {}
        if self.keep_inputs:
            out.detector_inputs = DetectorInputs(frame.records.partition, ts_arr, off_arr, {})
        for dspec, det in self.detectors:
            values = scores if dspec.target == PREDICTION_TARGET else vector[dspec.target]
            if values is None:
                continue
            if out.detector_inputs is not None:
                out.detector_inputs.values[dspec.target] = values
            if dspec.target not in finite:
                finite[dspec.target] = (
                    np.isfinite(values) if values.dtype != object else np.ones(n, dtype=bool)
                )
            if getattr(det, "reference_mode", None) == "previous_window":
                detections = det.update_many(values, ts_ms=ts_arr)
            else:
                detections = det.update_many(values)
            for d in detections:
                if not self.episodes.changes(dspec.name, d.status):
                    continue
                start = self.positions[dspec.target].window_start(
                    ts_arr, off_arr, finite[dspec.target], d.index, d.n_current
                )
                doc = self.alerts.detection(
                    dspec, d, topic, offsets[d.index], int(ts_arr[d.index]), now_ms, start
                )
                self.alerts.emit(out, dspec.target, doc)
            out.detector_readings.append((dspec.name, dspec.target, det.statistic, det.p_value))
        for target, mask in finite.items():
            self.positions[target].extend(ts_arr, off_arr, mask)

    def snapshot_positions(self) -> dict[str, Any]:
        return {t: log.snapshot() for t, log in self.positions.items()}

    def restore_positions(self, saved: dict[str, Any]) -> None:
        for target, snap in saved.items():
            if target in self.positions:
                self.positions[target].restore(snap)
