"""driftline next to Kafka Streams and the raw client ceilings, on one broker, topic and run.

The benchmark of issue 13 item 6. One run:

1. produces ``--events`` synthetic events (``agents.synthetic.SyntheticStream``: key =
   ``user_id``, ``amount``, ``ts`` = event time) to a fresh 2-partition topic;
2. reads that backlog, one system after the other, each in its own process so its CPU seconds
   (utime + stime from ``/proc/PID/stat``) and peak RSS (``VmHWM``) are its own:

   - raw confluent-kafka ``consume(10000)`` + ``orjson.loads``, librdkafka defaults;
   - the same with ``fetch.queue.backoff.ms=10`` (the honest ceiling: with the default the
     client sleeps between fetches of a partition whose queue is past ``queued.min.messages``);
   - ``driftline worker``, full pipeline (the demo spec: tumbling 60 s count + mean of
     ``amount`` per user, a model, KS + ADWIN, features and predictions out), with
     ``exactly_once`` and ``at_least_once``; and features only (no model, no detectors);
   - Kafka Streams |kafka| (``bench/kstreams``, built with ``mvn -q package`` on first use and
     cached in ``bench/kstreams/target``): the same tumbling 60 s + 5 s grace count + mean of
     ``amount`` per user on event time, one message per update to an output topic (record
     cache 0, as driftline writes one feature vector per event), one stream thread, RocksDB,
     ``exactly_once_v2`` and ``at_least_once``;

3. driftline at ``--entities`` distinct users (default 10k, 1M, 10M), both guarantees: a topic
   per entity count whose user ids cycle through all of them (after k events exactly
   min(k, E) distinct users), and a 1-day tumbling count + mean so every user seen stays in
   window state. Each run reads max(E, ``--scale-min-events``) events or stops after
   ``--scale-budget`` seconds (or at ``--max-rss-gb``), and says how many entities it reached;
   the rate "at E" is the rate over the second half of what it read. Then the worker is
   restarted and its restore time read from its log (``state restored in ...``);
4. event -> prediction latency at 5,000 events/s for both guarantees, by running
   ``bench/latency_bench.py --skip-core`` on the same broker (``--latency-seconds 0`` skips).

Rates are steady-state: from the first progress report with events read to the report that
reaches the target, so start-up and group joins are left out; CPU seconds are taken over the
same span. Peak RSS is the process's high-water mark over its whole life. Then one table, the
ratios issue 13 sets targets for, and one JSON line (also ``--json PATH``).

    python bench/peer_bench.py [--events 300000] [--entities 10000,1000000,10000000]
        [--scale-budget 120] [--latency-seconds 20] [--skip-kstreams] [--bootstrap HOST:PORT]

The broker is ``--bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a local Apache Kafka
started by ``driftline.localkafka`` for this run (and stopped at the end).

.. |kafka| replace:: (the version ``driftline.localkafka.KAFKA_VERSION`` names)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
KSTREAMS = HERE / "kstreams"
KSTREAMS_MAIN = "dev.driftline.bench.WindowedCountMean"
PARTITIONS = 2
RAW_BATCH = 10_000
TUNED_BACKOFF_MS = 10
DAY_MS = 86_400_000
SCALE_STEP_MS = 5  # 17.28M events per day: a 10M-event scale topic stays in one 1-day window
CONSUMED = "driftline_records_consumed_total"
RESTORED = re.compile(r"state restored in ([0-9.]+)s")
#: fewest progress readings the second half of a run needs for its own rate and CPU
MIN_HALF_READINGS = 3
TARGET_PER_CORE = 3.0
TARGET_SCALE = 0.8
TARGET_P99_MS = {"at_least_once": 20.0, "exactly_once": 150.0}


def _pipeline_bench() -> ModuleType:
    """bench/pipeline_bench.py (bench/ is not a package, so from this folder): its helpers."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import pipeline_bench

    return pipeline_bench


# ----------------------------------------------------------------------------- /proc


def parse_cpu_seconds(stat: str, clock_ticks: int) -> float:
    """utime + stime (all threads) from the text of ``/proc/PID/stat``, in seconds.

    The command name (field 2) is in parentheses and may hold spaces or parentheses, so the
    fields are counted after its last ``)``.

    >>> parse_cpu_seconds("42 (java (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0", 100)
    3.0
    """
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def parse_peak_rss_bytes(status: str) -> int | None:
    """``VmHWM`` (peak resident set size) from the text of ``/proc/PID/status``, in bytes.

    >>> parse_peak_rss_bytes("Name:\\tjava\\nVmHWM:\\t  123456 kB\\nVmRSS:\\t 1000 kB\\n")
    126418944
    >>> parse_peak_rss_bytes("Name:\\tzombie\\n") is None
    True
    """
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split(":", 1)[1].split()
            return int(value) * {"kB": 1024, "mB": 1024**2}.get(unit, 1)
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU seconds ``pid`` has used so far, or None once it is gone (or off Linux)."""
    try:
        return parse_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, IndexError, ValueError):
        return None


def proc_peak_rss(pid: int) -> int | None:
    """Peak RSS of ``pid`` in bytes so far, or None once it is gone (or off Linux)."""
    try:
        return parse_peak_rss_bytes(Path(f"/proc/{pid}/status").read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- results


@dataclass
class Run:
    """One system's pass over a backlog: events over the steady span, its CPU and memory."""

    name: str
    guarantee: str = "-"
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float | None = None
    peak_rss: int | None = None
    restore_s: float | None = None  # state restore inside the restarted worker
    restart_s: float | None = None  # spawn -> partitions assigned with state restored
    entities: int | None = None
    tail_rate: float | None = None  # events/s over the second half of what was read
    tail_cpu_per_100k: float | None = None  # CPU s per 100k events over the same half
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_per_100k(self) -> float:
        if self.cpu_seconds is None or self.events <= 0:
            return math.nan
        return self.cpu_seconds / self.events * 100_000

    @property
    def cores(self) -> float:
        if self.cpu_seconds is None or self.seconds <= 0:
            return math.nan
        return self.cpu_seconds / self.seconds


@dataclass(frozen=True)
class Point:
    """A progress reading: monotonic time, events read so far, the process's CPU seconds."""

    t: float
    count: float
    cpu: float | None


def steady(points: Sequence[Point], n: int) -> tuple[Point, Point] | None:
    """The steady span of a pass over ``n`` events: from the first reading with events read to
    the first that reaches ``n`` (else the last), or None if nothing was read.

    >>> pts = [Point(0, 0, 1.0), Point(1, 10, 1.5), Point(2, 60, 2.0), Point(3, 100, 2.6)]
    >>> a, b = steady(pts, 100); (a.t, b.t, b.count - a.count)
    (1, 3, 90)
    >>> steady([Point(0, 0, 0.0)], 5) is None
    True
    """
    started = [p for p in points if p.count > 0]
    if not started:
        return None
    done = [p for p in started if p.count >= n]
    return started[0], (done[0] if done else started[-1])


def second_half(points: Sequence[Point]) -> tuple[float, float]:
    """Events/s and CPU seconds per 100k events over the second half of what was read: from the
    first reading at or past half of the last count to the last reading (NaN where that span
    holds fewer than ``MIN_HALF_READINGS`` readings, or the CPU readings are missing). Start-up
    and warm-up (the JVM's JIT) fall in the first half.

    >>> pts = [Point(0, 0, 0.0), Point(1, 40, 1.0), Point(2, 50, 1.5), Point(3, 60, 1.7),
    ...        Point(4, 100, 2.0)]
    >>> second_half(pts)
    (25.0, 1000.0)
    >>> [math.isnan(x) for x in second_half(pts[:3] + pts[4:])]  # too few readings to tell
    [True, True]
    """
    if not points:
        return math.nan, math.nan
    last = points[-1]
    half = next(p for p in points if p.count >= last.count / 2)
    in_half = sum(1 for p in points if p.t >= half.t)
    if in_half < MIN_HALF_READINGS or last.t <= half.t or last.count <= half.count:
        return math.nan, math.nan
    events = last.count - half.count
    cpu = math.nan
    if half.cpu is not None and last.cpu is not None:
        cpu = (last.cpu - half.cpu) / events * 100_000
    return events / (last.t - half.t), cpu


def run_from(name: str, guarantee: str, points: Sequence[Point], n: int) -> Run:
    """A `Run` over the steady span of ``points`` (CPU seconds over the same span)."""
    span = steady(points, n)
    r = Run(name, guarantee)
    if span is None:
        r.notes.append("read nothing")
        return r
    a, b = span
    r.events = int(b.count - a.count)
    r.seconds = b.t - a.t
    if a.cpu is not None and b.cpu is not None:
        r.cpu_seconds = b.cpu - a.cpu
    if b.count < n:
        r.notes.append(f"stopped at {b.count:.0f} of {n} events")
    r.tail_rate, r.tail_cpu_per_100k = second_half(points)
    return r


# ----------------------------------------------------------------------------- report


def fmt(v: float | None, spec: str = ",.0f") -> str:
    """A number for the table; '-' for None or NaN.

    >>> fmt(1234.5), fmt(None), fmt(math.nan), fmt(0.1234, ".2f")
    ('1,234', '-', '-', '0.12')
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def text_table(rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """Rows as aligned columns, a rule under the first (the header); ``right[i]`` right-aligns
    column i.

    >>> print(text_table([["a", "n"], ["xyz", "1"], ["b", "100"]], [False, True]))
    a      n
    --------
    xyz    1
    b    100
    """
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = right or [False] * len(width)
    lines = [
        "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, width, right, strict=True)
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as a Markdown table, the first as its header.

    >>> print(markdown_table([["a", "b"], ["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


HEADER = [
    "system", "guarantee", "events/s", "events/s 2nd half", "CPU s/100k", "CPU s/100k 2nd half",
    "cores", "peak RSS MB", "restore s",
]  # fmt: skip


def rows_of(runs: Sequence[Run]) -> list[list[str]]:
    """The table's rows (header first) for ``runs``.

    >>> r = Run("x", "at_least_once", 200_000, 2.0, 1.0, 50 * 2**20, restore_s=0.25)
    >>> rows_of([r])[1]
    ['x', 'at_least_once', '100,000', '-', '0.50', '-', '0.50', '50', '0.25']
    """
    rows = [list(HEADER)]
    for r in runs:
        rows.append(
            [
                r.name,
                r.guarantee,
                fmt(r.rate),
                fmt(r.tail_rate),
                fmt(r.cpu_per_100k, ".2f"),
                fmt(r.tail_cpu_per_100k, ".2f"),
                fmt(r.cores, ".2f"),
                fmt(r.peak_rss / 2**20 if r.peak_rss is not None else None),
                fmt(r.restore_s, ".2f"),
            ]
        )
    return rows


SCALE_HEADER = [
    "entities", "guarantee", "events timed", "entities reached", "events/s", "events/s 2nd half",
    "CPU s/100k", "CPU s/100k 2nd half", "peak RSS MB", "restore s", "restart s",
]  # fmt: skip


def scale_rows(runs: Sequence[Run]) -> list[list[str]]:
    """The entity-scale table's rows (header first); a run's name is its target entity count.

    >>> r = Run("10000", "exactly_once", 100_000, 1.0, 2.0, 2**30, 0.5, 3.0, 10_000, 90_000.0)
    >>> print(" ".join(scale_rows([r])[1]))
    10,000 exactly_once 100,000 10,000 100,000 90,000 2.00 - 1,024 0.50 3.0
    """
    rows = [list(SCALE_HEADER)]
    for r in runs:
        rows.append(
            [
                fmt(float(r.name)),
                r.guarantee,
                fmt(r.events),
                fmt(r.entities),
                fmt(r.rate),
                fmt(r.tail_rate),
                fmt(r.cpu_per_100k, ".2f"),
                fmt(r.tail_cpu_per_100k, ".2f"),
                fmt(r.peak_rss / 2**20 if r.peak_rss is not None else None),
                fmt(r.restore_s, ".2f"),
                fmt(r.restart_s, ".1f"),
            ]
        )
    return rows


def per_core_ratio(driftline: Run, peer: Run) -> float:
    """How many times the events per CPU second of ``peer`` ``driftline`` reaches (peer's CPU
    per event over driftline's): over the second halves where both have one (warm), else over
    the whole runs.

    >>> per_core_ratio(Run("d", events=100, cpu_seconds=1.0), Run("k", events=100, cpu_seconds=3.0))
    3.0
    >>> per_core_ratio(Run("d", events=100, cpu_seconds=1.0, tail_cpu_per_100k=500.0),
    ...                Run("k", events=100, cpu_seconds=3.0, tail_cpu_per_100k=1000.0))
    2.0
    """
    d, p = driftline.tail_cpu_per_100k, peer.tail_cpu_per_100k
    if d is not None and p is not None and math.isfinite(d) and math.isfinite(p) and d > 0:
        return p / d
    return peer.cpu_per_100k / driftline.cpu_per_100k


def verdict(what: str, value: float, target: float, unit: str, at_least: bool) -> str:
    """One target's line: measured value, target, and "met" or the gap.

    >>> verdict("p99", 25.0, 20.0, " ms", at_least=False)
    'p99: 25.00 ms (target <= 20 ms): gap 5.00 ms'
    >>> verdict("ratio", 3.5, 3.0, "x", at_least=True)
    'ratio: 3.50x (target >= 3x): met'
    >>> verdict("ratio", math.nan, 3.0, "x", at_least=True)
    'ratio: not measured (target >= 3x)'
    """
    sign = ">=" if at_least else "<="
    if not math.isfinite(value):
        return f"{what}: not measured (target {sign} {target:g}{unit})"
    met = value >= target if at_least else value <= target
    gap = "met" if met else f"gap {abs(target - value):.2f}{unit}"
    return f"{what}: {value:.2f}{unit} (target {sign} {target:g}{unit}): {gap}"


def verdicts(
    runs: Sequence[Run], scale: Sequence[Run], latency: dict[str, dict[str, float]]
) -> list[str]:
    """One line per issue 13 target: the measured value, the target, met or the gap."""
    out: list[str] = []
    by = {(r.name, r.guarantee): r for r in runs}

    def line(what: str, value: float, target: float, unit: str = "x", at_least: bool = True) -> str:
        return verdict(what, value, target, unit, at_least)

    for dg, kg in (("exactly_once", "exactly_once_v2"), ("at_least_once", "at_least_once")):
        d, k = by.get(("driftline worker, full", dg)), by.get(("Kafka Streams", kg))
        if d and k:
            out.append(
                line(
                    f"per core, driftline full {dg} vs Kafka Streams {kg}",
                    per_core_ratio(d, k),
                    TARGET_PER_CORE,
                )
            )
        f = by.get(("driftline worker, features only", dg))
        if f and k:
            out.append(
                line(
                    f"per core, driftline features only {dg} vs Kafka Streams {kg}",
                    per_core_ratio(f, k),
                    TARGET_PER_CORE,
                )
            )
    tuned = next((r for r in runs if r.name.endswith(f"backoff.ms={TUNED_BACKOFF_MS}")), None)
    full = by.get(("driftline worker, full", "at_least_once"))
    if tuned and full:
        out.append(
            line(
                "per core, driftline full at_least_once / the tuned raw ceiling",
                per_core_ratio(full, tuned),
                0.4,
            )
        )
    for g in ("exactly_once", "at_least_once"):
        mine = [r for r in scale if r.guarantee == g]
        if len(mine) >= 2:
            lo, hi = mine[0], mine[-1]
            what = f"{g}: at {fmt(hi.entities)} entities / at {fmt(lo.entities)} (2nd halves), "
            ratio = (hi.tail_rate or math.nan) / (lo.tail_rate or math.nan)
            out.append(line(what + "events/s", ratio, TARGET_SCALE))
            out.append(line(what + "events per CPU second", per_core_ratio(hi, lo), TARGET_SCALE))
    for g, target in TARGET_P99_MS.items():
        p99 = latency.get(g, {}).get("p99", math.nan)
        out.append(verdict(f"p99 event -> prediction at 5k/s, {g}", p99, target, " ms", False))
    return out


# ----------------------------------------------------------------------------- processes


class StdoutProgress(threading.Thread):
    """Reads ``progress N T CPU`` lines from a child's stdout (events read, its monotonic clock
    and its own CPU seconds) into `Point` s; keeps other lines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.count = 0.0
        self.points: list[Point] = []
        self.lines: list[str] = []

    def run(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            point = parse_progress(line)
            if point is not None:
                self.points.append(point)
                self.count = point.count
            elif line:
                self.lines.append(line)


def parse_progress(line: str) -> Point | None:
    """A child's ``progress N T CPU`` line as a `Point` (None for any other line).

    >>> parse_progress("progress 1200 17.5 0.25")
    Point(t=17.5, count=1200.0, cpu=0.25)
    >>> parse_progress("state RUNNING") is None, parse_progress("progress x") is None
    (True, True)
    """
    parts = line.split()
    if len(parts) != 4 or parts[0] != "progress":
        return None
    try:
        return Point(float(parts[2]), float(parts[1]), float(parts[3]))
    except ValueError:
        return None


def watch(
    proc: subprocess.Popen[Any],
    what: str,
    progress: Callable[[], float | None],
    n: int,
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    max_rss: int | None = None,
    log_path: Path | None = None,
) -> tuple[list[Point], int | None, str]:
    """Readings of ``progress()`` and the CPU of ``proc`` until ``n`` events were read, the
    ``timeout_s`` passed (counted from the first event read; start-up gets as long again) or
    ``proc`` passed ``max_rss``; also its peak RSS, and why it stopped ("done", "budget",
    "rss")."""
    pb = _pipeline_bench()
    points: list[Point] = []
    started = time.monotonic()
    first: float | None = None
    peak: int | None = None
    while True:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise pb.BenchError(f"{what} exited with {proc.returncode}:\n{tail}")
        count = progress()
        now = time.monotonic()
        points.append(Point(now, count or 0.0, proc_cpu_seconds(proc.pid)))
        peak = proc_peak_rss(proc.pid) or peak
        if count:
            first = first or now
        if count is not None and count >= n:
            return points, peak, "done"
        if max_rss is not None and peak is not None and peak > max_rss:
            return points, peak, "rss"
        if first is not None and now - first > timeout_s:
            return points, peak, "budget"
        if first is None and now - started > max(timeout_s, 120.0):
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise pb.BenchError(f"{what} read nothing in {now - started:.0f}s:\n{tail}")
        time.sleep(interval_s)


def spawn_child(stack: ExitStack, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    return _pipeline_bench().spawn(stack, name, argv, **kw)


# ----------------------------------------------------------------------------- raw consumers


def raw_child(bootstrap: str, topic: str, n: int, backoff_ms: int | None) -> int:
    """The raw consumer's body (``--raw-child``): read ``topic`` from the start with
    confluent-kafka + orjson, printing ``progress N T CPU`` after each ``consume``."""
    import orjson
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if backoff_ms is not None:
        conf["fetch.queue.backoff.ms"] = backoff_ms
    c = Consumer(conf)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    loads = orjson.loads
    seen = 0
    out = sys.stdout
    try:
        while seen < n:
            for m in c.consume(num_messages=RAW_BATCH, timeout=1.0):
                if m.error() is None:
                    loads(m.value())
                    seen += 1
            out.write(f"progress {seen} {time.monotonic()} {time.process_time()}\n")
            out.flush()
    finally:
        c.close()
    time.sleep(3600)  # until stopped: the bench reads this process's peak RSS first
    return 0


def raw_run(
    stack: ExitStack, bootstrap: str, topic: str, n: int, backoff_ms: int | None, timeout_s: float
) -> Run:
    argv = [sys.executable, __file__, "--raw-child", bootstrap, topic, str(n),
            "" if backoff_ms is None else str(backoff_ms)]  # fmt: skip
    proc = spawn_child(stack, "raw consumer", argv, stdout=subprocess.PIPE)
    reader = StdoutProgress(proc)
    reader.start()
    _, peak, _ = watch(proc, "the raw consumer", lambda: reader.count, n, timeout_s=timeout_s)
    _pipeline_bench().stop_process(proc, "raw consumer")
    reader.join(10)
    points = reader.points
    label = "librdkafka defaults" if backoff_ms is None else f"fetch.queue.backoff.ms={backoff_ms}"
    r = run_from(f"raw confluent-kafka + orjson, {label}", "-", points, n)
    r.peak_rss = peak
    return r


# ----------------------------------------------------------------------------- driftline


def spec_data(
    base: dict[str, Any],
    run_id: str,
    topic: str,
    *,
    guarantee: str,
    web_port: int,
    features_only: bool = False,
    window_ms: int | None = None,
) -> dict[str, Any]:
    """The demo spec (``base``, parsed) for one bench run: its own pipeline name (so its own
    consumer group and changelog), input ``topic``, outputs, guarantee and port; without model
    and detectors if ``features_only``; with every feature's window set to ``window_ms`` if
    given (the names stay: the demo model is trained on ``amount_mean_1m``).

    >>> base = {"pipeline": {"name": "demo"}, "input": {"topic": "t"},
    ...         "features": [{"name": "amount_mean_1m", "window_ms": 60000}],
    ...         "model": {"inputs": ["amount_mean_1m"]}, "detectors": [{}],
    ...         "output": {"features_topic": "f"}, "worker": {}}
    >>> d = spec_data(base, "r1", "in", guarantee="at_least_once", web_port=1,
    ...               window_ms=86_400_000)
    >>> d["pipeline"]["name"], d["output"], d["worker"]["processing_guarantee"]
    ('bench-r1', {'features_topic': 'bench-r1.features'}, 'at_least_once')
    >>> d["features"]
    [{'name': 'amount_mean_1m', 'window_ms': 86400000}]
    >>> sorted(spec_data(base, "r2", "in", guarantee="exactly_once", web_port=1,
    ...                  features_only=True))
    ['features', 'input', 'output', 'pipeline', 'worker']
    >>> base["features"][0]["window_ms"]
    60000
    """
    data = json.loads(json.dumps(base))
    data["pipeline"]["name"] = f"bench-{run_id}"
    data["input"]["topic"] = topic
    data["output"] = {k: f"bench-{run_id}.{k.removesuffix('_topic')}" for k in data["output"]}
    data["worker"]["processing_guarantee"] = guarantee
    data["worker"]["web_port"] = web_port
    if features_only:
        data.pop("model", None)
        data.pop("detectors", None)
    if window_ms is not None:
        for f in data["features"]:
            f["window_ms"] = window_ms
    return data


def write_spec(tmp: Path, data: dict[str, Any]) -> Path:
    """``data`` as a TOML spec in ``tmp``, with the demo model trained on its inputs."""
    from driftline.agents.demo import _to_toml, train_demo_model

    name = data["pipeline"]["name"]
    if "model" in data:
        model = tmp / f"{name}-model.pkl"
        train_demo_model(model, list(data["model"]["inputs"]))
        data["model"]["path"] = str(model)
    path = tmp / f"{name}.toml"
    path.write_text(_to_toml(data))
    return path


def metrics_count(url: str) -> float | None:
    """``driftline_records_consumed_total`` on the worker's /metrics (None until it answers)."""
    pb = _pipeline_bench()
    try:
        return pb.metric_sum(pb.parse_metrics(pb.read_text(url, timeout=2.0)), CONSUMED)
    except OSError:
        return None


def worker_argv(spec_path: Path, bootstrap: str) -> list[str]:
    pb = _pipeline_bench()
    return [
        sys.executable, "-c", pb._DEATHSIG_WRAPPER, "driftline.cli", "worker",
        "-c", str(spec_path), "--bootstrap", bootstrap, "--loglevel", "info",
    ]  # fmt: skip


def driftline_run(
    stack: ExitStack,
    tmp: Path,
    data: dict[str, Any],
    name: str,
    bootstrap: str,
    n: int,
    *,
    timeout_s: float,
    max_rss: int | None = None,
    restart: bool = True,
) -> tuple[Run, list[Point]]:
    """Run a driftline worker on ``data`` until it has read ``n`` events (or the budget or
    ``max_rss`` stop it), stop it (SIGTERM: it commits), then restart it on the same spec and
    time its state restore."""
    pb = _pipeline_bench()
    spec_path = write_spec(tmp, data)
    guarantee = data["worker"]["processing_guarantee"]
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"
    log_path = tmp / f"{data['pipeline']['name']}.log"
    with log_path.open("wb") as errf:
        proc = spawn_child(stack, "worker", worker_argv(spec_path, bootstrap),
                           stdout=subprocess.DEVNULL, stderr=errf)  # fmt: skip
    try:
        points, peak, why = watch(proc, "the driftline worker", lambda: metrics_count(url), n,
                                  timeout_s=timeout_s, interval_s=0.25, max_rss=max_rss,
                                  log_path=log_path)  # fmt: skip
    finally:
        pb.stop_process(proc, "worker", timeout_s=60)
    r = run_from(name, guarantee, points, n)
    r.peak_rss = peak
    if why == "rss":
        r.notes.append(f"stopped at peak RSS {peak / 2**30:.1f} GiB (--max-rss-gb)")
    elif why == "budget":
        r.notes.append(f"stopped by the {timeout_s:g}s budget")
    if restart:
        r.restart_s, r.restore_s = restart_time(stack, spec_path, bootstrap, tmp, name)
    return r, points


def restart_time(
    stack: ExitStack, spec_path: Path, bootstrap: str, tmp: Path, name: str, timeout_s: float = 300
) -> tuple[float | None, float | None]:
    """Start a worker on ``spec_path`` again: seconds from spawn to its log line "assigned
    partitions ... (state restored in X s)", and X (None, None if it never came)."""
    pb = _pipeline_bench()
    log_path = tmp / f"{spec_path.stem}-restart.log"
    t0 = time.perf_counter()
    with log_path.open("wb") as errf:
        proc = spawn_child(stack, "worker", worker_argv(spec_path, bootstrap),
                           stdout=subprocess.DEVNULL, stderr=errf)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            m = RESTORED.search(log_path.read_text(errors="replace"))
            if m:
                return time.perf_counter() - t0, float(m.group(1))
            time.sleep(0.05)
        pb.log(f"{name}: no restore line in {timeout_s:g}s (see {log_path})")
        return None, None
    finally:
        pb.stop_process(proc, "worker", timeout_s=60)


# ----------------------------------------------------------------------------- Kafka Streams


def kstreams_classpath(build: bool = True) -> str:
    """The Kafka Streams app's classpath, building it with ``mvn -q package`` first when its jar
    is missing or older than its pom or sources."""
    pb = _pipeline_bench()
    jar = KSTREAMS / "target" / "kstreams-bench.jar"
    sources = [KSTREAMS / "pom.xml", *KSTREAMS.joinpath("src").rglob("*.java")]
    stale = not jar.exists() or max(s.stat().st_mtime for s in sources) > jar.stat().st_mtime
    if stale and build:
        if shutil.which("mvn") is None:
            raise pb.BenchError("Kafka Streams: mvn not found (install Maven, or --skip-kstreams)")
        pb.log("building the Kafka Streams app (mvn -q package; first run downloads from Maven "
               "Central) ...")  # fmt: skip
        done = subprocess.run(["mvn", "-q", "-B", "package"], cwd=KSTREAMS, capture_output=True,
                              text=True, timeout=900, check=False)  # fmt: skip
        if done.returncode != 0:
            raise pb.BenchError(f"mvn package failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return os.pathsep.join([str(jar), str(KSTREAMS / "target" / "lib" / "*")])


def kstreams_run(
    stack: ExitStack,
    tmp: Path,
    bootstrap: str,
    topic: str,
    n: int,
    guarantee: str,
    *,
    classpath: str,
    timeout_s: float,
    cache_bytes: int = 0,
    heap: str = "1g",
) -> Run:
    from driftline.agents.kafka_io import ensure_topics

    pb = _pipeline_bench()
    app = f"bench-ks-{uuid.uuid4().hex[:8]}"
    out_topic = f"{app}.features"
    ensure_topics(bootstrap, [out_topic], partitions=PARTITIONS)
    state_dir = tmp / app
    argv = [
        "java", f"-Xmx{heap}", "-cp", classpath, KSTREAMS_MAIN,
        f"bootstrap={bootstrap}", f"input={topic}", f"output={out_topic}", f"app_id={app}",
        f"guarantee={guarantee}", f"state_dir={state_dir}", f"cache_bytes={cache_bytes}",
    ]  # fmt: skip
    log_path = tmp / f"{app}.log"
    errf = stack.enter_context(log_path.open("wb"))
    proc = spawn_child(stack, "kafka streams", argv, stdout=subprocess.PIPE, stderr=errf)
    reader = StdoutProgress(proc)
    reader.start()
    try:
        _, peak, _ = watch(proc, "Kafka Streams", lambda: reader.count, n,
                           timeout_s=timeout_s, log_path=log_path)  # fmt: skip
    finally:
        pb.stop_process(proc, "kafka streams", timeout_s=30)
    reader.join(10)
    points = reader.points
    name = "Kafka Streams" if not cache_bytes else f"Kafka Streams, record cache {cache_bytes} B"
    r = run_from(name, guarantee, points, n)
    r.peak_rss = peak
    r.notes.append(f"heap -Xmx{heap}, 1 stream thread, record cache {cache_bytes} B")
    if any("ERROR" in line for line in reader.lines):
        r.notes.append("went to state ERROR: " + "; ".join(reader.lines[-3:]))
    return r


# ----------------------------------------------------------------------------- produce


def scale_events(n: int, n_entities: int, seed: int = 11) -> Iterator[tuple[bytes, bytes]]:
    """``n`` (key, value) events whose user ids cycle through ``n_entities`` users (after k
    events, min(k, n_entities) distinct), in event-time order, ``SCALE_STEP_MS`` apart.

    >>> [k for k, _ in scale_events(4, 3)]
    [b'u0', b'u1', b'u2', b'u0']
    >>> json.loads(next(scale_events(1, 1))[1])["ts"]
    1767225600000
    """
    import orjson

    from driftline.agents.synthetic import SyntheticStream

    chunk = 1_000_000
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        a = SyntheticStream(n=k, shift_at=k, seed=seed + start).arrays()
        ts0 = SyntheticStream.start_ms + SCALE_STEP_MS * start
        for i, (am, lat, c) in enumerate(
            zip(a["amount"].tolist(), a["latency_ms"].tolist(), a["country"].tolist(), strict=True)
        ):
            user = f"u{(start + i) % n_entities}"
            value = {"user_id": user, "ts": ts0 + SCALE_STEP_MS * i, "amount": round(am, 4),
                     "latency_ms": round(lat, 4), "country": c}  # fmt: skip
            yield user.encode(), orjson.dumps(value)


def produce(bootstrap: str, topic: str, events: Iterator[tuple[bytes, bytes]]) -> int:
    """Write ``events`` to a fresh ``topic`` (idempotent, so in order, uncompressed); their
    count, checked against the topic's offsets."""
    from driftline.agents.kafka_io import ensure_topics, make_producer, produce_all

    pb = _pipeline_bench()
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    p = make_producer(bootstrap, **{"linger.ms": 20, "batch.size": 1_000_000,
                                    "compression.type": "none"})  # fmt: skip
    counted = [0]

    def counting() -> Iterator[tuple[str, bytes, bytes]]:
        for key, value in events:
            counted[0] += 1
            if counted[0] % 1000 == 0:
                p.poll(0)
            yield topic, key, value

    produce_all(p, counting())
    left = p.flush(300)
    stored = pb.topic_size(bootstrap, topic)
    if left or stored != counted[0]:
        raise pb.BenchError(f"{topic}: {stored} of {counted[0]} events stored ({left} queued)")
    return stored


def synthetic_events(n: int) -> Iterator[tuple[bytes, bytes]]:
    """The stream every other bench reads: ``SyntheticStream`` (1,000 users, shift at 60%)."""
    import orjson

    from driftline.agents.synthetic import SyntheticStream

    for e in SyntheticStream(n=n, shift_at=int(0.6 * n)).events():
        yield e["user_id"].encode(), orjson.dumps(e)


# ----------------------------------------------------------------------------- latency


def latency(bootstrap: str, seconds: float, tmp: Path) -> dict[str, dict[str, float]]:
    """p50/p99 event -> prediction per guarantee from ``bench/latency_bench.py --skip-core``
    (5,000 events/s) on the same broker; also the same events read from the input alone."""
    pb = _pipeline_bench()
    out = tmp / "latency.json"
    argv = [sys.executable, str(HERE / "latency_bench.py"), "--skip-core", "--bootstrap",
            bootstrap, "--seconds", f"{seconds:g}", "--json", str(out),
            "--guarantees", "at_least_once,exactly_once"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600 + 4 * seconds,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise pb.BenchError(f"latency_bench failed:\n{done.stderr[-3000:]}")
    report = json.loads(out.read_text())
    res: dict[str, dict[str, float]] = {}
    for g, e2e in report["e2e_by_guarantee"].items():
        res[g] = {k: e2e["latency_ms"][k] for k in ("p50", "p99")}
        res[g].update({f"kafka_alone_{k}": e2e["baseline_ms"][k] for k in ("p50", "p99")})
        res[g]["offered_rate"] = e2e["rate_target"]
    return res


# ----------------------------------------------------------------------------- main


def _counts(text: str) -> list[int]:
    try:
        out = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated counts, got {text!r}") from e
    if not out or min(out) <= 0:
        raise argparse.ArgumentTypeError("counts must be positive")
    return out


def _counts_or_zero(text: str) -> list[int]:
    """``--ks-cache-bytes``: comma-separated byte counts, 0 allowed.

    >>> _counts_or_zero("0,10485760")
    [0, 10485760]
    """
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated bytes, got {text!r}") from e
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError("expected one or more sizes >= 0")
    return out


def _backoffs(text: str) -> list[int | None]:
    """``--backoffs``: comma-separated milliseconds, ``default`` for librdkafka's own.

    >>> _backoffs("default,10,0")
    [None, 10, 0]
    """
    out: list[int | None] = []
    for x in (x.strip() for x in text.split(",")):
        if x == "default":
            out.append(None)
        elif x.isdigit():
            out.append(int(x))
        elif x:
            raise argparse.ArgumentTypeError(f"expected ms or 'default', got {x!r}")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000, help="events in the peer comparison")
    ap.add_argument(
        "--entities",
        type=_counts,
        default=[10_000, 1_000_000, 10_000_000],
        help="distinct users for the scale runs (10000,1000000,10000000; '' style: 1e4,1e6)",
    )
    ap.add_argument(
        "--scale-min-events", type=int, default=300_000, help="fewest events per scale run"
    )
    ap.add_argument(
        "--scale-budget", type=float, default=300.0, help="seconds per scale run at most (300)"
    )
    ap.add_argument(
        "--scale-guarantees",
        default="exactly_once,at_least_once",
        help="guarantees of the scale runs (exactly_once,at_least_once)",
    )
    ap.add_argument("--max-rss-gb", type=float, default=6.0, help="stop a worker past this RSS")
    ap.add_argument(
        "--latency-seconds", type=float, default=20.0, help="latency run length (0 skips)"
    )
    ap.add_argument("--skip-kstreams", action="store_true", help="leave out Kafka Streams")
    ap.add_argument("--skip-scale", action="store_true", help="leave out the entity-scale runs")
    ap.add_argument(
        "--skip-peers", action="store_true", help="only the scale and latency runs (no --events)"
    )
    ap.add_argument(
        "--backoffs",
        type=_backoffs,
        default=[None, TUNED_BACKOFF_MS],
        help=f"fetch.queue.backoff.ms of the raw runs ('default' = librdkafka's; "
        f"default,{TUNED_BACKOFF_MS})",
    )
    ap.add_argument("--ks-heap", default="1g", help="Kafka Streams -Xmx (1g)")
    ap.add_argument(
        "--ks-cache-bytes",
        type=_counts_or_zero,
        default=[0],
        help="Kafka Streams record cache sizes to run (0: every update emitted, as driftline "
        "does; 10485760 is Kafka Streams' default, which emits once per key and commit)",
    )
    ap.add_argument("--json", type=Path, help="also write the JSON line to this file")
    ap.add_argument(
        "--bootstrap", help="Kafka bootstrap (default $KAFKA_BOOTSTRAP_SERVERS, else local broker)"
    )
    return ap.parse_args(argv)


def peers(
    args: argparse.Namespace,
    stack: ExitStack,
    tmp: Path,
    bootstrap: str,
    run_id: str,
    base: dict[str, Any],
    classpath: str,
    note: Callable[[Run], Run],
) -> None:
    """The systems side by side on one topic of ``args.events`` events."""
    from driftline.localkafka import free_port

    pb = _pipeline_bench()
    n: int = args.events
    topic = f"bench-{run_id}.events"
    t = time.monotonic()
    produce(bootstrap, topic, synthetic_events(n))
    pb.log(f"produced {n} events to {topic} in {time.monotonic() - t:.1f}s")
    timeout = max(120.0, n / 2000)
    for backoff in args.backoffs:
        note(raw_run(stack, bootstrap, topic, n, backoff, timeout))
    for guarantee, features_only in (
        ("exactly_once", False),
        ("at_least_once", False),
        ("exactly_once", True),
        ("at_least_once", True),
    ):
        sub = f"{run_id}-{'f' if features_only else 'p'}-{guarantee[:3]}"
        data = spec_data(base, sub, topic, guarantee=guarantee, web_port=free_port(),
                         features_only=features_only)  # fmt: skip
        label = "driftline worker, " + ("features only" if features_only else "full")
        note(driftline_run(stack, tmp, data, label, bootstrap, n, timeout_s=timeout)[0])
    if not args.skip_kstreams:
        for cache in args.ks_cache_bytes:
            for guarantee in ("exactly_once_v2", "at_least_once"):
                note(kstreams_run(stack, tmp, bootstrap, topic, n, guarantee,
                                  classpath=classpath, timeout_s=timeout, cache_bytes=cache,
                                  heap=args.ks_heap))  # fmt: skip


def run(args: argparse.Namespace, stack: ExitStack) -> int:
    import driftline.localkafka as lk
    from driftline.agents.demo import ks_adwin_spec_text
    from driftline.localkafka import free_port

    pb = _pipeline_bench()
    logging.getLogger("driftline").setLevel(logging.ERROR)
    n: int = args.events
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-peer-")))
    classpath = "" if args.skip_kstreams or args.skip_peers else kstreams_classpath()
    # a plaintext cluster: the raw consumer and Kafka Streams take only its bootstrap
    settings, broker, _ = pb.given_or_local_broker(args.bootstrap, stack, tmp / "kafka")
    bootstrap: str = settings.bootstrap
    load_before = pb.load_average()
    facts = pb.machine_facts(bootstrap, broker, ("confluent-kafka", "orjson", "numpy"))
    facts.append(f"kafka streams: {lk.KAFKA_VERSION} (bench/kstreams), java "
                 + subprocess.run(["java", "-version"], capture_output=True, text=True,
                                  check=False).stderr.splitlines()[0])  # fmt: skip
    facts.append(f"load:    {load_before} (1/5/15 min) before; other work on this machine "
                 "competes for the same cores")  # fmt: skip
    print("\n".join(facts), flush=True)

    run_id = uuid.uuid4().hex[:8]
    base = tomllib.loads(ks_adwin_spec_text())
    runs: list[Run] = []

    def note(r: Run) -> Run:
        pb.log(f"{r.name} [{r.guarantee}]: {r.rate:,.0f}/s, {r.cpu_per_100k:.2f} CPU s/100k")
        runs.append(r)
        return r

    if not args.skip_peers:
        peers(args, stack, tmp, bootstrap, run_id, base, classpath, note)

    scale: list[Run] = []
    if not args.skip_scale:
        max_rss = int(args.max_rss_gb * 2**30)
        for e in args.entities:
            events = max(e, args.scale_min_events)
            s_topic = f"bench-{run_id}.scale-{e}"
            t = time.monotonic()
            produce(bootstrap, s_topic, scale_events(events, e))
            pb.log(f"produced {events} events over {e} users in {time.monotonic() - t:.1f}s")
            for guarantee in [g for g in args.scale_guarantees.split(",") if g]:
                data = spec_data(base, f"{run_id}-s{e}-{guarantee[:3]}", s_topic,
                                 guarantee=guarantee, web_port=free_port(),
                                 window_ms=DAY_MS)  # fmt: skip
                r, points = driftline_run(stack, tmp, data, str(e), bootstrap, events,
                                          timeout_s=args.scale_budget,
                                          max_rss=max_rss)  # fmt: skip
                read = int(max(p.count for p in points))
                r.entities = min(read, e)
                r.notes.append(f"read {read} of {events} events")
                pb.log(f"{e} users [{guarantee}]: {r.rate:,.0f}/s (2nd half "
                       f"{fmt(r.tail_rate)}/s), restore {fmt(r.restore_s, '.2f')} s")  # fmt: skip
                scale.append(r)

    lat: dict[str, dict[str, float]] = {}
    if args.latency_seconds > 0:
        pb.log(f"latency at 5,000 events/s ({args.latency_seconds:g}s per guarantee) ...")
        lat = latency(bootstrap, args.latency_seconds, tmp)

    print()
    if runs:
        print(f"{n:,} events, {PARTITIONS} partitions, one broker, each its own process:")
        print(text_table(rows_of(runs), [False, False] + [True] * (len(HEADER) - 2)))
    if scale:
        print()
        print("driftline by distinct users in state (1-day tumbling count + mean, full pipeline):")
        print(text_table(scale_rows(scale), [False] + [True] * (len(SCALE_HEADER) - 1)))
    if lat:
        print()
        print("event -> prediction at 5,000 events/s (bench/latency_bench.py; Kafka alone = "
              "the same events read from the input):")  # fmt: skip
        for g, v in lat.items():
            print(f"  {g}: p50 {v['p50']:.1f} ms, p99 {v['p99']:.1f} ms (Kafka alone p50 "
                  f"{v['kafka_alone_p50']:.1f}, p99 {v['kafka_alone_p99']:.1f})")  # fmt: skip
    print()
    for r in [*runs, *scale]:
        for x in r.notes:
            print(f"{r.name} [{r.guarantee}]: {x}")
    print()
    print("targets (issue 13):")
    for v in verdicts(runs, scale, lat):
        print(f"  {v}")
    print(f"load average after: {pb.load_average()} (before: {load_before})")
    report = {
        "facts": facts,
        "events": n,
        "runs": [{**asdict(r), "rate": r.rate, "cpu_per_100k": r.cpu_per_100k} for r in runs],
        "scale": [{**asdict(r), "rate": r.rate, "cpu_per_100k": r.cpu_per_100k} for r in scale],
        "latency_ms": lat,
        "markdown": markdown_table(rows_of(runs)),
        "markdown_scale": markdown_table(scale_rows(scale)) if scale else "",
        "load_before": load_before,
        "load_after": pb.load_average(),
    }
    line = json.dumps(report, default=str)
    print(line, flush=True)
    if args.json:
        args.json.write_text(line + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--raw-child"]:
        bootstrap, topic, n, backoff = argv[1:5]
        return raw_child(bootstrap, topic, int(n), int(backoff) if backoff else None)
    return _pipeline_bench().run_main("peer_bench", parse_args(argv), run)


if __name__ == "__main__":
    raise SystemExit(main())
