"""np_focus and focus_categorical: statistics against brute force and scipy, distribution-free
behaviour, calibration at a raised rate, episodes, edge cases (ties, constants, nulls, unseen
categories), snapshots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency, norm

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.binscan import (
    MAX_WINDOW,
    WINDOWS,
    g_bernoulli,
    g_multinomial,
    threshold_for,
)
from driftline.streams.detectors.factory import build_detector
from driftline.streams.detectors.nonparametric import (
    BERNOULLI_TABLE,
    NP_FOCUS_TABLE,
    FocusCategoricalDetector,
    NPFocusDetector,
)


def loglik(counts: np.ndarray) -> float:
    """Maximised multinomial log likelihood of counts (brute force, from the definition)."""
    n = counts.sum()
    return float(sum(c * math.log(c / n) for c in counts.tolist() if c > 0))


def g_brute(a: np.ndarray, b: np.ndarray) -> float:
    return loglik(a) + loglik(b) - loglik(a + b)


# --------------------------------------------------------------------------- the ratios
@pytest.mark.parametrize("seed", range(6))
def test_g_multinomial_is_half_scipys_g_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 50, 6)
    b = rng.integers(1, 500, 6)
    a[seed % 6] = 0  # an empty cell
    got = float(g_multinomial(a, np.array(a.sum()), b, np.array(b.sum())))
    stat = chi2_contingency([a, b], lambda_="log-likelihood", correction=False)[0]
    assert got == pytest.approx(stat / 2, rel=1e-9, abs=1e-9)
    assert got == pytest.approx(g_brute(a, b), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("a", "b"),
    [([36, 64], [300, 700]), ([0, 16], [50, 950]), ([16, 0], [0, 1000]), ([5, 5], [5, 5])],
)
def test_g_bernoulli_per_bin_against_brute_force(a: list[int], b: list[int]) -> None:
    a3, b3 = np.array([*a, 0]), np.array([*b, 7])  # a third bin: each against the rest
    got = g_bernoulli(a3, np.array(a3.sum()), b3, np.array(b3.sum()))
    for j in range(3):
        two_a = np.array([a3[j], a3.sum() - a3[j]])
        two_b = np.array([b3[j], b3.sum() - b3[j]])
        assert got[j] == pytest.approx(g_brute(two_a, two_b), abs=1e-9)


def test_threshold_tables_fall_with_the_rate_and_interpolate_log_linearly() -> None:
    for table in (NP_FOCUS_TABLE, BERNOULLI_TABLE):
        rates = [r for r, _ in table]
        hs = [h for _, h in table]
        assert rates == sorted(rates) and hs == sorted(hs, reverse=True)
        assert threshold_for(rates[0], table) == hs[0]
        mid = math.sqrt(rates[0] * rates[1])
        assert threshold_for(mid, table) == pytest.approx((hs[0] + hs[1]) / 2)


# --------------------------------------------------------------------------- np_focus
def brute_np_statistic(xs: np.ndarray, warmup: int) -> list[float]:
    """np_focus's statistic after each value, from its definition (no alarm yet)."""
    s = np.sort(xs[:warmup])
    ranks = [math.ceil(k * warmup / 16) - 1 for k in range(1, 16)]
    edges = np.unique(s[ranks])
    bins = np.searchsorted(edges, xs, side="left")
    n_bins = edges.size + 1
    out = []
    for t in range(warmup + 1, xs.size + 1):
        best = -math.inf
        for w in WINDOWS.tolist():
            if w <= t and t - w >= warmup:
                a = np.bincount(bins[t - w : t], minlength=n_bins)
                b = np.bincount(bins[: t - w], minlength=n_bins)
                best = max(best, g_brute(a, b))
        out.append(best)
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.normal(0, 1, 400),
        lambda rng: rng.poisson(2.0, 400).astype(float),  # ties
        lambda rng: np.round(rng.normal(0, 1, 400), 1),
    ],
    ids=["normal", "poisson", "rounded"],
)
def test_np_focus_statistic_equals_brute_force_after_every_value(make) -> None:  # type: ignore[no-untyped-def]
    xs = make(np.random.default_rng(5))
    det = NPFocusDetector(warmup=40, false_alarms_per_million=0.001)  # no alarm here
    want = brute_np_statistic(xs, 40)
    got = []
    for x in xs.tolist():
        assert det.update_many(np.array([x])) == []
        got.append(det.statistic)
    assert all(math.isnan(g) for g in got[: 40 + 16 - 1])  # no window yet
    for g, w in zip(got[40:], want, strict=True):
        if w > -math.inf:
            assert g == pytest.approx(w, abs=1e-8)
    assert det.n_evaluations == sum(w > -math.inf for w in want)


def test_np_focus_is_distribution_free_on_continuous_streams() -> None:
    """Monotone transforms of the same values give the same detections, state and statistic."""
    u = np.random.default_rng(11).random(30_000)
    u[20_000:] = u[20_000:] ** 1.3  # a shape change of the uniform
    runs = []
    for xs in (u, norm.ppf(u), np.exp(3 * norm.ppf(u)), -1.0 / u):  # the last is increasing
        det = NPFocusDetector()
        found = det.update_many(xs)
        runs.append(([(d.index, d.statistic, d.status, d.n_current) for d in found], det.statistic))
    assert runs[0][0] and all(r == runs[0] for r in runs)


def bimodal(rng: np.random.Generator, n: int, a: float = 0.9) -> np.ndarray:
    """Mean 0, variance 1, modes at +-a."""
    return rng.choice([-a, a], n) + rng.normal(0.0, math.sqrt(1 - a * a), n)


@pytest.mark.parametrize("seed", range(3))
def test_np_focus_finds_a_shape_change_with_equal_mean_and_variance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    det = NPFocusDetector()
    assert det.update_many(rng.normal(0, 1, 5_000)) == []
    (d,) = det.update_many(bimodal(rng, 3_000))
    assert d.status == "firing" and d.index < 400
    assert d.n_reference + d.n_current == 5_000 + d.index + 1  # the window, all before it


def test_one_sustained_drift_is_one_episode_that_resolves_after_the_return() -> None:
    rng = np.random.default_rng(2)
    det = NPFocusDetector()
    xs = np.concatenate(
        [rng.normal(0, 1, 3_000), rng.normal(0.5, 1, 40_000), rng.normal(0, 1, 6_000)]
    )
    found = det.update_many(xs)
    assert [d.status for d in found] == ["firing", "resolved"]
    fire, resolve = found
    assert 3_000 <= fire.index < 3_300
    assert fire.n_reference + fire.n_current == fire.index + 1  # the window, all before it
    assert abs(fire.n_reference - 3_000) < 100  # the change's estimated start
    assert 43_000 <= resolve.index < 43_000 + MAX_WINDOW + 100
    assert det.n_reference == fire.n_reference + (
        det.n_seen - resolve.index - 1
    )  # the episode's values never joined it


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("uniform", lambda rng, n: rng.random(n)),
        ("poisson", lambda rng, n: rng.poisson(3.0, n).astype(float)),
        ("tied", lambda rng, n: rng.choice([0.0, 1.0, 2.0], n, p=[0.85, 0.1, 0.05])),
    ],
)
def test_np_focus_calibration_at_a_raised_rate(name: str, make) -> None:  # type: ignore[no-untyped-def]
    """At 1000 false alarms per 10^6 values the measured rate is within its 99.9% interval
    (continuous streams), or below it (ties merge bins: conservative)."""
    rng = np.random.default_rng(1)
    n, streams = 50_000, 4
    alarms = 0
    for _ in range(streams):
        det = NPFocusDetector(false_alarms_per_million=1000)
        alarms += sum(d.status == "firing" for d in det.update_many(make(rng, n)))
    expected = n * streams * 1e-3  # 200
    hi = expected + 3.3 * math.sqrt(expected)
    assert alarms <= hi, (name, alarms)
    if name == "uniform":
        assert alarms >= expected - 3.3 * math.sqrt(expected), alarms


@pytest.mark.parametrize(
    ("xs", "n_bins"),
    [
        (np.full(500, 3.0), 2),  # constant: one edge, everything in the lower bin
        (np.tile([0.0, 1.0], 250), 3),  # edges 0 and 1: (-inf, 0], (0, 1], (1, inf)
        (np.array([np.nan, np.inf, -np.inf] * 10 + [1.0] * 470), 2),  # non-finite skipped
    ],
    ids=["constant", "two-values", "non-finite"],
)
def test_np_focus_ties_and_constants_never_fire(xs: np.ndarray, n_bins: int) -> None:
    det = NPFocusDetector(warmup=16)
    assert det.update_many(xs) == []
    assert len(det.edges) + 1 == n_bins
    assert det.statistic < 0.1  # odd windows of 0, 1, 0, 1, ... differ by one value
    assert det.n_seen == int(np.isfinite(xs).sum())


def test_np_focus_fires_when_a_constant_stream_moves() -> None:
    det = NPFocusDetector(warmup=16)
    (d,) = det.update_many(np.concatenate([np.full(500, 3.0), np.full(100, 4.0)]))
    assert d.status == "firing" and d.index < 520
    assert d.detail.startswith("share of values in (-inf, 3]: 1.000 -> 0.")


# --------------------------------------------------------------------------- focus_categorical
def brute_cat_statistic(xs: list[str], warmup: int, cats: list[str]) -> list[float]:
    code = {c: i for i, c in enumerate(cats)}
    bins = np.array([code.get(x, len(cats)) for x in xs])
    k = len(cats) + 1
    out = []
    for t in range(warmup + 1, len(xs) + 1):
        best = -math.inf
        for w in FocusCategoricalDetector.windows.tolist():
            if w <= t and t - w >= warmup:
                a = np.bincount(bins[t - w : t], minlength=k)
                b = np.bincount(bins[: t - w], minlength=k)
                for j in range(k):
                    two_a = np.array([a[j], w - a[j]])
                    two_b = np.array([b[j], t - w - b[j]])
                    best = max(best, g_brute(two_a, two_b))
        out.append(best)
    return out


def test_focus_categorical_statistic_equals_brute_force_and_names_categories() -> None:
    rng = np.random.default_rng(4)
    xs = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), 300, p=[0.5, 0.3, 0.15, 0.05])
    det = FocusCategoricalDetector(warmup=50, max_categories=2, false_alarms_per_million=0.001)
    got = []
    for x in xs.tolist():
        assert det.update_many([x]) == []
        got.append(det.statistic)
    cats = det.categories
    assert cats == ["a", "b"]  # the two most frequent; c and d are "(other)"
    want = brute_cat_statistic(list(xs), 50, cats)
    for g, w in zip(got[50:], want, strict=True):
        if w > -math.inf:
            assert g == pytest.approx(w, abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_focus_categorical_finds_a_share_change_of_six_points(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cats = np.array(["a", "b", "c", "d"], dtype=object)
    det = FocusCategoricalDetector()
    assert det.update_many(rng.choice(cats, 30_000, p=[0.3, 0.3, 0.2, 0.2])) == []
    rest = 0.64 / 0.7
    found = det.update_many(rng.choice(cats, 6_000, p=[0.36, 0.3 * rest, 0.2 * rest, 0.2 * rest]))
    assert [d.status for d in found] == ["firing"]
    assert found[0].index < 3_000 and found[0].detail.startswith("share of 'a': 0.")


class _Short(FocusCategoricalDetector):
    """`focus_categorical` with `np_focus`'s windows (16 ... 4,096): what it was before."""

    max_window = MAX_WINDOW
    windows = WINDOWS


def _late_change() -> tuple[np.ndarray, int]:
    """A share 0.30 -> 0.36 whose pre-change share came out high (0.314): the likelihood ratio
    climbs so slowly that the change is older than 4,096 values before it is clear."""
    cats = np.array(list("abcde"), dtype=object)
    shares = np.array([0.30, 0.25, 0.20, 0.15, 0.10])
    after = np.concatenate([[0.36], shares[1:] * 0.64 / 0.70])
    rng = np.random.default_rng([99, 11])
    pre = 5_000 + int(rng.integers(0, 1_000))
    xs = np.concatenate([rng.choice(cats, pre, p=shares), rng.choice(cats, 12_000, p=after)])
    return xs, pre


def test_focus_categorical_finds_a_change_older_than_4096_values() -> None:
    """With windows to 16,384 the change is found 11,582 values after it; with windows to
    4,096 the reference absorbs the changed values and it is never found."""
    assert FocusCategoricalDetector.windows[-1] == 16_384 and len(_Short.windows) == 17
    xs, pre = _late_change()
    (d,) = FocusCategoricalDetector().update_many(xs)
    assert (d.status, d.index - pre) == ("firing", 11_582)
    assert d.n_current == 11_585 and d.detail == "share of 'a': 0.315 -> 0.358"
    assert _Short().update_many(xs) == []


def test_a_snapshot_with_a_shorter_ring_restores_and_waits_for_the_longer_windows() -> None:
    """A snapshot taken with 4,096-value windows (before they reached 16,384): the restored
    detector goes on exactly as the short one until its ring holds more than 4,096 values
    (a window of 5,793 needs 1,697 more), then compares the longer windows too."""
    xs, _ = _late_change()
    short = _Short()
    short.update_many(xs[:9_000])
    snap = json.loads(json.dumps(short.snapshot()))
    assert len(snap["ring"]) == 4_096 and snap["run"] > 4_096
    long, again = FocusCategoricalDetector(), _Short()
    long.restore(snap)
    again.restore(snap)
    for x in xs[9_000:10_696].tolist():  # 1,696 values: no window longer than 4,096 fits yet
        long.update_many([x])
        again.update_many([x])
        assert long.statistic == again.statistic
    assert len(long.snapshot()["ring"]) == 4_096 + 1_696
    long.update_many(xs[10_696:10_697])
    again.update_many(xs[10_696:10_697])
    assert long.statistic >= again.statistic  # the 5,793-value window counts from here


def test_focus_categorical_nulls_are_skipped_and_unseen_categories_are_other() -> None:
    det = FocusCategoricalDetector(warmup=20)
    xs: list[object] = ["x", None, "y", float("nan")] * 100
    assert det.update_many(np.array(xs, dtype=object)) == []
    assert det.n_seen == 200 and det.categories == ["x", "y"]
    (d,) = det.update_many(["z"] * 10)
    assert d.status == "firing" and d.detail.startswith("share of '(other)': 0.000 -> 0.")
    assert d.index < 16


def test_focus_categorical_numbers_and_booleans_are_categories() -> None:
    det = FocusCategoricalDetector(warmup=16)
    det.update_many(np.array([1, 2, True] * 10, dtype=object))
    assert det.categories == ["1", "2", "True"]


@pytest.mark.parametrize("seed", range(2))
def test_focus_categorical_calibration_at_a_raised_rate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cats = np.array(list("abcde"), dtype=object)
    alarms, n, streams = 0, 50_000, 3
    for _ in range(streams):
        det = FocusCategoricalDetector(false_alarms_per_million=1000)
        xs = rng.choice(cats, n, p=[0.4, 0.3, 0.2, 0.08, 0.02])
        alarms += sum(d.status == "firing" for d in det.update_many(xs))
    expected = n * streams * 1e-3
    assert alarms <= expected + 3.3 * math.sqrt(expected), alarms  # Bonferroni: at most


# --------------------------------------------------------------------------- parameters, state
@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("np_focus", {"warmup": 15}, "warmup: got 15; expected an integer between 16 and"),
        ("np_focus", {"false_alarms_per_million": 0.0},
         "false_alarms_per_million: got 0.0; expected a number in [0.001, 1000]"),
        ("focus_categorical", {"max_categories": 0},
         "max_categories: got 0; expected an integer between 1 and 60"),
    ],
)  # fmt: skip
def test_bad_parameters(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as e:
        build_detector(name, **params)
    assert str(e.value).startswith(message)


def test_snapshot_is_small_plain_json_and_refuses_tampering() -> None:
    rng = np.random.default_rng(0)
    det = NPFocusDetector()
    det.update_many(rng.normal(0, 1, 20_000))
    snap = json.loads(json.dumps(det.snapshot(), allow_nan=False))
    assert len(snap["ring"]) == MAX_WINDOW and len(json.dumps(snap)) < 6_000
    other = NPFocusDetector()
    other.restore(snap)
    assert other.snapshot() == det.snapshot()
    for key, bad in (("reference", [1, 2]), ("ring", "~~~"), ("span", 7), ("run", "x")):
        with pytest.raises(DriftlineError, match="state: malformed 'np_focus' detector snapshot"):
            NPFocusDetector().restore({**snap, key: bad})
    with pytest.raises(DriftlineError, match="hyperparameters"):
        NPFocusDetector(warmup=50).restore(snap)
