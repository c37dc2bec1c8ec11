"""``driftline report --topic`` on a real broker: a topic range gives the report its file
gives, offset and time ranges read exactly their records, aborted transactions are skipped,
and a missing topic is one line."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from driftline.agents.demo import _to_toml
from driftline.agents.kafka_io import ensure_topics, make_producer
from driftline.agents.replay import partition_for
from driftline.agents.synthetic import SyntheticStream
from driftline.cli import main as cli_main
from driftline.schemas import validate
from tests.agents.test_replay_business import _spec_data as business_spec_data
from tests.agents.test_replay_business import business_files
from tests.agents.test_report import _spec_data
from tests.agents.test_report_labels import labelled_files

pytestmark = pytest.mark.integration

N = 6000


def _episodes(r: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        d["name"]: [
            (e["partition"], e["status"], e["fired"]["offset"], e["fired"]["event_time_ms"],
             e["resolved"] and e["resolved"]["offset"])
            for e in d["episodes"]
        ]
        for d in r["detectors"]
    }  # fmt: skip


@pytest.fixture(scope="module")
def produced(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, Path, list[dict[str, Any]]]:
    """A spec, its input topic (2 partitions) holding a shifted stream whose record timestamps
    are the events' times, and the same events as a file."""
    tmp = tmp_path_factory.mktemp("report-topic")
    uid = uuid.uuid4().hex[:10]
    data = _spec_data(model=True)
    data["pipeline"]["name"] = f"report-{uid}"
    data["input"]["topic"] = topic = f"report-{uid}.events"
    spec_path = tmp / "spec.toml"
    spec_path.write_text(_to_toml(data))
    events = list(SyntheticStream(n=N, shift_at=N // 2, seed=11, n_entities=60).events())
    src = tmp / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    ensure_topics(kafka_bootstrap, [topic], partitions=2)
    p = make_producer(kafka_bootstrap)
    for e in events:  # librdkafka's default partitioner for keyed records: CRC-32 of the key
        p.produce(topic, orjson.dumps(e), e["user_id"].encode(), timestamp=e["ts"])
    assert p.flush(60) == 0
    return spec_path, topic, src, events


def _report(tmp: Path, *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    out, js = tmp / f"r-{uuid.uuid4().hex[:6]}.html", tmp / f"r-{uuid.uuid4().hex[:6]}.json"
    code = cli_main(["report", *argv, "--output", str(out), "--json", str(js), "--no-progress"])
    r = orjson.loads(js.read_bytes()) if js.exists() else None
    if r is not None:
        validate("report", r)
        assert out.read_text().startswith("<!doctype html>")
    return code, r, str(out)


def _topic_and_file(
    tmp: Path, bootstrap: str, data: dict[str, Any], src: Path, *extra: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The events file ``src`` produced to the spec's input topic (2 partitions, keyed by
    user, timestamped by event time); the reports of the topic and of the file (with
    ``--partitions 2``), both with the ``extra`` arguments."""
    topic = data["input"]["topic"]
    spec_path = tmp / "spec.toml"
    spec_path.write_text(_to_toml(data))
    ensure_topics(bootstrap, [topic], partitions=2)
    p = make_producer(bootstrap)
    for line in src.read_bytes().splitlines():
        e = orjson.loads(line)
        p.produce(topic, line, e["user_id"].encode(), timestamp=e["ts"])
    assert p.flush(60) == 0
    base = ["-c", str(spec_path), *extra]
    code, from_topic, _ = _report(tmp, *base, "--topic", topic, "--bootstrap", bootstrap)
    assert code == 0 and from_topic is not None
    code, from_file, _ = _report(tmp, *base, "--input", str(src), "--partitions", "2")
    assert code == 0 and from_file is not None
    return from_topic, from_file


def test_a_topic_gives_the_report_its_file_gives(
    produced: tuple[Path, str, Path, list[dict[str, Any]]], kafka_bootstrap: str, tmp_path: Path
) -> None:
    spec_path, topic, src, events = produced
    code, from_topic, _ = _report(
        tmp_path, "-c", str(spec_path), "--topic", topic, "--bootstrap", kafka_bootstrap
    )
    assert code == 0
    code, from_file, _ = _report(
        tmp_path, "-c", str(spec_path), "--input", str(src), "--partitions", "2"
    )
    assert code == 0
    assert from_topic is not None and from_file is not None
    eps = _episodes(from_topic)
    assert eps == _episodes(from_file)
    assert sum(len(v) for v in eps.values()) > 0
    for key in ("events", "feature_vectors", "predictions", "alerts", "episodes", "partitions",
                "first_event_time_ms", "last_event_time_ms"):  # fmt: skip
        assert from_topic["summary"][key] == from_file["summary"][key], key
    assert from_topic["summary"]["events"] == N
    sizes = {p: 0 for p in (0, 1)}
    for e in events:
        sizes[partition_for(e["user_id"].encode(), 2, "consistent")] += 1
    assert from_topic["source"] == {
        "kind": "topic",
        "topic": topic,
        "ranges": {str(p): {"from": 0, "to": n} for p, n in sizes.items()},
    }
    # the same distributions: the same values in the same order
    for a, b in zip(from_topic["detectors"], from_file["detectors"], strict=True):
        assert a["distribution"] == b["distribution"]


def test_offset_and_time_ranges_read_exactly_their_records(
    produced: tuple[Path, str, Path, list[dict[str, Any]]], kafka_bootstrap: str, tmp_path: Path
) -> None:
    spec_path, topic, _src, events = produced
    per_part: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for e in events:
        per_part[partition_for(e["user_id"].encode(), 2, "consistent")].append(e)
    base = ["-c", str(spec_path), "--topic", topic, "--bootstrap", kafka_bootstrap]

    code, r, _ = _report(tmp_path, *base, "--from-offset", "1000", "--to-offset", "2200")
    assert code == 0 and r is not None
    assert r["summary"]["events"] == sum(len(v[1000:2200]) for v in per_part.values())
    assert r["source"]["ranges"] == {
        str(p): {"from": min(1000, len(v)), "to": min(2200, len(v))} for p, v in per_part.items()
    }
    # every episode lies in the range
    for eps in _episodes(r).values():
        assert all(1000 <= e[2] < 2200 for e in eps)

    t_from, t_to = events[2500]["ts"], events[4100]["ts"]
    code, r, _ = _report(
        tmp_path, *base, "--from-time", str(t_from), "--to-time", str(t_to)
    )
    assert code == 0 and r is not None
    inside = [e for e in events if t_from <= e["ts"] < t_to]
    assert r["summary"]["events"] == len(inside)
    assert r["summary"]["first_event_time_ms"] == min(e["ts"] for e in inside)
    assert r["summary"]["last_event_time_ms"] == max(e["ts"] for e in inside)

    # ISO 8601 times name the same range
    from driftline.alert_format import iso_ms

    code, r_iso, _ = _report(tmp_path, *base, "--from-time", iso_ms(t_from), "--to-time",
                             iso_ms(t_to))  # fmt: skip
    assert code == 0 and r_iso is not None
    assert r_iso["source"] == r["source"] and r_iso["summary"] == r["summary"]

    # an empty range: a report of nothing, not a hang
    code, r, _ = _report(tmp_path, *base, "--from-offset", "999999")
    assert code == 0 and r is not None
    assert r["summary"]["events"] == 0 and r["summary"]["episodes"] == 0


def test_aborted_transactions_are_not_replayed(
    kafka_bootstrap: str, tmp_path: Path, unique: str
) -> None:
    data = _spec_data()
    data["input"]["topic"] = topic = f"report-txn-{unique}"
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(data))
    ensure_topics(kafka_bootstrap, [topic], partitions=1)
    events = list(SyntheticStream(n=900, shift_at=900, seed=5, n_entities=10).events())
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"t-{unique}"})
    p.init_transactions(30)
    for i, (a, b) in enumerate([(0, 300), (300, 400), (400, 900)]):
        p.begin_transaction()
        for e in events[a:b]:
            p.produce(topic, orjson.dumps(e), e["user_id"].encode())
        assert p.flush(30) == 0  # in the log before the abort (abort purges unsent records)
        if i == 1:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
    code, r, _ = _report(
        tmp_path, "-c", str(spec_path), "--topic", topic, "--bootstrap", kafka_bootstrap
    )
    assert code == 0 and r is not None
    assert r["summary"]["events"] == 800  # 300 + 500 committed; the 100 aborted are skipped
    (rng,) = r["source"]["ranges"].values()
    assert rng == {"from": 0, "to": 903}  # 900 records and 3 transaction markers


def test_a_missing_topic_is_one_line_and_exit_2(
    produced: tuple[Path, str, Path, list[dict[str, Any]]], kafka_bootstrap: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    spec_path = produced[0]
    code, r, out = _report(
        tmp_path, "-c", str(spec_path), "--topic", "no-such-topic-here", "--bootstrap",
        kafka_bootstrap,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert (code, r) == (2, None) and not Path(out).exists()
    assert err == (
        f"driftline: error: topic 'no-such-topic-here' does not exist on {kafka_bootstrap}: "
        "name an existing topic with --topic\n"
    )


def test_labels_join_a_topic_range_as_they_join_its_file(
    kafka_bootstrap: str, tmp_path: Path, unique: str
) -> None:
    """--labels with --topic: each label to its entity's partition as the producer's default
    partitioner put the events; the report equals the file's, every label joined."""
    data, src, lab = labelled_files(tmp_path)
    data["pipeline"]["name"] = f"report-labels-{unique}"
    data["input"]["topic"] = f"report-labels-{unique}.events"
    from_topic, from_file = _topic_and_file(
        tmp_path, kafka_bootstrap, data, src, "--labels", str(lab)
    )
    assert _episodes(from_topic) == _episodes(from_file)
    assert any(d["kind"] == "slice" and d["episodes"] for d in from_topic["detectors"])
    for key in ("events", "labels", "dead_letters", "alerts", "episodes"):
        assert from_topic["summary"][key] == from_file["summary"][key], key
    assert from_topic["model_metrics"]["charts"] == from_file["model_metrics"]["charts"]
    charts = {c["title"]: c["lines"] for c in from_topic["model_metrics"]["charts"]}
    joined = [ln["points"][-1][1] for ln in charts["labels"] if ln["name"] == "joined"]
    assert len(joined) == 2 and sum(joined) == 6_000


def test_business_records_go_beside_a_topic_range_as_beside_its_file(
    kafka_bootstrap: str, tmp_path: Path, unique: str
) -> None:
    """--business with --topic: the batches' event times come from the records' values, so
    the business records are fed at the same points as beside the file: the same episodes
    with the same business lines, the same business series."""
    src, biz, _events = business_files(tmp_path)
    data = business_spec_data()
    data["pipeline"]["name"] = f"report-business-{unique}"
    data["input"]["topic"] = f"report-business-{unique}.events"
    from_topic, from_file = _topic_and_file(
        tmp_path, kafka_bootstrap, data, src, "--business", str(biz)
    )
    lines = lambda r: [(e["fired"]["offset"], e["fired"]["business"],  # noqa: E731
                        e["resolved"] and e["resolved"]["business"])
                       for d in r["detectors"] for e in d["episodes"]]  # fmt: skip
    assert lines(from_topic) == lines(from_file) and lines(from_file)
    assert all(b is not None for _o, b, _r in lines(from_file))
    assert from_topic["business"] == from_file["business"]
    assert len(from_file["business"]["series"]) == 2
    for key in ("events", "business", "dead_letters", "alerts", "episodes"):
        assert from_topic["summary"][key] == from_file["summary"][key], key
