"""Measured delays and false alarms of ``np_focus`` and ``focus_categorical`` at their defaults.

Each detector is built with ``build_detector(type)`` (the defaults a spec gets), fed seeded
streams in batches of 1,000 values, and an alarm is a ``"firing"`` detection (an episode's
start)::

    python bench/nonparametric_bench.py --seeds 20 --stationary 1000000

* delays: ``--pre`` stationary values, then the change; delay = values after the change up to
  and including the one that fired; "found" = fired within ``--post`` values. Median over
  ``--seeds`` seeds.
* false alarms: ``--stationary`` values of each stationary stream type, in streams of
  ``--stream-length`` values; per 10^6 values, with the 95% upper bound when none is seen.

Streams (numbers have mean 0 and variance 1 unless said): normal; lognormal (exp of a standard
normal); uniform; bimodal = +-0.9 + N(0, 0.436^2) (equal mean and variance to N(0, 1), two modes);
Student-t(3); Poisson(3) (integers); heavily tied = N(0, 1) rounded to 0.5 (about 12 values
take 99% of the mass); categorical: 4 categories with shares 0.3, 0.3, 0.2, 0.2, one of which
goes to 0.36 with the others scaled down.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np

from driftline.streams.detectors.factory import build_detector

Gen = Callable[[np.random.Generator, int], np.ndarray]
A = 0.9  # bimodal modes at +-A, sd sqrt(1 - A^2): mean 0, variance 1


def bimodal(rng: np.random.Generator, n: int, a: float = A) -> np.ndarray:
    return rng.choice([-a, a], n) + rng.normal(0.0, math.sqrt(1 - a * a), n)


def normal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, n)


CATS = np.array(["a", "b", "c", "d"], dtype=object)
P0 = [0.3, 0.3, 0.2, 0.2]
P1 = [0.36, *(p * 0.64 / 0.7 for p in P0[1:])]

STATIONARY: dict[str, tuple[str, Gen]] = {
    "normal": ("np_focus", normal),
    "lognormal": ("np_focus", lambda r, n: np.exp(r.normal(0.0, 1.0, n))),
    "uniform": ("np_focus", lambda r, n: r.random(n)),
    "bimodal": ("np_focus", bimodal),
    "student-t(3)": ("np_focus", lambda r, n: r.standard_t(3, n)),
    "poisson(3)": ("np_focus", lambda r, n: r.poisson(3.0, n).astype(float)),
    "heavily tied": ("np_focus", lambda r, n: np.round(r.normal(0.0, 1.0, n) * 2) / 2),
    "categorical (0.3/0.3/0.2/0.2)": ("focus_categorical", lambda r, n: r.choice(CATS, n, p=P0)),
}

CHANGES: dict[str, tuple[str, Gen, Gen]] = {
    "+0.5 sd mean": ("np_focus", normal, lambda r, n: r.normal(0.5, 1.0, n)),
    "+1 sd mean": ("np_focus", normal, lambda r, n: r.normal(1.0, 1.0, n)),
    "sd x 2": ("np_focus", normal, lambda r, n: r.normal(0.0, 2.0, n)),
    "sd x 0.5": ("np_focus", normal, lambda r, n: r.normal(0.0, 0.5, n)),
    "normal -> bimodal (+-0.9)": ("np_focus", normal, bimodal),
    "normal -> bimodal (+-0.8, harder)": ("np_focus", normal, lambda r, n: bimodal(r, n, 0.8)),
    "share 0.30 -> 0.36": (
        "focus_categorical",
        lambda r, n: r.choice(CATS, n, p=P0),
        lambda r, n: r.choice(CATS, n, p=P1),
    ),
}


def feed(det: object, xs: np.ndarray, batch: int = 1_000) -> list[tuple[int, str]]:
    out = []
    for a in range(0, len(xs), batch):
        out += [(a + d.index, d.status) for d in det.update_many(xs[a : a + batch])]  # type: ignore[attr-defined]
    return out


def delays(args: argparse.Namespace) -> None:
    print(f"| change ({args.pre:,} values before) | detector | found | median delay | "
          "delays (min / max) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, (dtype, before, after) in CHANGES.items():
        got = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            xs = np.concatenate([before(rng, args.pre), after(rng, args.post)])
            fired = [i for i, s in feed(build_detector(dtype), xs) if s == "firing"]
            ok = fired and fired[0] >= args.pre  # no false alarm before the change
            got.append(fired[0] - args.pre + 1 if ok else None)
        found = [d for d in got if d is not None]
        med = f"{np.median(found):.0f}" if len(found) == len(got) else "not all found"
        span = f"{min(found)} / {max(found)}" if found else "-"
        print(f"| {name} | `{dtype}` | {len(found)}/{len(got)} | {med} | {span} |", flush=True)


def false_alarms(args: argparse.Namespace) -> None:
    print("| stationary stream | detector | values | false alarms | per 10^6 values | CPU s |")
    print("|---|---|---|---|---|---|")
    for k, (name, (dtype, gen)) in enumerate(STATIONARY.items()):
        n_streams = max(1, args.stationary // args.stream_length)
        alarms = 0
        t0 = time.process_time()
        for seed in range(n_streams):
            rng = np.random.default_rng(1_000 * (k + 1) + seed)  # other draws per type
            det = build_detector(dtype)
            alarms += sum(s == "firing" for _, s in feed(det, gen(rng, args.stream_length), 10_000))
        n = n_streams * args.stream_length
        rate = alarms / n * 1e6
        bound = f"{rate:.2f}" if alarms else f"0 (< {3.0 / n * 1e6:.2f} at 95%)"
        cpu = time.process_time() - t0
        print(f"| {name} | `{dtype}` | {n:,} | {alarms} | {bound} | {cpu:.0f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--pre", type=int, default=10_000)
    ap.add_argument("--post", type=int, default=5_000)
    ap.add_argument("--stationary", type=int, default=1_000_000)
    ap.add_argument("--stream-length", type=int, default=250_000)
    ap.add_argument("--only", choices=("delays", "false_alarms"), default=None)
    args = ap.parse_args(argv)
    if args.only in (None, "delays"):
        delays(args)
    if args.only in (None, "false_alarms"):
        false_alarms(args)


if __name__ == "__main__":
    main()
