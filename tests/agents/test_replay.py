"""Offline replay: every file format gives the same feature vectors; partitioners; profiles."""

from __future__ import annotations

import csv
import gzip
import json
import tomllib
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.agents.decode import RecordDecoder
from driftline.agents.demo import _to_toml, ks_adwin_spec_text
from driftline.agents.replay import build_profile, murmur2, partition_for, replay
from driftline.agents.synthetic import SyntheticStream
from driftline.cli import main as cli_main
from driftline.errors import DriftlineError, RecordError
from driftline.io_files import RecordWriter, read_records
from driftline.schemas import validate
from driftline.spec import PipelineSpec, parse_spec
from driftline.streams.profile import Profile

N = 3000


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["detectors"] = [
        {
            "name": "ks_amount",
            "type": "ks",
            "target": "amount",
            "reference_size": 500,
            "window_size": 500,
            "stride": 100,
        }
    ]
    data["features"].append(
        {"name": "countries", "agg": "distinct", "field": "country", "window_ms": 60_000}
    )
    return parse_spec(data)


def _events() -> list[dict]:
    return list(SyntheticStream(n=N, shift_at=N, seed=9, n_entities=40).events())


def _write_all_formats(tmp: Path, events: list[dict]) -> list[Path]:
    jl = tmp / "e.jsonl"
    jl.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    gz = tmp / "e.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(jl.read_bytes())
    cs = tmp / "e.csv"
    with cs.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(events[0]))
        w.writeheader()
        w.writerows(events)
    pa_path = tmp / "e.parquet"
    pq.write_table(pa.Table.from_pylist(events), pa_path)
    return [jl, gz, cs, pa_path]


def _features(path: Path) -> list[dict]:
    return [
        {k: d[k] for k in ("entity", "event_time_ms", "features", "source")}
        for d in read_records(path)
    ]


def test_every_input_format_gives_the_same_features(spec: PipelineSpec, tmp_path: Path) -> None:
    events = _events()
    outs = []
    for src in _write_all_formats(tmp_path, events):
        out = tmp_path / f"f-{src.name}.jsonl"
        stats = replay(spec, src, out, progress=False)
        assert stats.events == N and stats.feature_vectors == N and not stats.dead_letters
        outs.append(_features(out))
    ref = outs[0]
    for other in outs[1:]:
        assert [d["features"] for d in other] == [d["features"] for d in ref]
    # hand check: the first event of an entity has count 1 and its own amount as mean
    first = ref[0]
    assert first["features"]["amount_count_1m"] == 1
    assert first["features"]["amount_mean_1m"] == events[0]["amount"]


@pytest.mark.parametrize("out_name", ["f.csv", "f.parquet", "f.jsonl.gz"])
def test_every_output_format_holds_the_vectors(
    spec: PipelineSpec, tmp_path: Path, out_name: str
) -> None:
    src = _write_all_formats(tmp_path, _events())[0]
    replay(spec, src, tmp_path / "ref.jsonl", progress=False)
    replay(spec, src, tmp_path / out_name, progress=False)
    ref = list(read_records(tmp_path / "ref.jsonl"))
    got = list(read_records(tmp_path / out_name))
    assert len(got) == len(ref) == N
    for r, g in zip(ref, got, strict=True):
        if "features" in g:
            feats = g["features"]
        else:  # CSV and Parquet flatten nested documents (features.<name>); CSV cells are text
            feats = {
                k.split(".", 1)[1]: float(v) for k, v in g.items() if k.startswith("features.")
            }
        flat = {"features": feats}
        assert flat["features"] == pytest.approx(r["features"])


def test_bad_rows_are_counted_not_fatal(spec: PipelineSpec, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    good = _events()[:10]
    src.write_bytes(
        b"".join(orjson.dumps(e) + b"\n" for e in good)
        + b'{"user_id": "x", "ts": 1, "amount": "oops", "latency_ms": 1, "country": "de"}\n'
    )
    stats = replay(spec, src, tmp_path / "o.jsonl", progress=False)
    assert stats.feature_vectors == 10
    assert stats.dead_letters == {"wrong_type": 1}


@pytest.mark.parametrize(
    ("key", "n", "expected_murmur2"),
    # Kafka's own test vectors for Utils.murmur2, and partition = toPositive(hash) % n
    [(b"21", 1, 0), (b"foobar", 7, (-790332482 & 0x7FFFFFFF) % 7), (b"", 3, 275646681 % 3)],
)
def test_partitioners(key: bytes, n: int, expected_murmur2: int) -> None:
    assert partition_for(key, n, "murmur2") == expected_murmur2
    assert murmur2(b"21") == -973932308
    with pytest.raises(DriftlineError):
        partition_for(b"k", 2, "random")


def test_profile_holds_every_column(spec: PipelineSpec, tmp_path: Path) -> None:
    src = _write_all_formats(tmp_path, _events())[0]
    doc = build_profile(spec, src, progress=False)
    assert doc["events"] == N
    cols = doc["columns"]
    assert {"amount", "latency_ms", "country", "amount_count_1m", "amount_mean_1m"} <= set(cols)
    amount = Profile.from_dict(cols["amount"])
    values = [e["amount"] for e in _events()]
    assert amount.count == N
    assert amount.mean == pytest.approx(sum(values) / N)
    assert set(Profile.from_dict(cols["country"]).frequencies()) == {"de", "fr", "us", "br"}


def test_writer_rejects_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(DriftlineError, match=r"\.jsonl, \*\.jsonl\.gz, \*\.csv or \*\.parquet"):
        RecordWriter(tmp_path / "x.xlsx")


def _line(**changes: object) -> bytes:
    """An event line with some fields changed (the stdlib writes NaN as the token ``NaN``)."""
    doc = {"user_id": "u1", "ts": 5, "amount": 1.0, "latency_ms": 1.0, "country": "de"}
    return json.dumps({**doc, **changes}).encode()


#: lines the worker dead-letters, with the reason it gives (the first is not JSON at all)
BAD_LINES = [
    (b"{not json", "invalid_json"),
    (_line(amount=float("nan")), "non_finite"),
    (b"[1, 2]", "not_an_object"),
    (_line(amount="oops"), "wrong_type"),
    (_line(ts="2026-01-01T00:00:00"), "bad_timestamp"),
]


@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz"])
def test_malformed_lines_are_dead_lettered_and_the_replay_goes_on(
    spec: PipelineSpec, tmp_path: Path, name: str
) -> None:
    good = _events()[:200]
    lines = [orjson.dumps(e) for e in good]
    for j, (line, _reason) in enumerate(BAD_LINES):  # spread over the file, first one first
        lines.insert(40 * j, line)
    data = b"\n".join(lines) + b"\n\n"
    src = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(src, "wb") as fh:
            fh.write(data)
    else:
        src.write_bytes(data)
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in good))

    dlq = tmp_path / "dlq.jsonl"
    stats = replay(spec, src, tmp_path / "f.jsonl", dead_letters_path=dlq, progress=False)
    assert stats.events == len(good) + len(BAD_LINES)
    assert stats.feature_vectors == len(good)
    assert stats.dead_letters == Counter(reason for _, reason in BAD_LINES)
    # the good lines' features are those of a file without the bad lines
    replay(spec, clean, tmp_path / "clean-f.jsonl", progress=False)
    got = [d["features"] for d in read_records(tmp_path / "f.jsonl")]
    assert got == [d["features"] for d in read_records(tmp_path / "clean-f.jsonl")]

    dead = list(read_records(dlq))
    decoder = RecordDecoder(
        spec.input.fields, spec.input.key_field, spec.input.time_field,
        spec.input.max_message_bytes,
    )  # fmt: skip
    assert len(dead) == len(BAD_LINES)
    for doc, (line, reason) in zip(dead, BAD_LINES, strict=True):
        validate("dead_letter", doc)
        with pytest.raises(RecordError) as err:  # the worker's decoder says the same
            decoder.decode(line)
        assert (
            (doc["reason"], doc["error"])
            == (reason, err.value.detail)
            == (err.value.reason, err.value.detail)
        )
        assert doc["value"] == line.decode() and doc["value_size"] == len(line)
        assert doc["pipeline"] == spec.name and doc["source"]["timestamp_ms"] is None
        assert doc["source"]["offset"] == lines.index(line)  # one partition: offset = line


def _alerting_spec_data(model: bool) -> dict:
    """The demo spec with detectors that alert within a few thousand events (and a builtin
    model, or none)."""
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    if model:
        data["model"] = {"builtin": "logistic_regression", "inputs": ["amount", "amount_mean_1m"]}
    for d in data["detectors"]:
        d.pop("cooldown", None)
    data["detectors"][0].update(reference_size=500, window_size=500, stride=100)
    return data


def _shifted_events(tmp: Path, n: int, seed: int) -> Path:
    src = tmp / "e.jsonl"
    events = SyntheticStream(n=n, shift_at=n // 2, seed=seed, n_entities=50).events()
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return src


def test_alerts_are_written_and_schema_valid(tmp_path: Path) -> None:
    spec = parse_spec(_alerting_spec_data(model=True))
    src = _shifted_events(tmp_path, 6000, 3)
    alerts = tmp_path / "alerts.jsonl"
    stats = replay(spec, src, tmp_path / "f.jsonl", alerts_path=alerts, progress=False)
    docs = list(read_records(alerts))
    assert stats.alerts == len(docs) > 0
    for doc in docs:
        validate("alert", doc)
    firing = [d for d in docs if d["status"] == "firing"]
    assert {d["target"] for d in firing} == {"amount", "latency_ms"}
    assert all(d["window"]["offset"] >= 3000 for d in firing)  # after the shift
    # the same alerts (ids and all) on a second run: ids are positions, not times
    again = tmp_path / "again.jsonl"
    replay(spec, src, tmp_path / "f2.jsonl", alerts_path=again, progress=False)
    assert [d["alert_id"] for d in read_records(again)] == [d["alert_id"] for d in docs]


def test_predictions_without_a_broker_timestamp_have_no_latency(tmp_path: Path) -> None:
    spec = parse_spec(_alerting_spec_data(model=True))
    src = _shifted_events(tmp_path, 2000, 4)
    preds = tmp_path / "preds.jsonl"
    stats = replay(spec, src, tmp_path / "f.jsonl", predictions_path=preds, progress=False)
    predictions = list(read_records(preds))
    assert stats.predictions == len(predictions) == 2000
    for p in predictions:
        validate("prediction", p)
        # no broker, no broker timestamp: no latency (it was now - 0, about 1.8e12 ms)
        assert p["source"]["timestamp_ms"] is None and "latency_ms" not in p
        assert 0.0 <= p["score"] <= 1.0


def test_cli_replay_writes_alerts_and_dead_letters(tmp_path: Path, capsys) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(_to_toml(_alerting_spec_data(model=False)))
    src = tmp_path / "e.jsonl"
    events = SyntheticStream(n=4000, shift_at=2000, seed=5, n_entities=30).events()
    src.write_bytes(b"{oops\n" + b"".join(orjson.dumps(e) + b"\n" for e in events))
    out, alerts, dlq = (tmp_path / n for n in ("f.parquet", "a.jsonl", "d.jsonl"))
    code = cli_main(
        ["replay", "-c", str(spec_path), "--input", str(src), "--output", str(out),
         "--alerts", str(alerts), "--dlq", str(dlq), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    said = capsys.readouterr().out
    n_alerts = len(list(read_records(alerts)))
    assert n_alerts > 0
    assert f"replayed 4001 events: 4000 feature vectors -> {out}, 0 predictions, " in said
    assert f"{n_alerts} alerts" in said and "dead letters: invalid_json=1" in said
    (dead,) = read_records(dlq)
    validate("dead_letter", dead)
    assert (dead["reason"], dead["value"]) == ("invalid_json", "{oops")
    for doc in read_records(alerts):
        validate("alert", doc)
