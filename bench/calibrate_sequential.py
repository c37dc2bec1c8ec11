"""Calibrate the thresholds of ``focus`` and ``focus_scale`` by simulation; write the table.

Run ``python bench/calibrate_sequential.py`` (``--quick`` for a smoke run that writes nothing).
It writes ``streams/detectors/focus_table.py``: for each detector kind and direction, the
threshold ``h(n)`` at the points ``N_GRID`` of ``n`` (values since the (re)start) for each rate
in ``RATES`` (false alarms per 10^6 values).

Method. Many independent stationary streams run side by side, one numpy step per value across
all of them, with exactly the detector's arithmetic (`streams.detectors._hull`: the warm-up
transform, the cumulative sums, Andrew's monotone chain per stream, the likelihood-ratio
statistics over the hull vertices). For every band of ``n`` it counts the up-crossings of each
level of a fine grid (an alarm is the start of an episode) and divides by the values in the
band: the false-alarm rate per value as a function of the threshold. Where a rate is too small
to observe (below about 100 per 10^6), the level is extrapolated from the last well-observed
one (at least 20 crossings) along a straight line in ``log(rate)`` against the level
(likelihood-ratio statistics have exponential tails), with the slope fitted over every band of
every stream, or the stream's own where its tail falls more slowly. The table keeps, for
every band and rate, the largest level over a panel of stationary streams
(`streams.detectors.focus_panel`: normal, lognormal, Student-t(3), uniform, bimodal,
Poisson(2), normal rounded to integers); ``both`` is at least ``up`` and ``down``.
``--add`` adds a run's crossing counts to the saved ones (more values for some streams), and
``--from-counts`` refits the table from the saved counts without simulating.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftline.streams.detectors._hull import (  # noqa: E402
    dispersion,
    glr_mean,
    glr_scale,
    reference_transform,
    standardise,
)
from driftline.streams.detectors.focus_panel import PANEL, Gen  # noqa: E402

WARMUP = 50
RATES = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
N_GRID = (51, 100, 250, 1000, 3000, 10000)
LEVELS = np.arange(0.0, 40.0, 0.05)


class Hulls:
    """Lower or upper hulls of K streams in padded arrays (Andrew's monotone chain)."""

    def __init__(self, k: int, lower: bool, cap: int = 64) -> None:
        self.lower = lower
        self.t = np.zeros((k, cap))
        self.c = np.zeros((k, cap))
        self.cnt = np.ones(k, dtype=np.int64)
        self.rows = np.arange(k)

    def push(self, n: float, c: np.ndarray) -> None:
        rows, t, cc, cnt = self.rows, self.t, self.c, self.cnt
        while True:
            ok = cnt >= 2
            a, b = np.maximum(cnt - 2, 0), cnt - 1
            ta, ca, tb, cb = t[rows, a], cc[rows, a], t[rows, b], cc[rows, b]
            cross = (tb - ta) * (c - ca) - (cb - ca) * (n - ta)
            pop = ok & ((cross <= 0.0) if self.lower else (cross >= 0.0))
            if not pop.any():
                break
            cnt -= pop
        if cnt.max() >= t.shape[1]:
            self.t = t = np.concatenate([t, np.zeros_like(t)], axis=1)
            self.c = cc = np.concatenate([cc, np.zeros_like(cc)], axis=1)
        t[rows, cnt] = n
        cc[rows, cnt] = c
        cnt += 1

    def candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """tau, C_tau and the mask of the vertices other than the first and the last."""
        h = int(self.cnt.max())
        j = np.arange(h)[None, :]
        mask = (j >= 1) & (j <= self.cnt[:, None] - 2)
        return self.t[:, :h], self.c[:, :h], mask


def simulate(
    kind: str, gen: Gen, k: int, steps: int, seed: int, bands: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Up-crossing counts per (band, level) for each direction, and values per band."""
    rng = np.random.default_rng(seed)
    warm = gen(rng, (k, WARMUP))
    centre, scale, floor = reference_transform(warm)

    def ys(x: np.ndarray) -> np.ndarray:
        z = standardise(x, centre[:, None], scale[:, None])
        return z if kind == "mean" else np.maximum(z * z, floor[:, None])

    hulls = {"up": Hulls(k, True), "down": Hulls(k, False)}
    counts = {d: np.zeros((len(bands), LEVELS.size + 1)) for d in ("up", "down", "both")}
    prev = {d: np.zeros(k) for d in counts}
    per_band = np.zeros(len(bands))
    c = np.zeros(k)
    q = np.zeros(k)
    n = 0
    block = ys(warm)
    total = WARMUP + steps
    while n < total:
        for col in range(block.shape[1]):
            y = block[:, col]
            n += 1
            c += y
            q += y * y
            stats = {}
            for d, hull in hulls.items():
                hull.push(float(n), c)
                if n <= WARMUP:
                    continue
                tau, ctau, mask = hull.candidates()
                if kind == "mean":
                    g = glr_mean(float(n), c[:, None], q[:, None], tau, ctau)
                else:
                    g = glr_scale(float(n), c[:, None], tau, ctau)
                g = np.where(mask, g, 0.0)
                stats[d] = np.maximum(g.max(axis=1), 0.0)
                if kind == "scale":
                    stats[d] = stats[d] / dispersion(float(n), c, q)
            if n <= WARMUP:
                continue
            stats["both"] = np.maximum(stats["up"], stats["down"])
            b = int(np.searchsorted(bands, n, side="right")) - 1
            per_band[b] += k
            for d, s in stats.items():
                p = prev[d]
                rise = s > p
                lo = np.searchsorted(LEVELS, p[rise], side="left")
                hi = np.searchsorted(LEVELS, s[rise], side="left")
                m = LEVELS.size + 1
                counts[d][b] += np.bincount(lo, minlength=m) - np.bincount(hi, minlength=m)
                prev[d] = s
        if n < total:
            block = ys(gen(rng, (k, min(1000, total - n))))
    return {d: np.cumsum(v, axis=1)[:, :-1] for d, v in counts.items()}, per_band


def tail_slope(groups: list[tuple[np.ndarray, float]]) -> float:
    """Common slope of log(rate) against the level over the observed tails of many (stream,
    band) groups (at most 1,000 per 10^6 values, at least 20 crossings), each group with its
    own intercept."""
    sxy = sxx = 0.0
    for counts, events in groups:
        rate = counts / events
        past_peak = np.arange(counts.size) > np.argmax(counts)
        sel = np.flatnonzero((counts >= 20) & (rate <= 1e-3) & past_peak)
        if sel.size < 3:
            continue
        x, y = LEVELS[sel], np.log(rate[sel])
        sxy += float(((x - x.mean()) * (y - y.mean())).sum())
        sxx += float(((x - x.mean()) ** 2).sum())
    return sxy / sxx


def levels_for(
    counts: np.ndarray, events: float, rates: tuple[float, ...], slope: float
) -> list[float]:
    """Level at which the up-crossing rate per 10^6 values is each of ``rates``: interpolated
    where observed (at least 20 crossings), else extrapolated from the last such level along
    the common tail ``slope``."""
    ok = np.flatnonzero(counts >= 20)
    if events == 0 or ok.size == 0:
        return [np.nan] * len(rates)
    rate = counts / events * 1e6
    j = int(ok[-1])  # the last well-observed level
    out = []
    for r in rates:
        peak = int(np.argmax(counts))
        if rate[peak] <= r:  # never that frequent: any level past the peak will do
            out.append(float(LEVELS[peak]))
        elif r >= rate[j]:
            k = int(np.flatnonzero(rate >= r)[-1])  # rate falls below r between k and k + 1
            lr = np.log(np.maximum(rate[[k, k + 1]], 1e-300))
            out.append(float(np.interp(np.log(r), lr[::-1], LEVELS[[k + 1, k]])))
        else:
            out.append(float(LEVELS[j] + (np.log(r / 1e6) - np.log(rate[j] / 1e6)) / slope))
    return out


def simulate_panel(
    kind: str, runs: list[tuple[int, int]], panel: list[str], seed: int
) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Crossing counts (direction -> band x level) and values per band, per stream."""
    bands = np.asarray(N_GRID, dtype=np.float64)
    out = {}
    for name in panel:
        t0 = time.process_time()
        tot = {d: np.zeros((len(bands), LEVELS.size)) for d in ("up", "down", "both")}
        ev = np.zeros(len(bands))
        for i, (k, steps) in enumerate(runs):
            cnt, per = simulate(kind, PANEL[name], k, steps, seed + 1000 * i, bands)
            for d in tot:
                tot[d] += cnt[d]
            ev += per
        out[name] = (tot, ev)
        print(f"{kind:5s} {name:10s} {ev.sum():.3g} values, {time.process_time() - t0:.0f} s CPU",
              flush=True)  # fmt: skip
    return out


def calibrate(sims: dict[str, tuple[dict[str, np.ndarray], np.ndarray]]) -> dict:
    """Levels per (direction, stream, band, rate)."""
    out: dict[str, dict[str, np.ndarray]] = {d: {} for d in ("up", "down", "both")}
    for d in out:
        groups = [(tot[d][b], ev[b]) for tot, ev in sims.values() for b in range(ev.size)]
        pooled = tail_slope(groups)
        slopes = {}
        for name, (tot, ev) in sims.items():
            # a stream whose tail falls more slowly than the pooled one extrapolates along its own
            own = tail_slope([(tot[d][b], ev[b]) for b in range(ev.size)])
            slope = slopes[name] = max(pooled, own)
            out[d][name] = np.array(
                [levels_for(tot[d][b], ev[b], RATES, slope) for b in range(ev.size)]
            )
        one = RATES.index(1.0)
        worst = max(out[d], key=lambda k: out[d][k][:, one].max())
        print(f"  {d:4s} tail slope pooled {pooled:.3f}, "
              f"{', '.join(f'{k} {v:.3f}' for k, v in slopes.items())}\n"
              f"       h(1 per 10^6) by band, worst stream {worst}: "
              f"{np.round(out[d][worst][:, one], 1).tolist()}")  # fmt: skip
    return out


def table(levels: dict[str, dict[str, np.ndarray]]) -> dict[str, list[list[float]]]:
    """Per direction: the largest level over the panel, [rate][band], bands without data
    taking the next band's level; ``both`` at least ``up`` and ``down``."""
    worst = {}
    for d, by_dist in levels.items():
        w = np.nanmax(np.stack(list(by_dist.values())), axis=0)  # band x rate
        for b in range(w.shape[0] - 2, -1, -1):
            w[b] = np.where(np.isnan(w[b]), w[b + 1], w[b])
        worst[d] = w
    # either side alone alarms less often than both together: never a higher threshold
    worst["both"] = np.maximum(worst["both"], np.maximum(worst["up"], worst["down"]))
    out = {d: np.round(w.T, 2).tolist() for d, w in worst.items()}
    return out


def write(tables: dict[str, dict[str, list[list[float]]]], note: str) -> None:
    """Write the table module; kinds not in ``tables`` keep their rows from the current one."""
    path = ROOT / "streams" / "detectors" / "focus_table.py"
    current: dict = {}
    exec(path.read_text(), current)  # our own generated module: plain literals
    merged = {}
    for kind in ("mean", "scale"):
        if kind in tables:
            merged[kind] = tables[kind]
        elif current["RATES"] == RATES and current["N_GRID"] == N_GRID:
            merged[kind] = {
                k.split(":")[1]: v for k, v in current["THRESHOLDS"].items() if k.startswith(kind)
            }
    tables = merged
    lines = [
        '"""Thresholds of ``focus`` / ``focus_scale``, written by',
        "``bench/calibrate_sequential.py`` (do not edit).",
        "",
        "``THRESHOLDS[kind:direction][i][j]``: the likelihood-ratio level giving ``RATES[i]``",
        "false alarms per 10^6 values of a stationary stream at ``n = N_GRID[j]`` values since",
        "the (re)start (the largest over the simulated panel).",
        "",
        *textwrap.wrap(note, 96),
        '"""',
        "",
        f"RATES = {RATES!r}",
        f"N_GRID = {N_GRID!r}",
        "THRESHOLDS = {",
    ]
    for kind, by_dir in tables.items():
        for d, rows in by_dir.items():
            lines.append(f'    "{kind}:{d}": [')
            lines += [f"        {row!r}," for row in rows]
            lines.append("    ],")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def load(path: Path) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Crossing counts saved by an earlier run."""
    with np.load(path) as f:
        names = [k.removesuffix(":events") for k in f.files if k.endswith(":events")]
        return {
            n: ({d: f[f"{n}:{d}"] for d in ("up", "down", "both")}, f[f"{n}:events"]) for n in names
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run, writes nothing")
    ap.add_argument("--kinds", default="mean,scale")
    ap.add_argument("--panel", default=",".join(PANEL))
    ap.add_argument("--short", default="10000x250", help="streams x values, early bands")
    ap.add_argument("--long", default="400x10000", help="streams x values, all bands")
    ap.add_argument("--counts", default="/tmp/focus_counts_{kind}.npz",
                    help="where the crossing counts are saved")  # fmt: skip
    ap.add_argument("--from-counts", action="store_true",
                    help="recompute the table from saved counts, no simulation")  # fmt: skip
    ap.add_argument("--add", action="store_true",
                    help="add this run's counts to the saved ones (more values)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--note", default="see README", help="how the saved counts were made")
    args = ap.parse_args()
    if args.quick:
        args.short, args.long = "2000x200", "200x2000"
    runs = [tuple(int(v) for v in r.split("x")) for r in (args.short, args.long)]
    tables = {}
    for kind in args.kinds.split(","):
        saved = Path(args.counts.format(kind=kind))
        sims = load(saved) if args.from_counts or args.add else {}
        if not args.from_counts:
            new = simulate_panel(kind, runs, args.panel.split(","), seed=args.seed)
            for name, (tot, ev) in new.items():  # --add: more values for these streams
                if name in sims:
                    old_tot, old_ev = sims[name]
                    tot = {d: tot[d] + old_tot[d] for d in tot}
                    ev = ev + old_ev
                sims[name] = (tot, ev)
            if not args.quick:
                arrays = {f"{n}:{d}": v for n, (t, _) in sims.items() for d, v in t.items()}
                arrays |= {f"{n}:events": ev for n, (_, ev) in sims.items()}
                np.savez_compressed(saved, **arrays)
        print(kind)
        tables[kind] = table(calibrate(sims))
    if not args.quick:
        note = f"Runs (streams x values): {args.short}, {args.long}; panel: {args.panel}."
        if args.add or args.from_counts:
            note = f"Counts: {args.counts.format(kind='<kind>')} ({args.note})."
        write(tables, note)


if __name__ == "__main__":
    main()
