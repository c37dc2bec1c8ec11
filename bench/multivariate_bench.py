"""Multivariate (PCA reconstruction) detector: false alarms on stationary correlated streams,
delay for a correlation flip, and rows per CPU second.

Run ``python bench/multivariate_bench.py`` (``--quick`` for a smoke run). Every stream has its
own reference (the first 2000 rows, as a worker without ``reference_profile`` does), so the
false-alarm figure averages over references too. Default hyperparameters throughout
(``window_size`` 500, non-overlapping windows, ``false_alarm_rate`` 1e-6, ``n_clear`` 3).

1. False alarms: 5 features with a fixed random correlation matrix; marginals normal,
   exponential (Gaussian copula) or Student t with 4 degrees of freedom (heavy tails). Firing
   episodes and beyond-limit windows per 10^6 monitored rows.
2. Delay: ``d`` features, features 0 and 1 correlated ``rho`` and then ``-rho`` (every marginal
   stays N(0, 1)); the flip lands at a random row after the reference. Rows from the flip to the
   firing alert (median, 90th percentile, max) and the share caught within 5000 rows.

Measured on the shared 2-core machine on 2026-11-30 (full run, ``RESULTS``; CPU noisy):

false alarms, 300 streams x 10^5 monitored rows each (3x10^7 rows per line), nominal 1e-6/row:

===============  ================  =============  ==================
marginals        firing episodes   per 10^6 rows  rows per CPU second
===============  ================  =============  ==================
normal           8                 0.27           2.7e6
exponential      9                 0.30           3.4e6
student t (4)    9                 0.30           3.1e6
===============  ================  =============  ==================

delay of the firing alert after the flip, 100 flips per line (rows; all caught within 5000):

=========  =====  ======  ====  ====
features   rho    median  p90   max
=========  =====  ======  ====  ====
2          0.8    312     509   583
5          0.8    381     548   660
10         0.8    422     618   697
5          0.5    412     608   786
5          0.3    538     802   1098
20         0.5    630     1256  2380
=========  =====  ======  ====  ====
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import ndtr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftline.streams.multivariate import PCAReconstructionDetector

REFERENCE = 2000
#: The last full run's output (see the module doc).
RESULTS = """\
false alarms on stationary correlated streams (defaults: window 500, rate 1e-6)
  normal       rows 3.00e+07  firing episodes    8 (0.27 per 1e6 rows)  beyond windows    8 (0.27 per 1e6)  2742450 rows/CPU s
  exponential  rows 3.00e+07  firing episodes    9 (0.30 per 1e6 rows)  beyond windows    9 (0.30 per 1e6)  3404185 rows/CPU s
  student_t4   rows 3.00e+07  firing episodes    9 (0.30 per 1e6 rows)  beyond windows    9 (0.30 per 1e6)  3092565 rows/CPU s
delay after a correlation flip rho -> -rho of features 0 and 1 (rows)
  d= 2 rho=0.8  caught 100% within 5000  median 312  p90 509  max 583
  d= 5 rho=0.8  caught 100% within 5000  median 381  p90 548  max 660
  d=10 rho=0.8  caught 100% within 5000  median 422  p90 618  max 697
  d= 5 rho=0.5  caught 100% within 5000  median 412  p90 608  max 786
  d= 5 rho=0.3  caught 100% within 5000  median 538  p90 802  max 1098
  d=20 rho=0.5  caught 100% within 5000  median 630  p90 1256  max 2380
"""  # noqa: E501
BATCH = 5000


def correlation(d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    cov = a @ a.T + np.eye(d)
    return cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))


def marginals(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "exponential":
        return -np.log1p(-ndtr(x))
    if kind == "student_t4":
        return x / np.sqrt(rng.chisquare(4, size=(x.shape[0], 1)) / 4)
    return x


def feed(det: PCAReconstructionDetector, x: np.ndarray) -> list[tuple[int, str]]:
    out = []
    for a in range(0, len(x), BATCH):
        out += [(d.index + a, d.status) for d in det.update_many(x[a : a + BATCH])]
    return out


def false_alarms(kind: str, streams: int, rows: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    cov = correlation(5, 1)
    fires = beyond = evals = 0
    cpu = 0.0
    for _ in range(streams):
        x = marginals(rng.multivariate_normal(np.zeros(5), cov, size=REFERENCE + rows), kind, rng)
        det = PCAReconstructionDetector(5)
        t = time.process_time()
        fires += sum(1 for _i, s in feed(det, x) if s == "firing")
        cpu += time.process_time() - t
        evals += det.n_evaluations
        ref = det.reference
        assert ref is not None
        lo, hi = det.limits
        means = ref.errors(x[REFERENCE:]).reshape(-1, det.window_size).mean(axis=1)
        beyond += int(((means < lo) | (means > hi)).sum())
    n = streams * rows
    return {"rows": n, "fires": fires, "per_1e6": fires / n * 1e6, "beyond_windows": beyond,
            "beyond_per_1e6": beyond / n * 1e6, "windows": evals,
            "rows_per_cpu_s": streams * (REFERENCE + rows) / cpu}  # fmt: skip


def delays(d: int, rho: float, reps: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    cov_a, cov_b = np.eye(d), np.eye(d)
    cov_a[0, 1] = cov_a[1, 0] = rho
    cov_b[0, 1] = cov_b[1, 0] = -rho
    out = []
    for _ in range(reps):
        flip = REFERENCE + int(rng.integers(1000, 3000))
        after = 5000
        x = np.vstack([rng.multivariate_normal(np.zeros(d), cov_a, size=flip),
                       rng.multivariate_normal(np.zeros(d), cov_b, size=after)])  # fmt: skip
        fired = [i for i, s in feed(PCAReconstructionDetector(d), x) if s == "firing"]
        late = [i - flip for i in fired if i >= flip]
        out.append(late[0] if late else np.inf)
    arr = np.array(out)
    caught = arr[np.isfinite(arr)]
    return {"caught": float(np.isfinite(arr).mean()),
            "median": float(np.median(caught)) if caught.size else np.inf,
            "p90": float(np.quantile(caught, 0.9)) if caught.size else np.inf,
            "max": float(caught.max()) if caught.size else np.inf,
            "early_false": int(sum(1 for v in out if v == np.inf))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (small streams)")
    args = ap.parse_args()
    streams, rows, reps = (4, 100_000, 10) if args.quick else (300, 100_000, 100)
    print("false alarms on stationary correlated streams (defaults: window 500, rate 1e-6)")
    for kind in ("normal", "exponential", "student_t4"):
        r = false_alarms(kind, streams, rows, seed=7)
        print(f"  {kind:12s} rows {r['rows']:.2e}  firing episodes {r['fires']:4d} "
              f"({r['per_1e6']:.2f} per 1e6 rows)  beyond windows {r['beyond_windows']:4d} "
              f"({r['beyond_per_1e6']:.2f} per 1e6)  "
              f"{r['rows_per_cpu_s']:.0f} rows/CPU s")  # fmt: skip
    print("delay after a correlation flip rho -> -rho of features 0 and 1 (rows)")
    for d, rho in ((2, 0.8), (5, 0.8), (10, 0.8), (5, 0.5), (5, 0.3), (20, 0.5)):
        r = delays(d, rho, reps, seed=11)
        print(f"  d={d:2d} rho={rho:.1f}  caught {r['caught']:.0%} within 5000  median "
              f"{r['median']:.0f}  p90 {r['p90']:.0f}  max {r['max']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
