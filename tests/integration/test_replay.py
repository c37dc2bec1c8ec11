"""One input through Kafka (kcat → worker) and through ``driftline replay``: identical features,
alerts and dead letters.

The spec uses every window kind, a filter, distinct counts, out-of-order and late events, a KS
detector on a stream that shifts half-way, and one record that is not JSON.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import _to_toml, ks_adwin_spec_text
from driftline.agents.kafka_io import ensure_topics
from driftline.agents.replay import partition_for
from driftline.agents.synthetic import SyntheticStream
from driftline.io_files import read_records
from driftline.localkafka import free_port
from driftline.schemas import validate
from driftline.spec import load_spec
from tests.kafka_helpers import kcat_produce, read_topic, start_worker, wait_for_metric

pytestmark = pytest.mark.integration

N = 12_000
BAD = b"{not json"  # produced to partition 0 after the first half, without a key
FEATURES = [
    {"name": "n_1m", "agg": "count", "window_ms": 60_000},
    {"name": "amt_mean_1m", "agg": "mean", "field": "amount", "window_ms": 60_000},
    {
        "name": "amt_std_hop",
        "agg": "std",
        "field": "amount",
        "window": "hopping",
        "window_ms": 60_000,
        "step_ms": 20_000,
    },
    {
        "name": "amt_max_30s",
        "agg": "max",
        "field": "amount",
        "window": "sliding",
        "window_ms": 30_000,
    },
    {"name": "lat_last5", "agg": "mean", "field": "latency_ms", "window": "count", "count": 5},
    {"name": "countries_1m", "agg": "distinct", "field": "country", "window_ms": 60_000},
    {
        "name": "de_sum_1m",
        "agg": "sum",
        "field": "amount",
        "window_ms": 60_000,
        "where": {"field": "country", "equals": "de"},
    },
    {"name": "gap", "agg": "since_prev", "window": "count", "count": 2},
    {"name": "rate_1m", "agg": "rate", "window_ms": 60_000},
]


def _events() -> list[dict]:
    out = []
    for i, e in enumerate(SyntheticStream(n=N, shift_at=N // 2, seed=4, n_entities=150).events()):
        if i % 700 == 350:
            e["ts"] -= 30_000  # later than the 5 s grace: goes to the late topic
        elif i % 50 == 25:
            e["ts"] -= 2_000  # out of order, within grace
        out.append(e)
    return out


def _spec(tmp: Path, uid: str) -> Path:
    data = tomllib.loads(ks_adwin_spec_text())
    data["pipeline"]["name"] = f"replay-{uid}"
    data["input"]["topic"] = f"replay-{uid}.events"
    data["output"] = {k: f"replay-{uid}.{k.removesuffix('_topic')}" for k in data["output"]}
    data["features"] = FEATURES
    del data["model"]
    data["detectors"] = [
        {"name": "amount_ks", "type": "ks", "target": "amount", "reference_size": 500,
         "window_size": 500, "stride": 100},
    ]  # fmt: skip
    data["worker"]["web_port"] = free_port()
    p = tmp / "spec.toml"
    p.write_text(_to_toml(data))
    return p


def test_replay_equals_the_streaming_path(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    spec_path = _spec(tmp_path, unique)
    spec = load_spec(spec_path)
    events = _events()
    half = N // 2
    lines = [orjson.dumps(e) for e in events]
    src = tmp_path / "events.jsonl"
    # replay puts a line without a key in partition crc32(b"") % 3 = 0, where the worker got it
    src.write_bytes(b"".join(line + b"\n" for line in [*lines[:half], BAD, *lines[half:]]))

    ensure_topics(kafka_bootstrap, [spec.input.topic], partitions=3)
    keyed = [e["user_id"].encode() + b"|" + line for e, line in zip(events, lines, strict=True)]
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, keyed[:half])
    subprocess.run(
        [kcat, "-P", "-b", kafka_bootstrap, "-t", spec.input.topic, "-p", "0"],
        input=BAD + b"\n",
        check=True,
        timeout=60,
    )
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, keyed[half:])
    log = tmp_path / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    url = f"http://127.0.0.1:{spec.worker.web_port}/metrics"
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N + 1, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    inputs = read_topic(kafka_bootstrap, spec.input.topic)
    # kcat's partitioner is librdkafka's consistent (CRC-32) one: replay emulates it
    for r in inputs:
        assert r.partition == partition_for(r.key or b"", 3, "consistent")
    streamed = {}
    for r in read_topic(kafka_bootstrap, spec.output.features_topic):
        doc = orjson.loads(r.value)
        streamed[(doc["source"]["partition"], doc["source"]["offset"])] = doc
    late_streamed = len(read_topic(kafka_bootstrap, spec.output.late_topic))
    assert late_streamed > 0

    streamed_alerts = [
        orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.alerts_topic)
    ]
    streamed_dlq = [
        orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.dlq_topic)
    ]
    assert any(a["status"] == "firing" for a in streamed_alerts)

    out, alerts, dlq = (tmp_path / n for n in ("features.jsonl", "alerts.jsonl", "dlq.jsonl"))
    t0 = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "replay",
            "-c",
            str(spec_path),
            "--input",
            str(src),
            "--output",
            str(out),
            "--alerts",
            str(alerts),
            "--dlq",
            str(dlq),
            "--partitions",
            "3",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert f"replayed {N + 1} events: {len(streamed)} feature vectors" in r.stdout
    assert f"{len(streamed_alerts)} alerts, {late_streamed} late" in r.stdout
    assert "dead letters: invalid_json=1" in r.stdout
    replayed = {}
    for line in out.read_bytes().splitlines():
        doc = orjson.loads(line)
        replayed[(doc["source"]["partition"], doc["source"]["offset"])] = doc
    assert replayed.keys() == streamed.keys()
    for pos, doc in streamed.items():
        assert replayed[pos]["features"] == doc["features"], pos  # value for value, bit for bit
        assert replayed[pos]["entity"] == doc["entity"]
        assert replayed[pos]["event_time_ms"] == doc["event_time_ms"]

    def comparable(alert: dict) -> dict:
        validate("alert", alert)
        alert = {**alert, "window": {**alert["window"], "topic": None}}
        alert.pop("detected_at_ms")
        return alert

    def position(alert: dict) -> tuple:
        return (alert["window"]["partition"], alert["window"]["offset"], alert["status"])

    replayed_alerts = sorted(map(comparable, read_records(alerts)), key=position)
    assert replayed_alerts == sorted(map(comparable, streamed_alerts), key=position)

    (dead,) = read_records(dlq)
    (streamed_dead,) = streamed_dlq
    validate("dead_letter", dead)
    same = ("pipeline", "reason", "error", "key", "value", "value_size")
    assert {k: dead[k] for k in same} == {k: streamed_dead[k] for k in same}
    assert (dead["reason"], dead["value"]) == ("invalid_json", BAD.decode())
    for k in ("partition", "offset"):
        assert dead["source"][k] == streamed_dead["source"][k]
    assert time.monotonic() - t0 < 120
