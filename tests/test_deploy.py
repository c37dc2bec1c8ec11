"""The compose stack's files, validated as far as a machine without a Docker engine can."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from driftline.agents.metrics import LABEL_COUNTERS, STAGES, WorkerMetrics
from driftline.schemas import load_schema
from driftline.spec import load_spec
from driftline.streams.model_metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_stack(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {
        "kafka", "topics", "worker", "producer", "labeller", "prometheus", "grafana"
    }  # fmt: skip
    assert services["grafana"]["image"].startswith("grafana/grafana-oss:")
    assert services["kafka"]["image"].startswith("apache/kafka:4.1.1")
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["build"] == "."
    assert "--bootstrap" in services["worker"]["command"]
    assert services["producer"]["command"][0] == "produce-synthetic"
    assert services["labeller"]["command"][:3] == [
        "label-synthetic",
        "-c",
        "/etc/driftline/pipeline.toml",
    ]


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
    assert spec.labels is not None  # the labeller's labels give the model-quality panels data
    for t in (spec.input.topic, spec.labels.topic, *spec.output.all_topics):
        assert t in topics_cmd.replace(";", " ").split(), t


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
    assert "SUCCESS: 8 rules found" in _promtool(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in _promtool(promtool, "test", "rules", str(RULES_TEST))


def test_every_alert_rule_is_unit_tested_firing_and_not_firing() -> None:
    names = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert set(names) == {
        "DriftlineDriftFiring",
        "DriftlineDeadLetterRateHigh",
        "DriftlineConsumerLagGrowing",
        "DriftlineNoEventsConsumed",
        "DriftlineLatencyP99OverBudget",
        "DriftlineModelAccuracyLow",
        "DriftlineConceptDriftFiring",
        "DriftlineLabelsNotJoining",
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


def exported_metric_labels() -> dict[str, set[str]]:
    """Every sample name a worker can export -> the label names it can carry (with the scrape's
    job and instance)."""
    wm = WorkerMetrics("p")
    for m in vars(wm).values():
        if isinstance(m, MetricWrapperBase) and m._labelnames:
            m.labels(*m._labelnames)  # one child each, so that every family has samples
    labels: dict[str, set[str]] = {}
    for fam in wm.registry.collect():
        for s in fam.samples:
            labels.setdefault(s.name, {"job", "instance"}).update(s.labels)
    return labels


def known_label_values() -> dict[str, set[str]]:
    """Labels whose values the worker takes from a closed set."""
    alert = load_schema("alert")["properties"]
    return {
        "kind": set(alert["kind"]["enum"]),
        "status": set(alert["status"]["enum"]),
        "reason": set(load_schema("dead_letter")["properties"]["reason"]["enum"]),
        "outcome": {"joined", *LABEL_COUNTERS},
        "metric": {*CLASSIFICATION_METRICS, *REGRESSION_METRICS},
        "stage": set(STAGES),
        "path": set(WorkerMetrics("p").latency),
        "join": {"labels"},
    }


def metric_names_in(promql: str) -> set[str]:
    return set(re.findall(r"\bdriftline_[a-z0-9_]+", promql))


def label_problems(promql: str, labels: dict[str, set[str]], values: dict[str, set[str]]) -> list:
    """Selectors on labels a metric does not have or on values it never takes, and groupings by
    labels none of the query's metrics has."""
    problems = []
    for name, body in re.findall(r"\b(driftline_[a-z0-9_]+)\{([^}]*)\}", promql):
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body):
            if label not in labels.get(name, set()):
                problems.append(f"{name} has no label {label}")
            elif label in values:
                regex = "~" in op
                for alt in value.split("|") if regex else [value]:
                    pattern = alt if regex else re.escape(alt)
                    if not any(re.fullmatch(pattern, v) for v in values[label]):
                        problems.append(f"{name}{{{label}}} never takes {alt!r}")
    used = set().union(*(labels.get(n, set()) for n in metric_names_in(promql))) | {"le"}
    clauses = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
    for clause in re.findall(clauses, promql):
        for label in filter(None, (x.strip() for x in clause.split(","))):
            if label not in used:
                problems.append(f"no metric of the query has label {label}")
    return problems


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]
    ]


def test_dashboard_and_rules_query_only_metrics_the_worker_exports() -> None:
    exported = exported_metric_names()
    assert exported >= {
        "driftline_records_consumed_total",
        "driftline_record_latency_seconds_bucket",
        "driftline_model_metric",
        "driftline_label_join_outcomes_total",
        "driftline_labels_forwarded_total",
        "driftline_label_delay_seconds_bucket",
        "driftline_feature_importance_share",
        "driftline_online_learned_examples_total",
    }
    labels = exported_metric_labels()
    assert set(labels) == exported
    values = known_label_values()
    queries = dashboard_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        used = metric_names_in(expr)
        assert used, f"panel {title!r} queries no driftline metric: {expr}"
        assert used <= exported, f"panel {title!r}: {used - exported} are not exported"
        problems = label_problems(expr, labels, values)
        assert not problems, f"panel {title!r}: {problems}"
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            assert metric_names_in(r["expr"]) <= exported, r["alert"]
            problems = label_problems(r["expr"], labels, values)
            assert not problems, f"{r['alert']}: {problems}"


def test_the_label_checks_catch_typos() -> None:
    labels, values = exported_metric_labels(), known_label_values()
    assert labels["driftline_model_metric"] == {"job", "instance", "metric", "window", "partition"}
    ok = 'sum by (outcome) (driftline_label_join_outcomes_total{outcome="joined"})'
    assert label_problems(ok, labels, values) == []
    assert label_problems('driftline_label_join_outcomes_total{outcomes="joined"}', labels, values)
    assert label_problems('driftline_label_join_outcomes_total{outcome="join"}', labels, values)
    assert label_problems('driftline_alerts_total{kind=~"concept|drift"}', labels, values)
    assert label_problems("sum by (feature) (driftline_model_metric)", labels, values)
    regexes = 'driftline_model_metric{metric=~"acc.*",window=~"last_.+"}'
    assert label_problems(regexes, labels, values) == []


def test_every_exported_metric_has_a_panel() -> None:
    exprs = " ".join(e for _, e in dashboard_queries())
    families = {fam.name for fam in WorkerMetrics("p").registry.collect()}
    assert {
        f for f in families if not re.search(rf"\b{f}(_total|_bucket|_sum|_count)?\b", exprs)
    } == set()


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _promtool(promtool, "check", "rules", str(path))


def _panel_exprs(title: str) -> list[str]:
    exprs = [e for t, e in dashboard_queries() if t == title]
    assert exprs, title
    return exprs


def test_model_quality_panels_pool_partitions_weighted_by_n(promtool: str, tmp_path: Path) -> None:
    """The dashboard's own queries, evaluated by promtool on partitions with different n, one of
    them without labels yet (NaN), and AUC undefined on one partition (a single class)."""
    (cls,) = _panel_exprs("Model quality: classifier (accuracy, F1, AUC) per window")
    mae, rmse = _panel_exprs("Model quality: regressor (MAE, RMSE) per window")
    (shares,) = _panel_exprs("Feature importance share by feature")
    nan = " ".join(["NaN"] * 6)

    def mm(metric: str, window: str, partition: int, values: str) -> dict[str, str]:
        return {
            "series": f'driftline_model_metric{{job="d",instance="w{partition % 2}:6066",'
            f'metric="{metric}",window="{window}",partition="{partition}"}}',
            "values": values,
        }

    series = [
        mm("n", "last_1000", 0, "1000x5"), mm("accuracy", "last_1000", 0, "0.9x5"),
        mm("auc", "last_1000", 0, "0.8x5"),
        mm("n", "last_1000", 1, "500x5"), mm("accuracy", "last_1000", 1, "0.6x5"),
        mm("auc", "last_1000", 1, nan),
        mm("n", "last_1000", 2, "0x5"), mm("accuracy", "last_1000", 2, nan),
        mm("auc", "last_1000", 2, nan),
        mm("n", "3600s", 0, "10x5"), mm("accuracy", "3600s", 0, "0.5x5"),
        mm("n", "last_1000", 3, "100x5"), mm("mae", "last_1000", 3, "2x5"),
        mm("rmse", "last_1000", 3, "3x5"),
        mm("n", "last_1000", 4, "300x5"), mm("mae", "last_1000", 4, "1x5"),
        mm("rmse", "last_1000", 4, "1x5"),
    ] + [
        {
            "series": f'driftline_feature_importance_share{{job="d",instance="w0:6066",'
            f'feature="amount",partition="{p}"}}',
            "values": v,
        }
        for p, v in ((0, "0.25x5"), (1, "0.75x5"), (2, nan))
    ]  # fmt: skip

    def case(expr: str, *samples: tuple[str, float]) -> dict:
        return {
            "expr": expr,
            "eval_time": "2m",
            "exp_samples": [{"labels": lab, "value": v} for lab, v in samples],
        }

    tests = [
        case(
            cls,
            ('{metric="accuracy",window="last_1000"}', (0.9 * 1000 + 0.6 * 500) / 1500),
            ('{metric="auc",window="last_1000"}', 0.8),
            ('{metric="accuracy",window="3600s"}', 0.5),
        ),
        case(mae, ('{metric="mae",window="last_1000"}', (2 * 100 + 1 * 300) / 400)),
        case(rmse, ('{window="last_1000"}', ((9 * 100 + 1 * 300) / 400) ** 0.5)),
        case(shares, ('{feature="amount"}', 0.5)),
    ]
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert "SUCCESS" in _promtool(promtool, "test", "rules", str(path))


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
    for q in ("0.5", "0.9", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(driftline_label_delay_seconds_bucket"
            in exprs
        )
    for needle in (
        'ignoring (metric) group_left driftline_model_metric{metric="n"}',
        'driftline_model_metric{metric=~"accuracy|f1|auc"}',
        'driftline_model_metric{metric="mae"}',
        'driftline_model_metric{metric="rmse"}',
        "sum by (outcome) (rate(driftline_label_join_outcomes_total",
        "avg by (feature) (driftline_feature_importance_share",
        'increase(driftline_alerts_total{kind=~"concept|label|importance"}',
        "rate(driftline_online_learned_examples_total",
        "rate(driftline_labels_forwarded_total",
        "sum by (topic) (rate(driftline_records_consumed_total",  # input and labels topics
    ):
        assert needle in exprs, needle
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    rows = [i for i, p in enumerate(panels) if p["type"] == "row"]
    model_row = next(i for i in rows if panels[i]["title"] == "Model quality")
    end = min([i for i in rows if i > model_row], default=len(panels))
    assert {p["title"] for p in panels[model_row + 1 : end]} >= {
        "Model quality: classifier (accuracy, F1, AUC) per window",
        "Model quality: regressor (MAE, RMSE) per window",
        "Label join outcomes per second",
        "Label delay (p50/p90/p99)",
        "Feature importance share by feature",
        "Concept, label and importance alerts",
        "Online learning: examples learnt per second",
    }
    # panels stay on the 24-column grid and never overlap; each row sits above its panels
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[x, y]!r}"
                cells[x, y] = p["title"]
    for i, j in zip(rows, [*rows[1:], len(panels)], strict=True):
        top = panels[i]["gridPos"]["y"] + 1
        assert all(p["gridPos"]["y"] >= top for p in panels[i + 1 : j]), panels[i]["title"]
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
