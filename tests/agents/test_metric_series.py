"""Series exist before their first event: counters at 0 for every label set the spec makes
known, and ``driftline_drift_firing`` per detector and assigned partition, 1 exactly while the
detector's episode is open, gone when the partition is revoked."""

from __future__ import annotations

import tomllib
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import TopicPartition

from driftline.agents.batch_metrics import count_batch
from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.metric_series import alert_sources, declare_partition, declare_series
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.runner import TransactionalRunner
from driftline.agents.scrape import Sample, parse_samples
from driftline.schemas import load_schema
from driftline.spec import PipelineSpec, parse_spec

FIRING = "driftline_drift_firing"


def _spec(**extra: Any) -> PipelineSpec:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data.update(extra)
    return parse_spec(data)


def _samples(m: WorkerMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    got: list[Sample] = parse_samples(m.exposition().decode())
    return {tuple(sorted(lab.items())): v for n, lab, v in got if n == name}


def _firing(m: WorkerMetrics) -> dict[tuple[str, str, str], float]:
    return {
        (d["detector"], d["target"], d["partition"]): v
        for d, v in ((dict(k), v) for k, v in _samples(m, FIRING).items())
    }


LABELS = {"topic": "demo.labels", "ttl_ms": 5_000, "importance": {"every": 200}}
DETECTORS = [
    {"name": "amount_ks", "type": "ks", "target": "amount"},
    {"name": "score_ph", "type": "page_hinkley", "target": "prediction"},
    {"name": "error_ddm", "type": "ddm", "target": "error"},
    {"name": "label_adwin", "type": "adwin", "target": "label"},
]


@pytest.mark.parametrize(
    ("extra", "sources"),
    [
        ({}, [("covariate", "amount_ks"), ("covariate", "latency_adwin")]),
        ({"detectors": []}, []),
        (
            {"detectors": DETECTORS, "labels": LABELS},
            [("covariate", "amount_ks"), ("prediction", "score_ph"), ("concept", "error_ddm"),
             ("label", "label_adwin"), ("importance", "importance")],
        ),
    ],
)  # fmt: skip
def test_every_alert_source_of_the_spec_is_known(extra: dict, sources: list) -> None:
    if "labels" in extra:  # labels need a model
        data = tomllib.loads(ks_adwin_spec_text())
        data.update(extra)
        spec = parse_spec(data, model_file_required=False)
    else:
        spec = _spec(**extra)
    assert alert_sources(spec) == sources


def test_counters_exist_at_zero_before_their_first_event() -> None:
    spec = _spec()
    m = WorkerMetrics(spec.name)
    assert _samples(m, "driftline_alerts_total") == {}  # prometheus_client makes none itself
    declare_series(m, spec)
    alerts = _samples(m, "driftline_alerts_total")
    assert alerts == {
        (("detector", d), ("kind", "covariate"), ("status", s)): 0.0
        for d in ("amount_ks", "latency_adwin")
        for s in ("firing", "resolved")
    }
    reasons = load_schema("dead_letter")["properties"]["reason"]["enum"]
    assert _samples(m, "driftline_records_dead_lettered_total") == {
        (("reason", r),): 0.0 for r in reasons
    }
    assert len(reasons) >= 9 and "invalid_json" in reasons
    assert _samples(m, "driftline_records_consumed_total") == {(("topic", spec.input.topic),): 0.0}


def test_skew_checks_count_from_zero_too() -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["batch_features"] = {"fields": {"amount_offline": "float"},
                              "defaults": {"amount_offline": -1.0}}  # fmt: skip
    data["skew_checks"] = [{"name": "amount_skew", "batch": "amount_offline",
                            "streaming": "amount", "tolerance": 0.0}]  # fmt: skip
    spec = parse_spec(data)
    m = WorkerMetrics(spec.name)
    declare_series(m, spec)
    assert _samples(m, "driftline_skew_disagreements_total") == {(("check", "amount_skew"),): 0.0}
    skew = {k: v for k, v in _samples(m, "driftline_alerts_total").items() if ("kind", "skew") in k}
    assert skew == {
        (("detector", "amount_skew"), ("kind", "skew"), ("status", s)): 0.0
        for s in ("firing", "resolved")
    }


def _alert(kind: str, detector: str, target: str, status: str) -> dict[str, Any]:
    return {"kind": kind, "detector": detector, "target": target, "status": status}


KS, ADWIN = ("covariate", "amount_ks", "amount"), ("covariate", "latency_adwin", "latency_ms")


@pytest.mark.parametrize(
    ("alerts", "want"),
    [
        # (partition, kind, detector, target, status) in commit order -> firing per series
        ([], {("amount_ks", "amount", "0"): 0, ("latency_adwin", "latency_ms", "0"): 0}),
        ([(0, *KS, "firing")],
         {("amount_ks", "amount", "0"): 1, ("latency_adwin", "latency_ms", "0"): 0}),
        ([(0, *KS, "firing"), (0, *KS, "resolved")],
         {("amount_ks", "amount", "0"): 0, ("latency_adwin", "latency_ms", "0"): 0}),
        ([(0, *KS, "firing"), (0, *KS, "resolved"), (0, *KS, "firing")],
         {("amount_ks", "amount", "0"): 1, ("latency_adwin", "latency_ms", "0"): 0}),
        # another partition's episode is its own series
        ([(1, *KS, "firing"), (0, *ADWIN, "firing")],
         {("amount_ks", "amount", "0"): 0, ("latency_adwin", "latency_ms", "0"): 1,
          ("amount_ks", "amount", "1"): 1}),
        # skew checks and importance shifts are not drift detectors' episodes
        ([(0, "skew", "amount_skew", "amount_offline~amount", "firing"),
          (0, "importance", "importance", "amount", "firing")],
         {("amount_ks", "amount", "0"): 0, ("latency_adwin", "latency_ms", "0"): 0}),
        # the label side's detectors are
        ([(0, "concept", "error_ddm", "error", "firing"),
          (0, "label", "label_adwin", "label", "firing")],
         {("amount_ks", "amount", "0"): 0, ("latency_adwin", "latency_ms", "0"): 0,
          ("error_ddm", "error", "0"): 1, ("label_adwin", "label", "0"): 1}),
    ],
)  # fmt: skip
def test_firing_follows_the_committed_alerts(alerts: list, want: dict) -> None:
    spec = _spec()
    m = WorkerMetrics(spec.name)
    declare_partition(m, PartitionPipeline(spec, 0, None, "none"))
    assert set(_firing(m).values()) == {0.0}
    for p, *a in alerts:
        m.count_alert(p, _alert(*a))
    assert _firing(m) == want
    counted = _samples(m, "driftline_alerts_total")
    assert sum(counted.values()) == len(alerts)
    assert len(m.recent_alerts) == len(alerts)


@pytest.mark.parametrize(
    "open_episodes", [{}, {"amount_ks": True}, {"amount_ks": False, "latency_adwin": True}]
)
def test_an_assigned_partition_starts_from_its_restored_episodes(open_episodes: dict) -> None:
    spec = _spec()
    pipe = PartitionPipeline(spec, 3, None, "none")
    pipe.episodes.restore(open_episodes)
    m = WorkerMetrics(spec.name)
    declare_partition(m, pipe)
    assert _firing(m) == {
        ("amount_ks", "amount", "3"): float(open_episodes.get("amount_ks", False)),
        ("latency_adwin", "latency_ms", "3"): float(open_episodes.get("latency_adwin", False)),
    }


def test_a_revoked_partition_takes_its_series_with_it() -> None:
    spec = _spec()
    runner = TransactionalRunner(spec, "127.0.0.1:9", WorkerMetrics(spec.name), None, "none", "w1")
    try:
        m = runner.metrics
        for p in (0, 1):
            pipe = PartitionPipeline(spec, p, None, "none")
            runner.partitions.pipelines[p] = pipe
            declare_partition(m, pipe)
            m.drift_statistic.labels("amount_ks", "amount", str(p)).set(0.5)
        m.count_alert(1, _alert(*KS, "firing"))
        assert len(_firing(m)) == 4
        runner._drop([TopicPartition(spec.input.topic, 1)])
        assert _firing(m) == {
            ("amount_ks", "amount", "0"): 0.0,
            ("latency_adwin", "latency_ms", "0"): 0.0,
        }
        assert {dict(k)["partition"] for k in _samples(m, "driftline_drift_statistic")} == {"0"}
        # counters stay: they count what this worker did
        assert sum(_samples(m, "driftline_alerts_total").values()) == 1
    finally:
        runner.commit.close()


@pytest.mark.parametrize(
    ("cap", "held", "evicted"),
    [(None, 20, {"idle": 0.0, "max_entities": 0.0}), (5, 5, {"idle": 0.0, "max_entities": 15.0})],
)
def test_entities_held_and_evicted(cap: int | None, held: int, evicted: dict) -> None:
    """20 users in one window: all held, or the 5 seen last with ``max_entities = 5``; then an
    event 2 minutes later makes every earlier one idle (1-minute windows, 5 s grace)."""
    windows = {"grace_ms": 5_000} if cap is None else {"grace_ms": 5_000, "max_entities": cap}
    spec = _spec(windows=windows)
    assert spec.max_entities == cap
    runner = TransactionalRunner(spec, "127.0.0.1:9", WorkerMetrics(spec.name), None, "none", "w1")
    try:
        m = runner.metrics
        declare_series(m, spec)
        pipe = PartitionPipeline(spec, 3, None, "none")
        runner.partitions.pipelines[3] = pipe
        reasons = {("reason", r) for r in ("idle", "max_entities")}
        assert {k[0] for k in _samples(m, "driftline_entities_evicted_total")} == reasons
        pipe.process(_records(40, 40))
        runner._export_entities()
        assert _samples(m, "driftline_entities") == {(("partition", "3"),): float(held)}
        got = _samples(m, "driftline_entities_evicted_total")
        assert {dict(k)["reason"]: v for k, v in got.items()} == evicted
        late = _records(1, 1)[0]
        e = orjson.loads(late.value)
        e.update(user_id="new", ts=e["ts"] + 120_000)
        pipe.process([late._replace(key=b"new", value=orjson.dumps(e))])
        runner._export_entities()
        assert _samples(m, "driftline_entities") == {(("partition", "3"),): 1.0}
        got = _samples(m, "driftline_entities_evicted_total")
        assert {dict(k)["reason"]: v for k, v in got.items()} == {**evicted, "idle": held}
    finally:
        runner.commit.close()


def _records(n: int, shift_at: int) -> list[RawRecord]:
    rng = np.random.default_rng(4)
    out = []
    for i in range(n):
        amount = float(rng.normal(50.0 if i < shift_at else 58.0, 2.0))
        e = {"user_id": f"u{i % 20}", "ts": 1_767_225_600_000 + 10 * i, "amount": amount,
             "latency_ms": 1.0, "country": "de"}  # fmt: skip
        out.append(RawRecord("in", 0, i, None, e["user_id"].encode(), orjson.dumps(e)))
    return out


def test_a_shifting_stream_turns_the_gauge_on_and_keeps_it_on() -> None:
    """The batch step and its count: 0 before the shift, 1 from the firing alert on, and still
    1 while the drift goes on without new alerts."""
    ks = {"name": "amount_ks", "type": "ks", "target": "amount", "reference_size": 500,
          "window_size": 500, "alpha": 1e-6}  # fmt: skip
    spec = _spec(detectors=[ks])
    pipe = PartitionPipeline(spec, 0, None, "none")
    m = WorkerMetrics(spec.name)
    declare_series(m, spec)
    declare_partition(m, pipe)
    recs = _records(6_000, 2_000)
    seen: list[tuple[int, float, int]] = []
    for i in range(0, len(recs), 500):
        oc = pipe.process(recs[i : i + 500])
        count_batch(m, [(spec.input.topic, 0, oc)], 0.0, 0.0, 0.0)
        seen.append((i, _firing(m)[("amount_ks", "amount", "0")], len(oc.alerts)))
    before = [v for i, v, _ in seen if i < 2_000]
    assert before == [0.0] * 4
    first = next(k for k, (_, v, _) in enumerate(seen) if v == 1.0)
    assert seen[first][2] == 1  # the batch with the firing alert
    assert all(v == 1.0 for _, v, _ in seen[first:])  # the drift goes on: still firing
    assert sum(a for *_, a in seen) == 1  # one alert for the whole episode
    firing = ("detector", "amount_ks"), ("kind", "covariate"), ("status", "firing")
    assert _samples(m, "driftline_alerts_total")[firing] == 1.0
