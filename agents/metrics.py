"""The worker's Prometheus metrics: stable names, base units, bounded label sets."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from driftline.streams.features import EVICTION_REASONS
from driftline.streams.histogram import LATENCY_BUCKETS_S, BucketCounts

# No ``*_created`` series: Prometheus does not use them, and they double every counter's series.
disable_created_metrics()

#: Alert documents kept for the status page (``/status``), newest last.
RECENT_ALERTS = 50

#: Seconds, one minute to a month: how old a batch-features row is when it is used.
AGE_BUCKETS_S = (60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 12 * 3600.0, 86400.0, 2 * 86400.0,
                 7 * 86400.0, 30 * 86400.0)  # fmt: skip

#: Seconds, one second to a month: label time minus the prediction's event time.
DELAY_BUCKETS_S = (1.0, 10.0, 60.0, 600.0, 3600.0, 6 * 3600.0, 86400.0, 3 * 86400.0,
                   7 * 86400.0, 30 * 86400.0)  # fmt: skip
LABEL_COUNTERS = ("unmatched_label", "expired_prediction", "duplicate_label",
                  "duplicate_prediction")  # fmt: skip

#: Alert kinds of the drift detectors (``[[detectors]]``): the alerts of an episode, which
#: ``driftline_drift_firing`` follows (skew checks and importance shifts have their own kinds).
DETECTOR_KINDS = ("covariate", "prediction", "label", "concept", "multivariate")

#: Why a transactional producer was given up and recreated (``driftline_producer_resets``).

PRODUCER_RESETS = ("stalled", "abortable", "fatal", "outage")

STAGES = (
    "poll", "decode", "features", "predict", "detect", "encode", "labels", "business", "estimate",
    "produce", "commit",
)  # fmt: skip


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


#: Every metric a worker exports, in registration order: its ``WorkerMetrics`` attribute, kind,
#: name, help and label names. Histograms use LATENCY_BUCKETS_S; a ``_BatchHistogramCollector``
#: exports the attribute's :class:`BucketCounts` (filled a batch at a time).
_METRICS: tuple[tuple[str, Any, str, str, tuple[str, ...]], ...] = (
    ("info", Gauge, "driftline_pipeline_info", "Pipeline this worker runs.", ("pipeline",)),
    (
        "consumed",
        Counter,
        "driftline_records_consumed",
        "Records read, by topic: the input topic's events and, with [labels], the labels "
        "topic's records.",
        ("topic",),
    ),
    (
        "dead_lettered",
        Counter,
        "driftline_records_dead_lettered",
        "Records sent to the dead-letter topic.",
        ("reason",),
    ),
    (
        "late_events",
        Counter,
        "driftline_late_events",
        "Events later than the watermark minus the grace period, sent to the late topic.",
        (),
    ),
    (
        "feature_vectors",
        Counter,
        "driftline_feature_vectors",
        "Feature vectors written to the features topic.",
        (),
    ),
    (
        "predictions",
        Counter,
        "driftline_predictions",
        "Predictions written to the predictions topic.",
        (),
    ),
    (
        "alerts",
        Counter,
        "driftline_alerts",
        "Drift alerts written to the alerts topic.",
        ("kind", "detector", "status"),
    ),
    ("batches", Counter, "driftline_batches", "Batches processed and committed.", ()),
    (
        "stage_seconds",
        Histogram,
        "driftline_stage_duration_seconds",
        "Wall time of one batch in each pipeline stage.",
        ("stage",),
    ),
    (
        "drift_statistic",
        Gauge,
        "driftline_drift_statistic",
        "Last drift statistic per detector and partition.",
        ("detector", "target", "partition"),
    ),
    (
        "multivariate_limit",
        Gauge,
        "driftline_multivariate_limit",
        "A [[multivariate]] detector's limits of its window's mean reconstruction error "
        "(bound lower/upper; driftline_drift_statistic is the window's mean): beyond either, "
        "the window counts towards firing.",
        ("detector", "bound", "partition"),
    ),
    (
        "drift_firing",
        Gauge,
        "driftline_drift_firing",
        "1 while the detector's drift episode on the partition is open (its firing alert sent, "
        "its resolved alert not yet), else 0; set for every detector of an assigned partition.",
        ("detector", "target", "partition"),
    ),
    (
        "drift_p_value",
        Gauge,
        "driftline_drift_p_value",
        "Last drift p-value per detector and partition (statistical tests such as KS only).",
        ("detector", "target", "partition"),
    ),
    (
        "assigned",
        Gauge,
        "driftline_assigned_partitions",
        "Input partitions assigned to this worker.",
        (),
    ),
    (
        "consumer_lag",
        Gauge,
        "driftline_consumer_lag_records",
        "Input records after this worker's position (high watermark minus position).",
        ("topic", "partition"),
    ),
    (
        "commit_pending",
        Gauge,
        "driftline_commit_pending_seconds",
        "How long the batch commit in progress has been waiting (0 when none). exactly_once gives "
        "a commit up after 10 s (its transaction aborted, the producer recreated, the state "
        "restored from the last committed snapshot).",
        (),
    ),
    (
        "producer_resets",
        Counter,
        "driftline_producer_resets",
        "Transactional producers given up and recreated, by reason: stalled (a commit still "
        "pending after 10 s), abortable or fatal (the commit failed), outage (after the brokers "
        "were away: librdkafka's transactional producer may not recover by itself).",
        ("reason",),
    ),
    (
        "broker_connected",
        Gauge,
        "driftline_broker_connected",
        "1 while the worker's Kafka clients reach the brokers, 0 while every broker is down.",
        (),
    ),
    (
        "latency",
        _BatchHistogramCollector,
        "driftline_record_latency_seconds",
        "Per record: broker append time of the input event to its outputs being acked.",
        ("path",),
    ),
    (
        "batch_cache_hits",
        Counter,
        "driftline_batch_cache_hits",
        "Events whose entity had a row in the batch-features cache.",
        (),
    ),
    (
        "batch_cache_misses",
        Counter,
        "driftline_batch_cache_misses",
        "Events whose entity had no batch-features row (the spec's defaults were used).",
        (),
    ),
    (
        "skew_disagreements",
        Counter,
        "driftline_skew_disagreements",
        "Events whose batch feature and streaming twin disagree beyond the tolerance.",
        ("check",),
    ),
    (
        "entities",
        Gauge,
        "driftline_entities",
        "Entities the partition's feature windows hold (seen within the longest window or idle "
        "TTL plus windows.grace_ms, and not evicted); at most windows.max_entities.",
        ("partition",),
    ),
    (
        "entities_evicted",
        Counter,
        "driftline_entities_evicted",
        "Entities dropped from the feature windows, by reason: idle (no event for the longest "
        "window or idle TTL plus grace) or max_entities (the least recently seen, above "
        "windows.max_entities: their windows are lost).",
        ("reason",),
    ),
    (
        "batch_cache_entries",
        Gauge,
        "driftline_batch_cache_entries",
        "Entities in the batch-features cache.",
        (),
    ),
    (
        "batch_feature_age",
        _BatchHistogramCollector,
        "driftline_batch_feature_age_seconds",
        "Per event: age (now minus as-of time) of the batch-features row it used.",
        ("cache",),
    ),
    (
        "label_outcomes",
        Counter,
        "driftline_label_join_outcomes",
        "Labels and predictions by join outcome: joined, unmatched_label (its prediction "
        "never came within labels.ttl_ms), expired_prediction (no label within the TTL), "
        "duplicate_label, duplicate_prediction.",
        ("outcome",),
    ),
    (
        "labels_forwarded",
        Counter,
        "driftline_labels_forwarded",
        "Labels read on another partition than their prediction's, forwarded to it.",
        (),
    ),
    (
        "model_metric",
        Gauge,
        "driftline_model_metric",
        "Live model quality from joined labels (accuracy, precision, recall, f1, auc or "
        "mae, rmse; n = examples) per window and partition; NaN until defined.",
        ("metric", "window", "partition"),
    ),
    (
        "slice_model_metric",
        Gauge,
        "driftline_slice_model_metric",
        "Model quality from joined labels per slice value ([[slices]]: the compared window; n = "
        "examples); value is a tracked value (at most max_values per slice, 200 over all slices) "
        "or 'other'.",
        ("slice", "value", "metric", "partition"),
    ),
    (
        "slice_estimated",
        Gauge,
        "driftline_slice_estimated_performance",
        "Label-free estimate (CBPE) of the model's accuracy, precision, recall, f1, auc per slice "
        "value ([[slices]] with [performance_estimation]) over its last chunk of chunk_size "
        "predictions; n = the chunk's predictions.",
        ("slice", "value", "metric", "partition"),
    ),
    (
        "slice_firing",
        Gauge,
        "driftline_slice_firing",
        "1 while the slice alert of the slice value on the partition is open (its metric worse "
        "than the global one by more than the margin), else 0.",
        ("slice", "value", "partition"),
    ),
    (
        "business_metric",
        Gauge,
        "driftline_business_metric",
        "[business]: the business metric over its event-time window (business.window_ms) per "
        "partition (mean or sum of business.field; NaN without events), and n = its events.",
        ("metric", "stat", "partition"),
    ),
    (
        "estimated_performance",
        Gauge,
        "driftline_estimated_performance",
        "Label-free estimate (CBPE, [performance_estimation]) of the model's accuracy, "
        "precision, recall, f1 or auc over the partition's latest chunk of predictions: "
        "bound=estimate, and the confidence band's lower and upper ends; NaN when undefined.",
        ("metric", "bound", "partition"),
    ),
    (
        "estimated_performance_firing",
        Gauge,
        "driftline_estimated_performance_firing",
        "1 while the partition's estimated metric is below its performance_estimation.thresholds "
        "entry (from the estimated_performance alert's firing to its resolved), else 0.",
        ("metric", "partition"),
    ),
    (
        "estimated_chunks",
        Counter,
        "driftline_estimated_chunks",
        "Chunks of predictions whose performance was estimated.",
        (),
    ),
    (
        "feature_importance",
        Gauge,
        "driftline_feature_importance_share",
        "Share of each model input in the rolling feature importance (sums to 1).",
        ("feature", "partition"),
    ),
    (
        "online_learned",
        Counter,
        "driftline_online_learned_examples",
        "Joined examples the online model learnt from (labels.learn = true).",
        (),
    ),
    (
        "schema_registry_up",
        Gauge,
        "driftline_schema_registry_up",
        "With input.format avro/protobuf/json_schema: 1 while the Schema Registry answers, 0 "
        "while it cannot be reached and consumption is paused.",
        ("format",),
    ),
    (
        "schema_registry_retries",
        Counter,
        "driftline_schema_registry_retries",
        "Retries of an unreachable Schema Registry (consumption paused meanwhile).",
        ("format",),
    ),
    (
        "label_delay",
        _BatchHistogramCollector,
        "driftline_label_delay_seconds",
        "Per joined label: label time minus the prediction's event time.",
        ("join",),
    ),
)


class WorkerMetrics:
    """Every metric a worker exports, on its own registry."""

    info: Gauge
    consumed: Counter
    dead_lettered: Counter
    late_events: Counter
    feature_vectors: Counter
    predictions: Counter
    alerts: Counter
    batches: Counter
    stage_seconds: Histogram
    drift_statistic: Gauge
    drift_firing: Gauge
    multivariate_limit: Gauge
    drift_p_value: Gauge
    assigned: Gauge
    consumer_lag: Gauge
    commit_pending: Gauge
    producer_resets: Counter
    broker_connected: Gauge
    batch_cache_hits: Counter
    batch_cache_misses: Counter
    skew_disagreements: Counter
    batch_cache_entries: Gauge
    entities: Gauge
    entities_evicted: Counter
    label_outcomes: Counter
    labels_forwarded: Counter
    model_metric: Gauge
    slice_model_metric: Gauge
    slice_firing: Gauge
    slice_estimated: Gauge
    business_metric: Gauge
    estimated_performance: Gauge
    estimated_performance_firing: Gauge
    estimated_chunks: Counter
    feature_importance: Gauge
    online_learned: Counter
    schema_registry_up: Gauge
    schema_registry_retries: Counter
    #: Record latency by path: ingest_to_output (broker append time of the event -> its outputs
    #: committed), event_time_to_prediction (the event's own time -> its prediction committed).
    latency: dict[str, BucketCounts]
    batch_feature_age: BucketCounts
    label_delay: BucketCounts

    def __init__(self, pipeline: str) -> None:
        self.registry = CollectorRegistry()
        self.latency = {
            "ingest_to_output": BucketCounts(LATENCY_BUCKETS_S),
            "event_time_to_prediction": BucketCounts(LATENCY_BUCKETS_S),
        }
        self.batch_feature_age = BucketCounts(AGE_BUCKETS_S)
        self.label_delay = BucketCounts(DELAY_BUCKETS_S)
        batch_hists = {
            "latency": self.latency,
            "batch_feature_age": {"batch_features": self.batch_feature_age},
            "label_delay": {"labels": self.label_delay},
        }
        for attr, kind, name, doc, labels in _METRICS:
            if kind is _BatchHistogramCollector:
                self.registry.register(kind(name, doc, labels[0], batch_hists[attr]))
            else:
                buckets = {"buckets": LATENCY_BUCKETS_S} if kind is Histogram else {}
                setattr(self, attr, kind(name, doc, labels, registry=self.registry, **buckets))
        self.info.labels(pipeline).set(1)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for outcome in ("joined", *LABEL_COUNTERS):
            self.label_outcomes.labels(outcome)
        for reason in PRODUCER_RESETS:
            self.producer_resets.labels(reason)
        for reason in EVICTION_REASONS:
            self.entities_evicted.labels(reason)
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)

    def count_labels(self, partition: int, oc: Any) -> None:
        """Count one committed batch's ``agents.labels.LabelOutcome``."""
        if oc.joined:
            self.label_outcomes.labels("joined").inc(oc.joined)
            self.label_delay.add(oc.delay_s)
        for outcome, k in oc.counts.items():
            if k:
                self.label_outcomes.labels(outcome).inc(k)
        p = str(partition)
        for metric, window, value in oc.model_metrics:
            self.model_metric.labels(metric, window, p).set(value)
        for name, value, metric, v in oc.slice_metrics:
            self.slice_model_metric.labels(name, value, metric, p).set(v)
        for feature, share in oc.importance:
            self.feature_importance.labels(feature, p).set(share)
        if oc.learned:
            self.online_learned.inc(oc.learned)

    def set_business(self, partition: int, reading: tuple[str, float, int]) -> None:
        """A business batch's rolling value and its count of events."""
        name, value, n = reading
        self.business_metric.labels(name, "value", str(partition)).set(value)
        self.business_metric.labels(name, "n", str(partition)).set(n)

    def remove_partition(self, partition: int) -> None:
        """Drop per-partition gauges of a partition this worker no longer owns."""
        p = str(partition)
        for g in (self.model_metric, self.feature_importance, self.drift_statistic,
                  self.drift_p_value, self.drift_firing, self.slice_model_metric,
                  self.slice_firing, self.slice_estimated, self.multivariate_limit,
                  self.business_metric, self.estimated_performance,
                  self.estimated_performance_firing, self.entities):  # fmt: skip
            for labels in list(g._metrics):  # prometheus_client has no filter
                if labels[-1] == p:
                    g.remove(*labels)

    def set_entities(self, partition: int, held: int, evicted: dict[str, int]) -> None:
        """A partition's entities held now, and those evicted since the last call, by reason."""
        self.entities.labels(str(partition)).set(held)
        for reason, k in evicted.items():
            if k:
                self.entities_evicted.labels(reason).inc(k)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def remove_lag(self, topic: str, partition: int) -> None:
        try:
            self.consumer_lag.remove(topic, str(partition))
        except KeyError:
            pass

    def record_alert(self, doc: dict[str, Any]) -> None:
        """Keep a committed alert (an ``alert.schema.json`` document) for the status page."""
        self.recent_alerts.append(doc)

    def count_alert(self, partition: int, doc: dict[str, Any]) -> None:
        """A committed alert of ``partition``: kept, counted and, for a drift detector's alert,
        its episode's ``driftline_drift_firing`` set (1 on ``firing``, 0 on ``resolved``)."""
        self.record_alert(doc)
        self.alerts.labels(doc["kind"], doc["detector"], doc["status"]).inc()
        if doc["kind"] in DETECTOR_KINDS:
            firing = self.drift_firing.labels(doc["detector"], doc["target"], str(partition))
            firing.set(1 if doc["status"] == "firing" else 0)
        elif doc["kind"] == "slice" and "detector" in doc.get("slice", {}):  # per-value drift
            firing = self.drift_firing.labels(doc["detector"], doc["target"], str(partition))
            firing.set(1 if doc["status"] == "firing" else 0)
        elif doc["kind"] == "slice" and "slice" in doc:  # a value worse than the whole
            sl = doc["slice"]
            name = sl["name"] + (":estimated" if sl.get("source") == "estimated" else "")
            firing = self.slice_firing.labels(name, sl["value"], str(partition))
            firing.set(1 if doc["status"] == "firing" else 0)
        elif doc["kind"] == "estimated_performance":
            firing = self.estimated_performance_firing.labels(doc["target"], str(partition))
            firing.set(1 if doc["status"] == "firing" else 0)

    def set_estimates(self, partition: int, chunks: Iterable[Any]) -> None:
        """A committed batch's estimated chunks (``ChunkEstimate``): the latest one's values."""
        p = str(partition)
        for c in chunks:
            self.estimated_chunks.inc()
            for metric, values in c.metrics.items():
                for bound, v in zip(("estimate", "lower", "upper"), values, strict=True):
                    self.estimated_performance.labels(metric, bound, p).set(v)

    def set_firing(self, partition: int, episodes: Iterable[tuple[str, str, bool]]) -> None:
        """A newly assigned partition's ``driftline_drift_firing``, one series per
        (detector, target, open) of ``episodes``: it exists (at 0) before any drift."""
        for detector, target, is_open in episodes:
            self.drift_firing.labels(detector, target, str(partition)).set(1 if is_open else 0)

    def observe_latency(self, seconds: np.ndarray, path: str = "ingest_to_output") -> None:
        self.latency[path].add(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
