"""The hot loop: consume a batch, process it per partition, commit it in one Kafka transaction.

One transaction per batch holds the batch's outputs (features, predictions, alerts, dead letters),
each touched partition's state snapshot on the changelog, and the consumer offsets. Readers with
``isolation.level=read_committed`` (librdkafka's default, so kcat's too) see each batch exactly
once, and a worker killed at any point restarts from a state that matches its offsets.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_STORED,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)

from driftline.agents.kafka_io import produce_batch_all, produce_bulk
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import BatchOutcome, PartitionPipeline, RecordColumns
from driftline.agents.state import (
    CHUNK_BYTES,
    encode_snapshot_json,
    read_changelog_partition,
    restore_snapshot,
    snapshot_json,
)
from driftline.errors import DriftlineError
from driftline.spec import PipelineSpec
from driftline.streams.model import BatchPredictor

log = logging.getLogger("driftline.runner")

#: One batch's result for one (topic, partition).
Outcome = tuple[str, int, BatchOutcome]


def changelog_topic(spec: PipelineSpec) -> str:
    return f"{spec.group_id}.state-changelog"


def default_worker_id() -> str:
    return socket.gethostname()


class TransactionalRunner(threading.Thread):
    """Runs the consume → process → transact loop in its own thread (librdkafka calls block)."""

    def __init__(
        self,
        spec: PipelineSpec,
        bootstrap: str,
        metrics: WorkerMetrics,
        predictor: BatchPredictor | None,
        model_version: str,
        worker_id: str,
        batch_cache: Any = None,
    ) -> None:
        super().__init__(name="driftline-runner", daemon=True)
        self.spec = spec
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.predictor = predictor
        self.model_version = model_version
        self.worker_id = worker_id
        self.batch_cache = batch_cache
        self.changelog = changelog_topic(spec)
        self.labels_topic = spec.labels.topic if spec.labels is not None else None
        self.exactly_once = spec.worker.processing_guarantee == "exactly_once"
        #: per input partition: the next offset of each of its topics (in the snapshot)
        self.positions: dict[int, dict[str, int]] = {}
        self._delivery_error: str | None = None
        self._producer: Producer | None = None
        # at_least_once: partitions processed since their last snapshot, and when that was
        self._dirty: set[int] = set()
        self._checkpointing: Future[None] | None = None
        self._last_checkpoint = time.monotonic()
        self.topics = [spec.input.topic] + ([self.labels_topic] if self.labels_topic else [])
        self.pipelines: dict[int, PartitionPipeline] = {}
        self.epochs: dict[int, int] = {}
        self.error: BaseException | None = None
        self.ready = threading.Event()
        # not ``_stop``: threading.Thread has a method of that name that join() calls
        self._stop_event = threading.Event()
        self.consumer: Consumer | None = None
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-commit")
        self._pending: tuple[Future[tuple[float, float]], list[Outcome], float] | None = None

    def stop(self) -> None:
        self._stop_event.set()

    # -- rebalance callbacks (run inside consumer.consume, between transactions) ---------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        t0 = time.perf_counter()
        # input partition p and labels partition p share one state (range assignment keeps
        # them on the same worker)
        for p in sorted({tp.partition for tp in partitions}):
            if p in self.pipelines:
                continue
            pipe = PartitionPipeline(
                self.spec, p, self.predictor, self.model_version, self.batch_cache
            )
            records = read_changelog_partition(self.bootstrap, self.changelog, p)
            saved = restore_snapshot(records, p, pipe.restore)  # ChangelogError names the record
            if saved is not None:
                epoch, state = saved
                self.epochs[p] = epoch
                self.positions[p] = dict(state.get("offsets", {}))
            else:
                self.epochs[p] = 0
                self.positions[p] = {}
            self.pipelines[p] = pipe
        if not self.exactly_once:
            # at least once: the snapshot, not the group's committed offsets, says where the
            # state ends (offsets are committed after the snapshot is acknowledged)
            for tp in partitions:
                tp.offset = self.positions[tp.partition].get(tp.topic, OFFSET_STORED)
            consumer.assign(partitions)
        self.metrics.assigned.set(len(self.pipelines))
        log.info(
            "assigned partitions %s (state restored in %.2fs)",
            sorted(tp.partition for tp in partitions),
            time.perf_counter() - t0,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._await_commit()  # hand partitions over only once their offsets are committed
        if not self.exactly_once and self._producer is not None:
            self._checkpoint(consumer, self._producer)
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (session expired): another worker may own
        them already, so nothing of theirs is written; exactly_once's transaction is fenced."""
        self._dirty -= {tp.partition for tp in partitions}
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.pipelines.pop(tp.partition, None)
            self.positions.pop(tp.partition, None)
            self.metrics.remove_lag(tp.topic, tp.partition)
            self.metrics.remove_partition(tp.partition)
        self.metrics.assigned.set(len(self.pipelines))
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported to the faust service, which stops the worker
            self.error = e
            log.exception("the worker loop failed; the last open transaction is aborted")
        finally:
            self.ready.set()

    def _clients(self) -> tuple[Consumer, Producer]:
        spec, w = self.spec, self.spec.worker
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": spec.group_id,
                "client.id": f"driftline-{spec.name}-{self.worker_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": w.auto_offset_reset,
                "isolation.level": "read_committed",
                # static membership: a restarted worker (same --worker-id) takes its partitions
                # back at once instead of waiting for its dead predecessor's session to expire
                "group.instance.id": self.worker_id,
                "session.timeout.ms": 15_000,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                # the same partition number of the input and labels topics on one worker
                "partition.assignment.strategy": "range",
            }
        )
        if self.exactly_once:
            mode: dict[str, Any] = {
                "transactional.id": f"{spec.group_id}.{self.worker_id}",
                "transaction.timeout.ms": 30_000,
                "linger.ms": 5,
            }
        else:  # no transaction: send at once; failed deliveries are reported to _delivered
            mode = {
                "enable.idempotence": True,
                "linger.ms": 1,
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
            }
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                **mode,
                # after a commit the coordinator answers the next AddOffsetsToTxn with
                # CONCURRENT_TRANSACTIONS until it has written the markers; librdkafka's default
                # 100 ms retry backoff then stalls every batch (measured: 97-105 ms vs 5 ms)
                "retry.backoff.ms": 5,
                "retry.backoff.max.ms": 100,
                "compression.type": "lz4",
                "message.max.bytes": 2 * CHUNK_BYTES + 65_536,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
            }
        )
        return consumer, producer

    def _run(self) -> None:
        spec, w, m = self.spec, self.spec.worker, self.metrics
        consumer, producer = self._clients()
        self.consumer, self._producer = consumer, producer
        if self.exactly_once:
            try:
                producer.init_transactions(60)
            except KafkaException as e:
                raise DriftlineError(f"cannot start transactions on {self.bootstrap}: {e}") from e
        consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.ready.set()
        log.info(
            "driftline worker %s started: pipeline=%s group=%s input=%s model=%s",
            self.worker_id,
            spec.name,
            spec.group_id,
            spec.input.topic,
            self.model_version,
        )
        timeout_s = w.batch_timeout_ms / 1000
        try:
            while not self._stop_event.is_set():
                t0 = time.perf_counter()
                msgs = self._poll(consumer, w.batch_max_records, timeout_s)
                if msgs:
                    m.stage_seconds.labels("poll").observe(time.perf_counter() - t0)
                    outcomes = self._process(msgs)
                    if not self.exactly_once:
                        self._send_at_least_once(producer, outcomes)
                    else:
                        # the previous batch's commit ran in the background while we computed
                        self._await_commit()
                        if outcomes:
                            self._send(consumer, producer, outcomes)
                else:
                    self._await_commit()
                if not self.exactly_once and self._checkpoint_due():
                    self._checkpoint(consumer, producer, wait=False)
                self._export_lag(consumer)
            self._await_commit()
            if not self.exactly_once:
                self._checkpoint(consumer, producer)
        finally:
            consumer.close()
            producer.flush(10)
            self._committer.shutdown(wait=True)

    @staticmethod
    def _poll(consumer: Consumer, max_records: int, timeout_s: float) -> list[Any]:
        """Whatever is fetched already (up to ``max_records``); if nothing is, wait up to
        ``timeout_s`` for the first record, then take what else has arrived. Never waits to fill
        a batch: at low rates a record waits for no other, at high rates batches fill anyway."""
        msgs = consumer.consume(max_records, 0)
        if msgs:
            return msgs
        msgs = consumer.consume(1, timeout_s)
        if msgs and max_records > 1:
            msgs += consumer.consume(max_records - 1, 0)
        return msgs

    def _process(self, msgs: list[Any]) -> list[Outcome]:
        by_part: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for msg in msgs:
            if msg.error() is not None:
                log.warning(
                    "consumer error on %s[%s]: %s", msg.topic(), msg.partition(), msg.error()
                )
                continue
            by_part[(msg.topic(), msg.partition())].append(msg)
        outcomes: list[Outcome] = []
        # predictions before the labels of the same batch (the join is order-insensitive
        # within its TTL; this order only saves early-label round trips)
        for (topic, p), ms in sorted(by_part.items(), key=lambda kv: kv[0][0] == self.labels_topic):
            pipe = self.pipelines.get(p)
            if pipe is None:  # not ours any more (revoked while fetched)
                continue
            stamps: list[int | None] = [m.timestamp()[1] for m in ms]
            if min(stamps) < 0:  # type: ignore[type-var]
                stamps = [None if t < 0 else t for t in stamps]  # type: ignore[operator]
            cols = RecordColumns(
                topic, p, [m.offset() for m in ms], stamps, [m.key() for m in ms],
                [m.value() for m in ms],
            )  # fmt: skip
            if topic == self.labels_topic:
                outcomes.append((topic, p, pipe.process_labels(cols)))
            else:
                outcomes.append((topic, p, pipe.process(cols)))
        return outcomes

    def _send(self, consumer: Consumer, producer: Producer, outcomes: list[Outcome]) -> None:
        """Open the batch's transaction, queue everything, and commit it in the background."""
        t0 = time.perf_counter()
        try:
            producer.begin_transaction()
            offsets = []
            for topic, p, oc in outcomes:
                produce_bulk(producer, oc.messages)
                for out_topic, batch in oc.bulk.items():
                    produce_batch_all(producer, out_topic, batch)
                for q, key, value in oc.forwarded:  # labels for another partition's predictions
                    assert self.labels_topic is not None
                    produce_all_to_partition(producer, self.labels_topic, q, key, value)
                assert oc.last_offset is not None
                offsets.append(TopicPartition(topic, p, oc.last_offset + 1))
                self.positions.setdefault(p, {})[topic] = oc.last_offset + 1
            states: list[tuple[int, int, bytes]] = []
            for p in dict.fromkeys(p for _, p, _ in outcomes):
                pipe = self.pipelines[p]
                for key, value in pipe.drain_log():
                    produce_all_to_partition(producer, self.changelog, p, key, value)
                self.epochs[p] += 1
                # serialised here (the state moves on with the next batch); compressed and
                # sent by the commit thread
                state = {**pipe.snapshot(), "offsets": dict(self.positions[p])}
                states.append((p, self.epochs[p], snapshot_json(state)))
            group = consumer.consumer_group_metadata()
        except KafkaException as e:
            self._fail(producer, e)
        t1 = time.perf_counter()

        def commit() -> tuple[float, float]:
            try:
                for p, epoch, raw in states:
                    for key, value in encode_snapshot_json(p, epoch, raw):
                        produce_all_to_partition(producer, self.changelog, p, key, value)
                producer.send_offsets_to_transaction(offsets, group, 60)
                producer.commit_transaction(120)
            except KafkaException as e:
                self._fail(producer, e)
            return time.perf_counter() - t1, time.time()

        self._pending = (self._committer.submit(commit), outcomes, t1 - t0)

    # -- at_least_once --------------------------------------------------------------------------
    def _send_at_least_once(self, producer: Producer, outcomes: list[Outcome]) -> None:
        """Send the batch's outputs at once (no transaction); state follows in `_checkpoint`."""
        t0 = time.perf_counter()
        try:
            for topic, p, oc in outcomes:
                produce_bulk(producer, oc.messages)
                for out_topic, batch in oc.bulk.items():
                    produce_batch_all(producer, out_topic, batch)
                for q, key, value in oc.forwarded:
                    assert self.labels_topic is not None
                    produce_all_to_partition(producer, self.labels_topic, q, key, value)
                assert oc.last_offset is not None
                self.positions.setdefault(p, {})[topic] = oc.last_offset + 1
                self._dirty.add(p)
            producer.poll(0)
        except KafkaException as e:
            self._fail(producer, e)
        if self._delivery_error is not None:
            raise DriftlineError(f"outputs not delivered: {self._delivery_error}; restart")
        # counted when handed to the producer (acks follow within linger.ms + a round trip)
        self._count(outcomes, time.perf_counter() - t0, None, time.time())

    def _checkpoint_due(self) -> bool:
        interval = self.spec.worker.commit_interval_ms / 1000
        if self._checkpointing is not None:
            if not self._checkpointing.done():
                return False
            self._checkpointing.result()  # re-raises a failed checkpoint
            self._checkpointing = None
        return bool(self._dirty) and time.monotonic() - self._last_checkpoint >= interval

    def _checkpoint(self, consumer: Consumer, producer: Producer, wait: bool = True) -> None:
        """at_least_once: snapshot every partition processed since its last snapshot, with the
        offsets it covers; wait for every message to be acknowledged; then commit the offsets to
        the group (for lag and monitoring: a restart resumes from the snapshot's offsets).

        The snapshot is taken here; serialising, sending and waiting for the acks run on the
        commit thread while the loop goes on, unless ``wait`` (revoke, shutdown)."""
        if self._checkpointing is not None:
            self._checkpointing.result()
            self._checkpointing = None
        t0 = time.perf_counter()
        offsets: list[TopicPartition] = []
        logs: list[tuple[int, bytes, bytes | None]] = []
        states: list[tuple[int, int, bytes]] = []
        for p in sorted(self._dirty):
            pipe = self.pipelines.get(p)
            if pipe is None:
                continue
            logs += [(p, k, v) for k, v in pipe.drain_log()]
            self.epochs[p] += 1
            state = {**pipe.snapshot(), "offsets": dict(self.positions[p])}
            states.append((p, self.epochs[p], snapshot_json(state)))
            offsets += [TopicPartition(t, p, o) for t, o in self.positions[p].items()]
        self._dirty.clear()
        self._last_checkpoint = time.monotonic()

        def write() -> None:
            try:
                for p, key, value in logs:
                    produce_all_to_partition(producer, self.changelog, p, key, value)
                for p, epoch, raw in states:
                    for key, value in encode_snapshot_json(p, epoch, raw):
                        produce_all_to_partition(producer, self.changelog, p, key, value)
            except KafkaException as e:
                self._fail(producer, e)
            self._flush(producer)
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=True)
            self.metrics.stage_seconds.labels("commit").observe(time.perf_counter() - t0)

        self._checkpointing = self._committer.submit(write)
        if wait:
            self._checkpointing.result()
            self._checkpointing = None

    def _delivered(self, err: Any, msg: Any) -> None:
        """at_least_once: librdkafka reports failed deliveries only (delivery.report.only.error)."""
        if err is not None and self._delivery_error is None:
            self._delivery_error = f"{msg.topic()}[{msg.partition()}]: {err}"

    def _flush(self, producer: Producer) -> None:
        """at_least_once: every message of the batch acknowledged, or the worker stops (its
        offsets are not committed: a restart redoes the batch from the last snapshot)."""
        left = producer.flush(120)
        if left or self._delivery_error is not None:
            raise DriftlineError(
                f"outputs not delivered ({left} pending; {self._delivery_error or 'timeout'}); "
                "restarting redoes the batch from the last acknowledged snapshot"
            )

    def _await_commit(self) -> None:
        """Wait for the batch being committed, then count it (metrics follow commits only)."""
        if self._pending is None:
            return
        fut, outcomes, produce_s = self._pending
        self._pending = None
        commit_s, committed_at = fut.result()  # re-raises a failed commit
        self._count(outcomes, produce_s, commit_s, committed_at)

    def _fail(self, producer: Producer, e: KafkaException) -> None:
        err = e.args[0]
        if not self.exactly_once:
            raise DriftlineError(f"cannot send the batch's outputs ({err}); restart") from e
        if getattr(err, "fatal", lambda: False)():
            raise DriftlineError(
                f"fatal transaction error ({err}); another worker with worker id "
                f"{self.worker_id!r} may have taken over: give each worker its own --worker-id"
            ) from e
        producer.abort_transaction(60)
        raise DriftlineError(f"transaction aborted ({err}); restarting restores the state") from e

    def _count(
        self,
        outcomes: list[Outcome],
        produce_s: float,
        commit_s: float | None,
        committed_at: float,
    ) -> None:
        m = self.metrics
        now_ms = committed_at * 1000  # latencies end when the outputs became visible
        m.stage_seconds.labels("produce").observe(produce_s)
        if commit_s is not None:
            m.stage_seconds.labels("commit").observe(commit_s)
        m.batches.inc()
        for topic, p, oc in outcomes:
            m.consumed.labels(topic).inc(oc.consumed)
            if oc.labels is not None:
                m.count_labels(p, oc.labels)
            if oc.forwarded:
                m.labels_forwarded.inc(len(oc.forwarded))
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
                m.record_alert(a)
                m.alerts.labels(a["kind"], a["detector"], a["status"]).inc()
                log.warning(
                    "drift %s: detector=%s target=%s statistic=%.4g p=%s partition=%d offset=%d",
                    a["status"],
                    a["detector"],
                    a["target"],
                    a["statistic"],
                    a["p_value"],
                    a["window"]["partition"],
                    a["window"]["offset"],
                )
            for stage, secs in oc.stage_seconds.items():
                m.stage_seconds.labels(stage).observe(secs)
            for name, target, stat, pv in oc.detector_readings:
                m.drift_statistic.labels(name, target, str(p)).set(stat)
                if pv is not None:
                    m.drift_p_value.labels(name, target, str(p)).set(pv)
            if oc.ingest_ms.size:
                m.observe_latency(np.maximum(now_ms - oc.ingest_ms, 0) / 1000.0)
            if oc.prediction_event_ms.size:
                m.observe_latency(
                    np.maximum(now_ms - oc.prediction_event_ms, 0) / 1000.0,
                    "event_time_to_prediction",
                )

    def _export_lag(self, consumer: Consumer) -> None:
        if self.batch_cache is not None:
            self.metrics.batch_cache_entries.set(len(self.batch_cache))
        if not self.pipelines:
            return
        tps = [TopicPartition(self.spec.input.topic, p) for p in self.pipelines]
        try:
            positions = consumer.position(tps)
        except KafkaException:
            return
        for tp in positions:
            try:
                _, hi = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if hi >= 0 and tp.offset >= 0:
                self.metrics.set_lag(tp.topic, tp.partition, hi - tp.offset)

    def status(self) -> dict[str, Any]:
        """A read-only view of this worker's partitions and detectors (for ``/status``).

        Called from the web server's thread while the loop runs: it copies what it reads.
        """
        detectors: list[dict[str, Any]] = []
        watermarks: dict[int, int | None] = {}
        for p, pipe in sorted(list(self.pipelines.items())):
            watermarks[p] = pipe.engine.watermark_ms
            for d, det in list(pipe.detectors):
                detectors.append(
                    {
                        "detector": d.name,
                        "type": d.type,
                        "target": d.target,
                        "partition": p,
                        "params": dict(d.params),
                        "alpha": getattr(det, "alpha", None),
                        "firing": bool(det.drift_detected),
                        "statistic": float(det.statistic),
                        "p_value": det.p_value,
                        "n_seen": int(det.n_seen),
                        # KS detectors expose their samples (numpy copies); others do not
                        "reference": getattr(det, "reference", None),
                        "current": getattr(det, "current_window", None),
                    }
                )
        return {
            "pipeline": self.spec.name,
            "worker_id": self.worker_id,
            "input_topic": self.spec.input.topic,
            "partitions": sorted(watermarks),
            "watermarks_ms": watermarks,
            "detectors": detectors,
        }


def produce_all_to_partition(
    producer: Producer, topic: str, partition: int, key: bytes | None, value: bytes | None
) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)
