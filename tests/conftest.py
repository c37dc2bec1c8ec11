"""One real Kafka broker per test session.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka if a Docker engine answers;
else driftline's own launcher running Apache Kafka's jars (KRaft) on a free loopback port.
``kafka_cluster3`` is a local 3-broker cluster (always the launcher's: tests kill its brokers).
Tests use their own topic names (see ``unique``) so they never see each other's records.

``secured_kafka`` is a separate, secured broker of driftline's launcher (``--security``), started
only by the tests that request it: one per mode, reused by every test of that mode.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from driftline.agents.kafka_io import wait_for_broker
from driftline.localcluster import LocalCluster
from tests.kafka_helpers import free_ports
from tests.secured_kafka import SECURED_MODES, SecuredKafka, start_secured


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


@pytest.fixture(scope="session")
def kafka_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A local 3-broker KRaft cluster (3 combined broker+controller nodes), started the first
    time a test asks for it. Tests that kill or stop a broker start it again when done
    (``cluster.start()`` restarts any node that is down)."""
    from driftline.errors import KafkaLauncherError

    errors: list[str] = []
    for _attempt in range(3):  # a port taken between the check and the broker's bind: again
        cluster = LocalCluster(3, port=free_ports(6), data_dir=tmp_path_factory.mktemp("kafka3"))
        try:
            cluster.start(timeout_s=180)
            break
        except KafkaLauncherError as exc:
            errors.append(str(exc))
    else:
        pytest.fail("the 3-broker cluster did not start:\n" + "\n".join(errors))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session", params=SECURED_MODES)
def secured_kafka(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecuredKafka]:
    """A broker of driftline's launcher secured with ``request.param`` (every secured mode by
    default; narrow with ``@pytest.mark.parametrize("secured_kafka", [...], indirect=True)``)."""
    from driftline.localkafka import free_port

    mode = str(request.param)
    kafka, secured = start_secured(mode, free_port(), tmp_path_factory.mktemp(f"kafka-{mode}"))
    try:
        yield secured
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
