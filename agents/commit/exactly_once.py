"""``processing_guarantee = "exactly_once"``: one Kafka transaction per batch.

The transaction holds the batch's outputs (features, predictions, alerts, dead letters), each
touched partition's label-log records and state snapshot on the changelog, and the consumer
offsets. Readers with ``isolation.level=read_committed`` (librdkafka's default, so kcat's too)
see each batch exactly once, and a worker killed at any point restarts from a state that
matches its offsets. While batch k commits on the commit thread, batch k+1 is computed.

A commit that fails, or is still pending after :data:`COMMIT_STALL_S` (librdkafka's
``send_offsets_to_transaction`` can wait for good after a broker restart, whatever its timeout),
is given up with :class:`~driftline.agents.commit.base.CommitLost`: `recover` aborts the
transaction (an abortable error) or replaces the producer (a stall or a fatal error: the new
producer's ``init_transactions`` fences the old one and aborts its transaction on the broker),
and the runner restores the partitions from their last committed snapshots.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, NoReturn

from confluent_kafka import OFFSET_STORED, Consumer, KafkaException, Producer, TopicPartition

from driftline.agents.batch_metrics import Outcome, count_batch
from driftline.agents.bounded import DaemonExecutor, Stalled, call_bounded, wait_for
from driftline.agents.commit.base import CommitLost, CommitStrategy, StrategyContext
from driftline.agents.partitions import Snapshot
from driftline.errors import DriftlineError
from driftline.spec import PipelineSpec


def transactional_id(spec: PipelineSpec, worker_id: str) -> str:
    """The worker's transactional id (a prefixed ACL on ``<group id>.`` covers every worker)."""
    return f"{spec.group_id}.{worker_id}"


log = logging.getLogger("driftline.commit")

#: Seconds a batch's commit may take before it is given up (transaction.timeout.ms is 30 s:
#: the broker aborts a transaction open longer than that anyway).
COMMIT_STALL_S = 10.0
#: Timeout of each init_transactions / abort_transaction call (and their bound, plus 5 s).
TXN_CALL_S = 10.0
#: Producers given up in one process before the worker exits instead: each may keep a thread
#: stuck in librdkafka, and many in a row mean something else (another worker with this
#: worker id) keeps fencing this one.
MAX_REPLACED = 8


class ExactlyOnceCommit(CommitStrategy):
    """A transactional producer; batch k's commit overlaps batch k+1's processing."""

    guarantee = "exactly_once"
    # after a broker restart, librdkafka's transactional producer can keep a stale coordinator
    # and wait for good in its next send_offsets_to_transaction: start the next batch with a
    # new producer instead of finding that out COMMIT_STALL_S later
    recover_after_outage = True

    def __init__(self, ctx: StrategyContext) -> None:
        super().__init__(ctx)
        #: the batch being committed: (commit future, its outcomes, seconds to queue it,
        #: when its commit began (monotonic))
        self._pending: tuple[Future[tuple[float, float]], list[Outcome], float, float] | None
        self._pending = None
        #: producers given up (kept: one stuck in librdkafka must not be destroyed)
        self._replaced: list[Producer] = []
        self.metrics.commit_pending.set_function(self._pending_age)

    def producer_config(self) -> dict[str, Any]:
        return {
            "transactional.id": transactional_id(self.spec, self.ctx.worker_id),
            "transaction.timeout.ms": 30_000,
            "linger.ms": 5,
        }

    def start(self, consumer: Consumer, producer: Producer, make_producer: Any = None) -> None:
        super().start(consumer, producer, make_producer)
        try:
            call_bounded("init_transactions", 65, producer.init_transactions, 60)
        except (KafkaException, Stalled) as e:
            raise DriftlineError(f"cannot start transactions on {self.ctx.bootstrap}: {e}") from e

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # read from where the restored state ends: the snapshot's offsets, committed in the same
        # transaction as the group's offsets, so the two agree, except that the group's can be
        # missing when its coordinator was not ready (a restarting broker): then librdkafka would
        # start at auto.offset.reset and read into the restored state a second time
        # (a partition restored in the background: assigned paused, sought by on_restored)
        positions = self.partitions.positions
        for tp in partitions:
            tp.offset = positions.get(tp.partition, {}).get(tp.topic, OFFSET_STORED)
        consumer.assign(partitions)

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
        started = time.monotonic()
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
                producer.send_offsets_to_transaction(offsets, group, TXN_CALL_S)
                producer.commit_transaction(COMMIT_STALL_S)
            except KafkaException as e:
                self._fail(producer, e)
            return time.perf_counter() - t1, time.time()

        self._pending = (self._committer.submit(commit), outcomes, t1 - t0, started)

    def _pending_age(self) -> float:
        """Seconds the commit in progress has waited (``driftline_commit_pending_seconds``)."""
        pending = self._pending
        if pending is None or pending[0].done():
            return 0.0
        return time.monotonic() - pending[3]

    def _await_commit(self) -> None:
        """Wait for the batch being committed, then count it (metrics follow commits only).

        Raises `CommitLost` if the commit failed, or is still pending :data:`COMMIT_STALL_S`
        after it began."""
        if self._pending is None:
            return
        fut, outcomes, produce_s, started = self._pending
        self._pending = None
        left = started + COMMIT_STALL_S - time.monotonic()
        try:
            commit_s, committed_at = wait_for(fut, left, "the batch's transaction commit")
        except Stalled as e:
            raise CommitLost(
                "stalled",
                f"a batch's transaction was still not committed {COMMIT_STALL_S:.0f} s after it "
                "began (no broker answered it)",
            ) from e
        count_batch(self.metrics, outcomes, produce_s, commit_s, committed_at)

    def recover(self, reason: str, stop: threading.Event) -> None:
        """Abort the transaction (``abortable``) or replace the producer (``stalled``,
        ``fatal``, or an abort that fails); returns once the producer can begin a transaction,
        or ``stop`` is set. Every call is bounded."""
        self._pending = None
        producer = self.producer
        if reason == "abortable" and producer is not None:
            try:
                call_bounded("abort_transaction", TXN_CALL_S + 5, producer.abort_transaction,
                             TXN_CALL_S)  # fmt: skip
                return
            except (KafkaException, Stalled) as e:
                log.warning("aborting the transaction failed (%s): replacing the producer", e)
        self._replace_producer(stop)

    def _replace_producer(self, stop: threading.Event) -> None:
        assert self.make_producer is not None, "start() was given no make_producer"
        if self.producer is not None:
            self._replaced.append(self.producer)
            self.producer = None
        if len(self._replaced) > MAX_REPLACED:
            raise DriftlineError(
                f"{len(self._replaced)} transactional producers given up in this process: "
                f"another worker with worker id {self.ctx.worker_id!r} may keep fencing this one "
                "(give each worker its own --worker-id); otherwise restart the worker"
            )
        # the commit thread may be stuck in the old producer for good: leave it behind
        self._committer = DaemonExecutor("driftline-commit")
        failures = 0
        producer: Producer | None = None
        while not stop.is_set():
            if producer is None:
                producer = self.make_producer()
            try:
                # fences the old producer; the broker aborts its open transaction
                call_bounded("init_transactions", TXN_CALL_S + 5, producer.init_transactions,
                             TXN_CALL_S)  # fmt: skip
            except (KafkaException, Stalled) as e:
                retriable = isinstance(e, KafkaException) and e.args[0].retriable()
                if isinstance(e, Stalled):
                    self._replaced.append(producer)  # stuck: never destroy it
                if not retriable:  # else calling it again resumes where it timed out
                    producer = None
                failures += 1
                if failures == 1:
                    log.warning("a new transactional producer cannot start yet (%s); retrying", e)
                stop.wait(0.2 if retriable else 1.0)
                continue
            self.producer = producer
            return

    def _fail(self, producer: Producer, e: KafkaException) -> NoReturn:
        """A transactional call failed: `CommitLost` (the runner recovers)."""
        err = e.args[0]
        fatal = getattr(err, "fatal", lambda: False)()
        raise CommitLost(
            "fatal" if fatal else "abortable",
            f"{'fatal' if fatal else 'abortable'} transaction error ({err})",
        ) from e
