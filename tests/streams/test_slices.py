"""Slices without Kafka: bounded codes, label values, per-value windows, the gap rule."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from driftline.streams.model_metrics import classification_metrics
from driftline.streams.slices import (
    OTHER,
    SliceGapMonitor,
    SliceIndex,
    SliceMetrics,
    canonical,
    label_value,
    worse_by,
)


def _column(values: list) -> np.ndarray:
    """As the decoder gives them: strings (and missing ones) as objects, int and bool fields as
    float64."""
    if all(isinstance(v, int | float | bool) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array(values, dtype=object)


@pytest.mark.parametrize(
    ("values", "max_values", "batches", "codes", "labels"),
    [
        (None, 2, [["a", "b", "c", "a"]], [[0, 1, 2, 0]], ["a", "b", OTHER]),
        (None, 2, [["a"], ["c", "b"], ["b"]], [[0], [1, 2], [2]], ["a", "c", OTHER]),
        (["x", "y"], 5, [["y", "z", None, "x"]], [[1, 2, 2, 0]], ["x", "y", OTHER]),
        (None, 3, [[None, "a", None]], [[3, 0, 3]], ["a", OTHER]),  # missing: 'other'
        ([1, 2], 20, [[1.0, 2.0, 3.0, np.nan]], [[0, 1, 2, 2]], ["1", "2", OTHER]),  # int field
        ([True], 20, [[True, False]], [[0, 1]], ["true", OTHER]),  # a bool field: 1.0 / 0.0
        # an int field's values are admitted in arrival order, not sorted
        (None, 2, [[5.0, 3.0, 5.0, 7.0, np.nan]], [[0, 1, 0, 2, 2]], ["5", "3", OTHER]),
        (None, 3, [[1.0, 0.0], [0.0, 1.0, 1.0]], [[0, 1], [1, 0, 0]], ["1", "0", OTHER]),
        (None, 1, [["other", "x"]], [[0, 1]], ["other~value", OTHER]),  # a real 'other' value
    ],
)
def test_codes_are_bounded_and_stable(values, max_values, batches, codes, labels) -> None:
    kind = "bool" if values and isinstance(values[0], bool) else "string"
    ix = SliceIndex(values, max_values, kind)
    got = [ix.codes(_column(b)).tolist() for b in batches]
    assert got == codes and ix.labels == labels
    assert max(c for b in got for c in b) <= ix.other
    # a restored index goes on with the same codes
    again = SliceIndex(values, max_values, kind)
    again.restore(orjson.loads(orjson.dumps(ix.snapshot())))
    last = _column(batches[-1])
    assert again.codes(last).tolist() == ix.codes(last).tolist()


def test_codes_of_a_long_stream_never_exceed_the_cap() -> None:
    ix = SliceIndex(None, 20)
    rng = np.random.default_rng(0)
    col = np.array([f"v{i}" for i in rng.integers(0, 10_000, 50_000)], dtype=object)
    c = ix.codes(col)
    assert len(set(c.tolist())) == 21 and len(ix.labels) == 21
    assert np.count_nonzero(c == ix.other) > 49_000


@pytest.mark.parametrize(
    ("value", "text"),
    [("de", "de"), (3, "3"), (3.0, "3"), (2.5, "2.5"), (True, "true"), (False, "false"),
     (None, None), (math.nan, None), (np.int64(7), "7"), (np.bool_(True), "true")],
)  # fmt: skip
def test_canonical(value, text) -> None:
    assert canonical(value) == text


@pytest.mark.parametrize(
    ("text", "label"),
    [("fr", "fr"), ("a\tb\x00", "a?b?"), ("é", "é"), ("other", "other~value"),
     ("x" * 64, "x" * 64)],
)  # fmt: skip
def test_label_value(text, label) -> None:
    assert label_value(text) == label


def test_long_label_values_stay_apart() -> None:
    a, b = label_value("p" * 100 + "a"), label_value("p" * 100 + "b")
    assert a != b and len(a) == len(b) == 64


def test_slice_metrics_equal_the_metrics_of_each_value() -> None:
    rng = np.random.default_rng(1)
    n = 3_000
    codes = rng.integers(0, 3, n)
    scores, labels = rng.random(n), (rng.random(n) < 0.4).astype(float)
    t = np.arange(n, dtype=np.int64) * 10
    m = SliceMetrics("classification", count_window=200, time_window_ms=5_000)
    for s in range(0, n, 700):  # batches of any size give the same windows
        sl = slice(s, s + 700)
        m.update(codes[sl], scores[sl], labels[sl], t[sl])
    for window in ("count", "time"):
        got = m.results(window)
        for c in range(3):
            rows = np.flatnonzero(codes == c)
            rows = rows[-200:] if window == "count" else rows[t[rows] > t[-1] - 5_000]
            want = classification_metrics(labels[rows], scores[rows])
            for k, v in want.items():
                assert got[c][k] == pytest.approx(v, abs=1e-12, nan_ok=True), (window, c, k)
    m2 = SliceMetrics("classification", count_window=200, time_window_ms=5_000)
    m2.restore(orjson.loads(orjson.dumps(m.snapshot())))
    assert m2.results("time") == m.results("time")
    m.advance(int(t[-1]) + 5_000)
    assert all(r["n"] == 0 for r in m.results("time").values())


@pytest.mark.parametrize(
    ("metric", "slice_value", "global_value", "gap"),
    [("accuracy", 0.6, 0.9, 0.3), ("auc", 0.95, 0.9, -0.05), ("mae", 3.0, 1.0, 2.0),
     ("rmse", 1.0, 1.5, -0.5), ("f1", math.nan, 0.5, math.nan)],
)  # fmt: skip
def test_worse_by(metric, slice_value, global_value, gap) -> None:
    assert worse_by(metric, slice_value, global_value) == pytest.approx(gap, nan_ok=True)


@pytest.mark.parametrize(
    ("steps", "statuses"),
    [
        # (n_slice, slice accuracy, n_global, global accuracy) per evaluation
        ([(200, 0.75, 1000, 0.9)], ["firing"]),
        ([(200, 0.8, 1000, 0.9)], []),  # a gap of exactly the margin does not fire
        ([(99, 0.1, 1000, 0.9)], []),  # too few slice examples
        ([(200, 0.1, 99, 0.9)], []),  # too few global examples
        (
            [(200, 0.7, 1000, 0.9), (200, 0.84, 1000, 0.9), (200, 0.86, 1000, 0.9)],
            ["firing", "resolved"],
        ),  # resolves at half the margin, not before
        ([(200, 0.7, 1000, 0.9), (50, 0.9, 1000, 0.9)], ["firing"]),  # too few: state kept
        ([(200, 0.7, 1000, 0.9), (200, math.nan, 1000, 0.9)], ["firing"]),
        ([(200, 0.6, 1000, 0.65)], []),  # everything dropped alike: no slice alert
    ],
)
def test_gap_monitor(steps, statuses) -> None:
    m = SliceGapMonitor("accuracy", margin=0.1, min_samples=100)
    got = []
    for n, v, ng, g in steps:
        got += m.evaluate({"n": ng, "accuracy": g}, {3: {"n": n, "accuracy": v}})
    assert [e.status for e in got] == statuses
    assert all(e.code == 3 and e.metric == "accuracy" for e in got)
    m2 = SliceGapMonitor("accuracy", margin=0.1, min_samples=100)
    m2.restore(orjson.loads(orjson.dumps(m.snapshot())))
    assert m2.firing == m.firing


def test_gap_monitor_for_errors() -> None:
    m = SliceGapMonitor("mae", margin=1.0, min_samples=1)
    e = m.evaluate({"n": 10, "mae": 2.0}, {0: {"n": 5, "mae": 3.5}, 1: {"n": 5, "mae": 2.5}})
    assert [(x.code, x.status, x.gap) for x in e] == [(0, "firing", 1.5)]
