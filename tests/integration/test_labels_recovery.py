"""SIGKILL a worker while it joins labels, restart it: no label lost, none counted twice.

Labels and predictions interleave in whatever order the broker delivers, so instead of a
replayed reference this checks what a lost or doubled state would break: per partition, the
cumulative join counts and the live metrics over every joined label (a time window wider than
the run) equal scikit-learn's on exactly the labels produced for that partition's predictions.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.localkafka import free_port
from tests.kafka_helpers import (
    JOINED,
    kcat_produce,
    kill_after,
    read_topic,
    start_worker,
    write_pipeline,
)

pytestmark = pytest.mark.integration

N, T0, STEP = 20_000, 1_767_225_600_000, 10
WINDOW_S = 1_000_000


def test_sigkill_while_joining_labels_loses_and_doubles_nothing(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    data = named_ks_adwin_spec(f"lkill-{unique}", ("model_metrics_topic",))
    data["worker"].update(web_port=free_port(), batch_max_records=300, batch_timeout_ms=20)
    data["detectors"] = [{"name": "error_adwin", "type": "adwin", "target": "error"}]
    labels_topic = f"lkill-{unique}.labels"
    data["labels"] = {"topic": labels_topic, "time_field": "label_time_ms", "ttl_ms": 10**9,
                      "time_window_ms": WINDOW_S * 1000, "count_window": 300}  # fmt: skip
    spec_path, _ = write_pipeline(
        tmp_path, data, kafka_bootstrap, model_rows=3000, topics=[labels_topic]
    )
    topic = data["input"]["topic"]

    events = list(SyntheticStream(n=N, shift_at=N, seed=4, n_entities=150).events())
    kcat_produce(kcat, kafka_bootstrap, topic,
                 [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events])  # fmt: skip
    # prediction ids are <topic>:<partition>:<offset>: read where each event landed
    where = {}
    for r in read_topic(kafka_bootstrap, topic, at_least=N):
        where[(orjson.loads(r.value)["ts"] - T0) // STEP] = (r.partition, r.offset)
    a = SyntheticStream(n=N, shift_at=N, seed=4, n_entities=150).arrays()
    y = labels_for(a["amount"], a["latency_ms"], 3)
    rng = np.random.default_rng(9)
    labelled = np.flatnonzero(rng.random(N) < 0.7)
    lines = []
    for i in labelled.tolist():
        p, o = where[i]
        doc = {"prediction_id": f"{topic}:{p}:{o}", "label": int(y[i]),
               "label_time_ms": T0 + STEP * i + int(rng.integers(0, 30_000))}  # fmt: skip
        lines.append(doc["prediction_id"].encode() + b"|" + orjson.dumps(doc))
    half = len(lines) // 2
    kcat_produce(kcat, kafka_bootstrap, labels_topic, lines[:half])
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    log1 = tmp_path / "worker1.log"
    w1 = start_worker(spec_path, kafka_bootstrap, log1, worker_id="w-l")
    kill_after(url, half // 4, w1, log1, JOINED)
    kcat_produce(kcat, kafka_bootstrap, labels_topic, lines[half:])

    log2 = tmp_path / "worker2.log"
    w2 = start_worker(spec_path, kafka_bootstrap, log2, worker_id="w-l")
    mm_topic = data["output"]["model_metrics_topic"]
    try:
        deadline = time.monotonic() + 180
        last: dict[int, dict] = {}
        while sum(m["labels"]["joined"] for m in last.values()) < len(lines):
            assert w2.poll() is None, log2.read_text()[-3000:]
            assert time.monotonic() < deadline, (last, log2.read_text()[-3000:])
            time.sleep(1.0)
            for r in read_topic(kafka_bootstrap, mm_topic):
                doc = orjson.loads(r.value)
                last[doc["partition"]] = doc  # records of one partition key are in order
        time.sleep(1.0)
    finally:
        w2.send_signal(signal.SIGTERM)
        assert w2.wait(30) == 0
    assert "state restored" in log2.read_text()

    scores = {}
    for r in read_topic(kafka_bootstrap, data["output"]["predictions_topic"], at_least=N):
        d = orjson.loads(r.value)
        scores[d["prediction_id"]] = d["score"]
    assert len(scores) == N  # every prediction written once
    for p, m in last.items():
        mine = [(i, f"{topic}:{p}:{where[i][1]}") for i in labelled.tolist() if where[i][0] == p]
        yt = y[[i for i, _ in mine]]
        s = np.array([scores[pid] for _, pid in mine])
        counts = m["labels"]
        assert counts["joined"] == len(mine)
        assert counts["duplicate_label"] == counts["duplicate_prediction"] == 0
        assert counts["unmatched_label"] == counts["expired_prediction"] == 0
        assert counts["pending_predictions"] == sum(1 for v in where.values() if v[0] == p) - len(
            mine
        )
        got = m["windows"][f"{WINDOW_S}s"]
        assert got["n"] == len(mine)
        assert got["accuracy"] == pytest.approx(accuracy_score(yt, s >= 0.5), abs=1e-12)
        assert got["auc"] == pytest.approx(roc_auc_score(yt, s), abs=1e-12)
    alerts = [
        orjson.loads(r.value) for r in read_topic(kafka_bootstrap, data["output"]["alerts_topic"])
    ]
    ids = [x["alert_id"] for x in alerts]
    assert len(ids) == len(set(ids)), "an alert was written twice"
