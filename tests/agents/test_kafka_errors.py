"""librdkafka errors as one line (what failed, what to check), which ones stop a retry loop at
once, and the faust host's broker URL and credentials from the same settings."""

from __future__ import annotations

import ssl
import tomllib

import faust
import pytest
from confluent_kafka import KafkaError
from faust.types.auth import AuthProtocol, SASLMechanism

from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.kafka_errors import (
    PersistentFailure,
    explain,
    is_fatal_at_connect,
    reason,
)
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.runner import TransactionalRunner
from driftline.agents.worker import faust_broker
from driftline.errors import DriftlineError
from driftline.kafka_config import KafkaConfig
from driftline.spec import parse_spec

PASSWORD = "Pa55-w0rd-xyz"
SCRAM = KafkaConfig(
    {"bootstrap.servers": "b1:9093,b2:9093", "security.protocol": "SASL_SSL",
     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": PASSWORD},
    {"sasl.password": "$DRIFTLINE_KAFKA_SASL_PASSWORD"},
)  # fmt: skip
MTLS = KafkaConfig(
    {"bootstrap.servers": "b:9094", "security.protocol": "SSL", "ssl.ca.location": "/ca.pem",
     "ssl.certificate.location": "/c.pem", "ssl.key.location": "/c.key"},
    {"ssl.ca.location": "--kafka-config c.properties line 2"},
)  # fmt: skip

# (error code, librdkafka text, settings) -> the line, and whether retrying is pointless
CASES = [
    pytest.param(
        KafkaError._AUTHENTICATION,
        "sasl_ssl://b1:9093/bootstrap: SASL authentication error: Authentication failed during "
        "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after "
        "312ms in state AUTH_REQ)",
        SCRAM,
        "Kafka authentication failed at b1:9093,b2:9093 (security.protocol=SASL_SSL, "
        "sasl.mechanism=SCRAM-SHA-512, sasl.username=alice): SASL authentication error: "
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512; check sasl.username, the password "
        "(DRIFTLINE_KAFKA_SASL_PASSWORD or the --kafka-config file; now from "
        "$DRIFTLINE_KAFKA_SASL_PASSWORD) and that the user exists for sasl.mechanism on the "
        "cluster",
        True,
        id="wrong-password",
    ),
    pytest.param(
        KafkaError._SSL,
        "ssl://b:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate "
        "verify failed: broker certificate could not be verified, verify that ssl.ca.location "
        "is correctly configured or root CA certificates are installed (install ca-certificates "
        "package) (after 4ms in state SSL_HANDSHAKE)",
        MTLS,
        "TLS handshake with the Kafka broker at b:9094 failed (SSL handshake failed: "
        "error:0A000086:SSL routines::certificate verify failed: broker certificate could not "
        "be verified, verify that ssl.ca.location is correctly configured or root CA "
        "certificates are installed (install ca-certificates package)); the broker's "
        "certificate is not trusted: check ssl.ca.location = /ca.pem (from --kafka-config "
        "c.properties line 2) names the CA that signed it",
        True,
        id="unknown-ca",
    ),
    pytest.param(
        KafkaError._SSL,
        "ssl://b:9094/bootstrap: SSL handshake failed: error:0A000412:SSL routines::sslv3 alert "
        "bad certificate: SSL alert number 42 (after 3ms in state SSL_HANDSHAKE)",
        MTLS,
        "TLS handshake with the Kafka broker at b:9094 failed (SSL handshake failed: "
        "error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42); the "
        "broker may require a client certificate: check ssl.certificate.location = /c.pem "
        "(from default), ssl.key.location = /c.key (from default) and ssl.ca.location = /ca.pem "
        "(from --kafka-config c.properties line 2)",
        True,
        id="client-certificate-refused",
    ),
    pytest.param(
        KafkaError._TRANSPORT,
        "ssl://b:9094/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls alert bad "
        "certificate: SSL alert number 42 (after 6ms in state APIVERSION_QUERY)",
        MTLS,
        "TLS handshake with the Kafka broker at b:9094 failed (Receive failed: error:0A000412:SSL "
        "routines::ssl/tls alert bad certificate: SSL alert number 42); the broker may require a "
        "client certificate: check ssl.certificate.location = /c.pem (from default), "
        "ssl.key.location = /c.key (from default) and ssl.ca.location = /ca.pem (from "
        "--kafka-config c.properties line 2)",
        True,
        id="tls13-client-certificate-refused",
    ),
    pytest.param(
        KafkaError._TRANSPORT,
        "b:9094/bootstrap: Connect to ipv4#10.0.0.1:9094 failed: Connection refused (after 0ms "
        "in state CONNECT)",
        MTLS,
        "no Kafka broker answered at b:9094 (Connect to ipv4#10.0.0.1:9094 failed: Connection "
        "refused); check bootstrap.servers, the network and that security.protocol matches the "
        "listener (start a local broker with `driftline kafka start`)",
        False,
        id="unreachable",
    ),
    pytest.param(
        KafkaError._TRANSPORT,
        "b:9093/bootstrap: Disconnected while requesting ApiVersion: might be caused by "
        "incorrect security.protocol configuration (connecting to a SSL listener?) or broker "
        "version is < 0.10 (see api.version.request) (after 2ms in state APIVERSION_QUERY)",
        KafkaConfig({"bootstrap.servers": "b:9093"}),
        "no Kafka broker answered at b:9093 (Disconnected while requesting ApiVersion: might be "
        "caused by incorrect security.protocol configuration (connecting to a SSL listener?) or "
        "broker version is < 0.10 (see api.version.request)); is security.protocol (PLAINTEXT) "
        "the listener's?; check bootstrap.servers, the network and that security.protocol "
        "matches the listener (start a local broker with `driftline kafka start`)",
        False,
        id="plaintext-to-tls-listener",
    ),
    pytest.param(
        KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed", SCRAM,
        "Kafka refused access to a topic at b1:9093,b2:9093 (TOPIC_AUTHORIZATION_FAILED): ask "
        "the cluster's admins for an ACL allowing it to alice (or fix the name in the spec)",
        False,
        id="topic-acl",
    ),
    pytest.param(
        KafkaError.UNSUPPORTED_SASL_MECHANISM, "Broker: Unsupported SASL mechanism", SCRAM,
        "Kafka SASL handshake failed at b1:9093,b2:9093 (security.protocol=SASL_SSL, "
        "sasl.mechanism=SCRAM-SHA-512, sasl.username=alice): Broker: Unsupported SASL "
        "mechanism; check sasl.mechanism is one the broker's listener enables",
        True,
        id="sasl-mechanism",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("code", "text", "kafka", "line", "fatal"), CASES)
def test_explain(code: int, text: str, kafka: KafkaConfig, line: str, fatal: bool) -> None:
    err = KafkaError(code, text)
    assert explain(err, kafka) == line
    assert is_fatal_at_connect(err) is fatal
    assert PASSWORD not in line and "\n" not in line


def test_reason_drops_the_broker_prefix_and_state_timing() -> None:
    err = KafkaError(KafkaError._TRANSPORT, "sasl_ssl://h:1/3: Gone (after 9ms in state UP)")
    assert reason(err) == "Gone"


def test_explain_names_the_resource_of_an_acl_error() -> None:
    err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed")
    assert explain(err, SCRAM, "create topic 'x'") == (
        "Kafka refused access to create topic 'x' at b1:9093,b2:9093 "
        "(TOPIC_AUTHORIZATION_FAILED): ask the cluster's admins for an ACL allowing it to alice "
        "(or fix the name in the spec)"
    )


def test_faust_host_plaintext() -> None:
    got = faust_broker(KafkaConfig({"bootstrap.servers": "h1:9092, h2:9092"}))
    assert got == {"broker": ["kafka://h1:9092", "kafka://h2:9092"], "broker_credentials": None}


def test_faust_host_sasl_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ssl.create_default_context()
    monkeypatch.setattr("driftline.kafka_config.ssl_context", lambda _c: ctx)
    got = faust_broker(SCRAM)
    creds = got["broker_credentials"]
    assert got["broker"] == ["kafka://b1:9093", "kafka://b2:9093"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol, creds.mechanism) == (AuthProtocol.SASL_SSL, SASLMechanism.SCRAM_SHA_512)
    assert (creds.username, creds.password, creds.ssl_context) == ("alice", PASSWORD, ctx)
    assert PASSWORD not in repr(creds)


def test_faust_host_sasl_plaintext_plain() -> None:
    creds = faust_broker(KafkaConfig({
        "bootstrap.servers": "h:9092", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": PASSWORD,
    }))["broker_credentials"]  # fmt: skip
    assert (creds.protocol, creds.mechanism) == (AuthProtocol.SASL_PLAINTEXT, SASLMechanism.PLAIN)


def test_faust_host_mtls(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ssl.create_default_context()
    monkeypatch.setattr("driftline.kafka_config.ssl_context", lambda _c: ctx)
    creds = faust_broker(MTLS)["broker_credentials"]
    assert isinstance(creds, faust.SSLCredentials)
    assert (creds.protocol, creds.context) == (AuthProtocol.SSL, ctx)


AUTH = KafkaError(KafkaError._AUTHENTICATION, "b:1/bootstrap: SASL authentication error: bad")
DOWN = KafkaError(KafkaError._TRANSPORT, "b:1/bootstrap: Connect to b:1 failed: refused")


# errors at monotonic times -> the first time at which the worker is told to stop (None: never)
@pytest.mark.parametrize(
    ("events", "stop_at"),
    [
        ([(0, AUTH)], None),
        ([(0, AUTH), (10, AUTH), (19.9, AUTH)], None),
        ([(0, AUTH), (10, AUTH), (20, AUTH)], 20),
        ([(0, AUTH), (10, AUTH), (20, AUTH), (25, AUTH)], 20),
        ([(0, AUTH), (21, AUTH), (30, AUTH), (41, AUTH)], 41),  # a long pause starts over
        ([(0, DOWN), (10, DOWN), (30, DOWN)], None),  # an unreachable broker may come back
        ([(0, AUTH), (10, DOWN), (20, AUTH)], 20),
    ],
)
def test_persistent_failure(events: list[tuple[float, KafkaError]], stop_at: float | None) -> None:
    trouble = PersistentFailure(grace_s=20.0)
    stops = [t for t, err in events if trouble.seen(err, t)]
    assert (stops[0] if stops else None) == stop_at


def test_a_lasting_authentication_failure_stops_the_running_loop() -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    spec = parse_spec(data)
    runner = TransactionalRunner(spec, SCRAM, WorkerMetrics(spec.name), None, "none", "w1")
    runner._client_trouble = PersistentFailure(grace_s=0.0)
    runner._on_client_error(DOWN)
    runner._raise_callback_error()  # nothing to raise: a broker may come back
    runner._on_client_error(AUTH)
    with pytest.raises(DriftlineError) as e:
        runner._raise_callback_error()
    assert str(e.value) == (
        "Kafka authentication failed at b1:9093,b2:9093 (security.protocol=SASL_SSL, "
        "sasl.mechanism=SCRAM-SHA-512, sasl.username=alice): SASL authentication error: bad; "
        "check sasl.username, the password (DRIFTLINE_KAFKA_SASL_PASSWORD or the --kafka-config "
        "file; now from $DRIFTLINE_KAFKA_SASL_PASSWORD) and that the user exists for "
        "sasl.mechanism on the cluster (for 0 s while running)"
    )
