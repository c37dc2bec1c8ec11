"""bench/latency_bench.py: its arithmetic, and one small run on the real broker (speed is
printed by the bench, never asserted here)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "latency_bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("latency_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["latency_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_doctests(bench: ModuleType) -> None:
    assert doctest.testmod(bench).failed == 0


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_percentile_is_numpys_linear_percentile(bench: ModuleType, n: int) -> None:
    xs = np.random.default_rng(n).exponential(3.0, n).tolist()
    for q in (0.0, 1.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0):
        assert bench.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)
    assert bench.percentile(xs, 0) == min(xs) and bench.percentile(xs, 100) == max(xs)


def test_summary_and_scaling(bench: ModuleType) -> None:
    s = bench.summary([0.003, 0.001, 0.002])
    assert s["n"] == 3 and s["max"] == 0.003
    assert s["p50"] == pytest.approx(0.002) and s["mean"] == pytest.approx(0.002)
    ms = bench.scaled(s, 1000.0)
    assert ms["n"] == 3 and ms["p50"] == 2.0 and ms["max"] == 3.0
    empty = bench.summary([])
    assert empty["n"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "n")


def test_histogram_delta_feeds_histogram_quantile(bench: ModuleType) -> None:
    def scrape(counts: list[float]) -> list[tuple[str, dict[str, str], float]]:
        les = ["0.005", "0.01", "0.02", "+Inf"]
        pairs = zip(les, counts, strict=True)
        samples = [("lat_bucket", {"path": "a", "le": le}, c) for le, c in pairs]
        samples.append(("lat_bucket", {"path": "b", "le": "+Inf"}, 99.0))  # another path
        return samples

    before, after = scrape([10, 10, 10, 10]), scrape([10, 60, 110, 110])
    b = bench.histogram_delta(before, after, "lat", path="a")
    assert b == [(0.005, 0.0), (0.01, 50.0), (0.02, 100.0), (math.inf, 100.0)]
    # half of the window's observations are at or below 10 ms, all at or below 20 ms
    assert bench.pb.histogram_quantile(0.5, b) == pytest.approx(0.01)
    assert bench.pb.histogram_quantile(0.99, b) == pytest.approx(0.0198)
    assert bench.delta_sum(before, after, "lat_bucket", path="a", le="0.01") == 50.0


def test_bad_lists_are_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--sweep-values", "5,0"])
    assert bench.parse_args(["--batch-sizes", "3,9"]).batch_sizes == [3, 9]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_small_run_on_the_broker(
    bench: ModuleType, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json = tmp_path / "latency.json"
    rc = bench.main([
        "--bootstrap", kafka_bootstrap, "--rate", "500", "--seconds", "2", "--warmup", "1",
        "--batch-timeout-ms", "20", "--batch-sizes", "1,10", "--core-reps", "30",
        "--entities", "200", "--batch-rows", "500", "--json", str(out_json),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    for text in ("part 1: join + predict", "Kafka alone", "event -> prediction", "p99"):
        assert text in out
    report = json.loads(out.strip().splitlines()[-1])
    assert report == json.loads(out_json.read_text())

    assert [r["batch"] for r in report["core"]] == [1, 10]
    for r in report["core"]:
        assert r["reps"] == 30
        for k in ("join_ms", "predict_ms", "added_ms", "full_ms", "bare_ms"):
            assert set(r[k]) == {"n", "mean", "p50", "p90", "p95", "p99", "max"}
            assert r[k]["n"] == 30 and 0 <= r[k]["p50"] <= r[k]["p99"] <= r[k]["max"]

    e = report["e2e"]
    assert e["batch_timeout_ms"] == 20 and e["produced"] == 1500 and e["measured"] == 1000
    # every produced event got exactly one prediction, and the Kafka-alone reader saw them all
    assert e["predictions"] == e["unique_predictions"] == e["produced"]
    assert e["baseline_read"] == e["produced"]
    assert e["notes"] == []
    for k in ("latency_ms", "baseline_ms"):
        assert e[k]["n"] == e["measured"]
        assert e[k]["p50"] <= e[k]["p90"] <= e[k]["p95"] <= e[k]["p99"] <= e[k]["max"]
    assert set(e["worker_event_to_prediction_ms"]) == {"p50", "p90", "p95", "p99"}
    assert e["batches"] >= 1 and e["records_per_batch"] > 0
    assert "sweep" not in report
