"""The status collector and page without Kafka: a fake runner, real metrics and detectors."""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

import numpy as np
import orjson
import pytest

from driftline.agents.metrics import WorkerMetrics
from driftline.agents.status_page import (
    HISTORY,
    StatusCollector,
    distribution,
    render_html,
    summarize,
)
from driftline.streams.detectors.adwin import AdwinDetector
from driftline.streams.detectors.ks import KSWindowDetector


class FakeRunner:
    """What :meth:`TransactionalRunner.status` returns, from real detectors."""

    def __init__(self) -> None:
        self.ks = KSWindowDetector(reference_size=200, window_size=200, alpha=1e-6, stride=50)
        self.adwin = AdwinDetector(delta=1e-5, cooldown=1000)

    def status(self) -> dict[str, Any]:
        dets = []
        for name, typ, det, params in (
            ("x_ks", "ks", self.ks, {"alpha": 1e-6, "window_size": 200}),
            ("x_adwin", "adwin", self.adwin, {"delta": 1e-5}),
        ):
            dets.append(
                {
                    "detector": name,
                    "type": typ,
                    "target": "x<&>",  # escaped on the page
                    "partition": 0,
                    "params": params,
                    "firing": det.in_drift,
                    "statistic": det.statistic,
                    "p_value": det.p_value,
                    "n_seen": det.n_seen,
                    "reference": getattr(det, "reference", None),
                    "current": getattr(det, "current_window", None),
                }
            )
        return {
            "pipeline": "p",
            "worker_id": "w1",
            "input_topic": "events",
            "partitions": [0],
            "watermarks_ms": {0: 123},
            "detectors": dets,
        }


class Clock:
    def __init__(self) -> None:
        self.t = 1_767_225_600.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


@pytest.fixture
def setup() -> tuple[FakeRunner, WorkerMetrics, StatusCollector]:
    runner, metrics = FakeRunner(), WorkerMetrics("p")
    col = StatusCollector(runner, metrics, clock=Clock(), values=True)  # worker.status_values
    yield runner, metrics, col
    col.close()


def _feed(runner: FakeRunner, xs: np.ndarray) -> list[Any]:
    return runner.ks.update_many(xs) + runner.adwin.update_many(xs)


def _shift(runner: FakeRunner, seed: int) -> None:
    """400 values around 0, then 400 around 3: the KS detector fires."""
    rng = np.random.default_rng(seed)
    _feed(runner, rng.normal(0, 1, 400))
    _feed(runner, rng.normal(3, 1, 400))


def test_history_is_bounded_and_only_grows_on_new_values(setup: Any) -> None:
    runner, _, col = setup
    rng = np.random.default_rng(1)
    col.sample()
    col.sample()
    assert col._history[("x_ks", "x<&>", 0)].__len__() == 1  # n_seen unchanged: one reading
    for _ in range(HISTORY + 20):
        _feed(runner, rng.normal(0, 1, 10))
        col.sample()
    snap = col.snapshot()
    for d in snap["detectors"]:
        assert len(d["history"]) == HISTORY
        ts = [h[0] for h in d["history"]]
        assert ts == sorted(ts) and len(set(ts)) == len(ts)


def test_snapshot_counts_latency_distribution_and_firing(setup: Any) -> None:
    runner, m, col = setup
    _shift(runner, 2)
    m.consumed.labels("events").inc(805)
    m.dead_lettered.labels("invalid_json").inc(5)
    m.predictions.inc(800)
    m.observe_latency(np.full(100, 0.02))
    m.set_lag("events", 0, 7)
    snap = orjson.loads(col.json_bytes())  # JSON-ready, NaN-free
    assert snap["counters"]["consumed"] == 805
    assert snap["counters"]["dead_lettered"] == 5
    assert snap["dead_letters_by_reason"] == {"invalid_json": 5}
    assert snap["consumer_lag"] == {"0": 7}
    lat = snap["latency"]
    assert lat["count"] == 100 and 0.015 <= lat["p50"] <= lat["p99"] <= 0.02
    ks = next(d for d in snap["detectors"] if d["type"] == "ks")
    assert ks["firing"] and ks["p_value"] < 1e-6
    dist = ks["distribution"]
    assert len(dist["edges"]) == len(dist["reference"]) + 1
    assert sum(dist["reference"]) == pytest.approx(1) and sum(dist["current"]) == pytest.approx(1)
    assert snap["alerts_firing"] >= 1


def test_input_values_stay_off_the_page_by_default() -> None:
    """Without worker.status_values: no histograms (their edges are input percentiles) and no
    min/max in alert details; the statistics stay."""
    runner, metrics = FakeRunner(), WorkerMetrics("p")
    _shift(runner, 2)
    alert = {"status": "firing", "detector": "x_sum", "target": "x", "statistic": 3.0,
             "window": {"partition": 0, "offset": 9},
             "detail": "mean shift 2.9 std > 0.5; min/max -1.234/987.6 > 0.1"}  # fmt: skip
    metrics.recent_alerts.append(alert)
    hidden = orjson.loads(StatusCollector(runner, metrics).json_bytes())
    shown = orjson.loads(StatusCollector(runner, metrics, values=True).json_bytes())
    assert (hidden["values_shown"], shown["values_shown"]) == (False, True)
    ks_hidden, ks_shown = (next(d for d in s["detectors"] if d["type"] == "ks")
                           for s in (hidden, shown))  # fmt: skip
    assert ks_hidden["distribution"] is None and ks_shown["distribution"] is not None
    assert ks_hidden["statistic"] == ks_shown["statistic"] and ks_hidden["p_value"] < 1e-6
    assert hidden["recent_alerts"][0]["detail"] == (
        "mean shift 2.9 std > 0.5; min/max outside the reference range > 0.1"
    )
    assert shown["recent_alerts"][0]["detail"] == alert["detail"]
    for value in ("987.6", "-1.234"):
        assert value not in orjson.dumps(hidden).decode()
    assert "987.6" in orjson.dumps(shown).decode()
    page = render_html(hidden)
    assert "987.6" not in page and '<svg class="plot dist"' not in page
    assert "worker.status_values = true" in page
    assert "values-hidden" not in render_html(shown)


def test_distribution_shares_bins_and_clips_outliers() -> None:
    d = distribution(np.array([0.0, 1.0, 2.0, 1e9]), np.array([1.0, 1.0]), bins=4)
    assert d is not None
    assert d["edges"][-1] < 1e9  # the outlier does not stretch the axis
    assert sum(d["reference"]) == pytest.approx(1) and d["n_current"] == 2
    assert distribution(None, None) is None
    assert distribution(np.array([5.0]), np.array([5.0]), bins=2)["edges"] == [4.5, 5.0, 5.5]


def test_recent_alerts_come_from_the_runner(setup: Any) -> None:
    _, m, col = setup
    assert col.snapshot()["recent_alerts"] == []
    full = {
        "status": "resolved", "severity": "info", "kind": "covariate", "target": "x",
        "detector": "x_ks", "detector_type": "ks", "statistic": 0.01, "p_value": 0.5,
        "threshold": 1e-6,
        "window": {"partition": 0, "offset": 9, "event_time_ms": 0, "n_current": 200},
    }  # fmt: skip
    m.record_alert(full)
    snap = col.snapshot()
    assert [a["line"][:20] for a in snap["recent_alerts"]] == ["[RESOLVED info] cova"]
    for i in range(60):
        m.record_alert({**full, "window": {**full["window"], "offset": i}})
    assert len(col.snapshot()["recent_alerts"]) == 50


def test_page_is_self_contained_escaped_and_has_the_plots(setup: Any) -> None:
    runner, _, col = setup
    rng = np.random.default_rng(3)
    for shift in (0, 0, 3, 3):
        _feed(runner, rng.normal(shift, 1, 200))
        col.sample()
    page = render_html(col.snapshot())
    assert "<script" not in page and "x<&>" not in page and "x&lt;&amp;&gt;" in page
    assert "<link" not in page and "src=" not in page
    svgs = re.findall(r"<svg .*?</svg>", page, re.S)
    for svg in svgs:  # each plot is well-formed XML
        ElementTree.fromstring(svg)
    kinds = [re.search(r'class="plot (\w+)"', s).group(1) for s in svgs]  # type: ignore[union-attr]
    assert kinds.count("dist") == 1  # KS only
    assert kinds.count("series") == 3  # KS D, KS -log10 p, ADWIN statistic
    assert kinds.count("latency") == 1
    assert page.count('class="line"') == 3


def test_summarize_is_key_value_lines(setup: Any) -> None:
    runner, m, col = setup
    _shift(runner, 4)
    m.consumed.labels("events").inc(800)
    m.dead_lettered.labels("oversized").inc(2)
    m.observe_latency(np.full(10, 1.5))
    facts = dict(line.split(": ", 1) for line in summarize(col.snapshot()).splitlines())
    assert facts["pipeline"] == "p" and facts["partitions"] == "0"
    assert facts["consumed"] == "800"
    assert facts["dead letters"] == "2 (oversized 2)"
    assert facts["alerts firing"].startswith("1 (x_ks[x<&>] p0") or facts[
        "alerts firing"
    ].startswith("2 (")
    assert "p99 1.50 s" in facts["latency"]


def test_model_quality_from_labels_on_the_page_and_in_the_summary(setup: Any) -> None:
    _, m, col = setup
    assert "Model quality" not in render_html(col.snapshot())  # no labels yet: no section
    m.label_outcomes.labels("joined").inc(900)
    m.label_outcomes.labels("expired_prediction").inc(12)
    for metric, v in (("n", 500.0), ("accuracy", 0.875), ("auc", float("nan"))):
        m.model_metric.labels(metric, "last_500", "0").set(v)
    data = col.snapshot()
    assert data["labels"] == {"joined": 900, "expired_prediction": 12}
    assert data["model_quality"] == [
        {"partition": "0", "window": "last_500", "n": 500.0, "accuracy": 0.875, "auc": None}
    ]
    page = render_html(data)
    assert "Model quality" in page and "0.875" in page
    facts = dict(line.split(": ", 1) for line in summarize(data).splitlines())
    assert facts["labels"] == "expired_prediction 12, joined 900"
    assert facts["model p0 last_500"].startswith("n 500  accuracy 0.875")


def test_estimated_performance_on_the_page_and_in_the_summary(setup: Any) -> None:
    _, m, col = setup
    assert "Estimated performance" not in render_html(col.snapshot())  # none yet: no section
    m.estimated_chunks.inc(7)
    for bound, v in (("estimate", 0.8125), ("lower", 0.75), ("upper", 0.875)):
        m.estimated_performance.labels("accuracy", bound, "0").set(v)
    m.estimated_performance.labels("auc", "estimate", "0").set(float("nan"))
    m.estimated_performance_firing.labels("accuracy", "0").set(1)
    data = col.snapshot()
    assert data["estimated_performance"] == [
        {"partition": "0", "metric": "accuracy", "firing": True, "estimate": 0.8125,
         "lower": 0.75, "upper": 0.875},
        {"partition": "0", "metric": "auc", "firing": False, "estimate": None},
    ]  # fmt: skip
    assert data["estimated_chunks"] == 7
    page = render_html(data)
    assert "Estimated performance" in page and "7 chunks estimated" in page
    assert '<td class="num">0.8125</td><td class="num">0.75 to 0.875</td>' in page
    facts = dict(line.split(": ", 1) for line in summarize(data).splitlines())
    assert facts["estimated p0 accuracy"] == "0.8125 (0.75 to 0.875)  BELOW THRESHOLD"
    assert facts["estimated p0 auc"] == "– (– to –)"


def test_consumed_is_input_events_and_label_records_are_apart(setup: Any) -> None:
    _, m, col = setup
    m.consumed.labels("events").inc(800)  # the input topic (FakeRunner's input_topic)
    m.consumed.labels("events.labels").inc(300)  # the labels topic
    data = col.snapshot()
    assert data["counters"]["consumed"] == 800
    assert data["counters"]["label_records"] == 300
    page = render_html(data)
    heads = re.findall(r"<th>(.*?)</th>", page.split("<h2>Throughput</h2>")[1].split("</table>")[0])
    cells = re.findall(r'<td class="num">(.*?)</td>', page.split("<h2>Throughput</h2>")[1])
    assert dict(zip(heads, cells, strict=False))["consumed"] == "800"
    assert dict(zip(heads, cells, strict=False))["label records"] == "300"
    facts = dict(line.split(": ", 1) for line in summarize(data).splitlines())
    assert facts["consumed"] == "800" and facts["label records"] == "300"


def test_no_label_records_column_without_labels(setup: Any) -> None:
    _, m, col = setup
    m.consumed.labels("events").inc(5)
    data = col.snapshot()
    assert data["counters"]["label_records"] == 0
    assert "label records" not in render_html(data)
    assert "label records" not in summarize(data)


def test_slices_and_business_on_the_page_and_in_the_summary(setup: Any) -> None:
    _, m, col = setup
    page = render_html(col.snapshot())
    assert "Slices" not in page and "Business metric" not in page  # none configured: no section
    for value, acc in (("fr", 0.5), ("de", 0.875)):
        m.slice_model_metric.labels("country", value, "n", "1").set(250)
        m.slice_model_metric.labels("country", value, "accuracy", "1").set(acc)
    m.slice_firing.labels("country", "fr", "1").set(1)
    m.set_business(1, ("revenue", 7.25, 600))
    data = col.snapshot()
    assert data["slices"] == [
        {"slice": "country", "value": "de", "partition": "1", "n": 250.0, "accuracy": 0.875},
        {"slice": "country", "value": "fr", "partition": "1", "n": 250.0, "accuracy": 0.5,
         "firing": True},
    ]  # fmt: skip
    assert data["business"] == [{"metric": "revenue", "partition": "1", "value": 7.25, "n": 600}]
    page = render_html(data)
    assert "Slices" in page and "<td>FIRING</td>" in page and "Business metric" in page
    assert '<td class="num">7.25</td><td class="num">600</td>' in page
    facts = dict(line.split(": ", 1) for line in summarize(data).splitlines())
    assert facts["slice p1 country=fr"] == "n 250  accuracy 0.5  WORSE THAN THE WHOLE"
    assert facts["slice p1 country=de"] == "n 250  accuracy 0.875"
    assert facts["business p1 revenue"] == "7.25 (n 600)"
