"""The label sets a pipeline's metrics will take, exported before their first event.

Prometheus' ``increase()`` and ``rate()`` need a sample before a counter's first increment: a
series first scraped at 1 (or 3) shows no increase at all, and an alert rule on it never fires.
So the counters' label sets known from the spec (topics read, dead-letter reasons, each
detector's, skew check's and importance's alerts) are created at 0 when the worker starts, and
each assigned partition gets its detectors' ``driftline_drift_firing`` (and with
``[performance_estimation] thresholds``, ``driftline_estimated_performance_firing``) at once (1
where a restored episode is open, else 0).
"""

from __future__ import annotations

from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import PartitionPipeline
from driftline.agents.stages.alerts import alert_kind
from driftline.agents.stages.estimate import EPISODE
from driftline.agents.stages.multivariate import multivariate_target
from driftline.schemas import load_schema
from driftline.spec import PipelineSpec


def alert_sources(spec: PipelineSpec) -> list[tuple[str, str]]:
    """(kind, detector) of every alert the spec can raise, as ``driftline_alerts_total``
    labels them."""
    sources = [(alert_kind(d.target), d.name) for d in spec.detectors]
    sources += [("skew", c.name) for c in spec.skew_checks]
    sources += [("multivariate", m.name) for m in spec.multivariate]
    if spec.labels is not None and spec.labels.importance is not None:
        sources.append(("importance", "importance"))
    if spec.labels is not None:
        sources += [("slice", f"slice:{s.name}") for s in spec.slices]
    sources += [("slice", f"{d}@{s.name}") for s in spec.slices for d in s.detectors]
    if spec.performance_estimation is not None:
        sources += [("slice", f"slice:{s.name}:estimated") for s in spec.slices]
    if spec.performance_estimation is not None and spec.performance_estimation.thresholds:
        sources.append(("estimated_performance", "estimated_performance"))
    return sources


def declare_series(m: WorkerMetrics, spec: PipelineSpec) -> None:
    """Create every counter series the spec makes known, at 0."""
    side = [t.topic for t in (spec.labels, spec.business) if t is not None]
    for topic in (spec.input.topic, *side):
        m.consumed.labels(topic)
    for reason in load_schema("dead_letter")["properties"]["reason"]["enum"]:
        m.dead_lettered.labels(reason)
    statuses = load_schema("alert")["properties"]["status"]["enum"]
    for kind, detector in alert_sources(spec):
        for status in statuses:
            m.alerts.labels(kind, detector, status)
    for c in spec.skew_checks:
        m.skew_disagreements.labels(c.name)


def declare_partition(m: WorkerMetrics, pipe: PartitionPipeline) -> None:
    """A newly assigned partition's ``driftline_drift_firing``: one series per detector, 1
    where its episode is open in the restored state, else 0."""
    episodes = pipe.episodes.snapshot()
    m.set_firing(
        pipe.partition,
        [(d.name, d.target, episodes.get(d.name, False)) for d in pipe.spec.detectors]
        + [
            (mv.name, multivariate_target(mv), episodes.get(mv.name, False))
            for mv in pipe.spec.multivariate
        ],
    )
    pe = pipe.spec.performance_estimation
    for metric in pe.thresholds if pe is not None else ():
        is_open = episodes.get(EPISODE.format(metric), False)
        m.estimated_performance_firing.labels(metric, str(pipe.partition)).set(int(is_open))
