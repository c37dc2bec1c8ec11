"""Kafka plumbing shared by the worker, the demo and the tests: clients, topics, sending."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic, TopicMetadata

from driftline.agents.kafka_errors import explain, is_fatal_at_connect, reason, unreachable
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka, KafkaConfig

#: librdkafka's own log lines (broker down, coordinator moved, ...) go through Python logging, so
#: they carry the worker's format (one JSON object per line with --log-format json) and its
#: redaction, instead of raw text on stderr. Set as "logger" on every client the worker makes.
KAFKA_LOG = logging.getLogger("driftline.kafka")
#: Seconds a worker waits at start for the cluster to answer (then exits with one line): with
#: the access check and the process start, a wrong setting ends it well within 30 s.
CONNECT_TIMEOUT_S = 10.0


def client_conf(kafka: Kafka, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A client's config: driftline's ``base`` settings for it, the logger, then the user's
    Kafka settings (:mod:`driftline.kafka_config`: bootstrap, security, tuning) on top."""
    return KafkaConfig.of(kafka).client({**(base or {}), "logger": KAFKA_LOG})


def admin(bootstrap: Kafka) -> AdminClient:
    return AdminClient(client_conf(bootstrap))


def wait_for_broker(bootstrap: Kafka, timeout_s: float = 30.0) -> None:
    """Return once the cluster answers a metadata request, else raise one line saying what
    failed and what to check.

    An authentication or TLS failure stops it at once (no retry fixes a wrong password or an
    untrusted certificate); a broker that does not answer is retried until ``timeout_s``.
    """
    kafka = KafkaConfig.of(bootstrap)
    seen: list[KafkaError] = []
    # the probe's errors are summed up in the one line raised below: librdkafka's own lines
    # (a FAIL per connection attempt) would only repeat them
    a = AdminClient(client_conf(kafka, {"error_cb": seen.append, "log_level": 0}))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            a.list_topics(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            return
        except KafkaException as e:
            seen.append(e.args[0])
        a.poll(0)  # serves error_cb
        fatal = next((e for e in seen if is_fatal_at_connect(e)), None)
        if fatal is not None:
            raise DriftlineError(explain(fatal, kafka))
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    last = next((e for e in reversed(seen) if e.code() != KafkaError._TIMED_OUT), seen[-1])
    raise DriftlineError(unreachable(kafka, reason(last), timeout_s))


def topic_partitions(bootstrap: Kafka, topic: str) -> int | None:
    """Partition count of ``topic``, or None if it does not exist."""
    # list all topics: asking for one by name can auto-create it on brokers that allow that
    md = admin(bootstrap).list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def cluster_size(bootstrap: Kafka) -> int:
    """How many brokers the cluster's metadata lists now (brokers that are down are not)."""
    return len(admin(bootstrap).list_topics(timeout=10).brokers) or 1


def topic_replicas(bootstrap: Kafka) -> dict[str, int]:
    """Every topic of the cluster -> its replication factor (the fewest replicas of a partition)."""
    md = admin(bootstrap).list_topics(timeout=10)
    return {
        name: min(len(p.replicas) for p in t.partitions.values())
        for name, t in md.topics.items()
        if t.error is None and t.partitions
    }


def existing_topics(bootstrap: Kafka) -> dict[str, int]:
    """Every topic of the cluster (internal ones too) -> its partition count."""
    # list all topics: asking for one by name can auto-create it on brokers that allow that
    md = admin(bootstrap).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def ensure_topics(
    bootstrap: Kafka,
    topics: Iterable[str],
    partitions: int = 1,
    config: dict[str, str] | None = None,
    replication_factor: int | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created.

    Replication factor: ``replication_factor``, else 3 or the number of brokers if fewer.
    """
    a = admin(bootstrap)
    md = a.list_topics(timeout=10)
    brokers = len(md.brokers) or 1
    missing = [t for t in dict.fromkeys(topics) if t not in md.topics]
    if not missing:
        return []
    rf = replication_factor if replication_factor is not None else min(3, brokers)
    new = [
        NewTopic(t, num_partitions=partitions, replication_factor=rf, config=config or {})
        for t in missing
    ]
    created = []
    for t, fut in a.create_topics(new, operation_timeout=30).items():
        try:
            fut.result()
            created.append(t)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                why = explain(e.args[0], KafkaConfig.of(bootstrap), f"create topic {t!r}")
                raise DriftlineError(f"cannot create topic {t}: {why}") from None
    # metadata propagates asynchronously: wait until every partition of every new topic has a
    # leader, else a consumer subscribing now can be assigned only the partitions it saw (and
    # would not see the rest until its next metadata refresh, minutes later)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = a.list_topics(timeout=10)
        if all(_ready(md.topics.get(t), partitions) for t in missing):
            break
        time.sleep(0.2)
    return [t for t in missing if t in created]


def _ready(topic: TopicMetadata | None, partitions: int) -> bool:
    """``topic`` is visible with all its ``partitions``, each with a leader."""
    if topic is None or topic.error is not None or len(topic.partitions) < partitions:
        return False
    return all(p.error is None and p.leader >= 0 for p in topic.partitions.values())


def make_producer(bootstrap: Kafka, **extra: str | int) -> Producer:
    conf: dict[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    conf.update(extra)
    return Producer(client_conf(bootstrap, conf))


def produce_all(producer: Producer, messages: Iterable[tuple[str, bytes | None, bytes]]) -> None:
    """Queue messages, waiting for room when librdkafka's queue is full."""
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)


def produce_bulk(producer: Producer, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    """Like :func:`produce_all`, through ``produce_batch`` (about half the cost per message)."""
    by_topic: dict[str, list[dict[str, bytes | None]]] = {}
    for topic, key, value in messages:
        batch = by_topic.get(topic)
        if batch is None:
            batch = by_topic[topic] = []
        batch.append({"key": key, "value": value})
    for topic, batch in by_topic.items():
        produce_batch_all(producer, topic, batch)
    producer.poll(0)


def produce_batch_all(producer: Producer, topic: str, batch: list[dict[str, bytes | None]]) -> None:
    """``produce_batch`` until every message is queued (waiting when the queue is full)."""
    todo = batch
    while todo:
        try:
            queued = producer.produce_batch(topic, todo)
        except BufferError:
            queued = 0
        if queued == len(todo):
            return
        # some did not fit (queue full): wait for room, retry the ones that failed
        todo = [m for m in todo if "_error" in m] if queued else todo
        for m in todo:
            m.pop("_error", None)
        producer.poll(0.05)
