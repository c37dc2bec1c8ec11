"""Build a detector from its type name and hyperparameters (spec ``[[detectors]]`` entries).

Prediction drift and label shift are not separate classes: they are these detectors applied to
the score stream (``ks``, ``summary``, ``psi``) or the label stream (``chi2``, ``psi``, ``jsd``).
Concept drift is ``ddm`` / ``hddm_a`` / ``hddm_w`` / ``page_hinkley`` on the error stream.
"""

from __future__ import annotations

from typing import Any

from driftline.errors import SpecError
from driftline.streams.detectors.adwin import AdwinDetector
from driftline.streams.detectors.base import DriftDetector
from driftline.streams.detectors.ks import KSWindowDetector
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

__all__ = ["DETECTORS", "build_detector"]

#: Detector type name -> class.
DETECTORS: dict[str, type[DriftDetector]] = {
    "ks": KSWindowDetector,
    "adwin": AdwinDetector,
    "summary": SummaryDetector,
    "chi2": Chi2Detector,
    "psi": PSIDetector,
    "jsd": JSDDetector,
    "page_hinkley": PageHinkleyDetector,
    "ddm": DDMDetector,
    "hddm_a": HDDMADetector,
    "hddm_w": HDDMWDetector,
}


def build_detector(type: str, **params: Any) -> DriftDetector:
    """A new detector of ``type`` with ``params``.

    Raises
    ------
    SpecError
        If ``type`` is unknown or a parameter is unknown / out of range.

    Examples
    --------
    >>> build_detector("ks", window_size=200, alpha=1e-4).window_size
    200
    >>> build_detector("kswin")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: type: got 'kswin'; expected one of adwin, chi2, ...
    """
    cls = DETECTORS.get(type)
    if cls is None:
        raise SpecError(f"type: got {type!r}; expected one of {', '.join(sorted(DETECTORS))}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise SpecError(f"{type}: {exc}") from exc
