"""bench/pipeline_bench.py: its metric arithmetic, and a small run on the real broker."""

from __future__ import annotations

import doctest
import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pipeline_bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pipeline_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_doctests(bench: ModuleType) -> None:
    assert doctest.testmod(bench).failed == 0


def test_histogram_quantile_matches_promql(bench: ModuleType) -> None:
    b = [(0.1, 10.0), (0.5, 60.0), (1.0, 100.0), (math.inf, 100.0)]
    assert bench.histogram_quantile(0.05, b) == pytest.approx(0.05)
    assert bench.histogram_quantile(0.5, b) == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert bench.histogram_quantile(0.99, b) == pytest.approx(0.5 + 0.5 * 39 / 40)
    assert math.isnan(bench.histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


def test_parse_metrics_and_sum_by_label(bench: ModuleType) -> None:
    text = (
        "# HELP driftline_stage_duration_seconds x\n"
        'driftline_stage_duration_seconds_sum{stage="decode"} 1.5\n'
        'driftline_stage_duration_seconds_sum{stage="encode"} 2.5\n'
        'driftline_records_consumed_total{topic="a"} 3.0\n'
        'driftline_records_consumed_total{topic="b"} 4.0\n'
    )
    s = bench.parse_metrics(text)
    assert bench.metric_sum(s, "driftline_records_consumed_total") == 7.0
    assert bench.metric_sum(s, "driftline_stage_duration_seconds_sum", stage="encode") == 2.5


def test_steady_rate_leaves_out_the_first_batch(bench: ModuleType) -> None:
    r = bench.SteadyRate()
    r.add(0.0, 0)
    r.add(0.0, 100)
    r.add(0.0, 50)
    res = r.result("x")
    assert res.events == 50 and res.seconds >= 0


@pytest.mark.integration
def test_small_run_on_the_broker(
    bench: ModuleType, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = bench.main(["--events", "12000", "--bootstrap", kafka_bootstrap, "--skip-faust"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in ("raw A:", "raw A0:", "raw B", "driftline core", "driftline worker"):
        assert name in out
    assert "dead letters: 0" in out
    table = out[out.index("name  "):]
    rows = {line.split("  ")[0]: line.split() for line in table.splitlines()[2:9]}
    one, two = rows["driftline worker on Kafka"], rows["driftline worker on Kafka, 2 processes"]
    # CPU s per 100k events, unless a loaded machine let a worker read all 12,000 events
    # before the bench's first /metrics reading (then the run has no span: it says so)
    early = "consumed before the first /metrics reading"
    for row, cpu in ((one, one[5]), (two, two[7])):
        assert (cpu != "-" and float(cpu.replace(",", "")) > 0) or early in out, row
    assert re.search(r"driftline worker on Kafka, 2 processes: ([\d,]+|nan) events/s = "
                     r"([\d.]+|-)x driftline worker on Kafka", out)  # fmt: skip
