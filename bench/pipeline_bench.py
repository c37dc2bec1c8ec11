"""Throughput of driftline next to the ceilings and the naive baseline, on a real Kafka broker.

One run produces N synthetic events (``agents.synthetic.SyntheticStream``, orjson, key = user_id)
to a fresh 2-partition topic, then measures one after the other, each reading that backlog:

1. raw ceiling A: confluent-kafka ``Consumer.consume(num_messages=10000)`` + ``json.loads``
2. raw ceiling B: aiokafka ``AIOKafkaConsumer.getmany(max_records=10000)`` + ``orjson.loads``
3. driftline core: ``PartitionPipeline.process`` on the same records in batches of 5000, no Kafka
4. driftline worker: ``driftline worker`` as a subprocess, rate read from its ``/metrics``
5. naive faust: ``bench/faust_naive.py``, one event at a time into a windowed Table

Rates are steady-state: from the first batch (or first non-zero reading) to the N-th event, so
connection set-up and group joins are left out. Then one table: events/s and the ratios to
ceiling A and to naive faust.

    python bench/pipeline_bench.py [--events N] [--skip-faust] [--spec ks_adwin|demo]
        [--bootstrap HOST:PORT]

The broker is ``--bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a local Apache Kafka
started by ``driftline.localkafka`` for this run (and stopped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer
from confluent_kafka import TopicPartition as CkTopicPartition

from driftline.agents.demo import _to_toml, example_spec_text, train_demo_model, worker_env
from driftline.agents.kafka_io import client_conf, ensure_topics, wait_for_broker
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.scrape import parse_samples as parse_metrics
from driftline.agents.scrape import read_text, sample_sum
from driftline.agents.synthetic import SyntheticStream
from driftline.kafka_config import Kafka, KafkaConfig, aiokafka_auth, load_kafka_config
from driftline.localkafka import LocalKafka, free_port, free_ports
from driftline.spec import PipelineSpec, load_spec

HERE = Path(__file__).resolve().parent
PARTITIONS = 2
CORE_BATCH = 5000
RAW_BATCH = 10_000
STAGES = ("poll", "decode", "features", "predict", "detect", "encode", "produce", "commit")
LATENCY = "driftline_record_latency_seconds"
CONSUMED = "driftline_records_consumed_total"

# Runs a module with PR_SET_PDEATHSIG set: the child gets SIGTERM if the bench dies (Linux).
_DEATHSIG_WRAPPER = (
    "import contextlib, ctypes, os, runpy, signal, sys\n"
    "with contextlib.suppress(OSError, AttributeError):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() == 1:\n"
    "    sys.exit(1)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


class BenchError(RuntimeError):
    pass


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    #: CPU seconds the measured process(es) used over the same interval (None: not measured)
    cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_per_100k(self) -> float:
        """CPU seconds per 100k events (nan when not measured).

        >>> Result("x", 200_000, 2.0, cpu_seconds=3.0).cpu_per_100k
        1.5
        """
        if self.cpu_seconds is None or self.events <= 0:
            return math.nan
        return self.cpu_seconds / self.events * 100_000


class SteadyRate:
    """Counts events batch by batch; the rate runs from the end of the first non-empty batch to
    the end of the last (connection set-up and the first fetch left out). If the first batch was
    all there was, it falls back to timing from the start of the call that returned it."""

    def __init__(self) -> None:
        self.seen = 0
        self.first: tuple[float, float, int] | None = None  # call start, end, events
        self.t_end = 0.0
        self.cpu_first = self.cpu_end = 0.0  # this process's CPU time (all its threads)

    def add(self, call_start: float, k: int) -> None:
        if k <= 0:
            return
        now = time.perf_counter()
        cpu = time.process_time()
        if self.first is None:
            self.first = (call_start, now, k)
            self.cpu_first = cpu
        self.seen += k
        self.t_end = now
        self.cpu_end = cpu

    def result(self, name: str) -> Result:
        if self.first is None:
            return Result(name, 0, 0.0, ["nothing read"])
        c0, t0, k0 = self.first
        if self.seen > k0:
            return Result(name, self.seen - k0, self.t_end - t0,
                          cpu_seconds=self.cpu_end - self.cpu_first)  # fmt: skip
        return Result(name, self.seen, self.t_end - c0, ["one batch only: includes its fetch"])


# ----------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def metric_sum(
    samples: Sequence[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> float:
    return sample_sum(samples, name, labels)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` over cumulative ``(le, count)`` buckets.

    Linear interpolation inside the bucket holding the rank; the first bucket starts at 0; a
    rank in the +Inf bucket returns the highest finite bound.

    >>> histogram_quantile(0.5, [(1.0, 2), (2.0, 4), (math.inf, 4)])
    1.0
    >>> histogram_quantile(0.75, [(1.0, 2), (2.0, 4), (math.inf, 4)])
    1.5
    >>> histogram_quantile(0.99, [(1.0, 2), (2.0, 4), (math.inf, 10)])
    2.0
    """
    bs = sorted(buckets)
    if not bs or not math.isinf(bs[-1][0]):
        return math.nan
    total = bs[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in bs:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return bs[-2][0] if len(bs) > 1 else math.nan


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "unknown"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads) from /proc, or None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(p: subprocess.Popen[Any], name: str, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; always reaps."""
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {p.pid}) ignored SIGTERM for {timeout_s:g}s; killing it")
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(10)


def spawn(stack: ExitStack, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start a child in its own session (Ctrl-C reaches only us; we stop it in order)."""
    p: subprocess.Popen[Any] = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, start_new_session=True, **kw
    )
    stack.callback(stop_process, p, name)
    return p


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so every ``finally`` and ExitStack runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ----------------------------------------------------------------------------- produce


def produce_pairs(
    bootstrap: Kafka, topic: str, pairs: Iterable[tuple[bytes, bytes]], compression: str
) -> dict[int, list[RawRecord]]:
    """Produce ``(key, value)`` pairs in order (idempotent: each partition keeps it) to a fresh
    topic; return what the broker stored, per partition, by offset."""
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    stored: dict[int, list[RawRecord]] = defaultdict(list)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
            return
        ts_type, ts = msg.timestamp()
        stored[msg.partition()].append(
            RawRecord(
                topic,
                msg.partition(),
                msg.offset(),
                ts if ts_type else None,
                msg.key(),
                msg.value(),
            )
        )

    p = Producer(
        client_conf(bootstrap, {
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": compression,
            "acks": "all",
            # without idempotence a retried first batch (fresh topic, leader not ready) lands
            # after later ones: events out of time order, dead-lettered as late by the pipeline
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        })
    )  # fmt: skip
    for key, value in pairs:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(120)
    if left or errors:
        raise BenchError(f"{left} events not delivered; errors: {errors[:3]}")
    for recs in stored.values():
        recs.sort(key=lambda r: r.offset)
    return dict(stored)


def produce(
    bootstrap: Kafka, topic: str, n: int, compression: str
) -> tuple[dict[int, list[RawRecord]], float]:
    """Produce the synthetic stream; return what the broker stored, per partition, and the mean
    value size."""
    events = list(SyntheticStream(n=n, shift_at=int(0.6 * n)).events())
    keys = [e["user_id"].encode() for e in events]
    values = [orjson.dumps(e) for e in events]
    stored = produce_pairs(bootstrap, topic, zip(keys, values, strict=True), compression)
    for part, recs in stored.items():
        times = [orjson.loads(r.value or b"{}")["ts"] for r in recs]
        back = sum(1 for a, b in itertools.pairwise(times) if b < a)
        if back:
            raise BenchError(f"partition {part} holds {back} events out of event-time order")
    got = sum(len(r) for r in stored.values())
    if got != n:
        raise BenchError(f"produced {got} of {n} events")
    return stored, sum(map(len, values)) / n


# ----------------------------------------------------------------------------- 1, 2: raw


def _reads(rate: SteadyRate, n: int, timeout_s: float, client: str) -> Iterator[float]:
    """Each read's start (``perf_counter``) until ``rate`` has seen ``n`` events; BenchError
    once ``timeout_s`` has passed without."""
    deadline = time.monotonic() + timeout_s
    while rate.seen < n:
        if time.monotonic() > deadline:
            raise BenchError(f"{client} read {rate.seen}/{n} events in {timeout_s:g}s")
        yield time.perf_counter()


#: The consumer setting the worker uses too: librdkafka 2.x otherwise waits 1 s between fetches
#: whenever its queue is full, which caps a fast reader near 150k events/s.
TUNED = {"fetch.queue.backoff.ms": "10"}


def raw_confluent(
    bootstrap: Kafka, topic: str, n: int, timeout_s: float, tuned: bool = True
) -> Result:
    """Read ``n`` events and decode each: the ceiling (``tuned``: `TUNED` and orjson) or
    librdkafka's defaults with ``json.loads`` (what a first attempt gets)."""
    c = Consumer(
        client_conf(bootstrap, {
            "group.id": f"bench-raw-ck-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **(TUNED if tuned else {}),
        })
    )  # fmt: skip
    try:
        c.assign([CkTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        loads = orjson.loads if tuned else json.loads
        rate = SteadyRate()
        for t_call in _reads(rate, n, timeout_s, "confluent-kafka"):
            msgs = c.consume(num_messages=RAW_BATCH, timeout=1.0)
            k = 0
            for m in msgs:
                if m.error():
                    continue
                loads(m.value())
                k += 1
            rate.add(t_call, k)
    finally:
        c.close()
    if tuned:
        return rate.result("raw A: confluent consume+orjson, fetch.queue.backoff.ms=10")
    return rate.result("raw A0: confluent consume+json.loads, librdkafka defaults")


async def _raw_aiokafka(bootstrap: Kafka, topic: str, n: int, timeout_s: float) -> Result:
    c = AIOKafkaConsumer(
        bootstrap_servers=str(bootstrap),
        **aiokafka_auth(KafkaConfig.of(bootstrap)),
        group_id=f"bench-raw-aio-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=RAW_BATCH,
        fetch_max_bytes=64 * 1024 * 1024,  # as the worker's consumer
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await c.start()
    try:
        c.assign([AioTopicPartition(topic, p) for p in range(PARTITIONS)])
        await c.seek_to_beginning()
        loads = orjson.loads
        rate = SteadyRate()
        for t_call in _reads(rate, n, timeout_s, "aiokafka"):
            batches = await c.getmany(timeout_ms=1000, max_records=RAW_BATCH)
            k = 0
            for recs in batches.values():
                for r in recs:
                    loads(r.value)
                k += len(recs)
            rate.add(t_call, k)
    finally:
        await c.stop()
    return rate.result("raw B: aiokafka getmany+orjson")


def raw_aiokafka(bootstrap: Kafka, topic: str, n: int, timeout_s: float) -> Result:
    return asyncio.run(_raw_aiokafka(bootstrap, topic, n, timeout_s))


# ----------------------------------------------------------------------------- 3: core


def make_spec(
    tmp: Path, run_id: str, topic: str, web_port: int, example: str = "ks_adwin"
) -> tuple[PipelineSpec, Path]:
    """The pipeline of ``driftline/examples/<example>.toml`` (``ks_adwin``: the demo's features
    and model, ``ks`` on amount and ``adwin`` on latency_ms; ``demo``: the default detector set
    on amount, latency_ms and country) on ``topic``, outputs named after ``run_id``."""
    data = tomllib.loads(example_spec_text(example))
    data["pipeline"]["name"] = f"bench-{run_id}"
    data["input"]["topic"] = topic
    data["output"] = {k: f"bench-{run_id}.{k.removesuffix('_topic')}" for k in data["output"]}
    data["worker"]["web_port"] = web_port
    train_demo_model(tmp / "demo-model.pkl", list(data["model"]["inputs"]))
    path = tmp / "spec.toml"
    path.write_text(_to_toml(data))
    return load_spec(path), path


def core(spec: PipelineSpec, stored: dict[int, list[RawRecord]]) -> tuple[Result, dict[str, float]]:
    predictor, model_version = build_predictor(spec)
    pipes = {p: PartitionPipeline(spec, p, predictor, model_version) for p in stored}
    per_part = {
        p: [recs[i : i + CORE_BATCH] for i in range(0, len(recs), CORE_BATCH)]
        for p, recs in stored.items()
    }
    order = [
        (p, batches[i])
        for i in range(max(len(b) for b in per_part.values()))
        for p, batches in sorted(per_part.items())
        if i < len(batches)
    ]
    stages: dict[str, float] = defaultdict(float)
    n = messages = 0
    dead: Counter[str] = Counter()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for p, batch in order:
        out = pipes[p].process(batch)
        n += out.consumed
        messages += sum(1 for _ in out.all_messages())
        dead.update(out.dead_letters)
        for s, secs in out.stage_seconds.items():
            stages[s] += secs
    secs = time.perf_counter() - t0
    res = Result("driftline core (no Kafka)", n, secs, cpu_seconds=time.process_time() - cpu0)
    res.notes.append(
        f"{len(order)} batches of <= {CORE_BATCH}; {messages} outbound messages built, "
        f"dead letters: {dict(dead) or 0}"
    )
    return res, dict(stages)


# ----------------------------------------------------------------------------- 4: worker


@dataclass
class WorkerRun:
    result: Result
    samples: list[tuple[str, dict[str, str], float]]
    cpu_cores: float | None
    broker_cpu_cores: float | None


def worker(
    stack: ExitStack,
    spec_path: Path,
    bootstrap: Kafka,
    port: int,
    n: int,
    tmp: Path,
    timeout_s: float,
    broker_pid: int | None,
    processes: int = 1,
) -> WorkerRun:
    """Run ``driftline worker`` (``--processes``) over the backlog from its own consumer group
    (the spec's group id plus the process count, so each run reads everything)."""
    log_path = tmp / f"worker-{processes}.log"
    argv = [
        sys.executable, "-c", _DEATHSIG_WRAPPER, "driftline.cli", "worker", "-c", str(spec_path),
        "--bootstrap", str(bootstrap), "--loglevel", "warning", "--web-port", str(port),
        "--processes", str(processes), "--worker-id", f"bench-{processes}",
    ]  # fmt: skip
    with log_path.open("wb") as errf:
        proc = spawn(
            stack, "worker", argv, stdout=subprocess.DEVNULL, stderr=errf, env=worker_env(bootstrap)
        )
    url = f"http://127.0.0.1:{port}/metrics"
    pids = [proc.pid]

    def worker_cpu() -> float | None:
        times = [cpu_seconds(pid) for pid in pids]
        return None if None in times else sum(t for t in times if t is not None)

    first: tuple[float, float, float | None, float | None] | None = None
    last: tuple[float, float, float | None, float | None] | None = None
    consumed = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while consumed < n:
            if proc.poll() is not None:
                raise BenchError(
                    f"the worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"the worker consumed {consumed:.0f}/{n} in {timeout_s:g}s")
            try:
                text = read_text(url, timeout=2.0)
            except OSError:
                time.sleep(0.2)
                continue
            if processes > 1 and len(pids) == 1:  # CPU counted over every member from the start
                pids += supervised_pids(port)
                if len(pids) == 1:
                    continue
            now = time.perf_counter()
            consumed = metric_sum(parse_metrics(text), CONSUMED)
            point = (
                now,
                consumed,
                worker_cpu(),
                cpu_seconds(broker_pid) if broker_pid else None,
            )
            if consumed > 0 and first is None:
                first = point
            last = point
            if consumed < n:
                time.sleep(0.1)
        samples = parse_metrics(read_text(url))
    finally:
        stop_process(proc, "worker")
    assert first is not None and last is not None
    name = "driftline worker on Kafka" + (f", {processes} processes" if processes > 1 else "")
    res = Result(name, int(last[1] - first[1]), last[0] - first[0])
    if first[2] is not None and last[2] is not None:
        res.cpu_seconds = last[2] - first[2]
    if res.seconds <= 0:
        res.notes.append("the whole backlog was consumed before the first /metrics reading")

    def cores(i: int) -> float | None:
        a, b = first[i], last[i]  # type: ignore[index]
        return None if a is None or b is None or res.seconds <= 0 else (b - a) / res.seconds

    return WorkerRun(res, samples, cores(2), cores(3))


def supervised_pids(port: int) -> list[int]:
    """The worker processes of ``driftline worker --processes N`` serving on ``port`` (its
    index page lists them)."""
    try:
        text = read_text(f"http://127.0.0.1:{port}/", timeout=2.0)
    except OSError:
        return []
    return [int(pid) for pid in re.findall(r"process \d+: pid (\d+)", text)]


# ----------------------------------------------------------------------------- 5: faust


def naive_faust(
    stack: ExitStack, bootstrap: Kafka, topic: str, run_id: str, n: int, budget_s: float,
    startup_s: float,
) -> Result:  # fmt: skip
    tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-faust-")))
    progress_path = tmpdir / "progress"
    progress_path.touch()
    env = {
        **worker_env(bootstrap),  # faust_naive.py connects with the same Kafka settings
        "BENCH_APP_ID": f"bench-faust-{run_id}",
        "BENCH_BOOTSTRAP": str(bootstrap),
        "BENCH_TOPIC": topic,
        "BENCH_PARTITIONS": str(PARTITIONS),
        "BENCH_EVERY": "1000",
        "BENCH_TARGET": str(n),
        "BENCH_PROGRESS": str(progress_path),
    }
    log_path = tmpdir / "faust.log"
    argv = [sys.executable, str(HERE / "faust_naive.py"), "worker", "--loglevel", "warn"]
    errf = stack.enter_context(log_path.open("wb"))
    proc = spawn(stack, "faust", argv, stdout=subprocess.DEVNULL, stderr=errf, env=env, cwd=tmpdir)
    progress: list[tuple[int, float]] = []

    def read_progress() -> None:
        progress.clear()
        for line in progress_path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # the last line may be half written
                a, b = line.split()
                progress.append((int(a), float(b)))

    started = time.monotonic()
    capped = False
    try:
        while True:
            read_progress()
            if proc.poll() is not None:
                raise BenchError(
                    f"the faust app exited with {proc.returncode}:\n" + log_path.read_text()[-3000:]
                )
            now = time.monotonic()
            if progress and progress[-1][0] >= n:
                break
            if progress and now - progress[0][1] > budget_s:
                capped = True
                break
            if not progress and now - started > startup_s:
                raise BenchError(
                    f"the faust app processed nothing in {startup_s:g}s:\n"
                    + log_path.read_text()[-3000:]
                )
            time.sleep(0.2)
    finally:
        stop_process(proc, "faust")
    (n0, t0), (n1, t1) = progress[0], progress[-1]
    res = Result("naive faust agent + windowed Table", n1 - n0, t1 - t0)
    if capped:
        res.notes.append(f"capped at a {budget_s:g}s budget: {n1}/{n} events processed")
    changelog = f"bench-faust-{run_id}-amount_1m-changelog"
    with contextlib.suppress(Exception):
        res.notes.append(
            f"{topic_size(bootstrap, changelog)} messages on its table changelog for {n1} events"
        )
    return res


def topic_size(bootstrap: Kafka, topic: str) -> int:
    """Messages on ``topic`` (sum of high minus low watermarks)."""
    c = Consumer(client_conf(bootstrap, {"group.id": f"bench-size-{uuid.uuid4().hex}"}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in parts:
            lo, hi = c.get_watermark_offsets(CkTopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


# ----------------------------------------------------------------------------- report


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return cpu


def machine_facts(bootstrap: Kafka, broker: str, packages: Sequence[str]) -> list[str]:
    """The lines every benchmark prints first: machine, Python and library versions, broker."""
    import confluent_kafka

    libs = ", ".join(f"{p} {version(p)}" for p in packages)
    return [
        f"machine: {os.cpu_count()} cores ({cpu_model()}), "
        f"{platform.system()} {platform.release()}",
        f"python:  {platform.python_implementation()} {platform.python_version()}",
        f"libs:    {libs}, librdkafka {confluent_kafka.libversion()[0]}",
        f"broker:  {broker} at {bootstrap} (shares this machine's cores)",
    ]


def facts(bootstrap: Kafka, broker: str, n: int, mean_size: float, compression: str) -> str:
    packages = ("faust-streaming", "aiokafka", "confluent-kafka", "orjson")
    return "\n".join(
        [
            *machine_facts(bootstrap, broker, packages),
            f"input:   {n} events, {PARTITIONS} partitions, mean value {mean_size:.0f} B, "
            f"compression {compression}",
            f"load:    {load_average()} (1/5/15 min) before measuring; anything else running "
            "here competes for the same cores",
        ]
    )


def _ratio(a: float, b: float, digits: int) -> str:
    return f"{a / b:.{digits}f}" if b > 0 and math.isfinite(a / b) else "-"


def table(results: Sequence[Result], ceiling: Result, faust: Result | None) -> str:
    """events/s, CPU s per 100k events, and the ratios to ``ceiling`` (by wall clock and per
    CPU second: the per-core figure) and to naive faust.

    >>> raw = Result("raw", 100, 1.0, cpu_seconds=0.5)
    >>> print(table([raw, Result("w", 50, 1.0, cpu_seconds=1.0)], raw, None))
    name  events/s  CPU s/100k  x raw A  x raw A per core  x naive faust
    --------------------------------------------------------------------
    raw        100     500.000     1.00              1.00              -
    w           50   2,000.000     0.50              0.25              -
    """
    head = ("name", "events/s", "CPU s/100k", "x raw A", "x raw A per core", "x naive faust")
    rows = [head]
    for r in results:
        rows.append(
            (
                r.name,
                f"{r.rate:,.0f}" if math.isfinite(r.rate) else "-",
                f"{r.cpu_per_100k:,.3f}" if math.isfinite(r.cpu_per_100k) else "-",
                _ratio(r.rate, ceiling.rate, 2),
                _ratio(ceiling.cpu_per_100k, r.cpu_per_100k, 2),
                _ratio(r.rate, faust.rate, 1) if faust else "-",
            )
        )
    w = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            f"{cell:<{w[i]}}" if i == 0 else f"{cell:>{w[i]}}" for i, cell in enumerate(row)
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def scaling(runs: Sequence[WorkerRun]) -> str:
    """How events/s grew with ``--processes``: each run against the first.

    >>> one = WorkerRun(Result("w", 100, 1.0), [], 1.0, None)
    >>> two = WorkerRun(Result("w, 2 processes", 190, 1.0), [], 2.0, None)
    >>> print(scaling([one, two]))
    w, 2 processes: 190 events/s = 1.90x w (using 2.00 cores)
    """
    base = runs[0].result
    return "\n".join(
        f"{r.result.name}: {r.result.rate:,.0f} events/s = {_ratio(r.result.rate, base.rate, 2)}x "
        f"{base.name}" + (f" (using {r.cpu_cores:.2f} cores)" if r.cpu_cores is not None else "")
        for r in runs[1:]
    )


def worker_details(run: WorkerRun, n: int) -> str:
    s = run.samples
    by_le: dict[float, float] = defaultdict(float)  # summed over processes
    for name, lab, v in s:
        if name == f"{LATENCY}_bucket" and lab.get("path") == "ingest_to_output":
            by_le[float(lab["le"])] += v
    buckets = sorted(by_le.items())
    qs = {q: histogram_quantile(q, buckets) for q in (0.5, 0.9, 0.99)}
    lat = ", ".join(f"p{round(q * 100)} {v * 1000:,.0f} ms" for q, v in qs.items())
    lines = [
        f"worker record latency (broker append -> outputs acked; from histogram buckets): {lat}",
        "  NB: the backlog was produced before the worker started, so these latencies are",
        "  dominated by queueing (how long an event waited in the topic), not by processing.",
    ]
    if run.cpu_cores is not None:
        cpu = f"worker process used {run.cpu_cores:.2f} cores"
        if run.broker_cpu_cores is not None:
            cpu += f", broker {run.broker_cpu_cores:.2f} cores"
        lines.append(cpu + " while measured")
    batches = metric_sum(s, "driftline_batches_total")
    wall = run.result.events / run.result.rate if run.result.events else math.nan
    lines.append(
        f"worker per-stage time ({batches:.0f} commits; decode..encode are per partition batch):"
    )
    lines.append(f"  {'stage':<9} {'batches':>7} {'mean ms':>8} {'total s':>8} {'us/event':>9}")
    totals: dict[str, float] = {}
    for stage in STAGES:
        total = metric_sum(s, "driftline_stage_duration_seconds_sum", stage=stage)
        count = metric_sum(s, "driftline_stage_duration_seconds_count", stage=stage)
        totals[stage] = total
        mean = total / count * 1000 if count else math.nan
        lines.append(
            f"  {stage:<9} {count:>7.0f} {mean:>8.1f} {total:>8.2f} {total / n * 1e6:>9.1f}"
        )
    lines.append(
        f"  sum of stages {sum(totals.values()):.2f} s vs measured wall {wall:.2f} s "
        f"(stages cover the whole run incl. the first batch)"
    )
    return "\n".join(lines)


def core_details(stages: dict[str, float], n: int) -> str:
    parts = ", ".join(f"{k} {v / n * 1e6:.1f}" for k, v in stages.items())
    return f"core per-stage us/event: {parts}"


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events to produce (200000)")
    ap.add_argument("--skip-faust", action="store_true", help="leave out the naive faust agent")
    ap.add_argument(
        "--bootstrap", help="Kafka bootstrap (default $KAFKA_BOOTSTRAP_SERVERS, else local broker)"
    )
    ap.add_argument(
        "--kafka-config",
        metavar="FILE",
        help="Kafka client settings (.properties, librdkafka names), as driftline's commands take",
    )
    ap.add_argument(
        "--processes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 2],
        help="run the worker once per count, with `driftline worker --processes K` (1,2)",
    )
    ap.add_argument(
        "--spec",
        default="ks_adwin",
        choices=["ks_adwin", "demo"],
        help="the pipeline: ks_adwin (ks + adwin, the default) or demo ([drift] watch: the "
        "default detector set on amount, latency_ms and country)",
    )
    ap.add_argument(
        "--faust-budget", type=float, default=60.0, help="cap the faust run at this many seconds"
    )
    ap.add_argument(
        "--compression",
        default="none",
        choices=["none", "lz4", "zstd", "snappy", "gzip"],
        help="compression of the produced input (none)",
    )
    return ap.parse_args(argv)


def given_or_local_broker(
    bootstrap: str | None, stack: ExitStack, data_dir: Path, kafka_config: str | None = None
) -> tuple[KafkaConfig, str, LocalKafka | None]:
    """The cluster of ``bootstrap`` / ``kafka_config`` / the ``DRIFTLINE_KAFKA_*`` variables /
    $KAFKA_BOOTSTRAP_SERVERS (as driftline's commands take them), else a local Apache Kafka
    broker stopped with ``stack``: its settings, a description for the report, and the launcher
    if one was started."""
    settings = load_kafka_config(
        config_file=kafka_config, bootstrap=bootstrap, require_bootstrap=False
    )
    kafka = None
    if settings.bootstrap:
        broker = "external broker"
    else:
        log("starting a local Apache Kafka broker ...")
        kafka = LocalKafka(port=free_port(), data_dir=data_dir)
        stack.callback(kafka.stop)
        settings = settings.with_bootstrap(kafka.start(timeout_s=120))
        broker = f"local Apache Kafka (driftline.localkafka, heap {kafka.heap})"
    wait_for_broker(settings, 60)
    return settings, broker, kafka


def run(args: argparse.Namespace, stack: ExitStack) -> int:
    n: int = args.events
    # the pipeline logs each dead letter at WARNING; they are counted in the report instead
    logging.getLogger("driftline").setLevel(logging.ERROR)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-bench-")))
    bootstrap, broker, kafka = given_or_local_broker(
        args.bootstrap, stack, tmp / "kafka", args.kafka_config
    )
    broker_pid: int | None = None
    if kafka is not None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            broker_pid = int(json.loads(kafka.state_file.read_text())["pid"])

    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-{run_id}.events"
    t = time.monotonic()
    stored, mean_size = produce(bootstrap, topic, n, args.compression)
    log(f"produced {n} events to {topic} in {time.monotonic() - t:.1f}s")
    print(facts(bootstrap, broker, n, mean_size, args.compression), flush=True)

    timeout = max(120.0, n / 2000)
    results: list[Result] = []
    ceiling = raw_confluent(bootstrap, topic, n, timeout)
    results.append(ceiling)
    log(f"{ceiling.name}: {ceiling.rate:,.0f}/s")
    results.append(raw_confluent(bootstrap, topic, n, timeout, tuned=False))
    log(f"{results[-1].name}: {results[-1].rate:,.0f}/s")
    results.append(raw_aiokafka(bootstrap, topic, n, timeout))
    log(f"{results[-1].name}: {results[-1].rate:,.0f}/s")

    port = free_port()
    spec, _ = make_spec(tmp, run_id, topic, port, args.spec)
    core_res, core_stages = core(spec, stored)
    del stored
    results.append(core_res)
    log(f"{core_res.name}: {core_res.rate:,.0f}/s")

    wruns: list[WorkerRun] = []
    for k in args.processes:  # each run its own pipeline name, so its own group and outputs
        port = free_ports(k + 1)
        run_tmp = tmp / f"processes-{k}"
        run_tmp.mkdir()
        _, spec_path = make_spec(run_tmp, f"{run_id}-p{k}", topic, port, args.spec)
        wruns.append(worker(stack, spec_path, bootstrap, port, n, run_tmp, timeout, broker_pid, k))
        results.append(wruns[-1].result)
        log(f"{wruns[-1].result.name}: {wruns[-1].result.rate:,.0f}/s")

    faust_res: Result | None = None
    if not args.skip_faust:
        faust_res = naive_faust(
            stack, bootstrap, topic, run_id, n, args.faust_budget, startup_s=120.0
        )
        results.append(faust_res)
        log(f"{faust_res.name}: {faust_res.rate:,.0f}/s")

    print()
    print(table(results, ceiling, faust_res))
    print()
    for r in results:
        for note in r.notes:
            print(f"{r.name}: {note}")
    print(core_details(core_stages, core_res.events))
    for w in wruns:
        print(f"{w.result.name}:")
        print(worker_details(w, n))
    if len(wruns) > 1:
        print(scaling(wruns))
    print(f"load average after measuring: {load_average()}", flush=True)
    return 0


def run_main(prog: str, args: argparse.Namespace, body: Any) -> int:
    """Run ``body(args, stack)`` with SIGTERM as Ctrl-C and everything it started cleaned up;
    the exit code of a bench's ``main`` (130 when interrupted, 1 on a `BenchError`)."""
    t0 = time.monotonic()
    try:
        with sigterm_as_interrupt(), ExitStack() as stack:
            rc = body(args, stack)
            log("cleaning up ...")
    except KeyboardInterrupt:
        log("interrupted; subprocesses and broker stopped")
        return 130
    except BenchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    log(f"done in {time.monotonic() - t0:.0f}s")
    return int(rc)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("pipeline_bench", parse_args(argv), run)


if __name__ == "__main__":
    raise SystemExit(main())
