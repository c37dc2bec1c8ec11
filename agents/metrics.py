"""The worker's Prometheus metrics: stable names, base units, bounded label sets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streams.histogram import LATENCY_BUCKETS_S, BucketCounts

STAGES = ("poll", "decode", "features", "predict", "detect", "encode", "produce", "commit")


class _BatchHistogramCollector(Collector):
    """Exports :class:`BucketCounts` (filled a batch at a time) as Prometheus histograms."""

    def __init__(self, name: str, doc: str, label: str, hists: dict[str, BucketCounts]) -> None:
        self.name, self.doc, self.label, self.hists = name, doc, label, hists

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        for value, h in self.hists.items():
            le = [*(repr(float(b)) for b in h.bounds), "+Inf"]
            fam.add_metric([value], list(zip(le, h.cumulative(), strict=True)), h.total)
        yield fam

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return []


class WorkerMetrics:
    """Every metric a worker exports, on its own registry."""

    def __init__(self, pipeline: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.info = Gauge(
            "driftline_pipeline_info", "Pipeline this worker runs.", ["pipeline"], registry=r
        )
        self.info.labels(pipeline).set(1)
        self.consumed = Counter(
            "driftline_records_consumed",
            "Records read from the input topic.",
            ["topic"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "driftline_records_dead_lettered",
            "Records sent to the dead-letter topic.",
            ["reason"],
            registry=r,
        )
        self.feature_vectors = Counter(
            "driftline_feature_vectors",
            "Feature vectors written to the features topic.",
            registry=r,
        )
        self.predictions = Counter(
            "driftline_predictions", "Predictions written to the predictions topic.", registry=r
        )
        self.alerts = Counter(
            "driftline_alerts",
            "Drift alerts written to the alerts topic.",
            ["kind", "detector", "status"],
            registry=r,
        )
        self.batches = Counter("driftline_batches", "Batches processed and committed.", registry=r)
        self.stage_seconds = Histogram(
            "driftline_stage_duration_seconds",
            "Wall time of one batch in each pipeline stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.drift_statistic = Gauge(
            "driftline_drift_statistic",
            "Last drift statistic per detector and partition.",
            ["detector", "target", "partition"],
            registry=r,
        )
        self.drift_p_value = Gauge(
            "driftline_drift_p_value",
            "Last drift p-value (tests only) per detector and partition.",
            ["detector", "target", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            "driftline_assigned_partitions", "Input partitions assigned to this worker.", registry=r
        )
        self.consumer_lag = Gauge(
            "driftline_consumer_lag_records",
            "Input records after this worker's position (high watermark minus position).",
            ["topic", "partition"],
            registry=r,
        )
        self.latency = {"ingest_to_output": BucketCounts(LATENCY_BUCKETS_S)}
        r.register(
            _BatchHistogramCollector(
                "driftline_record_latency_seconds",
                "Per record: broker append time of the input event to its outputs being acked.",
                "path",
                self.latency,
            )
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def remove_lag(self, topic: str, partition: int) -> None:
        try:
            self.consumer_lag.remove(topic, str(partition))
        except KeyError:
            pass

    def observe_latency(self, seconds: np.ndarray) -> None:
        self.latency["ingest_to_output"].add(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
