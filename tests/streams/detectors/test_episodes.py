"""Issue 14 fixes: one episode per sustained drift, river's `drift_detected`, one-sided error
detectors, short calibrated warm-ups, scale-free Page-Hinkley."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.streams.detectors.base import Detection
from driftline.streams.detectors.factory import build_detector
from driftline.streams.detectors.sequential import PageHinkleyDetector


def statuses(changes: list[Detection]) -> list[tuple[int, str]]:
    return [(c.index, c.status) for c in changes]


def sustained(seed: int, shift: float, scale: float, before: int, during: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, before), rng.normal(shift, scale, during)])


# ---------------------------------------------------------------- one episode per drift
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("spec", "shift", "scale"),
    [
        ({"type": "ks"}, 0.5, 1.0),
        ({"type": "ks"}, 1.0, 1.0),
        ({"type": "ks"}, 0.0, 2.0),
        ({"type": "ks", "reference_mode": "fixed", "stride": 10}, 0.5, 1.0),
        ({"type": "summary"}, 0.5, 1.0),  # right at its mean_shift threshold
        ({"type": "summary"}, 0.0, 1.5),  # right at its std_ratio threshold
        ({"type": "summary"}, 1.0, 1.0),
        ({"type": "page_hinkley"}, 0.5, 1.0),
        ({"type": "adwin"}, 1.0, 1.0),
    ],
)
def test_a_sustained_drift_is_one_open_episode(
    spec: dict[str, Any], shift: float, scale: float, seed: int
) -> None:
    params = {k: v for k, v in spec.items() if k != "type"}
    det = build_detector(spec["type"], **params)
    xs = sustained(seed, shift, scale, 5_000, 30_000)
    changes = det.update_many(xs)
    if spec["type"] in ("page_hinkley", "adwin"):
        # adaptive: they forget the old level after a detection, so the episode lasts their
        # cooldown; still exactly one
        assert [s for _, s in statuses(changes)] == ["firing", "resolved"]
        assert changes[0].index >= 5_000
        return
    assert [s for _, s in statuses(changes)] == ["firing"], statuses(changes)
    # (a shift right at summary's threshold is found late, but then it stays found)
    assert 5_000 <= changes[0].index < (7_000 if shift + scale >= 2 else 20_000)
    assert det.in_drift and not det.drift_detected


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", ["ks", "summary"])
def test_the_episode_resolves_once_the_data_are_back(dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = np.concatenate(
        [rng.normal(0, 1, 5_000), rng.normal(1, 1, 5_000), rng.normal(0, 1, 20_000)]
    )
    changes = build_detector(dtype).update_many(xs)
    assert [s for _, s in statuses(changes)] == ["firing", "resolved"]
    assert 5_000 <= changes[0].index < 6_000 and 10_000 <= changes[1].index < 14_000


def test_drift_detected_is_true_on_the_detecting_update_only() -> None:
    det = build_detector("ks")
    xs = sustained(3, 1.0, 1.0, 2_000, 3_000)
    true_at, in_drift = [], []
    for i, x in enumerate(xs.tolist()):
        det.update(x)
        if det.drift_detected:
            true_at.append(i)
        in_drift.append(det.in_drift)
    assert len(true_at) == 1 and 2_000 <= true_at[0] < 2_300
    assert not any(in_drift[: true_at[0]]) and all(in_drift[true_at[0] :])
    # batched: the flag is about the last value of the call
    det = build_detector("ks")
    (c,) = det.update_many(xs[: true_at[0] + 1])
    assert c.index == true_at[0] and det.drift_detected and det.in_drift
    assert det.update_many(xs[true_at[0] + 1 :]) == [] and not det.drift_detected


# ---------------------------------------------------------------- one-sided error detectors
def error_stream(seed: int, rates: tuple[float, ...], n: int = 6_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([(rng.random(n) < r).astype(np.float64) for r in rates])


ONE_SIDED = [
    ("adwin", {"direction": "up"}),
    ("page_hinkley", {"mode": "up"}),
    ("ddm", {}),
    ("hddm_a", {}),
    ("hddm_w", {}),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("dtype", "params"), ONE_SIDED)
def test_one_sided_error_detectors_ignore_a_falling_error(
    dtype: str, params: dict[str, Any], seed: int
) -> None:
    # an online model warming up: its error falls from 40% to 10% at 6,000
    xs = error_stream(seed, (0.4, 0.1))
    changes = build_detector(dtype, **params).update_many(xs)
    assert not [c.index for c in changes if c.status == "firing" and c.index >= 6_000]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("dtype", "params"), ONE_SIDED)
def test_one_sided_error_detectors_find_a_rising_error(
    dtype: str, params: dict[str, Any], seed: int
) -> None:
    xs = error_stream(seed, (0.1, 0.3))
    changes = build_detector(dtype, **params).update_many(xs)
    firings = [c.index for c in changes if c.status == "firing" and c.index >= 6_000]
    assert firings and firings[0] < 6_000 + 1_000, firings


@pytest.mark.parametrize("seed", range(3))
def test_two_sided_adwin_fires_on_the_falling_error(seed: int) -> None:
    xs = error_stream(seed, (0.4, 0.1))
    changes = build_detector("adwin", direction="both").update_many(xs)
    assert changes and 6_000 <= changes[0].index < 6_500


# ---------------------------------------------------------------- warm-up
@pytest.mark.parametrize(
    ("dtype", "first_test"), [("ks", 550), ("summary", 1_100), ("chi2", 1_100)]
)
def test_first_test_comes_after_a_short_warm_up(dtype: str, first_test: int) -> None:
    rng = np.random.default_rng(0)
    if dtype == "chi2":
        xs = rng.choice(np.array(["a", "b", "c"], dtype=object), 2_000)
    else:
        xs = rng.normal(0, 1, 2_000)
    det = build_detector(dtype)
    det.update_many(xs[: first_test - 1])
    assert det.n_evaluations == 0
    det.update_many(xs[first_test - 1 : first_test])
    assert det.n_evaluations == 1


@pytest.mark.parametrize(
    ("dtype", "dist"), [("ks", "lognormal"), ("ks", "normal"), ("summary", "normal")]
)
def test_the_warm_up_keeps_the_calibration(dtype: str, dist: str) -> None:
    # 300 stationary streams just past their warm-up (the windows still growing): no alarm.
    # (summary's fixed thresholds assume light tails; KS is distribution-free)
    det_alarms = 0
    for seed in range(300):
        xs = getattr(np.random.default_rng(seed), dist)(0, 1, 1_600)
        det_alarms += len(build_detector(dtype).update_many(xs))
    assert det_alarms == 0


@pytest.mark.parametrize("seed", range(3))
def test_summary_warm_up_finds_a_large_shift_early(seed: int) -> None:
    xs = sustained(seed, 2.0, 1.0, 1_000, 1_000)
    (c,) = build_detector("summary").update_many(xs)
    assert c.status == "firing" and 1_000 <= c.index < 1_200


# ---------------------------------------------------------------- Page-Hinkley scale-free
@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (1e-3, 5.0), (250.0, -1e4), (7.0, 3.0)])
def test_page_hinkley_detections_do_not_depend_on_the_units(a: float, b: float) -> None:
    rng = np.random.default_rng(5)
    xs = np.concatenate(
        [rng.normal(0, 1, 4_000), rng.normal(0.5, 1, 2_000), rng.normal(0, 1, 4_000)]
    )
    base = statuses(PageHinkleyDetector(cooldown=100).update_many(xs))
    assert base and base[0][0] >= 4_000
    got = statuses(PageHinkleyDetector(cooldown=100).update_many(a * xs + b))
    assert got == base


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_page_hinkley_defaults_stay_quiet_on_stationary_streams_of_any_scale(scale: float) -> None:
    rng = np.random.default_rng(int(scale * 10) % 97)
    assert PageHinkleyDetector().update_many(rng.normal(100.0, scale, 100_000)) == []
