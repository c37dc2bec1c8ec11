"""bench/peer_bench.py: its pure parts (/proc parsing, spans, tables, verdicts, the bench spec).

Nothing here starts a broker or builds the Kafka Streams app; the whole bench is run by hand
(``python bench/peer_bench.py``) and its table kept in the README.
"""

from __future__ import annotations

import argparse
import doctest
import importlib
import math
import os
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from driftline.agents.demo import ks_adwin_spec_text

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/peer_bench.py, imported from its folder as the bench imports its siblings."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module("peer_bench")


def test_doctests(bench: ModuleType) -> None:
    assert doctest.testmod(bench).failed == 0


@pytest.mark.parametrize(
    ("stat", "ticks", "seconds"),
    [
        ("1 (python3) S 0 1 1 0 -1 4194560 10 0 0 0 700 300 0 0 20 0", 100, 10.0),
        ("9 (a) b) c) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0", 100, 0.0),  # ')' inside the name
        ("7 (java) S 1 1 1 0 -1 0 0 0 0 0 1 2 5 5", 1, 3.0),  # children's times not counted
    ],
)
def test_parse_cpu_seconds(bench: ModuleType, stat: str, ticks: int, seconds: float) -> None:
    assert bench.parse_cpu_seconds(stat, ticks) == seconds


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("VmPeak:\t 9 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n", 2048 * 1024),
        ("VmHWM:\t0 kB\n", 0),
        ("Name:\tkthreadd\nState:\tS\n", None),  # kernel threads have no Vm lines
        ("", None),
    ],
)
def test_parse_peak_rss(bench: ModuleType, status: str, expected: int | None) -> None:
    assert bench.parse_peak_rss_bytes(status) == expected


def test_own_process_readings(bench: ModuleType) -> None:
    cpu = bench.proc_cpu_seconds(os.getpid())
    rss = bench.proc_peak_rss(os.getpid())
    assert cpu is not None and cpu > 0
    assert rss is not None and rss > 10 * 2**20
    assert bench.proc_cpu_seconds(2**22 + 1) is None  # above pid_max: no such process


def test_run_from_steady_span(bench: ModuleType) -> None:
    P = bench.Point
    pts = [P(0.0, 0, 1.0), P(1.0, 0, 1.2), P(2.0, 1000, 2.0), P(4.0, 21000, 4.0)]
    pts += [P(4.5, 25000, 4.5), P(5, 30000, 5)]
    r = bench.run_from("x", "at_least_once", pts, 21000)
    assert (r.events, r.seconds, r.cpu_seconds) == (20000, 2.0, 2.0)
    assert (r.rate, r.cpu_per_100k, r.cores) == (10000.0, 10.0, 1.0)
    assert r.notes == []
    # second half: from the first reading past 15000 (21000 at 4 s) to the last (30000 at 5 s)
    assert (r.tail_rate, r.tail_cpu_per_100k) == (9000.0, pytest.approx(100_000 / 9000))
    short = bench.run_from("x", "-", pts, 50000)
    assert (short.events, short.notes) == (29000, ["stopped at 30000 of 50000 events"])
    none = bench.run_from("x", "-", [P(0.0, 0, 0.0)], 10)
    assert none.events == 0 and math.isnan(none.rate) and math.isnan(none.cpu_per_100k)


def test_tables(bench: ModuleType) -> None:
    r = bench.Run("driftline worker, full", "exactly_once", 300_000, 3.0, 4.5, 300 * 2**20)
    k = bench.Run("Kafka Streams", "exactly_once_v2", 300_000, 6.0, 9.0, None)
    rows = bench.rows_of([r, k])
    assert rows[0] == bench.HEADER
    assert rows[1] == ["driftline worker, full", "exactly_once", "100,000", "-", "1.50", "-",
                       "1.50", "300", "-"]  # fmt: skip
    assert rows[2][2:] == ["50,000", "-", "3.00", "-", "1.50", "-", "-"]
    text = bench.text_table(rows, [False, False] + [True] * 7).splitlines()
    assert len(text) == 4 and set(text[1]) == {"-"}
    assert len({len(line) for line in (text[0], text[2])}) == 1  # columns aligned
    md = bench.markdown_table(rows).splitlines()
    assert md[1] == "|---|---|---|---|---|---|---|---|---|"
    assert md[3] == "| Kafka Streams | exactly_once_v2 | 50,000 | - | 3.00 | - | 1.50 | - | - |"


def test_verdicts(bench: ModuleType) -> None:
    R = bench.Run
    runs = [
        R("raw confluent-kafka + orjson, fetch.queue.backoff.ms=10", "-", 100, 1.0, 0.15),
        R("driftline worker, full", "at_least_once", 100, 1.0, 1.0),
        R("Kafka Streams", "at_least_once", 100, 1.0, 3.1),
    ]
    scale = [
        R("10000", "at_least_once", entities=10_000, tail_rate=80_000.0, tail_cpu_per_100k=1.5),
        R("1e7", "at_least_once", entities=2_000_000, tail_rate=20_000.0, tail_cpu_per_100k=2.0),
    ]
    lines = bench.verdicts(runs, scale, {"at_least_once": {"p99": 12.0}})
    assert lines == [
        "per core, driftline full at_least_once vs Kafka Streams at_least_once: 3.10x "
        "(target >= 3x): met",
        "per core, driftline full at_least_once / the tuned raw ceiling: 0.15x "
        "(target >= 0.4x): gap 0.25x",
        "at_least_once: at 2,000,000 entities / at 10,000 (2nd halves), events/s: 0.25x "
        "(target >= 0.8x): gap 0.55x",
        "at_least_once: at 2,000,000 entities / at 10,000 (2nd halves), events per CPU second: "
        "0.75x (target >= 0.8x): gap 0.05x",
        "p99 event -> prediction at 5k/s, at_least_once: 12.00 ms (target <= 20 ms): met",
        "p99 event -> prediction at 5k/s, exactly_once: not measured (target <= 150 ms)",
    ]


@pytest.mark.parametrize("features_only", [False, True])
@pytest.mark.parametrize("window_ms", [None, 86_400_000])
def test_bench_spec_is_valid(
    bench: ModuleType, tmp_path: Path, features_only: bool, window_ms: int | None
) -> None:
    """Every spec the bench writes loads as the worker loads it."""
    from driftline.spec import load_spec

    base = tomllib.loads(ks_adwin_spec_text())
    data = bench.spec_data(base, "t1", "bench-t1.events", guarantee="at_least_once",
                           web_port=6099, features_only=features_only,
                           window_ms=window_ms)  # fmt: skip
    spec = load_spec(bench.write_spec(tmp_path, data))
    assert spec.input.topic == "bench-t1.events"
    assert {f.window_ms for f in spec.features} == {window_ms or 60_000}
    assert (spec.model is None) == features_only
    assert not spec.detectors if features_only else len(spec.detectors) == 2


def test_scale_events_cycle(bench: ModuleType) -> None:
    events = list(bench.scale_events(2_500, 1_000))
    keys = [k for k, _ in events]
    assert len(set(keys[:1000])) == 1000 and len(set(keys)) == 1000
    import orjson

    ts = [orjson.loads(v)["ts"] for _, v in events]
    assert ts == sorted(ts) and ts[1] - ts[0] == bench.SCALE_STEP_MS
    assert all(orjson.loads(v)["user_id"].encode() == k for k, v in events[:50])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("default,10", [None, 10]), ("0", [0]), ("default, 100 ,", [None, 100]), ("", [])],
)
def test_backoffs(bench: ModuleType, text: str, expected: list[int | None]) -> None:
    assert bench._backoffs(text) == expected


@pytest.mark.parametrize("text", ["fast", "-1", "1.5"])
def test_backoffs_refused(bench: ModuleType, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected ms or 'default'"):
        bench._backoffs(text)
