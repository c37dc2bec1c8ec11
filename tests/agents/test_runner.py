"""The runner on a real broker: what its log and its alerts say about where records came from.

One worker reads an input topic and a labels topic of two partitions each; the labels stop
following the predictions' prior half-way (0, then 1), so a label detector fires on the labels
topic. Checked: the assignment is logged as topic:partition pairs, and an alert's log line and
its readable text name the topic its offset belongs to (the labels topic here, not the input).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.predictor import build_predictor
from driftline.agents.runner import TransactionalRunner
from driftline.agents.worker import preflight
from driftline.alert_format import format_alert
from driftline.spec import PipelineSpec
from tests.kafka_helpers import LogLines, read_topic, write_pipeline

pytestmark = pytest.mark.integration

N, T0, STEP = 600, 1_767_225_600_000, 10  # events per partition


@dataclass
class Run:
    spec: PipelineSpec
    lines: list[str]
    alerts: list[dict]


def _produce(bootstrap: str, topic: str, docs: dict[int, list[dict]], key: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for part, ds in docs.items():
        for d in ds:
            p.produce(topic, orjson.dumps(d), str(d[key]).encode(), partition=part)
    assert p.flush(60) == 0


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    name = f"rn-{uuid.uuid4().hex[:10]}"
    data = named_ks_adwin_spec(name, ("model_metrics_topic",))
    data["detectors"] = [{"name": "label_adwin", "type": "adwin", "target": "label", "delta": 1e-5}]
    data["labels"] = {"topic": f"{name}.labels", "time_field": "label_time_ms", "ttl_ms": 3_600_000}
    tmp: Path = tmp_path_factory.mktemp("runner")
    _, spec = write_pipeline(tmp, data, kafka_bootstrap, model_rows=2_000,
                             topics=[data["labels"]["topic"]])  # fmt: skip
    preflight(spec, kafka_bootstrap)
    assert spec.labels is not None
    rng = np.random.default_rng(4)
    events = {
        p: [{"user_id": f"u{p}-{i % 20}", "ts": T0 + STEP * i, "amount": float(rng.normal(50, 10)),
             "latency_ms": float(rng.normal(100, 15)), "country": "de"} for i in range(N)]
        for p in (0, 1)
    }  # fmt: skip
    _produce(kafka_bootstrap, spec.input.topic, events, "user_id")

    handler = LogLines()
    logger = logging.getLogger("driftline.runner")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    predictor, version = build_predictor(spec)
    runner = TransactionalRunner(
        spec, kafka_bootstrap, WorkerMetrics(spec.name), predictor, version, f"{name}-w"
    )
    runner.start()
    try:
        read_topic(kafka_bootstrap, spec.output.predictions_topic, at_least=2 * N)
        # every label comes after its prediction: the joins, and alerts, happen on the labels
        # topic; the labels' prior moves from 0 to 1 half-way
        labels = {
            p: [{"prediction_id": f"{spec.input.topic}:{p}:{i}", "label": int(i >= N // 2),
                 "label_time_ms": T0 + STEP * i + 100} for i in range(N)]
            for p in (0, 1)
        }  # fmt: skip
        _produce(kafka_bootstrap, spec.labels.topic, labels, "prediction_id")
        deadline = time.monotonic() + 120
        while not any(line.startswith("drift firing") for line in handler.lines):
            assert runner.is_alive() and time.monotonic() < deadline, handler.lines[-20:]
            time.sleep(0.2)
    finally:
        runner.stop()
        runner.join(60)
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert runner.error is None
    alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec.output.alerts_topic)]
    yield Run(spec, handler.lines, alerts)


def test_assigned_partitions_are_logged_as_topic_partition_pairs(run: Run) -> None:
    assert run.spec.labels is not None
    i, lab = run.spec.input.topic, run.spec.labels.topic
    assigned = [line for line in run.lines if line.startswith("assigned partitions")]
    assert len(assigned) == 1, run.lines
    assert assigned[0].startswith(f"assigned partitions {i}:0, {i}:1, {lab}:0, {lab}:1 ("), assigned


def test_alert_log_lines_name_the_topic_of_their_offset(run: Run) -> None:
    assert run.spec.labels is not None
    firing = [a for a in run.alerts if a["status"] == "firing"]
    assert {a["window"]["partition"] for a in firing} == {0, 1}
    for a in run.alerts:
        w = a["window"]
        assert a["detector"] == "label_adwin" and w["topic"] == run.spec.labels.topic
        assert N // 2 <= w["offset"] < N  # the label's offset, on the labels topic
        where = f"topic={w['topic']} partition={w['partition']} offset={w['offset']}"
        head = f"drift {a['status']}: detector={a['detector']} "
        logged = [ln for ln in run.lines if ln.startswith(head) and where in ln]
        assert len(logged) == 1, (where, [ln for ln in run.lines if ln.startswith("drift ")])


def test_alert_text_names_the_topic_of_its_offset(run: Run) -> None:
    for a in run.alerts:
        w = a["window"]
        text = format_alert(a)
        assert f" topic={w['topic']} partition={w['partition']} offset={w['offset']} " in text
