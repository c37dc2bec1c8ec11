"""``processing_guarantee = "at_least_once"``: outputs at once, state every commit interval.

Outputs are sent as soon as a batch is computed (no transaction). Every ``commit_interval_ms``
the partitions processed since their last snapshot are snapshotted, each snapshot carrying the
offsets it covers; once every output is acknowledged, the snapshots are written to the changelog
in one Kafka transaction of a second, transactional producer (state only), then the offsets are
committed to the group (for lag and monitoring: a restarted worker resumes from its snapshot's
offsets, so its state never counts anything twice; outputs computed after the last snapshot are
written again).

The state transaction is what keeps a snapshot whole: the feature windows are written per key,
only those that changed (`driftline.agents.state`), so a worker stopped half way through a
checkpoint would otherwise leave some keys ahead of the snapshot's offsets (Kafka Streams'
at_least_once allows that: its changelog may run ahead of the committed offsets, and a restart
counts those events twice). Here a restore reads committed records only: the last whole
checkpoint, never part of one.

The group's offsets follow the snapshots even when a commit of them is lost: after a restore
the restored snapshot's offsets are committed (a worker stopped between a snapshot and its
offset commit left the group behind the snapshot), and an offset commit that fails (a broker
outage) is retried every commit interval until the group confirms it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any, NoReturn

from confluent_kafka import OFFSET_STORED, Consumer, KafkaException, Producer, TopicPartition

from driftline.agents.batch_metrics import Outcome, count_batch
from driftline.agents.bounded import Stalled, call_bounded, wait_for
from driftline.agents.commit.base import CommitStrategy, StrategyContext
from driftline.agents.partitions import Snapshot
from driftline.errors import DriftlineError

log = logging.getLogger("driftline.commit")

#: Seconds a checkpoint may take (its flush is bounded at 120 s) before the worker stops.
CHECKPOINT_BOUND_S = 150.0
#: Seconds between two tries of an offset commit the group has not confirmed.
OFFSET_RETRY_S = 1.0
#: Seconds each call of a checkpoint's state transaction may take (tried again, the
#: checkpoint as a whole bounded by CHECKPOINT_BOUND_S).
STATE_TXN_S = 30.0


class AtLeastOnceCommit(CommitStrategy):
    """An idempotent, non-transactional producer; periodic acknowledged checkpoints."""

    guarantee = "at_least_once"

    def __init__(self, ctx: StrategyContext) -> None:
        super().__init__(ctx)
        self._delivery_error: str | None = None
        # partitions processed since their last snapshot, and when that was
        self._dirty: set[int] = set()
        self._checkpointing: Future[list[TopicPartition]] | None = None
        self._last_checkpoint = time.monotonic()
        #: offsets whose snapshot is acknowledged but whose commit the group has not confirmed
        self._unconfirmed: dict[tuple[str, int], int] = {}
        self._last_offset_commit = 0.0
        self._commit_failing = False
        #: writes the checkpoints' state records, one transaction per checkpoint
        self.state_producer: Producer | None = None

    def consumer_config(self) -> dict[str, Any]:
        return {"on_commit": self._on_commit}

    def producer_config(self) -> dict[str, Any]:
        # no transaction: send at once; failed deliveries are reported to _delivered
        return {
            "enable.idempotence": True,
            "linger.ms": 1,
            "delivery.report.only.error": True,
            "on_delivery": self._delivered,
        }

    def start(self, consumer: Consumer, producer: Producer, make_producer: Any = None) -> None:
        super().start(consumer, producer, make_producer)
        assert make_producer is not None, "at_least_once needs make_producer (its state producer)"
        # its own transactional id: a restarted worker fences its predecessor's, and the
        # broker aborts a checkpoint that predecessor left open
        tid = f"{self.spec.group_id}.{self.ctx.worker_id}.state"
        self.state_producer = make_producer(
            {"transactional.id": tid, "transaction.timeout.ms": 60_000, "linger.ms": 5}
        )
        try:
            call_bounded("init_transactions", 65, self.state_producer.init_transactions, 60)
        except (KafkaException, Stalled) as e:
            raise DriftlineError(f"cannot start transactions on {self.ctx.bootstrap}: {e}") from e

    def recover(self, reason: str, stop: Any) -> None:
        """Before the partitions are restored in-process: let a checkpoint in flight end, so
        the restore sees it whole or not at all (a state transaction still open when the
        changelog is read would commit after, and its per-key records outlive the restore)."""
        pending, self._checkpointing = self._checkpointing, None
        self._dirty.clear()
        if pending is not None:
            try:
                wait_for(pending, CHECKPOINT_BOUND_S, "a checkpoint")
            except Exception as e:  # failed or aborted: nothing of it is visible
                log.warning("the checkpoint in flight did not complete (%s)", e)

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # the snapshot, not the group's committed offsets, says where the state ends (offsets
        # are committed after the snapshot is acknowledged)
        # (a partition restored in the background: assigned paused, sought by on_restored)
        positions = self.partitions.positions
        for tp in partitions:
            tp.offset = positions.get(tp.partition, {}).get(tp.topic, OFFSET_STORED)
            if tp.offset >= 0:  # the group may be behind the snapshot: commit it (next tick)
                self._unconfirmed[(tp.topic, tp.partition)] = tp.offset
        consumer.assign(partitions)

    def on_restored(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super().on_restored(consumer, partitions)
        positions = self.partitions.positions
        for tp in partitions:
            offset = positions[tp.partition].get(tp.topic)
            if offset is not None:  # the group may be behind the snapshot: commit it
                self._unconfirmed[(tp.topic, tp.partition)] = offset

    def before_revoke(self) -> None:
        if self.producer is not None:
            self._checkpoint()

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self._dirty -= {tp.partition for tp in partitions}

    def send(self, outcomes: list[Outcome]) -> None:
        """Send the batch's outputs at once (no transaction); state follows in `_checkpoint`."""
        producer = self.producer
        assert producer is not None
        t0 = time.perf_counter()
        try:
            self._produce_outputs(producer, outcomes)
            self._dirty.update(p for _, p, _ in outcomes)
            producer.poll(0)
        except KafkaException as e:
            self._fail(producer, e)
        if self._delivery_error is not None:
            raise DriftlineError(f"outputs not delivered: {self._delivery_error}; restart")
        # counted when handed to the producer (acks follow within linger.ms + a round trip)
        count_batch(self.metrics, outcomes, time.perf_counter() - t0, None, time.time())

    def idle(self) -> None:
        pass  # a checkpoint may still be due: see tick

    def tick(self) -> None:
        if self._checkpoint_due():
            self._checkpoint(wait=False)
        if self._unconfirmed and time.monotonic() - self._last_offset_commit >= OFFSET_RETRY_S:
            self._commit_offsets([])

    def finish(self) -> None:
        self._checkpoint()

    def _checkpoint_due(self) -> bool:
        interval = self.spec.worker.commit_interval_ms / 1000
        if self._checkpointing is not None:
            if not self._checkpointing.done():
                return False
            self._commit_offsets(self._checkpointing.result())  # re-raises a failed one
            self._checkpointing = None
        return bool(self._dirty) and time.monotonic() - self._last_checkpoint >= interval

    def _checkpoint(self, wait: bool = True) -> None:
        """Snapshot every partition processed since its last snapshot, with the offsets it
        covers; wait for every message to be acknowledged; then commit the offsets to the group.

        The snapshot is taken here; serialising, sending and waiting for the acks run on the
        commit thread while the loop goes on, unless ``wait`` (revoke, shutdown)."""
        consumer, producer = self.consumer, self.producer
        assert consumer is not None and producer is not None
        if self._checkpointing is not None:
            self._commit_offsets(wait_for(self._checkpointing, CHECKPOINT_BOUND_S, "a checkpoint"))
            self._checkpointing = None
        t0 = time.perf_counter()
        offsets: list[TopicPartition] = []
        logs: list[tuple[int, list[tuple[bytes, bytes | None]]]] = []
        states: list[Snapshot] = []
        for p in sorted(self._dirty):
            if p not in self.partitions.pipelines:
                continue
            log, snap = self.partitions.snapshot(p)
            logs.append((p, log))
            states.append(snap)
            offsets += [TopicPartition(t, p, o) for t, o in self.partitions.positions[p].items()]
        self._dirty.clear()
        self._last_checkpoint = time.monotonic()

        def write() -> list[TopicPartition]:
            self._flush(producer)  # the outputs the snapshots cover, acknowledged first
            self._write_state(logs, states, time.monotonic() + CHECKPOINT_BOUND_S - 10)
            self.metrics.stage_seconds.labels("commit").observe(time.perf_counter() - t0)
            return offsets  # committed by the loop (`_commit_offsets`) now they are covered

        self._checkpointing = self._committer.submit(write)
        if wait:
            self._commit_offsets(wait_for(self._checkpointing, CHECKPOINT_BOUND_S, "a checkpoint"))
            self._checkpointing = None

    def _write_state(
        self,
        logs: list[tuple[int, list[tuple[bytes, bytes | None]]]],
        states: list[Snapshot],
        deadline: float,
    ) -> None:
        """One transaction of the state producer with the checkpoint's records (on the commit
        thread). An abortable failure (a broker outage) aborts it and writes it again, until
        ``deadline``; a fatal one stops the worker."""
        sp = self.state_producer
        assert sp is not None
        while True:
            try:
                sp.begin_transaction()
                for p, records in logs:
                    self._write_changelog(sp, p, records)
                self._write_snapshots(sp, states)
                self._commit_state(sp, deadline)
                return
            except KafkaException as e:
                err = e.args[0]
                if err.fatal() or not err.txn_requires_abort() or time.monotonic() > deadline:
                    self._fail(sp, e)
                log.warning("a checkpoint's state transaction failed (%s); writing it again", err)
                try:
                    sp.abort_transaction(STATE_TXN_S)
                except KafkaException as e2:
                    self._fail(sp, e2)

    @staticmethod
    def _commit_state(sp: Producer, deadline: float) -> None:
        """Commit the state transaction; one that timed out (retriable) is committed again."""
        while True:
            try:
                sp.commit_transaction(STATE_TXN_S)
                return
            except KafkaException as e:
                if not (e.args[0].retriable() and time.monotonic() < deadline):
                    raise

    def _commit_offsets(self, offsets: list[TopicPartition]) -> None:
        """Commit ``offsets`` (their snapshots are acknowledged) and every earlier one the group
        has not confirmed yet, of the partitions still owned (asynchronously: `_on_commit`)."""
        for tp in offsets:
            self._unconfirmed[(tp.topic, tp.partition)] = tp.offset
        owned = self.partitions.positions
        for key in [k for k in self._unconfirmed if k[1] not in owned]:
            del self._unconfirmed[key]
        if not self._unconfirmed or self.consumer is None:
            return
        self._last_offset_commit = time.monotonic()
        todo = [TopicPartition(t, p, o) for (t, p), o in self._unconfirmed.items()]
        try:
            self.consumer.commit(offsets=todo, asynchronous=True)
        except KafkaException as e:  # tried again on a later tick
            self._commit_failed(str(e))

    def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        """The consumer's ``on_commit`` (served by its poll, on the loop thread)."""
        if err is not None:
            self._commit_failed(str(err))
            return
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if tp.error is None and self._unconfirmed.get(key) == tp.offset:
                del self._unconfirmed[key]
        if self._commit_failing and not self._unconfirmed:
            self._commit_failing = False
            log.info("the consumer group's offsets are committed again")

    def _commit_failed(self, why: str) -> None:
        if not self._commit_failing:
            self._commit_failing = True
            log.warning("committing offsets to the consumer group failed (%s); retrying", why)

    def _delivered(self, err: Any, msg: Any) -> None:
        """librdkafka reports failed deliveries only (delivery.report.only.error)."""
        if err is not None and self._delivery_error is None:
            self._delivery_error = f"{msg.topic()}[{msg.partition()}]: {err}"

    def _flush(self, producer: Producer) -> None:
        """Every message of the batch acknowledged, or the worker stops (its offsets are not
        committed: a restart redoes the batch from the last snapshot)."""
        left = producer.flush(120)
        if left or self._delivery_error is not None:
            raise DriftlineError(
                f"outputs not delivered ({left} pending; {self._delivery_error or 'timeout'}); "
                "restarting redoes the batch from the last acknowledged snapshot"
            )

    def _fail(self, producer: Producer, e: KafkaException) -> NoReturn:
        err = e.args[0]
        raise DriftlineError(f"cannot send the batch's outputs ({err}); restart") from e
