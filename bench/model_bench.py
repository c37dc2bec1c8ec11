"""Model-monitoring benchmark: label join, rolling metrics and feature importance costs.

Run ``python bench/model_bench.py`` (``--quick`` for a smoke run). Prints per-event costs in
microseconds (wall time, best of the repeats):

1. `streams.labels.LabelJoin`: ``add_predictions`` + ``add_labels`` (+ one ``expire`` per batch) at
   batch 5,000, 8 features, labels delayed by 1-3 batches, 80% of predictions labelled, 5% of
   labels without a prediction; in steady state (~10^4 predictions waiting). Then the same
   calls with ``max_pending`` (10^6) predictions waiting and evicted, and one ``snapshot``.
2. `streams.model_metrics`: ``update`` of a count window (10,000) and of a sliding event-time
   window at batch 5,000, and one ``result`` call (exact AUC over the window).
3. `streams.importance`: `permutation_importance` on a 1,000-example window with 8 features
   (one repeat, a ``StandardScaler | LogisticRegression`` scored with numpy) and
   `linear_importance` on the same window.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import compose, linear_model, preprocessing

from driftline.streams.importance import linear_importance, permutation_importance
from driftline.streams.labels import LabelJoin
from driftline.streams.model import BatchPredictor
from driftline.streams.model_metrics import CountWindowMetrics, TimeWindowMetrics

BATCH = 5_000
N_FEATURES = 8


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Smallest wall time of ``repeats`` calls, in seconds.

    Examples
    --------
    >>> best_of(2, lambda: None) >= 0.0
    True
    """
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def label_join(n_batches: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    n = n_batches * BATCH
    ids = np.array([f"events:0:{i}" for i in range(n)], dtype=object)
    t = np.arange(n, dtype=np.int64) * 2  # 500 events/s of event time
    scores = rng.random(n)
    feats = rng.normal(size=(n, N_FEATURES))
    labelled = rng.random(n) < 0.8
    delay_batches = rng.integers(1, 4, n)
    j = LabelJoin(ttl_ms=60_000)
    t_pred = t_lab = 0.0
    n_lab = 0
    for b in range(n_batches):
        s = slice(b * BATCH, (b + 1) * BATCH)
        t0 = time.perf_counter()
        j.add_predictions(ids[s], t[s], scores[s], scores[s] >= 0.5, feats[s])
        t1 = time.perf_counter()
        due = np.flatnonzero(
            labelled[: s.stop] & (np.arange(s.stop) // BATCH + delay_batches[: s.stop] == b)
        )
        orphans = np.array([f"orphan:{b}:{k}" for k in range(len(due) // 20)], dtype=object)
        lids = np.concatenate([ids[due], orphans])
        lt = np.full(lids.size, t[s.stop - 1], dtype=np.int64)
        y = (rng.random(lids.size) < 0.3).astype(np.float64)
        t2 = time.perf_counter()
        j.add_labels(lids, y, lt)
        j.expire(int(t[s.stop - 1]))
        t3 = time.perf_counter()
        if b >= 3:  # steady state
            t_pred += t1 - t0
            t_lab += t3 - t2
            n_lab += lids.size
    n_pred = (n_batches - 3) * BATCH
    return {
        "add_predictions per prediction": 1e6 * t_pred / n_pred,
        "add_labels + expire per label": 1e6 * t_lab / n_lab,
        "both, per prediction": 1e6 * (t_pred + t_lab) / n_pred,
        "pending at the end": float(j.n_pending),
        "joined": float(j.n_joined),
    }


def label_join_full(cap: int) -> dict[str, float]:
    """Predictions that never get labels: fill to ``cap`` pending, then evict at every batch."""
    rng = np.random.default_rng(3)
    n_batches = cap // BATCH + 10
    ids = np.array([f"events:1:{i}" for i in range(n_batches * BATCH)], dtype=object)
    feats = rng.normal(size=(BATCH, N_FEATURES))
    j = LabelJoin(ttl_ms=10**12, max_pending=cap)
    t_fill = t_cap = 0.0
    for b in range(n_batches):
        s = slice(b * BATCH, (b + 1) * BATCH)
        t0 = time.perf_counter()
        j.add_predictions(ids[s], np.arange(s.start, s.stop), rng.random(BATCH), None, feats)
        dt = time.perf_counter() - t0
        if b < n_batches - 10:
            t_fill += dt
        else:
            t_cap += dt
    lids = ids[cap // 2 : cap // 2 + BATCH]
    t0 = time.perf_counter()
    j.add_labels(lids, np.ones(BATCH), np.full(BATCH, cap, dtype=np.int64))
    t_lab = time.perf_counter() - t0
    t0 = time.perf_counter()
    j.snapshot()
    t_snap = time.perf_counter() - t0
    return {
        "add_predictions per prediction, filling": 1e6 * t_fill / ((n_batches - 10) * BATCH),
        "add_predictions per prediction, evicting": 1e6 * t_cap / (10 * BATCH),
        "add_labels per label, store full": 1e6 * t_lab / BATCH,
        "snapshot() of the full store (ms)": 1e3 * t_snap,
    }


def metrics(repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    y = (rng.random(BATCH * 4) < 0.3).astype(np.float64)
    s = np.clip(0.3 * y + rng.normal(0.35, 0.2, y.size), 0, 1)
    t = np.arange(y.size, dtype=np.int64) * 2
    out: dict[str, float] = {}
    cw = CountWindowMetrics("classification", 10_000)
    tw = TimeWindowMetrics("classification", window_ms=20_000)
    for k in range(3):  # fill the windows
        sl = slice(k * BATCH, (k + 1) * BATCH)
        cw.update_many(s[sl], y[sl])
        tw.update_many(s[sl], y[sl], t[sl])
    last = slice(3 * BATCH, 4 * BATCH)

    def upd_count() -> None:
        cw.update_many(s[last], y[last])

    def upd_time() -> None:
        tw.update_many(s[last], y[last], t[last] + 10**6)  # slides the window each time

    out["count window update per event"] = 1e6 * best_of(repeats, upd_count) / BATCH
    out["time window update per event"] = 1e6 * best_of(repeats, upd_time) / BATCH
    out["result() over 10,000 examples (ms)"] = 1e3 * best_of(repeats, cw.result)
    return out


def importance(repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(2)
    names = [f"f{i}" for i in range(N_FEATURES)]
    w = rng.normal(size=N_FEATURES)
    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    X = rng.normal(size=(3_000, N_FEATURES))
    y = rng.random(3_000) < 1 / (1 + np.exp(-(X @ w)))
    for row, label in zip(X.tolist(), y.tolist(), strict=True):
        model.learn_one(dict(zip(names, row, strict=True)), label)
    pred = BatchPredictor(model, names)
    Xw, yw = X[-1_000:], y[-1_000:].astype(np.float64)
    t_perm = best_of(repeats, lambda: permutation_importance(pred.predict, Xw, yw, "log_loss"))
    t_lin = best_of(repeats, lambda: linear_importance(model, names, Xw))
    return {
        "permutation, 1,000-example window (ms)": 1e3 * t_perm,
        "permutation per window example": 1e6 * t_perm / 1_000,
        "linear |w|*std, 1,000-example window (ms)": 1e3 * t_lin,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    args = ap.parse_args()
    repeats = 3 if args.quick else 10
    cap = 100_000 if args.quick else 1_000_000
    sections = {
        f"label join (batch {BATCH:,})": label_join(8 if args.quick else 30),
        f"label join, {cap:,} predictions waiting": label_join_full(cap),
        f"model metrics (batch {BATCH:,})": metrics(repeats),
        "feature importance": importance(repeats),
    }
    for title, res in sections.items():
        print(title)
        for k, v in res.items():
            unit = "" if "(ms)" in k or k in ("pending at the end", "joined") else " us"
            print(f"  {k:<44} {v:>12,.3f}{unit}")


if __name__ == "__main__":
    main()
