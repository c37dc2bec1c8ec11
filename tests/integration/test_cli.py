"""The user-facing commands on a real broker: the demo, and worker start-up errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from driftline.agents.demo import _to_toml, ks_adwin_spec_text

pytestmark = pytest.mark.integration


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_demo_starts_its_own_broker_prints_alerts_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    r = _cli("demo", "--events", "30000", "--shift-at", "18000", "--timeout", "120", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "broker up at 127.0.0.1:" in out
    alerts = [line for line in out.splitlines() if line.startswith("ALERT ")]
    # the default detector set of [drift] watch: amount (+0.8 sd) and latency_ms (+2 sd) shift
    assert any("FIRING" in a and "on amount by amount_focus (focus)" in a for a in alerts), out
    assert any("FIRING" in a and "on latency_ms by latency_ms_focus (focus)" in a
               for a in alerts), out  # fmt: skip
    assert not any("on country by" in a for a in alerts), out  # country does not change
    # delayed labels: the concept changes at the shift too; live metrics are printed
    assert any("FIRING" in a and "concept drift on error by error_adwin" in a for a in alerts), out
    assert re.search(r"labels: \d+ joined, \d+ predictions expired unlabelled; model accuracy "
                     r"over the 1000 latest labels 0\.\d+, AUC 0\.\d+", out), out  # fmt: skip
    for a in alerts:  # every alert is about the shifted stream: event time after event 18,000
        if "concept drift" in a:
            continue  # timed by the label, which may come up to a minute after its event
        t = re.search(r"event_time=2026-01-01T00:(\d\d):(\d\d\.\d+)Z", a)
        assert t is not None, a
        assert int(t.group(1)) * 60 + float(t.group(2)) >= 180.0, a
    m = re.search(
        r"worker consumed (\d+) records \((\d+) dead-lettered\) at ~([\d,]+) events/s", out
    )
    assert m is not None, out
    assert (int(m.group(1)), int(m.group(2))) == (30005, 5)
    assert "demo finished; broker and worker stopped" in out
    broker = re.search(r"broker up at (127\.0\.0\.1:\d+)", out).group(1)  # type: ignore[union-attr]
    # the broker is gone: nothing listens on its port any more
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(broker.split(":")[1]))) != 0


def _spec(tmp_path: Path, **input_overrides: object) -> Path:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["input"].update(input_overrides)
    p = tmp_path / "spec.toml"
    p.write_text(_to_toml(data))
    return p


def test_worker_refuses_a_missing_input_topic(
    kafka_bootstrap: str, tmp_path: Path, unique: str
) -> None:
    spec = _spec(tmp_path, topic=f"missing-{unique}")
    r = _cli("worker", "-c", str(spec), "--bootstrap", kafka_bootstrap, timeout=60)
    assert r.returncode == 2
    assert f"input topic 'missing-{unique}' (spec key input.topic) does not exist" in r.stderr
    # and the check did not create it as a side effect
    from driftline.agents.kafka_io import topic_partitions

    assert topic_partitions(kafka_bootstrap, f"missing-{unique}") is None


def test_worker_refuses_an_invalid_spec(tmp_path: Path) -> None:
    spec = _spec(tmp_path, max_message_bytes=-1)
    r = _cli("worker", "-c", str(spec), "--bootstrap", "127.0.0.1:1", timeout=60)
    assert r.returncode == 2
    assert "spec key input.max_message_bytes" in r.stderr


def test_worker_needs_a_cluster(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    r = _cli("worker", "-c", str(_spec(tmp_path)), env=env, timeout=60)
    assert r.returncode == 2
    assert "pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS" in r.stderr


def test_produce_synthetic_writes_the_seeded_stream(kafka_bootstrap: str, unique: str) -> None:
    from driftline.agents.kafka_io import ensure_topics
    from driftline.agents.synthetic import SyntheticStream
    from tests.kafka_helpers import read_topic

    topic = f"synth-{unique}"
    ensure_topics(kafka_bootstrap, [topic], partitions=2)
    r = _cli(
        "produce-synthetic",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--events",
        "3000",
        "--shift-at",
        "2000",
        "--rate",
        "20000",
        "--seed",
        "3",
    )
    assert r.returncode == 0, r.stderr
    assert f"produced 3000 events to {topic}" in r.stdout
    import orjson

    got = sorted(
        (orjson.loads(x.value) for x in read_topic(kafka_bootstrap, topic)), key=lambda e: e["ts"]
    )
    assert got == list(SyntheticStream(n=3000, shift_at=2000, seed=3).events())


def test_compose_pipeline_with_producer_and_labeller_yields_model_metrics(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The compose stack's pipeline, producer and labeller, as the compose services run them."""
    import signal

    from driftline.localkafka import free_port
    from tests.kafka_helpers import JOINED, metric, start_worker, wait_for_metric

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "deploy" / "pipeline.toml").read_text())
    data["pipeline"]["name"] = f"compose-{unique}"
    data["input"]["topic"] = topic = f"compose-{unique}.events"
    data["labels"]["topic"] = f"compose-{unique}.labels"
    data["output"] = {k: f"compose-{unique}.{k}" for k in
                      ("features_topic", "predictions_topic", "alerts_topic", "dlq_topic",
                       "late_topic", "model_metrics_topic")}  # fmt: skip
    data["worker"].update(web_host="127.0.0.1", web_port=free_port())
    spec = tmp_path / "pipeline.toml"
    spec.write_text(_to_toml(data))
    from driftline.agents.kafka_io import ensure_topics

    ensure_topics(kafka_bootstrap, [topic], 2)
    log = tmp_path / "worker.log"
    worker = start_worker(spec, kafka_bootstrap, log)
    labeller = subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", "label-synthetic", "-c", str(spec),
         "--bootstrap", kafka_bootstrap, "--shift-at", "3000", "--share", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"
    try:
        wait_for_metric(url, "driftline_assigned_partitions", 2, worker, log)
        r = _cli("produce-synthetic", "--bootstrap", kafka_bootstrap, "--topic", topic,
                 "--events", "6000", "--shift-at", "3000")  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for_metric(url, "driftline_predictions_total", 6000, worker, log)
        wait_for_metric(url, JOINED[0], 2_000, worker, log, labels=JOINED[1])
        assert metric(url, "driftline_model_metric", {"metric": "n", "window": "last_1000",
                                                     "partition": "0"}) > 0  # fmt: skip
    finally:
        labeller.send_signal(signal.SIGTERM)
        out, _ = labeller.communicate(timeout=60)
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert labeller.returncode == 0, out
    m = re.search(r"sent (\d+) labels for (\d+) predictions", out)
    assert m is not None, out
    sent, seen = int(m.group(1)), int(m.group(2))
    assert seen == 6000 and 0.4 * seen < sent < 0.6 * seen
