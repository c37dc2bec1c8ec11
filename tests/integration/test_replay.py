"""One input through Kafka (kcat → worker) and through ``driftline replay``: identical features.

The spec uses every window kind, a filter, distinct counts, out-of-order and late events.
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

from driftline.agents.demo import _to_toml, demo_spec_text
from driftline.agents.kafka_io import ensure_topics
from driftline.agents.replay import partition_for
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from driftline.spec import load_spec
from tests.kafka_helpers import kcat_produce, read_topic, start_worker, wait_for_metric

pytestmark = pytest.mark.integration

N = 12_000
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
    for i, e in enumerate(SyntheticStream(n=N, shift_at=N, seed=4, n_entities=150).events()):
        if i % 700 == 350:
            e["ts"] -= 30_000  # later than the 5 s grace: goes to the late topic
        elif i % 50 == 25:
            e["ts"] -= 2_000  # out of order, within grace
        out.append(e)
    return out


def _spec(tmp: Path, uid: str) -> Path:
    data = tomllib.loads(demo_spec_text())
    data["pipeline"]["name"] = f"replay-{uid}"
    data["input"]["topic"] = f"replay-{uid}.events"
    data["output"] = {k: f"replay-{uid}.{k.removesuffix('_topic')}" for k in data["output"]}
    data["features"] = FEATURES
    del data["model"]
    data["detectors"] = []
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
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))

    ensure_topics(kafka_bootstrap, [spec.input.topic], partitions=3)
    kcat_produce(
        kcat,
        kafka_bootstrap,
        spec.input.topic,
        [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events],
    )
    log = tmp_path / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    url = f"http://127.0.0.1:{spec.worker.web_port}/metrics"
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    inputs = read_topic(kafka_bootstrap, spec.input.topic)
    # kcat's partitioner is librdkafka's consistent (CRC-32) one: replay emulates it
    for r in inputs:
        assert r.partition == partition_for(r.key, 3, "consistent")
    streamed = {}
    for r in read_topic(kafka_bootstrap, spec.output.features_topic):
        doc = orjson.loads(r.value)
        streamed[(doc["source"]["partition"], doc["source"]["offset"])] = doc
    late_streamed = len(read_topic(kafka_bootstrap, spec.output.late_topic))
    assert late_streamed > 0

    out = tmp_path / "features.jsonl"
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
            "--partitions",
            "3",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert f"replayed {N} events: {len(streamed)} feature vectors" in r.stdout
    assert f"{late_streamed} late" in r.stdout
    replayed = {}
    for line in out.read_bytes().splitlines():
        doc = orjson.loads(line)
        replayed[(doc["source"]["partition"], doc["source"]["offset"])] = doc
    assert replayed.keys() == streamed.keys()
    for pos, doc in streamed.items():
        assert replayed[pos]["features"] == doc["features"], pos  # value for value, bit for bit
        assert replayed[pos]["entity"] == doc["entity"]
        assert replayed[pos]["event_time_ms"] == doc["event_time_ms"]
    assert time.monotonic() - t0 < 120
