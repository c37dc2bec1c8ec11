"""A worker on secured brokers (driftline's launcher with ``--security``), and its failures.

End to end on SASL_SSL SCRAM-SHA-512, SASL_SSL PLAIN and SSL with client certificates (mTLS),
each with its own throwaway CA: the settings come from a ``--kafka-config`` file with no
password in it plus ``DRIFTLINE_KAFKA_SASL_PASSWORD`` (or the key files), events in -> feature
vectors, predictions and alerts out, and the faust host's own aiokafka client joined its group.
Then every failure a user meets first: wrong password, unknown CA, no client certificate,
unreachable broker, missing ACLs. Each exits non-zero within 30 s with one line saying what
failed and what to check (the measured seconds are printed), and the password appears in no
log, page, metric, alert or error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from driftline.agents.demo import named_ks_adwin_spec, stop_process
from driftline.agents.kafka_io import ensure_topics, make_producer, produce_all
from driftline.agents.synthetic import SyntheticStream
from driftline.kafka_config import KafkaConfig, is_secret, load_kafka_config
from driftline.localkafka import free_port
from tests.kafka_helpers import read_topic, wait_for_metric, write_pipeline
from tests.secured_kafka import SecuredKafka

pytestmark = pytest.mark.integration

N, K = 12_000, 6_000
STREAM = SyntheticStream(n=N, shift_at=K, seed=11, n_entities=200)
#: exits this long after start at most (the issue's bound)
EXIT_WITHIN_S = 30.0


def _settings_file(path: Path, props: dict[str, str], drop: tuple[str, ...] = ()) -> Path:
    """``props`` as a .properties file without secrets (they go in the environment)."""
    lines = ["# written by test_secured_cluster: no secret in here"]
    lines += [f"{k}={v}" for k, v in props.items() if not is_secret(k) and k not in drop]
    path.write_text("\n".join(lines) + "\n")
    return path


def _secret_env(props: dict[str, str]) -> dict[str, str]:
    return {f"DRIFTLINE_KAFKA_{k.upper().replace('.', '_')}": v
            for k, v in props.items() if is_secret(k)}  # fmt: skip


def _env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("DRIFTLINE_KAFKA_") and k != "KAFKA_BOOTSTRAP_SERVERS"}  # fmt: skip
    return {**base, **extra}


def _worker_argv(spec: Path, settings: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "driftline.cli", "worker", "-c", str(spec),
            "--kafka-config", str(settings), *options]  # fmt: skip


@dataclass
class Run:
    mode: str
    kafka: KafkaConfig
    password: str
    log: Path
    pages: dict[str, bytes]
    features: int
    predictions: int
    alerts: list[bytes]
    host_group_members: int
    exit_code: int
    #: what a command needs to reach the cluster: the spec, the settings file, the environment
    spec_path: Path
    settings: Path
    env: dict[str, str]
    input_topic: str


@pytest.fixture(scope="module")
def run(
    secured_kafka: SecuredKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """One worker per secured mode, through a stream that shifts at event K."""
    sk = secured_kafka
    tmp = tmp_path_factory.mktemp(f"secured-{sk.mode}")
    props = dict(sk.config)
    if "sasl.password" not in props:  # mTLS: a key password from the environment is the secret
        props["ssl.key.password"] = "key-pass-" + uuid.uuid4().hex  # (the key is not encrypted)
    password = props.get("sasl.password") or props["ssl.key.password"]
    settings = _settings_file(tmp / "client.properties", props)
    env = _env(_secret_env(props))
    kafka = load_kafka_config(config_file=settings, environ=env)
    assert kafka.properties == props  # the file + the environment give the launcher's settings
    uid = uuid.uuid4().hex[:8]
    data = named_ks_adwin_spec(f"sec-{sk.mode}-{uid}")
    port = free_port()
    data["worker"]["web_port"] = port
    # the spec's [kafka] carries what is not secret and not per-environment
    data["kafka"] = {"client.id": f"driftline-test-{sk.mode}"}
    spec_path, spec = write_pipeline(tmp, data, kafka)
    producer = make_producer(kafka, log_level=3)
    produce_all(producer, ((spec.input.topic, e["user_id"].encode(), orjson.dumps(e))
                           for e in STREAM.events()))  # fmt: skip
    assert producer.flush(60) == 0

    log = tmp / "worker.log"
    fmt = "json" if sk.mode == "sasl_ssl_scram" else "plain"
    proc = subprocess.Popen(
        _worker_argv(spec_path, settings, "--web-port", str(port), "--log-format", fmt,
                     "--loglevel", "debug" if sk.mode == "sasl_ssl_plain" else "info"),
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_metric(url + "/metrics", "driftline_records_consumed_total", N, proc, log,
                        timeout_s=240)  # fmt: skip
        pages = {}
        for path in ("/metrics", "/status", "/status.json", "/healthz"):
            try:
                with urllib.request.urlopen(url + path, timeout=10) as r:
                    pages[path] = r.read()
            except urllib.error.HTTPError as e:  # /healthz may say 503 (stalled, ...)
                pages[path] = e.read()
        o = spec.output
        features = read_topic(kafka, o.features_topic, at_least=N)
        predictions = read_topic(kafka, o.predictions_topic, at_least=N)
        alerts = [r.value or b"" for r in read_topic(kafka, o.alerts_topic, at_least=1)]
        admin = AdminClient(dict(kafka.properties))
        host = admin.describe_consumer_groups([f"{spec.group_id}.host"], request_timeout=30)
        members = len(host[f"{spec.group_id}.host"].result().members)
    finally:
        stop_process(proc, timeout_s=30)
    yield Run(sk.mode, kafka, password, log, pages, len(features), len(predictions), alerts,
              members, proc.returncode, spec_path, settings, env, spec.input.topic)  # fmt: skip


def test_worker_end_to_end_on_a_secured_cluster(run: Run) -> None:
    assert run.features == N, run.mode
    assert run.predictions == N, run.mode
    assert run.alerts, f"no drift alert after the shift on {run.mode}"
    assert all(orjson.loads(a)["pipeline"].startswith(f"sec-{run.mode}") for a in run.alerts)
    # the faust host's own aiokafka client authenticated and joined its group
    assert run.host_group_members == 1, run.mode
    assert run.exit_code == 0, run.log.read_text()[-2000:]


def test_report_reads_a_topic_range_of_the_secured_cluster(run: Run, tmp_path: Path) -> None:
    """``driftline report --topic`` with the same --kafka-config file and environment: the whole
    input topic replayed, the shift found, the password in no output."""
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    r = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "report", "-c", str(run.spec_path), "--topic",
         run.input_topic, "--kafka-config", str(run.settings), "--output", str(html), "--json",
         str(js)],
        env=run.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = orjson.loads(js.read_bytes())
    assert doc["summary"]["events"] == N and doc["summary"]["episodes"] >= 1, run.mode
    assert all(e["fired"]["event_time_ms"] >= STREAM.start_ms + 10 * K - 60_000
               for d in doc["detectors"] for e in d["episodes"])  # fmt: skip
    for text in (html.read_text(), js.read_text(), r.stdout, r.stderr):
        assert run.password not in text


def test_the_password_is_nowhere(run: Run) -> None:
    assert run.password and len(run.password) >= 8
    secret = run.password.encode()
    where = {"log": run.log.read_bytes(), **run.pages, "alerts": b"\n".join(run.alerts)}
    for name, blob in where.items():
        assert secret not in blob, f"the password is in {name} ({run.mode})"
    assert run.log.read_bytes(), "the worker logged nothing"


# -- failures: one line, non-zero, within 30 s -----------------------------------------------------
@dataclass(frozen=True)
class Exit:
    code: int
    seconds: float
    stderr: str

    @property
    def error(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("driftline: error: ")]
        assert len(lines) == 1, self.stderr[-3000:]
        return lines[0]


def _failing_worker(
    sk: SecuredKafka, tmp: Path, settings: dict[str, str], env_extra: dict[str, str],
    spec_data: dict | None = None,
) -> Exit:  # fmt: skip
    uid = uuid.uuid4().hex[:8]
    data = spec_data or named_ks_adwin_spec(f"fail-{uid}")
    admin = KafkaConfig(dict(sk.admin_config))
    spec_path, _ = write_pipeline(tmp, data, admin)  # topics made by the super user
    props_file = _settings_file(tmp / "client.properties", settings)
    env = _env(env_extra)
    t0 = time.monotonic()
    r = subprocess.run(_worker_argv(spec_path, props_file, "--web-port", str(free_port())),
                       env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    took = time.monotonic() - t0
    print(f"[{sk.mode}] exit {r.returncode} after {took:.1f} s: {r.stderr.strip()[-400:]}")
    return Exit(r.returncode, took, r.stderr)


def _assert_quick(e: Exit, *secrets: str) -> None:
    assert e.code != 0, e.stderr[-3000:]
    assert e.seconds < EXIT_WITHIN_S, (e.seconds, e.stderr[-3000:])
    assert "Traceback" not in e.stderr, e.stderr[-3000:]
    # one line: librdkafka's own retries and log lines are summed up in it, not printed
    assert len(e.stderr.strip().splitlines()) == 1, e.stderr[-3000:]
    for s in secrets:
        assert s not in e.stderr


@pytest.mark.parametrize("secured_kafka", ["sasl_ssl_scram", "sasl_ssl_plain"], indirect=True)
def test_wrong_password(secured_kafka: SecuredKafka, tmp_path: Path) -> None:
    sk = secured_kafka
    right = sk.config["sasl.password"]
    wrong = "wrong-" + uuid.uuid4().hex
    e = _failing_worker(sk, tmp_path, sk.config, {"DRIFTLINE_KAFKA_SASL_PASSWORD": wrong})
    _assert_quick(e, right, wrong)
    assert e.error.startswith(
        f"driftline: error: Kafka authentication failed at {sk.bootstrap} (security.protocol="
        f"SASL_SSL, sasl.mechanism={sk.config['sasl.mechanism']}, sasl.username=driftline): "
    ), e.error
    assert "check sasl.username, the password (DRIFTLINE_KAFKA_SASL_PASSWORD" in e.error
    print(f"WRONG-PASSWORD-TO-EXIT [{sk.mode}] {e.seconds:.1f} s")


@pytest.mark.parametrize(
    "secured_kafka", ["sasl_ssl_scram", "ssl_mtls"], indirect=True
)
def test_unknown_ca(secured_kafka: SecuredKafka, tmp_path: Path) -> None:
    sk = secured_kafka
    other = tmp_path / "other-ca"
    other.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(other / "ca.key"), "-out", str(other / "ca.pem"), "-days", "1",
                    "-subj", "/CN=not the broker's CA"],
                   check=True, capture_output=True)  # fmt: skip
    settings = {**sk.config, "ssl.ca.location": str(other / "ca.pem")}
    e = _failing_worker(sk, tmp_path, settings, _secret_env(sk.config))
    _assert_quick(e, *_secret_env(sk.config).values())
    assert e.error.startswith(
        f"driftline: error: TLS handshake with the Kafka broker at {sk.bootstrap} failed ("
    ), e.error
    assert (
        f"the broker's certificate is not trusted: check ssl.ca.location = {other / 'ca.pem'} "
        "(from --kafka-config" in e.error
    ), e.error


@pytest.mark.parametrize("secured_kafka", ["ssl_mtls"], indirect=True)
def test_no_client_certificate(secured_kafka: SecuredKafka, tmp_path: Path) -> None:
    sk = secured_kafka
    without = ("ssl.certificate.location", "ssl.key.location")
    e = _failing_worker(sk, tmp_path, {k: v for k, v in sk.config.items() if k not in without}, {})
    _assert_quick(e)
    assert e.error.startswith(
        f"driftline: error: TLS handshake with the Kafka broker at {sk.bootstrap} failed ("
    ), e.error
    assert "the broker may require a client certificate: check ssl.certificate.location" in e.error


@pytest.mark.parametrize("secured_kafka", ["sasl_ssl_scram"], indirect=True)
def test_unreachable_broker(secured_kafka: SecuredKafka, tmp_path: Path) -> None:
    sk = secured_kafka
    nowhere = f"127.0.0.1:{free_port()}"
    settings = {**sk.config, "bootstrap.servers": nowhere}
    e = _failing_worker(sk, tmp_path, settings, _secret_env(sk.config))
    _assert_quick(e, sk.config["sasl.password"])
    assert e.error.startswith(
        f"driftline: error: no Kafka broker answered at {nowhere} within 10s ("
    ), e.error
    assert "check bootstrap.servers, the network and that security.protocol matches" in e.error


@pytest.mark.parametrize("secured_kafka", ["sasl_ssl_scram"], indirect=True)
def test_user_without_acls(secured_kafka: SecuredKafka, tmp_path: Path) -> None:
    sk = secured_kafka
    e = _failing_worker(sk, tmp_path, sk.noacl_config, _secret_env(sk.noacl_config))
    _assert_quick(e, sk.noacl_config["sasl.password"])
    user = sk.noacl_config["sasl.username"]
    assert e.error.startswith("driftline: error: Kafka refuses Describe on topic "), e.error
    assert f"to User:{user} at {sk.bootstrap}: ask the cluster's admins for an ACL" in e.error


@pytest.mark.parametrize("secured_kafka", ["sasl_ssl_scram"], indirect=True)
def test_missing_transactional_id_acl(secured_kafka: SecuredKafka, tmp_path: Path) -> None:
    """Topics and groups allowed, the transactional id not: exactly_once cannot start."""
    sk = secured_kafka
    prefix = f"txn-{uuid.uuid4().hex[:8]}"
    user = sk.noacl_config["sasl.username"]
    admin = AdminClient(dict(sk.admin_config))
    pattern = ResourcePatternType.PREFIXED
    grants = [
        AclBinding(kind, name, pattern, f"User:{user}", "*", AclOperation.ALL,
                   AclPermissionType.ALLOW)
        for kind, name in ((ResourceType.TOPIC, prefix),
                           (ResourceType.TOPIC, f"driftline.{prefix}"),
                           (ResourceType.GROUP, f"driftline.{prefix}"))
    ]  # fmt: skip
    for f in admin.create_acls(grants, request_timeout=30).values():
        f.result()
    data = named_ks_adwin_spec(prefix, ("model_metrics_topic",))
    ensure_topics(KafkaConfig(dict(sk.admin_config)), [data["input"]["topic"]], 2)
    e = _failing_worker(sk, tmp_path, sk.noacl_config, _secret_env(sk.noacl_config), data)
    _assert_quick(e, sk.noacl_config["sasl.password"])
    assert e.error.startswith(
        f"driftline: error: Kafka refuses the transactional id 'driftline.{prefix}."
    ), e.error
    assert f"a prefixed ACL on driftline.{prefix}. covers every worker" in e.error
