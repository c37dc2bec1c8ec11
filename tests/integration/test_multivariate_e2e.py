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
from driftline.localkafka import free_port
from driftline.schemas import validate
from driftline.spec import load_spec
from tests.kafka_helpers import kcat_produce, metric, read_topic, start_worker, wait_for_metric
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


def test_flip_raises_multivariate_alerts_and_no_univariate_one(
    kafka_bootstrap: str, kcat: str, tmp_path: Path
) -> None:
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
    ensure_topics(kafka_bootstrap, [spec.input.topic], partitions=2)
    events = flip_events(BEFORE, AFTER, seed=5)
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic,
                 [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events])  # fmt: skip

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
