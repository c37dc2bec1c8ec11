"""``--labels``: a labels file joined in a replay and a report as the worker joins the labels
topic: realized model metrics, the error detector and a slice alert, the same in both."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.demo import _to_toml, ks_adwin_spec_text, train_demo_model
from driftline.agents.replay import build_profile, replay
from driftline.agents.replay_labels import LabelFeed
from driftline.agents.report import report_of_file
from driftline.agents.report_render import render_report
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.cli import main as cli_main
from driftline.io_files import read_records
from driftline.schemas import validate
from driftline.spec import parse_spec
from tests.agents.test_report import _pairs
from tests.cbpe_stream import covariate_events, spec_data, train_model

N, DROP_AT = 6_000, 3_000
INPUTS = ["amount", "latency_ms", "amount_mean_1m"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    return labelled_files(tmp_path_factory.mktemp("labels"))


def labelled_files(tmp: Path) -> tuple[dict[str, Any], Path, Path]:
    """Spec data (event-id join, a label time field, an error detector, a country slice),
    an events file and its labels file (1 s late, shuffled; from DROP_AT on "fr" gets the
    opposite label, and a last line is not JSON)."""
    model = tmp / "m.pkl"
    train_demo_model(model, INPUTS, n=4_000)
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model)
    data["input"]["fields"]["event_id"] = "int"
    data["input"]["event_id_field"] = "event_id"
    data["detectors"] = [{"name": "error_ddm", "type": "ddm", "target": "error"}]
    data["labels"] = {"join_key": "event_id", "time_field": "label_ts", "ttl_ms": 60_000,
                      "count_window": 300, "time_window_ms": 10_000}  # fmt: skip
    data["slices"] = [{"field": "country", "min_samples": 100, "margin": 0.15}]
    s = SyntheticStream(n=N, shift_at=N, seed=3, n_entities=50)
    a = s.arrays()
    y = labels_for(a["amount"], a["latency_ms"], 5)
    fr = a["country"] == "fr"
    y[DROP_AT:][fr[DROP_AT:]] = 1 - y[DROP_AT:][fr[DROP_AT:]]
    events = [{**e, "event_id": i} for i, e in enumerate(s.events())]
    src = tmp / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    order = np.random.default_rng(1).permutation(N)
    labels = [
        {"user_id": events[i]["user_id"], "event_id": i, "label": int(y[i]),
         "label_ts": events[i]["ts"] + 1_000}
        for i in order.tolist()
    ]  # fmt: skip
    lab = tmp / "labels.jsonl"
    lab.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in labels) + b"{broken\n")
    return data, src, lab


@pytest.mark.parametrize("partitions", [1, 3])
def test_report_and_replay_join_the_labels_alike(
    labelled: tuple[dict[str, Any], Path, Path], tmp_path: Path, partitions: int
) -> None:
    data, src, lab = labelled
    spec = parse_spec(data)
    alerts, mm = tmp_path / "a.jsonl", tmp_path / "mm.jsonl"
    stats = replay(
        spec, src, tmp_path / "f.jsonl", alerts_path=alerts, model_metrics_path=mm,
        partitions=partitions, progress=False,
        labels=LabelFeed(spec, lab, partitions, "consistent"),
    )  # fmt: skip
    assert (stats.events, stats.labels) == (N, N + 1)
    assert stats.dead_letters == {"invalid_json": 1}
    docs = list(read_records(mm))
    for d in docs:
        validate("model_metrics", d)
    last = {}
    for d in docs:
        last[d["partition"]] = d
    # every label joined its prediction, whatever partition its entity is in
    assert sorted(last) == list(range(partitions))
    assert sum(d["labels"]["joined"] for d in last.values()) == N
    assert sum(d["labels"]["unmatched_label"] for d in last.values()) == 0
    replayed = list(read_records(alerts))
    fired = {(a["kind"], a["target"]) for a in replayed if a["status"] == "firing"}
    assert ("slice", "country=fr") in fired

    r = report_of_file(spec, src, partitions=partitions, progress=False,
                       labels=LabelFeed(spec, lab, partitions, "consistent"))  # fmt: skip
    validate("report", r)
    assert (r["summary"]["events"], r["summary"]["labels"]) == (N, N + 1)
    assert r["summary"]["dead_letters"] == {"invalid_json": 1}
    got = {d["name"]: [(e["partition"], e["status"], e["fired"]["offset"],
                        e["resolved"] and e["resolved"]["offset"]) for e in d["episodes"]]
           for d in r["detectors"] if d["episodes"]}  # fmt: skip
    assert {k: sorted(v) for k, v in got.items()} == _pairs(replayed)
    kinds = {d["name"]: d["kind"] for d in r["detectors"]}
    assert kinds["slice:country"] == "slice" and kinds["error_ddm"] == "concept"
    # the model metrics: the replay's documents, as lines
    charts = {c["title"]: c["lines"] for c in r["model_metrics"]["charts"]}
    assert r["model_metrics"]["documents"] == len(docs)
    acc = {ln["partition"]: ln["points"] for ln in charts["windows/last_300"]
           if ln["name"] == "accuracy"}  # fmt: skip
    for p, d in last.items():
        assert acc[p][-1][1] == pytest.approx(d["windows"]["last_300"]["accuracy"])
    # one chart per slice metric, a line per value
    fr_acc = {ln["name"] for ln in charts["slices/country/accuracy"]}
    assert fr_acc == {"de", "fr", "us", "br"}
    html = render_report(r)
    assert "<h3 class='metrics'>Slices</h3>" in html
    assert ">Concept drift (model errors)</h3>" in html
    assert "<td>labels replayed</td><td>6001</td>" in html


def test_cli_labels(labelled: tuple[dict[str, Any], Path, Path], tmp_path: Path, capsys) -> None:
    data, src, lab = labelled
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(data))
    out = tmp_path / "f.jsonl"
    code = cli_main(["replay", "-c", str(spec_path), "--input", str(src), "--output", str(out),
                     "--labels", str(lab), "--no-progress"])  # fmt: skip
    said = capsys.readouterr().out
    assert code == 0 and said.startswith(f"replayed {N} events and {N + 1} labels: ")
    code = cli_main(["report", "-c", str(spec_path), "--input", str(src), "--labels", str(lab),
                     "--output", str(tmp_path / "r.html"), "--no-progress"])  # fmt: skip
    assert code == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: [d.pop(k) for k in ("labels", "slices", "detectors")],
         "--labels: the spec has no [labels] section (and a model) to join them"),
        (lambda d: d["labels"].update(join_key="prediction_id"),
         '--labels: a labels file joins by event id (labels.join_key = "event_id", with '
         "input.event_id_field); prediction ids name offsets of the live topic"),
        (lambda d: d["labels"].pop("time_field"),
         "--labels: a labels file has no Kafka timestamps: set labels.time_field to the field "
         "holding each label's time"),
    ],
)  # fmt: skip
def test_labels_need_an_event_id_join_and_a_time_field(
    labelled: tuple[dict[str, Any], Path, Path], tmp_path: Path, capsys, change: Any, message: str
) -> None:
    data, src, lab = labelled
    data = {**data, "labels": dict(data["labels"])}
    change(data)
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(data))
    for cmd in (["replay", "--output", str(tmp_path / "f.jsonl")],
                ["report", "--output", str(tmp_path / "r.html")]):  # fmt: skip
        code = cli_main([*cmd, "-c", str(spec_path), "--input", str(src), "--labels", str(lab),
                         "--no-progress"])  # fmt: skip
        assert (code, capsys.readouterr().err) == (2, f"driftline: error: {message}\n")


def test_estimated_performance_beside_the_realized(tmp_path: Path) -> None:
    """CBPE (calibrated on a labelled profile) and the realized accuracy from a labels file,
    on one chart per metric; the estimate's lines are the replay's chunks."""
    model = tmp_path / "model.pkl"
    train_model(model)
    docs, y = covariate_events(8_000, 5_000)
    docs = [{**d, "event_id": i} for i, d in enumerate(docs)]
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"\n".join(orjson.dumps({**d, "label": int(v)})
                                 for d, v in zip(docs[:3_000], y[:3_000].tolist(), strict=True)))
    labels = {"topic": "cbpe.labels", "join_key": "event_id", "time_field": "label_ts",
              "ttl_ms": 600_000, "count_window": 500}  # fmt: skip
    data = spec_data("cbpe", "cbpe.events", model, labels=labels)
    data["input"]["fields"]["event_id"] = "int"
    data["input"]["event_id_field"] = "event_id"
    profile = build_profile(parse_spec(data), train, progress=False)
    (tmp_path / "ref.json").write_bytes(orjson.dumps(profile))
    data["performance_estimation"]["reference_profile"] = str(tmp_path / "ref.json")
    spec = parse_spec(data)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(d) for d in docs[3_000:]))
    lab = tmp_path / "labels.jsonl"
    lab.write_bytes(b"\n".join(
        orjson.dumps({"user_id": d["user_id"], "event_id": d["event_id"], "label": int(v),
                      "label_ts": d["ts"] + 500})
        for d, v in zip(docs[3_000:], y[3_000:].tolist(), strict=True)))  # fmt: skip
    mm = tmp_path / "mm.jsonl"
    replay(spec, events, tmp_path / "f.jsonl", model_metrics_path=mm, progress=False,
           labels=LabelFeed(spec, lab, 1, "consistent"))  # fmt: skip
    chunks = [d["estimated_performance"] for d in read_records(mm) if "estimated_performance" in d]
    assert len(chunks) == 5_000 // 500
    r = report_of_file(spec, events, progress=False, labels=LabelFeed(spec, lab, 1, "consistent"))
    validate("report", r)
    charts = {c["title"]: c["lines"] for c in r["model_metrics"]["charts"]}
    acc = {ln["name"]: ln["points"] for ln in charts["estimated_performance/metrics/accuracy"]}
    assert sorted(acc) == ["estimate", "lower", "realized (last_500)", "upper"]
    assert [p[1] for p in acc["estimate"]] == [c["metrics"]["accuracy"]["estimate"]
                                               for c in chunks]  # fmt: skip
    assert all(lo[1] <= e[1] <= hi[1] for lo, e, hi in
               zip(acc["lower"], acc["estimate"], acc["upper"], strict=True))  # fmt: skip
    # positions and chunk indexes are no lines
    assert not [t for t in charts if t.endswith(("_ms", "_offset"))]
    assert "chunk" not in {ln["name"] for lines in charts.values() for ln in lines}
    # after the covariate shift both the estimate and the realized accuracy dropped
    assert acc["estimate"][-1][1] < acc["estimate"][0][1] - 0.1
    realized = [p[1] for p in acc["realized (last_500)"] if p[1] is not None]
    assert realized[-1] < realized[0] - 0.1
    html = render_report(r)
    assert "Estimated performance (CBPE) and realized" in html
