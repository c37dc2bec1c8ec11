"""Memory per entity of the feature state, and a soak over ever-new entities.

``python bench/entity_memory_bench.py --bytes [--entities 100000,1000000]``: for each count, a
fresh process holds that many distinct entities in the demo's features (tumbling 60 s count +
mean, grace 5 s; ``--features all`` adds hopping, sliding and count windows) and prints the RSS
growth over an empty engine divided by the entities, plus the engine's own count of entities.
The entity strings are made batch by batch, so only the state holds them.

``python bench/entity_memory_bench.py --soak-minutes 30 [--max-entities 100000]``: the demo's
features over a stream of ever-new entities (``--rate`` events per second of event time, two
events per entity, event time one second per batch), as fast as the CPU allows for N minutes of
wall time, once without and once with ``max_entities`` (each in its own process). Prints, per
run, RSS samples, the entities held and evicted, and the RSS slope in MB/min over the second
half of the run (after the windows have filled; a leak shows as a slope that does not fall to
about 0). ``--window-ms`` (default 300 000, the 5-minute windows of issue 13) sets how many
entities the unbounded run holds at its plateau: ``rate * window / 2``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from driftline.streams.features import FeatureDef, FeatureEngine

GRACE_MS = 5_000


def features(which: str, window_ms: int = 60_000) -> list[FeatureDef]:
    """The demo's two features (``demo``), or one state of each window kind (``all``)."""
    demo = [
        FeatureDef("amount_count_1m", None, "count", window_ms),
        FeatureDef("amount_mean_1m", "amount", "mean", window_ms),
    ]
    if which == "demo":
        return demo
    return [
        *demo,
        FeatureDef("hop_n", None, "count", window_ms, window="hopping", step_ms=window_ms // 4),
        FeatureDef("slide_mean", "amount", "mean", window_ms, window="sliding"),
        FeatureDef("last5_mean", "amount", "mean", None, window="count", count=5),
    ]


def rss_bytes() -> int:
    """This process's resident set size (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _batch(eng: FeatureEngine, first: int, k: int, per_entity: int, ts: int, rng) -> None:
    """``k`` events on entities ``first ..``, ``per_entity`` events each, all at time ``ts``."""
    n_ent = max(1, k // per_entity)
    ids = first + np.arange(k) % n_ent
    ents = np.array([f"user-{i:09d}" for i in ids.tolist()], dtype=object)
    eng.update(ents, np.full(k, ts, dtype=np.int64), {"amount": rng.normal(50.0, 10.0, k)})


def bytes_one(n_entities: int, which: str, batch: int) -> dict[str, float]:
    """Hold ``n_entities`` entities (one event each, all in one window); RSS growth per entity."""
    rng = np.random.default_rng(0)
    eng = FeatureEngine(features(which), grace_ms=GRACE_MS)
    _batch(eng, -batch, batch, 1, 0, rng)  # warm up numpy and the engine's code paths
    gc.collect()
    before, held_before = rss_bytes(), eng.n_entities
    t0 = time.process_time()
    for first in range(0, n_entities, batch):
        _batch(eng, first, min(batch, n_entities - first), 1, 1 + first * 50_000 // n_entities, rng)
    gc.collect()
    grown = rss_bytes() - before
    held = eng.n_entities - held_before
    return {
        "entities": n_entities,
        "held": held,
        "rss_mb": grown / 2**20,
        "bytes_per_entity": grown / held,
        "cpu_s": time.process_time() - t0,
    }


def soak_one(
    minutes: float, max_entities: int | None, rate: int, window_ms: int, which: str
) -> dict[str, object]:
    """Ever-new entities for ``minutes`` of wall time; RSS samples and the slope."""
    rng = np.random.default_rng(0)
    eng = FeatureEngine(features(which, window_ms), grace_ms=GRACE_MS, max_entities=max_entities)
    per_entity = 2
    start = time.monotonic()
    end = start + minutes * 60
    samples: list[tuple[float, float, int]] = []
    next_sample = start
    second = 0
    first = 0
    while True:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - start, rss_bytes() / 2**20, eng.n_entities))
            next_sample = now + max(1.0, minutes * 60 / 60)
        if now >= end:
            break
        _batch(eng, first, rate, per_entity, second * 1_000, rng)
        first += rate // per_entity
        second += 1
    t = np.array([s[0] for s in samples]) / 60
    mb = np.array([s[1] for s in samples])
    half = t >= t[-1] / 2
    slope = float(np.polyfit(t[half], mb[half], 1)[0]) if half.sum() >= 2 else float("nan")
    return {
        "max_entities": max_entities,
        "events": second * rate,
        "event_seconds": second,
        "held": eng.n_entities,
        "evicted": eng.evicted,
        "rss_start_mb": float(mb[0]),
        "rss_peak_mb": float(mb.max()),
        "rss_end_mb": float(mb[-1]),
        "slope_mb_per_min": slope,
        "cpu_s": time.process_time(),
        "samples": [(round(a, 1), round(b, 1), c) for a, b, c in samples],
    }


def _child(args: list[str]) -> dict:
    """Run this script's ``--one`` mode in a fresh process (its RSS is its own)."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bytes", action="store_true", help="RSS per entity")
    ap.add_argument("--entities", default="100000,1000000")
    ap.add_argument("--features", choices=("demo", "all"), default="demo")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--soak-minutes", type=float, help="soak: wall minutes per run")
    ap.add_argument("--max-entities", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=5_000, help="soak: events per event-time second")
    ap.add_argument("--window-ms", type=int, default=300_000)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run, JSON out
    args = ap.parse_args(argv)
    if args.one:
        kind, value = args.one.split("=")
        if kind == "bytes":
            res = bytes_one(int(value), args.features, args.batch)
        else:
            cap = None if value == "none" else int(value)
            res = soak_one(args.soak_minutes, cap, args.rate, args.window_ms, args.features)
        print(json.dumps(res))
        return 0
    common = ["--features", args.features, "--batch", str(args.batch)]
    if args.bytes:
        print(f"features: {args.features}; RSS growth over an empty engine, per entity held")
        print(f"{'entities':>10s} {'held':>10s} {'RSS MB':>9s} {'bytes/entity':>13s} {'CPU s':>7s}")
        for n in (int(x) for x in args.entities.split(",")):
            r = _child([*common, "--one", f"bytes={n}"])
            print(
                f"{n:>10,d} {r['held']:>10,d} {r['rss_mb']:>9.1f} "
                f"{r['bytes_per_entity']:>13,.0f} {r['cpu_s']:>7.1f}"
            )
    if args.soak_minutes is not None:
        soak = [*common, "--soak-minutes", str(args.soak_minutes), "--rate", str(args.rate)]
        soak += ["--window-ms", str(args.window_ms)]
        print(
            f"soak: {args.soak_minutes:g} min per run, ever-new entities, {args.rate:,} events per "
            f"event-time second, 2 events each, windows {args.window_ms:,} ms"
        )
        print(
            f"{'max_entities':>12s} {'events':>12s} {'held':>9s} {'evicted idle/max':>18s} "
            f"{'RSS start/peak/end MB':>22s} {'slope MB/min':>13s} {'CPU s':>7s}"
        )
        for cap in ("none", str(args.max_entities)):
            r = _child([*soak, "--one", f"soak={cap}"])
            ev = r["evicted"]
            rss = f"{r['rss_start_mb']:.0f}/{r['rss_peak_mb']:.0f}/{r['rss_end_mb']:.0f}"
            print(
                f"{cap:>12s} {r['events']:>12,d} {r['held']:>9,d} "
                f"{ev['idle']:>9,d}/{ev['max_entities']:<8,d} {rss:>22s} "
                f"{r['slope_mb_per_min']:>13.2f} {r['cpu_s']:>7.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
