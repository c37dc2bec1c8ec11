"""The shipped alert rules fire on a real worker: a real Prometheus scrapes it and evaluates
``deploy/prometheus/rules.yml`` as shipped, and a real Alertmanager delivers the alert to a
webhook receiver the test runs.

The worker reads a stream without drift first: every detector's ``driftline_drift_firing``
series is in Prometheus at 0 and ``DriftlineDriftFiring`` is inactive. Then the stream shifts:
the detectors' episodes open, the rule goes pending, then firing (``for: 1m``), and
Alertmanager posts it to the webhook with the pipeline, detector and target labels.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec, stop_process
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.kafka_helpers import kcat_produce, metric, start_worker, wait_for_metric, write_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules.yml"
N, K = 18_000, 10_000  # events; the shift at K (5,000 per partition before it)
STREAM = SyntheticStream(n=N, shift_at=K, seed=8, n_entities=200)
DETECTORS = {"amount_ks": "amount", "latency_adwin": "latency_ms"}  # the demo spec's


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is missing: apt-get install -y {package} (.ci/run and make system-deps "
            "install it)"
        )
    return path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return orjson.loads(r.read())


def _wait(what: str, check: Callable[[], Any], timeout_s: float, logs: list[Path]) -> Any:
    """``check()`` until it returns something truthy; fail naming ``what`` (with the logs'
    tails) when ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as e:  # a server still starting
            last = e
        if last and not isinstance(last, OSError):
            return last
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what} within {timeout_s}s (last: {last!r})\n{tails}")


@dataclass
class Webhook:
    """An Alertmanager webhook receiver: every notification posted to it, in order."""

    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for n in self.received for a in n["alerts"]]


def _serve_webhook() -> tuple[Webhook, http.server.ThreadingHTTPServer]:
    hook = Webhook(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with hook.lock:
                hook.received.append(orjson.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", hook.port), Handler)
    threading.Thread(target=server.serve_forever, name="webhook", daemon=True).start()
    return hook, server


@dataclass
class Stack:
    pipeline: str
    topic: str
    worker_url: str
    worker: subprocess.Popen[bytes]
    prometheus: str
    alertmanager: str
    hook: Webhook
    logs: list[Path]

    def prom(self, path: str, **params: str) -> Any:
        q = urllib.parse.urlencode(params)
        doc = _get(f"{self.prometheus}{path}?{q}")
        assert doc["status"] == "success", doc
        return doc["data"]

    def rule(self, name: str) -> dict[str, Any]:
        rules = [r for g in self.prom("/api/v1/rules")["groups"] for r in g["rules"]]
        (rule,) = [r for r in rules if r["name"] == name]
        return rule

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [
            a for a in self.prom("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name
        ]


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, kcat: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prometheus = _binary("prometheus", "prometheus")
    alertmanager = _binary("prometheus-alertmanager", "prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("alerting")
    name = f"alerting-{uuid.uuid4().hex[:10]}"
    data = named_ks_adwin_spec(name)
    web_port = free_port()
    data["worker"]["web_port"] = web_port
    spec_path, _ = write_pipeline(tmp, data, kafka_bootstrap)
    topic = data["input"]["topic"]
    events = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in STREAM.events()]
    kcat_produce(kcat, kafka_bootstrap, topic, events[:K])  # no drift yet

    hook, server = _serve_webhook()
    am_port, prom_port = free_port(), free_port()
    (tmp / "alertmanager.yml").write_text(
        "route:\n  receiver: hook\n  group_by: [alertname, pipeline, detector, target]\n"
        "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n  - name: hook\n    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{hook.port}/hook\n        send_resolved: true\n"
    )
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "alerting:\n  alertmanagers:\n    - static_configs:\n"
        f"        - targets: ['127.0.0.1:{am_port}']\n"
        "scrape_configs:\n  - job_name: driftline\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{web_port}']\n"
    )
    logs = [tmp / "worker.log", tmp / "prometheus.log", tmp / "alertmanager.log"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            _start(
                [
                    alertmanager,
                    f"--config.file={tmp / 'alertmanager.yml'}",
                    f"--storage.path={tmp / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",  # no gossip port: a single, private instance
                ],
                logs[2],
            )
        )
        worker = start_worker(spec_path, kafka_bootstrap, logs[0])
        procs.append(worker)
        procs.append(
            _start(
                [
                    prometheus,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                logs[1],
            )
        )
        s = Stack(
            name, topic, f"http://127.0.0.1:{web_port}", worker,
            f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", hook, logs,
        )  # fmt: skip
        wait_for_metric(
            s.worker_url + "/metrics", "driftline_records_consumed_total", K, worker, logs[0],
            timeout_s=120,
        )  # fmt: skip
        _wait("Alertmanager ready", lambda: urllib.request.urlopen(
            f"{s.alertmanager}/-/ready", timeout=5).status == 200, 30, logs)  # fmt: skip
        yield s
    finally:
        for p in reversed(procs):
            stop_process(p, timeout_s=20)
        server.shutdown()
        server.server_close()
    assert all(p.returncode is not None for p in procs)


def _firing_series(s: Stack) -> dict[tuple[str, str, str], float]:
    got = s.prom("/api/v1/query", query="driftline_drift_firing")["result"]
    return {
        (r["metric"]["detector"], r["metric"]["target"], r["metric"]["partition"]): float(
            r["value"][1]
        )
        for r in got
    }


def test_drift_firing_alert_is_quiet_before_the_shift_and_delivered_after(
    stack: Stack, kafka_bootstrap: str, kcat: str
) -> None:
    s = stack
    want = {(d, t, p): 0.0 for d, t in DETECTORS.items() for p in ("0", "1")}
    # before any drift: every detector's gauge is scraped at 0, and so is the firing counter
    _wait("Prometheus scraping every detector's driftline_drift_firing at 0",
          lambda: _firing_series(s) == want, 60, s.logs)  # fmt: skip
    counted = s.prom("/api/v1/query", query='sum(driftline_alerts_total{status="firing"})')[
        "result"
    ]
    assert [float(r["value"][1]) for r in counted] == [0.0]
    # the rule has been evaluated on those series (after they appeared) and is inactive
    seen_at = time.time()
    _wait(
        "DriftlineDriftFiring evaluated on the scraped gauge",
        lambda: _evaluated_after(s.rule("DriftlineDriftFiring"), seen_at + 2),
        30,
        s.logs,
    )
    rule = s.rule("DriftlineDriftFiring")
    assert (rule["health"], rule["state"]) == ("ok", "inactive"), rule
    assert s.alerts("DriftlineDriftFiring") == []
    assert metric(s.worker_url + "/metrics", "driftline_drift_firing") == 0
    assert not [a for a in s.hook.alerts() if a["labels"]["alertname"] == "DriftlineDriftFiring"]

    # the shift: the episodes open, the rule goes pending, then fires after its `for: 1m`
    events = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in STREAM.events()]
    shifted_at = time.monotonic()
    kcat_produce(kcat, kafka_bootstrap, s.topic, events[K:])
    wait_for_metric(
        s.worker_url + "/metrics", "driftline_drift_firing", 1, s.worker, s.logs[0], timeout_s=90
    )
    firing = _wait(
        "DriftlineDriftFiring firing in Prometheus",
        lambda: [a for a in s.alerts("DriftlineDriftFiring") if a["state"] == "firing"],
        150,
        s.logs,
    )
    fired_after_s = time.monotonic() - shifted_at
    assert fired_after_s >= 60  # not before its `for`
    for a in firing:
        lab = a["labels"]
        assert lab["pipeline"] == s.pipeline and lab["severity"] == "warning", lab
        assert DETECTORS[lab["detector"]] == lab["target"], lab
        assert 1 <= float(a["value"]) <= 2  # partitions with the episode open
        assert set(lab) == {"alertname", "severity", "pipeline", "detector", "target"}
    # Alertmanager delivered it to the webhook, with the same labels
    delivered = _wait(
        "Alertmanager posting DriftlineDriftFiring to the webhook",
        lambda: [
            a
            for a in s.hook.alerts()
            if a["labels"]["alertname"] == "DriftlineDriftFiring" and a["status"] == "firing"
        ],
        60,
        s.logs,
    )
    assert {(a["labels"]["detector"], a["labels"]["target"]) for a in delivered} <= set(
        DETECTORS.items()
    )
    assert all(a["labels"]["pipeline"] == s.pipeline for a in delivered)
    assert all(
        a["annotations"]["summary"]
        == f"drift on {a['labels']['target']} detected by {a['labels']['detector']}"
        for a in delivered
    )
    notes = s.hook.received
    assert all(n["receiver"] == "hook" and n["version"] == "4" for n in notes)
    # the drift goes on: still firing (no resolve sent), and nothing else fires
    assert not [a for a in s.hook.alerts() if a["status"] == "resolved"]
    other = [
        a["labels"]["alertname"]
        for a in s.prom("/api/v1/alerts")["alerts"]
        if a["state"] == "firing" and a["labels"]["alertname"] != "DriftlineDriftFiring"
    ]
    assert other == []
    print(f"DriftlineDriftFiring fired {fired_after_s:.0f}s after the shift was produced")


def _evaluated_after(rule: dict[str, Any], t: float) -> bool:
    """Whether ``rule`` was last evaluated after epoch ``t`` (its RFC 3339 lastEvaluation)."""
    last = rule.get("lastEvaluation", "")
    if not last.startswith("2"):
        return False
    head, _, rest = last.partition(".")  # no fraction: Python reads up to microseconds
    zone = rest.lstrip("0123456789").replace("Z", "+00:00")
    return datetime.fromisoformat(head + zone).timestamp() >= t
