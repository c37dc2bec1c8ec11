"""`driftline topics create`, `driftline worker --create-topics` and `/healthz` on a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from driftline.agents.demo import _to_toml, named_ks_adwin_spec, worker_argv
from driftline.agents.kafka_io import ensure_topics, existing_topics
from driftline.agents.state import CHANGELOG_CONFIG
from driftline.localkafka import free_port
from tests.test_deploy import healthcheck_command

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def topics_create(spec: Path, bootstrap: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("topics", "create", "-c", str(spec), "--bootstrap", bootstrap, *extra)


def write_spec(tmp: Path, prefix: str, *, batch_features: bool) -> Path:
    """The demo pipeline with a built-in model, delayed labels and, if asked, batch features;
    every topic named after ``prefix``."""
    data = named_ks_adwin_spec(prefix, ("model_metrics_topic",))
    data["model"] = {"builtin": "logistic_regression", "inputs": ["amount", "latency_ms"]}
    data["labels"] = {"topic": f"{prefix}.labels", "time_field": "label_time_ms"}
    if batch_features:
        data["batch_features"] = {
            "topic": f"{prefix}.batch",
            "key_field": "user_id",
            "fields": {"days_active": "float"},
        }
    path = tmp / f"{prefix}.toml"
    path.write_text(_to_toml(data))
    return path


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (fut,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {name: entry.value for name, entry in fut.result(timeout=30).items()}


def test_topics_create_makes_every_topic_of_the_spec(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    p = f"tc-{unique}"
    spec = write_spec(tmp_path, p, batch_features=True)
    r = topics_create(spec, kafka_bootstrap, "--partitions", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    changelog = f"driftline.{p}.state-changelog"
    expected = {
        f"{p}.events": 4, f"{p}.labels": 4, f"{p}.features": 4, f"{p}.predictions": 4,
        f"{p}.alerts": 4, f"{p}.dlq": 4, f"{p}.late": 4, f"{p}.model_metrics": 4,
        changelog: 4, f"{p}.batch": 3, f"driftline.{p}.host-__assignor-__leader": 1,
    }  # fmt: skip
    have = existing_topics(kafka_bootstrap)
    assert {t: have.get(t) for t in expected} == expected
    for topic in expected:
        assert f"created {topic} (" in r.stdout, r.stdout
    assert f"pipeline '{p}': 11 topics created, 0 existed" in r.stdout
    state = topic_config(kafka_bootstrap, changelog)
    assert {k: state[k] for k in CHANGELOG_CONFIG} == CHANGELOG_CONFIG
    assert topic_config(kafka_bootstrap, f"{p}.batch")["cleanup.policy"] == "compact"
    assert topic_config(kafka_bootstrap, f"{p}.events")["cleanup.policy"] == "delete"
    # the spec's [topics] defaults (one broker: one replica, min ISR 1)
    week, month = str(7 * 86_400_000), str(30 * 86_400_000)
    for topic, retention in ((f"{p}.alerts", week), (f"{p}.dlq", month), (f"{p}.late", week)):
        c = topic_config(kafka_bootstrap, topic)
        assert (c["retention.ms"], c["retention.bytes"], c["min.insync.replicas"]) == (
            retention,
            "-1",
            "1",
        ), topic

    again = topics_create(spec, kafka_bootstrap)
    assert again.returncode == 0, again.stderr
    assert f"exists  {p}.events (input, 4 partitions)" in again.stdout
    assert "0 topics created, 11 existed" in again.stdout

    other = topics_create(spec, kafka_bootstrap, "--partitions", "2")
    assert other.returncode == 1
    assert f"the input topic '{p}.events' exists with 4 partitions, not 2" in other.stderr


def test_topics_create_refuses_a_mismatched_labels_topic_before_creating_anything(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    p = f"tm-{unique}"
    spec = write_spec(tmp_path, p, batch_features=False)
    ensure_topics(kafka_bootstrap, [f"{p}.labels"], partitions=2)
    r = topics_create(spec, kafka_bootstrap, "--partitions", "3")
    assert r.returncode == 1
    assert (
        f"the labels topic '{p}.labels' has 2 partitions but the input topic '{p}.events' has 3"
        in r.stderr
    ), r.stderr
    assert "Traceback" not in r.stderr
    assert [t for t in existing_topics(kafka_bootstrap) if p in t] == [f"{p}.labels"]


def test_the_worker_names_topics_create_for_a_missing_input_topic(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, f"tw-{unique}", batch_features=False)
    r = cli("worker", "-c", str(spec), "--bootstrap", kafka_bootstrap, timeout=60)
    assert r.returncode == 2
    assert f"create the pipeline's topics with `driftline topics create -c {spec}" in r.stderr
    assert "kafka-topics" not in r.stderr
    assert f"tw-{unique}.events" not in existing_topics(kafka_bootstrap)


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_health(
    port: int, status: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120
) -> tuple[int, dict[str, Any]]:
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            code, doc = last = healthz(port)
        except OSError:  # not listening yet
            time.sleep(0.3)
            continue
        if doc["status"] == status:
            return code, doc
        time.sleep(0.3)
    raise AssertionError(f"/healthz never said {status}: {last}\n{log.read_text()[-4000:]}")


def start(spec: Path, bootstrap: str, tmp: Path, wid: str, *options: str) -> tuple[Any, int, Path]:
    port, log = free_port(), tmp / f"{wid}.log"
    argv = worker_argv(spec, bootstrap, "--worker-id", wid, "--web-port", str(port), *options)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env)
    return proc, port, log


def docker_healthcheck(port: int) -> int:
    """The exit status of the image's HEALTHCHECK command against the worker on ``port``."""
    env = {**os.environ, "DRIFTLINE_HEALTH_URL": f"http://127.0.0.1:{port}/healthz"}
    argv = healthcheck_command()
    assert argv[0] == "python"
    r = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    return r.returncode


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_worker_create_topics_and_healthz_report_the_real_state(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    # a fresh spec: --create-topics makes its topics (3 input partitions), then it is healthy
    p = f"th-{unique}"
    spec = write_spec(tmp_path, p, batch_features=False)
    a, port_a, log_a = start(spec, kafka_bootstrap, tmp_path, "a", "--create-topics")
    try:
        code, doc = wait_health(port_a, "ok", a, log_a)
        assert code == 200 and doc["healthy"] is True, doc
        assert doc["partitions"] == [0, 1, 2] and doc["pipeline"] == p
        have = existing_topics(kafka_bootstrap)
        assert have[f"{p}.events"] == have[f"{p}.labels"] == 3
        assert have[f"driftline.{p}.state-changelog"] == 3
        assert docker_healthcheck(port_a) == 0
    finally:
        stop(a)
    assert docker_healthcheck(port_a) == 1  # nothing answers any more

    # one input partition, two workers in the group: the one without a partition is unhealthy
    q = f"ti-{unique}"
    spec = write_spec(tmp_path, q, batch_features=False)
    r = topics_create(spec, kafka_bootstrap, "--partitions", "1")
    assert r.returncode == 0, r.stderr
    b, port_b, log_b = start(spec, kafka_bootstrap, tmp_path, "b")
    c = None
    try:
        assert wait_health(port_b, "ok", b, log_b)[0] == 200
        c, port_c, log_c = start(spec, kafka_bootstrap, tmp_path, "c")
        code, doc = wait_health(port_c, "no_partitions", c, log_c)
        assert code == 503 and doc["healthy"] is False
        assert doc["reason"] == f"no partition of {q}.events is assigned to it"
        code, doc = healthz(port_b)
        assert (code, doc["status"], doc["partitions"]) == (200, "ok", [0])
        # the image's HEALTHCHECK passes on the working worker, fails on the idle one
        assert docker_healthcheck(port_b) == 0
        assert docker_healthcheck(port_c) == 1
    finally:
        stop(b, *([c] if c is not None else []))
