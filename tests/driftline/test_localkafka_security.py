"""``driftline kafka start --security``: real secured brokers, real clients, real refusals.

One broker per mode (the session fixture ``secured_kafka``), reused by every test of that mode.
Clients read the property files the launcher wrote, as a user would: confluent-kafka, kcat
(``-F``) and Kafka's own Java console consumer (``--consumer.config``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.errors import KafkaLauncherError
from driftline.localcluster import LocalCluster
from driftline.localkafka import LocalKafka, tool_classpath
from driftline.localkafka_security import BrokerSecurity, issue_cert, make_ca, read_properties
from tests.kafka_helpers import consume_one, free_ports
from tests.secured_kafka import SecuredKafka

pytestmark = pytest.mark.integration

# librdkafka before 2.6.1 re-appends the client nonce in SCRAM's client-final-message; Kafka 4
# brokers check the nonce strictly and refuse it (confluentinc/librdkafka#4895).
SCRAM_FIXED_LIBRDKAFKA = (2, 6, 1)

# What each mode's librdkafka file must say (the client user's), beyond bootstrap.servers.
EXPECTED_CONFIG = {
    "sasl_ssl_scram": {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "driftline",
    },
    "sasl_ssl_plain": {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "driftline",
    },
    "ssl_mtls": {"security.protocol": "SSL"},
}
EXPECTED_JAVA = {
    "sasl_ssl_scram": {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "ssl.truststore.type": "PEM",
    },
    "sasl_ssl_plain": {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "ssl.truststore.type": "PEM",
    },
    "ssl_mtls": {
        "security.protocol": "SSL",
        "ssl.truststore.type": "PEM",
        "ssl.keystore.type": "PKCS12",
    },
}


# librdkafka reports a failed TLS handshake as _SSL or, when the socket read sees it first,
# _TRANSPORT (the message names the TLS error either way).
TLS_FAILURE = (KafkaError._SSL, KafkaError._TRANSPORT)


# --------------------------------------------------------------------------- helpers


def _create_topic(config: dict[str, str], topic: str) -> None:
    admin = AdminClient(config)  # kept referenced until the future resolves
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)


def _produce(config: dict[str, str], topic: str, value: bytes) -> KafkaError | None:
    """Produce one record; the delivery error (None when delivered)."""
    results: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 20000})
    producer.produce(topic, key=b"k", value=value, on_delivery=lambda err, _m: results.append(err))
    producer.flush(30)
    assert results, "no delivery report within 30 s"
    return results[0]


def _first_error(config: dict[str, str], within_s: float = 20.0) -> KafkaError:
    """The first client-level error a producer with ``config`` reports (auth, TLS)."""
    errors: list[KafkaError] = []
    producer = Producer(
        {**config, "error_cb": errors.append, "logger": logging.getLogger("refused-client")}
    )
    deadline = time.monotonic() + within_s
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, f"the broker accepted {sorted(config)} for {within_s:g} s"
    return errors[0]


def _kcat_librdkafka(kcat: str) -> tuple[int, ...]:
    out = subprocess.run([kcat, "-V"], capture_output=True, text=True, timeout=10, check=True)
    match = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out.stdout)
    assert match is not None, out.stdout
    return tuple(int(part) for part in match.groups())


def _secrets(secured: SecuredKafka) -> list[str]:
    values = json.loads((secured.data_dir / "security" / "secrets.json").read_text()).values()
    return [str(value) for value in values]


# --------------------------------------------------------------------------- broker config

TEMPLATE = (
    "node.id=1\n"
    "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n"
    "advertised.listeners=PLAINTEXT://127.0.0.1:9092\n"
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
    "inter.broker.listener.name=PLAINTEXT\n"
)
# The server.properties keys each mode sets (None: absent), from the template above.
SERVER_KEYS: dict[str, dict[str, str | None]] = {
    "sasl_ssl_scram": {
        "listeners": "SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "advertised.listeners": "SASL_SSL://127.0.0.1:9092",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "ssl.client.auth": None,
    },
    "sasl_ssl_plain": {
        "listeners": "SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "PLAIN",
        "ssl.client.auth": None,
    },
    "ssl_mtls": {
        "listeners": "SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "advertised.listeners": "SSL://127.0.0.1:9092",
        "listener.security.protocol.map": "SSL:SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SSL",
        "ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "sasl.mechanism.inter.broker.protocol": None,
    },
}
COMMON_KEYS = {
    "node.id": "1",
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:admin;User:broker",
    "allow.everyone.if.no.acl.found": "false",
    "ssl.keystore.type": "PKCS12",
    "ssl.truststore.type": "PEM",
}


def _parse(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize("mode", sorted(SERVER_KEYS))
def test_server_properties_of_each_mode(tmp_path: Path, mode: str) -> None:
    security = BrokerSecurity(tmp_path, mode)
    security.prepare()
    props = _parse(security.server_properties(TEMPLATE))
    for key, value in (SERVER_KEYS[mode] | COMMON_KEYS).items():
        assert props.get(key) == value, key
    users = ["admin", "driftline", "driftline-noacl"]
    scram = [f"SCRAM-SHA-512=[name={u},password={security.password(u)}]" for u in users]
    args = security.format_args()
    assert args == ([a for s in scram for a in ("--add-scram", s)] if "scram" in mode else [])
    assert BrokerSecurity(tmp_path).mode == mode  # a data dir keeps the mode it was made with


def test_plaintext_leaves_the_broker_as_it_was(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path)
    assert security.mode == "plaintext"
    security.prepare()
    assert security.server_properties(TEMPLATE) == TEMPLATE
    assert security.format_args() == [] and security.client_config() == {}
    assert not (tmp_path / "security").exists()


def test_an_unknown_mode_is_named() -> None:
    with pytest.raises(KafkaLauncherError, match="unknown security mode 'sasl_plaintext'; choose"):
        BrokerSecurity(Path("/nonexistent"), "sasl_plaintext")


# --------------------------------------------------------------------------- clients


def test_the_written_client_config_round_trips(secured_kafka: SecuredKafka, unique: str) -> None:
    expected = EXPECTED_CONFIG[secured_kafka.mode]
    assert {k: secured_kafka.config[k] for k in expected} == expected
    assert secured_kafka.config["bootstrap.servers"] == secured_kafka.bootstrap
    assert Path(secured_kafka.config["ssl.ca.location"]).is_file()
    if secured_kafka.mode == "ssl_mtls":
        assert Path(secured_kafka.config["ssl.certificate.location"]).is_file()
        assert Path(secured_kafka.config["ssl.key.location"]).is_file()
    topic = f"sec-rt-{unique}"
    _create_topic(secured_kafka.config, topic)  # the client user may create topics
    payload = f"round trip over {secured_kafka.mode}".encode()
    assert _produce(secured_kafka.config, topic, payload) is None
    assert consume_one(secured_kafka.config, topic) == payload


def test_kcat_with_the_written_file(secured_kafka: SecuredKafka, kcat: str, unique: str) -> None:
    topic = f"sec-kcat-{unique}"
    _create_topic(secured_kafka.config, topic)
    base = [kcat, "-F", str(secured_kafka.properties), "-t", topic]
    produce = subprocess.run(
        [*base, "-P", "-k", "kk"], input="from kcat\n", capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    if secured_kafka.mode == "sasl_ssl_scram" and _kcat_librdkafka(kcat) < SCRAM_FIXED_LIBRDKAFKA:
        # This kcat cannot SCRAM-authenticate to a Kafka 4 broker (see SCRAM_FIXED_LIBRDKAFKA):
        # the broker must say so, not hang; confluent-kafka (librdkafka 2.16) and Java do work.
        assert produce.returncode != 0
        assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in produce.stderr
        return
    assert produce.returncode == 0, produce.stderr
    consume = subprocess.run(
        [*base, "-C", "-o", "beginning", "-c", "1", "-e", "-f", "%k=%s"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert consume.returncode == 0, consume.stderr
    assert consume.stdout.strip() == "kk=from kcat"


def _kafka_tool(secured: SecuredKafka, main: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's own Java command-line tools (``org.apache.kafka.tools.<main>``)."""
    java = shutil.which("java")
    assert java is not None
    return subprocess.run(
        [
            java, "-cp", tool_classpath(),
            f"-Dlog4j2.configurationFile={secured.data_dir / 'log4j2.properties'}",
            f"org.apache.kafka.tools.{main}", "--bootstrap-server", secured.bootstrap, *args,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_kafka_console_consumer_with_the_java_file(
    secured_kafka: SecuredKafka, unique: str
) -> None:
    java_props = secured_kafka.java_properties.read_text()
    for key, value in EXPECTED_JAVA[secured_kafka.mode].items():
        assert f"\n{key}={value}\n" in java_props
    topic = f"sec-java-{unique}"
    _create_topic(secured_kafka.config, topic)
    assert _produce(secured_kafka.config, topic, b"for the Java consumer") is None
    out = _kafka_tool(
        secured_kafka, "consumer.ConsoleConsumer", "--topic", topic, "--from-beginning",
        "--max-messages", "1", "--timeout-ms", "60000",
        "--consumer.config", str(secured_kafka.java_properties),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["for the Java consumer"]
    assert "Processed a total of 1 messages" in out.stderr


@pytest.mark.parametrize("secured_kafka", ["ssl_mtls"], indirect=True)
def test_kafka_acls_lists_the_client_users_grants(secured_kafka: SecuredKafka) -> None:
    admin_java = secured_kafka.java_properties.with_name("admin.java.properties")
    out = _kafka_tool(secured_kafka, "AclCommand", "--command-config", str(admin_java), "--list")
    assert out.returncode == 0, out.stdout + out.stderr
    bindings, resource = [], ("", "")
    for line in out.stdout.splitlines():  # each resource, then one line per ACL on it
        if found := re.search(r"resourceType=(\w+), name=([^,]+), patternType=LITERAL", line):
            resource = (found.group(1), found.group(2))
        elif found := re.search(r"principal=User:driftline, host=\*, operation=(\w+), "
                                r"permissionType=ALLOW", line):  # fmt: skip
            bindings.append((*resource, found.group(1)))
    bindings.sort()
    assert out.stdout.count("principal=") == 6 and "driftline-noacl" not in out.stdout
    assert bindings == [
        ("CLUSTER", "kafka-cluster", "DESCRIBE"),
        ("CLUSTER", "kafka-cluster", "DESCRIBE_CONFIGS"),
        ("CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE"),
        ("GROUP", "*", "ALL"),
        ("TOPIC", "*", "ALL"),
        ("TRANSACTIONAL_ID", "*", "ALL"),
    ]


# --------------------------------------------------------------------------- refusals


# What the broker answers a wrong password with, per mechanism.
WRONG_PASSWORD = {
    "sasl_ssl_scram": "invalid credentials with SASL mechanism SCRAM-SHA-512",
    "sasl_ssl_plain": "Authentication failed: Invalid username or password",
}


@pytest.mark.parametrize("secured_kafka", sorted(WRONG_PASSWORD), indirect=True)
def test_a_wrong_password_is_refused(secured_kafka: SecuredKafka) -> None:
    error = _first_error({**secured_kafka.config, "sasl.password": "not-the-password"})
    assert error.code() == KafkaError._AUTHENTICATION
    assert "SASL authentication error" in error.str()
    assert WRONG_PASSWORD[secured_kafka.mode] in error.str()


def test_an_unknown_ca_is_refused(secured_kafka: SecuredKafka, tmp_path: Path) -> None:
    other_ca = make_ca(tmp_path, "other-ca", "not the broker's CA")
    error = _first_error({**secured_kafka.config, "ssl.ca.location": str(other_ca)})
    assert error.code() in TLS_FAILURE
    assert "certificate verify failed" in error.str()


# A client certificate the broker refuses, and the TLS alert it answers with.
MTLS_REFUSALS = [
    ("no client certificate", None, "alert bad certificate"),
    ("certificate of another CA", "other", "alert certificate unknown"),
]


@pytest.mark.parametrize("secured_kafka", ["ssl_mtls"], indirect=True)
@pytest.mark.parametrize(("case", "cert", "alert"), MTLS_REFUSALS)
def test_mtls_refuses_clients_without_a_trusted_certificate(
    secured_kafka: SecuredKafka, tmp_path: Path, case: str, cert: str | None, alert: str
) -> None:
    config = {
        k: v
        for k, v in secured_kafka.config.items()
        if k not in ("ssl.certificate.location", "ssl.key.location")
    }
    if cert is not None:
        other_ca = make_ca(tmp_path, cert)
        key_file, cert_file = issue_cert(other_ca, tmp_path, "driftline", server=False)
        config |= {"ssl.certificate.location": str(cert_file), "ssl.key.location": str(key_file)}
    error = _first_error(config)
    assert error.code() in TLS_FAILURE, case
    assert alert in error.str(), case


def test_the_user_without_acls_is_denied(secured_kafka: SecuredKafka, unique: str) -> None:
    topic = f"sec-noacl-{unique}"
    _create_topic(secured_kafka.config, topic)
    noacl = secured_kafka.noacl_config
    assert noacl["bootstrap.servers"] == secured_kafka.bootstrap
    error = _produce(noacl, topic, b"must not land")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # it authenticated (the denial is the authorizer's), and sees no topic at all
    assert topic in AdminClient(secured_kafka.config).list_topics(timeout=10).topics
    assert AdminClient(noacl).list_topics(timeout=10).topics == {}


# --------------------------------------------------------------------------- files, CLI


def test_secrets_stay_in_owner_only_files(secured_kafka: SecuredKafka) -> None:
    secrets = _secrets(secured_kafka)
    assert len(secrets) == len(set(secrets)) == 5 and all(len(s) == 32 for s in secrets)
    for name in ("broker.log", "broker.json", "log4j2.properties"):
        text = (secured_kafka.data_dir / name).read_text()
        assert not [s for s in secrets if s in text], name
    private = [
        secured_kafka.data_dir / "server.properties",
        secured_kafka.data_dir / "security" / "secrets.json",
        *(secured_kafka.data_dir / "clients").iterdir(),
        *(secured_kafka.data_dir / "security").glob("*.key"),
        *(secured_kafka.data_dir / "security").glob("*.p12"),
    ]
    assert len(private) >= 14
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", "kafka", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("secured_kafka", ["sasl_ssl_plain"], indirect=True)
def test_cli_start_and_status_of_a_secured_broker(secured_kafka: SecuredKafka) -> None:
    data_dir = str(secured_kafka.data_dir)
    start = _cli("start", "--data-dir", data_dir)  # the mode is the data dir's
    assert start.returncode == 0, start.stderr
    assert f"already running from {data_dir} at {secured_kafka.bootstrap}" in start.stdout
    assert "security:  sasl_ssl_plain: SASL_SSL with PLAIN; StandardAuthorizer on" in start.stdout
    assert f"client:    {secured_kafka.properties}  (librdkafka" in start.stdout
    assert f"{secured_kafka.java_properties}  (Java: kafka-*.sh --command-config)" in start.stdout
    assert "driftline-noacl (no ACL), admin (super user): " in start.stdout
    assert f"{data_dir}/clients/<user>.{{librdkafka,java}}.properties" in start.stdout
    assert secured_kafka.noacl_properties.parent == secured_kafka.properties.parent

    status = _cli("status", "--data-dir", data_dir)
    assert status.returncode == 0, status.stderr
    # the topic count needs an authenticated admin client: a number, not "no answer"
    assert re.search(r"topics:\s+\d+ ", status.stdout), status.stdout
    assert "security:  sasl_ssl_plain" in status.stdout

    other = _cli("start", "--data-dir", data_dir, "--security", "ssl_mtls")
    assert other.returncode == 1
    assert other.stderr.strip() == (
        f"driftline kafka start: error: the data dir {data_dir} was formatted with --security "
        "sasl_ssl_plain, not ssl_mtls; use another --data-dir (or delete this one) to change it"
    )
    printed = start.stdout + start.stderr + status.stdout + status.stderr + other.stderr
    assert not [s for s in _secrets(secured_kafka) if s in printed]


@pytest.mark.parametrize("secured_kafka", ["ssl_mtls"], indirect=True)
def test_the_python_api_refuses_another_mode_on_a_secured_data_dir(
    secured_kafka: SecuredKafka,
) -> None:
    with pytest.raises(KafkaLauncherError, match="formatted with --security ssl_mtls, not "):
        LocalKafka(data_dir=secured_kafka.data_dir, security="plaintext").start()
    assert LocalKafka(data_dir=secured_kafka.data_dir).status()["running"]


def test_a_secured_three_broker_cluster(tmp_path: Path, unique: str) -> None:
    """SCRAM users made at format time on every node; the brokers replicate to each other
    over SASL_SSL as admin; the client files name all three brokers."""
    port = free_ports(6)  # 3 brokers, then their 3 controllers
    cluster = LocalCluster(3, port=port, data_dir=tmp_path / "c3", security="sasl_ssl_scram")
    try:
        bootstrap = cluster.start(timeout_s=240)
        assert bootstrap == ",".join(f"127.0.0.1:{port + i}" for i in range(3))
        files = cluster.client_files
        config = read_properties(files["driftline"].librdkafka)
        assert config["bootstrap.servers"] == bootstrap
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        topic = f"sec-c3-{unique}"
        admin = AdminClient(config)
        new = NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})
        admin.create_topics([new])[topic].result(timeout=60)
        assert _produce({**config, "acks": "all"}, topic, b"replicated") is None
        assert consume_one(config, topic) == b"replicated"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            isr = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].isrs
            if len(isr) == 3:
                break
            time.sleep(0.5)
        assert sorted(isr) == [1, 2, 3]
        noacl = read_properties(files["driftline-noacl"].librdkafka)
        error = _produce(noacl, topic, b"must not land")
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        status = cluster.status()
        assert (status["up"], status["security"]) == (3, "sasl_ssl_scram")
        assert status["topics"] == 1
        assert all(n.security is cluster.security for n in cluster.nodes)
        assert len(list((tmp_path / "c3").glob("node-*/security"))) == 0  # one shared CA
    finally:
        cluster.stop()
