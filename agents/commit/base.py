"""What both commit strategies share: their hooks into the runner's loop, and writing outputs
and snapshots."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from driftline.agents.batch_metrics import Outcome
from driftline.agents.bounded import DaemonExecutor
from driftline.agents.kafka_io import produce_batch_all, produce_bulk
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.partitions import OwnedPartitions, Snapshot
from driftline.agents.state import encode_keyed_snapshot
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka
from driftline.spec import PipelineSpec

#: Seconds the commit thread may take to finish when the worker stops.
CLOSE_TIMEOUT_S = 10.0


class CommitLost(DriftlineError):
    """The commit in progress failed or stalled and was given up: nothing of it (or of what
    was processed after it) may be counted as done. The runner calls `CommitStrategy.recover`,
    restores the owned partitions from their last committed snapshots and reads on from
    there. ``reason``: ``stalled``, ``abortable`` or ``fatal``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class StrategyContext:
    """What a commit strategy works with (all owned by the runner)."""

    spec: PipelineSpec
    bootstrap: Kafka
    worker_id: str
    metrics: WorkerMetrics
    partitions: OwnedPartitions
    #: the state changelog topic
    changelog: str
    #: the labels topic (forwarded labels go there), None without ``[labels]``
    labels_topic: str | None


class CommitStrategy(ABC):
    """How batches become durable; the runner calls the hooks from its loop thread.

    Writing to the changelog, serialising snapshots and waiting for the broker run on one
    background commit thread, so the loop computes the next batch meanwhile.
    """

    #: the ``processing_guarantee`` value this strategy implements
    guarantee: ClassVar[str]
    #: whether the runner recovers (`CommitLost` ``outage``) once the brokers are back after
    #: an outage, before the next batch
    recover_after_outage: ClassVar[bool] = False

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.metrics = ctx.metrics
        self.partitions = ctx.partitions
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        #: makes a producer like the first one (`recover` replaces a broken one)
        self.make_producer: Callable[..., Producer] | None = None
        self._committer = DaemonExecutor("driftline-commit")

    # -- set-up ---------------------------------------------------------------------------------
    @abstractmethod
    def producer_config(self) -> dict[str, Any]:
        """This strategy's producer settings (on top of the runner's common ones)."""

    def consumer_config(self) -> dict[str, Any]:
        """This strategy's consumer settings (on top of the runner's)."""
        return {}

    def start(
        self,
        consumer: Consumer,
        producer: Producer,
        make_producer: Callable[..., Producer] | None = None,
    ) -> None:
        """The clients are made; the consumer is not subscribed yet. ``make_producer()`` makes
        another producer like ``producer`` (to replace one that is stuck);
        ``make_producer(settings)`` one with ``settings`` over this strategy's."""
        self.consumer, self.producer = consumer, producer
        self.make_producer = make_producer

    def recover(self, reason: str, stop: threading.Event) -> None:
        """After `CommitLost` (its ``reason``): make the producer usable again (nothing to do
        by default). Returns once it is, or once ``stop`` is set; raises what the worker stops
        with if it cannot be."""
        return None

    # -- rebalances (inside consumer.consume) --------------------------------------------------
    @abstractmethod
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Assigned ``partitions`` have their pipelines (restored); say where to read from."""

    def on_restored(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """``partitions`` (assigned paused by `on_assign` while their state was restored in
        the background) read on from where the restored state ends: sought to its offsets
        (none saved: the group's committed offset, where they were assigned)."""
        positions = self.partitions.positions
        for tp in partitions:
            offset = positions[tp.partition].get(tp.topic)
            if offset is not None:
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    @abstractmethod
    def before_revoke(self) -> None:
        """Partitions are being revoked: make what was processed of them durable first."""

    @abstractmethod
    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """``partitions`` were taken away without a revoke: write nothing more of theirs."""

    # -- the loop -------------------------------------------------------------------------------
    @abstractmethod
    def send(self, outcomes: list[Outcome]) -> None:
        """A batch was processed (``outcomes``: per topic and partition)."""

    @abstractmethod
    def idle(self) -> None:
        """A poll brought nothing."""

    @abstractmethod
    def tick(self) -> None:
        """End of a loop round (after `send` or `idle`)."""

    @abstractmethod
    def finish(self) -> None:
        """The loop stops: make everything processed durable."""

    def close(self) -> None:
        """After the clients are closed: let the commit thread finish (bounded: a call stuck in
        the client library is left behind on its daemon thread)."""
        self._committer.shutdown(CLOSE_TIMEOUT_S)

    # -- shared ---------------------------------------------------------------------------------
    def _produce_outputs(self, producer: Producer, outcomes: list[Outcome]) -> list[TopicPartition]:
        """Queue every output of the batch; advance the positions; the offsets to commit."""
        offsets = []
        for topic, p, oc in outcomes:
            produce_bulk(producer, oc.messages)
            for out_topic, batch in oc.bulk.items():
                produce_batch_all(producer, out_topic, batch)
            for q, key, value in oc.forwarded:  # labels for another partition's predictions
                assert self.ctx.labels_topic is not None
                produce_all_to_partition(producer, self.ctx.labels_topic, q, key, value)
            offsets.append(TopicPartition(topic, p, self.partitions.advance(topic, p, oc)))
        return offsets

    def _write_changelog(
        self, producer: Producer, p: int, records: list[tuple[bytes, bytes | None]]
    ) -> None:
        for key, value in records:
            produce_all_to_partition(producer, self.ctx.changelog, p, key, value)

    def _write_snapshots(self, producer: Producer, states: list[Snapshot]) -> None:
        """Encode and send snapshots (on the commit thread): the changed feature windows, one
        record per key, then the rest of the snapshot, compressed, and its head."""
        for p, epoch, raw, changes in states:
            self._write_changelog(producer, p, encode_keyed_snapshot(p, epoch, raw, changes))

    @abstractmethod
    def _fail(self, producer: Producer, e: KafkaException) -> NoReturn:
        """A Kafka call failed: clean up, and raise what the worker stops with."""


def produce_all_to_partition(
    producer: Producer, topic: str, partition: int, key: bytes | None, value: bytes | None
) -> None:
    """``producer.produce`` to one partition, waiting while the producer's queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)
