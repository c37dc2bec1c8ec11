"""On a real broker: a correlation flip that leaves every marginal the same raises a
``multivariate`` alert on the alerts topic, and the KS detectors on the same features stay quiet.

kcat produces the stream keyed by entity over two partitions; each partition's PCA detector
takes its first 1000 rows as its reference and fires on its own.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import orjson
import pytest

from driftline.agents.kafka_io import ensure_topics
from driftline.agents.replay import replay
from driftline.agents.status_client import fetch_status
from driftline.localkafka import free_port
from driftline.schemas import validate
from driftline.spec import load_spec
from tests.kafka_helpers import (
    kcat_produce,
    kill_after,
    metric,
    read_topic,
    start_worker,
    wait_for_metric,
    wait_until_committed,
)
from tests.multivariate_stream import MULTIVARIATE, T0, flip_events, flip_spec

pytestmark = pytest.mark.integration

BEFORE, AFTER = 4000, 2000

KS = """
[[detectors]]
name = "x_ks"
type = "ks"
target = "x"

[[detectors]]
name = "y_ks"
type = "ks"
target = "y"
"""


def _pipeline(tmp_path: Path, bootstrap: str, kcat: str, events: list[dict]) -> tuple:
    """A fresh pipeline (its own topics and web port) with ``events`` produced to its input."""
    uid = uuid.uuid4().hex[:10]
    port = free_port()
    outputs = "\n".join(
        f'{k} = "mv-{uid}.{k.removesuffix("_topic")}"'
        for k in ("features_topic", "predictions_topic", "alerts_topic", "dlq_topic",
                  "late_topic", "model_metrics_topic")
    )  # fmt: skip
    extra = f"{MULTIVARIATE}{KS}\n[output]\n{outputs}\n\n[worker]\nweb_port = {port}\n"
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(flip_spec(f"mv-{uid}", f"mv-{uid}.events", extra))
    spec = load_spec(spec_path)
    ensure_topics(bootstrap, [spec.input.topic], partitions=2)
    kcat_produce(kcat, bootstrap, spec.input.topic,
                 [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events])  # fmt: skip
    return spec_path, spec, port


def test_flip_raises_multivariate_alerts_and_no_univariate_one(
    kafka_bootstrap: str, kcat: str, tmp_path: Path
) -> None:
    events = flip_events(BEFORE, AFTER, seed=5)
    spec_path, spec, port = _pipeline(tmp_path, kafka_bootstrap, kcat, events)

    log = tmp_path / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for_metric(url, "driftline_records_consumed_total", len(events), proc, log)
        fired = metric(url, "driftline_alerts_total", {"kind": "multivariate", "status": "firing"})
        ks_fired = metric(url, "driftline_alerts_total", {"kind": "covariate"})
        open_now = metric(url, "driftline_drift_firing", {"detector": "xyz_pca"})
        upper = metric(url, "driftline_multivariate_limit", {"detector": "xyz_pca",
                                                             "bound": "upper"})  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, log.read_text()[-3000:]

    alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.alerts_topic)]
    for a in alerts:
        validate("alert", a)
    assert [a for a in alerts if a["kind"] != "multivariate"] == []  # KS on x and y: silent
    firing = [a for a in alerts if a["status"] == "firing"]
    assert {(a["detector"], a["detector_type"], a["target"]) for a in firing} == {
        ("xyz_pca", "pca", "x,y,z")
    }
    assert sorted(a["window"]["partition"] for a in firing) == [0, 1]  # one episode each
    for a in firing:
        at = (a["window"]["event_time_ms"] - T0) // 10  # the event's index in the stream
        assert BEFORE <= at < BEFORE + 2 * 2 * 250, at  # within two windows of its partition
        assert a["statistic"] > a["threshold"] and a["window"]["n_current"] == 250
        # the partition's 250 rows up to the trigger: the start is an earlier offset of it
        assert 0 <= a["window"]["start_offset"] < a["window"]["offset"]
        assert a["window"]["start_event_time_ms"] < a["window"]["event_time_ms"]
    assert (fired, ks_fired, open_now) == (2, 0, 2)
    assert 0 < upper < 2  # two partitions, each ~0.42


def test_a_killed_worker_resumes_and_alerts_exactly_as_a_replay(
    kafka_bootstrap: str, kcat: str, tmp_path: Path
) -> None:
    """SIGKILL in the middle of the reference (each partition has about 750 of its 1000 rows);
    a second worker restores the detectors from the changelog and reads the rest: the alerts
    topic holds exactly the alerts (same ids) an offline replay of the same events over two
    partitions writes."""
    events = flip_events(BEFORE, AFTER, seed=6)
    first = 1500
    spec_path, spec, port = _pipeline(tmp_path, kafka_bootstrap, kcat, events[:first])
    url = f"http://127.0.0.1:{port}/metrics"
    log1, log2 = tmp_path / "w1.log", tmp_path / "w2.log"
    kill_after(url, first, start_worker(spec_path, kafka_bootstrap, log1), log1)
    rest = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events[first:]]
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, rest)
    w2 = start_worker(spec_path, kafka_bootstrap, log2)
    try:
        wait_until_committed(kafka_bootstrap, spec, len(events), w2, log2)
        # the restored detectors count the rows the killed worker had committed too
        seen = {d["partition"]: d["n_seen"] for d in fetch_status(f"http://127.0.0.1:{port}")["detectors"]
                if d["detector"] == "xyz_pca"}  # fmt: skip
        assert sorted(seen) == [0, 1] and sum(seen.values()) == len(events), seen
    finally:
        w2.send_signal(signal.SIGTERM)
        w2.wait(30)
    got = sorted(
        (a["alert_id"], a["status"], a["window"]["partition"], a["window"]["offset"])
        for a in (orjson.loads(r.value)
                  for r in read_topic(kafka_bootstrap, spec.output.alerts_topic))
    )  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    replayed = tmp_path / "alerts.jsonl"
    replay(spec, path, tmp_path / "f.jsonl", alerts_path=replayed, partitions=2, progress=False)
    want = sorted(
        (a["alert_id"], a["status"], a["window"]["partition"], a["window"]["offset"])
        for a in map(orjson.loads, replayed.read_bytes().splitlines())
    )
    assert got == want and len(want) == 2
