"""The compose stack's files, validated as far as a machine without a Docker engine can."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agents.metrics import WorkerMetrics
from driftline.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_stack(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {"kafka", "topics", "worker", "producer", "prometheus", "grafana"}
    assert services["grafana"]["image"].startswith("grafana/grafana-oss:")
    assert services["kafka"]["image"].startswith("apache/kafka:4.1.1")
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["build"] == "."
    assert "--bootstrap" in services["worker"]["command"]
    assert services["producer"]["command"][0] == "produce-synthetic"


def test_files_the_stack_mounts_exist_and_are_valid(compose: dict) -> None:
    for vol in compose["services"]["prometheus"]["volumes"]:
        assert (ROOT / vol.split(":")[0]).is_file(), vol
    for vol in compose["services"]["grafana"]["volumes"]:
        assert (ROOT / vol.split(":")[0]).is_dir(), vol
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY --from"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), line
    spec = load_spec(ROOT / "deploy" / "pipeline.toml")
    assert spec.input.topic == "driftline.demo.events"
    topics_cmd = compose["services"]["topics"]["command"][0]
    for t in (
        spec.input.topic,
        spec.output.features_topic,
        spec.output.alerts_topic,
        spec.output.predictions_topic,
        spec.output.dlq_topic,
    ):
        assert t in topics_cmd


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does this)")
    return path


def _promtool(promtool: str, *args: str) -> str:
    r = subprocess.run(
        [promtool, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT / "deploy/prometheus",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_prometheus_config_passes_promtool(promtool: str) -> None:
    out = _promtool(promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml"))
    assert "1 rule files found" in out, out  # the alert rules are wired in


RULES = ROOT / "deploy/prometheus/rules.yml"
RULES_TEST = ROOT / "deploy/prometheus/rules_test.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/driftline.json"


def test_alert_rules_pass_promtool_check_and_their_unit_tests(promtool: str) -> None:
    assert "SUCCESS: 5 rules found" in _promtool(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in _promtool(promtool, "test", "rules", str(RULES_TEST))


def test_every_alert_rule_is_unit_tested_firing_and_not_firing() -> None:
    names = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert set(names) == {
        "DriftlineDriftFiring",
        "DriftlineDeadLetterRateHigh",
        "DriftlineConsumerLagGrowing",
        "DriftlineNoEventsConsumed",
        "DriftlineLatencyP99OverBudget",
    }
    cases = [
        c for t in yaml.safe_load(RULES_TEST.read_text())["tests"] for c in t["alert_rule_test"]
    ]
    for name in names:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays quiet"


def exported_metric_names() -> set[str]:
    """Every sample name a worker can export (families from its registry, with suffixes)."""
    names: set[str] = set()
    for fam in WorkerMetrics("p").registry.collect():
        if fam.type == "counter":
            names.add(f"{fam.name}_total")
        elif fam.type == "histogram":
            names.update(f"{fam.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(fam.name)
    return names


def metric_names_in(promql: str) -> set[str]:
    return set(re.findall(r"\bdriftline_[a-z0-9_]+", promql))


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]
    ]


def test_dashboard_and_rules_query_only_metrics_the_worker_exports() -> None:
    exported = exported_metric_names()
    assert "driftline_records_consumed_total" in exported
    assert "driftline_record_latency_seconds_bucket" in exported
    queries = dashboard_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        used = metric_names_in(expr)
        assert used, f"panel {title!r} queries no driftline metric: {expr}"
        assert used <= exported, f"panel {title!r}: {used - exported} are not exported"
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            assert metric_names_in(r["expr"]) <= exported, r["alert"]


def test_dashboard_shows_what_operators_need() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(e for _, e in dashboard_queries())
    for q in ("0.5", "0.9", "0.95", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(driftline_record_latency_seconds" in exprs
        )
    for needle in (
        "driftline_stage_duration_seconds",
        "driftline_drift_statistic",
        "driftline_drift_p_value",
        "sum by (kind, status) (increase(driftline_alerts_total",
        "sum by (reason) (rate(driftline_records_dead_lettered_total",
        "driftline_consumer_lag_records",
        "driftline_predictions_total",
    ):
        assert needle in exprs, needle
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    uid = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in dash["panels"] if p["type"] != "row")


def test_grafana_provisioning_matches_the_compose_mounts(compose: dict) -> None:
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    prov = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/driftline.yml").read_text()
    )
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    env = compose["services"]["grafana"]["environment"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()
    ds = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    prom_mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert prom_mounts["./deploy/prometheus/rules.yml"] == "/etc/prometheus/rules.yml"
