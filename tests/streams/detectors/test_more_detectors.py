"""Summary, chi-square, PSI, JSD, river sequential detectors, factory, FDR and alarm."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from river.drift import PageHinkley
from river.drift.binary import DDM, HDDMA, HDDMW
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, chisquare

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.detectors.base import Detection
from driftline.streams.detectors.factory import DETECTORS, build_detector
from driftline.streams.detectors.sequential import (
    DDMDetector,
    HDDMADetector,
    HDDMWDetector,
    PageHinkleyDetector,
)
from driftline.streams.detectors.windowed import (
    Chi2Detector,
    JSDDetector,
    PSIDetector,
    SummaryDetector,
)
from driftline.streams.fdr import benjamini_hochberg, bonferroni
from driftline.streams.profile import Profile

CATS = np.array(["a", "b", "c", "d", "e"], dtype=object)
P0 = [0.4, 0.25, 0.15, 0.12, 0.08]


def rebase(ds: list[Detection], off: int) -> list[Detection]:
    return [Detection(**{**d.__dict__, "index": d.index + off}) for d in ds]


def feed(det, xs, cuts) -> list[Detection]:
    out = []
    for a, b in pairwise([0, *sorted(cuts), len(xs)]):
        out += rebase(det.update_many(xs[a:b]), a)
    return out


def cat_stream(seed: int, n0: int, n1: int, p1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(CATS, n0, p=P0), rng.choice(CATS, n1, p=p1)])


# ---------------------------------------------------------------- known answers
def test_chi2_equals_scipy_contingency_and_chisquare() -> None:
    rng = np.random.default_rng(0)
    ref = rng.choice(CATS, 4_000, p=P0)
    det = Chi2Detector(reference=ref, window_size=300, stride=1)
    xs = rng.choice(CATS, 600, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    for i, x in enumerate(xs):
        det.update(x)
        if i >= 299 and i % 37 == 0:
            win = xs[i - 299 : i + 1]
            table = [[(ref == c).sum() for c in CATS], [(win == c).sum() for c in CATS]]
            exp = chi2_contingency(table)
            assert det.statistic == pytest.approx(exp.statistic, rel=1e-12)
            assert det.p_value == pytest.approx(exp.pvalue, rel=1e-9, abs=1e-300)
    # known answer (scipy docs): chisquare([16, 18, 16, 14, 12, 12]) -> 2.0, p = 0.84914503608460956
    assert chisquare([16, 18, 16, 14, 12, 12]).pvalue == pytest.approx(0.84914503608460956)
    # 2 categories: scipy's default Yates correction is reproduced
    two = np.array(["x", "y"], dtype=object)
    d2 = Chi2Detector(reference=np.repeat(two, [70, 30]), window_size=50, alpha=0.5)
    d2.update_many(np.repeat(two, [20, 30]))
    exp = chi2_contingency([[70, 30], [20, 30]])
    assert (d2.statistic, d2.p_value) == pytest.approx((exp.statistic, exp.pvalue))


def test_jsd_equals_scipy_and_psi_known_answer() -> None:
    ref = np.repeat(CATS, [40, 25, 15, 12, 8]).astype(object)
    win = np.repeat(CATS, [20, 30, 20, 20, 10]).astype(object)
    r, c = np.array([40, 25, 15, 12, 8]) / 100, np.array([20, 30, 20, 20, 10]) / 100
    jsd = JSDDetector(reference=ref, window_size=100)
    jsd.update_many(win)
    assert jsd.statistic == pytest.approx(jensenshannon(r, c), rel=1e-12)
    psi = PSIDetector(reference=ref, window_size=100)
    psi.update_many(win)
    assert psi.statistic == pytest.approx(float(((c - r) * np.log(c / r)).sum()), rel=1e-12)
    # unseen category in the window goes to "other" with a floored reference proportion
    psi2 = PSIDetector(reference=ref, window_size=4)
    psi2.update_many(np.array(["zzz"] * 4, dtype=object))
    assert psi2.statistic > 5


@pytest.mark.parametrize(
    ("cls", "river_cls", "kwargs", "stream"),
    [
        (PageHinkleyDetector, PageHinkley, {"threshold": 20.0}, "real"),
        (DDMDetector, DDM, {}, "binary"),
        (HDDMADetector, HDDMA, {}, "binary"),
        (HDDMWDetector, HDDMW, {}, "binary"),
    ],
)
def test_river_detectors_equal_river_index_for_index(cls, river_cls, kwargs, stream) -> None:
    rng = np.random.default_rng(1)
    if stream == "real":
        xs = np.concatenate([rng.normal(0, 1, 3_000), rng.normal(1.0, 1, 2_000),
                             rng.normal(-1, 1, 3_000)])  # fmt: skip
    else:
        parts = [rng.random(3_000) < p for p in (0.1, 0.35, 0.05, 0.5)]
        xs = np.concatenate(parts).astype(float)
    det = cls(**kwargs, cooldown=0)
    river_kw = dict(kwargs)
    fed = xs
    if cls is PageHinkleyDetector:  # river sees the values in units of the head's std
        river_kw = {k: getattr(det, k) for k in ("min_instances", "delta", "threshold", "alpha")}
        fed = xs / xs[: det.min_instances].std(ddof=1)
    river = river_cls(**river_kw)
    expected = []
    for i, x in enumerate(fed.tolist()):
        river.update(x)
        if river.drift_detected:
            expected.append(i)
    assert expected
    got = feed(det, xs, [1, 500, 4_444])
    assert [d.index for d in got if d.status == "firing"] == expected
    assert det.n_detections == len(expected)


# ---------------------------------------------------------------- synthetic scenarios
@pytest.mark.parametrize("seed", range(3))
def test_label_shift_class_prior_change(seed: int) -> None:
    xs = cat_stream(seed, 20_000, 5_000, [0.2, 0.2, 0.2, 0.2, 0.2])
    for det in (Chi2Detector(), PSIDetector(threshold=0.1), JSDDetector()):
        changes = det.update_many(xs)
        assert changes and changes[0].status == "firing", det.name
        assert 20_000 <= changes[0].index < 21_500, det.name


@pytest.mark.parametrize("seed", range(3))
def test_concept_drift_error_rate_rise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    errs = np.concatenate([rng.random(20_000) < 0.1, rng.random(5_000) < 0.3]).astype(float)
    for det in (
        DDMDetector(warm_start=1_000, drift_threshold=5.0),
        HDDMADetector(),
        HDDMWDetector(),
    ):
        changes = det.update_many(errs)
        firing = [c.index for c in changes if c.status == "firing"]
        # DDM's rates are cumulative since the last reset: it reacts slowly after a long past
        bound = 5_000 if det.name == "ddm" else 1_000
        assert firing and 20_000 <= firing[0] < 20_000 + bound, (det.name, firing[:3])


@pytest.mark.parametrize("seed", range(3))
def test_prediction_drift_and_covariate_summary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.beta(2, 5, 20_000), rng.beta(3, 3, 5_000)])
    det = build_detector("ks", reference=rng.beta(2, 5, 5_000))
    changes = det.update_many(scores)
    assert changes and 20_000 <= changes[0].index < 20_500
    x = np.concatenate([rng.normal(0, 1, 20_000), rng.normal(1.0, 1, 5_000)])
    summ = SummaryDetector(reference=Profile.from_values(rng.normal(0, 1, 10_000)))
    changes = summ.update_many(x)
    assert changes and 20_000 <= changes[0].index < 21_000
    assert "mean shift" in changes[0].detail


@pytest.mark.parametrize("seed", range(2))
def test_stationary_streams_have_no_alarm_with_defaults(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(5, 2, 100_000)
    x[rng.random(x.size) < 0.05] = np.nan
    assert SummaryDetector().update_many(x) == []
    c = rng.choice(CATS, 100_000, p=P0)
    for name in ("chi2", "psi", "jsd"):
        assert build_detector(name).update_many(c) == [], name
    assert PageHinkleyDetector(delta=0.25, alpha=1.0).update_many(rng.normal(0, 1, 100_000)) == []
    assert HDDMADetector().update_many((rng.random(100_000) < 0.1).astype(float)) == []


# ---------------------------------------------------------------- state
# snapshot / restore and batching of every registered detector: tests/streams/test_contract.py
def test_restore_rejects_other_params() -> None:
    with pytest.raises(DriftlineError, match="hyperparameters"):
        Chi2Detector(alpha=0.01).restore(Chi2Detector(alpha=0.02).snapshot())
    with pytest.raises(DriftlineError, match="not a 'ddm'"):
        DDMDetector().restore(HDDMADetector().snapshot())


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("summary", {"mean_shift": -1}, "mean_shift: got -1"),
        ("summary", {"std_ratio": 0.5}, "std_ratio: got 0.5; expected a number > 1"),
        ("summary", {"min_samples": 5_000}, "min_samples: got 5000"),
        ("chi2", {"alpha": 2}, "alpha: got 2"),
        ("psi", {"threshold": 0}, "threshold: got 0"),
        ("jsd", {"window_size": 0}, "window_size: got 0"),
        ("page_hinkley", {"mode": "sideways"}, "mode: got 'sideways'"),
        ("ddm", {"warm_start": 0}, "warm_start: got 0"),
        ("hddm_a", {"drift_confidence": 1.5}, "drift_confidence: got 1.5"),
        ("hddm_w", {"lambda_val": 0}, "lambda_val: got 0"),
        ("adwin", {"delta": 0}, "delta: got 0"),
        ("ks", {"nope": 1}, "nope: the ks detector has no parameter 'nope'; it takes"),
        ("kswin", {}, "type: got 'kswin'; expected one of adwin, chi2, ddm"),
    ],
)
def test_factory_and_validation(name, kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        build_detector(name, **kwargs)


def test_factory_names_and_input_domains() -> None:
    assert sorted(DETECTORS) == sorted(
        ["ks", "adwin", "summary", "chi2", "psi", "jsd", "page_hinkley", "ddm", "hddm_a", "hddm_w",
         "focus", "focus_scale", "np_focus", "focus_categorical"]
    )  # fmt: skip
    for name, cls in DETECTORS.items():
        assert build_detector(name).name == name and isinstance(build_detector(name), cls)
    with pytest.raises(DriftlineError, match="0/1 values"):
        DDMDetector().update_many(np.array([0.5]))
    with pytest.raises(DriftlineError, match=r"values in \[0.0, 1.0\]"):
        HDDMADetector().update_many(np.array([2.0]))


# ---------------------------------------------------------------- alarm and FDR
def test_alarm_hysteresis_and_cooldown() -> None:
    a = Alarm(n_confirm=2, n_clear=2, cooldown=10)
    b = np.array([1, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    assert a.feed(b, np.arange(1, 9)) == [(1, "firing"), (3, "resolved")]
    assert a.feed(np.array([True, True]), np.array([13, 14])) == [(1, "firing")]


def test_fdr_against_hand_computed_statsmodels_answers() -> None:
    # statsmodels multipletests(p, 0.05, "fdr_bh") / "bonferroni" on these p-values
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.5]
    assert benjamini_hochberg(p, 0.05).tolist() == [True, False, False, True, False, False]
    assert bonferroni(p, 0.05).tolist() == [False, False, False, True, False, False]
    # step-up: p_(3) = 0.03 <= 3 * 0.05 / 4 rejects the two smaller ones too
    assert benjamini_hochberg([0.03, 0.02, 0.035, 0.9], 0.05).tolist() == [True, True, True, False]
    assert benjamini_hochberg([None, np.nan], 0.05).tolist() == [False, False]
    with pytest.raises(SpecError, match="p_values"):
        bonferroni([1.5], 0.05)
