"""The compose stack's files, validated as far as a machine without a Docker engine can."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
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
    assert "SUCCESS: 11 rules found" in _promtool(promtool, "check", "rules", str(RULES))
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
        "DriftlineEstimatedPerformanceLow",
        "DriftlineLabelsNotJoining",
        "DriftlineWorkerDown",
        "DriftlineCommitsStalled",
    }
    cases = [
        c for t in yaml.safe_load(RULES_TEST.read_text())["tests"] for c in t["alert_rule_test"]
    ]
    for name in names:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays quiet"


def test_rule_tests_start_their_series_absent() -> None:
    """As in a real scrape: no series exists before its worker's first scrape (nor, for a
    detector, before its partition is assigned)."""
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    values = [s["values"] for t in tests for s in t["input_series"]]
    assert len(values) >= 40
    assert [v for v in values if not v.startswith("_")] == []


#: DriftlineDriftFiring as shipped before driftline_drift_firing: firing alerts counted over 15
#: minutes. A counter series is born at its first increment, so increase() never saw it.
OLD_DRIFT_RULE = (
    'sum by (job, kind, detector) (increase(driftline_alerts_total{status="firing",'
    'kind!="concept"}[15m])) > 0'
)


def _drift_rule() -> dict:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    (rule,) = [r for r in rules if r["alert"] == "DriftlineDriftFiring"]
    return {k: v for k, v in rule.items() if k != "annotations"}


def _series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f'{name}{{job="driftline",instance="w1:6066",{labels}}}', "values": values}


def _case(at: str, alert: str, fires: bool) -> dict:
    labels = (
        {"severity": "warning", "job": "driftline", "kind": "covariate", "detector": "amount_ks"}
        if alert == "Old"
        else {"severity": "warning", "pipeline": "p", "detector": "amount_ks", "target": "amount"}
    )
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [{"exp_labels": labels}] if fires else [],
    }


KS_ALERTS = 'kind="covariate",detector="amount_ks",status="firing"'
KS_FIRING = 'detector="amount_ks",target="amount"'


@pytest.mark.parametrize(
    ("alerts_total", "firing", "cases"),
    [
        # the run: the counter's series appeared at its first increment (already 3),
        # so the old rule never fired; the gauge existed at 0 before the episode opened
        ('_x5 3x60', ["_x2 0x3 1x60"],
         [("10m", "Old", False), ("30m", "Old", False), ("10m", "New", True),
          ("30m", "New", True)]),
        # counters created at 0: the old rule fires, but calls a drift that goes on over after
        # 15 minutes; the gauge stays 1 while the episode is open, then resolves
        ('_x2 0x3 1x60', ["_x2 0x3 1x40 0x20"],
         [("10m", "Old", True), ("30m", "Old", False), ("10m", "New", True),
          ("30m", "New", True), ("40m", "New", True), ("50m", "New", False)]),
        # before the episode: quiet; a one-minute blip (shorter than `for`) never fires
        ('_x2 0x60', ["_x2 0x10 1 0x50"],
         [("5m", "New", False), ("12m", "New", False), ("14m", "New", False)]),
        # a rebalance: the only firing partition's series is stale for one scrape; without
        # keep_firing_for the alert would resolve and page again
        ('_x2 0x3 1x60', ["_x2 0x3 1x10 stale 1x40"],
         [("17m", "New", True), ("17m", "NoKeep", False), ("16m", "NoKeep", True),
          ("25m", "New", True)]),
    ],
)  # fmt: skip
def test_the_drift_rule_fires_while_the_episode_is_open_where_the_old_one_did_not(
    promtool: str, tmp_path: Path, alerts_total: str, firing: list[str], cases: list
) -> None:
    new = _drift_rule()
    assert new["for"] == "1m" and new["keep_firing_for"] == "2m"
    no_keep = {k: v for k, v in new.items() if k != "keep_firing_for"}
    rules = [
        {"alert": "Old", "expr": OLD_DRIFT_RULE, "labels": {"severity": "warning"}},
        {**new, "alert": "New"},
        {**no_keep, "alert": "NoKeep"},
    ]
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "compare", "rules": rules}]})
    )
    series = [
        _series("driftline_pipeline_info", 'pipeline="p"', "_x2 1x70"),
        _series("driftline_alerts_total", KS_ALERTS, alerts_total),
        *(_series("driftline_drift_firing", f'{KS_FIRING},partition="0"', v) for v in firing),
    ]
    test = {
        "rule_files": [str(tmp_path / "rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [_case(*c) for c in cases],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    assert "SUCCESS" in _promtool(promtool, "test", "rules", str(tmp_path / "test.yml"))


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
            # process: the label `driftline worker --processes N`'s one /metrics page adds
            labels.setdefault(s.name, {"job", "instance", "process"}).update(s.labels)
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


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, query) of every panel, as stored: with the template variables."""
    dash = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]
    ]


#: A selector's matcher on a template variable, e.g. ``instance=~"$instance"``.
VARIABLE_MATCHER = re.compile(r',?\s*\w+\s*=~\s*"\$\{?\w+\}?"')


def without_variables(promql: str) -> str:
    """The query as it computes with every variable at "All": its variable matchers removed."""
    return VARIABLE_MATCHER.sub("", promql).replace("{,", "{").replace("{}", "")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query) of every panel, without the variable matchers."""
    return [(title, without_variables(expr)) for title, expr in dashboard_targets()]


def interpolate(promql: str, values: dict[str, str]) -> str:
    """Grafana's substitution of ``$name`` / ``${name}`` (values are regex alternatives, as
    Grafana formats multi-value and "All" selections for Prometheus)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], promql)


def _variables() -> dict[str, dict]:
    return {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}


def _query_of(variable: dict) -> str:
    """A query variable's ``label_values(selector, label)`` as the PromQL selector it reads."""
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
    assert m is not None, variable["query"]
    return m.group(1)


def test_dashboard_variables_choose_datasource_pipeline_worker_and_partition() -> None:
    v = _variables()
    assert list(v) == ["datasource", "pipeline", "instance", "partition"]
    assert (v["datasource"]["type"], v["datasource"]["query"]) == ("datasource", "prometheus")
    queries = {
        "pipeline": "label_values(driftline_pipeline_info, pipeline)",
        "instance": 'label_values(driftline_pipeline_info{pipeline=~"$pipeline"}, instance)',
        "partition": "label_values(driftline_consumer_lag_records"
        '{instance=~"$instance"}, partition)',
    }
    labels, values = exported_metric_labels(), known_label_values()
    for name, query in queries.items():
        var = v[name]
        assert var["type"] == "query" and var["query"]["query"] == var["definition"] == query
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert var["multi"] and var["includeAll"], name
        assert label_problems(_query_of(var), labels, values) == [], name
        label = query.rsplit(", ", 1)[1].rstrip(")")
        (metric,) = metric_names_in(query)
        assert label in labels[metric], (name, metric)
    # "All" workers are the chosen pipelines' workers (Grafana lists them: no custom all value);
    # "All" partitions match every partition label
    assert "allValue" not in v["instance"] and v["partition"]["allValue"] == ".*"


def test_every_panel_query_filters_by_the_variables() -> None:
    """Each selector of a driftline metric keeps the chosen workers, and the chosen partitions
    or pipelines where the metric has that label."""
    labels = exported_metric_labels()
    checked = 0
    for title, expr in dashboard_targets():
        for name, body in re.findall(r"\b(driftline_[a-z0-9_]+)(\{[^}]*\})?", expr):
            assert 'instance=~"$instance"' in body, (title, name)
            for label in ("partition", "pipeline"):
                want = f'{label}=~"${label}"' in body
                assert want == (label in labels[name]), (title, name, label)
            checked += 1
    assert checked >= 50
    assert without_variables('m{a="1",instance=~"$instance",partition=~"$partition"}') == 'm{a="1"}'
    assert without_variables('m{instance=~"$instance"}[5m]') == "m[5m]"


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
    queries = dashboard_targets()  # with the variable matchers: their labels must exist too
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
    assert labels["driftline_model_metric"] == {
        "job", "instance", "process", "metric", "window", "partition"
    }
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
    stored = [e for _, e in dashboard_targets()]  # as stored, and as Grafana sends them
    chosen = {"instance": "w0:6066|w1:6066", "pipeline": "a|b", "partition": "0|3"}
    exprs = (
        stored + [interpolate(e, ALL) for e in stored] + [interpolate(e, chosen) for e in stored]
    )
    exprs += [_query_of(v) for v in _variables().values() if v["type"] == "query"]
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _promtool(promtool, "check", "rules", str(path))


#: What Grafana sends for every variable at "All": instance lists the workers it found (no
#: custom all value), partition's all value is ".*".
ALL = {"instance": "w0:6066|w1:6066", "pipeline": "p", "partition": ".*"}


def _panel_exprs(title: str, values: dict[str, str] | None = None) -> list[str]:
    """The panel's queries as Grafana sends them (every variable at "All" by default)."""
    exprs = [
        interpolate(e, {**ALL, **(values or {})}) for t, e in dashboard_targets() if t == title
    ]
    assert exprs, title
    return exprs


def test_model_quality_panels_pool_partitions_weighted_by_n(promtool: str, tmp_path: Path) -> None:
    """The dashboard's own queries, evaluated by promtool on partitions with different n, one of
    them without labels yet (NaN), and AUC undefined on one partition (a single class)."""
    (cls,) = _panel_exprs("Model quality: classifier (accuracy, F1, AUC) per window")
    mae, rmse = _panel_exprs("Model quality: regressor (MAE, RMSE) per window")
    (shares,) = _panel_exprs("Feature importance share by feature")
    # the same panels with a partition, or a worker, chosen in the dashboard's variables
    (cls_p1,) = _panel_exprs(
        "Model quality: classifier (accuracy, F1, AUC) per window", {"partition": "1"}
    )
    mae_w0, _ = _panel_exprs(
        "Model quality: regressor (MAE, RMSE) per window", {"instance": "w0:6066"}
    )
    (shares_p0,) = _panel_exprs("Feature importance share by feature", {"partition": "0|2"})
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
        case(cls_p1, ('{metric="accuracy",window="last_1000"}', 0.6)),  # its AUC is NaN
        case(mae_w0, ('{metric="mae",window="last_1000"}', 1.0)),  # partition 4 on w0
        case(shares_p0, ('{feature="amount"}', 0.25)),
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
    # every panel and query reads the data source the dashboard's variable names, which
    # defaults to the provisioned one
    uid = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    for p in dash["panels"]:
        if p["type"] != "row":
            sources = [p["datasource"], *(t["datasource"] for t in p["targets"])]
            assert all(d == {"type": "prometheus", "uid": "${datasource}"} for d in sources)
    datasource = _variables()["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert datasource["current"]["value"] == uid


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


# -- the image ------------------------------------------------------------------------------------
DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DOCKERFILE.read_text() if text is None else text).splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (after its FROM)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            image, _, name = rest.partition(" AS ")
            assert image.strip() == "${PYTHON_IMAGE}" and name, rest
            current = stages[name.strip()] = []
        elif current is not None:
            current.append((word, rest))
    return stages


def healthcheck_command() -> list[str]:
    """The exec-form command of the image's HEALTHCHECK."""
    (rest,) = [r for w, r in dockerfile_instructions() if w == "HEALTHCHECK"]
    return list(json.loads(rest[rest.index("CMD ") + 4 :]))


def _index(steps: list[tuple[str, str]], word: str, needle: str) -> int:
    hits = [i for i, (w, r) in enumerate(steps) if w == word and needle in r]
    assert hits, f"no {word} with {needle!r}"
    return hits[0]


def test_dockerfile_builds_wheels_then_installs_them_in_a_slim_image_as_a_user() -> None:
    args = dict(r.split("=", 1) for w, r in dockerfile_instructions() if w == "ARG" and "=" in r)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    stages = dockerfile_stages()
    assert list(stages) == ["builder", "runtime"]
    build, run = stages["builder"], stages["runtime"]
    # builder: dependency wheels from pyproject.toml alone, before any source is copied
    deps = _index(build, "RUN", "pip wheel --wheel-dir /wheels/deps -r requirements.txt")
    assert _index(build, "COPY", "pyproject.toml") < deps
    sources = [i for i, (w, r) in enumerate(build) if w == "COPY" and "pyproject" not in r]
    assert sources and min(sources) > deps
    copied = {src for w, r in build if w == "COPY" for src in r.split()[:-1]}
    assert copied >= {"driftline", "streams", "agents", "schemas", "README.md", "LICENSE"}
    assert _index(build, "RUN", "pip wheel --no-deps --wheel-dir /wheels/app .") > max(sources)
    # runtime: wheels only (no sources, no build tools), dependencies before driftline's wheel
    assert [r for w, r in run if w == "COPY" and not r.startswith("--from=builder")] == [
        "deploy/pipeline.toml /etc/driftline/pipeline.toml"
    ]
    order = [
        _index(run, "COPY", "--from=builder /wheels/deps"),
        _index(run, "RUN", "-r /tmp/wheels/deps/requirements.txt"),
        _index(run, "COPY", "--from=builder /wheels/app"),
        _index(run, "RUN", "--no-deps /tmp/wheels/app/*.whl"),
    ]
    assert order == sorted(order)
    assert all("--no-index" in run[i][1] for i in order[1::2])
    # an unprivileged user made in the image, in charge from after the last RUN on
    assert "useradd --system --uid 10001" in run[_index(run, "RUN", "useradd")][1]
    users = [(i, r) for i, (w, r) in enumerate(run) if w == "USER"]
    assert [r for _, r in users] == ["driftline"]
    assert users[0][0] > max(i for i, (w, _) in enumerate(run) if w == "RUN")
    # the health check asks the worker's /healthz
    (health,) = [r for w, r in run if w == "HEALTHCHECK"]
    assert all(opt in health for opt in ("--interval=", "--timeout=", "--start-period="))
    env = " ".join(r for w, r in run if w == "ENV")
    assert "DRIFTLINE_HEALTH_URL=http://127.0.0.1:6066/healthz" in env
    assert healthcheck_command()[:2] == ["python", "-c"]
    assert "DRIFTLINE_HEALTH_URL" in healthcheck_command()[2]
    spec = load_spec(ROOT / "deploy" / "pipeline.toml")
    assert ("EXPOSE", str(spec.worker.web_port)) in run
    assert run[-2:] == [
        ("ENTRYPOINT", '["driftline"]'),
        ("CMD", '["worker", "-c", "/etc/driftline/pipeline.toml", "--web-host", "0.0.0.0"]'),
    ]


def test_the_builders_requirements_are_the_projects_dependencies(tmp_path: Path) -> None:
    """Runs the builder stage's requirements program on this pyproject.toml."""
    rest = next(r for w, r in dockerfile_stages()["builder"] if w == "RUN")
    m = re.fullmatch(r'python -c "(.+?)" "\$\{EXTRAS\}"\s+&&.+', rest)
    assert m is not None, rest
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extras, expected in [
        ("", project["dependencies"]),
        ("parquet", [*project["dependencies"], *project["optional-dependencies"]["parquet"]]),
    ]:
        subprocess.run([sys.executable, "-c", m.group(1), extras], cwd=tmp_path, check=True)
        assert (tmp_path / "requirements.txt").read_text().splitlines() == expected
    assert not [d for d in project["dependencies"] if d.startswith("pyarrow")]


def test_compose_turns_the_health_check_off_where_no_worker_runs(compose: dict) -> None:
    services = compose["services"]
    for name in ("producer", "labeller"):
        assert services[name]["build"] == "." and services[name]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in services["worker"]  # the image's: /healthz


# -- system packages ------------------------------------------------------------------------------
def _installs(text: str, pattern: str) -> dict[str, str]:
    return dict(re.findall(pattern, text))


def test_ci_and_make_install_the_same_system_packages() -> None:
    """Binaries the tests run (Prometheus, Alertmanager, kcat, chromium...) are installed by
    both .ci/run and ``make system-deps``, from the same Debian packages."""
    ci = _installs(
        (ROOT / ".ci/run").read_text(), r"command -v (\S+) >/dev/null \|\| need\+=\((\S+)\)"
    )
    make = _installs(
        (ROOT / "Makefile").read_text(),
        r'command -v (\S+) >/dev/null \|\| missing="\$\$missing (\S+)"',
    )
    assert {k: v for k, v in ci.items() if k != "make"} == make
    assert make["prometheus-alertmanager"] == "prometheus-alertmanager"
    assert make["promtool"] == "prometheus"


def test_a_missing_binary_fails_the_alerting_test_saying_what_to_install() -> None:
    from tests.integration.test_alerting import _binary

    assert _binary("prometheus", "prometheus") == shutil.which("prometheus")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y no-such-package"):
        _binary("no-such-binary-here", "no-such-package")
