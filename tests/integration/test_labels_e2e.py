"""Delayed labels on a real broker: kcat produces events and labels, the worker joins them.

Labels are keyed by prediction id (so about half land on the other partition and are forwarded),
arrive out of order and late, some never, some twice, two are malformed. Checked: every label is
accounted for, live metrics on the model-metrics topic and ``/metrics`` equal scikit-learn's on
the joined examples, and the error stream's detector fires after the concept changes only.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.localkafka import free_port
from driftline.schemas import validate
from tests.kafka_helpers import (
    JOINED,
    kcat_produce,
    metric,
    read_topic,
    start_worker,
    wait_for_metric,
    write_pipeline,
)

pytestmark = pytest.mark.integration

N, CONCEPT_AT, T0, STEP = 6_000, 3_000, 1_767_225_600_000, 10
INPUTS = ["amount", "latency_ms", "amount_mean_1m"]
WINDOW_S = 1_000_000  # the time window covers the whole run: metrics over every joined label


def _truth() -> np.ndarray:
    a = SyntheticStream(n=N, shift_at=N, seed=21, n_entities=80).arrays()
    y = labels_for(a["amount"], a["latency_ms"], 8).astype(int)
    y[CONCEPT_AT:] = 1 - y[CONCEPT_AT:]  # concept drift: the relation inverts
    return y


def test_labels_join_grade_and_detect_on_a_real_broker(
    kafka_bootstrap: str, unique: str, kcat: str, tmp_path: Path
) -> None:
    data = named_ks_adwin_spec(f"lab-{unique}", ("model_metrics_topic",))
    data["detectors"] = [{"name": "error_adwin", "type": "adwin", "target": "error", "delta": 1e-6}]
    data["labels"] = {
        "topic": f"lab-{unique}.labels",
        "time_field": "label_time_ms",
        "ttl_ms": 3_600_000,
        "count_window": 500,
        "time_window_ms": WINDOW_S * 1000,
    }
    data["worker"]["web_port"] = port = free_port()
    spec_path, _ = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=4_000)
    out = data["output"]

    log = tmp_path / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        events = list(SyntheticStream(n=N, shift_at=N, seed=21, n_entities=80).events())
        kcat_produce(kcat, kafka_bootstrap, data["input"]["topic"],
                     [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events])  # fmt: skip
        wait_for_metric(url, "driftline_predictions_total", N, proc, log)
        preds = [
            orjson.loads(r.value)
            for r in read_topic(kafka_bootstrap, out["predictions_topic"], at_least=N)
        ]
        assert len(preds) == N
        by_index = {(p["event_time_ms"] - T0) // STEP: p for p in preds}

        y = _truth()
        rng = np.random.default_rng(2)
        labelled = np.flatnonzero(rng.random(N) < 0.85)  # 15% never get a label
        delay = rng.integers(0, 60_000, labelled.size)  # up to a minute late
        order = np.argsort(labelled * STEP + delay + rng.integers(0, 5_000, labelled.size))
        pre: list[bytes] = []
        post: list[bytes] = []
        for j in order.tolist():
            i = int(labelled[j])
            doc = {"prediction_id": by_index[i]["prediction_id"], "label": int(y[i]),
                   "label_time_ms": T0 + STEP * i + int(delay[j])}  # fmt: skip
            line = doc["prediction_id"].encode() + b"|" + orjson.dumps(doc)
            (pre if i < CONCEPT_AT else post).append(line)
        dups = pre[100:120]
        bad = [b"x|{not json", b"y|" + orjson.dumps({"prediction_id": "nope", "label": 1})]
        # first the labels of the events before the concept changed: no alert may fire
        kcat_produce(kcat, kafka_bootstrap, data["labels"]["topic"], pre + dups + bad)
        wait_for_metric(url, JOINED[0], len(pre), proc, log, labels=JOINED[1])
        wait_for_metric(url, "driftline_records_dead_lettered_total", 2, proc, log)
        alerts = read_topic(kafka_bootstrap, out["alerts_topic"])
        assert alerts == [], "no concept alert before the concept changed"
        kcat_produce(kcat, kafka_bootstrap, data["labels"]["topic"], post)
        n_lab = labelled.size
        wait_for_metric(url, JOINED[0], n_lab, proc, log, labels=JOINED[1])
        consumed_labels = metric(url, "driftline_records_consumed_total",
                                 {"topic": data["labels"]["topic"]})  # fmt: skip
        forwarded = metric(url, "driftline_labels_forwarded_total")
        # every label record is accounted for: read once where it landed, forwarded ones twice
        assert consumed_labels == n_lab + len(dups) + len(bad) + forwarded
        assert 0.2 * n_lab < forwarded < 0.8 * n_lab
        assert metric(url, "driftline_label_join_outcomes_total", {"outcome": "joined"}) == n_lab
        assert metric(url, "driftline_label_join_outcomes_total",
                      {"outcome": "duplicate_label"}) == len(dups)  # fmt: skip
        assert metric(url, "driftline_label_join_outcomes_total",
                      {"outcome": "unmatched_label"}) == 0  # fmt: skip

        dlq = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out["dlq_topic"])]
        assert sorted(d["reason"] for d in dlq) == ["invalid_json", "wrong_type"]
        assert {d["source"]["topic"] for d in dlq} == {data["labels"]["topic"]}

        # live metrics per partition over every joined label == scikit-learn on that partition
        mm = [
            orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out["model_metrics_topic"])
        ]
        for m in mm:
            validate("model_metrics", m)
        last = {m["partition"]: m for m in mm}  # records per partition key are in order
        assert set(last) == {0, 1}
        win = f"{WINDOW_S}s"
        for part, m in last.items():
            idx = [int(i) for i in labelled if by_index[int(i)]["source"]["partition"] == part]
            s = np.array([by_index[i]["score"] for i in idx])
            yt = y[idx]
            got = m["windows"][win]
            assert got["n"] == len(idx)
            assert got["accuracy"] == pytest.approx(accuracy_score(yt, s >= 0.5), abs=1e-12)
            assert got["f1"] == pytest.approx(f1_score(yt, s >= 0.5), abs=1e-12)
            assert got["auc"] == pytest.approx(roc_auc_score(yt, s), abs=1e-12)
            assert m["windows"]["last_500"]["n"] == 500
            labels = {"metric": "auc", "window": win, "partition": str(part)}
            assert metric(url, "driftline_model_metric", labels) == pytest.approx(got["auc"])

        alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out["alerts_topic"])]
        concept = [a for a in alerts if a["kind"] == "concept" and a["status"] == "firing"]
        assert concept, "the error stream's ADWIN must fire once the concept changed"
        for a in alerts:
            validate("alert", a)
            assert a["window"]["topic"] == data["labels"]["topic"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
