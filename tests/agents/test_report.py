"""``driftline report``: the JSON twin's values (episodes are the alerts ``replay`` writes),
distributions, series and model metrics; the HTML's escaping; the command line."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.demo import _to_toml
from driftline.agents.replay import replay
from driftline.agents.report import report_of_file, write_report
from driftline.agents.report_data import (
    MAX_POINTS,
    ReportCollector,
    categorical_shares,
    episodes_of,
    flatten_numbers,
    numeric_summary,
    thin,
)
from driftline.agents.report_render import MAX_EPISODE_ROWS, render_report
from driftline.agents.stages.outcome import BatchOutcome
from driftline.agents.svg import fmt_num
from driftline.agents.synthetic import SyntheticStream
from driftline.cli import main as cli_main
from driftline.io_files import read_records
from driftline.schemas import validate
from driftline.spec import PipelineSpec, parse_spec
from tests.agents.test_replay import _alerting_spec_data
from tests.multivariate_stream import flip_events, flip_spec

N = 8000
HOSTILE = '<script>alert("x")</script>'


def _spec_data(model: bool = False) -> dict[str, Any]:
    """The demo spec with detectors that fire within a few thousand events."""
    return _alerting_spec_data(model)


def _events_file(tmp: Path, n: int = N, seed: int = 3) -> Path:
    src = tmp / "e.jsonl"
    events = SyntheticStream(n=n, shift_at=n // 2, seed=seed, n_entities=50).events()
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return src


def _pairs(alerts: list[dict[str, Any]]) -> dict[str, list[tuple[int, str, int, int | None]]]:
    """Episodes from an alerts file, written out independently of ``episodes_of``: per
    detector (partition, status, firing offset, resolving offset)."""
    out: dict[str, list[tuple[int, str, int, int | None]]] = {}
    for a in alerts:
        p, off = a["window"]["partition"], a["window"]["offset"]
        eps = out.setdefault(a["detector"], [])
        if a["status"] == "firing":
            eps.append((p, "open", off, None))
        else:
            i = max(i for i, e in enumerate(eps) if e[0] == p and e[1] == "open")
            eps[i] = (p, "resolved", eps[i][2], off)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize(
    ("partitions", "partitioner", "model"),
    [(1, "consistent", True), (3, "murmur2", False), (4, "consistent", False)],
)
def test_episodes_are_the_alerts_replay_writes(
    tmp_path: Path, partitions: int, partitioner: str, model: bool
) -> None:
    spec = parse_spec(_spec_data(model))
    src = _events_file(tmp_path)
    alerts = tmp_path / "alerts.jsonl"
    stats = replay(
        spec, src, tmp_path / "f.jsonl", alerts_path=alerts, partitions=partitions,
        partitioner=partitioner, progress=False,
    )  # fmt: skip
    replayed = list(read_records(alerts))
    assert replayed, "the shifted stream must make the detectors fire"
    r = report_of_file(spec, src, partitions=partitions, partitioner=partitioner, progress=False)
    validate("report", r)
    got = {
        d["name"]: sorted(
            (e["partition"], e["status"], e["fired"]["offset"],
             e["resolved"] and e["resolved"]["offset"])
            for e in d["episodes"]
        )
        for d in r["detectors"]
        if d["episodes"]
    }  # fmt: skip
    assert got == _pairs(replayed)
    ids = {e["fired"]["alert_id"] for d in r["detectors"] for e in d["episodes"]}
    assert ids == {a["alert_id"] for a in replayed if a["status"] == "firing"}
    s = r["summary"]
    assert (s["events"], s["feature_vectors"], s["alerts"]) == (
        stats.events, stats.feature_vectors, stats.alerts
    )  # fmt: skip
    assert s["predictions"] == (N if model else 0)
    assert s["episodes"] == sum(len(v) for v in got.values())
    assert s["partitions"] == sorted({a["window"]["partition"] for a in replayed} | set(
        s["partitions"]))  # fmt: skip
    assert len(s["partitions"]) == partitions
    for d in r["detectors"]:
        for e in d["episodes"]:
            f = e["fired"]
            assert f["start_offset"] is None or f["start_offset"] <= f["offset"]
            assert f["event_time_ms"] >= s["first_event_time_ms"]


def test_distribution_series_and_summary_values(tmp_path: Path) -> None:
    spec = parse_spec(_spec_data())
    src = _events_file(tmp_path)
    events = [orjson.loads(line) for line in src.read_bytes().splitlines()]
    r = report_of_file(spec, src, progress=False, batch=1000)
    ks, adwin = r["detectors"]
    assert (ks["name"], ks["type"], ks["target"], ks["kind"]) == ("amount_ks", "ks", "amount",
                                                                 "covariate")  # fmt: skip
    dist = ks["distribution"]
    amounts = np.array([e["amount"] for e in events])
    # reference: the first reference_size values; current: the last window_size values
    assert dist["reference"] == numeric_summary(amounts[:500])
    assert dist["current"] == numeric_summary(amounts[-500:])
    assert (dist["n_reference"], dist["n_current"]) == (500, 500)
    assert dist["current"]["quantiles"]["p50"] == pytest.approx(float(np.median(amounts[-500:])))
    h = dist["histogram"]
    assert len(h["edges"]) == len(h["reference"]) + 1 == 31
    assert sum(h["reference"]) == pytest.approx(1.0) and sum(h["current"]) == pytest.approx(1.0)
    # ADWIN names no sizes: 1000 values each side
    assert adwin["distribution"]["n_reference"] == 1000
    assert adwin["distribution"]["reference"] == numeric_summary(
        np.array([e["latency_ms"] for e in events[:1000]])
    )
    assert "adaptive" in adwin["reference"]
    # one reading per batch: its last event's time and offset
    (series,) = ks["series"]
    assert series["partition"] == 0
    assert [p[1] for p in series["points"]] == list(range(999, N, 1000))
    assert [p[0] for p in series["points"]] == [events[i]["ts"] for i in range(999, N, 1000)]
    firing = ks["episodes"][0]["fired"]
    after = [p for p in series["points"] if p[1] >= firing["offset"]]
    assert after[0][3] < firing["threshold"]  # the p-value at the batch that fired
    assert ks["threshold"] == pytest.approx(1e-6)
    assert r["summary"]["first_event_time_ms"] == min(e["ts"] for e in events)
    assert r["summary"]["last_event_time_ms"] == max(e["ts"] for e in events)
    assert r["model_metrics"] == {"documents": 0, "charts": []}


def test_dead_letters_and_counts(tmp_path: Path) -> None:
    spec = parse_spec(_spec_data())
    src = _events_file(tmp_path, n=3000)
    src.write_bytes(b"{oops\n[1]\n" + src.read_bytes())
    r = report_of_file(spec, src, progress=False)
    assert r["summary"]["events"] == 3002
    assert r["summary"]["dead_letters"] == {"invalid_json": 1, "not_an_object": 1}
    validate("report", r)


@pytest.mark.parametrize(
    ("n", "limit", "expected"),
    [
        (3, 5, [0.0, 1.0, 2.0]),  # fewer than the limit: all
        (10, 2, [4.0, 9.0]),  # the largest of each half
        (6, 3, [1.0, 3.0, 5.0]),
    ],
)
def test_thin_keeps_each_stretch_peak(n: int, limit: int, expected: list[float]) -> None:
    pts = [[i, i, float(i)] for i in range(n)]
    assert [p[2] for p in thin(pts, limit=limit)] == expected


def test_thin_treats_missing_values_as_lowest() -> None:
    assert thin([[0, 0, None], [1, 1, 0.5], [2, 2, None], [3, 3, None]], limit=2) == [
        [1, 1, 0.5],
        [2, 2, None],
    ]
    assert len(thin([[i, i, 1.0] for i in range(10_000)])) == MAX_POINTS


@pytest.mark.parametrize(
    ("ref", "cur", "expected"),
    [
        ({"a": 1}, {"a": 3}, [("a", 1.0, 1.0)]),
        ({"a": 1, "b": 3}, {}, [("a", 0.25, 0.0), ("b", 0.75, 0.0)]),
        ({}, {"x": 2}, [("x", 0.0, 1.0)]),
    ],
)
def test_categorical_shares(
    ref: dict[str, int], cur: dict[str, int], expected: list[tuple[str, float, float]]
) -> None:
    got = categorical_shares(Counter(ref), Counter(cur))
    assert [(c["name"], c["reference"], c["current"]) for c in got] == expected


def test_categorical_shares_sum_the_rest_into_other() -> None:
    ref = Counter({f"c{i:02d}": 1 for i in range(20)})
    cur = Counter({"c00": 10})
    got = categorical_shares(ref, cur)
    assert len(got) == 13 and got[-1]["name"] == "other"
    assert sum(c["reference"] for c in got) == pytest.approx(1.0)
    assert got[-1]["reference"] == pytest.approx(8 / 20) and got[-1]["current"] == 0.0


def _alert(det: str, status: str, p: int, off: int) -> dict[str, Any]:
    return {"detector": det, "status": status, "window": {"partition": p, "offset": off}}


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ([], {}),
        ([("d", "firing", 0, 5)], {"d": [(0, "open", 5, None)]}),
        (
            [("d", "firing", 0, 5), ("d", "firing", 1, 3), ("d", "resolved", 0, 9)],
            {"d": [(0, "resolved", 5, 9), (1, "open", 3, None)]},
        ),
        (  # a resolved alert without its firing one (e.g. a range starting mid-episode)
            [("d", "resolved", 0, 2), ("d", "firing", 0, 4), ("d", "resolved", 0, 6),
             ("e", "firing", 0, 1)],
            {"d": [(0, "resolved", 4, 6)], "e": [(0, "open", 1, None)]},
        ),
    ],
)  # fmt: skip
def test_episodes_of(alerts: list[tuple[str, str, int, int]], expected: dict[str, Any]) -> None:
    got = episodes_of(_alert(*a) for a in alerts)
    assert {
        k: [(e["partition"], e["status"], e["fired"]["offset"],
             e["resolved"] and e["resolved"]["offset"]) for e in v]
        for k, v in got.items()
    } == expected  # fmt: skip


def test_flatten_numbers_keeps_nulls_and_drops_text() -> None:
    doc = {"a": {"b": 1, "c": None, "d": "x", "e": True}, "f": 2.5, "g": float("nan")}
    assert flatten_numbers(doc) == {"a/b": 1.0, "a/c": None, "f": 2.5, "g": None}


def _metrics_outcome(spec: PipelineSpec, partition: int, t_ms: int, acc: float) -> BatchOutcome:
    doc = {
        "pipeline": spec.name, "partition": partition, "model_version": "v1",
        "task": "classification",
        "windows": {"last_500": {"n": 500, "accuracy": acc, "auc": None}},
        "estimated": {"last_500": {"accuracy": acc - 0.01}},
        "slices": {"country": {"values": {"<b>": {"n": 10, "accuracy": acc / 2}},
                               "estimated": {"<b>": {"accuracy": acc / 4}},
                               "firing": ["<b>"]}},
        "labels": {"joined": 10}, "label_time_ms": t_ms, "computed_at_ms": 1,
    }  # fmt: skip
    out = BatchOutcome(consumed=0)
    out.messages.append((spec.output.model_metrics_topic, b"k", orjson.dumps(doc)))
    return out


def test_model_metrics_documents_become_lines_whatever_they_hold() -> None:
    spec = parse_spec(_spec_data())
    c = ReportCollector(spec, {"kind": "file", "path": "x", "partitions": 2})
    for i, acc in enumerate([0.9, 0.8, 0.7]):
        c.add(_metrics_outcome(spec, i % 2, 1000 * (i + 1), acc))
    r = c.report()
    validate("report", r)
    mm = r["model_metrics"]
    assert mm["documents"] == 3
    charts = {ch["title"]: ch["lines"] for ch in mm["charts"]}
    assert sorted(charts) == ["estimated/last_500", "labels", "slices/country/accuracy",
                              "slices/country/accuracy (estimated)", "slices/country/n",
                              "windows/last_500", "windows/last_500 · n"]  # fmt: skip
    est_fr = charts["slices/country/accuracy (estimated)"]
    assert [(ln["name"], ln["partition"], ln["points"]) for ln in est_fr] == [
        ("<b>", 0, [[1000, 0.9 / 4], [3000, 0.7 / 4]]), ("<b>", 1, [[2000, 0.8 / 4]])]
    assert [ln["name"] for ln in charts["slices/country/accuracy"]] == ["<b>", "<b>"]
    assert [ln["points"] for ln in charts["windows/last_500 · n"]] == [
        [[1000, 500.0], [3000, 500.0]], [[2000, 500.0]]]  # fmt: skip
    acc = {(ln["name"], ln["partition"]): ln["points"] for ln in charts["windows/last_500"]}
    assert acc[("accuracy", 0)] == [[1000, 0.9], [3000, 0.7]]
    assert acc[("accuracy", 1)] == [[2000, 0.8]]
    assert acc[("auc", 0)] == [[1000, None], [3000, None]]
    est = {(ln["name"], ln["partition"]): ln["points"] for ln in charts["estimated/last_500"]}
    assert est[("accuracy", 1)] == [[2000, pytest.approx(0.79)]]
    html = render_report(r)
    assert "<h3 class='metrics'>estimated</h3>" in html
    assert "<h3 class='metrics'>Slices</h3>" in html
    assert 'data-label="&lt;b&gt; p0"' in html and "<b>" not in html
    assert html.count('<svg class="plot series" data-metrics=') == 7


def _hostile_spec(tmp: Path) -> tuple[PipelineSpec, Path]:
    """A field named like a script tag, with a chi-square detector over it, and category values
    that are markup."""
    data = _spec_data()
    data["input"]["fields"][HOSTILE] = "string"
    data["detectors"].append(
        {"name": "hostile_chi2", "type": "chi2", "target": HOSTILE, "reference_size": 300,
         "window_size": 300}
    )  # fmt: skip
    src = tmp / "h.jsonl"
    events = SyntheticStream(n=2000, shift_at=1000, seed=2, n_entities=20).events()
    cats = ["<img src=x onerror=alert(1)>", "a&b", '"quoted"']
    lines = [
        orjson.dumps({**e, HOSTILE: cats[(i % 3) if i < 1000 else 0]}) for i, e in enumerate(events)
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    return parse_spec(data), src


def test_user_supplied_names_and_categories_are_escaped(tmp_path: Path) -> None:
    spec, src = _hostile_spec(tmp_path)
    r = report_of_file(spec, src, progress=False)
    validate("report", r)
    det = next(d for d in r["detectors"] if d["name"] == "hostile_chi2")
    assert det["target"] == HOSTILE and det["episodes"], "the category shift fires chi2"
    names = [c["name"] for c in det["distribution"]["categories"]]
    assert names == ['"quoted"', "<img src=x onerror=alert(1)>", "a&b"]
    html = render_report(r)
    assert "<script" not in html and "<img" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "a&amp;b" in html
    assert "&quot;quoted&quot;" in html


def test_cli_writes_the_html_and_its_json_twin(tmp_path: Path, capsys) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(_spec_data()))
    src = _events_file(tmp_path, n=4000)
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    code = cli_main(
        ["report", "-c", str(spec_path), "--input", str(src), "--output", str(out), "--json",
         str(js), "--no-progress"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    r = orjson.loads(js.read_bytes())
    validate("report", r)
    n_eps = r["summary"]["episodes"]
    assert n_eps > 0
    assert captured.out == (
        f"replayed 4000 events: {n_eps} drift episodes from 2 of 2 detectors -> {out} "
        f"(JSON: {js})\n"
    )
    assert captured.err == ""  # --no-progress
    assert out.read_text().startswith("<!doctype html>")
    assert r["source"] == {"kind": "file", "path": "e.jsonl", "partitions": 1,
                           "partitioner": "consistent"}  # fmt: skip


def test_progress_is_plain_lines_when_stderr_is_no_terminal(tmp_path: Path, capsys) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(_spec_data()))
    src = _events_file(tmp_path, n=2000)
    code = cli_main(["report", "-c", str(spec_path), "--input", str(src), "--output",
                     str(tmp_path / "r.html")])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("report: done, 2000 ev in ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "{src}", "--from-offset", "5"],
         "driftline: error: --from-offset reads a topic range: give it with --topic, not --input"),
        (["--input", "{src}", "--to-time", "2026-01-01T00:00:00Z"],
         "driftline: error: --to-time reads a topic range: give it with --topic, not --input"),
        (["--topic", "t", "--from-offset", "-1"],
         "driftline: error: --from-offset must be 0 or more, got -1"),
        (["--topic", "t", "--from-time", "last week"],
         "driftline: error: 'last week' is not a time: give milliseconds since the epoch or an "
         "ISO 8601 time such as 2026-11-30T12:00:00Z"),
        (["--input", "{src}", "--partitions", "0"],
         "driftline: error: --partitions must be at least 1"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys, argv: list[str], message: str
) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(_spec_data()))
    src = _events_file(tmp_path, n=10)
    args = [a.replace("{src}", str(src)) for a in argv]
    code = cli_main(["report", "-c", str(spec_path), *args, "--output", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert (code, err) == (2 if "partitions" not in message else 1, message + "\n")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--output", "r.html"],  # neither --input nor --topic
        ["--input", "e.jsonl", "--topic", "t", "--output", "r.html"],  # both
        ["--topic", "t", "--from-offset", "1", "--from-time", "1", "--output", "r.html"],
        ["--input", "e.jsonl"],  # no --output
    ],
)
def test_argument_errors_exit_2(tmp_path: Path, capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main(["report", "-c", "spec.toml", *argv])
    assert e.value.code == 2
    assert "usage: driftline report" in capsys.readouterr().err


def test_a_missing_input_file_is_one_line(tmp_path: Path, capsys) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(_spec_data()))
    code = cli_main(["report", "-c", str(spec_path), "--input", str(tmp_path / "nope.jsonl"),
                     "--output", str(tmp_path / "r.html"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("driftline: error: ")
    assert "nope.jsonl" in err


def test_write_report_writes_both_files(tmp_path: Path) -> None:
    spec = parse_spec(_spec_data())
    r = ReportCollector(spec, {"kind": "file", "path": "x"}).report()
    validate("report", r)
    write_report(r, tmp_path / "a.html", tmp_path / "a.json")
    assert orjson.loads((tmp_path / "a.json").read_bytes()) == r
    html = (tmp_path / "a.html").read_text()
    assert "No detector fired on this data." in html
    assert "The replay wrote no model-metrics documents" in html


def test_a_multivariate_detector_has_its_episodes_statistic_and_limit(tmp_path: Path) -> None:
    spec = parse_spec(tomllib.loads(flip_spec("mv")))
    src = tmp_path / "flip.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in flip_events(3000, 1500)))
    alerts = tmp_path / "a.jsonl"
    replay(spec, src, tmp_path / "f.jsonl", alerts_path=alerts, progress=False)
    r = report_of_file(spec, src, progress=False)
    validate("report", r)
    (mv,) = [d for d in r["detectors"] if d["kind"] == "multivariate"]
    assert (mv["name"], mv["type"], mv["target"]) == ("xyz_pca", "pca", "x,y,z")
    assert _pairs(list(read_records(alerts))) == {
        "xyz_pca": [(e["partition"], e["status"], e["fired"]["offset"], None)
                    for e in mv["episodes"]]
    }  # fmt: skip
    assert mv["episodes"][0]["fired"]["offset"] >= 3000  # after the flip
    (series,) = mv["series"]
    stats = [p[2] for p in series["points"] if p[2] is not None]
    assert stats and mv["statistic_limit"] is not None
    assert max(stats) > mv["statistic_limit"]  # the error crossed the limit
    assert mv["distribution"] is None
    html = render_report(r)
    assert ">Multivariate drift</h3>" in html
    assert html.count('<svg class="plot series" data-detector="xyz_pca"') == 1
    assert f"limit {fmt_num(mv['statistic_limit'])}" in html


def test_a_flapping_detector_shows_its_first_episodes_and_how_many_more() -> None:
    spec = parse_spec(_spec_data())
    c = ReportCollector(spec, {"kind": "file", "path": "x"})
    alerts = []
    for i in range(MAX_EPISODE_ROWS + 7):
        for status, off in (("firing", 10 * i), ("resolved", 10 * i + 5)):
            alerts.append({
                "detector": "amount_ks", "detector_type": "ks", "target": "amount",
                "kind": "covariate", "status": status, "severity": "warning",
                "statistic": 0.3, "p_value": 1e-9, "threshold": 1e-6, "alert_id": f"{i}{status}",
                "window": {"partition": 0, "offset": off, "event_time_ms": off,
                           "start_offset": None, "start_event_time_ms": None, "n_current": 5},
            })  # fmt: skip
    c.alerts = alerts
    r = c.report()
    validate("report", r)
    assert len(r["detectors"][0]["episodes"]) == MAX_EPISODE_ROWS + 7
    html = render_report(r)
    more = "… and 7 more episodes of amount_ks (all of them are in the JSON report)"
    assert html.count(more) == 2
    assert html.count("<tr><td>amount_ks</td>") == 2 * MAX_EPISODE_ROWS
