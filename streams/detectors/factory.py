"""The detector registry: every detector by its type name, and `build_detector`.

`DETECTORS` maps each type name (a spec's ``[[detectors]] type``, the class's ``name``) to its
class; `register_detector` adds one. Everything that works on "every detector" -- the spec's
parameter check, the public `driftline.detectors` module, the contract test suite
(``tests/streams/test_contract.py``) -- reads this registry, so a registered detector is
covered by all of them.

Prediction drift and label shift are not separate classes: they are these detectors applied to
the score stream (``ks``, ``summary``, ``psi``) or the label stream (``chi2``, ``psi``, ``jsd``).
Concept drift is ``ddm`` / ``hddm_a`` / ``hddm_w`` / ``page_hinkley`` on the error stream.
"""

from __future__ import annotations

from typing import Any, TypeVar

from driftline.errors import DriftlineError
from driftline.streams.detectors import adwin, focus, ks, nonparametric, sequential, windowed
from driftline.streams.detectors.base import INPUT_KINDS, DriftDetector
from driftline.streams.registry import build, constructor_parameters, lookup, register

__all__ = ["DETECTORS", "build_detector", "detector_parameters", "register_detector"]

D = TypeVar("D", bound=type[DriftDetector])

#: Detector type name -> class.
DETECTORS: dict[str, type[DriftDetector]] = {}


def register_detector(cls: D) -> D:
    """Add ``cls`` to `DETECTORS` under its ``name`` (usable as a class decorator).

    Raises
    ------
    DriftlineError
        If the name is taken by another class or ``cls.inputs`` is not one of `INPUT_KINDS`.

    Examples
    --------
    >>> register_detector(adwin.AdwinDetector) is adwin.AdwinDetector
    True
    """
    if cls.inputs not in INPUT_KINDS:
        raise DriftlineError(
            f"{cls.__name__}.inputs: got {cls.inputs!r}; expected one of {', '.join(INPUT_KINDS)}"
        )
    return register(DETECTORS, cls, "type", "detector")


for _cls in (
    ks.KSWindowDetector,
    adwin.AdwinDetector,
    windowed.SummaryDetector,
    windowed.Chi2Detector,
    windowed.PSIDetector,
    windowed.JSDDetector,
    sequential.PageHinkleyDetector,
    sequential.DDMDetector,
    sequential.HDDMADetector,
    sequential.HDDMWDetector,
    focus.FocusDetector,
    focus.FocusScaleDetector,
    nonparametric.NPFocusDetector,
    nonparametric.FocusCategoricalDetector,
):
    register_detector(_cls)


def detector_parameters(type: str) -> list[str]:
    """The hyperparameters of detector ``type``, in constructor order.

    Examples
    --------
    >>> detector_parameters("hddm_w")
    ['drift_confidence', 'warning_confidence', 'lambda_val', 'two_sided_test', 'cooldown']
    """
    return constructor_parameters(lookup(DETECTORS, "type", type))


def build_detector(type: str, **params: Any) -> DriftDetector:
    """A new detector of ``type`` with ``params``.

    Raises
    ------
    SpecError
        If ``type`` is unknown or a parameter is unknown / out of range; the message names it.

    Examples
    --------
    >>> build_detector("ks", window_size=200, alpha=1e-4).window_size
    200
    >>> build_detector("kswin")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: type: got 'kswin'; expected one of adwin, chi2, ...
    >>> build_detector("adwin", alpha=0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: alpha: the adwin detector has no parameter 'alpha'; it takes ...
    """
    return build(DETECTORS, "type", "detector", type, params)
