"""Batch-filled histogram buckets equal prometheus_client's own, value for value."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from driftline.streams.histogram import LATENCY_BUCKETS_S, BucketCounts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_prometheus_client(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.exponential(0.05, 5000), [0.001, 0.01, 60.0, 61.0, 0.0]])
    reg = CollectorRegistry()
    h = Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS_S, registry=reg)
    for v in values.tolist():
        h.observe(v)
    ours = BucketCounts(LATENCY_BUCKETS_S)
    for chunk in np.array_split(values, 7):
        ours.add(chunk)
    samples = {
        s.labels.get("le"): s.value
        for s in next(iter(reg.collect())).samples
        if s.name == "x_seconds_bucket"
    }
    theirs = [samples[str(b)] for b in LATENCY_BUCKETS_S] + [samples["+Inf"]]
    assert ours.cumulative() == theirs
    assert ours.count == len(values)
    assert ours.total == pytest.approx(values.sum())


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([0.5] * 10, 0.5, 0.5),  # all in the first bucket [0, 1]: interpolates to 0.5
        ([1.5] * 10, 0.99, 1.0 + 0.99),  # second bucket (1, 2]
        ([5.0] * 4, 0.5, 2.0),  # beyond the last bound: the last bound, like PromQL
        ([], 0.5, float("nan")),
    ],
)
def test_quantile(values: list[float], q: float, expected: float) -> None:
    h = BucketCounts([1.0, 2.0])
    h.add(np.array(values))
    got = h.quantile(q)
    assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected)


def test_ignores_non_finite_and_rejects_bad_bounds() -> None:
    h = BucketCounts([1.0])
    h.add(np.array([np.nan, np.inf, 0.5]))
    assert h.count == 1
    with pytest.raises(ValueError):
        BucketCounts([2.0, 1.0])
