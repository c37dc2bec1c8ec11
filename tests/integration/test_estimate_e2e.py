"""Label-free performance estimation on a real broker.

kcat produces reference events; once their predictions are on the predictions topic, their
labels follow (keyed by prediction id: about half are forwarded to the other partition) and each
partition fits its calibration on its first joined labels. Then events whose inputs move to the
model's decision boundary follow, without labels. Checked: the model-metrics topic holds one
valid ``estimated_performance`` record per chunk of 500 predictions per partition (after the
calibration), each close to the realized metrics computed from the withheld labels; ``/metrics``
exports the last chunk's estimate and band; the accuracy threshold raises one
``estimated_performance`` alert per partition after the shift, and the firing gauge is 1.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.agents.demo import _to_toml
from driftline.agents.kafka_io import ensure_topics
from driftline.localkafka import free_port
from driftline.schemas import validate
from driftline.spec import load_spec
from driftline.streams.model_metrics import classification_metrics
from tests.cbpe_stream import covariate_events, spec_data, train_model
from tests.kafka_helpers import (
    JOINED,
    kcat_produce,
    metric,
    read_topic,
    start_worker,
    wait_for_metric,
)

pytestmark = pytest.mark.integration

N, REFERENCE, SHIFT_AT, CHUNK = 6_000, 1_600, 3_000, 500


def test_estimated_performance_on_a_real_broker(
    kafka_bootstrap: str, unique: str, kcat: str, tmp_path: Path
) -> None:
    prefix = f"cbpe-{unique}"
    model = tmp_path / "model.pkl"
    train_model(model)
    data = spec_data(prefix, f"{prefix}.events", model, chunk_size=CHUNK, reference_size=600,
                     thresholds={"accuracy": 0.7})  # fmt: skip
    # labels timed in the events' event time (a label's broker time, today, would expire them)
    data["labels"]["time_field"] = "label_time_ms"
    data["worker"] = {"web_port": (port := free_port())}
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(data))
    spec = load_spec(spec_path)
    ensure_topics(kafka_bootstrap, [spec.input.topic], partitions=2)
    out = data["output"]
    docs, y = covariate_events(N, SHIFT_AT)
    lines = [d["user_id"].encode() + b"|" + orjson.dumps(d) for d in docs]

    log = tmp_path / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[:REFERENCE])
        wait_for_metric(url, "driftline_predictions_total", REFERENCE, proc, log)
        ptopic = out["predictions_topic"]
        preds = [orjson.loads(r.value)
                 for r in read_topic(kafka_bootstrap, ptopic, at_least=REFERENCE)]  # fmt: skip
        index = {d["ts"]: i for i, d in enumerate(docs)}  # event time -> event
        labels = [
            p["prediction_id"].encode() + b"|"
            + orjson.dumps({"prediction_id": p["prediction_id"],
                            "label": int(y[index[p["event_time_ms"]]]),
                            "label_time_ms": p["event_time_ms"] + 1_000})
            for p in preds
        ]  # fmt: skip
        kcat_produce(kcat, kafka_bootstrap, data["labels"]["topic"], labels)
        wait_for_metric(url, JOINED[0], REFERENCE, proc, log, labels=JOINED[1])
        # the rest comes without labels; the inputs move from SHIFT_AT on
        kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[REFERENCE:])
        wait_for_metric(url, "driftline_predictions_total", N, proc, log)
        preds = [orjson.loads(r.value)
                 for r in read_topic(kafka_bootstrap, ptopic, at_least=N)]  # fmt: skip
        # chunks per partition: the reference's complete before any label (not estimated)
        by_part: dict[int, dict[int, tuple[float, int]]] = defaultdict(dict)
        for p in preds:
            i = index[p["event_time_ms"]]
            by_part[p["source"]["partition"]][p["source"]["offset"]] = (p["score"], i)
        expected = 0
        for rows in by_part.values():
            ref = sum(1 for _s, i in rows.values() if i < REFERENCE)
            expected += len(rows) // CHUNK - ref // CHUNK
        wait_for_metric(url, "driftline_estimated_chunks_total", expected, proc, log)

        records = [orjson.loads(r.value)
                   for r in read_topic(kafka_bootstrap, out["model_metrics_topic"])]  # fmt: skip
        chunks = [m for m in records if "estimated_performance" in m]
        assert len(chunks) == expected
        errors: dict[str, list[float]] = defaultdict(list)
        last = {}
        for m in chunks:
            validate("model_metrics", m)
            ep = m["estimated_performance"]
            assert ep["n"] == CHUNK and ep["calibration"] == {"source": "labels",
                                                              "n_reference": 600}  # fmt: skip
            rows = by_part[m["partition"]]
            offs = range(ep["first_offset"], ep["last_offset"] + 1)
            s = np.array([rows[o][0] for o in offs])
            yt = y[[rows[o][1] for o in offs]]
            realized = classification_metrics(yt, s)
            for k in ("accuracy", "f1", "auc"):
                errors[k].append(abs(ep["metrics"][k]["estimate"] - realized[k]))
            last[m["partition"]] = ep
        assert set(last) == {0, 1}
        for k, errs in errors.items():
            assert np.mean(errs) < 0.04, (k, np.mean(errs))
        for part, ep in last.items():
            for bound in ("estimate", "lower", "upper"):
                sel = {"metric": "accuracy", "bound": bound, "partition": str(part)}
                got = metric(url, "driftline_estimated_performance", sel)
                assert got == pytest.approx(ep["metrics"]["accuracy"][bound])
            assert ep["metrics"]["accuracy"]["estimate"] < 0.7  # after the shift
            assert metric(url, "driftline_estimated_performance_firing",
                          {"metric": "accuracy", "partition": str(part)}) == 1  # fmt: skip

        alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out["alerts_topic"])]
        for a in alerts:
            validate("alert", a)
        firing = [a for a in alerts if a["kind"] == "estimated_performance"]
        assert sorted((a["window"]["partition"], a["status"]) for a in firing) == [
            (0, "firing"), (1, "firing")
        ]  # fmt: skip
        for a in firing:
            i = by_part[a["window"]["partition"]][a["window"]["offset"]][1]
            assert i >= SHIFT_AT  # the chunk that crossed ends after the shift
        assert metric(url, "driftline_alerts_total",
                      {"kind": "estimated_performance", "status": "firing"}) == 2  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
