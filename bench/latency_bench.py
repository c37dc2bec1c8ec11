"""Latency of driftline: the cost join + predict adds per batch, and event -> prediction at a rate.

Targets (issue 4, item 9): join + predict adds <= 1 ms per batch at p99; event -> prediction
p99 <= 20 ms at 5,000 events/s. One run measures both parts, each next to a baseline measured
in the same run:

1. **join + predict, in process (no Kafka).** The demo spec plus a ``[batch_features]`` table
   (two fields, ``--batch-rows`` entities, one in ten without a row so defaults are used) and
   the demo model (``agents.demo.train_demo_model``) with the batch features as extra inputs
   (the model was not trained on them, so it weighs them 0; scoring cost is per column, not per
   weight). Two ``PartitionPipeline`` s get identical batches of each size (``--batch-sizes``):
   *full* (batch features + model) and *bare* (neither; same streaming features and detectors),
   alternately first. Per batch of *full*: the join is the ``BatchFeatureCache.lookup`` call
   ``process()`` makes (timed through a stand-in object; the column copies after it are a few
   numpy slices and left out), predict is ``process()``'s own ``predict`` stage (building the
   model matrix + ``BatchPredictor.predict``); *added* = join + predict of the same batch. The
   whole-``process()`` times of *full* and *bare* are the baseline; their difference also
   counts encoding the prediction messages.
2. **event -> prediction on a real broker.** A fresh 2-partition input topic; ``driftline
   worker`` as a subprocess (spec ``[worker] batch_timeout_ms`` = ``--batch-timeout-ms``);
   synthetic events (``agents.synthetic.SyntheticStream``) produced paced at ``--rate`` for
   ``--warmup`` + ``--seconds`` seconds with the event-time field = wall-clock ms at send time.
   A confluent-kafka consumer (``isolation.level=read_committed``) on the predictions topic
   stamps each prediction with its receive wall time; latency = receive time - the
   prediction's ``event_time_ms``. The baseline is a second plain consumer on the input topic
   at the same time: receive time - the event's own time, i.e. Kafka alone (same producer,
   same broker load). Both include the producer's ``linger.ms`` and the 0-1 ms truncation of
   event time to whole ms. Warm-up events are produced and counted but left out of the
   quantiles. Also read from the worker's ``/metrics`` (delta over the measured window):
   ``driftline_record_latency_seconds`` for ``event_time_to_prediction`` and
   ``ingest_to_output`` (histogram quantiles; the worker observes them when it next waits
   for a commit, so they can exceed what a reader sees), batches, records per batch and stage
   means. ``--sweep`` repeats part 2 for several ``batch_timeout_ms`` (``--sweep-values``,
   ``--sweep-seconds`` each) and prints one table.

Part 2 runs once per ``--guarantees`` entry (``[worker] processing_guarantee``): with
``exactly_once`` a prediction is visible when its batch's transaction commits; with
``at_least_once`` when the broker acknowledges it. The worker's loop takes what is fetched and
waits up to ``batch_timeout_ms`` only when nothing is, so the timeout matters little (the sweep
shows it).

Speed is printed, never asserted: a readable report, then one JSON line with every number
(also written to ``--json PATH`` when given).

    python bench/latency_bench.py [--rate 5000] [--seconds 20] [--batch-timeout-ms 5] [--sweep]
                                  [--skip-core] [--skip-e2e] [--bootstrap HOST:PORT]

The broker is ``--bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a local Apache Kafka
started by ``driftline.localkafka`` for this run (and stopped at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from driftline.agents.batch_features import BatchFeatureCache, load_batch_features
from driftline.agents.demo import _to_toml, ks_adwin_spec_text, train_demo_model, worker_env
from driftline.agents.kafka_io import client_conf, ensure_topics, make_producer
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.synthetic import SyntheticStream
from driftline.kafka_config import Kafka
from driftline.localkafka import free_port
from driftline.spec import PipelineSpec, parse_spec

HERE = Path(__file__).resolve().parent


def _pipeline_bench() -> ModuleType:
    """bench/pipeline_bench.py as a module (bench/ is not a package): its helpers are reused."""
    mod = sys.modules.get("pipeline_bench")
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location("pipeline_bench", HERE / "pipeline_bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


pb = _pipeline_bench()
BenchError = pb.BenchError
log = pb.log

PARTITIONS = 2
QUANTILES = (50.0, 90.0, 95.0, 99.0)
CORE_TARGET_MS = 1.0
E2E_TARGET_MS = 20.0
BATCH_FIELDS = {"days_active": "float", "segment_score": "float"}
LATENCY = "driftline_record_latency_seconds"
ASSIGNED = "driftline_assigned_partitions"
E2E_STAGES = pb.STAGES  # poll, decode, features, predict, detect, encode, produce, commit


# ----------------------------------------------------------------------------- arithmetic


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between the closest ranks (numpy's default).

    >>> percentile([4.0, 1.0, 3.0, 2.0], 50)
    2.5
    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90)
    4.6
    >>> percentile([7.0], 99), percentile([], 50)
    (7.0, nan)
    """
    if not len(values):
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean, p50/p90/p95/p99 and max of ``values`` (NaN when empty).

    >>> summary([1.0, 2.0, 3.0, 4.0])
    {'n': 4, 'mean': 2.5, 'p50': 2.5, 'p90': 3.7, 'p95': 3.85, 'p99': 3.97, 'max': 4.0}
    """
    xs = sorted(values)
    out: dict[str, float] = {"n": len(xs), "mean": sum(xs) / len(xs) if xs else math.nan}
    for q in QUANTILES:
        out[f"p{q:g}"] = percentile(xs, q)
    out["max"] = xs[-1] if xs else math.nan
    return out


def scaled(s: dict[str, float], factor: float) -> dict[str, float]:
    """``summary`` with every value but ``n`` times ``factor`` (e.g. seconds -> ms), to 6 places.

    >>> scaled({"n": 2, "p50": 0.000123456789}, 1000)
    {'n': 2, 'p50': 0.123457}
    """
    return {k: v if k == "n" else round(v * factor, 6) for k, v in s.items()}


def histogram_delta(
    before: Sequence[tuple[str, dict[str, str], float]],
    after: Sequence[tuple[str, dict[str, str], float]],
    name: str,
    **labels: str,
) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` buckets of histogram ``name`` observed between two scrapes.

    >>> b = [("h_bucket", {"le": "1.0"}, 2.0), ("h_bucket", {"le": "+Inf"}, 3.0)]
    >>> a = [("h_bucket", {"le": "1.0"}, 5.0), ("h_bucket", {"le": "+Inf"}, 9.0)]
    >>> histogram_delta(b, a, "h")
    [(1.0, 3.0), (inf, 6.0)]
    """

    def buckets(samples: Sequence[tuple[str, dict[str, str], float]]) -> dict[float, float]:
        out: dict[float, float] = {}
        for n, lab, v in samples:
            if n == f"{name}_bucket" and all(lab.get(k) == w for k, w in labels.items()):
                le = float(lab["le"])
                out[le] = out.get(le, 0.0) + v
        return out

    b0, b1 = buckets(before), buckets(after)
    return sorted((le, v - b0.get(le, 0.0)) for le, v in b1.items())


def delta_sum(
    before: Sequence[tuple[str, dict[str, str], float]],
    after: Sequence[tuple[str, dict[str, str], float]],
    name: str,
    **labels: str,
) -> float:
    return pb.metric_sum(after, name, **labels) - pb.metric_sum(before, name, **labels)


def fmt_ms(v: float) -> str:
    """A latency in ms for the tables: 3 significant places below 10 ms.

    >>> fmt_ms(0.01234), fmt_ms(1.5), fmt_ms(12.34), fmt_ms(1234.5), fmt_ms(math.nan)
    ('0.0123', '1.50', '12.3', '1,234', '-')
    >>> fmt_ms(-31.0129)  # a difference of quantiles can be negative
    '-31.0'
    """
    if not math.isfinite(v):
        return "-"
    if v < 0:
        return "-" + fmt_ms(-v)
    if v < 0.1:
        return f"{v:.4f}"
    if v < 10:
        return f"{v:.2f}"
    if v < 1000:
        return f"{v:.1f}"
    return f"{v:,.0f}"


# ----------------------------------------------------------------------------- spec and data


def batch_table(path: Path, rows: int, seed: int = 5) -> Path:
    """JSON Lines with the batch features of users ``u0..u{rows-1}``; every tenth is missing."""
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 2_000, rows).tolist()
    score = np.round(rng.normal(0.0, 1.0, rows), 6).tolist()
    with path.open("wb") as fh:
        for i in range(rows):
            if i % 10 != 9:
                doc = {"user_id": f"u{i}", "days_active": float(days[i]), "segment_score": score[i]}
                fh.write(orjson.dumps(doc) + b"\n")
    return path


def spec_data(
    run_id: str,
    model_path: Path,
    *,
    batch_topic: str,
    batch_timeout_ms: int = 100,
    web_port: int = 6066,
    full: bool = True,
    guarantee: str = "exactly_once",
) -> dict[str, Any]:
    """The demo spec under bench names; ``full``: plus batch features as extra model inputs."""
    data = tomllib.loads(ks_adwin_spec_text())
    data["pipeline"]["name"] = f"latbench-{run_id}"
    data["input"]["topic"] = f"latbench-{run_id}.events"
    data["output"] = {k: f"latbench-{run_id}.{k.removesuffix('_topic')}" for k in data["output"]}
    data["worker"]["batch_timeout_ms"] = batch_timeout_ms
    data["worker"]["processing_guarantee"] = guarantee
    data["worker"]["web_port"] = web_port
    if full:
        data["batch_features"] = {
            "topic": batch_topic,
            "fields": dict(BATCH_FIELDS),
            "defaults": {"days_active": 0.0, "segment_score": 0.0},
        }
        data["model"]["path"] = str(model_path)
        data["model"]["inputs"] = [*data["model"]["inputs"], *BATCH_FIELDS]
    else:
        del data["model"]
    return data


def demo_inputs() -> list[str]:
    return list(tomllib.loads(ks_adwin_spec_text())["model"]["inputs"])


# ----------------------------------------------------------------------------- 1: core


class TimedLookup:
    """Stands in for the pipeline's ``BatchFeatureCache``: the same lookup, timed."""

    def __init__(self, cache: BatchFeatureCache) -> None:
        self.cache = cache
        self.names = cache.names
        self.last_s = 0.0

    def __len__(self) -> int:
        return len(self.cache)

    def lookup(self, entities: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        out = self.cache.lookup(entities)
        self.last_s = time.perf_counter() - t0
        return out


@dataclass
class CoreRow:
    batch: int
    reps: int
    join_ms: dict[str, float]
    predict_ms: dict[str, float]
    added_ms: dict[str, float]
    added_us_per_event: float  # mean added time / batch size
    full_ms: dict[str, float]
    bare_ms: dict[str, float]
    process_delta_us_per_event: float  # (mean full - mean bare) / batch size


def core_records(n: int, n_entities: int) -> list[RawRecord]:
    """``n`` synthetic events (1 ms of event time apart) as records of partition 0."""
    stream = SyntheticStream(n=n, shift_at=n, seed=11, n_entities=n_entities, step_ms=1)
    return [
        RawRecord("latbench.events", 0, i, e["ts"], e["user_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(stream.events())
    ]


def core(
    full_spec: PipelineSpec,
    bare_spec: PipelineSpec,
    cache: BatchFeatureCache,
    sizes: Sequence[int],
    reps: int,
    max_events: int,
    n_entities: int,
    warmup: int = 30,
) -> list[CoreRow]:
    logging.getLogger("driftline").setLevel(logging.ERROR)
    plan = [(s, min(reps, max(50, max_events // s))) for s in sizes]
    total = sum(s * (r + warmup) for s, r in plan)
    records = core_records(total, n_entities)
    predictor, model_version = build_predictor(full_spec)
    if predictor is None:
        raise BenchError("the full spec has no model")
    timed = TimedLookup(cache)
    full = PartitionPipeline(full_spec, 0, predictor, model_version, timed)
    bare = PartitionPipeline(bare_spec, 0, None, "none", None)
    rows: list[CoreRow] = []
    pos = 0
    for size, r in plan:
        join, pred, added, t_full, t_bare = [], [], [], [], []
        for i in range(warmup + r):
            batch = records[pos : pos + size]
            pos += size
            order = ((full, t_full), (bare, t_bare)) if i % 2 else ((bare, t_bare), (full, t_full))
            for pipe, sink in order:
                t0 = time.perf_counter()
                out = pipe.process(batch)
                dt = time.perf_counter() - t0
                if i >= warmup:
                    sink.append(dt)
                if pipe is full:
                    if out.predictions != len(batch):
                        raise BenchError(f"{out.predictions} predictions for {len(batch)} events")
                    if i >= warmup:
                        p = out.stage_seconds["predict"]
                        join.append(timed.last_s)
                        pred.append(p)
                        added.append(timed.last_s + p)
        ms = 1000.0
        rows.append(
            CoreRow(
                batch=size,
                reps=r,
                join_ms=scaled(summary(join), ms),
                predict_ms=scaled(summary(pred), ms),
                added_ms=scaled(summary(added), ms),
                added_us_per_event=sum(added) / len(added) / size * 1e6,
                full_ms=scaled(summary(t_full), ms),
                bare_ms=scaled(summary(t_bare), ms),
                process_delta_us_per_event=(sum(t_full) - sum(t_bare)) / len(t_full) / size * 1e6,
            )
        )
        log(f"core batch {size}: added p99 {rows[-1].added_ms['p99']:.3f} ms over {r} batches")
    return rows


def fixed_table(
    columns: Sequence[tuple[str, int] | str], rows: Iterable[Sequence[Any]]
) -> list[str]:
    """A header, a rule and a line per row, each cell right-aligned to its column's width and
    parted by a space; a column ``"|"`` draws a separator (rows have no cell for it).

    >>> print("\\n".join(fixed_table([("a", 3), "|", ("bc", 4)], [(1, "x"), (22, "yz")])))
      a |   bc
    ----------
      1 |    x
     22 |   yz
    """

    def line(cells: Iterable[Any]) -> str:
        it = iter(cells)
        return " ".join(c if isinstance(c, str) else f"{next(it):>{c[1]}}" for c in columns)

    head = line(c[0] for c in columns if not isinstance(c, str))
    return [head, "-" * len(head), *(line(row) for row in rows)]


def core_table(rows: Sequence[CoreRow]) -> str:
    columns = [("batch", 5), ("reps", 5), "|", ("join p50", 8), ("p99", 7), "|"]
    columns += [("predict p50", 11), ("p99", 7), "|", ("added p50", 9), ("p90", 7), ("p95", 7)]
    columns += [("p99", 7), ("us/ev", 6), "|", ("bare p50", 8), ("p99", 7), "|"]
    columns += [("full p50", 8), ("p99", 7), ("dus/ev", 7)]
    cells = [
        [r.batch, r.reps]
        + [fmt_ms(r.join_ms[q]) for q in ("p50", "p99")]
        + [fmt_ms(r.predict_ms[q]) for q in ("p50", "p99")]
        + [fmt_ms(r.added_ms[q]) for q in ("p50", "p90", "p95", "p99")]
        + [f"{r.added_us_per_event:.2f}"]
        + [fmt_ms(r.bare_ms[q]) for q in ("p50", "p99")]
        + [fmt_ms(r.full_ms[q]) for q in ("p50", "p99")]
        + [f"{r.process_delta_us_per_event:.2f}"]
        for r in rows
    ]
    return "\n".join(fixed_table(columns, cells))


def core_verdict(rows: Sequence[CoreRow]) -> str:
    """Which batch sizes meet the join + predict target.

    >>> ms = {"p99": 0.4}
    >>> r = CoreRow(10, 5, ms, ms, ms, 1.0, ms, ms, 1.0)
    >>> core_verdict([r, CoreRow(500, 5, ms, ms, {"p99": 1.2}, 1.0, ms, ms, 1.0)])
    'target join + predict p99 <= 1 ms per batch: meets at batch 10; misses at batch 500'
    """
    ok = [str(r.batch) for r in rows if r.added_ms["p99"] <= CORE_TARGET_MS]
    bad = [str(r.batch) for r in rows if not r.added_ms["p99"] <= CORE_TARGET_MS]
    parts = [
        f"meets at batch {', '.join(ok)}" if ok else "",
        f"misses at batch {', '.join(bad)}" if bad else "",
    ]
    return f"target join + predict p99 <= {CORE_TARGET_MS:g} ms per batch: " + "; ".join(
        p for p in parts if p
    )


# ----------------------------------------------------------------------------- 2: end to end


class TopicReader(threading.Thread):
    """Reads every partition of a topic from its start (read_committed) and stamps each message
    with the wall time (ms) the client handed it over: a blocking ``poll`` for the first, then
    ``consume(n, 0)`` drains what else is queued without waiting."""

    def __init__(self, bootstrap: Kafka, topic: str, partitions: int) -> None:
        super().__init__(name=f"reader-{topic}", daemon=True)
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.received: list[tuple[float, bytes]] = []
        self.ready = threading.Event()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            c = Consumer(
                client_conf(self.bootstrap, {
                    "group.id": f"latbench-reader-{uuid.uuid4().hex[:8]}",  # assign() only
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                })
            )  # fmt: skip
        except BaseException as e:
            self.error = e
            self.ready.set()
            raise
        try:
            c.assign(
                [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)]
            )
            c.poll(0.2)  # connect and start fetching before the stream starts
            self.ready.set()
            got = self.received
            while not self.stop_event.is_set():
                m = c.poll(0.05)
                if m is None:
                    continue
                now = time.time() * 1000.0
                for x in (m, *c.consume(100_000, 0)):
                    if x.error() is None:
                        got.append((now, x.value() or b""))
        except BaseException as e:
            self.error = e
            raise
        finally:
            self.ready.set()
            c.close()


@dataclass
class Produced:
    events: int  # all, warm-up included
    measured: int
    rate: float  # measured events / measured send time
    measure_from_ms: int  # event time of the first measured event


def paced_produce(
    bootstrap: Kafka,
    topic: str,
    rate: float,
    seconds: float,
    warmup: float,
    linger_ms: int,
    n_entities: int,
    on_measure_start: Any = None,
) -> Produced:
    """Send ``rate`` events/s for ``warmup + seconds``; event time = wall ms at send."""
    n_warm, n_total = round(rate * warmup), round(rate * (warmup + seconds))
    producer = make_producer(bootstrap, log_level=3, **{"linger.ms": linger_ms})
    events = SyntheticStream(n=n_total, shift_at=n_total, seed=13, n_entities=n_entities).events()
    sent, last_ms, measure_from_ms, t_measure = 0, 0, 0, time.perf_counter()
    t0 = time.perf_counter()
    while sent < n_total:
        due = min(n_total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            e = next(events)
            if sent == n_warm and sent:  # no warm-up event shares the first measured one's ms
                while time.time_ns() // 1_000_000 <= last_ms:
                    time.sleep(0.0001)
            e["ts"] = last_ms = time.time_ns() // 1_000_000
            if sent == n_warm:
                measure_from_ms, t_measure = e["ts"], time.perf_counter()
                if on_measure_start is not None:
                    threading.Thread(target=on_measure_start, daemon=True).start()
            while True:
                try:
                    producer.produce(topic, orjson.dumps(e), e["user_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.01)
            sent += 1
        producer.poll(0)
        delay = t0 + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    t_end = time.perf_counter()
    left = producer.flush(60)
    if left:
        raise BenchError(f"{left} events not delivered to {topic}")
    measured = n_total - n_warm
    return Produced(n_total, measured, measured / max(t_end - t_measure, 1e-9), measure_from_ms)


GUARANTEES = ("exactly_once", "at_least_once")


@dataclass
class E2E:
    guarantee: str
    batch_timeout_ms: int
    rate_target: float
    seconds: float
    produced: int
    measured: int
    produce_rate: float
    predictions: int  # read from the predictions topic, warm-up included
    unique_predictions: int
    baseline_read: int  # read from the input topic, warm-up included
    prediction_rate: float
    latency_ms: dict[str, float]  # event -> prediction seen by a read_committed reader
    baseline_ms: dict[str, float]  # event -> read from the input topic (Kafka alone)
    worker_event_to_prediction_ms: dict[str, float]
    worker_ingest_to_output_ms: dict[str, float]
    batches: float
    records_per_batch: float
    stage_mean_ms: dict[str, float]
    worker_cores: float | None
    notes: list[str] = field(default_factory=list)


def _latencies(
    received: list[tuple[float, bytes]], time_key: str, from_ms: int
) -> tuple[list[float], list[float], set[str]]:
    """Latency (ms) and receive time of each measured message, and the ids of all messages."""
    lat: list[float] = []
    recv: list[float] = []
    ids: set[str] = set()
    for now, value in received:
        doc = orjson.loads(value)
        if "prediction_id" in doc:
            ids.add(doc["prediction_id"])
        et = doc[time_key]
        if et >= from_ms:
            lat.append(now - et)
            recv.append(now)
    return lat, recv, ids


def wait_ready(proc: subprocess.Popen[Any], url: str, log_path: Path, timeout_s: float) -> None:
    """Until the worker's /metrics shows every input partition assigned."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise BenchError(
                f"the worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        with contextlib.suppress(OSError):
            if pb.metric_sum(pb.parse_metrics(pb.read_text(url, 2.0)), ASSIGNED) >= PARTITIONS:
                return
        if time.monotonic() > deadline:
            raise BenchError(
                f"the worker was not assigned its partitions in {timeout_s:g}s:\n"
                + log_path.read_text()[-3000:]
            )
        time.sleep(0.2)


def e2e(
    bootstrap: Kafka,
    tmp: Path,
    model_path: Path,
    batch_topic: str,
    *,
    batch_timeout_ms: int,
    rate: float,
    seconds: float,
    warmup: float,
    linger_ms: int,
    n_entities: int,
    guarantee: str = "exactly_once",
) -> E2E:
    run_id = uuid.uuid4().hex[:8]
    port = free_port()
    data = spec_data(
        run_id,
        model_path,
        batch_topic=batch_topic,
        batch_timeout_ms=batch_timeout_ms,
        web_port=port,
        guarantee=guarantee,
    )
    spec = parse_spec(data, base_dir=tmp)
    spec_path = tmp / f"spec-{run_id}.toml"
    spec_path.write_text(_to_toml(data))
    o = spec.output
    ensure_topics(bootstrap, [spec.input.topic, *o.all_topics], partitions=PARTITIONS)
    with ExitStack() as stack:
        log_path = tmp / f"worker-{run_id}.log"
        argv = [
            sys.executable, "-c", pb._DEATHSIG_WRAPPER, "driftline.cli", "worker",
            "-c", str(spec_path), "--bootstrap", str(bootstrap), "--loglevel", "warning",
            "--worker-id", f"latbench-{run_id}", "--web-port", str(port),
        ]  # fmt: skip
        with log_path.open("wb") as errf:
            proc = pb.spawn(
                stack, "worker", argv, stdout=subprocess.DEVNULL, stderr=errf,
                env=worker_env(bootstrap),
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}/metrics"
        wait_ready(proc, url, log_path, 120.0)

        readers = [
            TopicReader(bootstrap, o.predictions_topic, PARTITIONS),
            TopicReader(bootstrap, spec.input.topic, PARTITIONS),
        ]
        for r in readers:
            r.start()
            stack.callback(r.join, 10)
            stack.callback(r.stop_event.set)
        for r in readers:
            r.ready.wait(30)
            if r.error is not None:
                raise BenchError(f"reader of {r.topic} failed: {r.error}")
        preds, base = readers

        at_start: dict[str, Any] = {}

        def mark_start() -> None:
            at_start["cpu"] = pb.cpu_seconds(proc.pid)
            at_start["t"] = time.perf_counter()
            with contextlib.suppress(OSError):
                at_start["samples"] = pb.parse_metrics(pb.read_text(url, 5.0))

        log(
            f"worker ready (batch_timeout_ms={batch_timeout_ms}); producing {rate:,.0f}/s for "
            f"{warmup:g}+{seconds:g} s"
        )
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # readers get the GIL back quickly from the producer
        try:
            prod = paced_produce(
                bootstrap,
                spec.input.topic,
                rate,
                seconds,
                warmup,
                linger_ms,
                n_entities,
                mark_start,
            )
            deadline = time.monotonic() + 60 + 2 * batch_timeout_ms / 1000
            while len(preds.received) < prod.events or len(base.received) < prod.events:
                if proc.poll() is not None:
                    raise BenchError(f"the worker exited:\n{log_path.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            t_end, cpu_end = time.perf_counter(), pb.cpu_seconds(proc.pid)
            time.sleep(0.3)  # anything more (duplicates) would show in the counts
        finally:
            sys.setswitchinterval(old_switch)
        # metrics follow commits: wait until the worker has counted every event
        after: list[tuple[str, dict[str, str], float]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                after = pb.parse_metrics(pb.read_text(url, 5.0))
                if pb.metric_sum(after, "driftline_predictions_total") >= prod.events:
                    break
            time.sleep(0.2)
        for r in readers:
            r.stop_event.set()
        for r in readers:
            r.join(10)
    before = at_start.get("samples", [])

    lat, recv, ids = _latencies(preds.received, "event_time_ms", prod.measure_from_ms)
    blat, _, _ = _latencies(base.received, spec.input.time_field, prod.measure_from_ms)
    pred_rate = (len(recv) - 1) / (max(recv) - min(recv)) * 1000 if len(recv) > 1 else math.nan

    def worker_q(path: str) -> dict[str, float]:
        b = histogram_delta(before, after, LATENCY, path=path)
        return {f"p{q:g}": pb.histogram_quantile(q / 100, b) * 1000 for q in QUANTILES}

    batches = delta_sum(before, after, "driftline_batches_total")
    consumed = delta_sum(before, after, "driftline_records_consumed_total")
    stages = {}
    for s in E2E_STAGES:
        total = delta_sum(before, after, "driftline_stage_duration_seconds_sum", stage=s)
        count = delta_sum(before, after, "driftline_stage_duration_seconds_count", stage=s)
        stages[s] = total / count * 1000 if count else math.nan
    cores = None
    if at_start.get("cpu") is not None and cpu_end is not None:
        cores = (cpu_end - at_start["cpu"]) / max(t_end - at_start["t"], 1e-9)
    res = E2E(
        guarantee=guarantee,
        batch_timeout_ms=batch_timeout_ms,
        rate_target=rate,
        seconds=seconds,
        produced=prod.events,
        measured=prod.measured,
        produce_rate=prod.rate,
        predictions=len(preds.received),
        unique_predictions=len(ids),
        baseline_read=len(base.received),
        prediction_rate=pred_rate,
        latency_ms=scaled(summary(lat), 1.0),
        baseline_ms=scaled(summary(blat), 1.0),
        worker_event_to_prediction_ms=worker_q("event_time_to_prediction"),
        worker_ingest_to_output_ms=worker_q("ingest_to_output"),
        batches=batches,
        records_per_batch=consumed / batches if batches else math.nan,
        stage_mean_ms=stages,
        worker_cores=cores,
    )
    if not before:
        res.notes.append(
            "no /metrics scrape at the start of the measured window: worker "
            "numbers include the warm-up"
        )
    if res.predictions != prod.events or res.unique_predictions != prod.events:
        res.notes.append(
            f"{res.predictions} predictions ({res.unique_predictions} distinct) "
            f"for {prod.events} events"
        )
    if res.baseline_read != prod.events:
        res.notes.append(f"the baseline reader got {res.baseline_read} of {prod.events} events")
    log(
        f"batch_timeout_ms={batch_timeout_ms}: event->prediction p99 "
        f"{res.latency_ms['p99']:.1f} ms, Kafka alone p99 {res.baseline_ms['p99']:.1f} ms"
    )
    return res


def e2e_report(r: E2E) -> str:
    cols = ("p50", "p90", "p95", "p99", "max")
    head = f"{'(ms)':<46}" + "".join(f"{c:>8}" for c in cols)

    def row(name: str, d: dict[str, float]) -> str:
        return f"{name:<46}" + "".join(f"{fmt_ms(d.get(c, math.nan)):>8}" for c in cols)

    added = {c: r.latency_ms[c] - r.baseline_ms[c] for c in cols}
    lines = [
        f"end to end, {r.guarantee}: {r.rate_target:,.0f} events/s target, {r.seconds:g} s "
        f"measured, batch_timeout_ms={r.batch_timeout_ms}, {PARTITIONS} partitions",
        head,
        "-" * len(head),
        row("Kafka alone: event -> read from input topic", r.baseline_ms),
        row("driftline: event -> prediction (read_committed)", r.latency_ms),
        row("  what driftline adds (difference of quantiles)", added),
        row("worker histogram event_time_to_prediction", r.worker_event_to_prediction_ms),
        row("worker histogram ingest_to_output", r.worker_ingest_to_output_ms),
        f"produced {r.produced:,} events ({r.measured:,} measured) at {r.produce_rate:,.0f}/s; "
        f"predictions read {r.predictions:,} ({r.unique_predictions:,} distinct) at "
        f"{r.prediction_rate:,.0f}/s; Kafka-alone reader {r.baseline_read:,}",
        f"worker: {r.batches:,.0f} batches, {r.records_per_batch:,.1f} records/batch, "
        + ", ".join(f"{k} {v:.2f}" for k, v in r.stage_mean_ms.items())
        + " ms mean per batch"
        + (f"; {r.worker_cores:.2f} cores" if r.worker_cores is not None else ""),
    ]
    p99 = r.latency_ms["p99"]
    verdict = "meets" if p99 <= E2E_TARGET_MS else "misses"
    lines.append(
        f"target event -> prediction p99 <= {E2E_TARGET_MS:g} ms: {verdict} ({fmt_ms(p99)} ms)"
    )
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def sweep_table(runs: Sequence[E2E]) -> str:
    columns = [("batch_timeout_ms", 16), ("rec/batch", 9), ("poll", 6), ("produce", 7)]
    columns += [("commit", 6), ("kafka p99", 9), ("p50", 6), ("p90", 6), ("p95", 6), ("p99", 6)]
    columns += [("max", 6), ("worker p99", 10), ("preds/s", 8)]
    cells = [
        [r.batch_timeout_ms, f"{r.records_per_batch:.1f}"]
        + [fmt_ms(r.stage_mean_ms[stage]) for stage in ("poll", "produce", "commit")]
        + [fmt_ms(r.baseline_ms["p99"])]
        + [fmt_ms(r.latency_ms[q]) for q in ("p50", "p90", "p95", "p99", "max")]
        + [fmt_ms(r.worker_event_to_prediction_ms["p99"]), f"{r.prediction_rate:,.0f}"]
        for r in sorted(runs, key=lambda x: -x.batch_timeout_ms)
    ]
    lines = fixed_table(columns, cells)
    lines.append(
        "(ms; poll, produce, commit: the worker's mean stage times per batch; p50..max: event -> "
        "prediction; worker p99: its event_time_to_prediction histogram)"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report


def facts(bootstrap: Kafka, broker: str) -> str:
    return "\n".join(
        [
            *pb.machine_facts(bootstrap, broker, ("confluent-kafka",)),
            f"load:    {pb.load_average()} (1/5/15 min) before measuring",
        ]
    )


def _jsonable(x: Any) -> Any:
    """NaN and infinities as null (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


# ----------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    """A comma-separated list of positive integers.

    >>> _ints("100, 20,5")
    [100, 20, 5]
    """
    out = [int(x) for x in text.split(",") if x.strip()]
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--bootstrap", help="Kafka bootstrap (default $KAFKA_BOOTSTRAP_SERVERS, else local broker)"
    )
    ap.add_argument(
        "--kafka-config",
        metavar="FILE",
        help="Kafka client settings (.properties, librdkafka names), as driftline's commands take",
    )
    ap.add_argument("--rate", type=float, default=5000.0, help="events/s to produce (5000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    ap.add_argument(
        "--batch-timeout-ms", type=int, default=5, help="the worker's batch_timeout_ms (5)"
    )
    ap.add_argument("--linger-ms", type=int, default=5, help="the producer's linger.ms (5)")
    ap.add_argument(
        "--guarantees",
        type=lambda v: [g.strip() for g in v.split(",") if g.strip()],
        default=["exactly_once", "at_least_once"],
        help="processing guarantees part 2 runs with (exactly_once,at_least_once)",
    )
    ap.add_argument("--sweep", action="store_true", help="also run part 2 for --sweep-values")
    ap.add_argument(
        "--sweep-values",
        type=_ints,
        default=[100, 20, 5, 1],
        help="batch_timeout_ms values of the sweep (100,20,5,1)",
    )
    ap.add_argument("--sweep-seconds", type=float, default=10.0, help="seconds per sweep run (10)")
    ap.add_argument(
        "--batch-sizes",
        type=_ints,
        default=[1, 10, 50, 250, 500],
        help="part 1 batch sizes (1,10,50,250,500)",
    )
    ap.add_argument("--core-reps", type=int, default=2000, help="part 1 batches per size (2000)")
    ap.add_argument(
        "--core-events", type=int, default=200_000, help="part 1: at most this many events a size"
    )
    ap.add_argument("--entities", type=int, default=10_000, help="distinct users in the stream")
    ap.add_argument("--batch-rows", type=int, default=100_000, help="batch-feature table users")
    ap.add_argument("--skip-core", action="store_true", help="leave out part 1")
    ap.add_argument("--skip-e2e", action="store_true", help="leave out part 2 (no broker needed)")
    ap.add_argument("--json", type=Path, help="also write the JSON line to this file")
    args = ap.parse_args(argv)
    bad = [g for g in args.guarantees if g not in GUARANTEES]
    if bad or not args.guarantees:
        ap.error(f"--guarantees: got {bad or 'none'}; choose from {', '.join(GUARANTEES)}")
    return args


def run(args: argparse.Namespace, stack: ExitStack) -> int:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-latbench-")))
    report: dict[str, Any] = {
        "bench": "latency_bench",
        "targets_ms": {
            "join_predict_p99": CORE_TARGET_MS,
            "event_to_prediction_p99": E2E_TARGET_MS,
        },
    }
    model_path = tmp / "model.pkl"
    model_version = train_demo_model(model_path, demo_inputs())
    table_path = batch_table(tmp / "batch.jsonl", args.batch_rows)
    run_id = uuid.uuid4().hex[:8]
    batch_topic = f"latbench-{run_id}.batch_features"
    report["model_version"] = model_version

    bootstrap: Kafka | None = None
    broker = ""
    if not args.skip_e2e:
        bootstrap, broker, _ = pb.given_or_local_broker(
            args.bootstrap, stack, tmp / "kafka", args.kafka_config
        )
        print(facts(bootstrap, broker), flush=True)
    else:
        print(facts("-", "none (--skip-e2e)"), flush=True)

    if not args.skip_core:
        full = parse_spec(spec_data(run_id, model_path, batch_topic=batch_topic), base_dir=tmp)
        bare = parse_spec(
            spec_data(run_id, model_path, batch_topic=batch_topic, full=False), base_dir=tmp
        )
        assert full.batch_features is not None
        cache = BatchFeatureCache.from_file(full.batch_features, table_path)
        rows = core(
            full, bare, cache, args.batch_sizes, args.core_reps, args.core_events, args.entities
        )
        report["core"] = [asdict(r) for r in rows]
        inputs = list(full.model.inputs) if full.model else []
        print()
        print(
            f"part 1: join + predict per batch, in process ({len(cache):,} batch-feature rows, "
            f"{args.entities:,} users, model inputs {inputs})"
        )
        print(core_table(rows))
        print(
            "(ms per batch; join = BatchFeatureCache.lookup, predict = process()'s predict "
            "stage, added = join + predict of the same batch, us/ev = mean added / batch size;\n"
            " bare / full = whole process() without / with batch features + model; "
            "dus/ev = (mean full - mean bare) / batch size, incl. encoding predictions)"
        )
        print(core_verdict(rows), flush=True)

    if not args.skip_e2e:
        assert bootstrap is not None
        spec = parse_spec(spec_data(run_id, model_path, batch_topic=batch_topic), base_dir=tmp)
        assert spec.batch_features is not None
        load_batch_features(
            spec.batch_features, bootstrap, table_path, partitions=PARTITIONS, progress=False
        )
        common = {
            "rate": args.rate,
            "warmup": args.warmup,
            "linger_ms": args.linger_ms,
            "n_entities": args.entities,
        }
        main_runs = []
        for guarantee in args.guarantees:
            main_runs.append(
                e2e(
                    bootstrap,
                    tmp,
                    model_path,
                    batch_topic,
                    batch_timeout_ms=args.batch_timeout_ms,
                    seconds=args.seconds,
                    guarantee=guarantee,
                    **common,
                )
            )
            print()
            print("part 2: " + e2e_report(main_runs[-1]), flush=True)
        main_run = main_runs[0]
        report["e2e"] = asdict(main_run)
        report["e2e_by_guarantee"] = {r.guarantee: asdict(r) for r in main_runs}
        if args.sweep:
            runs = [main_run]
            for bt in args.sweep_values:
                if bt == args.batch_timeout_ms:
                    continue
                runs.append(
                    e2e(
                        bootstrap,
                        tmp,
                        model_path,
                        batch_topic,
                        batch_timeout_ms=bt,
                        seconds=args.sweep_seconds,
                        **common,
                    )
                )
            report["sweep"] = [asdict(r) for r in runs]
            print()
            print(
                f"sweep of batch_timeout_ms at {args.rate:,.0f} events/s ({args.sweep_seconds:g} s "
                f"each, {args.seconds:g} s for {args.batch_timeout_ms}):"
            )
            print(sweep_table(runs))
    print(f"load average after measuring: {pb.load_average()}")
    line = json.dumps(_jsonable(report), separators=(",", ":"))
    if args.json:
        args.json.write_text(line + "\n")
    print(line, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return pb.run_main("latency_bench", parse_args(argv), run)


if __name__ == "__main__":
    raise SystemExit(main())
