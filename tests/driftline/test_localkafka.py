"""The local Apache Kafka launcher against a real broker (Java 17+ and Maven needed, no mocks)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.errors import KafkaLauncherError
from driftline.localkafka import KAFKA_VERSION, LocalKafka, _random_cluster_id, free_port
from tests.kafka_helpers import consume_one


@pytest.fixture(autouse=True)
def _java_and_maven() -> None:
    """These tests need the real toolchain (.ci/run installs it); never skip them silently."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.fail(
            "needs java (17+) and mvn on PATH: apt-get install -y openjdk-17-jre-headless maven"
        )


def _pid_gone(pid: int) -> bool:
    """Gone or a zombie (an orphaned JVM may wait unreaped under a non-reaping PID 1)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def _produce_and_consume(bootstrap: str, topic: str, payload: bytes) -> bytes:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=b"k", value=payload)
    assert producer.flush(30) == 0, "message not delivered within 30 s"
    return consume_one({"bootstrap.servers": bootstrap}, topic)


def test_cluster_id_never_looks_like_an_option() -> None:
    assert all(not _random_cluster_id().startswith("-") for _ in range(2000))


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    kafka = LocalKafka(port=free_port(), data_dir=tmp_path / "data")
    with pytest.raises(KafkaLauncherError, match="java") as info:
        kafka.start(timeout_s=5)
    assert "apt-get install" in str(info.value)
    assert not kafka.state_file.exists()


@pytest.mark.integration
def test_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(KafkaLauncherError, match=f"port {port}"):
            LocalKafka(port=port, data_dir=tmp_path).start(timeout_s=5)


@pytest.mark.integration
def test_start_produce_consume_stop_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    kafka = LocalKafka(port=free_port(), data_dir=data_dir)
    topic = "driftline-test"
    try:
        started = time.monotonic()
        bootstrap = kafka.start(timeout_s=90)
        print(f"cold start (format + boot): {time.monotonic() - started:.1f} s")
        assert bootstrap == kafka.bootstrap == f"127.0.0.1:{kafka.port}"
        assert (data_dir / "broker.json").exists()

        _create_topic(bootstrap, topic)
        assert _produce_and_consume(bootstrap, topic, b"hello drift") == b"hello drift"

        status = kafka.status()
        pid = status["pid"]
        assert status["running"] is True
        assert status["bootstrap"] == bootstrap
        assert status["topics"] == 1  # internal __consumer_offsets is not counted
        assert status["data_dir"] == str(data_dir)

        again = LocalKafka(port=free_port(), data_dir=data_dir)
        assert again.start() == bootstrap  # reuses the live broker, does not start another
        assert again.already_running

        kafka.stop()
        assert _pid_gone(pid)
        assert not (data_dir / "broker.json").exists()
        assert kafka.status()["running"] is False
        assert kafka.status()["topics"] is None

        started = time.monotonic()
        kafka.start(timeout_s=90)
        print(f"warm restart: {time.monotonic() - started:.1f} s")
        assert topic in _topics(kafka.bootstrap)  # data survived the restart
        assert kafka.status()["pid"] != pid
    finally:
        kafka.stop()


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", "kafka", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_cli_help_has_examples() -> None:
    for command in ("start", "status", "stop", "fetch"):
        out = _cli(command, "--help")
        assert out.returncode == 0, out.stderr
        assert "example" in out.stdout and f"driftline kafka {command}" in out.stdout


@pytest.mark.integration
def test_cli_start_status_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-kafka"
    port = free_port()
    try:
        start = _cli("start", "--port", str(port), "--data-dir", str(data_dir), "--timeout", "90")
        assert start.returncode == 0, start.stdout + start.stderr
        assert f"127.0.0.1:{port}" in start.stdout
        assert KAFKA_VERSION in start.stdout

        again = _cli("start", "--port", str(port), "--data-dir", str(data_dir))
        assert again.returncode == 0 and "already running" in again.stdout

        status = _cli("status", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "running" in status.stdout and f"127.0.0.1:{port}" in status.stdout
        pid = LocalKafka(data_dir=data_dir).status()["pid"]

        stop = _cli("stop", "--data-dir", str(data_dir))
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped" in stop.stdout
        assert _pid_gone(pid)

        status = _cli("status", "--data-dir", str(data_dir))
        assert status.returncode == 1
        assert "not running" in status.stdout
    finally:
        LocalKafka(data_dir=data_dir).stop()


@pytest.mark.integration
def test_cli_stop_and_status_take_the_port_start_took(tmp_path: Path) -> None:
    data_dir = tmp_path / "port-kafka"
    port, other = free_port(), free_port()
    try:
        start = _cli("start", "--port", str(port), "--data-dir", str(data_dir), "--timeout", "90")
        assert start.returncode == 0, start.stdout + start.stderr
        pid = LocalKafka(data_dir=data_dir).status()["pid"]

        status = _cli("status", "--port", str(port), "--data-dir", str(data_dir))
        assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout, status.stderr
        wrong = _cli("status", "--port", str(other), "--data-dir", str(data_dir))
        assert wrong.returncode == 1
        assert f"listens on 127.0.0.1:{port}, not on port {other}" in wrong.stderr

        refused = _cli("stop", "--port", str(other), "--data-dir", str(data_dir))
        assert refused.returncode == 1
        assert f"listens on 127.0.0.1:{port}, not on port {other}" in refused.stderr
        assert LocalKafka(data_dir=data_dir).status()["running"]  # still up

        stop = _cli("stop", "--port", str(port), "--data-dir", str(data_dir))
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert f"Kafka at 127.0.0.1:{port} (pid {pid}) stopped" in stop.stdout
        assert _pid_gone(pid)
    finally:
        LocalKafka(data_dir=data_dir).stop()


def _produce_error(bootstrap: str, topic: str) -> str | None:
    """The delivery error of one message to ``topic`` (None if delivered)."""
    errors: list[str | None] = []
    producer = Producer({"bootstrap.servers": bootstrap, "topic.metadata.propagation.max.ms": 1000,
                         "message.timeout.ms": 20_000})  # fmt: skip
    producer.produce(
        topic, b"x", on_delivery=lambda err, _msg: errors.append(None if err is None else str(err))
    )
    producer.flush(30)
    assert len(errors) == 1
    return errors[0]


@pytest.mark.integration
def test_the_broker_creates_no_topic_a_client_names_unless_asked(tmp_path: Path) -> None:
    """A producer to a missing topic gets an error instead of a silent one-partition topic."""
    data_dir = tmp_path / "no-auto-kafka"
    port = free_port()
    try:
        start = _cli("start", "--port", str(port), "--data-dir", str(data_dir), "--timeout", "90")
        assert start.returncode == 0, start.stdout + start.stderr
        assert "not auto-created: driftline topics create -c SPEC" in start.stdout
        props = (data_dir / "server.properties").read_text()
        assert "auto.create.topics.enable=false" in props.splitlines()
        bootstrap = f"127.0.0.1:{port}"
        err = _produce_error(bootstrap, "nobody-made-me")
        assert err is not None and "UNKNOWN_TOPIC" in err.upper().replace(" ", "_"), err
        assert "nobody-made-me" not in _topics(bootstrap)
        assert _cli("stop", "--data-dir", str(data_dir)).returncode == 0

        start = _cli("start", "--port", str(port), "--data-dir", str(data_dir), "--timeout", "90",
                     "--auto-create-topics")  # fmt: skip
        assert start.returncode == 0, start.stdout + start.stderr
        assert "auto.create.topics.enable=true" in (data_dir / "server.properties").read_text()
        assert _produce_error(bootstrap, "made-on-first-use") is None
        assert "made-on-first-use" in _topics(bootstrap)
    finally:
        LocalKafka(data_dir=data_dir).stop()
