"""Every topic a pipeline uses, created with the partition counts and configs it needs.

``driftline topics create -c pipeline.toml`` (and ``driftline worker --create-topics``) use
this instead of a broker's auto-creation, which makes one-partition topics with default
configs, and instead of ``kafka-topics.sh``, which the local launcher's jars do not carry.

The input topic's partition count is the pipeline's parallelism: the labels topic and the state
changelog must have the same count (state is kept per input partition and a label is joined on
its prediction's partition); output topics get it too unless ``[topics.<role>] partitions``
says otherwise. The changelog is compacted and takes snapshot chunks; the batch-features topic
is compacted. Replication factor, ``min.insync.replicas`` and retention come from the spec's
``[topics]`` section (:meth:`driftline.spec.TopicsSpec.replication`): by default 3 replicas and
min ISR 2 on a cluster of 3 or more brokers, one replica on a single broker.

The worker host (faust) has its own one-partition leader topic; it is planned here too, so it is
replicated like the rest instead of faust's one replica.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from driftline.agents.batch_features import TOPIC_CONFIG as BATCH_FEATURES_CONFIG
from driftline.agents.kafka_io import (
    cluster_size,
    ensure_topics,
    existing_topics,
    topic_replicas,
    wait_for_broker,
)
from driftline.agents.runner import changelog_topic
from driftline.agents.state import CHANGELOG_CONFIG
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka
from driftline.spec import PipelineSpec, TopicsSpec, host_leader_topic_of

__all__ = [
    "DEFAULT_PARTITIONS",
    "PlannedTopic",
    "TopicOutcome",
    "create_pipeline_topics",
    "ensure_pipeline_topics",
    "host_app_id",
    "host_leader_topic",
    "pipeline_topics",
]

log = logging.getLogger("driftline.topics")

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
    replication_factor: int = 1


@dataclass(frozen=True)
class TopicOutcome:
    topic: PlannedTopic
    created: bool
    #: the partition count on the cluster (the planned one for a created topic)
    partitions: int
    #: the replication factor on the cluster
    replicas: int

    def describe(self) -> str:
        verb = "created" if self.created else "exists "
        t = self.topic
        config = ", ".join(f"{k}={v}" for k, v in sorted(t.config.items()))
        if self.created:
            extra = f", {_replicas(t.replication_factor)}; {config}"
        elif self.replicas < t.replication_factor:
            extra = f"; {_fewer_replicas(t, self.replicas)}"
        else:
            extra = ""
        return (
            f"{verb} {t.name} ({t.role}, {self.partitions} partition"
            f"{'' if self.partitions == 1 else 's'}{extra})"
        )


def _replicas(n: int) -> str:
    return f"{n} replica{'' if n == 1 else 's'}"


def _fewer_replicas(t: PlannedTopic, have: int) -> str:
    return (
        f"{_replicas(have)}, fewer than the {t.replication_factor} [topics] plans: driftline does "
        "not alter existing topics (kafka-reassign-partitions.sh can add replicas)"
    )


def host_app_id(spec: PipelineSpec) -> str:
    """The faust app id of the worker host (its own consumer group and topic prefix)."""
    return f"{spec.group_id}.host"


def host_leader_topic(spec: PipelineSpec) -> str:
    """faust's leader-election topic of the worker host (one partition)."""
    return host_leader_topic_of(spec.name)


def _settings(
    topics: TopicsSpec, role: str | None, brokers: int, base: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """Replication factor and topic config of a ``role`` topic (None: no role of its own)."""
    rf, isr = topics.replication(role, brokers)
    config = {**(base or {}), "min.insync.replicas": str(isr)}
    t = topics.role(role) if role is not None else None
    if t is not None and t.retention_ms is not None:
        config["retention.ms"] = str(t.retention_ms)
    if t is not None and t.retention_bytes is not None:
        config["retention.bytes"] = str(t.retention_bytes)
    return rf, config


def pipeline_topics(spec: PipelineSpec, partitions: int, brokers: int) -> list[PlannedTopic]:
    """The topics ``spec`` reads and writes, for an input topic of ``partitions`` partitions on
    a cluster of ``brokers`` brokers. Raises :class:`~driftline.errors.SpecError` when the
    spec's ``[topics]`` asks for more replicas than the cluster has.

    Examples
    --------
    >>> from pathlib import Path
    >>> import driftline
    >>> from driftline.spec import load_spec
    >>> demo = Path(driftline.__file__).parent / "examples" / "demo.toml"
    >>> topics = pipeline_topics(load_spec(demo, model_file_required=False), 4, brokers=3)
    >>> [t.role for t in topics]  # doctest: +NORMALIZE_WHITESPACE
    ['input', 'output', 'output', 'output', 'dead letters', 'late events', 'output',
     'state changelog', 'worker host']
    >>> log = topics[-2]
    >>> log.name, log.partitions, log.replication_factor, log.config["cleanup.policy"]
    ('driftline.demo.state-changelog', 4, 3, 'compact')
    >>> topics[-1].partitions, topics[-1].config
    (1, {'min.insync.replicas': '2'})
    """
    ts = spec.topics

    def plan(
        name: str, role: str, key: str | None, n: int, base: Mapping[str, str] | None = None,
        same: bool = False,
    ) -> PlannedTopic:  # fmt: skip
        rf, config = _settings(ts, key, brokers, base)
        return PlannedTopic(name, role, n, config, same, rf)

    def out(key: str) -> int:
        return ts.role(key).partitions or partitions

    o = spec.output
    topics = [plan(spec.input.topic, "input", None, partitions)]
    if spec.labels is not None:
        topics.append(plan(spec.labels.topic, "labels", None, partitions, same=True))
    if spec.business is not None:
        topics.append(plan(spec.business.topic, "business", None, partitions, same=True))
    roles = {o.dlq_topic: ("dead letters", "dlq"), o.late_topic: ("late events", "late")}
    for name in o.all_topics:
        role, key = roles.get(name, ("output", "outputs"))
        topics.append(plan(name, role, key, out(key)))
    topics.append(
        plan(
            changelog_topic(spec), "state changelog", "changelog", partitions,
            CHANGELOG_CONFIG, same=True,
        )
    )  # fmt: skip
    topics.append(plan(host_leader_topic(spec), "worker host", "host", 1))
    if spec.batch_features is not None:
        topics.append(
            plan(
                spec.batch_features.topic, "batch features", None, BATCH_FEATURES_PARTITIONS,
                BATCH_FEATURES_CONFIG,
            )
        )  # fmt: skip
    unique: dict[str, PlannedTopic] = {}
    for t in topics:  # a spec may name one topic twice (e.g. late = dlq): the first role wins
        unique.setdefault(t.name, t)
    return list(unique.values())


def _create_missing(
    bootstrap: Kafka, plan: list[PlannedTopic], have: Mapping[str, int]
) -> set[str]:
    """Create the topics of ``plan`` not in ``have``; the names created."""
    created: set[str] = set()
    groups: dict[tuple[int, int, tuple[tuple[str, str], ...]], list[str]] = {}
    for t in plan:
        if t.name not in have:
            key = (t.partitions, t.replication_factor, tuple(sorted(t.config.items())))
            groups.setdefault(key, []).append(t.name)
    for (n, rf, config), names in groups.items():
        created.update(ensure_topics(bootstrap, names, n, dict(config), replication_factor=rf))
    return created


def ensure_pipeline_topics(
    spec: PipelineSpec, bootstrap: Kafka, partitions: int, roles: frozenset[str]
) -> list[PlannedTopic]:
    """Create the missing topics of ``roles`` (as :func:`pipeline_topics` names them) for an
    input topic of ``partitions``; return the whole plan (checked against the cluster)."""
    plan = pipeline_topics(spec, partitions, cluster_size(bootstrap))
    _create_missing(bootstrap, [t for t in plan if t.role in roles], existing_topics(bootstrap))
    have = topic_replicas(bootstrap)
    for t in plan:
        if have.get(t.name, t.replication_factor) < t.replication_factor:
            log.warning("%s topic %s has %s", t.role, t.name, _fewer_replicas(t, have[t.name]))
    return plan


def create_pipeline_topics(
    spec: PipelineSpec,
    bootstrap: Kafka,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[TopicOutcome]:
    """Create the topics of ``spec`` that do not exist; report every one of them.

    ``partitions``: the input topic's partition count (default: its count if it exists, else
    :data:`DEFAULT_PARTITIONS`). ``replication_factor``: replicas of every topic, as if the
    spec's ``topics.replication_factor`` said so. Refuses, before creating anything, an existing
    input topic with another count than ``partitions``, an existing labels topic or state
    changelog whose count differs from the input's, and replication the cluster cannot do.
    """
    if partitions is not None and partitions < 1:
        raise DriftlineError(f"--partitions must be at least 1, not {partitions}")
    if replication_factor is not None:
        topics = replace(
            spec.topics, replication_factor=replication_factor, replication_factor_set=True
        )
        spec = replace(spec, topics=topics)
    wait_for_broker(bootstrap, 30.0)
    have = existing_topics(bootstrap)
    n_in = have.get(spec.input.topic)
    if n_in is not None and partitions is not None and partitions != n_in:
        raise DriftlineError(
            f"the input topic {spec.input.topic!r} exists with {n_in} partitions, not "
            f"{partitions}: leave out --partitions to create the other topics to match it"
        )
    n_in = n_in or partitions or DEFAULT_PARTITIONS
    plan = pipeline_topics(spec, n_in, cluster_size(bootstrap))
    for t in plan:
        n = have.get(t.name)
        if t.same_as_input and n is not None and n != n_in:
            raise DriftlineError(
                f"the {t.role} topic {t.name!r} has {n} partitions but the input topic "
                f"{spec.input.topic!r} has {n_in}: they must match (state is kept per input "
                "partition); delete it or run the pipeline under a new pipeline.name"
            )
    created = _create_missing(bootstrap, plan, have)
    have, replicas = existing_topics(bootstrap), topic_replicas(bootstrap)
    return [
        TopicOutcome(
            t,
            t.name in created,
            have.get(t.name, t.partitions),
            replicas.get(t.name, t.replication_factor),
        )
        for t in plan
    ]
