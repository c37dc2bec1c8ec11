"""Estimate stage: label-free performance estimation (CBPE) of one partition's predictions.

With ``[performance_estimation]``, every prediction's score goes into
`streams.performance_estimation.PerformanceEstimator`; each chunk of ``chunk_size`` consecutive
predictions it completes gives the expected accuracy, precision, recall, F1 and ROC AUC with a
confidence band. Each chunk is published on the model-metrics topic (``estimated_performance``)
and goes to ``/metrics``; a chunk whose estimate of a metric is below its threshold opens an
alert episode of kind ``estimated_performance`` (closed by the next chunk at or above it). The
calibration comes from the reference profile, or from the first joined labels (fed by the label
stage through `reference_labels`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from driftline.agents.stages.alert_episodes import AlertEpisodes
from driftline.agents.stages.alerts import AlertDocs
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome
from driftline.spec import PipelineSpec, read_calibration
from driftline.streams.labels import JoinedBatch
from driftline.streams.performance_estimation import ChunkEstimate, PerformanceEstimator

#: The alert-episode name of a metric's threshold (also the ``name`` in its alert ids).
EPISODE = "estimated_performance:{}"


class EstimateStage:
    """CBPE over one input partition's predictions (only with ``[performance_estimation]``)."""

    def __init__(
        self, spec: PipelineSpec, partition: int, alerts: AlertDocs, episodes: AlertEpisodes
    ) -> None:
        pe = spec.performance_estimation
        assert pe is not None
        self.spec, self.pe, self.partition = spec, pe, partition
        self.alerts, self.episodes = alerts, episodes
        cal = None if pe.reference_profile is None else read_calibration(pe.reference_profile)
        self.source = "labels" if cal is None else "profile"
        self.estimator = PerformanceEstimator(
            pe.chunk_size, pe.reference_size, pe.threshold, pe.draws, pe.band_sigmas, cal
        )

    @property
    def reference(self) -> str:
        """The calibration's reference, in words (alerts quote it)."""
        if self.pe.reference_profile is not None:
            return f"isotonic calibration of profile {self.pe.reference_profile.name}"
        return (
            f"isotonic calibration on the first {self.pe.reference_size} joined labels of "
            f"partition {self.partition}"
        )

    def reference_labels(self, jb: JoinedBatch) -> None:
        """Joined examples: the first ``reference_size`` fit the calibration."""
        if not self.estimator.fixed_calibration:
            self.estimator.add_reference(jb.scores, jb.labels)

    def predictions(
        self, frame: Frame, out: BatchOutcome, model_version: str, now_ms: int,
        metrics_doc: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        """Add the frame's scores; publish, export and check each chunk completed.

        ``metrics_doc``: the label side's current model-metrics fields (windows, labels, label
        time) to carry along, None without ``[labels]``."""
        assert frame.scores is not None
        offsets = np.asarray(frame.records.offsets, dtype=np.int64)
        for c in self.estimator.update(frame.scores, offsets, frame.times):
            out.estimates.append(c)
            out.messages.append(self._message(c, model_version, now_ms, metrics_doc))
            self._check(c, frame.records.topic, out, now_ms)

    def _message(
        self, c: ChunkEstimate, model_version: str, now_ms: int, extra: dict[str, Any] | None
    ) -> tuple[str, bytes, bytes]:
        doc: dict[str, Any] = {
            "pipeline": self.spec.name,
            "partition": self.partition,
            "model_version": model_version,
            "task": "classification",
            **(extra or {}),
            "estimated_performance": {
                **c.to_json(),
                "calibration": {"source": self.source, "n_reference": self.estimator.n_reference},
            },
            "computed_at_ms": now_ms,
        }
        key = f"{self.spec.name}/{self.partition}".encode()
        return (self.spec.output.model_metrics_topic, key, orjson.dumps(doc))

    def _check(self, c: ChunkEstimate, topic: str, out: BatchOutcome, now_ms: int) -> None:
        for metric, threshold in self.pe.thresholds.items():
            estimate = c.metrics[metric][0]
            if not math.isfinite(estimate):
                continue
            status = "firing" if estimate < threshold else "resolved"
            if self.episodes.changes(EPISODE.format(metric), status):
                doc = self.alerts.estimated_performance(
                    metric, c, status, threshold, self.reference, self.estimator.n_reference,
                    topic, now_ms,
                )  # fmt: skip
                self.alerts.emit(out, metric, doc)

    # -- state ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return self.estimator.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.estimator.restore(state)
