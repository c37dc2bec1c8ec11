"""``processing_guarantee = "at_least_once"``: SIGKILL mid-stream, restart.

Without transactions a crash can repeat the outputs of the batch in flight, but never the
state: the snapshot carries the offsets it covers, and a restart resumes there. So every
feature vector and alert equals the uninterrupted run's; repeats are copies (same values, same
deterministic ids), at most what came after the last snapshot (``commit_interval_ms``).
"""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.kafka_helpers import (
    kcat_produce,
    kill_after,
    read_topic,
    start_worker,
    wait_for_metric,
    write_pipeline,
)

pytestmark = pytest.mark.integration

N, K, BATCH = 30_000, 18_000, 200


def test_at_least_once_repeats_outputs_never_state(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    data = named_ks_adwin_spec(f"alo-{unique}")
    data["worker"].update(web_port=free_port(), batch_max_records=BATCH, batch_timeout_ms=20,
                          processing_guarantee="at_least_once", commit_interval_ms=200)  # fmt: skip
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3000)
    stream = SyntheticStream(n=N, shift_at=K, seed=22, n_entities=200)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    first = int(N * 0.6)
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[:first])
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    log1 = tmp_path / "worker1.log"
    w1 = start_worker(spec_path, kafka_bootstrap, log1, worker_id="w-alo")
    kill_after(url, N // 4, w1, log1)
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[first:])

    log2 = tmp_path / "worker2.log"
    w2 = start_worker(spec_path, kafka_bootstrap, log2, worker_id="w-alo")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert w2.poll() is None, log2.read_text()[-3000:]
            assert time.monotonic() < deadline, log2.read_text()[-3000:]
            recs = read_topic(kafka_bootstrap, spec.output.features_topic)
            seen = {(orjson.loads(r.value)["source"]["partition"],
                     orjson.loads(r.value)["source"]["offset"]) for r in recs}  # fmt: skip
            if len(seen) == N:
                break
            time.sleep(0.5)
    finally:
        w2.send_signal(signal.SIGTERM)
        assert w2.wait(30) == 0
    assert "state restored" in log2.read_text()

    inputs = read_topic(kafka_bootstrap, spec.input.topic)
    pred, version = build_predictor(spec)
    expected: dict[tuple[int, int], dict] = {}
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
                expected[(p, doc["source"]["offset"])] = doc["features"]
        expected_alerts |= {(a["alert_id"], a["status"]) for a in oc.alerts}
    assert expected_alerts

    counts: Counter[tuple[int, int]] = Counter()
    for r in read_topic(kafka_bootstrap, spec.output.features_topic):
        doc = orjson.loads(r.value)
        pos = (doc["source"]["partition"], doc["source"]["offset"])
        counts[pos] += 1
        assert doc["features"] == expected[pos], f"state double-counted or lost at {pos}"
    assert set(counts) == set(expected)
    repeated = sum(1 for c in counts.values() if c > 1)
    # a restart redoes what came after the last snapshot (commit_interval_ms), no more
    assert repeated < first, f"{repeated} repeated vectors: more than the first run processed"
    alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.alerts_topic)]
    assert {(a["alert_id"], a["status"]) for a in alerts} == expected_alerts


def test_at_least_once_resumes_from_the_snapshot_not_the_group_offsets(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    """The group's committed offsets lag the snapshot after a crash between the two; simulate
    that by rewinding the group: the restarted worker must still resume at the snapshot."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    from tests.kafka_helpers import metric

    data = named_ks_adwin_spec(f"alo2-{unique}")
    data["worker"].update(web_port=free_port(), processing_guarantee="at_least_once")
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3000)
    stream = SyntheticStream(n=6_000, shift_at=6_000, seed=3, n_entities=50)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[:4_000])
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    log1 = tmp_path / "worker1.log"
    w1 = start_worker(spec_path, kafka_bootstrap, log1, worker_id="w-rewind")
    try:
        wait_for_metric(url, "driftline_records_consumed_total", 4_000, w1, log1)
    finally:
        w1.send_signal(signal.SIGTERM)  # a clean stop: the last snapshot covers all 4,000
        assert w1.wait(60) == 0
    # rewind the group to the start (possible once the static member's session has expired)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    rewind = ConsumerGroupTopicPartitions(
        spec.group_id, [TopicPartition(spec.input.topic, p, 0) for p in (0, 1)]
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            done = admin.alter_consumer_group_offsets([rewind])[spec.group_id].result(timeout=30)
            if all(tp.error is None for tp in done.topic_partitions):
                break
        except Exception:  # the group is not empty yet: the member's session is still alive
            pass
        assert time.monotonic() < deadline, "could not rewind the group"
        time.sleep(2)
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": spec.group_id})
    committed = probe.committed([TopicPartition(spec.input.topic, p) for p in (0, 1)], 10)
    probe.close()
    assert [tp.offset for tp in committed] == [0, 0], committed
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[4_000:])

    log2 = tmp_path / "worker2.log"
    w2 = start_worker(spec_path, kafka_bootstrap, log2, worker_id="w-rewind")
    try:
        wait_for_metric(url, "driftline_records_consumed_total", 2_000, w2, log2)
        time.sleep(1.5)
        consumed = metric(url, "driftline_records_consumed_total")
    finally:
        w2.send_signal(signal.SIGTERM)
        assert w2.wait(60) == 0
    assert consumed == 2_000, "the restarted worker read from the group's offsets, not its state's"
    vectors = read_topic(kafka_bootstrap, spec.output.features_topic, at_least=6_000)
    positions = Counter(
        (orjson.loads(r.value)["source"]["partition"], orjson.loads(r.value)["source"]["offset"])
        for r in vectors
    )
    assert len(positions) == 6_000 and max(positions.values()) == 1
