"""Offline replay: every file format gives the same feature vectors; partitioners; profiles."""

from __future__ import annotations

import csv
import gzip
import tomllib
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.agents.demo import demo_spec_text
from driftline.agents.replay import build_profile, murmur2, partition_for, replay
from driftline.agents.synthetic import SyntheticStream
from driftline.errors import DriftlineError
from driftline.io_files import RecordWriter, read_records
from driftline.spec import PipelineSpec, parse_spec
from driftline.streams.profile import Profile

N = 3000


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    data = tomllib.loads(demo_spec_text())
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
