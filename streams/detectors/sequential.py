"""River's sequential detectors for error / score streams: Page-Hinkley, DDM, HDDM_A, HDDM_W.

Concept drift is watched on the model's error stream: 0/1 errors of a classifier (DDM, HDDM_A,
HDDM_W, Page-Hinkley) or the errors of a regressor (Page-Hinkley on raw errors; HDDM_A / HDDM_W on
errors scaled into [0, 1], e.g. ``min(|error| / scale, 1)``). Prediction drift and label shift are
the same detectors (or KS / chi-square) on the score or label streams.

A detection river reports opens an episode (a ``"firing"`` `Detection`) unless one is open; a
detection while it is open extends it; the episode resolves after ``cooldown`` further values
without one (as `streams.detectors.adwin.AdwinDetector`). Values go to river one at a time, so
detections are identical, index for index, to driving river directly (Page-Hinkley's values
divided by its reference standard deviation). On the error stream DDM, HDDM_A and HDDM_W (with
``two_sided_test=False``, the default) watch increases of the error only; Page-Hinkley's spec
default there is ``mode="up"``.
``statistic`` is Page-Hinkley's test statistic (compared to ``threshold``) and, for DDM / HDDM,
the mean of the values since the last detection (the error rate).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from river.drift import PageHinkley
from river.drift.binary import DDM, HDDMA, HDDMW

from driftline.errors import DriftlineError
from driftline.streams.detectors.base import (
    FIRING,
    RESOLVED,
    Detection,
    finite_values,
)
from driftline.streams.detectors.river_base import RiverWrapper
from driftline.streams.params import (
    bool_param,
    choice_param,
    float_param,
    int_param,
    probability_param,
)

__all__ = ["DDMDetector", "HDDMADetector", "HDDMWDetector", "PageHinkleyDetector"]

_MODES = ("up", "down", "both")


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
        self._feed(vals, pos, out)
        if not self._firing:
            self._statistic = self._stat()
        self._n_seen += vals.size
        return out

    def _feed(self, vals: np.ndarray, pos: np.ndarray, out: list[Detection]) -> None:
        """Feed ``vals`` (batch positions ``pos``) to river; append the changes to ``out``."""
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
                self._since = 0
                if not self._firing:  # a detection while firing extends the episode
                    self._firing = True
                    out.append(Detection(int(pos[j]), stat, None, threshold, 0, 0, FIRING))
            elif self._firing:
                self._since += 1
            if self._firing and self._since >= self.cooldown:
                self._firing = False
                out.append(
                    Detection(int(pos[j]), self._statistic, None, threshold, 0, self._n, RESOLVED)
                )

    def _threshold(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {"sum": self._sum, "n": self._n}

    def _load_extra(self, state: dict[str, Any]) -> tuple[float, int]:
        return float(state["sum"]), int(state["n"])

    def _apply_extra(self, parsed: tuple[float, int]) -> None:
        self._sum, self._n = parsed


class PageHinkleyDetector(_RiverDetector):
    """River's `PageHinkley` (mean change of a real-valued stream, e.g. regression errors), in
    units of the stream's own standard deviation.

    The first ``min_instances`` values are held back; their standard deviation (``scale``, 1
    when they are all equal) is frozen, and from then on every value is divided by it before
    river sees it (the held-back ones first). So ``delta`` and ``threshold`` are in reference
    standard deviations and the defaults fit any stream whatever its units: the test is a
    two-sided CUSUM of ``x / scale - mean - delta`` that fires when it climbs ``threshold``
    above its minimum. ``statistic`` is the Page-Hinkley statistic at the last value (or at the
    detection), in the same units.

    Defaults and false alarms: with ``delta=0.25``, ``threshold=26``, ``alpha=1`` (no fading),
    ``mode="both"`` the measured false-alarm rate on stationary N(0, 1) streams is below 1 per
    10^6 values (0.8, ``bench/page_hinkley_calibration.py``); a 0.5-sigma mean shift is found after
    about ``threshold / (0.5 - delta)`` = 104 values, a 1-sigma one after about 35.

    Parameters
    ----------
    min_instances
        Values that set the scale and come before the first test (integer >= 2, default 100).
    delta
        Change tolerated, in reference standard deviations: subtracted from every deviation
        from the running mean (number > 0, default 0.25: tuned to shifts of about 0.5 sd).
    threshold
        Alarm when the cumulative deviation exceeds it (``lambda``), in reference standard
        deviations (number > 0, default 26, `bench/page_hinkley_calibration.py`).
    alpha
        Fading factor of the cumulative deviation sums, in (0, 1] (default 1: the classic
        test). River's 0.9999 makes the sums forget their minimum level, so long stationary
        streams alarm regularly.
    mode
        ``"up"`` (increases of the mean), ``"down"`` (decreases) or ``"both"`` (default; the
        default of a spec's ``page_hinkley`` on the ``error`` target is ``"up"``: a worse model).
    cooldown
        Values without detection after which a firing detector resolves (integer >= 0,
        default 1000).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> det = PageHinkleyDetector(cooldown=100)
    >>> det.update_many(rng.normal(50.0, 10.0, 2_000))
    []
    >>> round(det.scale, 2)
    9.67
    >>> [(c.status, c.index) for c in det.update_many(rng.normal(60.0, 10.0, 500))]
    [('firing', 32), ('resolved', 132)]
    """

    name: ClassVar[str] = "page_hinkley"

    def __init__(
        self,
        min_instances: int = 100,
        delta: float = 0.25,
        threshold: float = 26.0,
        alpha: float = 1.0,
        mode: str = "both",
        cooldown: int = 1000,
    ) -> None:
        self.min_instances = int_param("min_instances", min_instances, 2)
        self.delta = float_param("delta", delta, low=0.0)
        self.threshold = float_param("threshold", threshold, low=0.0)
        self.alpha = float_param("alpha", alpha, low=0.0, high=1.0, high_open=False)
        self.mode = choice_param("mode", mode, _MODES)
        super().__init__(cooldown)
        self._head: list[float] = []  # values held back until the scale is known
        self._scale: float | None = None

    @property
    def scale(self) -> float:
        """The reference standard deviation values are divided by (NaN before it is set)."""
        return math.nan if self._scale is None else self._scale

    def _new_river(self) -> PageHinkley:
        return PageHinkley(self.min_instances, self.delta, self.threshold, self.alpha, self.mode)

    def _feed(self, vals: np.ndarray, pos: np.ndarray, out: list[Detection]) -> None:
        if self._scale is None:
            i = min(self.min_instances - len(self._head), vals.size)
            self._head += vals[:i].tolist()
            if len(self._head) < self.min_instances:
                return
            head = np.asarray(self._head)
            sd = float(head.std(ddof=1))
            self._scale = sd if sd > 0 and math.isfinite(sd) else 1.0
            self._head = []
            # the held-back values all sit at the position of the one that completed them
            vals = np.concatenate([head[: head.size - i], vals])
            pos = np.concatenate([np.full(head.size - i, pos[0]), pos])
        super()._feed(vals / self._scale, pos, out)

    def _threshold(self) -> float:
        return self.threshold

    def _stat(self) -> float:
        r = self._river
        if r._x_mean.n == 0:
            return math.nan
        up = r._sum_increase - r._min_increase
        down = r._max_decrease - r._sum_decrease
        if self.mode == "up":
            return float(up)
        if self.mode == "down":
            return float(down)
        return float(max(up, down))

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "head": list(self._head), "scale": self._scale}

    def _load_extra(self, state: dict[str, Any]) -> Any:
        head = [float(v) for v in state["head"]]
        scale = None if state["scale"] is None else float(state["scale"])
        return super()._load_extra(state), head, scale

    def _apply_extra(self, parsed: Any) -> None:
        base, self._head, self._scale = parsed
        super()._apply_extra(base)


class DDMDetector(_RiverDetector):
    """River's `DDM` (Drift Detection Method) on a 0/1 error stream.

    DDM tracks the error rate ``p`` and its standard deviation ``s`` since the last drift and
    the point where ``p + s`` was lowest (``p_min``, ``s_min``); it warns when ``p + s >
    p_min + warning_threshold * s_min`` and detects drift when ``p + s > p_min +
    drift_threshold * s_min``.

    Parameters
    ----------
    warm_start
        Values before the first test (integer >= 1, default 30).
    warning_threshold
        Standard deviations above the best rate for the warning zone, `warning_detected`
        (number > 0, default 2: about 95% confidence).
    drift_threshold
        Standard deviations above the best rate for a drift (number > 0, default 3: about
        99% confidence).
    cooldown
        Values without detection after which a firing detector resolves (integer >= 0,
        default 1000).

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
    inputs: ClassVar[str] = "binary"
    _lo, _hi, _binary = 0.0, 1.0, True

    def __init__(
        self,
        warm_start: int = 30,
        warning_threshold: float = 2.0,
        drift_threshold: float = 3.0,
        cooldown: int = 1000,
    ) -> None:
        self.warm_start = int_param("warm_start", warm_start, 1)
        self.warning_threshold = float_param("warning_threshold", warning_threshold, low=0.0)
        self.drift_threshold = float_param("drift_threshold", drift_threshold, low=0.0)
        super().__init__(cooldown)

    def _new_river(self) -> DDM:
        return DDM(self.warm_start, self.warning_threshold, self.drift_threshold)

    def _threshold(self) -> float:
        return self.drift_threshold


class _HDDM(_RiverDetector):
    """What HDDM_A and HDDM_W share: errors in [0, 1], the two confidences, one or two sides."""

    _lo, _hi = 0.0, 1.0
    inputs: ClassVar[str] = "unit_interval"

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        two_sided_test: bool = False,
        cooldown: int = 1000,
    ) -> None:
        self.drift_confidence = probability_param("drift_confidence", drift_confidence)
        self.warning_confidence = probability_param("warning_confidence", warning_confidence)
        self.two_sided_test = bool_param("two_sided_test", two_sided_test)
        super().__init__(cooldown)

    def _threshold(self) -> float:
        return self.drift_confidence


class HDDMADetector(_HDDM):
    """River's `HDDM_A` (Hoeffding bound on moving averages) on errors in [0, 1].

    Parameters
    ----------
    drift_confidence
        Confidence level of the drift test, strictly between 0 and 1 (default 0.001);
        smaller: fewer false alarms, later detections.
    warning_confidence
        Confidence level of the warning zone (`warning_detected`), strictly between 0 and 1
        (default 0.005).
    two_sided_test
        True: also detect decreases of the error rate; False (default): increases only.
    cooldown
        Values without detection after which a firing detector resolves (integer >= 0,
        default 1000).

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

    def _new_river(self) -> HDDMA:
        return HDDMA(self.drift_confidence, self.warning_confidence, self.two_sided_test)


class HDDMWDetector(_HDDM):
    """River's `HDDM_W` (Hoeffding bound on EWMAs) on errors in [0, 1].

    Parameters
    ----------
    lambda_val
        Weight of the newest value in the exponentially weighted moving averages, strictly
        between 0 and 1 (default 0.05); larger: faster reaction, noisier.
    drift_confidence
        Confidence level of the drift test, strictly between 0 and 1 (default 0.001);
        smaller: fewer false alarms, later detections.
    warning_confidence
        Confidence level of the warning zone (`warning_detected`), strictly between 0 and 1
        (default 0.005).
    two_sided_test
        True: also detect decreases of the error rate; False (default): increases only.
    cooldown
        Values without detection after which a firing detector resolves (integer >= 0,
        default 1000).

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
        self.lambda_val = probability_param("lambda_val", lambda_val)
        super().__init__(drift_confidence, warning_confidence, two_sided_test, cooldown)

    def _new_river(self) -> HDDMW:
        return HDDMW(
            self.drift_confidence, self.warning_confidence, self.lambda_val, self.two_sided_test
        )
