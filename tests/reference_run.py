"""The uninterrupted run a disturbed one is compared with, and the comparison.

The reference is the same per-partition batch step run in-process over the records now on the
input topic (outputs do not depend on batch boundaries: tests/agents/test_pipeline.py). The
observed side is what the workers wrote, read with ``isolation.level=read_committed``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.spec import PipelineSpec
from tests.kafka_helpers import read_topic

Position = tuple[int, int]  # (input partition, input offset)


@dataclass
class Outputs:
    """Feature vectors by input position (with how often each was written), alerts, predictions."""

    features: dict[Position, Any] = field(default_factory=dict)
    feature_counts: Counter[Position] = field(default_factory=Counter)
    alerts: list[tuple[str, str]] = field(default_factory=list)
    predictions: Counter[Position] = field(default_factory=Counter)


def reference_outputs(bootstrap: str, spec: PipelineSpec) -> Outputs:
    """What an uninterrupted run over every record now on the input topic writes."""
    pred, version = build_predictor(spec)
    by_part: dict[int, list[RawRecord]] = defaultdict(list)
    for r in sorted(read_topic(bootstrap, spec.input.topic), key=lambda r: (r.partition, r.offset)):
        by_part[r.partition].append(
            RawRecord(spec.input.topic, r.partition, r.offset, None, r.key, r.value)
        )
    out = Outputs()
    for p, recs in by_part.items():
        oc = PartitionPipeline(spec, p, pred, version).process(recs)
        for topic, _key, value in oc.all_messages():
            doc = orjson.loads(value)
            if topic == spec.output.features_topic:
                pos = (p, doc["source"]["offset"])
                out.features[pos] = doc["features"]
                out.feature_counts[pos] += 1
            elif topic == spec.output.predictions_topic:
                out.predictions[(p, doc["source"]["offset"])] += 1
        out.alerts += [(a["alert_id"], a["status"]) for a in oc.alerts]
    return out


def written_outputs(bootstrap: str, spec: PipelineSpec, at_least: int = 0) -> Outputs:
    """What the workers wrote (committed records only); ``at_least`` feature vectors awaited."""
    out = Outputs()
    for r in read_topic(bootstrap, spec.output.features_topic, at_least=at_least):
        doc = orjson.loads(r.value)
        pos = (doc["source"]["partition"], doc["source"]["offset"])
        out.features[pos] = doc["features"]
        out.feature_counts[pos] += 1
    for r in read_topic(bootstrap, spec.output.predictions_topic):
        doc = orjson.loads(r.value)
        out.predictions[(doc["source"]["partition"], doc["source"]["offset"])] += 1
    for r in read_topic(bootstrap, spec.output.alerts_topic):
        doc = orjson.loads(r.value)
        out.alerts.append((doc["alert_id"], doc["status"]))
    return out


def assert_exactly_once(reference: Outputs, written: Outputs) -> None:
    """Every input position written exactly once with the reference's values; the same alerts,
    each once. The reference must have alerted, or the comparison would prove little."""
    assert reference.alerts, "the reference run raised no alert; the test would prove nothing"
    doubled = sorted(pos for pos, n in written.feature_counts.items() if n > 1)
    assert not doubled, f"{len(doubled)} feature vectors written twice, first {doubled[:5]}"
    lost = sorted(set(reference.features) - set(written.features))
    assert not lost, f"{len(lost)} feature vectors lost, first {lost[:5]}"
    differing = sorted(p for p, f in reference.features.items() if written.features.get(p) != f)
    assert not differing, f"{len(differing)} feature vectors differ, first {differing[:5]}"
    assert written.predictions == reference.predictions, "predictions lost or doubled"
    assert Counter(written.alerts) == Counter(reference.alerts), (
        f"alerts differ: written {sorted(written.alerts)[:6]}, reference "
        f"{sorted(reference.alerts)[:6]}"
    )
