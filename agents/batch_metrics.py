"""Counts a delivered batch into the worker's metrics, and logs its alerts.

Called by the commit strategies (:mod:`driftline.agents.commit`) once a batch's outputs are
visible: after its transaction commits (exactly once), or when they are handed to the producer
(at least once).
"""

from __future__ import annotations

import logging

import numpy as np

from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import BatchOutcome

log = logging.getLogger("driftline.runner")

#: One batch's result for one (topic, partition).
Outcome = tuple[str, int, BatchOutcome]


def count_batch(
    m: WorkerMetrics,
    outcomes: list[Outcome],
    produce_s: float,
    commit_s: float | None,
    committed_at: float,
) -> None:
    """Counters, stage timings, drift readings and latencies of one batch (``committed_at``:
    when its outputs became visible, epoch seconds)."""
    now_ms = committed_at * 1000  # latencies end when the outputs became visible
    m.stage_seconds.labels("produce").observe(produce_s)
    if commit_s is not None:
        m.stage_seconds.labels("commit").observe(commit_s)
    m.batches.inc()
    for topic, p, oc in outcomes:
        m.consumed.labels(topic).inc(oc.consumed)
        if oc.labels is not None:
            m.count_labels(p, oc.labels)
        if oc.estimates:
            m.set_estimates(p, oc.estimates)
        for name, value, metric, v in oc.slice_estimates:
            m.slice_estimated.labels(name, value, metric, str(p)).set(v)
        if oc.forwarded:
            m.labels_forwarded.inc(len(oc.forwarded))
        if oc.business is not None:
            m.set_business(p, oc.business)
        for reason, k in oc.dead_letters.items():
            m.dead_lettered.labels(reason).inc(k)
        m.late_events.inc(oc.late_events)
        for check, k in oc.skew_disagreements.items():
            m.skew_disagreements.labels(check).inc(k)
        if oc.batch_hits or oc.batch_misses:
            m.batch_cache_hits.inc(oc.batch_hits)
            m.batch_cache_misses.inc(oc.batch_misses)
            m.batch_feature_age.add(oc.batch_age_s)
        m.feature_vectors.inc(oc.feature_vectors)
        m.predictions.inc(oc.predictions)
        for a in oc.alerts:
            m.count_alert(p, a)
            w = a["window"]
            log.warning(  # the offset is on the trigger's topic: the input's, or the labels'
                "drift %s: detector=%s target=%s statistic=%.4g p=%s topic=%s partition=%d "
                "offset=%d",
                a["status"],
                a["detector"],
                a["target"],
                a["statistic"],
                a["p_value"],
                w.get("topic"),
                w["partition"],
                w["offset"],
            )
        for stage, secs in oc.stage_seconds.items():
            m.stage_seconds.labels(stage).observe(secs)
        for name, target, stat, pv in oc.detector_readings:
            m.drift_statistic.labels(name, target, str(p)).set(stat)
            if pv is not None:
                m.drift_p_value.labels(name, target, str(p)).set(pv)
        for name, lo, hi in oc.multivariate_limits:
            m.multivariate_limit.labels(name, "lower", str(p)).set(lo)
            m.multivariate_limit.labels(name, "upper", str(p)).set(hi)
        if oc.ingest_ms.size:
            m.observe_latency(np.maximum(now_ms - oc.ingest_ms, 0) / 1000.0)
        if oc.prediction_event_ms.size:
            m.observe_latency(
                np.maximum(now_ms - oc.prediction_event_ms, 0) / 1000.0,
                "event_time_to_prediction",
            )
