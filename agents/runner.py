"""The hot loop: consume a batch, process it per partition, hand it to the commit strategy.

How a batch becomes durable is the commit strategy's job (:mod:`driftline.agents.commit`),
chosen once by ``[worker] processing_guarantee``: ``exactly_once`` commits one Kafka transaction
per batch (outputs, state snapshots and offsets); ``at_least_once`` sends outputs at once and
checkpoints state with its offsets every ``commit_interval_ms``. The runner consumes, keeps the
assigned partitions' pipelines (restored from the state changelog), processes, and reports.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from driftline.agents.batch_metrics import Outcome
from driftline.agents.bounded import Stalled, call_bounded
from driftline.agents.commit import CommitStrategy, StrategyContext, commit_strategy
from driftline.agents.commit.base import CommitLost, produce_all_to_partition
from driftline.agents.formats import SchemaReaders
from driftline.agents.kafka_errors import PersistentFailure, explain
from driftline.agents.kafka_io import client_conf
from driftline.agents.metric_series import declare_partition, declare_series
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.outage import BrokerLink
from driftline.agents.partitions import OwnedPartitions
from driftline.agents.pipeline import PartitionPipeline, RecordColumns
from driftline.agents.stages.multivariate import multivariate_target
from driftline.agents.stages.records import errors_of, group_messages
from driftline.agents.state import (
    CHUNK_BYTES,
    ChangelogError,
    StateReset,
    check_state_present,
    keyed_keys,
    read_changelog_partition,
    restore_snapshot,
)
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka, KafkaConfig
from driftline.spec import PipelineSpec
from driftline.streams.model import BatchPredictor

__all__ = [
    "Outcome",
    "TransactionalRunner",
    "changelog_topic",
    "default_worker_id",
    "describe_partitions",
    "produce_all_to_partition",
]

log = logging.getLogger("driftline.runner")

#: Seconds a restore waits for the changelog to catch up with the group's committed offsets.
RESTORE_SETTLE_S = 30.0


class ConsumerFailed(DriftlineError):
    """The consumer reported a fatal error: it can do nothing more."""


#: Seconds closing the consumer may take when the worker stops (leaving the group needs a
#: broker; past this the consumer is left behind and the process exits all the same).
CLOSE_CONSUMER_S = 10.0
#: While the brokers are away: seconds between two checks whether they are back.
PROBE_INTERVAL_S = 2.0


def changelog_topic(spec: PipelineSpec) -> str:
    return spec.changelog_topic


def default_worker_id() -> str:
    return socket.gethostname()


def describe_partitions(partitions: list[TopicPartition]) -> str:
    """``events:0, events:1, labels:0`` (the same partition number of two topics is two)."""
    return ", ".join(f"{t}:{p}" for t, p in sorted((tp.topic, tp.partition) for tp in partitions))


def _multivariate_status(pipe: PartitionPipeline, partition: int) -> list[dict[str, Any]]:
    """``status()`` entries of a partition's ``[[multivariate]]`` detectors: their parameters
    with the components kept and the limits of the window mean error in force."""
    out = []
    for m, det in list(pipe.multivariate.detectors):
        lo, hi = det.limits
        limits = {"components": det.n_components, "lower": round(lo, 4), "upper": round(hi, 4)}
        out.append(
            {
                "detector": m.name,
                "type": m.method,
                "target": multivariate_target(m),
                "partition": partition,
                "params": {**m.params, **(limits if det.reference is not None else {})},
                "alpha": None,
                "firing": bool(det.in_drift),
                "statistic": float(det.statistic),
                "p_value": None,
                "n_seen": int(det.n_seen),
                "reference": None,  # no per-value sample to draw
                "current": None,
            }
        )
    return out


class _Restore:
    """One partition's state read from the changelog on a daemon thread
    (`TransactionalRunner._restore_partition`): ``done`` is set once ``result`` or ``error``
    is; ``committed``: the group's committed offset of its input partition, asked for in the
    rebalance callback (``Consumer.committed`` from another thread waits while the loop is
    in ``consume``); ``topics``: the partition's topics, paused meanwhile."""

    def __init__(
        self, runner: TransactionalRunner, p: int, committed: int | None, topics: list[str]
    ) -> None:
        self.topics = topics
        self.done = threading.Event()
        self.result: tuple[PartitionPipeline, tuple[int, dict[str, Any]] | None] | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        t0 = time.perf_counter()

        def work() -> None:
            try:
                self.result = runner._restore_partition(p, committed)
            except BaseException as e:  # raised in the loop by _install_restored
                self.error = e
            finally:
                self.seconds = time.perf_counter() - t0
                self.done.set()

        threading.Thread(target=work, name=f"driftline-restore-{p}", daemon=True).start()


class TransactionalRunner(threading.Thread):
    """Runs the consume -> process -> commit loop in its own thread (librdkafka calls block).

    ``commit`` is the :class:`~driftline.agents.commit.CommitStrategy` of the spec's
    processing guarantee."""

    def __init__(
        self,
        spec: PipelineSpec,
        bootstrap: Kafka,
        metrics: WorkerMetrics,
        predictor: BatchPredictor | None,
        model_version: str,
        worker_id: str,
        batch_cache: Any = None,
        reset_state: StateReset = frozenset(),
    ) -> None:
        super().__init__(name="driftline-runner", daemon=True)
        self.spec = spec
        self.bootstrap = bootstrap
        self.metrics = metrics
        declare_series(metrics, spec)  # counters at 0: increase() sees their first event
        self.predictor = predictor
        self.model_version = model_version
        self.worker_id = worker_id
        self.batch_cache = batch_cache
        self.changelog = changelog_topic(spec)
        self.labels_topic = spec.labels.topic if spec.labels is not None else None
        self.business_topic = spec.business.topic if spec.business is not None else None
        self.topics = [spec.input.topic] + [
            t for t in (self.labels_topic, self.business_topic) if t is not None
        ]
        self.partitions = OwnedPartitions()
        self.commit: CommitStrategy = commit_strategy(
            StrategyContext(
                spec, bootstrap, worker_id, metrics, self.partitions, self.changelog,
                self.labels_topic,
            )
        )  # fmt: skip
        self.error: BaseException | None = None
        self.ready = threading.Event()
        # not ``_stop``: threading.Thread has a method of that name that join() calls
        self._stop_event = threading.Event()
        #: input partitions whose state is being restored in the background, paused until
        #: it is in (`_install_restored`): the partitions a worker keeps go on meanwhile
        self._restores: dict[int, _Restore] = {}
        self._restored_s = 0.0  # the longest restore of the current assignment
        self.consumer: Consumer | None = None
        #: input partitions whose saved state is ignored, once, at their first assignment
        #: (``driftline worker --reset-state``); "all": every partition
        self._reset_state: StateReset = reset_state
        #: what a rebalance callback raised (librdkafka cannot carry it out of ``consume``)
        self._callback_error: BaseException | None = None
        #: authentication/TLS failures of the running clients (a rotated password)
        self._client_trouble = PersistentFailure()
        #: with a Schema Registry input format: the schema-id cache the partitions share, and
        #: the gate that pauses consumption while the registry cannot be reached
        self.schema_readers: SchemaReaders | None = None
        self.registry_gate: Any = None
        #: with output.format = "avro": the output topics' registered schemas
        self.avro_outputs: Any = None
        if spec.output.format == "avro":
            from driftline.agents.avro_out import AvroOutputs
            from driftline.agents.registry import registry_client

            assert spec.schema_registry is not None  # parse_spec requires it
            self.avro_outputs = AvroOutputs(spec, registry_client(spec.schema_registry))
        if spec.input.format != "json":
            from driftline.agents.registry import RegistryGate, registry_client

            sr, fmt = spec.schema_registry, spec.input.format
            assert sr is not None  # parse_spec requires it
            self.schema_readers = SchemaReaders(registry_client(sr), fmt)
            self.registry_gate = RegistryGate(
                self.schema_readers, sr, spec.input.topic,
                metrics.schema_registry_up.labels(fmt), metrics.schema_registry_retries.labels(fmt),
            )  # fmt: skip
        #: whether the clients reach the brokers (one log line per change)
        self.link = BrokerLink(bootstrap, metrics.broker_connected)
        self._last_probe = 0.0
        #: outages after which the commit strategy was recovered
        self._outages_recovered = 0

    @property
    def restoring(self) -> frozenset[int]:
        """Input partitions whose state is being restored (for health())."""
        return frozenset(self._restores)

    @property
    def pipelines(self) -> dict[int, PartitionPipeline]:
        """The assigned input partitions' pipelines."""
        return self.partitions.pipelines

    @property
    def positions(self) -> dict[int, dict[str, int]]:
        """Per input partition: the next offset of each of its topics (in the snapshot)."""
        return self.partitions.positions

    @property
    def epochs(self) -> dict[int, int]:
        """Per input partition: the epoch of its latest snapshot."""
        return self.partitions.epochs

    @property
    def exactly_once(self) -> bool:
        return self.commit.guarantee == "exactly_once"

    def stop(self) -> None:
        self._stop_event.set()

    # -- rebalance callbacks (run inside consumer.consume, between transactions) ---------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._in_callback(self._assign, consumer, partitions)

    def _in_callback(self, fn: Callable[[Consumer, list[TopicPartition]], None],
                     consumer: Consumer, partitions: list[TopicPartition]) -> None:  # fmt: skip
        if self._callback_error is not None:
            return  # the loop stops with the first error
        if consumer is not self.consumer:
            return  # a failed consumer being closed: its partitions are dropped already
        try:
            fn(consumer, partitions)
        except BaseException as e:  # raised from the loop: see `_raise_callback_error`
            self._callback_error = e

    def _on_consumer_error(self, err: KafkaError) -> None:
        """The consumer's ``error_cb``: the broker link (outages), then lasting failures."""
        self.link.error_cb(err)
        self._on_client_error(err)

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka's ``error_cb`` (consumer and producer): an authentication or TLS failure
        that lasts stops the loop with one line saying what to check, instead of retrying
        forever with a worker that looks alive."""
        if self._client_trouble.seen(err, time.monotonic()) and self._callback_error is None:
            why = explain(err, KafkaConfig.of(self.bootstrap))
            self._callback_error = DriftlineError(
                f"{why} (for {self._client_trouble.grace_s:.0f} s while running)"
            )

    def _raise_callback_error(self) -> None:
        """Re-raise, in the loop, what a rebalance callback raised inside ``consume``: raised
        there, librdkafka loses it (a SystemError about a tuple instead of the real error)."""
        e, self._callback_error = self._callback_error, None
        if e is not None:
            raise e

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take ``partitions``: the ones whose state is at hand (kept, or given back untouched)
        start at once; the others are assigned paused and restored from the changelog on a
        background thread, so a rebalance never stops the partitions this worker keeps."""
        t0 = time.perf_counter()
        # input partition p and labels partition p share one state (range assignment keeps
        # them on the same worker)
        wanted = sorted({tp.partition for tp in partitions})
        try:
            later = self._restore(consumer, wanted)
        finally:
            self.partitions.forget_retained()
        self.commit.on_assign(consumer, partitions)
        paused = [tp for tp in partitions if tp.partition in later]
        if paused:
            consumer.pause(paused)
        committed = self._committed_many(consumer, later)
        for p in later:
            topics = [tp.topic for tp in paused if tp.partition == p]
            self._restores[p] = _Restore(self, p, committed[p], topics)
        for p in wanted:
            if p in self.pipelines:
                declare_partition(self.metrics, self.pipelines[p])
        self.metrics.assigned.set(len(self.pipelines))
        log.info(
            "assigned partitions %s (%s)",
            describe_partitions(partitions),
            f"restoring {later} from the changelog; the others run"
            if later
            else f"state at hand in {time.perf_counter() - t0:.2f}s",
        )

    def _install_restored(self, consumer: Consumer) -> None:
        """Start each partition whose background restore has finished: its pipeline in, read
        from where its state ends, unpaused. A restore that failed stops the loop with its
        error (a `ChangelogError` names topic, partition and offset)."""
        for p, job in list(self._restores.items()):
            if not job.done.is_set():
                continue
            del self._restores[p]
            if job.error is not None:
                raise job.error
            assert job.result is not None
            pipe, saved = job.result
            self._own(p, pipe, saved)
            tps = [TopicPartition(t, p) for t in job.topics]
            self.commit.on_restored(consumer, tps)
            consumer.resume(tps)
            declare_partition(self.metrics, pipe)
            self.metrics.assigned.set(len(self.pipelines))
            self._restored_s = max(self._restored_s, job.seconds)
            log.info("partition %d: restored in %.2fs; running", p, job.seconds)
            if not self._restores:
                log.info("every assigned partition runs (state restored in %.2fs)",
                         self._restored_s)  # fmt: skip
                self._restored_s = 0.0

    def _restore(self, consumer: Consumer, wanted: list[int]) -> list[int]:
        """A pipeline for each of ``wanted`` not owned yet whose state is at hand (a reset, or
        kept through the rebalance); the partitions whose state must be read from the changelog
        (restored in the background by `_Restore`), returned.
        """
        if self._reset_state == "all":  # every partition of this worker's first assignment
            self._reset_state = frozenset(wanted)
        later: list[int] = []
        for p in wanted:
            if p in self.pipelines or p in self._restores:
                continue
            if self._take_reset(p):
                log.warning(
                    "partition %d: saved state ignored on request (--reset-state): windows, "
                    "detectors and alert episodes start empty at the group's committed offset",
                    p,
                )
                pipe, saved = self._new_pipeline(p), None
                # the old state's per-key records go with the first snapshot
                old = read_changelog_partition(self.bootstrap, self.changelog, p)
                self.partitions.pending[p] = [(k, None) for k in keyed_keys(old, p)]
            elif p in self.partitions.retained and self.partitions.resume(
                p, self._committed_all(consumer, p)
            ):
                log.info("partition %d: given back untouched since this worker's last commit; "
                         "resumed from memory", p)  # fmt: skip
                continue
            else:
                later.append(p)
                continue
            self._own(p, pipe, saved)
        return later

    def _own(
        self, p: int, pipe: PartitionPipeline, saved: tuple[int, dict[str, Any]] | None
    ) -> None:
        """``pipe`` (restored from ``saved``, or new) is partition ``p``'s from now on."""
        # from now on the engine collects the keys each batch changes (their records are
        # all the changelog gets of the feature windows)
        pipe.engine.track_changes()
        if saved is not None:
            epoch, state = saved
            self.epochs[p] = epoch
            self.positions[p] = dict(state.get("offsets", {}))
        else:
            self.epochs[p] = 0
            self.positions[p] = {}
        self.pipelines[p] = pipe

    def _new_pipeline(self, p: int) -> PartitionPipeline:
        return PartitionPipeline(
            self.spec, p, self.predictor, self.model_version, self.batch_cache,
            self.schema_readers,
        )  # fmt: skip

    def _restore_partition(
        self, p: int, committed: int | None
    ) -> tuple[PartitionPipeline, tuple[int, dict[str, Any]] | None]:
        """Partition ``p``'s pipeline restored from its newest snapshot, checked against the
        group's committed offset: none while the group has committed is a `ChangelogError`;
        one older than the group's offset means the changelog was read before the markers of
        the transaction that committed both (read_committed stops short of an undecided one):
        read again, up to `RESTORE_SETTLE_S`, then a `ChangelogError`."""
        deadline = time.monotonic() + RESTORE_SETTLE_S
        topic = self.spec.input.topic
        while True:
            pipe = self._new_pipeline(p)
            records = read_changelog_partition(self.bootstrap, self.changelog, p)
            saved = restore_snapshot(records, p, pipe.restore)  # errors name the record
            if saved is None:
                check_state_present(records, p, topic, committed)
                return pipe, None
            covered = saved[1].get("offsets", {}).get(topic)
            if committed is None or covered is None or committed <= covered:
                return pipe, saved
            if time.monotonic() > deadline:
                raise ChangelogError(
                    self.changelog, p, None, f"{p}/head".encode(),
                    f"the newest snapshot covers {topic}[{p}] up to offset {covered}, but the "
                    f"consumer group has committed offset {committed}: the snapshot written with "
                    "those offsets is missing",
                )  # fmt: skip
            log.info("partition %d: the changelog is behind the group's offsets (%d < %d); "
                     "reading it again", p, covered, committed)  # fmt: skip
            time.sleep(0.5)

    def _take_reset(self, p: int) -> bool:
        """Whether ``p``'s saved state is to be ignored now (once per partition and process)."""
        reset = self._reset_state
        if reset != "all" and p in reset:
            self._reset_state = frozenset(reset) - {p}
            return True
        return False

    def _committed_all(self, consumer: Consumer, p: int) -> dict[str, int | None]:
        """The group's committed offset of partition ``p`` of each topic this worker read
        there (None: none committed)."""
        topics = sorted(self.partitions.retained[p][1])
        tps = consumer.committed([TopicPartition(t, p) for t in topics], timeout=30)
        return {tp.topic: (tp.offset if tp.offset >= 0 else None) for tp in tps}

    def _committed_many(self, consumer: Consumer, ps: list[int]) -> dict[int, int | None]:
        """The group's committed offset on each input partition of ``ps`` (None: none)."""
        if not ps:
            return {}
        tps = consumer.committed([TopicPartition(self.spec.input.topic, p) for p in ps],
                                 timeout=30)  # fmt: skip
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in tps}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._in_callback(self._revoke, consumer, partitions)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self.commit.before_revoke()  # hand partitions over only once what we did is durable
        except BaseException:  # CommitLost: the loop recovers the partitions it keeps
            self._drop(partitions)
            raise
        self._drop(partitions, retain=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._in_callback(self._lost, consumer, partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (session expired): another worker may own
        them already, so nothing of theirs is written; exactly_once's transaction is fenced."""
        self.commit.on_lost(partitions)
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition], retain: bool = False) -> None:
        """Forget ``partitions``; ``retain``: keep their state in memory until the next
        assignment, in case the rebalance gives them back (`OwnedPartitions.retain`)."""
        for tp in partitions:
            self._restores.pop(tp.partition, None)  # its result, when it comes, is dropped
            if retain:
                self.partitions.retain(tp.partition)
            else:
                self.partitions.drop(tp.partition)
            self.metrics.remove_lag(tp.topic, tp.partition)
            self.metrics.remove_partition(tp.partition)
        self.metrics.assigned.set(len(self.pipelines))
        log.info("revoked partitions %s", describe_partitions(partitions))

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported to the faust service, which stops the worker
            self.error = e
            log.exception("the worker loop failed; the last open transaction is aborted")
        finally:
            self.ready.set()

    def _consumer(self) -> Consumer:
        spec, w = self.spec, self.spec.worker
        return Consumer(
            client_conf(self.bootstrap, {
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
                # librdkafka 2.x waits this long before fetching again once its queue is full
                # (default 1000 ms): a raw consumer read 115-126k events/s at the default and
                # 217-258k/s at 10 ms, at the same CPU per event (bench/peer_bench.py)
                "fetch.queue.backoff.ms": 10,
                # the same partition number of the input and labels topics on one worker
                "partition.assignment.strategy": "range",
                "error_cb": self._on_consumer_error,
                **self.commit.consumer_config(),
            })
        )  # fmt: skip

    def _producer(self, overrides: dict[str, Any] | None = None) -> Producer:
        """A producer for the commit strategy (it makes another if one gets stuck), with
        ``overrides`` over the strategy's settings."""
        return Producer(
            client_conf(self.bootstrap, {
                **self.commit.producer_config(),
                **(overrides or {}),
                # every write waits for the topic's min.insync.replicas (transactions and
                # idempotence need it too; said here so no strategy can weaken it)
                "acks": "all",
                # after a commit the coordinator answers the next AddOffsetsToTxn with
                # CONCURRENT_TRANSACTIONS until it has written the markers; librdkafka's default
                # 100 ms retry backoff then stalls every batch (measured: 97-105 ms vs 5 ms)
                "retry.backoff.ms": 5,
                "retry.backoff.max.ms": 100,
                "compression.type": "lz4",
                "message.max.bytes": 2 * CHUNK_BYTES + 65_536,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                "error_cb": self._on_client_error,
            })
        )  # fmt: skip

    def _run(self) -> None:
        spec, w = self.spec, self.spec.worker
        consumer = self._consumer()
        self.commit.start(consumer, self._producer(), self._producer)
        self._subscribe(consumer)
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
                try:
                    self._round(consumer, w.batch_max_records, timeout_s)
                except (CommitLost, ConsumerFailed) as e:
                    consumer = self._recover(consumer, e)
            try:
                self.commit.finish()
            except CommitLost as e:
                log.warning("stopping: the last batch was not committed (%s); the next start "
                            "processes it again", e)  # fmt: skip
        finally:
            self._close(consumer)

    def _round(self, consumer: Consumer, max_records: int, timeout_s: float) -> None:
        """One turn of the loop: poll, process, hand to the commit strategy."""
        if self.commit.recover_after_outage and self.link.up:
            if self._outages_recovered < self.link.outages:
                self._outages_recovered = self.link.outages
                raise CommitLost("outage", "the Kafka brokers were away")
        t0 = time.perf_counter()
        msgs = self._poll(consumer, max_records, timeout_s)
        self._raise_callback_error()
        if self._restores:
            self._install_restored(consumer)
        for err in errors_of(msgs):
            if err.fatal() or err.code() == KafkaError._FATAL:
                # e.g. a static member fenced after its session expired in a broker outage
                raise ConsumerFailed(str(err))
        gate = self.registry_gate
        if msgs and gate is not None and not gate.admit(consumer, msgs):
            msgs = []  # held (sought back, paused) until the registry answers
        if gate is not None:
            gate.retry(consumer)
        if msgs:
            if msgs[-1].error() is None:
                self.link.ok()  # records arrived: a broker answers
            self.metrics.stage_seconds.labels("poll").observe(time.perf_counter() - t0)
            self.commit.send(self._process(msgs))
        else:
            self.commit.idle()
            self._probe(consumer)
        self.commit.tick()
        self._export_lag(consumer)

    def _probe(self, consumer: Consumer) -> None:
        """While the brokers are away (and nothing arrives), ask for metadata now and then:
        the first answer ends the outage (and its log line says so)."""
        now = time.monotonic()
        if self.link.up or now - self._last_probe < PROBE_INTERVAL_S:
            return
        self._last_probe = now
        try:
            consumer.list_topics(self.spec.input.topic, timeout=1.0)
        except KafkaException:
            return
        self.link.ok()

    def _recover(self, old: Consumer, lost: CommitLost | ConsumerFailed) -> Consumer:
        """A commit was lost, or the consumer failed for good: start over from what is
        committed, in-process. Every owned partition is dropped; the producer is made usable
        again (`CommitStrategy.recover`: aborts, or replaces it; its bounded calls are retried
        until the brokers answer); a new consumer joins the group (static membership: it takes
        the partitions back at once), and its assignment restores each partition from its last
        committed snapshot, as at start. Whatever was processed after that is processed again;
        nothing of it was committed. Returns the new consumer."""
        t0 = time.monotonic()
        reason = lost.reason if isinstance(lost, CommitLost) else "fatal"
        self.metrics.producer_resets.labels(reason).inc()
        owned = sorted(self.pipelines)
        if reason == "outage":
            log.info("the Kafka brokers are back: new clients, partitions %s restart from their "
                     "last committed state", owned)  # fmt: skip
        else:
            failed = isinstance(lost, ConsumerFailed)
            why = f"the Kafka consumer failed ({lost})" if failed else str(lost)
            log.warning("%s: new clients, partitions %s restart from their last committed state",
                        why, owned)  # fmt: skip
        if reason == "stalled":
            self.link.lost("a commit got no answer")
        if self.pipelines:
            self._drop([TopicPartition(self.spec.input.topic, p) for p in owned])
        self.partitions.forget_retained()  # restored from what is committed, nothing kept
        self._restores.clear()
        self.consumer = None  # the old consumer's rebalance callbacks do nothing from now on
        try:
            call_bounded("closing the consumer", CLOSE_CONSUMER_S, old.close)
        except (KafkaException, Stalled) as e:
            log.info("the old consumer did not close cleanly: %s", e)
        self._retry_until_done(lambda: self.commit.recover(reason, self._stop_event))
        # the new producer serves this outage too (the consumer's next poll or the probe says
        # when the brokers answer again)
        self._outages_recovered = self.link.outages
        consumer = self._consumer()
        self.commit.consumer = consumer
        self._subscribe(consumer)
        log.info("new clients ready in %.1f s; the partitions restore as they are assigned",
                 time.monotonic() - t0)  # fmt: skip
        return consumer

    def _subscribe(self, consumer: Consumer) -> None:
        """``consumer`` is the runner's from now on (its rebalance callbacks act), subscribed."""
        self.consumer = consumer
        consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _retry_until_done(self, fn: Callable[[], None]) -> None:
        """``fn()`` until it returns, retried every second while the brokers do not answer
        (bounded calls fail with KafkaException or Stalled), or until the worker stops."""
        failures = 0
        while not self._stop_event.is_set():
            try:
                fn()
                return
            except (KafkaException, Stalled) as e:
                failures += 1
                if failures == 1:
                    log.warning("the Kafka brokers do not answer yet (%s); retrying", e)
                self._stop_event.wait(1.0)

    def _close(self, consumer: Consumer) -> None:
        """Close the clients, each within a bound (a client stuck in librdkafka is left)."""
        try:
            call_bounded("closing the consumer", CLOSE_CONSUMER_S, consumer.close)
        except (KafkaException, Stalled) as e:
            log.warning("the consumer did not close cleanly: %s", e)
        producer = self.commit.producer
        if producer is not None:
            try:
                left = call_bounded("flushing the producer", 10, producer.flush, 5)
                if left:
                    log.warning("%d messages were not delivered before stopping", left)
            except Stalled as e:
                log.warning("%s", e)
        self.commit.close()

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
        by_part, errors = group_messages(msgs)
        for msg in errors:
            log.warning("consumer error on %s[%s]: %s", msg.topic(), msg.partition(), msg.error())
        outcomes: list[Outcome] = []
        # predictions before the labels of the same batch (the join is order-insensitive
        # within its TTL; this order only saves early-label round trips)
        for (topic, p), ms in sorted(by_part.items(), key=lambda kv: kv[0][0] == self.labels_topic):
            pipe = self.pipelines.get(p)
            if pipe is None:  # not ours any more (revoked while fetched)
                continue
            cols = RecordColumns.from_messages(topic, p, ms)
            if topic == self.labels_topic:
                oc = pipe.process_labels(cols)
            elif topic == self.business_topic:
                oc = pipe.process_business(cols)
            else:
                oc = pipe.process(cols)
            if self.avro_outputs is not None:
                self.avro_outputs.transcode(oc)
            outcomes.append((topic, p, oc))
        return outcomes

    def _export_entities(self) -> None:
        """Each partition's entities held, and those its engine evicted since the last call."""
        for p, pipe in self.pipelines.items():
            eng = pipe.engine
            self.metrics.set_entities(p, eng.n_entities, eng.drain_evicted())

    def _export_lag(self, consumer: Consumer) -> None:
        if self.batch_cache is not None:
            self.metrics.batch_cache_entries.set(len(self.batch_cache))
        self._export_entities()
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
                        "firing": bool(det.in_drift),
                        "statistic": float(det.statistic),
                        "p_value": det.p_value,
                        "n_seen": int(det.n_seen),
                        # KS detectors expose their samples (numpy copies); others do not
                        "reference": getattr(det, "reference", None),
                        "current": getattr(det, "current_window", None),
                    }
                )
            detectors += _multivariate_status(pipe, p)
        return {
            "pipeline": self.spec.name,
            "worker_id": self.worker_id,
            "input_topic": self.spec.input.topic,
            "partitions": sorted(watermarks),
            "watermarks_ms": watermarks,
            "detectors": detectors,
        }

    def health(self, stall_after_s: float = 60.0, now: float | None = None) -> dict[str, Any]:
        """Whether this worker does its job (for ``/healthz``): ``healthy`` and a ``reason``.

        Not healthy when the loop is not running (not started, stopping, or failed: ``error``),
        when no input partition is assigned, or when it is stalled: the input partitions' lag
        (as the loop last exported it) is positive while their processed positions have not
        moved for ``stall_after_s`` seconds. Called from the web server's thread: it reads
        copies and keeps only when it last saw the positions move (``now``: a monotonic time,
        for tests).
        """
        now = time.monotonic() if now is None else now
        owned = sorted(list(self.pipelines))
        moved = tuple((p, tuple(sorted(dict(self.positions.get(p, {})).items()))) for p in owned)
        seen = self.__dict__.get("_health_progress")
        if seen is None or seen[0] != moved:
            seen = self.__dict__["_health_progress"] = (moved, now)
        idle_s = now - seen[1]
        topic, mine = self.spec.input.topic, {str(p) for p in owned}
        pending = sum(
            int(s.value)
            for fam in self.metrics.consumer_lag.collect()
            for s in fam.samples
            if s.labels.get("topic") == topic and s.labels.get("partition") in mine
        )
        report: dict[str, Any] = {
            "pipeline": self.spec.name,
            "worker_id": self.worker_id,
            "partitions": owned,
            "pending_records": pending,
            "seconds_since_progress": round(idle_s, 3),
        }
        if self.error is not None:
            status, reason = "not_running", f"the worker loop failed: {self.error}"
        elif self._stop_event.is_set():
            status, reason = "not_running", "the worker loop is stopping"
        elif not self.is_alive():
            status, reason = "not_running", "the worker loop is not running"
        elif not self.ready.is_set():
            status, reason = "not_running", "the worker loop is starting"
        elif self.registry_gate is not None and self.registry_gate.holding:
            status = "registry_unreachable"
            reason = (
                f"consumption of {topic} is paused: the schema registry cannot be reached "
                f"({self.registry_gate.reason})"
            )
        elif self.restoring:
            status = "restoring"
            reason = f"restoring the state of partitions {sorted(self.restoring)} of {topic}"
        elif not owned:
            status, reason = "no_partitions", f"no partition of {topic} is assigned to it"
        elif pending > 0 and idle_s >= stall_after_s:
            status = "stalled"
            reason = (
                f"{pending} records of {topic} are waiting but no batch was processed for "
                f"{idle_s:.0f} s"
            )
        else:
            status, reason = "ok", f"processing partitions {owned} of {topic}"
        return {"healthy": status == "ok", "status": status, "reason": reason, **report}
