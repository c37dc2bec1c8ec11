"""What one batch produced (messages to send, counts for the metrics), and its stage timings."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.agents.labels import LabelOutcome
from driftline.streams.performance_estimation import ChunkEstimate

#: A message to send: (topic, key, value).
Outbound = tuple[str, bytes | None, bytes]


@dataclass
class DetectorInputs:
    """The values the input-side detectors read in one batch, row ``i`` the event at
    ``offsets[i]`` of ``partition`` (event time ``times[i]``)."""

    partition: int
    times: np.ndarray
    offsets: np.ndarray
    #: detector target -> its column (float64, object for categories)
    values: dict[str, np.ndarray]


@dataclass
class BatchOutcome:
    """Everything one batch produced, for the runner to send and count."""

    messages: list[Outbound] = field(default_factory=list)
    #: feature vectors and predictions, per topic, ready for ``Producer.produce_batch``
    bulk: dict[str, list[dict[str, bytes]]] = field(default_factory=dict)
    consumed: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    late_events: int = 0
    skew_disagreements: Counter[str] = field(default_factory=Counter)
    batch_hits: int = 0
    batch_misses: int = 0
    batch_age_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    feature_vectors: int = 0
    predictions: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    ingest_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    #: event times of the events that got a prediction (event time -> prediction latency)
    prediction_event_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    last_offset: int | None = None
    detector_readings: list[tuple[str, str, float, float | None]] = field(default_factory=list)
    #: ``[[multivariate]]`` detectors' (name, lower, upper) limits of the window mean error
    multivariate_limits: list[tuple[str, float, float]] = field(default_factory=list)
    #: the label side's results (label batches, and early labels met by predictions)
    labels: LabelOutcome | None = None
    #: labels for a prediction made on another partition: (partition, key, value) to forward
    forwarded: list[tuple[int, bytes | None, bytes]] = field(default_factory=list)
    #: what the input-side detectors read (offline reports only: ``InputDetection.keep_inputs``)
    detector_inputs: DetectorInputs | None = None
    #: with [business], after a batch of its topic: (name, rolling value, events in window)
    business: tuple[str, float, int] | None = None
    #: with [business], after a batch of its topic: the business clock (largest time seen)
    business_clock_ms: int | None = None
    #: chunks of predictions whose performance was estimated (``[performance_estimation]``)
    estimates: list[ChunkEstimate] = field(default_factory=list)
    #: (slice, value, metric, estimate) of the slice values whose chunk completed
    slice_estimates: list[tuple[str, str, str, float]] = field(default_factory=list)

    def all_messages(self) -> Iterator[Outbound]:
        """Every message of the batch as (topic, key, value), bulk ones included."""
        yield from self.messages
        for topic, batch in self.bulk.items():
            for m in batch:
                yield (topic, m["key"], m["value"])


class StageTimer:
    """Writes each stage's wall time into ``out.stage_seconds`` (``lap`` ends a stage)."""

    __slots__ = ("_seconds", "_t")

    def __init__(self, out: BatchOutcome) -> None:
        self._seconds = out.stage_seconds
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self._seconds[stage] = now - self._t
        self._t = now
