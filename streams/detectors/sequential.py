"""River's sequential detectors for error / score streams: Page-Hinkley, DDM, HDDM_A, HDDM_W.

Concept drift is watched on the model's error stream: 0/1 errors of a classifier (DDM, HDDM_A,
HDDM_W, Page-Hinkley) or the errors of a regressor (Page-Hinkley on raw errors; HDDM_A / HDDM_W on
errors scaled into [0, 1], e.g. ``min(|error| / scale, 1)``). Prediction drift and label shift are
the same detectors (or KS / chi-square) on the score or label streams.

Every detection river reports becomes a ``"firing"`` `Detection`, and the detector resolves after
``cooldown`` further values without one (as `streams.detectors.adwin.AdwinDetector`). Values go to
river one at a time, so detections are identical, index for index, to driving river directly.
``statistic`` is Page-Hinkley's test statistic (compared to ``threshold``) and, for DDM / HDDM,
the mean of the values since the last detection (the error rate).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from river.drift import PageHinkley
from river.drift.binary import DDM, HDDMA, HDDMW

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import int_param
from driftline.streams.detectors.base import (
    FIRING,
    RESOLVED,
    Detection,
    finite_values,
)
from driftline.streams.detectors.river_base import RiverWrapper

__all__ = ["DDMDetector", "HDDMADetector", "HDDMWDetector", "PageHinkleyDetector"]


def _prob(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.floating)
        or not 0.0 < float(value) < 1.0
    ):
        raise SpecError(f"{name}: got {value!r}; expected a number strictly between 0 and 1")
    return float(value)


def _positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.floating)
        or not float(value) > 0.0
        or not math.isfinite(float(value))
    ):
        raise SpecError(f"{name}: got {value!r}; expected a finite number > 0")
    return float(value)


class _RiverDetector(RiverWrapper):
    """Shared machinery: one river detector fed value by value, firing/resolved with cooldown."""

    _lo: ClassVar[float] = -math.inf  # accepted input range
    _hi: ClassVar[float] = math.inf
    _binary: ClassVar[bool] = False

    def __init__(self, cooldown: int) -> None:
        self.cooldown = int_param("cooldown", cooldown, 0)
        self._river = self._new_river()
        self._reset_state()
        self._sum = 0.0  # since the last detection
        self._n = 0

    def _new_river(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stat(self) -> float:
        return self._sum / self._n if self._n else math.nan

    @property
    def warning_detected(self) -> bool:
        """River's warning zone (DDM, HDDM); always False for Page-Hinkley."""
        return bool(getattr(self._river, "warning_detected", False))

    def update_many(self, xs: np.ndarray) -> list[Detection]:
        """Feed a batch to river in order; return firing/resolved changes with batch positions.

        Raises
        ------
        DriftlineError
            If a value is outside the detector's input domain (0/1 for DDM, [0, 1] for HDDM).
        """
        vals, pos = finite_values(xs)
        out: list[Detection] = []
        if vals.size == 0:
            return out
        if (
            (vals < self._lo).any()
            or (vals > self._hi).any()
            or (self._binary and not np.isin(vals, (0.0, 1.0)).all())
        ):
            want = "0/1 values" if self._binary else f"values in [{self._lo}, {self._hi}]"
            raise DriftlineError(f"xs: {self.name} expects {want} (errors of a model)")
        river = self._river
        update = river.update
        threshold = self._threshold()
        for j, x in enumerate(vals.tolist()):
            update(x)
            self._sum += x
            self._n += 1
            if river.drift_detected:
                stat = self._stat()
                self._statistic = stat
                self._sum, self._n = 0.0, 0
                self._n_detections += 1
                self._firing, self._since = True, 0
                out.append(Detection(int(pos[j]), stat, None, threshold, 0, self._n, FIRING))
            elif self._firing:
                self._since += 1
            if self._firing and self._since >= self.cooldown:
                self._firing = False
                out.append(
                    Detection(int(pos[j]), self._statistic, None, threshold, 0, self._n, RESOLVED)
                )
        if not self._firing:
            self._statistic = self._stat()
        self._n_seen += vals.size
        return out

    def _threshold(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {"sum": self._sum, "n": self._n}

    def _load_extra(self, state: dict[str, Any]) -> tuple[float, int]:
        return float(state["sum"]), int(state["n"])

    def _apply_extra(self, parsed: tuple[float, int]) -> None:
        self._sum, self._n = parsed


class PageHinkleyDetector(_RiverDetector):
    """River's `PageHinkley` (mean change of a real-valued stream, e.g. regression errors).

    ``statistic`` is the Page-Hinkley statistic at the last value (or at the detection).

    Parameters
    ----------
    min_instances, delta, threshold, alpha, mode
        As `river.drift.PageHinkley` (>= 1, > 0, > 0, in (0, 1], ``"up"``/``"down"``/``"both"``).
        ``delta`` and ``threshold`` are in the units of the values: scale them to the stream.
        River's default fading ``alpha=0.9999`` makes the cumulative sums forget their minimum
        level, so long stationary streams alarm regularly; ``alpha=1`` is the classic test.
    cooldown
        Values without detection after which a firing detector resolves (>= 0).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> det = PageHinkleyDetector(threshold=100.0, cooldown=100)
    >>> det.update_many(rng.normal(0.0, 1.0, 2_000))
    []
    >>> [(c.status, c.index) for c in det.update_many(rng.normal(2.0, 1.0, 500))]
    [('firing', 39), ('resolved', 139)]
    """

    name: ClassVar[str] = "page_hinkley"

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
        cooldown: int = 1000,
    ) -> None:
        self.min_instances = int_param("min_instances", min_instances, 1)
        self.delta = _positive("delta", delta)
        self.threshold = _positive("threshold", threshold)
        if alpha == 1:
            self.alpha = 1.0
        else:
            self.alpha = _prob("alpha", alpha)
        if mode not in ("up", "down", "both"):
            raise SpecError(f"mode: got {mode!r}; expected 'up', 'down' or 'both'")
        self.mode = mode
        super().__init__(cooldown)

    def _new_river(self) -> PageHinkley:
        return PageHinkley(self.min_instances, self.delta, self.threshold, self.alpha, self.mode)

    def _params(self) -> dict[str, Any]:
        return {
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "mode": self.mode,
            "cooldown": self.cooldown,
        }

    def _threshold(self) -> float:
        return self.threshold

    def _stat(self) -> float:
        r = self._river
        up = r._sum_increase - r._min_increase
        down = r._max_decrease - r._sum_decrease
        if self.mode == "up":
            return float(up)
        if self.mode == "down":
            return float(down)
        return float(max(up, down))


class DDMDetector(_RiverDetector):
    """River's `DDM` (Drift Detection Method) on a 0/1 error stream.

    Parameters
    ----------
    warm_start, warning_threshold, drift_threshold
        As `river.drift.binary.DDM` (>= 1, > 0, > 0).
    cooldown
        Values without detection after which a firing detector resolves (>= 0).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> det = DDMDetector(warm_start=300, cooldown=200)
    >>> det.update_many(rng.random(3_000) < 0.1)
    []
    >>> [(c.status, c.index) for c in det.update_many(rng.random(1_000) < 0.4)][:1]
    [('firing', 36)]
    """

    name: ClassVar[str] = "ddm"
    _lo, _hi, _binary = 0.0, 1.0, True

    def __init__(
        self,
        warm_start: int = 30,
        warning_threshold: float = 2.0,
        drift_threshold: float = 3.0,
        cooldown: int = 1000,
    ) -> None:
        self.warm_start = int_param("warm_start", warm_start, 1)
        self.warning_threshold = _positive("warning_threshold", warning_threshold)
        self.drift_threshold = _positive("drift_threshold", drift_threshold)
        super().__init__(cooldown)

    def _new_river(self) -> DDM:
        return DDM(self.warm_start, self.warning_threshold, self.drift_threshold)

    def _params(self) -> dict[str, Any]:
        return {
            "warm_start": self.warm_start,
            "warning_threshold": self.warning_threshold,
            "drift_threshold": self.drift_threshold,
            "cooldown": self.cooldown,
        }

    def _threshold(self) -> float:
        return self.drift_threshold


class _HDDM(_RiverDetector):
    _lo, _hi = 0.0, 1.0

    def _threshold(self) -> float:
        return self.drift_confidence


class HDDMADetector(_HDDM):
    """River's `HDDM_A` (Hoeffding bound on moving averages) on errors in [0, 1].

    Parameters
    ----------
    drift_confidence, warning_confidence
        As `river.drift.binary.HDDMA`, in (0, 1).
    two_sided_test
        Also detect decreases of the error rate.
    cooldown
        Values without detection after which a firing detector resolves (>= 0).

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> det = HDDMADetector(cooldown=200)
    >>> det.update_many(rng.random(3_000) < 0.1)
    []
    >>> [(c.status, c.index) for c in det.update_many(rng.random(1_000) < 0.4)][:1]
    [('firing', 39)]
    """

    name: ClassVar[str] = "hddm_a"

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        two_sided_test: bool = False,
        cooldown: int = 1000,
    ) -> None:
        self.drift_confidence = _prob("drift_confidence", drift_confidence)
        self.warning_confidence = _prob("warning_confidence", warning_confidence)
        if not isinstance(two_sided_test, bool):
            raise SpecError(f"two_sided_test: got {two_sided_test!r}; expected true or false")
        self.two_sided_test = two_sided_test
        super().__init__(cooldown)

    def _new_river(self) -> HDDMA:
        return HDDMA(self.drift_confidence, self.warning_confidence, self.two_sided_test)

    def _params(self) -> dict[str, Any]:
        return {
            "drift_confidence": self.drift_confidence,
            "warning_confidence": self.warning_confidence,
            "two_sided_test": self.two_sided_test,
            "cooldown": self.cooldown,
        }


class HDDMWDetector(_HDDM):
    """River's `HDDM_W` (Hoeffding bound on EWMAs) on errors in [0, 1].

    Parameters
    ----------
    drift_confidence, warning_confidence
        As `river.drift.binary.HDDMW`, in (0, 1).
    lambda_val
        EWMA weight of the newest value, in (0, 1).
    two_sided_test
        Also detect decreases of the error rate.
    cooldown
        Values without detection after which a firing detector resolves (>= 0).

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> det = HDDMWDetector(cooldown=200)
    >>> det.update_many(rng.random(3_000) < 0.1)
    []
    >>> [(c.status, c.index) for c in det.update_many(rng.random(1_000) < 0.4)][:1]
    [('firing', 82)]
    """

    name: ClassVar[str] = "hddm_w"

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        lambda_val: float = 0.05,
        two_sided_test: bool = False,
        cooldown: int = 1000,
    ) -> None:
        self.drift_confidence = _prob("drift_confidence", drift_confidence)
        self.warning_confidence = _prob("warning_confidence", warning_confidence)
        self.lambda_val = _prob("lambda_val", lambda_val)
        if not isinstance(two_sided_test, bool):
            raise SpecError(f"two_sided_test: got {two_sided_test!r}; expected true or false")
        self.two_sided_test = two_sided_test
        super().__init__(cooldown)

    def _new_river(self) -> HDDMW:
        return HDDMW(
            self.drift_confidence, self.warning_confidence, self.lambda_val, self.two_sided_test
        )

    def _params(self) -> dict[str, Any]:
        return {
            "drift_confidence": self.drift_confidence,
            "warning_confidence": self.warning_confidence,
            "lambda_val": self.lambda_val,
            "two_sided_test": self.two_sided_test,
            "cooldown": self.cooldown,
        }
