"""One real Kafka broker per test session.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka if a Docker engine answers;
else driftline's own launcher running Apache Kafka's jars (KRaft) on a free loopback port.
Tests use their own topic names (see ``unique``) so they never see each other's records.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from driftline.agents.kafka_io import wait_for_broker


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        wait_for_broker(env, 60)
        yield env
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft() as kc:
            bootstrap = kc.get_bootstrap_server()
            wait_for_broker(bootstrap, 60)
            yield bootstrap
        return
    from driftline.localkafka import LocalKafka, free_port

    kafka = LocalKafka(port=free_port(), data_dir=tmp_path_factory.mktemp("kafka"))
    bootstrap = kafka.start(timeout_s=120)
    try:
        yield bootstrap
    finally:
        kafka.stop()


@pytest.fixture
def unique() -> str:
    """A short id to build topic and group names no other test uses."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed: apt-get install -y kcat (.ci/run does this)")
    return path
