"""Slices and the business metric on a real broker.

kcat produces the events and their delayed labels; from the middle of the run on, the labels of
one country ("fr") invert, so its accuracy collapses while the global accuracy moves little. A
confluent-kafka producer writes the business topic (revenue 10 per order before the drop, 4
after, on both partitions). Checked: a ``slice`` alert for country=fr only, raised by labels of
events after the drop, with the global accuracy holding; the per-slice metrics on ``/metrics``
and the model-metrics topic; the business metric's rolling value; and in the alert, the business
metric during the episode vs before it, to the bucket.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.alert_format import format_alert
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

N, DROP_AT, T0, STEP = 6_000, 3_000, 1_767_225_600_000, 10
#: the slice alert compares 40 s of label time; the window ends at the event watermark (all
#: events are in before the labels): (T0 + 15 s, T0 + 55 s], 16 s of it before the drop
WINDOW_MS = 40_000
BUSINESS_MS = 60_000


def _span(times: np.ndarray, values: np.ndarray, lo: int, hi: int) -> tuple[float | None, int]:
    """Mean and count of the values whose 1 s bucket starts in [lo, hi)."""
    start = times // 1_000 * 1_000
    sel = (start >= lo) & (start < hi)
    n = int(sel.sum())
    return (float(values[sel].mean()) if n else None), n


def test_slice_alert_and_business_line_on_a_real_broker(
    kafka_bootstrap: str, unique: str, kcat: str, tmp_path: Path
) -> None:
    data = named_ks_adwin_spec(f"slc-{unique}", ("model_metrics_topic",))
    data["detectors"] = []
    data["labels"] = {
        "topic": f"slc-{unique}.labels",
        "time_field": "label_time_ms",
        "ttl_ms": 3_600_000,
        "count_window": 500,
        "time_window_ms": WINDOW_MS,
    }
    data["slices"] = [{"field": "country", "min_samples": 100, "margin": 0.15}]
    orders = f"slc-{unique}.orders"
    data["business"] = {"name": "revenue", "topic": orders, "field": "revenue",
                        "time_field": "ts", "window_ms": BUSINESS_MS}  # fmt: skip
    data["worker"]["web_port"] = port = free_port()
    spec_path, _ = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=4_000,
                                  topics=[orders, data["labels"]["topic"]])  # fmt: skip
    out = data["output"]

    log = tmp_path / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        # the business events first, the same on both partitions: one order per 100 ms
        bt = T0 + np.arange(0, N * STEP, 100, dtype=np.int64)
        bv = np.where(bt < T0 + STEP * DROP_AT, 10.0, 4.0)
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        for p in (0, 1):
            for t, v in zip(bt.tolist(), bv.tolist(), strict=True):
                producer.produce(orders, orjson.dumps({"revenue": v, "ts": t}), b"o", partition=p)
        producer.produce(orders, b'{"revenue": "a lot", "ts": 0}', b"o", partition=0)  # bad
        assert producer.flush(60) == 0
        del producer
        wait_for_metric(url, "driftline_records_consumed_total", 2 * bt.size + 1, proc, log,
                        labels={"topic": orders})  # fmt: skip
        assert metric(url, "driftline_records_dead_lettered_total", {"reason": "wrong_type"}) == 1
        for p in ("0", "1"):  # every order is in the last minute of business time: mean 7
            value = {"metric": "revenue", "stat": "value", "partition": p}
            assert metric(url, "driftline_business_metric", value) == pytest.approx(7.0)

        stream = SyntheticStream(n=N, shift_at=N, seed=21, n_entities=80)
        events = list(stream.events())
        kcat_produce(kcat, kafka_bootstrap, data["input"]["topic"],
                     [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events])  # fmt: skip
        wait_for_metric(url, "driftline_predictions_total", N, proc, log)
        preds = [
            orjson.loads(r.value)
            for r in read_topic(kafka_bootstrap, out["predictions_topic"], at_least=N)
        ]
        by_index = {(p["event_time_ms"] - T0) // STEP: p for p in preds}
        a = stream.arrays()
        y = labels_for(a["amount"], a["latency_ms"], 8).astype(int)
        fr = a["country"] == "fr"
        y[DROP_AT:][fr[DROP_AT:]] = 1 - y[DROP_AT:][fr[DROP_AT:]]  # fr's labels invert
        lines = []
        for i in range(N):  # each label 1 s after its event, in event order
            doc = {"prediction_id": by_index[i]["prediction_id"], "label": int(y[i]),
                   "label_time_ms": T0 + STEP * i + 1_000}  # fmt: skip
            lines.append(doc["prediction_id"].encode() + b"|" + orjson.dumps(doc))
        # the labels before the drop first: no slice alert; then the rest
        kcat_produce(kcat, kafka_bootstrap, data["labels"]["topic"], lines[:DROP_AT])
        wait_for_metric(url, JOINED[0], DROP_AT, proc, log, labels=JOINED[1])
        alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out["alerts_topic"])]
        assert [x for x in alerts if x["kind"] == "slice"] == []
        for k in range(DROP_AT, N, 500):  # in steps, as labels trickle in
            kcat_produce(kcat, kafka_bootstrap, data["labels"]["topic"], lines[k : k + 500])
            wait_for_metric(url, JOINED[0], k + 500, proc, log, labels=JOINED[1])

        alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out["alerts_topic"])]
        for x in alerts:
            validate("alert", x)
        firing = [x for x in alerts if x["kind"] == "slice" and x["status"] == "firing"]
        assert firing and {x["target"] for x in firing} == {"country=fr"}
        mm = [
            orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out["model_metrics_topic"])
        ]
        for m in mm:
            validate("model_metrics", m)
        drop_ms = T0 + STEP * DROP_AT
        for x in firing:
            assert x["window"]["event_time_ms"] > drop_ms  # a label of an event after the drop
            sl = x["slice"]
            part = x["window"]["partition"]
            # the metrics graded by the labels of the events before the drop
            mine = [m for m in mm if m["partition"] == part]
            before = [m for m in mine if m["label_time_ms"] < drop_ms + 1_000]
            pre = before[-1]["windows"][f"{WINDOW_MS // 1000}s"]["accuracy"]
            # the global held: it fell by less than 0.4 times what fr's fell
            assert pre - sl["global_value"] < 0.4 * (pre - sl["slice_value"])
            assert sl["slice_value"] < pre - 0.1
            assert sl["gap"] > 0.15 and sl["n_slice"] >= 100
            # the business metric before the episode vs during it, bucket for bucket
            t = x["window"]["event_time_ms"]
            b = x["business"]
            want_before = _span(bt, bv, t - BUSINESS_MS, t)
            want_during = _span(bt, bv, t, int(bt[-1]) + 1)
            assert (b["before"]["value"], b["before"]["n"]) == pytest.approx(want_before)
            assert (b["during"]["value"], b["during"]["n"]) == pytest.approx(want_during)
            assert b["during"]["value"] == 4.0 and b["before"]["value"] > 4.0
            assert "revenue (mean): 4 during the episode" in format_alert(x)
            fr_acc = {"slice": "country", "value": "fr", "metric": "accuracy",
                      "partition": str(part)}  # fmt: skip
            assert metric(url, "driftline_slice_model_metric", fr_acc) < pre - 0.1
            where = {"slice": "country", "value": "fr", "partition": str(part)}
            assert metric(url, "driftline_slice_firing", where) == 1
        last = {m["partition"]: m for m in mm}
        for m in last.values():
            assert set(m["slices"]["country"]["values"]) == {"de", "fr", "us", "br"}
            assert m["business"]["value"] == pytest.approx(7.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
