"""SIGKILL a worker mid-stream, restart it: outputs equal an uninterrupted run, none duplicated.

The reference "uninterrupted run" is the same per-partition batch step run in-process over the
same records (outputs do not depend on batch boundaries; tests/agents/test_pipeline.py).
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from driftline.agents.demo import named_demo_spec
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.kafka_helpers import (
    kcat_produce,
    kill_after,
    metric,
    read_topic,
    start_worker,
    write_pipeline,
)

pytestmark = pytest.mark.integration

N, K = 40_000, 24_000


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    # read_uncommitted: do not wait for a killed worker's pending offsets (require_stable=false)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        c.close()


def test_sigkill_and_restart_gives_the_uninterrupted_outputs(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    data = named_demo_spec(f"kill-{unique}")
    data["worker"].update(web_port=free_port(), batch_max_records=200, batch_timeout_ms=20)
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3000)
    stream = SyntheticStream(n=N, shift_at=K, seed=21, n_entities=200)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    # the first 60% now; the rest after the kill, so the kill always lands mid-stream
    first = int(N * 0.6)
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[:first])
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    # first run: killed with SIGKILL once it has committed part of the stream
    log1 = tmp_path / "worker1.log"
    w1 = start_worker(spec_path, kafka_bootstrap, log1, worker_id="w-a")
    kill_after(url, N // 4, w1, log1)
    done_before = _committed(kafka_bootstrap, spec.group_id, spec.input.topic, 2)
    assert 0 < done_before <= first, f"{done_before}/{first} committed before the kill"
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[first:])

    # second run: same worker id; it restores state and finishes the stream
    log2 = tmp_path / "worker2.log"
    w2 = start_worker(spec_path, kafka_bootstrap, log2, worker_id="w-a")
    try:
        deadline = time.monotonic() + 120
        while _committed(kafka_bootstrap, spec.group_id, spec.input.topic, 2) < N:
            assert w2.poll() is None, log2.read_text()[-3000:]
            assert time.monotonic() < deadline, log2.read_text()[-3000:]
            time.sleep(0.3)
        # metrics follow the commit (counted when the worker collects it): let them land,
        # then make sure nothing more is counted
        want = N - done_before
        while metric(url, "driftline_records_consumed_total") < want:
            assert time.monotonic() < deadline, log2.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)
        consumed_after = metric(url, "driftline_records_consumed_total")
    finally:
        w2.send_signal(signal.SIGTERM)
        assert w2.wait(30) == 0
    assert "state restored" in log2.read_text()
    # the restarted worker read only what the first had not committed: nothing twice
    assert consumed_after == N - done_before

    # reference: the uninterrupted per-partition batch step over the same records
    inputs = read_topic(kafka_bootstrap, spec.input.topic)
    pred, version = build_predictor(spec)
    expected_features: dict[tuple[int, int], bytes] = {}
    expected_alerts = set()
    by_part = defaultdict(list)
    for r in sorted(inputs, key=lambda r: (r.partition, r.offset)):
        by_part[r.partition].append(
            RawRecord(spec.input.topic, r.partition, r.offset, None, r.key, r.value)
        )
    for p, recs in by_part.items():
        oc = PartitionPipeline(spec, p, pred, version).process(recs)
        for topic, _key, value in oc.all_messages():
            if topic == spec.output.features_topic:
                doc = orjson.loads(value)
                expected_features[(p, doc["source"]["offset"])] = doc["features"]
        expected_alerts |= {(a["alert_id"], a["status"]) for a in oc.alerts}
    assert expected_alerts, "the reference run raised no alert; the test would prove nothing"

    features = read_topic(kafka_bootstrap, spec.output.features_topic)
    got: dict[tuple[int, int], bytes] = {}
    for r in features:
        doc = orjson.loads(r.value)
        pos = (doc["source"]["partition"], doc["source"]["offset"])
        assert pos not in got, f"feature vector for {pos} written twice"
        got[pos] = doc["features"]
    assert got == expected_features

    alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.alerts_topic)]
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was written twice"
    assert {(a["alert_id"], a["status"]) for a in alerts} == expected_alerts
    predictions = read_topic(kafka_bootstrap, spec.output.predictions_topic)
    assert len(predictions) == N
