"""Profile: moments and merge, quantile sketch accuracy, categories, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import ks_2samp

from driftline.errors import DriftlineError
from driftline.streams.profile import OTHER, Profile


def test_merge_equals_profile_of_the_union() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(3, 2, 20_000), rng.exponential(1, 30_000), rng.normal(-1, 0.5, 5_000)]
    merged = Profile.from_values(parts[0]).merge(Profile.from_values(parts[1]))
    merged = merged.merge(Profile.from_values(parts[2]))
    allv = np.concatenate(parts)
    assert merged.count == allv.size
    assert merged.mean == pytest.approx(allv.mean(), rel=1e-12)
    assert merged.std == pytest.approx(allv.std(), rel=1e-10)
    assert (merged.min, merged.max) == (allv.min(), allv.max())
    # sketch after two merges: KS distance of the rebuilt sample to the data <= 2/(m-1) + 1/(2n)
    sample = merged.sample(2_000)
    assert ks_2samp(sample, allv).statistic <= 2 / 1_000 + 1 / 4_000 + 1e-3


def test_sample_accuracy_single_profile() -> None:
    data = np.random.default_rng(1).standard_t(4, 100_000)
    p = Profile.from_values(data)
    for n in (100, 1_000, 5_000):
        assert ks_2samp(p.sample(n), data).statistic <= 1 / 1_000 + 1 / (2 * n) + 1e-9


def test_nulls_empty_and_categorical() -> None:
    p = Profile.from_values(np.array([np.nan, 1.0, 2.0, np.nan]))
    assert (p.count, p.null_count, p.null_rate, p.mean) == (2, 2, 0.5, 1.5)
    empty = Profile.from_values(np.array([np.nan]))
    assert empty.merge(p).mean == 1.5 and empty.to_dict()["min"] is None
    c = Profile.from_values(np.array(["x"] * 5 + ["y"] * 3 + ["z", None], dtype=object), top_k=2)
    assert c.frequencies() == {"x": 5, "y": 3, OTHER: 1}
    both = c.merge(Profile.from_values(np.array(["z"] * 9, dtype=object), top_k=2))
    # the "z" counted in c's other stays in other: top-K is approximate across merges
    assert both.frequencies() == {"z": 9, "x": 5, OTHER: 4}
    with pytest.raises(DriftlineError, match="merge"):
        c.merge(p)
    with pytest.raises(DriftlineError, match="sample"):
        c.sample(3)


def test_json_round_trip() -> None:
    for p in (
        Profile.from_values(np.random.default_rng(2).normal(0, 1, 1_000), n_quantiles=11),
        Profile.from_values(np.array(["a", "b", "a"], dtype=object)),
        Profile.from_values(np.array([], dtype=float)),
    ):
        d = json.loads(json.dumps(p.to_dict(), allow_nan=False))
        assert Profile.from_dict(d) == p
    with pytest.raises(DriftlineError, match="kind"):
        Profile.from_dict({"kind": "image"})
