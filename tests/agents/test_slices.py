"""Slices through the batch step: per-slice metrics from joined labels, the slice alert, state."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score

from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.pipeline import BatchOutcome, RawRecord
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.schemas import validate
from driftline.spec import PipelineSpec, parse_spec
from driftline.streams.model_metrics import classification_metrics
from tests.agents.test_labels import _pipe, _run
from tests.agents.test_labels import model_path as model_path
from tests.changelog import drain_into

N, DROP_AT, T0 = 6_000, 3_000, 1_767_225_600_000


def _spec(model_path: Path, slices: list[dict[str, Any]] | None = None) -> PipelineSpec:
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model_path)
    data["detectors"] = []
    data["labels"] = {"ttl_ms": 5_000, "count_window": 300, "time_window_ms": 10_000}
    if slices is not None:
        data["slices"] = slices
    return parse_spec(data)


def _stream() -> tuple[list[RawRecord], np.ndarray, np.ndarray]:
    """Events, their labels (the model's concept), and their country; from DROP_AT on, "fr"
    gets the opposite label (its accuracy collapses, the others hold)."""
    s = SyntheticStream(n=N, shift_at=N, seed=3, n_entities=50)
    recs = [
        RawRecord("driftline.demo.events", 0, i, e["ts"], e["user_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(s.events())
    ]
    a = s.arrays()
    y = labels_for(a["amount"], a["latency_ms"], 5).astype(float)
    fr = a["country"] == "fr"
    y[DROP_AT:][fr[DROP_AT:]] = 1.0 - y[DROP_AT:][fr[DROP_AT:]]
    return recs, y, a["country"]


def _batches(events: list[RawRecord], y: np.ndarray, batch: int = 300):
    """Each event batch, then the labels of its events (timed 1 s after their events)."""
    for s in range(0, N, batch):
        yield "events", events[s : s + batch]
        labels = []
        for i in range(s, min(s + batch, N)):
            doc = {"prediction_id": f"driftline.demo.events:0:{i}", "label": int(y[i])}
            t = T0 + 10 * i + 1_000
            labels.append(RawRecord("driftline.labels", 0, i, t, b"k", orjson.dumps(doc)))
        yield "labels", labels


SLICE = {"field": "country", "min_samples": 100, "margin": 0.15}


def test_slice_alert_when_one_country_degrades_and_the_global_holds(model_path: Path) -> None:
    spec = _spec(model_path, [SLICE])
    events, y, country = _stream()
    outs = _run(_pipe(spec), list(_batches(events, y)))
    alerts = [a for o in outs for a in o.alerts]
    for a in alerts:
        validate("alert", a)
    firing = [a for a in alerts if a["kind"] == "slice" and a["status"] == "firing"]
    assert [a["target"] for a in firing] == ["country=fr"]
    a = firing[0]
    # raised by a label of an event after the drop, within the first count window of fr labels
    assert DROP_AT * 10 + T0 < a["window"]["event_time_ms"] < T0 + 10 * (DROP_AT + 1_500)
    sl = a["slice"]
    assert sl["gap"] == pytest.approx(sl["global_value"] - sl["slice_value"])
    assert sl["gap"] > 0.15 and sl["n_slice"] >= 100 and a["detector"] == "slice:country"
    msgs = [orjson.loads(v) for o in outs for t, _, v in o.all_messages()
            if t == "driftline.model_metrics"]  # fmt: skip
    for m in msgs:
        validate("model_metrics", m)
    # the global accuracy held (within 0.1 of its level before the drop) while fr's fell
    before = [m for m in msgs if m["label_time_ms"] < T0 + 10 * DROP_AT][-1]
    pre = before["windows"]["10s"]["accuracy"]
    assert pre - 0.1 < sl["global_value"] and sl["slice_value"] < pre - 0.2
    last = msgs[-1]["slices"]["country"]
    assert set(last["values"]) == {"de", "fr", "us", "br"} and last["firing"] == ["fr"]
    # per-slice accuracy = sklearn's over that country's labelled predictions of the last 10 s
    preds = [orjson.loads(v) for o in outs for t, _, v in o.all_messages()
             if t == "driftline.predictions"]  # fmt: skip
    score = np.array([p["score"] for p in preds])
    in_window = np.arange(N) >= N - 1_000  # labels timed (t_last - 10 s, t_last]
    for c in ("de", "fr", "us", "br"):
        rows = np.flatnonzero((country == c) & in_window)
        want = accuracy_score(y[rows].astype(int), (score[rows] >= 0.5).astype(int))
        assert last["values"][c]["accuracy"] == pytest.approx(want, abs=1e-12)
        assert last["values"][c]["n"] == rows.size
    readings = {(s, v, m): x for o in outs if o.labels for s, v, m, x in o.labels.slice_metrics}
    assert readings[("country", "fr", "accuracy")] == last["values"]["fr"]["accuracy"]


def test_no_slice_alert_without_a_segment_drop(model_path: Path) -> None:
    spec = _spec(model_path, [SLICE])
    events, y, _ = _stream()
    s = SyntheticStream(n=N, shift_at=N, seed=3, n_entities=50).arrays()
    y = labels_for(s["amount"], s["latency_ms"], 5).astype(float)  # no drop anywhere
    outs = _run(_pipe(spec), list(_batches(events, y)))
    assert [a for o in outs for a in o.alerts if a["kind"] == "slice"] == []


@pytest.mark.parametrize(
    ("slice_spec", "values"),
    [
        ({"field": "country", "values": ["fr", "de"]}, {"fr", "de", "other"}),
        ({"field": "country", "max_values": 2}, None),  # the first two seen, then 'other'
    ],
)
def test_bounded_values_and_the_other_bucket(
    model_path: Path, slice_spec: dict[str, Any], values: set[str] | None
) -> None:
    spec = _spec(model_path, [{**slice_spec, "window": "count", "min_samples": 100}])
    events, y, country = _stream()
    outs = _run(_pipe(spec), list(_batches(events, y))[:10])
    got = orjson.loads([v for o in outs for t, _, v in o.all_messages()
                        if t == "driftline.model_metrics"][-1])["slices"]["country"]  # fmt: skip
    if values is None:
        first_two = list(dict.fromkeys(country.tolist()))[:2]
        values = {*first_two, "other"}
    assert set(got["values"]) == values
    seen = country[:1_500]  # 5 label batches; each value's count window holds its last 300
    for v in values - {"other"}:
        assert got["values"][v]["n"] == min(300, int((seen == v).sum()))
    n_other = int((~np.isin(seen, list(values))).sum())
    assert got["values"]["other"]["n"] == min(300, n_other)


def test_slice_state_recovers_mid_stream(model_path: Path) -> None:
    spec = _spec(model_path, [SLICE])
    events, y, _ = _stream()
    batches = list(_batches(events, y))
    ref_out = _run(_pipe(spec), batches)
    changelog: dict[bytes, bytes] = {}
    a = _pipe(spec)
    cut = len(batches) // 2 + 1
    a_out: list[BatchOutcome] = []
    snap = None
    for b in batches[:cut]:
        a_out += _run(a, [b])
        drain_into(a, changelog)
        snap = orjson.loads(orjson.dumps(a.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY))
    b = _pipe(spec)
    b.restore(snap, changelog)
    b_out = a_out + _run(b, batches[cut:])

    def docs(outs: list[BatchOutcome]) -> list[Any]:
        res = []
        for o in outs:
            for t, _, v in o.all_messages():
                d = orjson.loads(v)
                for k in ("computed_at_ms", "detected_at_ms", "latency_ms", "freshness_ms"):
                    d.pop(k, None)
                res.append((t, d))
        return res

    assert docs(b_out) == docs(ref_out)


def test_slices_added_to_a_running_pipeline(model_path: Path) -> None:
    """State written without slices: the waiting predictions join into 'other', new ones into
    their slice; nothing fails."""
    events, y, _ = _stream()
    batches = list(_batches(events, y))
    old = _pipe(_spec(model_path))
    changelog: dict[bytes, bytes] = {}
    _run(old, batches[:3])  # events, labels, events: the last 300 predictions wait
    for key, value in old.drain_log():
        if value is not None:
            changelog[key] = value
    snap = orjson.loads(orjson.dumps(old.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY))
    new = _pipe(_spec(model_path, [{"field": "country", "values": ["fr"]}]))
    new.restore(snap, changelog)
    outs = _run(new, batches[3:6])
    got = orjson.loads([v for o in outs for t, _, v in o.all_messages()
                        if t == "driftline.model_metrics"][-1])["slices"]["country"]  # fmt: skip
    assert got["values"]["other"]["n"] > 300  # the 300 waiting, and the later non-fr ones
    assert 0 < got["values"]["fr"]["n"] < 300


def _shifted_events(shift: float) -> list[RawRecord]:
    """The stream with "fr"'s amounts moved by ``shift`` from DROP_AT on (the others as they
    were)."""
    out = []
    for i, e in enumerate(SyntheticStream(n=N, shift_at=N, seed=3, n_entities=50).events()):
        if i >= DROP_AT and e["country"] == "fr":
            e = {**e, "amount": e["amount"] + shift}
        out.append(RawRecord("driftline.demo.events", 0, i, e["ts"], e["user_id"].encode(),
                             orjson.dumps(e)))  # fmt: skip
    return out


def test_detectors_per_slice_value(model_path: Path) -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model_path)
    ks = {"type": "ks", "target": "amount", "reference_size": 300, "window_size": 300,
          "stride": 50, "alpha": 1e-6}  # fmt: skip
    data["detectors"] = [{"name": "amount_ks", **ks}]
    data["slices"] = [{"field": "country", "detectors": ["amount_ks"]}]
    spec = parse_spec(data)
    pipe = _pipe(spec)
    events = _shifted_events(150.0)
    outs = [pipe.process(events[s : s + 500]) for s in range(0, N, 500)]
    alerts = [a for o in outs for a in o.alerts if a["kind"] == "slice"]
    for a in alerts:
        validate("alert", a)
    assert [(a["target"], a["status"]) for a in alerts] == [("country=fr", "firing")]
    a = alerts[0]
    assert a["detector"] == "amount_ks@country" and a["slice"]["detector"] == "amount_ks"
    assert a["window"]["offset"] >= DROP_AT and a["slice"]["global_firing"] in (True, False)
    assert a["threshold"] == pytest.approx(1e-6 / 21)  # alpha split over 20 values + "other"
    # the state goes on after a restore: the same alerts as an uninterrupted run
    ref = _pipe(spec)
    ref_alerts = [a for s in range(0, N, 500) for a in ref.process(events[s : s + 500]).alerts]
    b = _pipe(spec)
    for s in range(0, DROP_AT, 500):
        b.process(events[s : s + 500])
    c = _pipe(spec)
    c.restore(orjson.loads(orjson.dumps(b.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)))
    rest = [a for s in range(DROP_AT, N, 500) for a in c.process(events[s : s + 500]).alerts]
    strip = lambda xs: [{k: v for k, v in x.items() if k != "detected_at_ms"} for x in xs]  # noqa: E731
    assert strip(rest) == strip([a for a in ref_alerts if a["window"]["offset"] >= DROP_AT])


def test_estimated_performance_per_slice_value(tmp_path: Path) -> None:
    """With [performance_estimation], each value's predictions are estimated in chunks under
    the partition's calibration; the last chunk's estimate equals CBPE's on those scores."""
    from driftline.streams.performance_estimation import expected_metrics
    from tests.agents.test_estimate import _run as run_cbpe
    from tests.cbpe_stream import covariate_events, spec_data, train_model

    model = tmp_path / "model.pkl"
    train_model(model)
    topic = "cbpe.events"
    data = spec_data("cbpe", topic, model)
    data["input"]["fields"]["seg"] = "string"
    data["slices"] = [{"field": "seg"}]
    spec = parse_spec(data)
    docs, y = covariate_events(6_000, 4_000)
    for d in docs:
        d["seg"] = "pos" if d["x"] > 0.3 else "neg"
    recs = [RawRecord(topic, 0, i, None, d["user_id"].encode(), orjson.dumps(d))
            for i, d in enumerate(docs)]  # fmt: skip
    pipe = _pipe(spec)
    outs = run_cbpe(pipe, recs, y, 700, labelled=1_000)
    scores = np.array([orjson.loads(v)["score"] for o in outs for t, _, v in o.all_messages()
                       if t == f"{topic}.predictions"])  # fmt: skip
    seg = np.array([d["seg"] for d in docs])
    est = pipe.estimate_stage.estimator
    got = {(v, m): x for o in outs for s, v, m, x in o.slice_estimates if s == "seg"}
    msgs = [orjson.loads(v) for o in outs for t, _, v in o.all_messages()
            if t == f"{topic}.model_metrics" and b'"estimated"' in v]  # fmt: skip
    assert msgs
    for m in msgs:
        validate("model_metrics", m)
    for value in ("pos", "neg"):
        s = scores[seg == value]
        k = s.size // 500
        chunk = s[(k - 1) * 500 : k * 500]
        want = expected_metrics(est.calibrator.predict(chunk), chunk, est.threshold)
        for metric, v in want.items():
            assert got[(value, metric)] == pytest.approx(v, abs=1e-12, nan_ok=True)
        assert got[(value, "n")] == 500
        realized = classification_metrics(y[seg == value][(k - 1) * 500 : k * 500], chunk)
        # covariate shift only: the estimate follows the realized accuracy of the chunk (seen:
        # off by 0.074 on "pos" after the shift, 0.014 on "neg")
        assert abs(want["accuracy"] - realized["accuracy"]) < 0.1
    assert set(msgs[-1]["slices"]["seg"]["estimated"]) <= {"pos", "neg"}


def test_label_free_slice_alert_from_estimates(tmp_path: Path) -> None:
    """Without labels after the reference: one segment's inputs move to the decision boundary
    (covariate shift), its estimated accuracy falls while the partition's holds -> a slice
    alert with source 'estimated' for that segment only."""
    from tests.agents.test_estimate import _run as run_cbpe
    from tests.cbpe_stream import covariate_events, spec_data, train_model, truth

    model = tmp_path / "model.pkl"
    train_model(model)
    topic = "cbpe.events"
    data = spec_data("cbpe", topic, model)
    data["input"]["fields"]["seg"] = "string"
    data["slices"] = [{"field": "seg", "margin": 0.1}]
    spec = parse_spec(data)
    n, shift = 8_000, 3_000
    docs, y = covariate_events(n, n)  # no global shift
    rng = np.random.default_rng(3)
    for i, d in enumerate(docs):
        d["seg"] = "a" if i % 4 == 0 else "b"
        if i >= shift and d["seg"] == "a":  # segment a moves to the decision boundary
            d["x"] = float(rng.normal(0.25, 0.2))
            y[i] = truth(np.array([d["x"]]), rng)[0]
    recs = [RawRecord(topic, 0, i, None, d["user_id"].encode(), orjson.dumps(d))
            for i, d in enumerate(docs)]  # fmt: skip
    outs = run_cbpe(_pipe(spec), recs, y, 700, labelled=1_000)
    alerts = [a for o in outs for a in o.alerts if a["kind"] == "slice"]
    for a in alerts:
        validate("alert", a)
    firing = [a for a in alerts if a["status"] == "firing"]
    assert [(a["target"], a["detector"]) for a in firing] == [("seg=a", "slice:seg:estimated")]
    a = firing[0]
    # raised by the prediction completing a's first chunk after the shift: a's 1,500th event
    assert a["slice"]["source"] == "estimated" and a["window"]["offset"] == 4 * 1_499
    assert a["slice"]["gap"] > 0.1 and a["slice"]["n_slice"] == 500
    assert a["slice"]["global_value"] - a["slice"]["slice_value"] == pytest.approx(
        a["slice"]["gap"]
    )
