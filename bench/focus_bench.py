"""``focus`` / ``focus_scale`` at their defaults: false alarms, detection delays, updates/s.

Run ``python bench/focus_bench.py`` (``--quick`` for a smoke run). Each detector is built at its
defaults (``false_alarms_per_million = 1``, ``warmup = 50``, ``direction = "both"``) and fed
whole arrays (``update_many``; the same detections as value by value). An alarm is a
``firing`` detection (the start of an episode).

1. False alarms per 10^6 values on stationary streams: normal, lognormal, Student-t(3),
   uniform, bimodal, Poisson(2), normal rounded to integers (``--values`` per stream, split
   over 4 seeds).
2. Detection delay (values after the change until the firing), median and 90th percentile of
   ``--seeds`` seeds, a change at value 30,000 of a normal stream: mean +0.5 sd, +1 sd
   (``focus``); sd x2, sd x0.5 (``focus_scale``); missed = no firing within 5,000 values.
3. Updates/s (CPU time) of ``update_many`` on 10^6 normal values.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftline.streams.detectors.factory import build_detector
from driftline.streams.detectors.focus_panel import PANEL as STATIONARY

CHANGES = [
    ("focus", "mean +0.5 sd", lambda r, n: r.normal(0.5, 1.0, n)),
    ("focus", "mean +1 sd", lambda r, n: r.normal(1.0, 1.0, n)),
    ("focus_scale", "sd x2", lambda r, n: r.normal(0.0, 2.0, n)),
    ("focus_scale", "sd x0.5", lambda r, n: r.normal(0.0, 0.5, n)),
]
CHANGE_AT = 30_000


def false_alarms(name: str, values: int) -> dict[str, float]:
    out = {}
    for dist, gen in STATIONARY.items():
        fired = 0
        for seed in range(4):
            det = build_detector(name)
            ds = det.update_many(gen(np.random.default_rng(100 + seed), values // 4))
            fired += sum(d.status == "firing" for d in ds)
        out[dist] = fired / values * 1e6
    return out


def delays(name: str, gen, seeds: int) -> tuple[float, float, int, int]:
    got = []
    early = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        det = build_detector(name)
        early += len(det.update_many(rng.normal(0.0, 1.0, CHANGE_AT))) > 0
        ds = [d for d in det.update_many(gen(rng, 5_000)) if d.status == "firing"]
        got.append(ds[0].index + 1 if ds else np.inf)
    arr = np.array(got)
    found = arr[np.isfinite(arr)]
    med = float(np.median(arr))
    p90 = float(np.percentile(found, 90)) if found.size else np.inf
    return med, p90, int((~np.isfinite(arr)).sum()), early


def speed(name: str) -> float:
    xs = np.random.default_rng(0).normal(0.0, 1.0, 1_000_000)
    det = build_detector(name)
    t0 = time.process_time()
    det.update_many(xs)
    return xs.size / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--values", type=int, default=1_000_000, help="stationary values per stream")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--detectors", default="focus,focus_scale", help="whose false alarms")
    args = ap.parse_args()
    if args.quick:
        args.values, args.seeds = 40_000, 3
    print(f"false alarms per 10^6 values ({args.values:,} values per stream)")
    print("| detector | " + " | ".join(STATIONARY) + " |")
    print("|---" * (len(STATIONARY) + 1) + "|")
    for name in args.detectors.split(","):
        fa = false_alarms(name, args.values)
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in fa.values()) + " |", flush=True)
    print(f"\ndetection delay, change at value {CHANGE_AT:,}, {args.seeds} seeds")
    print("| detector | change | median | 90th pct | missed | alarms before |")
    print("|---|---|---|---|---|---|")
    for name, what, gen in CHANGES:
        med, p90, missed, early = delays(name, gen, args.seeds)
        print(f"| {name} | {what} | {med:.0f} | {p90:.0f} | {missed} | {early} |", flush=True)
    print("\nupdates/s (CPU time, update_many on 10^6 normal values)")
    for name in ("focus", "focus_scale"):
        print(f"{name}: {speed(name):,.0f}", flush=True)


if __name__ == "__main__":
    main()
