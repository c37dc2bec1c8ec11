"""Every topic a pipeline uses, created with the partition counts and configs it needs.

``driftline topics create -c pipeline.toml`` (and ``driftline worker --create-topics``) use
this instead of a broker's auto-creation, which makes one-partition topics with default
configs, and instead of ``kafka-topics.sh``, which the local launcher's jars do not carry.

The input topic's partition count is the pipeline's parallelism: the labels topic and the state
changelog must have the same count (state is kept per input partition and a label is joined on
its prediction's partition); output topics get it too. The changelog is compacted and takes
snapshot chunks; the batch-features topic is compacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from driftline.agents.batch_features import TOPIC_CONFIG as BATCH_FEATURES_CONFIG
from driftline.agents.kafka_io import ensure_topics, existing_topics, wait_for_broker
from driftline.agents.runner import changelog_topic
from driftline.agents.state import CHANGELOG_CONFIG
from driftline.errors import DriftlineError
from driftline.spec import PipelineSpec

__all__ = [
    "DEFAULT_PARTITIONS",
    "PlannedTopic",
    "TopicOutcome",
    "create_pipeline_topics",
    "pipeline_topics",
]

#: Input partitions when the input topic does not exist and no count is given.
DEFAULT_PARTITIONS = 3
#: Partitions of a batch-features topic (as ``driftline batch-features load`` creates it).
BATCH_FEATURES_PARTITIONS = 3


@dataclass(frozen=True)
class PlannedTopic:
    """One topic of a pipeline: what it is for, and how it must be made."""

    name: str
    role: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    #: its partition count must equal the input topic's (labels, state changelog)
    same_as_input: bool = False


@dataclass(frozen=True)
class TopicOutcome:
    topic: PlannedTopic
    created: bool
    #: the partition count on the cluster (the planned one for a created topic)
    partitions: int

    def describe(self) -> str:
        verb = "created" if self.created else "exists "
        config = ", ".join(f"{k}={v}" for k, v in sorted(self.topic.config.items()))
        extra = f"; {config}" if config and self.created else ""
        return (
            f"{verb} {self.topic.name} ({self.topic.role}, {self.partitions} partition"
            f"{'' if self.partitions == 1 else 's'}{extra})"
        )


def pipeline_topics(spec: PipelineSpec, partitions: int) -> list[PlannedTopic]:
    """The topics ``spec`` reads and writes, for an input topic of ``partitions`` partitions.

    Examples
    --------
    >>> from pathlib import Path
    >>> import driftline
    >>> from driftline.spec import load_spec
    >>> demo = Path(driftline.__file__).parent / "examples" / "demo.toml"
    >>> topics = pipeline_topics(load_spec(demo, model_file_required=False), 4)
    >>> [t.role for t in topics]
    ['input', 'output', 'output', 'output', 'output', 'output', 'output', 'state changelog']
    >>> topics[-1].name, topics[-1].partitions, topics[-1].config["cleanup.policy"]
    ('driftline.demo.state-changelog', 4, 'compact')
    """
    topics = [PlannedTopic(spec.input.topic, "input", partitions)]
    if spec.labels is not None:
        topics.append(PlannedTopic(spec.labels.topic, "labels", partitions, same_as_input=True))
    topics += [PlannedTopic(t, "output", partitions) for t in spec.output.all_topics]
    topics.append(
        PlannedTopic(
            changelog_topic(spec),
            "state changelog",
            partitions,
            dict(CHANGELOG_CONFIG),
            same_as_input=True,
        )
    )
    if spec.batch_features is not None:
        topics.append(
            PlannedTopic(
                spec.batch_features.topic,
                "batch features",
                BATCH_FEATURES_PARTITIONS,
                dict(BATCH_FEATURES_CONFIG),
            )
        )
    unique: dict[str, PlannedTopic] = {}
    for t in topics:  # a spec may name one topic twice (e.g. late = dlq): the first role wins
        unique.setdefault(t.name, t)
    return list(unique.values())


def create_pipeline_topics(
    spec: PipelineSpec,
    bootstrap: str,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[TopicOutcome]:
    """Create the topics of ``spec`` that do not exist; report every one of them.

    ``partitions``: the input topic's partition count (default: its count if it exists, else
    :data:`DEFAULT_PARTITIONS`). Refuses, before creating anything, an existing input topic with
    another count than ``partitions``, and an existing labels topic or state changelog whose
    count differs from the input's.
    """
    if partitions is not None and partitions < 1:
        raise DriftlineError(f"--partitions must be at least 1, not {partitions}")
    wait_for_broker(bootstrap, 30.0)
    have = existing_topics(bootstrap)
    n_in = have.get(spec.input.topic)
    if n_in is not None and partitions is not None and partitions != n_in:
        raise DriftlineError(
            f"the input topic {spec.input.topic!r} exists with {n_in} partitions, not "
            f"{partitions}: leave out --partitions to create the other topics to match it"
        )
    n_in = n_in or partitions or DEFAULT_PARTITIONS
    plan = pipeline_topics(spec, n_in)
    for t in plan:
        n = have.get(t.name)
        if t.same_as_input and n is not None and n != n_in:
            raise DriftlineError(
                f"the {t.role} topic {t.name!r} has {n} partitions but the input topic "
                f"{spec.input.topic!r} has {n_in}: they must match (state is kept per input "
                "partition); delete it or run the pipeline under a new pipeline.name"
            )
    created: set[str] = set()
    groups: dict[tuple[int, tuple[tuple[str, str], ...]], list[str]] = {}
    for t in plan:
        if t.name not in have:
            groups.setdefault((t.partitions, tuple(sorted(t.config.items()))), []).append(t.name)
    for (n, config), names in groups.items():
        created.update(
            ensure_topics(bootstrap, names, n, dict(config), replication_factor=replication_factor)
        )
    have = existing_topics(bootstrap)
    return [TopicOutcome(t, t.name in created, have.get(t.name, t.partitions)) for t in plan]
