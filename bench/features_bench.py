"""FeatureEngine throughput per window kind: batched (10k events per update) vs per event; and
with ``--state``, what writing and restoring the state costs as the number of entities grows.

Usage: ``python bench/features_bench.py [--events 1000000] [--entities 10000]``. Prints events/s
(CPU time of this process) for each window kind with a couple of aggregators, and the batched /
per-event ratio (the
per-event run feeds one event per `update` call over the first ``--per-event`` events).

``python bench/features_bench.py --state [--entities 10000,1000000] [--batch 5000]``: a tumbling
count + mean over one window holding every entity, then batches of ``--batch`` events on random
entities. Per batch, the CPU seconds to turn the state into changelog records (a librdkafka
producer's ``produce`` included, no broker): state format 3 (the whole snapshot, compressed and
chunked) against format 4 (the keys the batch changed, one record each, and the small
snapshot); then the CPU seconds to restore every entity from format 4 records (and, with
``--bootstrap``, the CPU seconds to read them back from a changelog topic on that broker).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from driftline.streams.features import FeatureDef, FeatureEngine

KINDS: dict[str, list[FeatureDef]] = {
    "tumbling count+mean": [
        FeatureDef("n", None, "count", 60_000),
        FeatureDef("mean", "amount", "mean", 60_000),
    ],
    "tumbling std+min+max+last": [
        FeatureDef("std", "amount", "std", 60_000),
        FeatureDef("min", "amount", "min", 60_000),
        FeatureDef("max", "amount", "max", 60_000),
        FeatureDef("last", "amount", "last", 60_000),
    ],
    "hopping 60s/15s count+mean": [
        FeatureDef("n", None, "count", 60_000, window="hopping", step_ms=15_000),
        FeatureDef("mean", "amount", "mean", 60_000, window="hopping", step_ms=15_000),
    ],
    "sliding 60s count+mean": [
        FeatureDef("n", None, "count", 60_000, window="sliding"),
        FeatureDef("mean", "amount", "mean", 60_000, window="sliding"),
    ],
    "count last-10 mean+since_prev": [
        FeatureDef("mean", "amount", "mean", None, window="count", count=10),
        FeatureDef("gap", None, "since_prev", None, window="count", count=10),
    ],
    "tumbling distinct(kind)": [FeatureDef("d", "kind", "distinct", 60_000)],
}


def stream(n: int, n_entities: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    names = np.array([f"user-{i}" for i in range(n_entities)], dtype=object)
    ents = names[rng.integers(0, n_entities, n)]
    ts = (np.sort(rng.integers(0, 3_600_000, n)) - rng.integers(0, 2_000, n)).astype(np.int64)
    cols = {
        "amount": rng.lognormal(3.0, 1.0, n),
        "kind": rng.choice(np.array(["a", "b", "c", "d", "e"], dtype=object), n),
    }
    return ents, ts, cols


def run(features, ents, ts, cols, batch: int) -> float:
    """Events per second of one core (CPU time: stable on a shared machine)."""
    eng = FeatureEngine(features, grace_ms=5_000)
    n = len(ts)
    t0 = time.process_time()
    for a in range(0, n, batch):
        eng.update(
            ents[a : a + batch], ts[a : a + batch], {k: v[a : a + batch] for k, v in cols.items()}
        )
    return n / (time.process_time() - t0)


def _cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def read_from_broker(bootstrap: str, full: list[tuple[bytes, bytes | None]]) -> float:
    """CPU seconds (this process, librdkafka's threads included) to read ``full`` back from a
    changelog topic on ``bootstrap`` as a restore does (`read_changelog_partition`,
    read_committed, to the end)."""
    import uuid

    from confluent_kafka import Producer

    from driftline.agents.kafka_io import ensure_topics
    from driftline.agents.state import CHANGELOG_CONFIG, read_changelog_partition

    topic = f"bench-state-{uuid.uuid4().hex[:8]}.state-changelog"
    ensure_topics(bootstrap, [topic], 1, config=CHANGELOG_CONFIG)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 4_000_000})  # fmt: skip
    for key, value in full:
        while True:
            try:
                producer.produce(topic, value, key, partition=0)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(300) == 0
    t0 = time.process_time()
    records = read_changelog_partition(bootstrap, topic, 0, timeout_s=600)
    assert len(records) == len(full)
    return time.process_time() - t0


def state_costs(
    n_entities: int, batch: int, n_batches: int = 10, bootstrap: str | None = None
) -> dict[str, float]:
    """CPU seconds per batch to write the state as format 3 / format 4 records, and to restore
    ``n_entities`` from format 4 records (see the module docstring)."""
    from confluent_kafka import Producer

    from driftline.agents.state import (
        ChangelogRecords,
        decode_snapshot,
        encode_keyed_snapshot,
        encode_snapshot_json,
        snapshot_json,
    )

    feats = KINDS["tumbling count+mean"]
    eng = FeatureEngine(feats, grace_ms=5_000)
    eng.track_changes()
    rng = np.random.default_rng(1)
    names = np.array([f"user-{i}" for i in range(n_entities)], dtype=object)
    step = 200_000
    for a in range(0, n_entities, step):  # every entity once, all in the first window
        k = min(step, n_entities - a)
        eng.update(names[a : a + k], np.full(k, 1_000, np.int64), {"amount": np.ones(k)})
    eng.drain_changes()  # written once (the first snapshot after the entities arrived)
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0,
                         "queue.buffering.max.messages":
                         2_000_000, "queue.buffering.max.kbytes": 4_000_000})  # fmt: skip

    def produce(records: list[tuple[bytes, bytes | None]]) -> int:
        for key, value in records:
            producer.produce("bench", value, key, partition=0)
        return len(records)

    f3 = f4 = 0.0
    n3 = n4 = 0
    for i in range(n_batches):
        pick = rng.integers(0, n_entities, batch)
        eng.update(names[pick], np.full(batch, 2_000 + i, np.int64), {"amount": rng.random(batch)})
        offsets = {"t": i}

        def format_3(epoch: int = i, offsets: dict[str, int] = offsets) -> int:
            state = {"features": eng.snapshot(), "offsets": offsets}
            return produce(encode_snapshot_json(0, epoch, snapshot_json(state)))

        def format_4(epoch: int = i, offsets: dict[str, int] = offsets) -> int:
            state = {"features": eng.snapshot_keyed(), "offsets": offsets}
            return produce(encode_keyed_snapshot(0, epoch, snapshot_json(state),
                                                 eng.drain_changes()))  # fmt: skip

        dt, n = _cpu(format_3)
        f3, n3 = f3 + dt, n3 + n
        dt, n = _cpu(format_4)
        f4, n4 = f4 + dt, n4 + n
    producer.purge()
    # restore: every key as its own record (a compacted changelog), read and loaded
    for g in eng._groups:
        g.state.mark_all_dirty()
    full = encode_keyed_snapshot(0, 99, snapshot_json(
        {"features": eng.snapshot_keyed(), "offsets": {"t": 1}}), eng.drain_changes())  # fmt: skip
    records = ChangelogRecords("bench", 0)
    keys, values = [k for k, _ in full], [v for _, v in full]
    read_s, _ = _cpu(lambda: records.add_many(keys, values, list(range(len(full)))))
    broker_s = read_from_broker(bootstrap, full) if bootstrap else float("nan")
    load_s, restored = _cpu(lambda: FeatureEngine.restore(
        feats, 5_000, decode_snapshot(records, 0)[1]["features"]))  # type: ignore[index]  # fmt: skip
    assert restored.n_windows == eng.n_windows == n_entities
    return {"f3": f3 / n_batches, "f4": f4 / n_batches, "n3": n3 / n_batches,
            "n4": n4 / n_batches, "read": read_s, "load": load_s,
            "broker": broker_s}  # fmt: skip


def state_main(entities: list[int], batch: int, bootstrap: str | None) -> None:
    print(f"state write per batch of {batch:,} events (CPU s, this process; noisy machine)")
    print(f"{'entities':>10s} {'format 3 s':>11s} {'records':>8s} {'format 4 s':>11s} "
          f"{'records':>8s} {'restore: index s':>17s} {'load s':>7s} "
          f"{'broker read s':>14s}")  # fmt: skip
    for n in entities:
        r = state_costs(n, batch, bootstrap=bootstrap)
        print(f"{n:10,d} {r['f3']:11.3f} {r['n3']:8,.0f} {r['f4']:11.4f} {r['n4']:8,.0f} "
              f"{r['read']:17.2f} {r['load']:7.2f} {r['broker']:14.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--entities", default="10000", help="entities (--state: a comma list)")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--per-event", type=int, default=20_000)
    ap.add_argument("--only", default="", help="substring of the kinds to run")
    ap.add_argument("--state", action="store_true", help="state write and restore costs")
    ap.add_argument("--bootstrap", help="--state: also time reading the records back from a "
                    "changelog topic on this broker")  # fmt: skip
    args = ap.parse_args()
    if args.state:
        state_main([int(x) for x in args.entities.split(",")], args.batch, args.bootstrap)
        return
    args.entities = int(args.entities)
    ents, ts, cols = stream(args.events, args.entities)
    k = args.per_event
    print(f"{args.events:,} events, {args.entities:,} entities, batches of {args.batch:,}")
    print(f"{'kind':32s} {'batched ev/s':>14s} {'per-event ev/s':>15s} {'ratio':>7s}")
    for name, feats in KINDS.items():
        if args.only not in name:
            continue
        batched = run(feats, ents, ts, cols, args.batch)
        single = run(feats, ents[:k], ts[:k], {c: v[:k] for c, v in cols.items()}, 1)
        print(f"{name:32s} {batched:14,.0f} {single:15,.0f} {batched / single:6.0f}x")


if __name__ == "__main__":
    main()
