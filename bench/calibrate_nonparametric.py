"""Calibrate the thresholds of ``np_focus`` and ``focus_categorical`` by simulation.

Run once; paste the printed tables into `driftline.streams.detectors.nonparametric`
(``NP_FOCUS_TABLE``, ``BERNOULLI_TABLE``)::

    python bench/calibrate_nonparametric.py --streams 400 --length 25000

For each detector it simulates stationary streams (vectorised across streams with numpy),
computes the detector's statistic after every value exactly as the detector does before its
first alarm (bins fixed by the warm-up, every window of `WINDOWS` no longer than the values
so far and leaving at least ``warmup`` reference values, compared with all earlier values), and
counts false alarms at each candidate threshold ``h``: episodes, i.e. times the statistic
exceeds ``h`` after having been below ``h / 2`` (the detector's resolution level) since its
last excess. The rate per 10^6 values is read off directly where at least ``--min-count``
episodes were seen, and extrapolated below by a straight line fitted to log(rate) against
``h`` over the measured tail (log rates of such scans are linear in ``h`` in the tail).

* ``np_focus``: uniform streams. Its statistic is a function of the ranks of the values only,
  so one continuous distribution calibrates all of them; ties merge bins and lower it.
* one Bernoulli ratio (``focus_categorical`` per category): streams of 0/1 with share ``p`` for
  several ``p``, over that detector's windows (16 ... 16,384); the table keeps, at each ``h``,
  the highest rate over them.

Statistics are computed from integer counts with the detector's own functions
(`g_multinomial`, `g_bernoulli_max`), so the simulated statistic is the detector's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from driftline.streams.detectors.binscan import (
    WINDOWS,
    g_bernoulli_max,
    g_multinomial,
)
from driftline.streams.detectors.nonparametric import N_QUANTILES, FocusCategoricalDetector

TABLE_RATES = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def statistic_paths(
    bins: np.ndarray, n_bins: int, warmup: int, g: object, windows: np.ndarray = WINDOWS
) -> tuple[np.ndarray, np.ndarray]:
    """The detector's statistic after every value of each stream (rows of ``bins``; -inf
    where nothing is tested yet) and the window that gave it; both of shape ``bins.shape``."""
    s, t = bins.shape
    onehot = bins[..., None] == np.arange(n_bins)
    c = np.zeros((s, t + 1, n_bins), dtype=np.int64)
    np.cumsum(onehot, axis=1, dtype=np.int64, out=c[:, 1:])
    out = np.full((s, t), -np.inf)
    wins = np.zeros((s, t), dtype=np.int64)
    for w in windows.tolist():
        ends = np.arange(w + warmup, t + 1)  # counts after value `end` (1-based)
        if ends.size == 0:
            continue
        win = c[:, ends] - c[:, ends - w]
        ref = c[:, ends - w]
        n_ref = np.broadcast_to(ends - w, (s, ends.size))
        stat = g(win, np.full_like(n_ref, w), ref, n_ref)  # type: ignore[operator]
        view = out[:, w + warmup - 1 :]  # a view: the values after `ends - 1`
        better = stat > view
        view[better] = stat[better]
        wins[:, w + warmup - 1 :][better] = w
    return out, wins


def count_episodes(paths: np.ndarray, wins: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """Episodes per threshold ``h``: excesses of ``h`` more than twice the excess's window
    after the previous excess (a false alarm's episode lasts about its window: the detector
    resolves once the values since the change, the window and as many more, no longer
    differ from the reference)."""
    s, t = paths.shape
    idx = np.broadcast_to(np.arange(t), (s, t))
    rows = np.arange(s)[:, None]
    counts = np.zeros(hs.size, dtype=np.int64)
    for k, h in enumerate(hs.tolist()):
        above = paths > h
        if not above.any():
            continue
        last = np.maximum.accumulate(np.where(above, idx, -1), axis=1)
        prev = np.concatenate([np.full((s, 1), -1), last[:, :-1]], axis=1)
        gap = 2 * wins[rows, np.maximum(prev, 0)]
        counts[k] = int((above & ((prev < 0) | (idx - prev > gap))).sum())
    return counts


def np_focus_bins(rng: np.random.Generator, s: int, t: int, warmup: int) -> np.ndarray:
    x = rng.random((s, t))
    ranks = np.ceil(np.arange(1, N_QUANTILES + 1) * warmup / (N_QUANTILES + 1)).astype(int) - 1
    edges = np.sort(x[:, :warmup], axis=1)[:, ranks]
    return (x[:, :, None] > edges[:, None, :]).sum(axis=2)  # searchsorted(edges, x, "left")


def bernoulli_bins(rng: np.random.Generator, s: int, t: int, p: float) -> np.ndarray:
    return (rng.random((s, t)) < p).astype(np.int64)


def table(hs: np.ndarray, counts: np.ndarray, n_values: int, min_count: int) -> list[tuple]:
    """(rate per 10^6, h) rows at `TABLE_RATES`: measured where ``counts >= min_count``,
    extrapolated below by the log-linear fit of the measured tail (the lowest two decades).

    Only thresholds above the one with the most episodes count: below it the statistic stays
    above ``h`` so long that excesses merge into fewer, longer episodes."""
    rates = counts / n_values * 1e6
    print("# h, false alarms per 10^6:", file=sys.stderr)
    print(
        "# " + " ".join(f"{h:g}:{r:.3g}" for h, r in zip(hs, rates, strict=True)), file=sys.stderr
    )
    ok = (counts >= min_count) & (np.arange(hs.size) >= np.argmax(counts))
    hm, rm = hs[ok], rates[ok]
    tail = rm <= rm.min() * 100
    slope, icpt = np.polyfit(hm[tail], np.log(rm[tail]), 1)
    rows = []
    for r in TABLE_RATES:
        if rm.min() <= r <= rm.max():
            # rates fall with h: interpolate log rate
            h = float(np.interp(-math.log(r), -np.log(rm), hm))
            how = "measured"
        else:
            h = (math.log(r) - icpt) / slope
            how = "extrapolated"
        rows.append((r, round(h, 2), how))
    return rows


def run(name: str, make: object, g: object, n_bins: int, args: argparse.Namespace,
        hs: np.ndarray, windows: np.ndarray = WINDOWS) -> np.ndarray:  # fmt: skip
    counts = np.zeros(hs.size, dtype=np.int64)
    done = 0
    t0 = time.process_time()
    while done < args.streams:
        s = min(args.chunk, args.streams - done)
        bins = make(s)  # type: ignore[operator]
        counts += count_episodes(*statistic_paths(bins, n_bins, args.warmup, g, windows), hs)
        done += s
    print(f"# {name}: {done} streams x {args.length} values, "
          f"{time.process_time() - t0:.0f} CPU s", file=sys.stderr)  # fmt: skip
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=400)
    ap.add_argument("--length", type=int, default=25_000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=8, help="streams simulated at once")
    ap.add_argument("--min-count", type=int, default=10)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--only", choices=("np_focus", "bernoulli"), default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n_values = args.streams * args.length
    if args.only in (None, "np_focus"):
        hs = np.arange(10.0, 45.0, 0.25)
        counts = run("np_focus", lambda s: np_focus_bins(rng, s, args.length, args.warmup),
                     g_multinomial, N_QUANTILES + 1, args, hs)  # fmt: skip
        print("NP_FOCUS_TABLE = (  # (false alarms per 10^6 values, threshold): how")
        for r, h, how in table(hs, counts, n_values, args.min_count):
            print(f"    ({r}, {h}),  # {how}")
        print(")")
    if args.only in (None, "bernoulli"):
        hs = np.arange(3.0, 35.0, 0.25)
        worst = np.zeros(hs.size, dtype=np.int64)
        categorical = FocusCategoricalDetector.windows  # 16 ... 16,384
        for p in (0.5, 0.3, 0.1, 0.03):
            counts = run(f"bernoulli p={p}", lambda s, p=p: bernoulli_bins(rng, s, args.length, p),
                         g_bernoulli_max, 2, args, hs, categorical)  # fmt: skip
            worst = np.maximum(worst, counts)
        print("BERNOULLI_TABLE = (  # (false alarms per 10^6 values, threshold): how")
        for r, h, how in table(hs, worst, n_values, args.min_count):
            print(f"    ({r}, {h}),  # {how}")
        print(")")


if __name__ == "__main__":
    main()
