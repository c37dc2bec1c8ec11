"""``processing_guarantee = "exactly_once"``: one Kafka transaction per batch.

The transaction holds the batch's outputs (features, predictions, alerts, dead letters), each
touched partition's label-log records and state snapshot on the changelog, and the consumer
offsets. Readers with ``isolation.level=read_committed`` (librdkafka's default, so kcat's too)
see each batch exactly once, and a worker killed at any point restarts from a state that
matches its offsets. While batch k commits on the commit thread, batch k+1 is computed.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any, NoReturn

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from driftline.agents.batch_metrics import Outcome, count_batch
from driftline.agents.commit.base import CommitStrategy, StrategyContext
from driftline.agents.partitions import Snapshot
from driftline.errors import DriftlineError
from driftline.spec import PipelineSpec


def transactional_id(spec: PipelineSpec, worker_id: str) -> str:
    """The worker's transactional id (a prefixed ACL on ``<group id>.`` covers every worker)."""
    return f"{spec.group_id}.{worker_id}"


class ExactlyOnceCommit(CommitStrategy):
    """A transactional producer; batch k's commit overlaps batch k+1's processing."""

    guarantee = "exactly_once"

    def __init__(self, ctx: StrategyContext) -> None:
        super().__init__(ctx)
        #: the batch being committed: (commit future, its outcomes, seconds to queue it)
        self._pending: tuple[Future[tuple[float, float]], list[Outcome], float] | None = None

    def producer_config(self) -> dict[str, Any]:
        return {
            "transactional.id": transactional_id(self.spec, self.ctx.worker_id),
            "transaction.timeout.ms": 30_000,
            "linger.ms": 5,
        }

    def start(self, consumer: Consumer, producer: Producer) -> None:
        super().start(consumer, producer)
        try:
            producer.init_transactions(60)
        except KafkaException as e:
            raise DriftlineError(f"cannot start transactions on {self.ctx.bootstrap}: {e}") from e

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pass  # the group's committed offsets are the snapshots' (one transaction)

    def before_revoke(self) -> None:
        self._await_commit()  # hand partitions over only once their offsets are committed

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        pass  # the open transaction, if any, is fenced by the partitions' new owner

    def send(self, outcomes: list[Outcome]) -> None:
        # the previous batch's commit ran in the background while we computed
        self._await_commit()
        if outcomes:
            self._transact(outcomes)

    def idle(self) -> None:
        self._await_commit()

    def tick(self) -> None:
        pass  # every batch commits by itself

    def finish(self) -> None:
        self._await_commit()

    def _transact(self, outcomes: list[Outcome]) -> None:
        """Open the batch's transaction, queue everything, and commit it in the background."""
        consumer, producer = self.consumer, self.producer
        assert consumer is not None and producer is not None
        t0 = time.perf_counter()
        try:
            producer.begin_transaction()
            offsets = self._produce_outputs(producer, outcomes)
            states: list[Snapshot] = []
            for p in dict.fromkeys(p for _, p, _ in outcomes):
                log, snap = self.partitions.snapshot(p)
                self._write_changelog(producer, p, log)
                states.append(snap)  # compressed and sent by the commit thread
            group = consumer.consumer_group_metadata()
        except KafkaException as e:
            self._fail(producer, e)
        t1 = time.perf_counter()

        def commit() -> tuple[float, float]:
            try:
                self._write_snapshots(producer, states)
                producer.send_offsets_to_transaction(offsets, group, 60)
                producer.commit_transaction(120)
            except KafkaException as e:
                self._fail(producer, e)
            return time.perf_counter() - t1, time.time()

        self._pending = (self._committer.submit(commit), outcomes, t1 - t0)

    def _await_commit(self) -> None:
        """Wait for the batch being committed, then count it (metrics follow commits only)."""
        if self._pending is None:
            return
        fut, outcomes, produce_s = self._pending
        self._pending = None
        commit_s, committed_at = fut.result()  # re-raises a failed commit
        count_batch(self.metrics, outcomes, produce_s, commit_s, committed_at)

    def _fail(self, producer: Producer, e: KafkaException) -> NoReturn:
        err = e.args[0]
        if getattr(err, "fatal", lambda: False)():
            raise DriftlineError(
                f"fatal transaction error ({err}); another worker with worker id "
                f"{self.ctx.worker_id!r} may have taken over: give each worker its own "
                "--worker-id"
            ) from e
        producer.abort_transaction(60)
        raise DriftlineError(f"transaction aborted ({err}); restarting restores the state") from e
