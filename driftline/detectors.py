"""Drift detectors for notebooks and your own services: driftline's public Python API.

Every detector the worker runs, usable on any numpy stream without Kafka (river-style: feed
values with ``update(x)`` or a batch with ``update_many(xs)``; ``drift_detected`` is true right
after the value that opened an episode, as in river, ``in_drift`` while the episode is open):

============================  =====================  ===============================================
class                         type name              watches
============================  =====================  ===============================================
`KSWindowDetector`            ``ks``                 numbers: exact Kolmogorov-Smirnov over windows
`AdwinDetector`               ``adwin``              numbers: ADWIN adaptive window (river)
`SummaryDetector`             ``summary``            numbers: mean/std/nulls/range vs a profile
`Chi2Detector`                ``chi2``               categories: chi-square homogeneity test
`PSIDetector`                 ``psi``                categories: population stability index
`JSDDetector`                 ``jsd``                categories: Jensen-Shannon distance
`PageHinkleyDetector`         ``page_hinkley``       numbers: Page-Hinkley mean change (river)
`DDMDetector`                 ``ddm``                0/1 errors: Drift Detection Method (river)
`HDDMADetector`               ``hddm_a``             errors in [0, 1]: HDDM_A (river)
`HDDMWDetector`               ``hddm_w``             errors in [0, 1]: HDDM_W (river)
`FocusDetector`               ``focus``              numbers: mean change, any size (FOCuS family)
`FocusScaleDetector`          ``focus_scale``        numbers: spread change, any size
`NPFocusDetector`             ``np_focus``           numbers: any distribution change, calibrated
`FocusCategoricalDetector`    ``focus_categorical``  categories: one share's change, calibrated
============================  =====================  ===============================================

Also public: `build_detector` (a detector from its type name and hyperparameters, as a spec's
``[[detectors]]`` entry), `DETECTORS` (the registry: type name -> class),
`register_detector`, `detector_parameters`, `DriftDetector` (the interface), `Detection` (what
``update_many`` returns: one record per state change), `INPUT_KINDS` (what a detector's
``inputs`` may be), `Profile` (a reference distribution for ``summary``, ``chi2``, ``psi``,
``jsd``, ``ks``), and the multiple-testing helpers `bonferroni`, `benjamini_hochberg` and
`bh_levels` for many tests at once. Their hyperparameters, ranges and defaults are in each
class's docstring and in the README's "Detector hyperparameters" table; an out-of-range value
raises `driftline.errors.SpecError` naming the parameter.

Everything else (``driftline.streams...``) is internal and may change between releases.

Examples
--------
>>> import numpy as np
>>> from driftline.detectors import build_detector
>>> rng = np.random.default_rng(42)
>>> det = build_detector("ks", reference_size=500, window_size=500, alpha=1e-6)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 2_000), rng.normal(0.5, 1.0, 1_000)])
>>> (change,) = det.update_many(stream)
>>> change.status, change.index, change.statistic, det.in_drift, det.drift_detected
('firing', 2311, 0.172, True, False)
"""

from __future__ import annotations

from driftline.streams.detectors.adwin import AdwinDetector
from driftline.streams.detectors.base import INPUT_KINDS, Detection, DriftDetector
from driftline.streams.detectors.factory import (
    DETECTORS,
    build_detector,
    detector_parameters,
    register_detector,
)
from driftline.streams.detectors.focus import FocusDetector, FocusScaleDetector
from driftline.streams.detectors.ks import KSWindowDetector
from driftline.streams.detectors.nonparametric import (
    FocusCategoricalDetector,
    NPFocusDetector,
)
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
from driftline.streams.fdr import benjamini_hochberg, bh_levels, bonferroni
from driftline.streams.profile import Profile

__all__ = [
    "DETECTORS",
    "INPUT_KINDS",
    "AdwinDetector",
    "Chi2Detector",
    "DDMDetector",
    "Detection",
    "DriftDetector",
    "FocusCategoricalDetector",
    "FocusDetector",
    "FocusScaleDetector",
    "HDDMADetector",
    "HDDMWDetector",
    "JSDDetector",
    "KSWindowDetector",
    "NPFocusDetector",
    "PSIDetector",
    "PageHinkleyDetector",
    "Profile",
    "SummaryDetector",
    "benjamini_hochberg",
    "bh_levels",
    "bonferroni",
    "build_detector",
    "detector_parameters",
    "register_detector",
]
