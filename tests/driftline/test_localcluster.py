"""The local N-broker cluster launcher against real brokers (Java 17+ and Maven needed)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.localcluster import LocalCluster, _override, is_cluster_dir
from tests.driftline.test_localkafka import _cli, _pid_gone
from tests.kafka_helpers import free_ports, read_topic

pytestmark = pytest.mark.integration


def _isr(bootstrap: str, topic: str) -> list[int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return sorted(md.topics[topic].partitions[0].isrs)


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("a=1\nb=2\n", {"b": "3"}, "a=1\nb=3\n"),
        ("a=1\nb=2\n", {"c": "x"}, "a=1\nb=2\nc=x\n"),
        ("a=1\n", {}, "a=1\n"),
        ("a=1\na.b=2\n", {"a": "9", "a.b": "8"}, "a=9\na.b=8\n"),
    ],
)
def test_override_replaces_or_adds_keys(text: str, values: dict[str, str], expected: str) -> None:
    assert _override(text, values) == expected


def test_three_brokers_survive_a_sigkilled_one(kafka_cluster3: LocalCluster) -> None:
    cluster = kafka_cluster3
    bootstrap = cluster.bootstrap
    assert len(bootstrap.split(",")) == 3
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert sorted(admin.list_topics(timeout=10).brokers) == [1, 2, 3]
    # every node is a voter: 3 controllers
    assert [n.controller for n in cluster.nodes] == [True, True, True]

    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    new = NewTopic(topic, 1, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([new])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    try:
        pid = cluster.nodes[1].pid
        assert pid is not None
        cluster.kill_broker(1)
        assert _pid_gone(pid)
        status = cluster.status()
        assert (status["up"], status["brokers"]) == (2, 3)
        assert status["pids"][1] is None
        # acks=all with min ISR 2 still succeeds with 2 of 3 replicas
        for i in range(100):
            producer.produce(topic, value=str(i).encode())
        assert producer.flush(60) == 0, "not every record was acknowledged with a broker down"

        cluster.start_broker(1)
        assert cluster.status()["up"] == 3
        deadline = time.monotonic() + 60
        while _isr(bootstrap, topic) != [1, 2, 3]:
            assert time.monotonic() < deadline, f"ISR {_isr(bootstrap, topic)} after restart"
            time.sleep(0.5)
    finally:
        cluster.start()  # leaves the session's cluster whole for the next test

    got = [r.value for r in read_topic(bootstrap, topic)]
    assert sorted(int(v or b"") for v in got) == list(range(100))


def test_cli_runs_a_three_broker_cluster(tmp_path: Path) -> None:
    data_dir = tmp_path / "k3"
    port = free_ports(6)
    try:
        start = _cli("start", "--brokers", "3", "--port", str(port), "--data-dir", str(data_dir),
                     "--timeout", "150", timeout=240)  # fmt: skip
        assert start.returncode == 0, start.stdout + start.stderr
        bootstrap = ",".join(f"127.0.0.1:{port + i}" for i in range(3))
        assert bootstrap in start.stdout and "3-broker cluster" in start.stdout
        assert is_cluster_dir(data_dir)

        status = _cli("status", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "3 of 3 brokers running" in status.stdout
        assert status.stdout.count("broker+controller, pid") == 3

        other = _cli("start", "--brokers", "2", "--data-dir", str(data_dir))
        assert other.returncode == 2
        assert "holds a 3-broker cluster, not 2" in other.stderr

        LocalCluster(data_dir=data_dir).kill_broker(2)
        status = _cli("status", "--data-dir", str(data_dir))
        assert status.returncode == 1  # not every broker is up
        assert "2 of 3 brokers running" in status.stdout and "DOWN" in status.stdout

        again = _cli("start", "--data-dir", str(data_dir), "--timeout", "150", timeout=240)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "3 of 3" in _cli("status", "--data-dir", str(data_dir)).stdout

        pids = LocalCluster(data_dir=data_dir).status()["pids"]
        stop = _cli("stop", "--data-dir", str(data_dir))
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert all(_pid_gone(p) for p in pids)
        status = _cli("status", "--data-dir", str(data_dir))
        assert status.returncode == 1 and "not running" in status.stdout
    finally:
        LocalCluster(data_dir=data_dir).stop()


def test_a_single_broker_dir_is_not_taken_for_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "meta.properties").write_text("node.id=1\n")
    out = _cli("start", "--brokers", "3", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "holds a single broker's data" in out.stderr
    bad = _cli("start", "--brokers", "0", "--data-dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--brokers must be at least 1" in bad.stderr
