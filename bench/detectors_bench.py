"""Drift detector benchmark: throughput, false alarms on stationary streams, detection delay.

Run ``python bench/detectors_bench.py`` (``--quick`` for a smoke run). Same data and window sizes
for every KS variant: 500 reference values, 500 current values, a test after every event.

1. updates/s of the exact per-event KS (`KSWindowDetector`, ``stride=1``, modes ``fixed`` and
   ``sliding``) vs river's ``KSWIN(window_size=1000, stat_size=500)`` vs recomputing
   ``scipy.stats.ks_2samp`` after every event; plus ADWIN.
2. false alarms per 10^6 stationary events with the default hyperparameters.
3. median detection delay of a 0.5-sigma mean shift.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river.drift import KSWIN
from scipy.stats import ks_2samp

from driftline.streams.detectors.adwin import AdwinDetector
from driftline.streams.detectors.base import DriftDetector
from driftline.streams.detectors.factory import build_detector
from driftline.streams.detectors.ks import KSWindowDetector

R = W = 500
BATCH = 1_000


def rate(n: int, fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def feed(det: DriftDetector, xs: np.ndarray) -> list:
    out = []
    for a in range(0, len(xs), BATCH):
        out += [(d.index + a, d.status) for d in det.update_many(xs[a : a + BATCH])]
    return out


def throughput(quick: bool) -> dict[str, float]:
    rng = np.random.default_rng(0)
    n_fast = 100_000 if quick else 400_000
    xs = rng.normal(0, 1, n_fast)
    res: dict[str, float] = {}
    res["ks exact fixed"] = rate(n_fast, lambda: feed(KSWindowDetector(R, W, stride=1), xs))
    res["ks exact sliding"] = rate(
        n_fast, lambda: feed(KSWindowDetector(R, W, stride=1, reference_mode="sliding"), xs)
    )
    n_kswin = 5_000 if quick else 20_000
    ys = xs[:n_kswin]

    def kswin() -> None:
        k = KSWIN(alpha=0.005, window_size=R + W, stat_size=W, seed=1)
        for x in ys.tolist():
            k.update(x)

    res["river KSWIN"] = rate(n_kswin, kswin)
    n_scipy = 2_000 if quick else 5_000
    zs = xs[: R + W + n_scipy]

    def scipy_each() -> None:
        ref = zs[:R]
        for i in range(R + W, len(zs)):
            ks_2samp(ref, zs[i - W + 1 : i + 1])

    res["scipy ks_2samp per event"] = rate(n_scipy, scipy_each)
    res["adwin"] = rate(n_fast // 4, lambda: feed(AdwinDetector(), xs[: n_fast // 4]))
    return res


def false_alarms(name: str, make: Callable[[], DriftDetector], gen, n_streams: int, n: int):
    alarms = 0
    for s in range(n_streams):
        xs = gen(np.random.default_rng(50_000 + s), n)
        alarms += sum(1 for _, st in feed(make(), xs) if st == "firing")
    total = n_streams * n
    return alarms, total


def delays(make: Callable[[], DriftDetector], n_seeds: int, shift: float = 0.5):
    out, missed, early = [], 0, 0
    for s in range(n_seeds):
        rng = np.random.default_rng(90_000 + s)
        xs = np.concatenate([rng.normal(0, 1, 20_000), rng.normal(shift, 1, 20_000)])
        fired = [i for i, st in feed(make(), xs) if st == "firing"]
        early += sum(1 for i in fired if i < 20_000)
        late = [i for i in fired if i >= 20_000]
        if late:
            out.append(late[0] - 20_000)
        else:
            missed += 1
    return (float(np.median(out)) if out else float("nan")), missed, early


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fa-streams", type=int, default=None, help="stationary streams of 10^6")
    args = ap.parse_args()
    quick = args.quick

    print("== throughput (updates/s; R = W = 500, test after every event) ==")
    tp = throughput(quick)
    for k, v in tp.items():
        print(f"  {k:28s} {v:>12,.0f}/s")
    for k in ("ks exact fixed", "ks exact sliding"):
        print(
            f"  {k}: {tp[k] / tp['river KSWIN']:.0f}x river KSWIN, "
            f"{tp[k] / tp['scipy ks_2samp per event']:.0f}x scipy per event"
        )

    print("== false alarms on stationary streams, default hyperparameters ==")
    n_streams = args.fa_streams or (1 if quick else 4)
    n = 200_000 if quick else 1_000_000
    numeric = lambda rng, k: rng.normal(0, 1, k)  # noqa: E731

    def with_nulls(rng, k):
        x = rng.normal(0, 1, k)
        x[rng.random(k) < 0.05] = np.nan
        return x

    cats = np.array([f"c{i}" for i in range(10)], dtype=object)
    zipf = 1 / np.arange(1, 11)
    zipf /= zipf.sum()
    categorical = lambda rng, k: rng.choice(cats, k, p=zipf)  # noqa: E731
    cases = [
        ("ks fixed", lambda: KSWindowDetector(), numeric),
        ("ks sliding", lambda: KSWindowDetector(reference_mode="sliding"), numeric),
        ("summary", lambda: build_detector("summary"), with_nulls),
        ("chi2", lambda: build_detector("chi2"), categorical),
        ("psi", lambda: build_detector("psi"), categorical),
        ("jsd", lambda: build_detector("jsd"), categorical),
    ]
    for name, make, gen in cases:
        t = time.perf_counter()
        a, total = false_alarms(name, make, gen, n_streams, n)
        print(
            f"  {name:12s} {a} alarms in {total:,} events = {a / total * 1e6:.2f} per 10^6 "
            f"({time.perf_counter() - t:.0f}s)"
        )

    print("== detection delay, 0.5-sigma mean shift at event 20,000 (median over seeds) ==")
    n_seeds = 5 if quick else 20
    for name, make in [
        ("ks fixed (defaults)", lambda: KSWindowDetector()),
        ("ks sliding (defaults)", lambda: KSWindowDetector(reference_mode="sliding")),
        ("ks fixed W=1000", lambda: KSWindowDetector(1_000, 1_000)),
        ("summary (defaults)", lambda: build_detector("summary")),
        ("adwin (defaults)", lambda: AdwinDetector()),
    ]:
        med, missed, early = delays(make, n_seeds)
        print(
            f"  {name:24s} median delay {med:>7.0f} events; missed {missed}/{n_seeds}; "
            f"alarms before the shift {early}"
        )


if __name__ == "__main__":
    main()
