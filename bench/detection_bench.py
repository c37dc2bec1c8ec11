"""Detection benchmark: false alarms per 10^6 events and detection delays, river alongside.

Every detector is built from a spec-like dict (``{"type": "ks", "alpha": 1e-6, ...}``, what a
``[[detectors]]`` entry holds, or ``{"river": "ADWIN", ...}`` for river's own detector) and fed
seeded streams in batches of ``--batch`` values with ``update_many`` (river's detectors: one
``update`` per value, as river users call them). An alarm is the start of an episode (a
``"firing"`` `Detection`; for river, an update after which ``drift_detected`` is true).

* **False alarms per 10^6 events**: stationary streams of ``--fa-length`` values per seed --
  numeric: normal, lognormal, uniform, bimodal, Student-t(3), Poisson(3) (integers) and heavily
  tied (binomial(4, 0.3): five values); categorical: five categories with shares 0.30, 0.25,
  0.20, 0.15, 0.10; error: 0/1 errors at rate 0.1. Pooled over seeds: alarms / events * 10^6.
* **Detection delay**: ``--pre`` stationary N(0, 1) values plus a per-seed offset in
  [0, 1000) (so changes fall anywhere inside windows), then ``--post`` changed values: mean
  +0.5 sd, +1 sd, sd x 2, sd x 0.5, normal -> bimodal with the same mean and variance
  (0.5 N(-0.8, 0.6) + 0.5 N(0.8, 0.6)); categorical: the first category's share 0.30 -> 0.36;
  error: rate 0.1 -> 0.2, and 0.3 -> 0.1 (a falling error: any alarm after it is counted, it
  should find none). Delay = first alarm at or after the change minus the change; "found" =
  seeds with one within ``--post`` values. Median over the found seeds.

Usage::

    python bench/detection_bench.py                 # 20 seeds; a few minutes on 2 cores
    python bench/detection_bench.py --quick         # smoke run (3 seeds, short streams)
    python bench/detection_bench.py --jobs 2 --markdown
    python bench/detection_bench.py --detectors '[{"type": "ks", "alpha": 1e-4}]'

CPU seconds per detector are printed too (a shared machine makes wall time noisy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftline.streams.detectors.factory import DETECTORS, build_detector

CATS = np.array(["a", "b", "c", "d", "e"], dtype=object)
SHARES = np.array([0.30, 0.25, 0.20, 0.15, 0.10])

#: Stationary streams, per field type: name -> (rng, n) -> values.
STATIONARY: dict[str, dict[str, Callable[[np.random.Generator, int], np.ndarray]]] = {
    "numeric": {
        "normal": lambda r, n: r.normal(0.0, 1.0, n),
        "lognormal": lambda r, n: r.lognormal(0.0, 1.0, n),
        "uniform": lambda r, n: r.uniform(0.0, 1.0, n),
        "bimodal": lambda r, n: np.where(r.random(n) < 0.5, -2.0, 2.0) + r.normal(0, 0.5, n),
        "student_t3": lambda r, n: r.standard_t(3, n),
        "poisson": lambda r, n: r.poisson(3.0, n).astype(np.float64),
        "tied": lambda r, n: r.binomial(4, 0.3, n).astype(np.float64),
    },
    "categorical": {"categories": lambda r, n: r.choice(CATS, n, p=SHARES)},
    "error": {"error_0.1": lambda r, n: (r.random(n) < 0.1).astype(np.float64)},
}


def _bimodal_same_moments(r: np.random.Generator, n: int) -> np.ndarray:
    return np.where(r.random(n) < 0.5, -0.8, 0.8) + r.normal(0.0, 0.6, n)


def _shares(first: float) -> np.ndarray:
    rest = SHARES[1:] * (1.0 - first) / SHARES[1:].sum()
    return np.concatenate([[first], rest])


#: Changes, per field type: name -> (before, after) generators.
Gen = Callable[[np.random.Generator, int], np.ndarray]
SHIFTS: dict[str, dict[str, tuple[Gen, Gen]]] = {
    "numeric": {
        "+0.5sd": (STATIONARY["numeric"]["normal"], lambda r, n: r.normal(0.5, 1.0, n)),
        "+1sd": (STATIONARY["numeric"]["normal"], lambda r, n: r.normal(1.0, 1.0, n)),
        "sd*2": (STATIONARY["numeric"]["normal"], lambda r, n: r.normal(0.0, 2.0, n)),
        "sd*0.5": (STATIONARY["numeric"]["normal"], lambda r, n: r.normal(0.0, 0.5, n)),
        "bimodal": (STATIONARY["numeric"]["normal"], _bimodal_same_moments),
    },
    "categorical": {
        "share .30->.36": (
            STATIONARY["categorical"]["categories"],
            lambda r, n: r.choice(CATS, n, p=_shares(0.36)),
        ),
    },
    "error": {
        "error .1->.2": (
            STATIONARY["error"]["error_0.1"],
            lambda r, n: (r.random(n) < 0.2).astype(np.float64),
        ),
        "error .3->.1 (falls)": (
            lambda r, n: (r.random(n) < 0.3).astype(np.float64),
            STATIONARY["error"]["error_0.1"],
        ),
    },
}
#: Changes after which any alarm is a false one (reported as alarms, not delays).
FALLS = frozenset({"error .3->.1 (falls)"})

#: The detectors compared by default: every registered detector at its defaults on the field
#: types it takes, the error-stream detectors one-sided as a spec makes them, and river's own
#: ADWIN, KSWIN and PageHinkley at river's defaults.
DEFAULT_DETECTORS: list[dict[str, Any]] = [
    {"type": "focus"},
    {"type": "focus_scale"},
    {"type": "np_focus"},
    {"type": "focus_categorical"},
    {"type": "focus", "direction": "up", "field": "error"},
    {"type": "ks"},
    {"type": "ks", "reference_mode": "sliding"},
    {"type": "ks", "reference_mode": "previous_window", "window_ms": 1000},
    {"type": "summary"},
    {"type": "adwin"},
    {"type": "page_hinkley"},
    {"type": "chi2"},
    {"type": "psi"},
    {"type": "jsd"},
    {"type": "adwin", "direction": "up", "field": "error"},
    {"type": "page_hinkley", "mode": "up", "field": "error"},
    {"type": "ddm"},
    {"type": "hddm_a"},
    {"type": "hddm_w"},
    {"river": "ADWIN"},
    # river's KSWIN runs a scipy KS test per update (~0.4 ms): fewer and shorter streams
    {"river": "KSWIN", "fa_length": 2_000, "seeds": 5, "pre": 1_000, "post": 1_500},
    {"river": "PageHinkley"},
]
_FIELD_OF_INPUTS = {"real": "numeric", "categorical": "categorical"}


@dataclass(frozen=True)
class Config:
    """Stream sizes of one run."""

    seeds: int = 20
    fa_length: int = 50_000
    pre: int = 5_000
    post: int = 5_000
    batch: int = 1_000


@dataclass
class Result:
    """One detector's numbers."""

    label: str
    field: str
    false_alarms: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind: (alarms, n)
    delays: dict[str, list[int | None]] = field(default_factory=dict)  # shift: per seed
    cpu_s: float = 0.0

    def fa_rate(self, kind: str | None = None) -> float:
        """False alarms per 10^6 events (pooled over kinds if ``kind`` is None)."""
        items = [self.false_alarms[kind]] if kind else list(self.false_alarms.values())
        n = sum(b for _, b in items)
        return sum(a for a, _ in items) / n * 1e6 if n else math.nan

    def found(self, shift: str) -> tuple[int, int]:
        d = self.delays[shift]
        return sum(v is not None for v in d), len(d)

    def median_delay(self, shift: str) -> float:
        found = [v for v in self.delays[shift] if v is not None]
        return float(np.median(found)) if found else math.nan


def label_of(spec: dict[str, Any]) -> str:
    """Short name of a detector spec: its type and non-default settings."""
    if "label" in spec:
        return str(spec["label"])
    name = f"river {spec['river']}" if "river" in spec else str(spec["type"])
    extra = {k: v for k, v in spec.items() if k not in _RUN_KEYS}
    if extra:
        name += " " + ",".join(f"{k}={v}" for k, v in extra.items())
    return name


def field_of(spec: dict[str, Any]) -> str:
    """The field type a spec's detector watches: numeric, categorical or error."""
    if "field" in spec:
        return str(spec["field"])
    if "river" in spec:
        return "numeric"
    inputs = DETECTORS[spec["type"]].inputs
    return _FIELD_OF_INPUTS.get(inputs, "error")


#: Keys of a detector spec that set up the run, not the detector: per-detector overrides of the
#: run's sizes (``fa_length``, ``seeds``, ``pre``, ``post``, each at most the run's) and names.
_RUN_KEYS = ("type", "river", "field", "fa_length", "seeds", "pre", "post", "label")


def _params(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in _RUN_KEYS}


def alarms(spec: dict[str, Any], xs: np.ndarray, batch: int, seed: int) -> list[int]:
    """Indices of the episode starts (river: detections) of a fresh detector fed ``xs``."""
    params = _params(spec)
    if "river" in spec:
        import river.drift

        cls = getattr(river.drift, spec["river"])
        if spec["river"] == "KSWIN":
            params.setdefault("seed", seed)
        det = cls(**params)
        out = []
        for i, x in enumerate(xs.tolist()):
            det.update(x)
            if det.drift_detected:
                out.append(i)
        return out
    det = build_detector(spec["type"], **params)
    ts = None
    if params.get("reference_mode") == "previous_window":
        ts = np.arange(xs.size, dtype=np.int64)  # one event per millisecond
    out = []
    for a in range(0, xs.size, batch):
        if ts is None:
            changes = det.update_many(xs[a : a + batch])
        else:
            changes = det.update_many(xs[a : a + batch], ts_ms=ts[a : a + batch])
        out += [a + c.index for c in changes if c.status == "firing"]
    return out


def _rng(seed: int, *names: str) -> np.random.Generator:
    key = [seed, *(int.from_bytes(n.encode()[:8].ljust(8, b"\0"), "little") for n in names)]
    return np.random.default_rng(key)


def run_one(spec: dict[str, Any], cfg: Config) -> Result:
    """All of one detector's streams."""
    t0 = time.process_time()
    fld = field_of(spec)
    res = Result(label_of(spec), fld)
    seeds = min(cfg.seeds, int(spec.get("seeds", cfg.seeds)))
    fa_length = min(cfg.fa_length, int(spec.get("fa_length", cfg.fa_length)))
    pre = min(cfg.pre, int(spec.get("pre", cfg.pre)))
    post = min(cfg.post, int(spec.get("post", cfg.post)))
    for kind, gen in STATIONARY[fld].items():
        n_alarms = 0
        for seed in range(seeds):
            xs = gen(_rng(seed, "fa", kind), fa_length)
            n_alarms += len(alarms(spec, xs, cfg.batch, seed))
        res.false_alarms[kind] = (n_alarms, seeds * fa_length)
    for shift, (before, after) in SHIFTS[fld].items():
        delays: list[int | None] = []
        for seed in range(seeds):
            r = _rng(seed, "shift", shift)
            change = pre + int(r.integers(0, 1_000))
            xs = np.concatenate([before(r, change), after(r, post)])
            if shift in FALLS:  # alarms after a change that is not drift
                late = [i for i in alarms(spec, xs, cfg.batch, seed) if i >= change]
                delays.append(len(late))
                continue
            hits = [i - change for i in alarms(spec, xs, cfg.batch, seed) if i >= change]
            delays.append(hits[0] if hits else None)
        res.delays[shift] = delays
    res.cpu_s = time.process_time() - t0
    return res


def run(specs: Sequence[dict[str, Any]], cfg: Config, jobs: int = 1) -> list[Result]:
    """Every spec's `Result`, in order (``jobs`` processes)."""
    if jobs <= 1:
        return [run_one(s, cfg) for s in specs]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(run_one, specs, [cfg] * len(specs)))


def _fmt_rate(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.3g}"


def tables(results: Sequence[Result], markdown: bool = False) -> str:
    """The printed report: one table per field type."""
    out = []
    for fld in ("numeric", "categorical", "error"):
        rows = [r for r in results if r.field == fld]
        if not rows:
            continue
        kinds = list(STATIONARY[fld])
        shifts = list(SHIFTS[fld])
        head = ["detector", *[f"FA {k}" for k in kinds]]
        if len(kinds) > 1:
            head.append("FA all")
        head += [f"{s}" for s in shifts] + ["CPU s"]
        body = []
        for r in rows:
            cells = [r.label, *[_fmt_rate(r.fa_rate(k)) for k in kinds]]
            if len(kinds) > 1:
                cells.append(_fmt_rate(r.fa_rate()))
            for s in shifts:
                if s in FALLS:
                    cells.append(f"{sum(v or 0 for v in r.delays[s])} alarms")
                    continue
                found, n = r.found(s)
                med = r.median_delay(s)
                cells.append(f"{'-' if math.isnan(med) else f'{med:.0f}'} ({found}/{n})")
            cells.append(f"{r.cpu_s:.1f}")
            body.append(cells)
        title = (
            f"{fld}: false alarms per 10^6 events (FA) on stationary streams; "
            "median delay in events (found/seeds) after each change"
        )
        out.append(title)
        if markdown:
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(c) + " |" for c in body]
        else:
            widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
            out.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
            for c in body:
                out.append("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds, short streams (smoke test)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--fa-length", type=int, default=None, help="values per stationary stream")
    ap.add_argument("--pre", type=int, default=None, help="values before a change (+0..999)")
    ap.add_argument("--post", type=int, default=None, help="values after a change")
    ap.add_argument("--batch", type=int, default=1_000, help="update_many batch size")
    ap.add_argument("--jobs", type=int, default=1, help="processes")
    ap.add_argument("--markdown", action="store_true", help="tables as Markdown")
    ap.add_argument("--detectors", default=None, help="JSON list of detector specs")
    args = ap.parse_args(argv)
    base = Config(seeds=3, fa_length=5_000, pre=2_000, post=2_000) if args.quick else Config()
    cfg = Config(
        seeds=args.seeds or base.seeds,
        fa_length=args.fa_length or base.fa_length,
        pre=args.pre or base.pre,
        post=args.post or base.post,
        batch=args.batch,
    )
    specs = json.loads(args.detectors) if args.detectors else DEFAULT_DETECTORS
    t = time.perf_counter()
    results = run(specs, cfg, args.jobs)
    print(
        f"seeds={cfg.seeds} fa_length={cfg.fa_length} pre={cfg.pre}+[0,1000) post={cfg.post} "
        f"batch={cfg.batch}"
    )
    print(tables(results, args.markdown))
    print(f"wall {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
