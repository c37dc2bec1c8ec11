"""``--business``: a business file fed beside the events in a replay and a report gives the
business values and alert lines the worker's pipeline gives on the same records in the same
order; bad records are dead-lettered and counted; usage errors are one line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.demo import _to_toml
from driftline.agents.pipeline import PartitionPipeline, RawRecord, RecordColumns
from driftline.agents.replay import as_file_spec, partition_for, replay
from driftline.agents.replay_business import BusinessFeed
from driftline.agents.report import report_of_file
from driftline.agents.report_render import render_report
from driftline.agents.synthetic import SyntheticStream
from driftline.cli import main as cli_main
from driftline.io_files import read_records
from driftline.schemas import validate
from driftline.spec import PipelineSpec, parse_spec
from tests.agents.test_replay import _alerting_spec_data

N, SHIFT = 6_000, 3_000
BUSINESS = {"name": "revenue", "topic": "shop.orders", "field": "order.total",
            "time_field": "ts", "window_ms": 60_000, "history_ms": 1_200_000}  # fmt: skip
#: bad lines of the business file, and the reason each is dead-lettered for
BAD = [
    (b"{broken", "invalid_json"),
    (b'{"user_id": "u1", "ts": 1767225620000, "order": {"total": "x"}}', "wrong_type"),
    (b'{"user_id": "u2", "order": {"total": 3}}', "missing_field"),
]


def _spec_data(**business: Any) -> dict[str, Any]:
    return {**_alerting_spec_data(model=False), "business": {**BUSINESS, **business}}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Events (shifted from event SHIFT on, 100 ms apart) and the business file: an order
    5 ms after every other event, 10 per order before the shift, 4 after (with noise), and
    the `BAD` lines in the middle."""
    return business_files(tmp_path_factory.mktemp("business"))


def business_files(tmp: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """The events file, the business file and the events (see `files`)."""
    events = list(SyntheticStream(n=N, shift_at=SHIFT, seed=3, n_entities=50, step_ms=100).events())
    src = tmp / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    rng = np.random.default_rng(5)
    orders = [
        {"user_id": e["user_id"], "ts": e["ts"] + 5,
         "order": {"total": round((10.0 if i < SHIFT else 4.0) + rng.normal(0, 0.5), 3)}}
        for i, e in enumerate(events) if i % 2 == 0
    ]  # fmt: skip
    lines = [orjson.dumps(o) for o in orders]
    mid = len(lines) // 2
    lines[mid:mid] = [b for b, _ in BAD]
    biz = tmp / "orders.jsonl"
    biz.write_bytes(b"\n".join(lines) + b"\n")
    return src, biz, events


def _worker_run(
    spec: PipelineSpec, events: list[dict[str, Any]], biz: Path, partitions: int, partitioner: str
) -> tuple[list[dict[str, Any]], dict[int, tuple[float, int]], Counter[str]]:
    """What a worker's partitions make of the same records, written out here: per partition,
    events in batches of 100; before each, the partition's business records (in time order,
    unreadable times first) up to the batch's last event time, in batches of at most 500.
    Returns the alerts, each partition's last business reading and the dead letters."""
    spec = as_file_spec(spec)
    topic = "replay:events.jsonl"  # as `replay.file_records` names the file's topic
    part = lambda key: partition_for(key.encode(), partitions, partitioner)  # noqa: E731
    biz_rows: dict[int, list[tuple[float, RawRecord]]] = {p: [] for p in range(partitions)}
    for line in biz.read_bytes().splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            doc = {}
        p = part(doc["user_id"]) if "user_id" in doc else 0
        t = doc.get("ts", -np.inf)
        biz_rows[p].append(
            (
                t,
                RawRecord(
                    "shop.orders",
                    p,
                    len(biz_rows[p]),
                    None,
                    doc.get("user_id", "").encode() or None,
                    line,
                ),
            )
        )
    alerts: list[dict[str, Any]] = []
    readings: dict[int, tuple[float, int]] = {}
    dead: Counter[str] = Counter()
    for p in range(partitions):
        pipe = PartitionPipeline(spec, p, None, "none")
        rows = sorted(biz_rows[p], key=lambda r: r[0])  # stable: file order among equal times
        times = np.array([t for t, _ in rows], dtype=np.float64)
        mine = [e for e in events if part(e["user_id"]) == p]
        recs = [RawRecord(topic, p, i, None, e["user_id"].encode(), orjson.dumps(e))
                for i, e in enumerate(mine)]  # fmt: skip
        fed = 0

        def business(
            upto: int, p: int = p, pipe: PartitionPipeline = pipe, rows: list[Any] = rows
        ) -> None:
            nonlocal fed
            for i in range(fed, upto, 500):
                oc = pipe.process_business(
                    RecordColumns.from_records([r for _, r in rows[i : min(i + 500, upto)]])
                )
                assert oc.business is not None
                readings[p] = (oc.business[1], oc.business[2])
                dead.update(oc.dead_letters)
                alerts.extend(oc.alerts)
            fed = max(fed, upto)

        for i in range(0, len(recs), 100):
            tmax = max(e["ts"] for e in mine[i : i + 100])
            business(int(np.searchsorted(times, tmax, side="right")))
            oc = pipe.process(recs[i : i + 100])
            alerts.extend(oc.alerts)
            dead.update(oc.dead_letters)
        business(len(rows))
    return alerts, readings, dead


def _key(a: dict[str, Any]) -> tuple[Any, ...]:
    return (a["window"]["partition"], a["window"]["offset"], a["detector"], a["status"])


def _same(a: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in a.items() if k != "detected_at_ms"}


@pytest.mark.parametrize(("partitions", "partitioner"), [(1, "consistent"), (3, "murmur2")])
def test_replay_and_report_give_the_workers_business_lines(
    files: tuple[Path, Path, list[dict[str, Any]]],
    tmp_path: Path,
    partitions: int,
    partitioner: str,
) -> None:
    src, biz, events = files
    spec = parse_spec(_spec_data())
    want, readings, want_dead = _worker_run(spec, events, biz, partitions, partitioner)
    assert want_dead == Counter({r: 1 for _, r in BAD})
    alerts_path, dlq = tmp_path / "a.jsonl", tmp_path / "dlq.jsonl"
    stats = replay(
        spec, src, tmp_path / "f.jsonl", alerts_path=alerts_path, dead_letters_path=dlq,
        partitions=partitions, partitioner=partitioner, progress=False,
        business=BusinessFeed(spec, biz, partitions, partitioner),
    )  # fmt: skip
    assert (stats.events, stats.business) == (N, N // 2 + len(BAD))
    assert stats.dead_letters == want_dead
    assert sorted(d["reason"] for d in read_records(dlq)) == sorted(r for _, r in BAD)
    got = list(read_records(alerts_path))
    assert got, "the shifted stream must make the detectors fire"
    assert sorted(map(_same, got), key=_key) == sorted(map(_same, want), key=_key)
    for a in got:
        validate("alert", a)
        assert a["business"]["name"] == "revenue"
    # an episode opened a window after the shift compares the revenue during its episode with before
    late = [a for a in got if a["status"] == "firing"
            and a["window"]["event_time_ms"] > events[SHIFT]["ts"] + 60_000]  # fmt: skip
    for a in late:
        assert a["business"]["before"]["value"] == pytest.approx(4.0, abs=0.3)

    feed = BusinessFeed(spec, biz, partitions, partitioner)
    r = report_of_file(
        spec, src, partitions=partitions, partitioner=partitioner, progress=False, business=feed
    )
    validate("report", r)
    assert (r["summary"]["business"], r["summary"]["dead_letters"]) == (
        stats.business, dict(sorted(want_dead.items()))
    )  # fmt: skip
    by_id = {a["alert_id"]: a["business"] for a in got}
    eps = [e for d in r["detectors"] for e in d["episodes"]]
    assert eps
    for e in eps:
        assert e["fired"]["business"] == by_id[e["fired"]["alert_id"]]
        if e["resolved"] is not None:
            assert e["resolved"]["business"] == by_id[e["resolved"]["alert_id"]]
    b = r["business"]
    assert (b["name"], b["agg"], b["window_ms"], b["records"]) == ("revenue", "mean", 60_000,
                                                                   stats.business)  # fmt: skip
    last = {s["partition"]: s["points"][-1] for s in b["series"]}
    assert sorted(last) == sorted(readings)
    for p, (value, n) in readings.items():
        assert last[p][1] == pytest.approx(value) and last[p][2] == n
    # the whole series: 10 per order before the shift, 4 a window after it
    t_shift = events[SHIFT]["ts"]
    for s in b["series"]:
        for t, v, _n in s["points"]:
            if t < t_shift:
                assert v == pytest.approx(10.0, abs=0.5)
            elif t > t_shift + 61_000:
                assert v == pytest.approx(4.0, abs=0.5)
    html = render_report(r)
    assert "<h2 id='business'>Business metric: revenue (mean of order.total over 60 s)</h2>" in html
    assert f"<td>business records replayed</td><td>{stats.business}</td>" in html
    assert "<th>business before → during (change)</th>" in html
    # each episode row (in the overview, and again in its detector's section)
    assert html.count("<span class='business'>") == 2 * sum(
        1 for e in eps if (e["resolved"] or e["fired"])["business"] is not None
    )
    assert 'data-business="revenue"' in html


def test_cli_business(
    files: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path, capsys
) -> None:
    src, biz, _ = files
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(_spec_data()))
    code = cli_main(["replay", "-c", str(spec_path), "--input", str(src), "--output",
                     str(tmp_path / "f.jsonl"), "--business", str(biz), "--partitions", "2",
                     "--no-progress"])  # fmt: skip
    said = capsys.readouterr().out
    assert code == 0
    assert said.startswith(f"replayed {N} events and {N // 2 + 3} business records: ")
    assert said.rstrip().endswith("dead letters: invalid_json=1, missing_field=1, wrong_type=1")
    out = tmp_path / "r.html"
    code = cli_main(["report", "-c", str(spec_path), "--input", str(src), "--business", str(biz),
                     "--output", str(out), "--json", str(tmp_path / "r.json"),
                     "--no-progress"])  # fmt: skip
    assert code == 0
    assert orjson.loads((tmp_path / "r.json").read_bytes())["business"]["records"] == N // 2 + 3


@pytest.mark.parametrize(
    ("data", "business", "message"),
    [
        (lambda: _alerting_spec_data(model=False), "orders.jsonl",
         "--business: the spec has no [business] section to feed the file to"),
        (lambda: {**_spec_data(), "business": {k: v for k, v in BUSINESS.items()
                                                if k != "time_field"}}, "orders.jsonl",
         "--business: a business file has no Kafka timestamps: set business.time_field to the "
         "field holding each record's time"),
        (_spec_data, "nowhere.jsonl", "--business: no such file '{tmp}/nowhere.jsonl'"),
    ],
)  # fmt: skip
def test_business_usage_errors_are_one_line(
    files: tuple[Path, Path, list[dict[str, Any]]],
    tmp_path: Path,
    capsys,
    data: Any,
    business: str,
    message: str,
) -> None:
    src, biz, _ = files
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(data()))
    path = biz if business == "orders.jsonl" else tmp_path / business
    for cmd in (["replay", "--output", str(tmp_path / "f.jsonl")],
                ["report", "--output", str(tmp_path / "r.html")]):  # fmt: skip
        code = cli_main([*cmd, "-c", str(spec_path), "--input", str(src), "--business",
                         str(path), "--no-progress"])  # fmt: skip
        err = capsys.readouterr().err
        assert (code, err) == (2, f"driftline: error: {message.format(tmp=tmp_path)}\n")


@pytest.mark.parametrize(("partitions", "partitioner"), [(1, "consistent"), (4, "murmur2")])
def test_the_feed_routes_by_key_and_feeds_in_time_order(
    tmp_path: Path, partitions: int, partitioner: str
) -> None:
    """Each record in its key's partition (no key: 0), by time then file order, unreadable
    times first; ``before`` an events batch, up to its largest event time, read from the
    values when the batch has no documents (a topic range)."""
    rows = [
        {"user_id": "a", "ts": 300, "order": {"total": 1}},
        {"user_id": "b", "ts": 100, "order": {"total": 2}},
        {"user_id": "a", "ts": 100, "order": {"total": 3}},
        {"ts": 50, "order": {"total": 4}},  # no key
        {"user_id": "a", "ts": "never", "order": {"total": 5}},  # unreadable time
    ]
    path = tmp_path / "o.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    spec = parse_spec(_spec_data())
    feed = BusinessFeed(spec, path, partitions, partitioner, batch=2)
    pa = partition_for(b"a", partitions, partitioner)
    pb = partition_for(b"b", partitions, partitioner)
    totals = lambda batches: [[orjson.loads(r.value)["order"]["total"] for r in b]  # noqa: E731
                              for b in batches]  # fmt: skip
    assert {r.partition for _t, r in feed.pending[pa]} == {pa}
    events = [RawRecord("e", pa, 0, None, b"a", orjson.dumps({"user_id": "a", "ts": 100}))]
    a_first = totals(feed.before(pa, [None], events))  # a topic range: no documents
    want = [5, 3] + ([4] if pa == 0 else []) + ([2] if pb == pa else [])
    order = [5, 4, 2, 3]  # unreadable, ts 50, then ts 100 in file order
    assert [v for b in a_first for v in b] == sorted(want, key=order.index)
    assert all(len(b) <= 2 for b in a_first)
    assert totals(feed.before(pa, [{"ts": 299}], events)) == []
    assert totals(feed.before(pa, [{"ts": 300}, {"ts": "x"}], events)) == [[1]]
    rest = feed.rest()
    assert sum(len(b) for bs in rest.values() for b in bs) == 5 - len(want) - 1
    assert feed.total == 5 and feed.rest() == {}
