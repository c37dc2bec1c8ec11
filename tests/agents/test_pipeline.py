"""The per-partition batch step, without Kafka: accounting, batch-size invariance, determinism."""

from __future__ import annotations

import tomllib
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import ks_adwin_spec_text, train_demo_model
from driftline.agents.pipeline import PartitionPipeline, RawRecord, alert_id
from driftline.agents.predictor import build_predictor
from driftline.agents.synthetic import SyntheticStream
from driftline.schemas import validate
from driftline.spec import PipelineSpec, parse_spec

N, K = 12_000, 7_000


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> PipelineSpec:
    tmp = tmp_path_factory.mktemp("pipe")
    data = tomllib.loads(ks_adwin_spec_text())
    data["detectors"][0].update(reference_size=1000, window_size=1000, stride=250)
    train_demo_model(tmp / "demo-model.pkl", list(data["model"]["inputs"]), n=3000)
    return parse_spec(data, base_dir=Path(tmp))


def _records() -> list[RawRecord]:
    recs = [
        RawRecord("in", 3, i, e["ts"] + 5, e["user_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(SyntheticStream(n=N, shift_at=K, seed=5, n_entities=50).events())
    ]
    bad = [
        b"{",
        b"[]",
        b'{"user_id": "x"}',
        b'{"user_id": "u1", "ts": 1767225600000, "amount": 1, "latency_ms": 1, "country": "de"}',
    ]
    for j, v in enumerate(bad):
        recs.insert(3000 * (j + 1), RawRecord("in", 3, -1, None, b"k", v))
    return [
        RawRecord(r.topic, r.partition, i, r.timestamp_ms, r.key, r.value)
        for i, r in enumerate(recs)
    ]


def _run(spec: PipelineSpec, batch: int) -> dict[str, list[bytes]]:
    pred, version = build_predictor(spec)
    p = PartitionPipeline(spec, 3, pred, version)
    recs = _records()
    out: dict[str, list[bytes]] = {}
    consumed = dead = 0
    for i in range(0, len(recs), batch):
        oc = p.process(recs[i : i + batch])
        consumed += oc.consumed
        dead += sum(oc.dead_letters.values())
        assert oc.last_offset == recs[min(i + batch, len(recs)) - 1].offset
        for topic, _key, value in oc.all_messages():
            out.setdefault(topic, []).append(value)
    assert consumed == len(recs)
    assert dead == 3
    return out


def test_every_record_is_accounted_for(spec: PipelineSpec) -> None:
    out = _run(spec, 5000)
    o = spec.output
    assert len(out[o.features_topic]) == N
    assert len(out[o.predictions_topic]) == N
    reasons = sorted(orjson.loads(v)["reason"] for v in out[o.dlq_topic])
    assert reasons == ["invalid_json", "missing_field", "not_an_object"]
    late = [orjson.loads(v) for v in out[o.late_topic]]
    assert [d["reason"] for d in late] == ["late_event"]
    assert "older than the partition watermark minus grace" in late[0]["error"]
    for v in out[o.dlq_topic] + out[o.late_topic]:
        validate("dead_letter", orjson.loads(v))


@pytest.mark.parametrize("batch", [1, 7, 999, 20_000])
def test_outputs_do_not_depend_on_batch_size(spec: PipelineSpec, batch: int) -> None:
    ref, got = _run(spec, 5000), _run(spec, batch)
    o = spec.output

    def strip(vs: list[bytes]) -> list[dict]:
        drop = ("latency_ms", "detected_at_ms", "computed_at_ms", "freshness_ms")
        return [{k: v for k, v in orjson.loads(x).items() if k not in drop} for x in vs]

    assert strip(got[o.features_topic]) == strip(ref[o.features_topic])

    assert strip(got[o.predictions_topic]) == strip(ref[o.predictions_topic])
    # alerts of different detectors interleave differently per batch; compare them as sets
    key = lambda a: (a["window"]["offset"], a["detector"], a["status"])  # noqa: E731
    assert sorted(strip(got[o.alerts_topic]), key=key) == sorted(
        strip(ref[o.alerts_topic]), key=key
    )


def test_alerts_are_deterministic_and_after_the_shift(spec: PipelineSpec) -> None:
    alerts = [orjson.loads(v) for v in _run(spec, 5000)[spec.output.alerts_topic]]
    firing = [a for a in alerts if a["status"] == "firing"]
    assert {a["target"] for a in firing} == {"amount", "latency_ms"}
    for a in alerts:
        validate("alert", a)
        idx = (a["window"]["event_time_ms"] - 1_767_225_600_000) // 10
        assert idx >= K
        assert a["alert_id"] == alert_id(
            spec.name, a["detector"], 3, a["window"]["offset"], a["status"]
        )
        w = a["window"]
        if a["detector_type"] == "ks":  # window bounds: its window_size values, no gaps here
            assert w["start_offset"] is not None
            assert w["start_offset"] <= w["offset"] - (w["n_current"] - 1)
            assert w["start_event_time_ms"] <= w["event_time_ms"]
        elif w["start_offset"] is not None:
            assert w["start_offset"] <= w["offset"]


def test_without_feature_vectors_the_rest_is_unchanged(spec: PipelineSpec) -> None:
    """``[output] emit_features = false``: no feature vector; predictions, alerts, dead letters
    and late events as with them; the features topic is not among the topics written."""
    from dataclasses import replace

    quiet = replace(spec, output=replace(spec.output, emit_features=False))
    ref, got = _run(spec, 5000), _run(quiet, 5000)
    o = spec.output
    assert o.features_topic not in got
    assert len(ref[o.features_topic]) == N
    drop = ("latency_ms", "detected_at_ms", "computed_at_ms", "freshness_ms", "dead_lettered_at_ms")

    def strip(vs: list[bytes]) -> list[dict]:
        return [{k: v for k, v in orjson.loads(x).items() if k not in drop} for x in vs]

    for topic in (o.predictions_topic, o.alerts_topic, o.dlq_topic, o.late_topic):
        assert strip(got[topic]) == strip(ref[topic]), topic
    assert o.features_topic in o.all_topics
    assert o.features_topic not in quiet.output.all_topics
    assert len(quiet.output.all_topics) == len(o.all_topics) - 1


def test_emit_features_is_read_from_the_spec(tmp_path: Path) -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    data["output"]["emit_features"] = False
    train_demo_model(tmp_path / "demo-model.pkl", list(data["model"]["inputs"]), n=500)
    assert parse_spec(data, base_dir=tmp_path).output.emit_features is False
    del data["output"]["emit_features"]
    assert parse_spec(data, base_dir=tmp_path).output.emit_features is True
