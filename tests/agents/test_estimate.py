"""Label-free performance estimation through the batch step: calibration from the first joined
labels or from a profile, chunks on the model-metrics topic, the threshold alert, state, replay,
spec errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.batch_metrics import count_batch
from driftline.agents.metric_series import declare_partition, declare_series
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import BatchOutcome, PartitionPipeline, RawRecord, RecordColumns
from driftline.agents.predictor import build_predictor
from driftline.agents.replay import build_profile, replay
from driftline.errors import SpecError
from driftline.model_io import save_model
from driftline.schemas import validate
from driftline.spec import PipelineSpec, parse_spec
from driftline.streams.model_metrics import classification_metrics
from tests.cbpe_stream import covariate_events, spec_data, train_model
from tests.changelog import drain_into

TOPIC = "cbpe.events"
N, SHIFT_AT = 8_000, 5_000


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("cbpe") / "model.pkl"
    train_model(p)
    return p


def _spec(model_path: Path, **pe: Any) -> PipelineSpec:
    return parse_spec(spec_data("cbpe", TOPIC, model_path, **pe))


def _pipe(spec: PipelineSpec, partition: int = 0) -> PartitionPipeline:
    pred, version = build_predictor(spec)
    return PartitionPipeline(spec, partition, pred, version)


def _records(docs: list[dict[str, Any]]) -> list[RawRecord]:
    return [
        RawRecord(TOPIC, 0, i, None, d["user_id"].encode(), orjson.dumps(d))
        for i, d in enumerate(docs)
    ]


def _labels(pids: list[int], y: np.ndarray, offset0: int = 0) -> RecordColumns:
    recs = [
        RawRecord(f"{TOPIC}.labels", 0, offset0 + k, 1_767_225_600_000 + 10 * i, b"k",
                  orjson.dumps({"prediction_id": f"{TOPIC}:0:{i}", "label": int(y[i])}))
        for k, i in enumerate(pids)
    ]  # fmt: skip
    return RecordColumns.from_records(recs)


def _run(pipe: PartitionPipeline, recs: list[RawRecord], y: np.ndarray, batch: int,
         labelled: int) -> list[BatchOutcome]:  # fmt: skip
    """Events in batches; after each batch, the labels of its events among the first
    ``labelled`` (the reference)."""
    outs = []
    for s in range(0, len(recs), batch):
        part = recs[s : s + batch]
        outs.append(pipe.process(part))
        pids = [r.offset for r in part if r.offset < labelled]
        if pids:
            outs.append(pipe.process_labels(_labels(pids, y, pids[0])))
    return outs


def _messages(outs: list[BatchOutcome], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for o in outs for t, _k, v in o.all_messages() if t == topic]


def _chunks(outs: list[BatchOutcome]) -> list[dict[str, Any]]:
    docs = _messages(outs, f"{TOPIC}.model_metrics")
    return [d for d in docs if "estimated_performance" in d]


def test_estimates_follow_the_realized_accuracy_and_alert(model_path: Path) -> None:
    spec = _spec(model_path, thresholds={"accuracy": 0.7})
    docs, y = covariate_events(N, SHIFT_AT)
    outs = _run(_pipe(spec), _records(docs), y, 700, labelled=1_000)
    chunks = _chunks(outs)
    # chunks 0 and 1 complete before the 1,000 reference labels fit the calibration
    assert [c["estimated_performance"]["chunk"] for c in chunks] == list(range(2, N // 500))
    scores = np.array(
        [d["score"] for d in _messages(outs, f"{TOPIC}.predictions")], dtype=np.float64
    )
    errors = []
    for doc in chunks:
        validate("model_metrics", doc)
        ep = doc["estimated_performance"]
        assert ep["n"] == 500 and ep["last_offset"] - ep["first_offset"] == 499
        assert ep["calibration"] == {"source": "labels", "n_reference": 1_000}
        assert doc["windows"]["last_1000"]["n"] == 1_000.0  # the label side's, carried along
        sl = slice(ep["first_offset"], ep["last_offset"] + 1)
        realized = classification_metrics(y[sl], scores[sl])
        for m in ("accuracy", "f1", "auc"):
            band = ep["metrics"][m]
            assert band["lower"] <= band["estimate"] <= band["upper"]
            errors.append(abs(band["estimate"] - realized[m]))
            assert band["lower"] - 0.02 <= realized[m] <= band["upper"] + 0.02, (m, ep["chunk"])
    assert np.mean(errors) < 0.03
    before = [c["estimated_performance"]["metrics"]["accuracy"]["estimate"] for c in chunks[:6]]
    after = [c["estimated_performance"]["metrics"]["accuracy"]["estimate"] for c in chunks[-5:]]
    assert min(before) > 0.75 and max(after) < 0.7  # the covariate shift lowers the accuracy
    alerts = [a for o in outs for a in o.alerts]
    assert [(a["kind"], a["target"], a["status"]) for a in alerts] == [
        ("estimated_performance", "accuracy", "firing")
    ]
    a = alerts[0]
    validate("alert", a)
    assert a["window"]["start_offset"] >= SHIFT_AT - 500 and a["statistic"] < 0.7
    assert a["threshold"] == 0.7 and a["detector_type"] == "cbpe"
    assert "first 1000 joined labels of partition 0" in a["reference"]["description"]


def test_metrics_and_firing_series(model_path: Path) -> None:
    spec = _spec(model_path, thresholds={"accuracy": 0.7, "f1": 0.1})
    docs, y = covariate_events(N, SHIFT_AT)
    pipe = _pipe(spec)
    m = WorkerMetrics("cbpe")
    declare_series(m, spec)
    declare_partition(m, pipe)
    text = m.exposition().decode()
    assert 'driftline_estimated_performance_firing{metric="accuracy",partition="0"} 0.0' in text
    assert 'driftline_alerts_total{detector="estimated_performance",kind="estimated_performance"' \
        in text  # fmt: skip
    outs = _run(pipe, _records(docs), y, 1_000, labelled=1_000)
    count_batch(m, [(TOPIC, 0, o) for o in outs], 0.0, None, 0.0)
    text = m.exposition().decode()
    last = _chunks(outs)[-1]["estimated_performance"]["metrics"]
    for metric, band in last.items():
        for bound in ("estimate", "lower", "upper"):
            line = (f'driftline_estimated_performance{{bound="{bound}",metric="{metric}",'
                    f'partition="0"}} {band[bound]!r}')  # fmt: skip
            assert line in text
    assert 'driftline_estimated_performance_firing{metric="accuracy",partition="0"} 1.0' in text
    assert 'driftline_estimated_performance_firing{metric="f1",partition="0"} 0.0' in text
    assert f"driftline_estimated_chunks_total {N // 500 - 2}.0" in text
    m.remove_partition(0)
    assert "driftline_estimated_performance{" not in m.exposition().decode()


def test_state_round_trip_mid_chunk(model_path: Path) -> None:
    spec = _spec(model_path)
    docs, y = covariate_events(4_000, 2_500)
    recs = _records(docs)
    ref = _run(_pipe(spec), recs, y, 300, labelled=1_000)
    a = _pipe(spec)
    first: list[BatchOutcome] = []
    changelog: dict[bytes, bytes] = {}
    for s in range(0, 1_800, 300):  # persist like the runner: the label log, then the snapshot
        first += _run(a, recs[s : s + 300], y, 300, labelled=1_000)
        drain_into(a, changelog)
    snap = orjson.loads(orjson.dumps(a.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY))
    assert snap["estimate"]["kind"] == "performance_estimator"
    b = _pipe(spec)
    b.restore(snap, changelog)
    rest = [b.process(recs[s : s + 300]) for s in range(1_800, 4_000, 300)]

    def strip(outs: list[BatchOutcome]) -> list[Any]:
        return [{k: v for k, v in d.items() if k != "computed_at_ms"} for d in _chunks(outs)]

    assert strip(first + rest) == strip(ref)


def test_profile_calibration_gives_replay_and_worker_the_same_chunks(
    model_path: Path, tmp_path: Path
) -> None:
    docs, y = covariate_events(N, SHIFT_AT)
    train = tmp_path / "train.jsonl"  # labelled reference events: the label in each event
    labelled = zip(docs[:3_000], y[:3_000].tolist(), strict=True)
    train.write_bytes(b"\n".join(orjson.dumps({**d, "label": v}) for d, v in labelled))
    base = _spec(model_path)
    profile = build_profile(base, train, progress=False)
    validate("profile", profile)
    assert profile["calibration"]["n_fit"] == 3_000
    prof = tmp_path / "reference.json"
    prof.write_bytes(orjson.dumps(profile))
    spec = _spec(model_path, labels=None, reference_profile=str(prof),
                 thresholds={"accuracy": 0.7})  # fmt: skip
    assert spec.labels is None
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(d) for d in docs[3_000:]))
    out_metrics, out_alerts = tmp_path / "mm.jsonl", tmp_path / "alerts.jsonl"
    stats = replay(spec, events, tmp_path / "f.jsonl", progress=False,
                   model_metrics_path=out_metrics, alerts_path=out_alerts)  # fmt: skip
    offline = [orjson.loads(line) for line in out_metrics.read_bytes().splitlines()]
    assert stats.model_metrics == len(offline) == (N - 3_000) // 500
    for d in offline:
        validate("model_metrics", d)
        assert d["estimated_performance"]["calibration"] == {"source": "profile",
                                                             "n_reference": 3_000}  # fmt: skip
        assert "windows" not in d
    # the worker's batch step, other batches: the same chunks (the replay's topic name aside)
    pipe = _pipe(spec)
    recs = [RawRecord(f"replay:{events.name}", 0, i, None, b"k", orjson.dumps(d))
            for i, d in enumerate(docs[3_000:])]  # fmt: skip
    outs = [pipe.process(recs[s : s + 333]) for s in range(0, len(recs), 333)]
    online = _chunks(outs)
    drop = {"computed_at_ms"}
    assert [{k: v for k, v in d.items() if k not in drop} for d in online] == [
        {k: v for k, v in d.items() if k not in drop} for d in offline
    ]
    offline_alerts = [orjson.loads(line) for line in out_alerts.read_bytes().splitlines()]
    assert [a["status"] for a in offline_alerts] == ["firing"]
    assert offline_alerts[0]["alert_id"] == next(a for o in outs for a in o.alerts)["alert_id"]


@pytest.mark.parametrize(
    ("pe", "drop_labels", "message"),
    [
        ({}, True, "needs labelled examples"),
        ({"reference_profile": "nope.json"}, True, "no profile at"),
        ({"chunk_size": 1}, False, "chunk_size"),
        ({"chunk_size": 100_001}, False, "chunk_size"),
        ({"reference_size": 100_001}, False, "reference_size"),
        ({"thresholds": {"accuracy": 1.5}}, False, "thresholds.accuracy"),
        ({"thresholds": {"mae": 0.5}}, False, "mae"),
        ({"band_sigmas": 0}, False, "band_sigmas"),
    ],
)
def test_bad_sections_fail_at_start(
    model_path: Path, tmp_path: Path, pe: dict, drop_labels: bool, message: str
) -> None:
    data = spec_data("cbpe", TOPIC, model_path, **pe, **({"labels": None} if drop_labels else {}))
    with pytest.raises(SpecError, match=message):
        parse_spec(data, base_dir=tmp_path)


def test_profile_without_calibration_and_regressor_are_refused(
    model_path: Path, tmp_path: Path
) -> None:
    prof = tmp_path / "p.json"
    prof.write_bytes(orjson.dumps({"columns": {}}))
    data = spec_data("cbpe", TOPIC, model_path, labels=None, reference_profile=str(prof))
    with pytest.raises(SpecError, match="has no calibration"):
        parse_spec(data)
    no_model = spec_data("cbpe", TOPIC, model_path)
    del no_model["model"], no_model["labels"]
    with pytest.raises(SpecError, match=r"add a \[model\] section"):
        parse_spec(no_model)
    from river import linear_model

    reg = tmp_path / "reg.pkl"
    save_model(linear_model.LinearRegression(), reg)
    with pytest.raises(SpecError, match="is a regressor"):
        build_predictor(parse_spec(spec_data("cbpe", TOPIC, reg)))


def test_schema_defaults() -> None:
    from driftline.spec import default_of

    assert default_of("performance_estimation.chunk_size") == 1000
    assert default_of("performance_estimation.reference_size") == 2000
    assert default_of("performance_estimation.band_sigmas") == 3.0
    assert default_of("performance_estimation.thresholds") == {}
    assert not math.isnan(default_of("performance_estimation.draws"))


def test_readme_example_section_is_valid(model_path: Path) -> None:
    import re
    import tomllib

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Performance without labels (CBPE)", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    pe = tomllib.loads(block[1])["performance_estimation"]
    spec = parse_spec(spec_data("cbpe", TOPIC, model_path, **pe))
    assert spec.performance_estimation is not None
    assert spec.performance_estimation.thresholds == {"accuracy": 0.75, "f1": 0.6}
    assert spec.performance_estimation.chunk_size == 1000
