"""Delayed labels through the batch step: join, live metrics, concept drift, importance, state."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from driftline.agents.demo import ks_adwin_spec_text, train_demo_model
from driftline.agents.pipeline import BatchOutcome, PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.errors import SpecError
from driftline.schemas import validate
from driftline.spec import PipelineSpec, parse_spec
from tests.changelog import drain_into

N, CONCEPT_AT, T0 = 6_000, 3_000, 1_767_225_600_000
INPUTS = ["amount", "latency_ms", "amount_mean_1m"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("model") / "m.pkl"
    train_demo_model(p, INPUTS, n=4_000)
    return p


def _spec(model_path: Path, **labels: Any) -> PipelineSpec:
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model_path)
    data["detectors"] = [
        {"name": "error_ddm", "type": "ddm", "target": "error"},
        {"name": "label_adwin", "type": "adwin", "target": "label", "delta": 1e-5},
    ]
    data["labels"] = {"ttl_ms": 5_000, "count_window": 200, "time_window_ms": 10_000, **labels}
    return parse_spec(data)


def _events() -> tuple[list[RawRecord], np.ndarray]:
    s = SyntheticStream(n=N, shift_at=N, seed=3, n_entities=50)
    recs = [
        RawRecord("driftline.demo.events", 0, i, e["ts"], e["user_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(s.events())
    ]
    a = s.arrays()
    y = labels_for(a["amount"], a["latency_ms"], 5).astype(float)
    # concept drift: from CONCEPT_AT on, the label no longer follows amount (only latency)
    rng = np.random.default_rng(11)
    z = 0.2 * (a["latency_ms"] - 100.0)
    y_new = (rng.random(N) < 1.0 / (1.0 + np.exp(-z))).astype(float)
    y[CONCEPT_AT:] = 1.0 - y_new[CONCEPT_AT:]
    return recs, y


def _label(i: int, y: float, t: int, offset: int, partition: int = 0) -> RawRecord:
    doc = {"prediction_id": f"driftline.demo.events:{partition}:{i}", "label": int(y)}
    return RawRecord("driftline.labels", 0, offset, t, b"k", orjson.dumps(doc))


def _labels_for_run(y: np.ndarray, seed: int = 1) -> list[RawRecord]:
    """Labels for 80% of the events, 0-3 s after the event, out of order; a few duplicates."""
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(rng.random(N) < 0.8)
    t = T0 + 10 * keep + rng.integers(0, 3_000, keep.size)
    order = np.argsort(t + rng.integers(-500, 500, keep.size), kind="stable")  # out of order
    out = []
    for k, j in enumerate(order.tolist()):
        i = int(keep[j])
        out.append(_label(i, y[i], int(t[j]), k))
    return out


def _interleave(events: list[RawRecord], labels: list[RawRecord], batch: int):
    """Batches in arrival order: labels are timed later than their events; a label batch goes
    in once the events up to its time went in (some labels come a batch early)."""
    li = 0
    for s in range(0, N, batch):
        ev = events[s : s + batch]
        yield "events", ev
        horizon = T0 + 10 * (s + batch) + 200  # a few labels arrive before their prediction
        lb = []
        while li < len(labels) and (labels[li].timestamp_ms or 0) <= horizon:
            lb.append(labels[li])
            li += 1
        if lb:
            yield "labels", lb
    if li < len(labels):
        yield "labels", labels[li:]


def _run(pipe: PartitionPipeline, batches: list[tuple[str, list[RawRecord]]]) -> list[BatchOutcome]:
    outs = []
    for kind, recs in batches:
        if kind == "events":
            outs.append(pipe.process(recs))
        else:
            from driftline.agents.pipeline import RecordColumns

            outs.append(pipe.process_labels(RecordColumns.from_records(recs)))
    return outs


def _pipe(spec: PipelineSpec) -> PartitionPipeline:
    pred, version = build_predictor(spec)
    return PartitionPipeline(spec, 0, pred, version)


def test_every_prediction_is_joined_expired_or_pending(model_path: Path) -> None:
    spec = _spec(model_path)
    events, y = _events()
    labels = _labels_for_run(y)
    pipe = _pipe(spec)
    outs = _run(pipe, list(_interleave(events, labels, 500)))
    joined = sum(o.labels.joined for o in outs if o.labels)
    counts: dict[str, int] = {}
    for o in outs:
        if o.labels:
            for k, v in o.labels.counts.items():
                counts[k] = counts.get(k, 0) + v
    j = pipe.labels.join.join
    assert joined == j.n_joined == len(labels)  # every label's prediction was waiting
    assert counts["expired_prediction"] + j.n_pending + joined == N
    assert counts["unmatched_label"] == 0 and counts["duplicate_label"] == 0
    # the unlabelled 20% expire once the clock passed their time + ttl + grace
    assert counts["expired_prediction"] > 0.15 * N
    msgs = [
        orjson.loads(v)
        for o in outs
        for t, _, v in o.all_messages()
        if t == "driftline.model_metrics"
    ]
    assert msgs
    for m in msgs:
        validate("model_metrics", m)


def test_metrics_equal_sklearn_on_the_joined_window(model_path: Path) -> None:
    spec = _spec(model_path, count_window=300, ttl_ms=100_000, time_window_ms=100_000)
    events, y = _events()
    pipe = _pipe(spec)
    preds = []
    for s in range(0, CONCEPT_AT, 1_000):
        oc = pipe.process(events[s : s + 1_000])
        preds += [orjson.loads(v) for t, _, v in oc.all_messages() if t == "driftline.predictions"]
    score = {p["source"]["offset"]: p["score"] for p in preds}
    rng = np.random.default_rng(4)
    idx = rng.permutation(CONCEPT_AT)[:1_000]  # labels in a random order, all in one batch
    t_lab = T0 + 10 * CONCEPT_AT
    recs = [_label(int(i), y[i], t_lab, k) for k, i in enumerate(idx.tolist())]
    from driftline.agents.pipeline import RecordColumns

    oc = pipe.process_labels(RecordColumns.from_records(recs))
    assert oc.labels.joined == 1_000
    got = {(m, w): v for m, w, v in oc.labels.model_metrics}
    last = idx[-300:]
    s = np.array([score[int(i)] for i in last])
    yt = y[last].astype(int)
    yp = (s >= 0.5).astype(int)
    assert got[("n", "last_300")] == 300
    assert got[("accuracy", "last_300")] == pytest.approx(accuracy_score(yt, yp), abs=1e-12)
    assert got[("precision", "last_300")] == pytest.approx(precision_score(yt, yp), abs=1e-12)
    assert got[("recall", "last_300")] == pytest.approx(recall_score(yt, yp), abs=1e-12)
    assert got[("f1", "last_300")] == pytest.approx(f1_score(yt, yp), abs=1e-12)
    assert got[("auc", "last_300")] == pytest.approx(roc_auc_score(yt, s), abs=1e-12)
    s_all = np.array([score[int(i)] for i in idx])
    assert got[("auc", "100s")] == pytest.approx(
        roc_auc_score(y[idx].astype(int), s_all), abs=1e-12
    )


def test_concept_drift_alert_after_the_change_only(model_path: Path) -> None:
    spec = _spec(model_path)
    events, y = _events()
    pipe = _pipe(spec)
    outs = _run(pipe, list(_interleave(events, _labels_for_run(y), 250)))
    alerts = [a for o in outs for a in o.alerts]
    concept = [a for a in alerts if a["kind"] == "concept" and a["status"] == "firing"]
    assert concept, "the error stream's DDM must fire after the concept change"
    for a in alerts:
        validate("alert", a)
    first = min(a["window"]["event_time_ms"] for a in concept)
    assert first >= T0 + 10 * CONCEPT_AT
    assert first <= T0 + 10 * (CONCEPT_AT + 1_500)  # detection delay: within 1,500 events
    assert all(a["window"]["topic"] == "driftline.labels" for a in concept)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)


def test_state_recovers_from_changelog_records_mid_stream(model_path: Path) -> None:
    spec = _spec(model_path, importance={"every": 200, "min_examples": 200, "window": 400})
    events, y = _events()
    batches = list(_interleave(events, _labels_for_run(y), 300))
    ref = _pipe(spec)
    ref_out = _run(ref, batches)

    changelog: dict[bytes, bytes] = {}
    a = _pipe(spec)
    a.labels.join.min_checkpoint_rows = 500  # exercise checkpoints and tombstones
    cut = len(batches) // 2
    a_out: list[BatchOutcome] = []
    kinds: list[bytes] = []
    snap = None
    for b in batches[:cut]:  # persist like the runner: the log records, then the snapshot
        a_out += _run(a, [b])
        kinds += drain_into(a, changelog)
        snap = orjson.loads(orjson.dumps(a.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY))
    assert any(b"/labels/" in k for k in kinds)
    b = _pipe(spec)
    b.restore(snap, changelog)
    assert b.labels.join.join.snapshot() == a.labels.join.join.snapshot()
    b_out = a_out + _run(b, batches[cut:])

    def strip(outs: list[BatchOutcome]) -> list[Any]:
        res = []
        for o in outs:
            for t, _, v in o.all_messages():
                d = orjson.loads(v)
                d.pop("computed_at_ms", None)
                d.pop("detected_at_ms", None)
                for k in ("dead_lettered_at_ms", "freshness_ms", "latency_ms"):
                    d.pop(k, None)
                res.append((t, d))
        return res

    assert strip(b_out) == strip(ref_out)
    # the changelog holds a bounded log: one checkpoint and the deltas after it
    heads = [k for k in changelog if k.endswith(b"/head") and b"/labels/" in k]
    assert len(heads) < cut


def test_bad_labels_are_dead_lettered_and_foreign_ones_forwarded(model_path: Path) -> None:
    from driftline.agents.pipeline import RecordColumns

    spec = _spec(model_path)
    pipe = _pipe(spec)
    events, _ = _events()
    pipe.process(events[:100])
    bad = [
        b"{nope",
        b"[1]",
        b'{"label": 1}',
        b'{"prediction_id": "driftline.demo.events:0:5", "label": 2}',
        b'{"prediction_id": "other:0:5", "label": 1}',
        b'{"prediction_id": "driftline.demo.events:0:5"}',
    ]
    recs = [RawRecord("driftline.labels", 0, i, T0, None, v) for i, v in enumerate(bad)]
    recs.append(_label(7, 1.0, T0 + 5_000, 6, partition=1))  # made on partition 1
    recs.append(_label(8, 1.0, T0 + 5_000, 7))
    oc = pipe.process_labels(RecordColumns.from_records(recs))
    assert dict(oc.dead_letters) == {
        "invalid_json": 1, "not_an_object": 1, "missing_field": 2, "wrong_type": 2
    }  # fmt: skip
    dlq = [orjson.loads(v) for t, _, v in oc.all_messages() if t == spec.output.dlq_topic]
    assert [d["source"]["offset"] for d in dlq] == [0, 1, 2, 3, 4, 5]
    for d in dlq:
        validate("dead_letter", d)
        assert d["source"]["topic"] == "driftline.labels"
    assert [(p, orjson.loads(v)["prediction_id"]) for p, _, v in oc.forwarded] == [
        (1, "driftline.demo.events:1:7")
    ]
    assert oc.labels.joined == 1
    assert oc.consumed == len(bad) + 2


def test_online_learning_changes_the_model_and_survives_a_restore(model_path: Path) -> None:
    spec = _spec(model_path, learn=True)
    events, y = _events()
    batches = list(_interleave(events, _labels_for_run(y), 500))
    pipe = _pipe(spec)
    outs = _run(pipe, batches[:6])
    learned = sum(o.labels.learned for o in outs if o.labels)
    assert learned > 0 and pipe.labels.n_learned == learned
    assert pipe.model_version_now == f"demo-logreg-1+online.p0.{learned}"
    frozen = _pipe(_spec(model_path))
    _run(frozen, batches[:6])
    nxt = events[-100:]
    s_learn = [orjson.loads(v)["score"] for t, _, v in pipe.process(nxt).all_messages()
               if t == "driftline.predictions"]  # fmt: skip
    s_frozen = [orjson.loads(v)["score"] for t, _, v in frozen.process(nxt).all_messages()
                if t == "driftline.predictions"]  # fmt: skip
    assert s_learn != s_frozen
    log: dict[bytes, bytes] = {}
    for k, v in pipe.drain_log():
        if v is not None:
            log[k] = v
    restored = _pipe(spec)
    restored.restore(orjson.loads(orjson.dumps(pipe.snapshot())), log)
    assert restored.model_version_now == pipe.model_version_now
    more = events[-50:]
    later = restored.process(more).all_messages()
    assert [v for t, _, v in later if t == "driftline.predictions"] != []


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"join_key": "event_id"}, "input.event_id_field"),
        ({"topic": "driftline.demo.events"}, "labels.topic"),
        ({"importance": {"min_examples": 900, "window": 100}}, "min_examples"),
        ({"ttl": 5}, "ttl"),
    ],
)
def test_bad_labels_spec_fails_at_start(model_path: Path, labels: dict, message: str) -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model_path)
    data["labels"] = labels
    with pytest.raises(SpecError, match=message):
        parse_spec(data)


def test_error_target_needs_labels(model_path: Path) -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model_path)
    data["detectors"] = [{"name": "e", "type": "ddm", "target": "error"}]
    with pytest.raises(SpecError, match="'error'/'label' \\(with \\[labels\\]\\)"):
        parse_spec(data)


def _stream_with(y: np.ndarray, model_path: Path, **labels: Any) -> list[dict[str, Any]]:
    spec = _spec(model_path, ttl_ms=100_000, **labels)
    events, _ = _events()
    rng = np.random.default_rng(6)
    t = T0 + 10 * np.arange(N) + rng.integers(0, 2_000, N)
    order = np.argsort(t, kind="stable")
    labs = [_label(int(i), y[i], int(t[i]), k) for k, i in enumerate(order.tolist())]
    pipe = _pipe(spec)
    return [a for o in _run(pipe, list(_interleave(events, labs, 250))) for a in o.alerts]


def test_label_shift_alert_after_the_prior_changes_only(model_path: Path) -> None:
    _, y = _events()
    y = y.copy()
    y[:CONCEPT_AT] = labels_for(*(_arrays()[k][:CONCEPT_AT] for k in ("amount", "latency_ms")), 5)
    rng = np.random.default_rng(8)
    y[CONCEPT_AT:] = (rng.random(N - CONCEPT_AT) < 0.9).astype(float)  # prior: ~50% -> 90%
    alerts = _stream_with(y, model_path)
    label = [a for a in alerts if a["kind"] == "label" and a["status"] == "firing"]
    assert label and label[0]["detector"] == "label_adwin" and label[0]["target"] == "label"
    for a in alerts:
        validate("alert", a)
    first = min(a["window"]["event_time_ms"] for a in label)  # the label's time
    assert T0 + 10 * CONCEPT_AT <= first <= T0 + 10 * (CONCEPT_AT + 1_000) + 2_000


def _arrays() -> dict[str, np.ndarray]:
    return SyntheticStream(n=N, shift_at=N, seed=3, n_entities=50).arrays()


def test_importance_alert_when_the_label_stops_following_a_feature(model_path: Path) -> None:
    a = _arrays()
    y = labels_for(a["amount"], a["latency_ms"], 5).astype(float)
    rng = np.random.default_rng(12)
    z = 0.3 * (a["latency_ms"] - 100.0)  # after the change: latency only
    y[CONCEPT_AT:] = (rng.random(N) < 1.0 / (1.0 + np.exp(-z)))[CONCEPT_AT:]
    imp = {"every": 250, "min_examples": 500, "window": 1_000, "threshold": 0.2, "n_confirm": 2}
    alerts = _stream_with(y, model_path, importance=imp)
    found = [x for x in alerts if x["kind"] == "importance" and x["status"] == "firing"]
    assert found, [x["kind"] for x in alerts]
    for x in found:
        validate("alert", x)
        assert x["detector_type"] == "importance" and x["target"] in INPUTS
        assert x["window"]["event_time_ms"] >= T0 + 10 * CONCEPT_AT


@pytest.mark.parametrize("id_type", ["string", "int"])
def test_event_id_join_key(model_path: Path, id_type: str) -> None:
    from driftline.agents.pipeline import RecordColumns

    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model_path)
    data["input"]["fields"]["event_id"] = id_type
    data["input"]["event_id_field"] = "event_id"
    data["detectors"] = []
    data["labels"] = {"join_key": "event_id", "ttl_ms": 100_000}
    spec = parse_spec(data)
    pipe = _pipe(spec)
    events = []
    for i, e in enumerate(SyntheticStream(n=200, shift_at=200, seed=1, n_entities=5).events()):
        e["event_id"] = f"ev-{i}" if id_type == "string" else 10**15 + i
        events.append(RawRecord("in", 0, i, e["ts"], e["user_id"].encode(), orjson.dumps(e)))
    pipe.process(events)
    docs = [orjson.loads(r.value) for r in events]
    labels = [
        {"user_id": d["user_id"], "event_id": d["event_id"], "label": i % 2}
        for i, d in enumerate(docs[:50])
    ]
    labels.append({"user_id": "nobody", "event_id": docs[0]["event_id"], "label": 1})
    labels.append({"user_id": docs[0]["user_id"], "label": 1})  # no event id: dead letter
    recs = [RawRecord("driftline.labels", 0, k, T0 + 3_000, None, orjson.dumps(d))
            for k, d in enumerate(labels)]  # fmt: skip
    oc = pipe.process_labels(RecordColumns.from_records(recs))
    assert oc.labels.joined == 50
    assert dict(oc.dead_letters) == {"missing_field": 1}
    assert pipe.labels.join.join.n_pending_labels == 1  # (nobody, ev-0) waits for its event
