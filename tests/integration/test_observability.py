"""Observability on a real worker: /metrics through promtool and a real Prometheus server, the
/status page in headless Chromium, /status.json, ``driftline status`` and JSON logs.

One worker (``--log-format json``) serves every test of this module. It consumes a stream that
shifts at event K, produced in chunks while it runs, so its detectors' statistic history has
several readings and both detectors fire on both partitions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec, stop_process
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.chromium import run_chromium as _run_chromium
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

ROOT = Path(__file__).resolve().parents[2]
RULES_TEXT = (ROOT / "deploy/prometheus/rules.yml").read_text()
ARTIFACTS = ROOT / "test-artifacts"
N, K, CHUNKS = 24_000, 14_000, 6
STREAM = SyntheticStream(n=N, shift_at=K, seed=5, n_entities=200)
BAD = [
    (b"bad-1", b"{not json"),
    (b"bad-2", b'{"user_id": "u2", "ts": 1767225600000, "latency_ms": 1.5, "country": "de"}'),
]


@dataclass
class Worker:
    port: int
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    topic: str
    produced: int
    tmp: Path
    labels: int = 0  # label records sent (all joined)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read()


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, kcat: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("obs")
    uid = uuid.uuid4().hex[:10]
    data = named_ks_adwin_spec(f"obs-{uid}")
    port = free_port()
    data["worker"]["web_port"] = port
    data["worker"]["status_values"] = True  # the page's histograms (input values) shown
    data["labels"] = {"topic": f"obs-{uid}.labels", "time_field": "label_time_ms",
                      "count_window": 500}  # fmt: skip
    spec_path, _ = write_pipeline(tmp, data, kafka_bootstrap)
    topic = data["input"]["topic"]
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in STREAM.events()]
    step = len(lines) // CHUNKS
    chunks = [lines[i : i + step] for i in range(0, len(lines), step)]
    kcat_produce(kcat, kafka_bootstrap, topic, chunks[0] + [k + b"|" + v for k, v in BAD])

    log = tmp / "worker.log"
    proc = start_worker(spec_path, kafka_bootstrap, log, None, "--log-format", "json")
    w = Worker(port, f"http://127.0.0.1:{port}", proc, log, topic, N + len(BAD), tmp)
    try:
        wait_for_metric(
            w.url + "/metrics", "driftline_records_consumed_total", 1, proc, log, timeout_s=90
        )
        for chunk in chunks[1:]:  # the rest while it runs: the status history gets readings
            time.sleep(0.6)
            kcat_produce(kcat, kafka_bootstrap, topic, chunk)
        wait_for_metric(
            w.url + "/metrics", "driftline_records_consumed_total", w.produced, proc, log
        )
        # ground truth for every prediction, keyed like the events: live model metrics
        rng = np.random.default_rng(6)
        labels = []
        for r in read_topic(kafka_bootstrap, data["output"]["predictions_topic"], at_least=N):
            doc = orjson.loads(r.value)
            y = int(rng.random() < doc["score"])
            lab = {"prediction_id": doc["prediction_id"], "label": y,
                   "label_time_ms": doc["event_time_ms"] + 5_000}  # fmt: skip
            labels.append(doc["entity"].encode() + b"|" + orjson.dumps(lab))
        kcat_produce(kcat, kafka_bootstrap, data["labels"]["topic"], labels)
        w.labels = len(labels)
        wait_for_metric(w.url + "/metrics", JOINED[0], w.labels, proc, log, labels=JOINED[1])
        time.sleep(1.2)  # two more status samples after the last batch
        yield w
    finally:
        stop_process(proc, timeout_s=30)


# -- /metrics -------------------------------------------------------------------------------------
def test_metrics_scrape_passes_promtool_and_follows_naming_conventions(worker: Worker) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus"
    text = worker.get("/metrics")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip(), (r.stdout + r.stderr).decode()
    types: dict[str, str] = {}
    values: dict[str, dict[str, set[str]]] = {}
    for line in text.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            for k, v in (
                kv.split("=", 1)
                for kv in (line.split("{")[1].split("}")[0].split(",") if "{" in line else [])
            ):
                values.setdefault(name, {}).setdefault(k, set()).add(v)
    assert all(n.startswith("driftline_") for n in types), types
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name  # base unit
        assert not name.endswith(("_ms", "_milliseconds", "_created")), name
    # bounded labels: a few values each, never record ids, offsets or entities
    for name, labels in values.items():
        assert not set(labels) & {"entity", "offset", "user_id", "key"}, name
        for label, seen in labels.items():
            assert len(seen) <= 30, (name, label, len(seen))


# -- a real Prometheus server ---------------------------------------------------------------------
def _prom_get(base: str, path: str, **params: str) -> Any:
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{base}{path}?{q}", timeout=5) as r:
        doc = orjson.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]


def test_prometheus_scrapes_the_worker_and_loads_the_alert_rules(
    worker: Worker, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: apt-get install -y prometheus"
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {ROOT / 'deploy/prometheus/rules.yml'}\n"
        "scrape_configs:\n  - job_name: driftline\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{worker.port}']\n"
    )
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        got: list[Any] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                got = _prom_get(
                    base, "/api/v1/query", query="sum(driftline_records_consumed_total)"
                )["result"]
            except OSError:
                got = []
            if got:
                break
            time.sleep(0.3)
        assert got, f"Prometheus never scraped the worker:\n{log.read_text()[-3000:]}"
        assert float(got[0]["value"][1]) == worker.produced + worker.labels
        per_topic = _prom_get(base, "/api/v1/query", query="driftline_records_consumed_total")
        assert {r["metric"]["topic"] for r in per_topic["result"]} == {
            worker.topic, worker.topic.replace(".events", ".labels")
        }  # fmt: skip
        # live model quality, read back through Prometheus equals the worker's own value
        q = 'driftline_model_metric{metric="accuracy",window="last_500",partition="0"}'
        acc = _prom_get(base, "/api/v1/query", query=q)["result"]
        assert acc and float(acc[0]["value"][1]) == pytest.approx(
            metric(worker.url + "/metrics", "driftline_model_metric",
                   {"metric": "accuracy", "window": "last_500", "partition": "0"})
        )  # fmt: skip
        assert 0.5 < float(acc[0]["value"][1]) <= 1.0
        targets = _prom_get(base, "/api/v1/targets")["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        # the deploy's alert rules evaluate on the real series without errors
        deadline = time.monotonic() + 10
        while True:
            rules = [r for g in _prom_get(base, "/api/v1/rules")["groups"] for r in g["rules"]]
            if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules):
                if all(r["evaluationTime"] > 0 for r in rules) or time.monotonic() > deadline:
                    break
            assert time.monotonic() < deadline, rules
            time.sleep(0.3)
        # every rule of the shipped file (11 with DriftlineEstimatedPerformanceLow)
        assert len(rules) == RULES_TEXT.count("  - alert:") == 11
        assert all(r["health"] == "ok" for r in rules), rules
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode is not None


# -- /status.json and /status ---------------------------------------------------------------------
def test_status_json_reports_partitions_detectors_history_and_alerts(worker: Worker) -> None:
    st = orjson.loads(worker.get("/status.json"))
    url = worker.url + "/metrics"
    assert st["partitions"] == [0, 1]
    c = st["counters"]
    # consumed: the input topic's events; the labels topic's records apart
    assert c["consumed"] == worker.produced
    assert c["label_records"] == worker.labels
    total = worker.produced + worker.labels
    assert c["consumed"] + c["label_records"] == total
    assert total == metric(url, "driftline_records_consumed_total")
    assert c["dead_lettered"] == len(BAD)
    assert st["dead_letters_by_reason"] == {"invalid_json": 1, "missing_field": 1}
    assert c["alerts"] == metric(url, "driftline_alerts_total") >= 4
    keys = {(d["detector"], d["partition"]) for d in st["detectors"]}
    assert keys == {(n, p) for n in ("amount_ks", "latency_adwin") for p in (0, 1)}
    for d in st["detectors"]:
        assert d["firing"], d["detector"]  # the stream shifted for good
        assert len(d["history"]) >= 2, (d["detector"], d["history"])
        assert len(d["history"]) <= 300
        ts = [h[0] for h in d["history"]]
        assert ts == sorted(ts)
        if d["type"] == "ks":
            dist = d["distribution"]
            assert dist["n_reference"] == 2000 and dist["n_current"] == 2000
            assert sum(dist["reference"]) == pytest.approx(1.0)
            assert sum(dist["current"]) == pytest.approx(1.0)
            # the current window is shifted up: more of its mass in the upper half of the bins
            half = len(dist["edges"]) // 2
            assert sum(dist["current"][half:]) > sum(dist["reference"][half:]) + 0.1
        else:
            assert d["distribution"] is None
    assert st["alerts_firing"] == 4
    lat = st["latency"]
    assert lat["count"] == N
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"]
    assert len(st["recent_alerts"]) == c["alerts"]
    lines = [a["line"] for a in st["recent_alerts"]]
    assert any("amount_ks" in x and "FIRING" in x for x in lines), lines
    assert any("latency_adwin" in x and "FIRING" in x for x in lines), lines


def test_status_page_renders_in_headless_chromium(worker: Worker) -> None:
    url = worker.url + "/status"
    dom = _run_chromium(worker.tmp, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-3000:]
    html = dom.stdout
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    ), "the page must be self-contained"
    for name in ("amount_ks", "latency_adwin"):
        assert f'<span class="det-name">{name}</span>' in html
    assert html.count('class="badge firing"') == 4
    # a reference-vs-current plot per KS partition, statistic plots per detector, latency bars
    assert html.count('<svg class="plot dist"') == 2
    assert html.count('<svg class="plot series" data-detector="amount_ks"') == 2  # D and -log10 p
    assert html.count('<svg class="plot series" data-detector="latency_adwin"') == 1
    assert html.count('<svg class="plot latency"') == 1
    assert html.count('class="line"') >= 6  # one polyline per partition and plot
    alerts = [line for line in html.splitlines() if "alert-line" in line]
    assert html.count('<li class="alert-line firing">') >= 4, alerts
    assert "drift on amount by amount_ks" in html
    assert "drift on latency_ms by latency_adwin" in html
    assert "Model quality" in html and "last_500" in html

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shot = ARTIFACTS / "status.png"
    shot.unlink(missing_ok=True)
    r = _run_chromium(
        worker.tmp, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url
    )
    assert r.returncode == 0, r.stderr[-3000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


# -- driftline status -----------------------------------------------------------------------------
def test_driftline_status_summarises_the_running_worker(worker: Worker) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "status", "--url", worker.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    facts = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert facts["pipeline"].startswith("obs-")
    assert facts["partitions"] == "0, 1"
    assert facts["consumed"] == str(worker.produced)
    assert facts["label records"] == str(worker.labels)
    assert facts["labels"].startswith(f"joined {worker.labels}")
    assert facts["model p0 last_500"].startswith("n 500  accuracy 0.")
    assert facts["dead letters"] == "2 (invalid_json 1, missing_field 1)"
    assert facts["alerts firing"].startswith("4 (")
    assert "amount_ks[amount] p0" in facts["alerts firing"]
    assert facts["latency"].startswith("p50 ") and " p99 " in facts["latency"]
    down = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "status",
            "--url",
            f"http://127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 1  # failed while running (2 is for usage and config errors)
    assert "cannot read the worker status" in down.stderr


# -- logs -----------------------------------------------------------------------------------------
def test_worker_logs_one_json_object_per_line(worker: Worker) -> None:
    lines = [x for x in worker.log.read_text().splitlines() if x.strip()]
    assert len(lines) > 10
    docs = [orjson.loads(x) for x in lines]  # every line is one JSON object
    for d in docs:
        assert {"ts", "level", "logger", "message"} <= set(d), d
    dead = [d for d in docs if d["message"].startswith("dead-lettered")]
    assert {d["offset"] for d in dead} and all(d["topic"] == worker.topic for d in dead), dead
    assert len(dead) == len(BAD) and all(d["partition"] in (0, 1) for d in dead)
    drift = [
        d for d in docs if d["logger"] == "driftline.runner" and "drift firing" in d["message"]
    ]
    assert drift and all({"partition", "offset"} <= set(d) for d in drift)
    assert any(d["logger"].startswith("faust") or d["logger"].startswith("mode") for d in docs)
