"""Chaos: a seeded corpus of hostile records (every kind in fuzz_corpus.KINDS) in a real stream.

The worker never stops, and every record is accounted for exactly: consumed = feature vectors +
dead letters + late events, each dead letter with a reason from its schema (never the catch-all
``processing_error``). A second worker on more of the same input makes progress too. Good
events after the hostile ones are computed as if the hostile ones had not been there
(a poisoned watermark would make them late), and equal an undisturbed run's outputs.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.chaos.fuzz_corpus import KINDS, corpus
from tests.kafka_helpers import (
    read_topic,
    start_worker,
    wait_for_metric,
    write_pipeline,
)
from tests.reference_run import assert_exactly_once, reference_outputs, written_outputs

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
REASONS = set(
    json.loads((ROOT / "schemas/dead_letter.schema.json").read_text())["properties"]["reason"][
        "enum"
    ]
)
N = 4_000


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    errors: list[str] = []
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000,
                  "compression.type": "lz4"})  # fmt: skip

    def done(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in records:
        p.produce(topic, value, key, on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors[:3]


def test_hostile_records_are_each_accounted_for_and_never_stop_the_worker(
    kafka_bootstrap: str, tmp_path: Path, unique: str
) -> None:
    data = named_ks_adwin_spec(f"fuzz-{unique}")
    data["input"]["max_message_bytes"] = 1_048_576
    data["worker"].update(web_port=free_port(), batch_max_records=500)
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=2_000)
    events = list(SyntheticStream(n=2 * N, shift_at=N, seed=5, n_entities=100).events())
    first = list(corpus(events[:N], bad_share=0.25, seed=11))
    second = list(corpus(events[N:], bad_share=0.25, seed=12))
    kinds = Counter(kind for kind, _ in first + second)
    assert set(kinds) - {"good"} == set(KINDS)
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    produce(kafka_bootstrap, spec.input.topic, [r for _, r in first])
    log1 = tmp_path / "w1.log"
    w1 = start_worker(spec_path, kafka_bootstrap, log1, "w-fuzz")
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N, w1, log1, timeout_s=180)
    finally:
        w1.send_signal(signal.SIGTERM)
        assert w1.wait(60) == 0, log1.read_text(errors="replace")[-3000:]

    produce(kafka_bootstrap, spec.input.topic, [r for _, r in second])
    log2 = tmp_path / "w2.log"
    w2 = start_worker(spec_path, kafka_bootstrap, log2, "w-fuzz")
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N, w2, log2, timeout_s=180)
    finally:
        w2.send_signal(signal.SIGTERM)
        assert w2.wait(60) == 0, log2.read_text(errors="replace")[-3000:]

    features = read_topic(kafka_bootstrap, spec.output.features_topic)
    dead = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.dlq_topic)]
    late = read_topic(kafka_bootstrap, spec.output.late_topic)
    assert len(features) + len(dead) + len(late) == 2 * N, (len(features), len(dead), len(late))
    reasons = Counter(d["reason"] for d in dead)
    assert set(reasons) <= REASONS, reasons
    assert "processing_error" not in reasons, [d["error"] for d in dead
                                               if d["reason"] == "processing_error"][:3]
    # nothing good was lost: every good event made a feature vector (none late: the stream is
    # in order, so only a poisoned watermark could make them late)
    assert len(late) == 0, [orjson.loads(r.value)["error"] for r in late[:3]]
    assert len(features) >= kinds["good"], (len(features), kinds)
    for log in (log1, log2):
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-3000:]
    # and what was computed from the good events equals an undisturbed run over the same input
    assert_exactly_once(reference_outputs(kafka_bootstrap, spec), written_outputs(
        kafka_bootstrap, spec, at_least=len(features)))  # fmt: skip
