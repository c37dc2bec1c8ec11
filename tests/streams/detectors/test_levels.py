"""The false-alarm budget of every calibrated detector (issue 14 item 4): ``level_param``,
``level`` / ``set_level``, and a spec's correction over the family."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from driftline.errors import SpecError
from driftline.streams.detectors.base import Detection, check_level, level_param_of
from driftline.streams.detectors.factory import DETECTORS, build_detector

CALIBRATED = sorted(n for n, c in DETECTORS.items() if level_param_of(c) is not None)
#: Two budgets per level parameter: the constructed one and the one set later.
LEVELS = {"alpha": (1e-6, 1e-3), "false_alarms_per_million": (1.0, 1000.0)}


def stream(inputs: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if inputs == "categorical":
        cats = np.array(["a", "b", "c", "d"], dtype=object)
        return np.concatenate(
            [rng.choice(cats, 3_000, p=[0.4, 0.3, 0.2, 0.1]), rng.choice(cats, 3_000)]
        )
    return np.concatenate([rng.normal(0, 1, 3_000), rng.normal(0.3, 1.2, 3_000)])


def feed(det: Any, xs: np.ndarray, batch: int = 700) -> list[Detection]:
    out = []
    for a in range(0, len(xs), batch):
        out += [
            Detection(**{**d.__dict__, "index": d.index + a})
            for d in det.update_many(xs[a : a + batch])
        ]
    return out


def test_the_calibrated_detectors_are_known() -> None:
    assert {"ks", "chi2"} <= set(CALIBRATED)
    assert not {"adwin", "summary", "page_hinkley", "ddm"} & set(CALIBRATED)


@pytest.mark.parametrize("name", CALIBRATED)
def test_set_level_equals_constructed_with_that_level(name: str) -> None:
    cls = DETECTORS[name]
    lp = level_param_of(cls)
    base, other = LEVELS[lp]
    xs = stream(cls.inputs)
    expected = feed(build_detector(name, **{lp: other}), xs)
    assert expected, name  # the level matters on this stream
    det = build_detector(name, **{lp: base})
    assert det.level == base
    det.set_level(other)
    assert det.level == other
    assert feed(det, xs) == expected
    # the level in force is state: a snapshot keeps it, the hyperparameter stays the base one
    snap = json.loads(json.dumps(det.snapshot()))
    again = build_detector(name, **{lp: base})
    again.restore(snap)
    assert again.level == other


@pytest.mark.parametrize("name", CALIBRATED)
def test_set_level_refuses_a_level_outside_the_calibration(name: str) -> None:
    det = build_detector(name)
    lp = level_param_of(DETECTORS[name])
    with pytest.raises(SpecError, match=f"^{lp}: got -1"):
        det.set_level(-1.0)
    assert check_level(DETECTORS[name], LEVELS[lp][0]) == LEVELS[lp][0]
