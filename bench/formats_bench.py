"""Throughput of the Avro input path next to the JSON path, in one run, on a real Kafka broker.

The same N synthetic events (``agents.synthetic.SyntheticStream``) are produced twice: as JSON
(orjson) to one topic and as Avro in the Schema Registry wire format to another, written by
``confluent_kafka``'s ``AvroSerializer`` into the client library's in-memory registry
(``mock://``, shared in this process with the pipeline that reads them). The demo pipeline (two
features, a model, KS + ADWIN) then reads each, alternately, ``--rounds`` times:

1. core: ``PartitionPipeline.process`` on the stored records in batches of 5000, no Kafka;
2. worker loop: the ``TransactionalRunner`` (consume, process, one transaction per batch) in
   this process, until it has consumed all N; rate from its first to its last batch.

The table gives the medians and the Avro/JSON ratios (target >= 0.8) of events per second of
wall time and of CPU time (this process's: on a shared machine the wall-time rates move with
the load, CPU time much less), and of the decode stage's microseconds per event.

    python bench/formats_bench.py [--events N] [--rounds R] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import tomllib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_bench import (
    CORE_BATCH,
    PARTITIONS,
    BenchError,
    given_or_local_broker,
    load_average,
    log,
    make_spec,
    produce_pairs,
    run_main,
)

from driftline.agents.demo import _to_toml
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.registry import registry_client
from driftline.agents.runner import TransactionalRunner
from driftline.agents.synthetic import SyntheticStream
from driftline.agents.worker import preflight
from driftline.kafka_config import Kafka
from driftline.localkafka import free_port
from driftline.spec import PipelineSpec, load_spec

#: the synthetic stream's events as an Avro record
EVENT_SCHEMA = orjson.dumps({
    "type": "record", "name": "Event", "namespace": "driftline.bench",
    "fields": [{"name": "user_id", "type": "string"}, {"name": "ts", "type": "long"},
               {"name": "amount", "type": "double"}, {"name": "latency_ms", "type": "double"},
               {"name": "country", "type": "string"}],
}).decode()  # fmt: skip

Stored = dict[int, list[RawRecord]]


def specs(tmp: Path, topics: dict[str, str], registry_url: str) -> dict[str, PipelineSpec]:
    """A fresh `ks_adwin` pipeline (new name: own group and changelog) per format."""
    out = {}
    for fmt, topic in topics.items():
        run_id = uuid.uuid4().hex[:8]
        sub = tmp / run_id
        sub.mkdir()
        _, path = make_spec(sub, run_id, topic, free_port())
        data = tomllib.loads(path.read_text())
        if fmt == "avro":
            data["input"]["format"] = "avro"
            data["schema_registry"] = {"url": registry_url}
        path.write_text(_to_toml(data))
        out[fmt] = load_spec(path)
    return out


#: the table's rows, in order: what each measurement gives
ROWS = ("core events/s (no Kafka)", "core events/CPU-s", "decode stage us/event",
        "worker loop events/s", "worker loop events/CPU-s")  # fmt: skip


def core(spec: PipelineSpec, stored: Stored) -> dict[str, float]:
    """The batch step over ``stored``, no Kafka: events per second of wall and of CPU time, and
    the decode stage's microseconds per event."""
    predictor, version = build_predictor(spec)
    pipes = {p: PartitionPipeline(spec, p, predictor, version) for p in stored}
    batches = [(p, recs[i : i + CORE_BATCH]) for p, recs in sorted(stored.items())
               for i in range(0, len(recs), CORE_BATCH)]  # fmt: skip
    n, decode = 0, 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for p, batch in batches:
        out = pipes[p].process(batch)
        n += out.consumed
        decode += out.stage_seconds.get("decode", 0.0)
        if sum(out.dead_letters.values()):
            raise BenchError(f"{spec.input.format}: dead letters {dict(out.dead_letters)}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {ROWS[0]: n / wall, ROWS[1]: n / cpu, ROWS[2]: decode / n * 1e6}


def worker_loop(spec: PipelineSpec, bootstrap: Kafka, n: int, timeout_s: float) -> dict[str, float]:
    """The batch loop (in this process: consume, process, one transaction per batch) over the
    topic's N events, from its first consumed batch to the N-th event (from its start if the
    first batch seen was all of them): events per second of wall time and of this process's CPU
    time (the loop's and librdkafka's threads; not the broker's).
    """
    preflight(spec, bootstrap)
    predictor, version = build_predictor(spec)
    metrics = WorkerMetrics(spec.name)
    runner = TransactionalRunner(spec, bootstrap, metrics, predictor, version, f"{spec.name}-w")
    consumed = metrics.consumed.labels(spec.input.topic)
    start = (time.perf_counter(), time.process_time(), 0.0)
    runner.start()
    try:
        deadline = time.monotonic() + timeout_s
        first: tuple[float, float, float] | None = None
        while True:
            seen = consumed._value.get()
            now, cpu = time.perf_counter(), time.process_time()
            if first is None and seen > 0:
                first = (now, cpu, seen)
            if seen >= n:
                break
            if not runner.is_alive() or time.monotonic() > deadline:
                raise BenchError(f"{spec.input.format}: consumed {seen} of {n}: {runner.error}")
            time.sleep(0.02)
        assert first is not None
        if sum(s.value for s in metrics.dead_lettered.collect()[0].samples):
            raise BenchError(f"{spec.input.format}: records were dead-lettered")
        if first[2] >= n:  # all in the first batch seen: time it from the start (joins too)
            first = start
        k = n - first[2]
        return {ROWS[3]: k / (now - first[0]), ROWS[4]: k / (cpu - first[1])}
    finally:
        runner.stop()
        runner.join(60)


def run(args: argparse.Namespace, stack: ExitStack) -> int:
    n: int = args.events
    logging.getLogger("driftline").setLevel(logging.ERROR)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-formats-")))
    bootstrap, broker, _ = given_or_local_broker(
        args.bootstrap, stack, tmp / "kafka", args.kafka_config
    )
    run_id = uuid.uuid4().hex[:8]
    registry_url = f"mock://formats-bench-{run_id}"
    client = registry_client(load_spec_registry(registry_url))
    avro = AvroSerializer(client, EVENT_SCHEMA)
    ctx = SerializationContext(f"bench-{run_id}.avro", MessageField.VALUE)
    events = list(SyntheticStream(n=n, shift_at=int(0.6 * n)).events())
    keys = [e["user_id"].encode() for e in events]
    values = {"json": [orjson.dumps(e) for e in events], "avro": [avro(e, ctx) for e in events]}
    del events
    topics = {fmt: f"bench-{run_id}.{fmt}" for fmt in values}
    stored = {fmt: produce_pairs(bootstrap, topics[fmt], zip(keys, v, strict=True), "none")
              for fmt, v in values.items()}  # fmt: skip
    sizes = {fmt: sum(map(len, v)) / n for fmt, v in values.items()}
    log(f"produced {n} events twice: mean value {sizes['json']:.0f} B JSON, "
        f"{sizes['avro']:.0f} B Avro ({broker})")  # fmt: skip
    del values

    seen: dict[str, dict[str, list[float]]] = {f: defaultdict(list) for f in ("json", "avro")}
    timeout = max(120.0, n / 2000)
    for r in range(args.rounds):
        for fmt in ("json", "avro") if r % 2 == 0 else ("avro", "json"):
            spec = specs(tmp, {fmt: topics[fmt]}, registry_url)[fmt]
            got = {**core(spec, stored[fmt]), **worker_loop(spec, bootstrap, n, timeout)}
            for row, v in got.items():
                seen[fmt][row].append(v)
            log(f"round {r + 1} {fmt}: " + ", ".join(f"{k} {v:,.2f}" for k, v in got.items()))

    print(f"\n{n} events, {args.rounds} rounds each (median), {PARTITIONS} partitions, {broker}")
    print(f"{'':28} {'JSON':>12} {'Avro':>12} {'Avro/JSON':>10}")
    for row in ROWS:
        j, a = (statistics.median(seen[f][row]) for f in ("json", "avro"))
        print(f"{row:28} {j:12,.2f} {a:12,.2f} {a / j:10.2f}")
    print(f"{'mean value bytes':28} {sizes['json']:12.0f} {sizes['avro']:12.0f}")
    print(f"load average after measuring: {load_average()}", flush=True)
    return 0


def load_spec_registry(url: str) -> Any:
    from driftline.spec import SchemaRegistrySpec, default_of

    return SchemaRegistrySpec(url, default_of("schema_registry.timeout_ms"),
                              default_of("schema_registry.retry_backoff_ms"),
                              default_of("schema_registry.retry_backoff_max_ms"))  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events per format (200000)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each format (3)")
    ap.add_argument("--bootstrap", help="Kafka bootstrap servers (default: a local broker)")
    ap.add_argument(
        "--kafka-config",
        metavar="FILE",
        help="Kafka client settings (.properties, librdkafka names), as driftline's commands take",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("formats_bench", parse_args(argv), run)


if __name__ == "__main__":
    raise SystemExit(main())
