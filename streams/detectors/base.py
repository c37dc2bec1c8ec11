"""The drift detector interface shared by every detector in `streams.detectors`.

A detector consumes a univariate stream, one value (`DriftDetector.update`) or a batch
(`DriftDetector.update_many`) at a time, and reports state changes as `Detection` records:
``"firing"`` when drift is detected (an episode opens), ``"resolved"`` when it is over (the
episode closes). Non-finite inputs (NaN, and also +-inf) are skipped: they neither count in
`DriftDetector.n_seen` nor move any window.

Two read-only flags, as in river: `DriftDetector.drift_detected` is True only right after the
value that opened an episode (river's meaning: true on the detecting update, false on the next
one), and `DriftDetector.in_drift` is True for the whole episode, from its ``"firing"`` to its
``"resolved"``. So one sustained drift makes ``drift_detected`` true on exactly one update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ClassVar, Literal

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.params import float_param, int_param, probability_param, show
from driftline.streams.registry import constructor_parameters
from driftline.streams.snapshots import check_snapshot

__all__ = [
    "FIRING",
    "INPUT_KINDS",
    "RESOLVED",
    "AdjustableLevel",
    "AdjustableRate",
    "AlarmedDetector",
    "Detection",
    "DriftDetector",
    "FlaggedDetector",
    "alpha_param",
    "check_level",
    "finite_values",
    "level_param_of",
    "min_samples_param",
]

FIRING: Literal["firing"] = "firing"
RESOLVED: Literal["resolved"] = "resolved"

#: What a detector's `DriftDetector.update` accepts (its ``inputs``): ``"real"`` any number
#: (non-finite ones skipped), ``"binary"`` 0/1 (a classifier's errors), ``"unit_interval"``
#: numbers in [0, 1] (errors scaled into [0, 1]), ``"categorical"`` strings (None/NaN = null).
INPUT_KINDS: tuple[str, ...] = ("real", "binary", "unit_interval", "categorical")


@dataclass(frozen=True)
class Detection:
    """One state change of a detector.

    Attributes
    ----------
    index
        Position, in the array given to `DriftDetector.update_many`, of the value that caused
        the change (0 for `DriftDetector.update`).
    statistic
        The test statistic (KS D, ADWIN mean difference).
    p_value
        p-value for statistical tests, None otherwise.
    threshold
        ``alpha`` for tests, ``delta`` for ADWIN.
    n_reference, n_current
        Sizes of the two samples compared.
    status
        ``"firing"`` or ``"resolved"``.
    detail
        What was beyond its threshold, in words (summary checks); empty otherwise.

    Examples
    --------
    >>> from driftline.streams.detectors.ks import KSWindowDetector
    >>> rng = np.random.default_rng(1)
    >>> det = KSWindowDetector(reference_size=200, window_size=200, alpha=1e-4, stride=10)
    >>> (d,) = det.update_many(np.concatenate([rng.normal(0, 1, 600), rng.normal(1, 1, 200)]))
    >>> d.status, d.index, d.statistic, f"{d.p_value:.2e}", d.threshold, d.n_current
    ('firing', 679, 0.24, '1.83e-05', 0.0001, 200)
    """

    index: int
    statistic: float
    p_value: float | None
    threshold: float
    n_reference: int
    n_current: int
    status: str
    detail: str = ""


def finite_values(xs: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Finite values of ``xs`` as float64 and their positions in ``xs``.

    Examples
    --------
    >>> vals, pos = finite_values(np.array([1.0, np.nan, 3.0, np.inf]))
    >>> vals.tolist(), pos.tolist()
    ([1.0, 3.0], [0, 2])
    """
    arr = np.asarray(xs, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    elif arr.ndim != 1:
        raise DriftlineError(f"xs: got shape {arr.shape}; expected a 1-D array of numbers")
    ok = np.isfinite(arr)
    if ok.all():
        return arr, np.arange(arr.shape[0])
    pos = np.flatnonzero(ok)
    return arr[pos], pos


class DriftDetector(ABC):
    """Base class of univariate drift detectors (river-like).

    Subclasses implement `update_many`, the read-only state properties (`in_drift`, ...) and
    `snapshot` / `restore`; `update` is `update_many` on a one-element batch, so feeding a
    stream value by value or in batches of any sizes gives the same detections (at positions
    relative to each batch) and the same state. `drift_detected` is kept here: every subclass's
    ``update_many`` is wrapped (``__init_subclass__``) to note whether the last value of the
    call opened an episode.

    Attributes
    ----------
    name
        The detector's type name (``[[detectors]] type`` in a spec, key of
        `streams.detectors.factory.DETECTORS`).
    inputs
        The values it accepts, one of `INPUT_KINDS`.

    Examples
    --------
    >>> from driftline.streams.detectors.ks import KSWindowDetector
    >>> rng = np.random.default_rng(0)
    >>> det = KSWindowDetector(reference_size=20, window_size=20, stride=5)
    >>> det.update(float("nan"))
    >>> det.n_seen, det.drift_detected
    (0, False)
    >>> for x in rng.normal(0.0, 1.0, 40):
    ...     det.update(x)
    >>> det.n_seen, det.n_evaluations, round(det.statistic, 2)
    (40, 1, 0.2)
    """

    name: ClassVar[str]
    inputs: ClassVar[str] = "real"
    _detected_last: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("update_many")
        if own is not None and not getattr(own, "_notes_detection", False):
            cls.update_many = _noting_detection(own)  # type: ignore[method-assign]

    def update(self, x: float) -> None:
        """Consume one value (skipped if not finite); same as ``update_many(np.array([x]))``."""
        self.update_many(np.array([x], dtype=np.float64))

    @abstractmethod
    def update_many(self, xs: np.ndarray) -> list[Detection]:
        """Consume a batch in order and return the state changes it caused, in order."""

    @property
    def drift_detected(self) -> bool:
        """True iff the last value given to the last ``update`` / ``update_many`` call opened
        an episode (a ``"firing"`` `Detection`): river's meaning, true on the detecting update
        only. The same whether the stream is fed value by value or in batches."""
        return self._detected_last

    @property
    @abstractmethod
    def in_drift(self) -> bool:
        """True while an episode is open: from a ``"firing"`` to the next ``"resolved"``."""

    @property
    @abstractmethod
    def statistic(self) -> float:
        """Statistic of the last evaluation (NaN before the first)."""

    @property
    @abstractmethod
    def p_value(self) -> float | None:
        """p-value of the last evaluation (None before the first or if not applicable)."""

    @property
    @abstractmethod
    def n_seen(self) -> int:
        """Number of (finite) values consumed."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """State as plain data; ``restore(snapshot())`` continues exactly."""

    def _params(self) -> dict[str, Any]:
        """The hyperparameters a snapshot records and ``restore`` checks: by default every
        constructor argument, in order, as the attribute of the same name holds it."""
        return {name: getattr(self, name) for name in constructor_parameters(type(self))}

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Replace this detector's state by a `snapshot` taken with the same hyperparameters."""


class _CountingDetector(DriftDetector):
    """A detector that keeps its last statistic and its count of values consumed as
    ``_statistic`` and ``_n_seen``: `AlarmedDetector` and `FlaggedDetector`."""

    _statistic: float
    _n_seen: int

    @property
    def statistic(self) -> float:
        """Statistic of the last evaluation (NaN before the first)."""
        return self._statistic

    @property
    def n_seen(self) -> int:
        """Values consumed (see the class docstring for which count)."""
        return self._n_seen


class AlarmedDetector(_CountingDetector):
    """A detector that evaluates a statistic now and then and fires / resolves through an
    `streams.detectors.alarm.Alarm` (``_alarm``): the read-only state of KS and the windowed
    detectors."""

    _alarm: Alarm
    _n_eval: int

    @property
    def in_drift(self) -> bool:
        """True between a firing and the following resolution."""
        return self._alarm.firing

    @property
    def n_evaluations(self) -> int:
        """Evaluations (tests) so far."""
        return self._n_eval


class FlaggedDetector(_CountingDetector):
    """A detector that keeps its own episode flag (``_firing``) and compares its statistic with
    a bound or a calibrated threshold, not a p-value: the read-only state of the river wrappers
    and the FOCuS detectors (their docstrings say what the statistic is and when they resolve).
    """

    _firing: bool

    @property
    def in_drift(self) -> bool:
        """True from a firing until the detector resolves (see its docstring for when)."""
        return self._firing

    @property
    def p_value(self) -> float | None:
        """Always None: a bound or a calibrated threshold, not a test with a p-value."""
        return None


def _batch_length(xs: Any) -> int:
    try:
        return len(xs)
    except TypeError:  # a scalar or a 0-d array
        return 1


def _noting_detection(update_many: Callable[..., list[Detection]]) -> Callable[..., Any]:
    """``update_many`` that also records `DriftDetector.drift_detected` for the call."""

    @wraps(update_many)
    def wrapper(self: DriftDetector, xs: Any, *args: Any, **kwargs: Any) -> list[Detection]:
        out = update_many(self, xs, *args, **kwargs)
        last = _batch_length(xs) - 1
        self._detected_last = bool(out) and any(d.status == FIRING and d.index == last for d in out)
        return out

    wrapper._notes_detection = True  # type: ignore[attr-defined]
    return wrapper


def check_state_params(name: str, state: dict[str, Any], params: dict[str, Any]) -> None:
    """Raise `DriftlineError` unless ``state`` is a ``name`` snapshot taken with ``params``."""
    check_snapshot(state, name, params, key="detector", what=detector_noun(name))


def detector_noun(name: str) -> str:
    """How messages name a snapshot of detector ``name``: ``'ks' detector``."""
    return f"{name!r} detector"


def alpha_param(value: object) -> float:
    """A significance level: a number strictly between 0 and 1 (`SpecError` otherwise).

    Examples
    --------
    >>> alpha_param(1e-6)
    1e-06
    >>> alpha_param(2.0)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: alpha: got 2.0; expected a number strictly between 0 and 1
    """
    return probability_param("alpha", value)


def min_samples_param(min_samples: object, window_size: int) -> int:
    """``min_samples`` of a detector on a sliding window of ``window_size`` values: an integer in
    ``[1, window_size]``, None for ``window_size`` (`SpecError` otherwise).

    Examples
    --------
    >>> min_samples_param(None, 500), min_samples_param(100, 500)
    (500, 100)
    >>> min_samples_param(600, 500)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: min_samples: got 600; expected at most window_size (500)
    """
    m = int_param("min_samples", window_size if min_samples is None else min_samples, 1)
    if m > window_size:
        raise SpecError(
            f"min_samples: got {show(min_samples)}; expected at most window_size ({window_size})"
        )
    return m


class AdjustableLevel:
    """The significance level of a test-based detector (KS, chi2), changeable between updates.

    The constructor's ``alpha`` (``_base_alpha``) stays the hyperparameter that ``restore``
    checks; the level in force (``_alpha``) is state: it round-trips through ``snapshot`` and
    is what `Detection.threshold` reports.

    The false-alarm budget of a detector, generically: every detector whose false alarms are
    calibrated has a class attribute ``level_param`` naming the constructor parameter that sets
    its budget -- ``"alpha"`` (a significance level per test; here) or
    ``"false_alarms_per_million"`` (`AdjustableRate`) -- and ``level`` / ``set_level`` to read and
    change the budget in force. A spec's ``[drift] correction`` divides that parameter by the
    number m of such detectors in the pipeline (Bonferroni: by the union bound the pipeline's
    false alarms per 10^6 events stay within one detector's budget); Benjamini-Hochberg moves
    the levels of the detectors whose level is a p-value level (``level_is_p_value``) between
    batches (`streams.fdr.bh_levels`).
    """

    #: The constructor parameter that sets the false-alarm budget.
    level_param: ClassVar[str] = "alpha"
    #: True: the level is compared with p-values (Benjamini-Hochberg can move it).
    level_is_p_value: ClassVar[bool] = True

    _alpha: float
    _base_alpha: float

    @property
    def level(self) -> float:
        """The false-alarm budget in force (here ``alpha``)."""
        return self._alpha

    def set_level(self, value: float) -> None:
        """Change the budget in force (here `set_alpha`)."""
        self.set_alpha(value)

    def _init_alpha(self, alpha: object) -> None:
        self._base_alpha = self._alpha = alpha_param(alpha)

    @property
    def alpha(self) -> float:
        """Significance level in force: the constructor's ``alpha`` or the last `set_alpha`."""
        return self._alpha

    def set_alpha(self, alpha: float) -> None:
        """Test the next evaluations at level ``alpha`` (in (0, 1)).

        From the next ``update_many`` on, decisions are exactly those of a detector constructed
        with this ``alpha`` (the alarm's hysteresis counts carry over).

        Raises
        ------
        SpecError
            If ``alpha`` is not a number strictly between 0 and 1.

        Examples
        --------
        >>> from driftline.streams.detectors.ks import KSWindowDetector
        >>> det = KSWindowDetector(alpha=1e-6)
        >>> det.set_alpha(0.01)
        >>> det.alpha, det.snapshot()["alpha"], det.snapshot()["params"]["alpha"]
        (0.01, 0.01, 1e-06)
        """
        self._alpha = alpha_param(alpha)

    def _saved_alpha(self, state: dict[str, Any]) -> float:
        """The level in force stored in ``state`` (older snapshots have none: the base one)."""
        return alpha_param(state.get("alpha", self._base_alpha))


class AdjustableRate:
    """A detector calibrated to ``false_alarms_per_million`` (alarms per 10^6 values of a
    stationary stream), changeable between updates: the rate counterpart of `AdjustableLevel`.

    The constructor's ``false_alarms_per_million`` stays the hyperparameter that ``restore``
    checks; the rate in force (``_rate``, what thresholds are computed from) is state: subclasses
    save it in their snapshot (``"rate"``) and load it with `_saved_rate`. Scaling the rate by
    ``1 / m`` is how a spec's Bonferroni correction splits one budget over m detectors.
    """

    level_param: ClassVar[str] = "false_alarms_per_million"
    level_is_p_value: ClassVar[bool] = False
    #: The rates the detector's calibration covers (inclusive).
    rate_range: ClassVar[tuple[float, float]] = (1e-6, 1e6)

    false_alarms_per_million: float
    _rate: float

    def _init_rate(self, value: object) -> None:
        self.false_alarms_per_million = self._rate = self._rate_param(value)

    def _rate_param(self, value: object) -> float:
        return check_level(type(self), value)

    @property
    def level(self) -> float:
        """False alarms per 10^6 values in force: the constructor's or the last `set_level`."""
        return self._rate

    def set_level(self, value: float) -> None:
        """Calibrate the next updates to ``value`` false alarms per 10^6 values.

        Raises
        ------
        SpecError
            If ``value`` is outside the calibrated `rate_range`.
        """
        self._rate = self._rate_param(value)

    def _saved_rate(self, state: dict[str, Any]) -> float:
        """The rate in force stored in ``state`` (older snapshots have none: the base one)."""
        return self._rate_param(state.get("rate", self.false_alarms_per_million))


def level_param_of(cls: type) -> str | None:
    """The constructor parameter that sets ``cls``'s false-alarm budget, None if it has none
    (its false alarms are not calibrated: thresholds in the data's units, river's defaults).

    Examples
    --------
    >>> from driftline.streams.detectors.ks import KSWindowDetector
    >>> from driftline.streams.detectors.adwin import AdwinDetector
    >>> level_param_of(KSWindowDetector), level_param_of(AdwinDetector)
    ('alpha', None)
    """
    return getattr(cls, "level_param", None)


def check_level(cls: type, value: object) -> float:
    """``value`` checked as ``cls``'s false-alarm budget (`SpecError` naming its parameter).

    Examples
    --------
    >>> from driftline.streams.detectors.ks import KSWindowDetector
    >>> check_level(KSWindowDetector, 1e-6)
    1e-06
    >>> check_level(KSWindowDetector, 2.0)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: alpha: got 2.0; expected a number strictly between 0 and 1
    """
    if level_param_of(cls) == "alpha":
        return alpha_param(value)
    lo, hi = cls.rate_range  # type: ignore[attr-defined]
    return float_param(
        "false_alarms_per_million", value, low=lo, high=hi, low_open=False, high_open=False
    )
