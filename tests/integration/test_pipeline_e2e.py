"""End to end on a real broker: kcat-produced events → worker → features, predictions, alerts, DLQ.

The stream shifts at event K (amount by +0.8 sd, latency_ms by +2 sd); the KS detector watches
amount and ADWIN watches latency_ms. Everything the worker wrote is read back and checked against
a recomputation, the JSON Schemas and the worker's own /metrics.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream
from driftline.alert_format import format_alert
from driftline.localkafka import free_port
from driftline.model_io import load_model
from driftline.schemas import validate
from driftline.spec import PipelineSpec
from tests.kafka_helpers import (
    Rec,
    kcat_produce,
    metric,
    read_topic,
    start_worker,
    wait_for_metric,
    write_pipeline,
)

pytestmark = pytest.mark.integration

N, K = 30_000, 18_000
STREAM = SyntheticStream(n=N, shift_at=K, seed=11, n_entities=300)
BIG = b'{"user_id": "u1", "ts": 1767225600000, "pad": "' + b"x" * 70_000 + b'"}'
# (key, value, expected dead-letter reason)
BAD: list[tuple[bytes, bytes, str]] = [
    (b"bad-1", b"{not json", "invalid_json"),
    (
        b"bad-1",
        b'{"user_id": "u1", "ts": 1767225600000, "amount": "12", "latency_ms": 1, "country": "de"}',
        "wrong_type",
    ),
    (
        b"bad-2",
        b'{"user_id": "u2", "ts": 1767225600000, "latency_ms": 1.5, "country": "de"}',
        "missing_field",
    ),
    (
        b"bad-3",
        b'{"user_id": "u3", "ts": 1767225600000, "amount": NaN, "latency_ms": 1, "country": "de"}',
        "non_finite",
    ),
    (b"bad-4", b"[1, 2, 3]", "not_an_object"),
    (
        b"bad-5",
        b'{"user_id": "u5", "ts": "yesterday", "amount": 1, "latency_ms": 1, "country": "de"}',
        "bad_timestamp",
    ),
    (b"bad-6", BIG, "oversized"),
    # valid, but an hour older than every partition's watermark: late
    (
        b"bad-7",
        b'{"user_id": "u7", "ts": 1767225600000, "amount": 1, "latency_ms": 1, "country": "de"}',
        "late_event",
    ),
]


@dataclass
class Run:
    spec: PipelineSpec
    metrics_url: str
    inputs: dict[tuple[int, int], Rec]
    features: list[Rec]
    predictions: list[Rec]
    alerts: list[dict[str, Any]]
    dead: list[Rec]
    metrics: dict[str, float]
    worker_rc: int
    model_path: Path


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, kcat: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("e2e")
    uid = uuid.uuid4().hex[:10]
    data = named_ks_adwin_spec(f"e2e-{uid}")
    port = free_port()
    data["worker"]["web_port"] = port
    spec_path, spec = write_pipeline(tmp, data, kafka_bootstrap)

    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in STREAM.events()]
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines)
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, [k + b"|" + v for k, v, _ in BAD])

    log = tmp / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N + len(BAD), proc, log)
        names = [
            "driftline_records_consumed_total",
            "driftline_records_dead_lettered_total",
            "driftline_feature_vectors_total",
            "driftline_predictions_total",
            "driftline_alerts_total",
            "driftline_batches_total",
            "driftline_late_events_total",
        ]
        metrics = {n: metric(url, n) for n in names}
        for _, _, reason in BAD:
            metrics[f"dead:{reason}"] = metric(
                url, "driftline_records_dead_lettered_total", {"reason": reason}
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    o = spec.output
    return Run(
        spec=spec,
        metrics_url=url,
        inputs={(r.partition, r.offset): r for r in read_topic(kafka_bootstrap, spec.input.topic)},
        features=read_topic(kafka_bootstrap, o.features_topic),
        predictions=read_topic(kafka_bootstrap, o.predictions_topic),
        alerts=[orjson.loads(r.value) for r in read_topic(kafka_bootstrap, o.alerts_topic)],
        dead=read_topic(kafka_bootstrap, o.dlq_topic) + read_topic(kafka_bootstrap, o.late_topic),
        metrics=metrics,
        worker_rc=rc,
        model_path=tmp / "demo-model.pkl",
    )


def _event_index(ts: int) -> int:
    return (ts - STREAM.start_ms) // STREAM.step_ms


def test_alerts_fire_after_the_shift_and_never_before(run: Run) -> None:
    assert run.alerts, "no alert at all"
    for a in run.alerts:
        validate("alert", a)
    firing = [a for a in run.alerts if a["status"] == "firing"]
    by_target = defaultdict(list)
    for a in firing:
        by_target[a["target"]].append(_event_index(a["window"]["event_time_ms"]))
    assert set(by_target) == {"amount", "latency_ms"}, by_target
    for target, idx in by_target.items():
        assert min(idx) >= K, f"{target}: alert at event {min(idx)} before the shift at {K}"
        assert min(idx) < K + 3_000, f"{target}: first alert {min(idx) - K} events after the shift"
    # both partitions carry half the stream; each detects on its own
    for target in ("amount", "latency_ms"):
        assert {a["window"]["partition"] for a in firing if a["target"] == target} == {0, 1}
    assert len({a["alert_id"] for a in run.alerts}) == len(run.alerts)


def test_feature_vectors_equal_a_recomputation(run: Run) -> None:
    assert len(run.features) == N
    state: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0])
    expected: dict[tuple[int, int], tuple[float, float]] = {}
    good = {
        pos: orjson.loads(r.value)
        for pos, r in run.inputs.items()
        if r.key not in {k for k, _, _ in BAD}
    }
    assert len(good) == N
    for pos in sorted(good):  # per partition in offset order = the worker's arrival order
        e = good[pos]
        s = state[(e["user_id"], e["ts"] // 60_000 * 60_000)]
        s[0] += 1
        s[1] += e["amount"]
        expected[pos] = (s[0], s[1] / s[0])
    for r in run.features:
        doc = orjson.loads(r.value)
        validate("feature_vector", doc)
        pos = (doc["source"]["partition"], doc["source"]["offset"])
        count, mean = expected[pos]
        assert doc["entity"] == good[pos]["user_id"] == r.key.decode()
        assert doc["features"]["amount_count_1m"] == count
        assert doc["features"]["amount_mean_1m"] == pytest.approx(mean, rel=1e-12, abs=1e-9)
        assert doc["event_time_ms"] == good[pos]["ts"]


def test_predictions_match_the_model(run: Run) -> None:
    assert len(run.predictions) == N
    model, version = load_model(run.model_path)
    docs = [orjson.loads(r.value) for r in run.predictions]
    for doc in docs[:200]:
        validate("prediction", doc)
        assert doc["model_version"] == version
        expect = model.predict_proba_one(doc["inputs"])[True]
        assert doc["score"] == pytest.approx(expect, abs=1e-12)
        assert doc["label"] == int(doc["score"] >= 0.5)
    assert len({d["prediction_id"] for d in docs}) == N


def test_malformed_and_late_records_land_in_the_dlq_and_late_topic(run: Run) -> None:
    assert len(run.dead) == len(BAD)
    got = Counter()
    for r in run.dead:
        doc = orjson.loads(r.value)
        # late events go to the late topic, everything else to the DLQ
        assert (doc["reason"] == "late_event") == (r.topic == run.spec.output.late_topic)
        validate("dead_letter", doc)
        src = run.inputs[(doc["source"]["partition"], doc["source"]["offset"])]
        assert doc["source"]["topic"] == run.spec.input.topic
        assert doc["value_size"] == len(src.value)
        assert doc["value"] == src.value[:4096].decode()
        assert r.key == src.key
        assert doc["error"]
        got[doc["reason"]] += 1
    assert got == Counter(reason for _, _, reason in BAD)


def test_metrics_equal_what_was_produced_dead_lettered_and_alerted(run: Run) -> None:
    m = run.metrics
    assert m["driftline_records_consumed_total"] == N + len(BAD)
    assert m["driftline_records_dead_lettered_total"] == len(BAD) - 1
    assert m["driftline_late_events_total"] == 1
    for _, _, reason in BAD:
        assert m[f"dead:{reason}"] == (0 if reason == "late_event" else 1)
    assert m["driftline_feature_vectors_total"] == N
    assert m["driftline_predictions_total"] == N
    assert m["driftline_alerts_total"] == len(run.alerts)
    assert m["driftline_batches_total"] >= 1


def test_worker_stops_cleanly_on_sigterm(run: Run) -> None:
    assert run.worker_rc == 0


def test_alerts_read_with_kcat_and_alerts_tail(run: Run, kafka_bootstrap: str, kcat: str) -> None:
    topic = run.spec.output.alerts_topic
    # kcat, as a user would: -e exits at the end; read_committed is librdkafka's default
    r = subprocess.run(
        [kcat, "-C", "-b", kafka_bootstrap, "-t", topic, "-e", "-q"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    by_kcat = [orjson.loads(line) for line in r.stdout.splitlines() if line.strip()]
    key = lambda a: a["alert_id"]  # noqa: E731
    assert sorted(by_kcat, key=key) == sorted(run.alerts, key=key)

    base = [
        sys.executable,
        "-m",
        "driftline.cli",
        "alerts",
        "tail",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--max",
        str(len(run.alerts)),
        "--timeout",
        "30",
    ]
    lines = subprocess.run(base, capture_output=True, text=True, timeout=60, check=True).stdout
    assert sorted(lines.splitlines()) == sorted(format_alert(a) for a in run.alerts)
    js = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60, check=True)
    assert sorted((orjson.loads(x) for x in js.stdout.splitlines()), key=key) == sorted(
        run.alerts, key=key
    )
