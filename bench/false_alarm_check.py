"""Long stationary runs of chosen detectors on chosen streams: false alarms per 10^6 values with
an exact 95% Poisson interval, to check a calibration where `detection_bench.py`'s 10^6 values
per stream leave the interval wide (3 alarms in 10^6: 0.6 ... 8.8 per 10^6).

    python bench/false_alarm_check.py --pairs focus_scale:lognormal,np_focus:uniform \\
        --seeds 200 --length 50000 --jobs 2

Streams are `detection_bench.STATIONARY`'s (numeric ones, ``categories``, ``error_0.1``); every
detector at its defaults (1 false alarm per 10^6 values), fed in batches of 1,000 with
``update_many``; an alarm is the start of an episode (a ``"firing"`` detection). Seeds differ
from detection_bench's.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection_bench import STATIONARY

from driftline.streams.detectors.factory import build_detector


def count(pair: str, seed: int, length: int) -> tuple[str, int, int, float]:
    """(pair, alarms, values, CPU s) of one seeded stream."""
    det_type, stream = pair.split(":")
    t = time.process_time()
    make = next(kinds[stream] for kinds in STATIONARY.values() if stream in kinds)
    xs = make(np.random.default_rng([7_000_003, seed]), length)
    det = build_detector(det_type)
    alarms = 0
    for i in range(0, length, 1_000):
        alarms += sum(d.status == "firing" for d in det.update_many(xs[i : i + 1_000]))
    return pair, alarms, length, time.process_time() - t


def poisson_interval(k: int) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a Poisson mean after observing ``k``."""
    lo = 0.0 if k == 0 else stats.chi2.ppf(0.025, 2 * k) / 2
    return lo, stats.chi2.ppf(0.975, 2 * k + 2) / 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="focus_scale:lognormal,focus_scale:bimodal,"
                    "np_focus:lognormal,np_focus:uniform")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed ... + seeds - 1")
    ap.add_argument("--length", type=int, default=50_000)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    pairs = args.pairs.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(p, s, args.length) for p in pairs for s in seeds]
    tot: dict[str, list[float]] = {p: [0, 0, 0.0] for p in pairs}
    with ProcessPoolExecutor(args.jobs) as ex:
        for pair, k, n, cpu in ex.map(count, *zip(*jobs, strict=True), chunksize=4):
            tot[pair][0] += k
            tot[pair][1] += n
            tot[pair][2] += cpu
    print("| detector | stream | values | false alarms | per 10^6 | 95% interval | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for pair, (k, n, cpu) in tot.items():
        lo, hi = poisson_interval(int(k))
        det, stream = pair.split(":")
        print(f"| {det} | {stream} | {n:.3g} | {int(k)} | {k / n * 1e6:.2f} | "
              f"{lo / n * 1e6:.2f} … {hi / n * 1e6:.2f} | {cpu:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
