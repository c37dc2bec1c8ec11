"""Small helpers the integration tests share: read topics, run a worker, read /metrics."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from driftline.agents.demo import _to_toml, train_demo_model, worker_argv
from driftline.agents.kafka_io import client_conf, ensure_topics
from driftline.agents.scrape import read_metric
from driftline.kafka_config import Kafka
from driftline.localkafka import free_ports  # noqa: F401 (tests import it from here)
from driftline.spec import PipelineSpec, load_spec


class LogLines(logging.Handler):
    """Keeps the messages of the INFO (and higher) records it is handed, in ``lines``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_topic(
    bootstrap: Kafka, topic: str, timeout_s: float = 60.0, at_least: int = 0
) -> list[Rec]:
    """Every record now on ``topic`` (all partitions, up to the high watermarks).

    With ``at_least``, read again (until ``timeout_s``) while fewer records came back: a
    just-committed transaction's records can take a moment to show in the watermarks.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        recs = _read_topic_once(bootstrap, topic, timeout_s)
        if len(recs) >= at_least or time.monotonic() > deadline:
            return recs
        time.sleep(0.5)


def _read_topic_once(bootstrap: Kafka, topic: str, timeout_s: float) -> list[Rec]:
    c = Consumer(
        client_conf(
            bootstrap,
            {
                "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,  # transaction markers take offsets: stop at EOF
            },
        )
    )
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        ends: dict[int, int] = {}
        tps = []
        for p in md.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
                tps.append(TopicPartition(topic, p, lo))
        c.assign(tps)
        out: list[Rec] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
            for m in c.consume(10_000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                    continue
                out.append(Rec(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


#: the demo's /metrics reader, with a label filter
metric = read_metric


def start_worker(
    spec_path: Path, bootstrap: str, log_path: Path, worker_id: str | None = None, *options: str
) -> subprocess.Popen[bytes]:
    """A worker subprocess at log level info (more ``options`` are passed on), stderr to
    ``log_path``."""
    extra = ["--worker-id", worker_id] if worker_id else []
    return subprocess.Popen(
        worker_argv(spec_path, bootstrap, "--loglevel", "info", *extra, *options),
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )


def write_pipeline(
    tmp: Path,
    data: dict[str, Any],
    bootstrap: Kafka,
    *,
    model_rows: int = 20_000,
    topics: Sequence[str] = (),
) -> tuple[Path, PipelineSpec]:
    """Train the demo model into ``tmp``, write ``data`` as ``tmp/spec.toml`` and create its input
    topic (and ``topics``) with two partitions."""
    model = tmp / "demo-model.pkl"
    train_demo_model(model, list(data["model"]["inputs"]), n=model_rows)
    data["model"]["path"] = str(model)
    spec_path = tmp / "spec.toml"
    spec_path.write_text(_to_toml(data))
    spec = load_spec(spec_path)
    ensure_topics(bootstrap, [spec.input.topic, *topics], partitions=2)
    return spec_path, spec


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offset on each partition of ``topic`` (negative: none yet).

    read_uncommitted: do not wait for a killed worker's pending offsets (require_stable=false).
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "isolation.level": "read_uncommitted"})  # fmt: skip
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        c.close()


def committed_total(bootstrap: str, spec: PipelineSpec, partitions: int = 2) -> int:
    """How many input records the pipeline's group has committed, over all partitions."""
    return sum(max(o, 0) for o in committed_offsets(
        bootstrap, spec.group_id, spec.input.topic, partitions))  # fmt: skip


def wait_until_committed(
    bootstrap: str, spec: PipelineSpec, total: int, proc: subprocess.Popen[bytes], log_path: Path,
    timeout_s: float = 150.0,
) -> None:  # fmt: skip
    """Wait until the group has committed ``total`` input records; fail with the worker's log
    if ``proc`` exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while committed_total(bootstrap, spec) < total:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
        time.sleep(0.3)


#: the /metrics sample counting labels joined to their predictions
JOINED = ("driftline_label_join_outcomes_total", {"outcome": "joined"})


def kill_after(
    url: str,
    at_least: int,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    metric: tuple[str, dict[str, str] | None] = ("driftline_records_consumed_total", None),
) -> None:
    """SIGKILL the worker once its /metrics ``metric`` (name, labels) reaches ``at_least``."""
    try:
        wait_for_metric(url, metric[0], at_least, proc, log_path, labels=metric[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def wait_for_metric(
    url: str,
    name: str,
    at_least: float,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout_s: float = 120.0,
    labels: dict[str, str] | None = None,
) -> float:
    """Wait until the worker's ``name`` samples (with ``labels``) sum to ``at_least``; fail with
    the worker's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    value = -1.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"worker exited {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            value = metric(url, name, labels)
        except OSError:
            value = -1.0
        if value >= at_least:
            return value
        time.sleep(0.2)
    raise AssertionError(
        f"{name}{labels or ''} reached {value}, not {at_least}, in {timeout_s}s:\n"
        + log_path.read_text()[-4000:]
    )


def kcat_produce(
    kcat: str, bootstrap: str, topic: str, lines: list[bytes], delim: str = "|"
) -> None:
    """Produce ``key<delim>value`` lines with kcat, as a user would."""
    data = b"\n".join(lines) + b"\n"
    subprocess.run(
        # idempotence: no reordering on retries, so event-time order within a partition holds
        [
            kcat,
            "-P",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-K",
            delim,
            "-X",
            "message.max.bytes=2000000",
            "-X",
            "enable.idempotence=true",
        ],
        input=data,
        check=True,
        timeout=120,
    )


def consume_one(config: dict[str, str], topic: str, timeout_s: float = 60.0) -> bytes:
    """The value of the first record of ``topic`` (a fresh group from the earliest offset);
    ``config`` holds ``bootstrap.servers`` and any security settings."""
    consumer = Consumer(
        {**config, "group.id": f"test-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                return bytes(msg.value())
        raise AssertionError(f"no message consumed from {topic} within {timeout_s:g} s")
    finally:
        consumer.close()
