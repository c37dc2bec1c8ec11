"""FeatureEngine throughput per window kind: batched (10k events per update) vs per event.

Usage: ``python bench/features_bench.py [--events 1000000] [--entities 10000]``. Prints events/s
(CPU time of this process) for each window kind with a couple of aggregators, and the batched /
per-event ratio (the
per-event run feeds one event per `update` call over the first ``--per-event`` events).
"""

from __future__ import annotations

import argparse
import time

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--per-event", type=int, default=20_000)
    ap.add_argument("--only", default="", help="substring of the kinds to run")
    args = ap.parse_args()
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
