"""Window-vs-reference-profile detectors: summary thresholds (TFDV style) and categorical drift.

All keep the last ``window_size`` values, evaluate once ``min_samples`` are there and then every
``stride`` values, and go through the same `streams.detectors.alarm.Alarm` (``n_confirm``,
``n_clear``, ``cooldown``) as the KS detector. The reference is a `streams.profile.Profile`
(e.g. of the training data), an array, or else the first ``reference_size`` values.

* `SummaryDetector` (numeric; NaN = null): the window's mean, std, null rate, out-of-range
  rate and min/max against the reference profile, each with a threshold (below).
* `Chi2Detector`: chi-square test of homogeneity of the reference and window category counts,
  exactly ``scipy.stats.chi2_contingency([ref_counts, window_counts])`` (Yates' correction when
  there are two categories, as scipy's default); beyond when ``p < alpha``.
* `PSIDetector`: population stability index ``sum((w - r) ln(w / r))`` over category
  proportions (proportions below ``1e-4`` are raised to ``1e-4``); beyond when ``PSI >= threshold``
  (0.1 "moderate", 0.25 "major" by convention).
* `JSDDetector`: Jensen-Shannon distance (natural log, in [0, sqrt(ln 2)]), exactly
  ``scipy.spatial.distance.jensenshannon(ref_props, window_props)``; beyond when ``>= threshold``.

Categories are strings (object arrays are fine; None and NaN are nulls and skipped). Categories
outside the reference profile's top-K fall into `streams.profile.OTHER`.

Defaults and measured false alarms (``bench/detectors_bench.py --fa-streams 5``: 5 seeded
stationary streams of 10^6 values each, 5 x 10^6 values per detector): ``window_size=1000``,
``reference_size=1000`` (head of stream), ``stride=50``, ``n_confirm=1``, ``n_clear=20`` and
`SummaryDetector` on N(0, 1) with 5% nulls, `Chi2Detector` (``alpha=1e-6``), `PSIDetector`
(``threshold=0.25``) and `JSDDetector` (``threshold=0.1``) on 10 Zipf-distributed categories:
0 alarms each, i.e. below 0.6 per 10^6 values at 95% confidence. A 0.5-sigma mean shift is
caught by `SummaryDetector` after a median 999 values (one window).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.detectors.base import (
    AdjustableLevel,
    AlarmedDetector,
    Detection,
    check_state_params,
    detector_noun,
    min_samples_param,
)
from driftline.streams.params import (
    MAX_VALUES,
    float_param,
    int_param,
    optional_float_param,
    probability_param,
)
from driftline.streams.profile import OTHER, Profile
from driftline.streams.snapshots import reading_snapshot

__all__ = ["Chi2Detector", "JSDDetector", "PSIDetector", "SummaryDetector"]

PSI_EPS = 1e-4
#: Default window size of the first evaluation of `SummaryDetector` and `Chi2Detector`.
_WARMUP = 100


class _Windowed(AlarmedDetector):
    """Sliding count window + schedule + alarm; subclasses implement `_evaluate`.

    ``n_seen`` counts every value consumed, nulls included (they matter for the null rate).
    """

    _categorical: ClassVar[bool] = False
    #: ``min_samples`` when None: ``min(_warmup, window_size)``, or ``window_size`` if None
    _warmup: ClassVar[int | None] = None

    def __init__(
        self,
        reference: Profile | np.ndarray | None,
        reference_size: int,
        window_size: int,
        stride: int,
        min_samples: int | None,
        n_confirm: int,
        n_clear: int,
        cooldown: int,
    ) -> None:
        self._given_reference = reference is not None
        self.window_size = int_param("window_size", window_size, 1, MAX_VALUES)
        self.reference_size = int_param("reference_size", reference_size, 1, MAX_VALUES)
        self.stride = int_param("stride", stride, 1, MAX_VALUES)
        if min_samples is None and self._warmup is not None:
            min_samples = min(self._warmup, self.window_size)
        self.min_samples = min_samples_param(min_samples, self.window_size)
        self._alarm = Alarm(n_confirm, n_clear, cooldown)
        self._profile: Profile | None = None
        if reference is not None:
            self._profile = self._as_profile(reference)
        self._head: list[Any] = []
        self._window: deque[Any] = deque(maxlen=self.window_size)
        self._n_seen = 0
        self._n_eval = 0
        self._statistic = math.nan
        self._p_value: float | None = None
        self._detail = ""

    def _as_profile(self, reference: Profile | np.ndarray) -> Profile:
        kind = "categorical" if self._categorical else "numeric"
        if isinstance(reference, Profile):
            prof = reference
        else:
            arr = np.asarray(reference, dtype=object if self._categorical else np.float64)
            if arr.ndim != 1 or arr.size == 0:
                raise SpecError(
                    f"reference: got an array of shape {arr.shape}; expected a non-empty 1-D array"
                )
            prof = Profile.from_values(arr)
        if prof.kind != kind or prof.count == 0:
            raise SpecError(
                f"reference: got a {prof.kind} profile of {prof.count} values; expected a "
                f"non-empty {kind} profile"
            )
        return prof

    # ------------------------------------------------------------------ state
    @property
    def p_value(self) -> float | None:
        """p-value of the last evaluation (chi-square only)."""
        return self._p_value

    @property
    def reference_profile(self) -> Profile | None:
        """The reference profile (None until the head of the stream completes it)."""
        return self._profile

    @property
    def detail(self) -> str:
        """What the last evaluation found beyond its threshold ("" if nothing)."""
        return self._detail

    # ------------------------------------------------------------------ update
    def _values(self, xs: np.ndarray | list[Any]) -> list[Any]:
        arr = np.asarray(xs, dtype=object if self._categorical else np.float64)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise DriftlineError(f"xs: got shape {arr.shape}; expected a 1-D array")
        if self._categorical:
            return [
                None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                for v in arr.tolist()
            ]
        return arr.tolist()

    def update(self, x: Any) -> None:
        """Consume one value."""
        self.update_many([x])

    def update_many(self, xs: np.ndarray | list[Any]) -> list[Detection]:
        """Consume a batch; return the firing/resolved changes with their batch positions."""
        vals = self._values(xs)
        out: list[Detection] = []
        i = 0
        if self._profile is None:
            i = min(self.reference_size - len(self._head), len(vals))
            self._head += vals[:i]
            self._n_seen += i
            if len(self._head) < self.reference_size:
                return out
            ref = np.asarray(self._head, dtype=object if self._categorical else np.float64)
            self._profile = Profile.from_values(ref)
            self._head = []
        w, m, s = self.window_size, self.min_samples, self.stride
        window = self._window
        positions, beyond, quiet, seen = [], [], [], []
        results: list[tuple[float, float | None, str]] = []
        for j in range(i, len(vals)):
            window.append(vals[j])
            self._n_seen += 1
            n = self._n_seen - self.reference_size if not self._given else self._n_seen
            if n >= m and (n - m) % s == 0:
                stat, p, b, detail = self._evaluate(window)
                positions.append(j)
                beyond.append(b)
                quiet.append(self._quiet(stat, p, b))
                seen.append(self._n_seen)
                results.append((stat, p, detail))
        if not positions:
            return out
        self._n_eval += len(positions)
        self._statistic, self._p_value, self._detail = results[-1]
        for k, status in self._alarm.feed(
            np.array(beyond, dtype=bool), np.array(seen), np.array(quiet, dtype=bool)
        ):
            stat, p, detail = results[k]
            out.append(
                Detection(
                    index=positions[k],
                    statistic=stat,
                    p_value=p,
                    threshold=self._threshold(),
                    n_reference=self._profile.count,
                    n_current=min(w, self._n_seen),
                    status=status,
                    detail=detail,
                )
            )
        return out

    @property
    def _given(self) -> bool:
        return self._given_reference

    def _evaluate(self, window: deque[Any]) -> tuple[float, float | None, bool, str]:
        raise NotImplementedError  # pragma: no cover

    def _quiet(self, stat: float, p: float | None, beyond: bool) -> bool:
        """Whether an evaluation counts towards resolving (default: not beyond)."""
        return not beyond

    def _threshold(self) -> float:
        raise NotImplementedError  # pragma: no cover

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover

    def _base_params(self) -> dict[str, Any]:
        return {
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "stride": self.stride,
            "min_samples": self.min_samples,
            **self._alarm.params(),
        }

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON-able; NaN stored as None)."""

        def clean(vs: list[Any]) -> list[Any]:
            return [None if isinstance(v, float) and math.isnan(v) else v for v in vs]

        return {
            "detector": self.name,
            "params": self._params(),
            "profile": None if self._profile is None else self._profile.to_dict(),
            "given_reference": self._given_reference,
            "head": clean(self._head),
            "window": clean(list(self._window)),
            "n_seen": self._n_seen,
            "n_evaluations": self._n_eval,
            "alarm": self._alarm.snapshot(),
            "statistic": None if math.isnan(self._statistic) else self._statistic,
            "p_value": self._p_value,
            "detail": self._detail,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` taken by a detector with the same hyperparameters."""
        check_state_params(self.name, state, self._params())
        with reading_snapshot(detector_noun(self.name)):
            prof = state["profile"]
            self._profile = None if prof is None else Profile.from_dict(prof)
            self._given_reference = bool(state["given_reference"])
            nan = None if self._categorical else math.nan
            self._head = [nan if v is None else v for v in state["head"]]
            self._window = deque(
                (nan if v is None else v for v in state["window"]), maxlen=self.window_size
            )
            self._n_seen = int(state["n_seen"])
            self._n_eval = int(state["n_evaluations"])
            self._alarm.restore(state["alarm"])
            stat = state["statistic"]
            self._statistic = math.nan if stat is None else float(stat)
            self._p_value = state["p_value"]
            self._detail = str(state["detail"])


class SummaryDetector(_Windowed):
    """Summary statistics of the window against a reference profile (TFDV-style thresholds).

    An evaluation is beyond its threshold when any enabled check fails (``None`` disables one):

    * ``mean_shift``: ``|mean_w - mean_ref| > mean_shift * std_ref``;
    * ``std_ratio``: ``max(std_w / std_ref, std_ref / std_w) > std_ratio``;
    * ``max_null_increase``: ``null_rate_w - null_rate_ref > max_null_increase`` (absolute);
    * ``max_out_of_range``: fraction of the window's non-null values outside
      ``[min_ref, max_ref]`` ``> max_out_of_range``;
    * ``range_margin``: ``min_w < min_ref - m * range`` or ``max_w > max_ref + m * range`` with
      ``range = max_ref - min_ref`` (off by default).

    ``statistic`` is the largest ratio of a check's value to its threshold (``> 1`` beyond; for
    ``std_ratio``, of ``ratio - 1`` to ``std_ratio - 1``); ``detail`` names the failing checks and
    their values. An open episode resolves after ``n_clear`` consecutive evaluations with
    ``statistic <= clear_fraction``: the window is clearly back near the reference, so a drift
    that hovers around a threshold stays one episode.

    Warm-up: the first evaluation comes once the window holds ``min_samples`` values (default
    100); while it holds ``n < window_size`` values, the mean, std, null-rate and out-of-range
    checks are widened by ``sqrt(window_size / n)`` (their noise shrinks as ``1 / sqrt(n)``), so
    a short window alarms no more often than a full one.

    Parameters
    ----------
    reference
        `Profile` or numeric array of the reference (NaN = null); default None: the first
        ``reference_size`` values of the stream.
    reference_size
        Values at the head of the stream that form the reference when no ``reference`` is
        given (integer >= 1, default 1000).
    window_size
        Values in the sliding current window (integer >= 1, default 1000).
    stride
        Evaluate every ``stride`` values once ``min_samples`` are there (integer >= 1,
        default 50).
    min_samples
        Window size of the first evaluation, ``1 <= min_samples <= window_size`` (default
        ``min(100, window_size)``).
    n_confirm
        Consecutive beyond evaluations needed to fire (integer >= 1, default 1).
    n_clear
        Consecutive quiet evaluations needed to resolve (integer >= 1, default 20).
    cooldown
        Values after a resolution before the detector may fire again (integer >= 0,
        default 0).
    clear_fraction
        An evaluation is quiet (counts towards resolving) when ``statistic <= clear_fraction``
        (number in (0, 1], default 0.5); 1 resolves as soon as no check fails.
    mean_shift
        Largest allowed ``|mean_w - mean_ref|`` in reference standard deviations (number > 0,
        default 0.5), or None (off).
    std_ratio
        Largest allowed ratio of the two standard deviations, either way (number > 1,
        default 1.5), or None (off).
    max_null_increase
        Largest allowed rise of the null rate, absolute (number > 0, default 0.1), or None.
    max_out_of_range
        Largest allowed fraction of non-null window values outside the reference's
        ``[min, max]`` (number > 0, default 0.05), or None.
    range_margin
        Allowed overshoot of the window's min/max beyond the reference's, as a fraction of the
        reference range (number > 0), or None (default: off).

    All counts are of values, nulls included.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = Profile.from_values(rng.normal(0.0, 1.0, 10_000))
    >>> det = SummaryDetector(reference=ref, window_size=500)
    >>> det.update_many(rng.normal(0.0, 1.0, 2_000))
    []
    >>> xs = rng.normal(0.0, 1.0, 1_000)
    >>> xs[::4] = np.nan  # 25% nulls
    >>> c, = det.update_many(xs)
    >>> c.status, c.index, c.detail
    ('firing', 249, 'null_rate +0.126 > 0.1')
    """

    name: ClassVar[str] = "summary"
    _warmup = _WARMUP

    def __init__(
        self,
        reference: Profile | np.ndarray | None = None,
        reference_size: int = 1000,
        window_size: int = 1000,
        stride: int = 50,
        *,
        min_samples: int | None = None,
        mean_shift: float | None = 0.5,
        std_ratio: float | None = 1.5,
        max_null_increase: float | None = 0.1,
        max_out_of_range: float | None = 0.05,
        range_margin: float | None = None,
        n_confirm: int = 1,
        n_clear: int = 20,
        cooldown: int = 0,
        clear_fraction: float = 0.5,
    ) -> None:
        super().__init__(
            reference,
            reference_size,
            window_size,
            stride,
            min_samples,
            n_confirm,
            n_clear,
            cooldown,
        )
        self.clear_fraction = float_param(
            "clear_fraction", clear_fraction, low=0.0, high=1.0, high_open=False
        )
        self.mean_shift = optional_float_param("mean_shift", mean_shift, low=0.0)
        self.std_ratio = optional_float_param("std_ratio", std_ratio, low=1.0)
        self.max_null_increase = optional_float_param(
            "max_null_increase", max_null_increase, low=0.0
        )
        self.max_out_of_range = optional_float_param("max_out_of_range", max_out_of_range, low=0.0)
        self.range_margin = optional_float_param("range_margin", range_margin, low=0.0)

    def _threshold(self) -> float:
        return 1.0

    def _params(self) -> dict[str, Any]:
        return {
            **self._base_params(),
            "mean_shift": self.mean_shift,
            "std_ratio": self.std_ratio,
            "max_null_increase": self.max_null_increase,
            "max_out_of_range": self.max_out_of_range,
            "range_margin": self.range_margin,
            "clear_fraction": self.clear_fraction,
        }

    def _quiet(self, stat: float, p: float | None, beyond: bool) -> bool:
        return not beyond and stat <= self.clear_fraction

    def _evaluate(self, window: deque[Any]) -> tuple[float, float | None, bool, str]:
        ref = self._profile
        v = np.asarray(window, dtype=np.float64)
        nulls = np.isnan(v)
        x = v[~nulls]
        ratios: list[tuple[float, str]] = []
        # warm-up: thresholds widened by sqrt(window_size / n) (noise ~ 1 / sqrt(n))
        f = math.sqrt(min(1.0, v.size / self.window_size))
        null_inc = nulls.mean() - ref.null_rate
        if self.max_null_increase is not None:
            ratios.append((f * null_inc / self.max_null_increase, f"null_rate {null_inc:+.3g}"))
        if x.size:
            sd = ref.std
            if self.mean_shift is not None and sd > 0:
                z = abs(x.mean() - ref.mean) / sd
                ratios.append((f * z / self.mean_shift, f"mean shift {z:.3g} std"))
            if self.std_ratio is not None and sd > 0:
                s = x.std()
                r = math.inf if s == 0 else max(s / sd, sd / s)
                ratios.append((f * (r - 1.0) / (self.std_ratio - 1.0), f"std ratio {r:.3g}"))
            if self.max_out_of_range is not None:
                oor = float(((x < ref.min) | (x > ref.max)).mean())
                ratios.append((f * oor / self.max_out_of_range, f"out_of_range {oor:.3g}"))
            if self.range_margin is not None:
                span = ref.max - ref.min
                lo, hi = ref.min - self.range_margin * span, ref.max + self.range_margin * span
                out = float(x.min() < lo or x.max() > hi)
                ratios.append((out * 2.0, f"min/max {x.min():.4g}/{x.max():.4g}"))
        thresholds = {
            "null_rate": self.max_null_increase,
            "mean": self.mean_shift,
            "std": self.std_ratio,
            "out_of_range": self.max_out_of_range,
            "min/max": self.range_margin,
        }
        stat = max((r for r, _ in ratios), default=0.0)
        failing = []
        for r, text in ratios:
            if r > 1.0:
                key = next(k for k in thresholds if text.startswith(k))
                failing.append(f"{text} > {thresholds[key]:.3g}")
        return float(stat), None, bool(failing), "; ".join(failing)


class _Categorical(_Windowed):
    _categorical = True
    inputs: ClassVar[str] = "categorical"

    def _counts(self, window: deque[Any]) -> tuple[np.ndarray, np.ndarray]:
        freq = self._profile.frequencies()
        cats = list(freq)
        index = {c: k for k, c in enumerate(cats)}
        if OTHER not in index:
            index[OTHER] = len(cats)
            cats.append(OTHER)
        ref = np.zeros(len(cats))
        for c, n in freq.items():
            ref[index[c]] = n
        cur = np.zeros(len(cats))
        other = index[OTHER]
        for v in window:
            if v is not None:
                cur[index.get(v, other)] += 1
        return ref, cur


class Chi2Detector(AdjustableLevel, _Categorical):
    """Chi-square homogeneity test of reference vs window category counts.

    Equals ``scipy.stats.chi2_contingency([ref_counts, window_counts])`` on the categories seen
    in either (``statistic``, ``p_value``); beyond when ``p < alpha``.

    Parameters
    ----------
    reference
        Categorical `Profile` or array of categories; default None: the first
        ``reference_size`` values of the stream.
    reference_size
        Values at the head of the stream that form the reference when no ``reference`` is
        given (integer >= 1, default 1000).
    window_size
        Values in the sliding current window (integer >= 1, default 1000).
    stride
        Evaluate every ``stride`` values once ``min_samples`` are there (integer >= 1,
        default 50).
    min_samples
        Window size of the first evaluation, ``1 <= min_samples <= window_size`` (default
        ``min(100, window_size)``).
    n_confirm
        Consecutive beyond evaluations needed to fire (integer >= 1, default 1).
    n_clear
        Consecutive quiet evaluations needed to resolve (integer >= 1, default 20).
    cooldown
        Values after a resolution before the detector may fire again (integer >= 0,
        default 0).
    alpha
        Significance level per evaluation, strictly between 0 and 1 (default 1e-6).
        `set_alpha` changes it between updates (e.g. to a Benjamini-Hochberg level,
        `streams.fdr.bh_levels`).
    clear_alpha
        An evaluation counts towards resolving only when ``p >= max(clear_alpha, alpha)``
        (strictly between 0 and 1, default 0.01): one sustained drift stays one episode.

    Counts are of values, nulls (None, NaN) included; nulls are not counted as a category.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cats = np.array(["a", "b", "c"], dtype=object)
    >>> det = Chi2Detector(reference=rng.choice(cats, 5_000, p=[0.6, 0.3, 0.1]), window_size=500)
    >>> det.update_many(rng.choice(cats, 2_000, p=[0.6, 0.3, 0.1]))
    []
    >>> [(c.status, c.index) for c in det.update_many(rng.choice(cats, 1_000, p=[0.4, 0.3, 0.3]))]
    [('firing', 149)]
    """

    name: ClassVar[str] = "chi2"
    _warmup = _WARMUP

    def __init__(
        self,
        reference: Profile | np.ndarray | None = None,
        reference_size: int = 1000,
        window_size: int = 1000,
        stride: int = 50,
        *,
        alpha: float = 1e-6,
        min_samples: int | None = None,
        n_confirm: int = 1,
        n_clear: int = 20,
        cooldown: int = 0,
        clear_alpha: float = 0.01,
    ) -> None:
        self._init_alpha(alpha)
        self.clear_alpha = probability_param("clear_alpha", clear_alpha)
        super().__init__(
            reference,
            reference_size,
            window_size,
            stride,
            min_samples,
            n_confirm,
            n_clear,
            cooldown,
        )

    def _threshold(self) -> float:
        return self._alpha

    def _params(self) -> dict[str, Any]:
        return {**self._base_params(), "alpha": self._base_alpha, "clear_alpha": self.clear_alpha}

    def _quiet(self, stat: float, p: float | None, beyond: bool) -> bool:
        return p is not None and p >= max(self.clear_alpha, self._alpha)

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON-able; NaN stored as None), the level in force included."""
        return {**super().snapshot(), "alpha": self._alpha}

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` taken by a detector with the same hyperparameters.

        The constructor's ``alpha`` is a hyperparameter; the level in force (`set_alpha`) is
        restored from the snapshot.
        """
        check_state_params(self.name, state, self._params())
        with reading_snapshot(detector_noun(self.name), SpecError):
            alpha = self._saved_alpha(state)
        super().restore(state)
        self._alpha = alpha

    def _evaluate(self, window: deque[Any]) -> tuple[float, float | None, bool, str]:
        ref, cur = self._counts(window)
        keep = (ref + cur) > 0
        if keep.sum() < 2 or cur.sum() == 0:
            return 0.0, 1.0, False, ""
        res = chi2_contingency(np.vstack([ref[keep], cur[keep]]))
        p = float(res.pvalue)
        beyond = p < self._alpha
        return float(res.statistic), p, beyond, f"chi2 p={p:.3g}" if beyond else ""


class _Divergence(_Categorical):
    def __init__(
        self,
        reference: Profile | np.ndarray | None = None,
        reference_size: int = 1000,
        window_size: int = 1000,
        stride: int = 50,
        *,
        threshold: float | None = None,
        min_samples: int | None = None,
        n_confirm: int = 1,
        n_clear: int = 20,
        cooldown: int = 0,
    ) -> None:
        t = self._default_threshold if threshold is None else threshold
        self.threshold = float_param("threshold", t, low=0.0)
        super().__init__(
            reference,
            reference_size,
            window_size,
            stride,
            min_samples,
            n_confirm,
            n_clear,
            cooldown,
        )

    _default_threshold: ClassVar[float]

    def _threshold(self) -> float:
        return self.threshold

    def _params(self) -> dict[str, Any]:
        return {**self._base_params(), "threshold": self.threshold}

    def _divergence(self, r: np.ndarray, c: np.ndarray) -> float:
        raise NotImplementedError  # pragma: no cover

    def _evaluate(self, window: deque[Any]) -> tuple[float, float | None, bool, str]:
        ref, cur = self._counts(window)
        if cur.sum() == 0:
            return 0.0, None, False, ""
        d = self._divergence(ref / ref.sum(), cur / cur.sum())
        b = d >= self.threshold
        return d, None, b, f"{self.name} {d:.3g} >= {self.threshold:.3g}" if b else ""


class PSIDetector(_Divergence):
    """Population stability index of window vs reference category proportions.

    ``PSI = sum((w_i - r_i) ln(w_i / r_i))`` with proportions floored at ``1e-4``; beyond when
    ``PSI >= threshold`` (default 0.25).

    Parameters
    ----------
    reference
        Categorical `Profile` or array of categories; default None: the first
        ``reference_size`` values of the stream.
    reference_size
        Values at the head of the stream that form the reference when no ``reference`` is
        given (integer >= 1, default 1000).
    window_size
        Values in the sliding current window (integer >= 1, default 1000).
    stride
        Evaluate every ``stride`` values once ``min_samples`` are there (integer >= 1,
        default 50).
    min_samples
        Window size of the first evaluation, ``1 <= min_samples <= window_size`` (default
        ``window_size``).
    n_confirm
        Consecutive beyond evaluations needed to fire (integer >= 1, default 1).
    n_clear
        Consecutive quiet evaluations needed to resolve (integer >= 1, default 20).
    cooldown
        Values after a resolution before the detector may fire again (integer >= 0,
        default 0).
    threshold
        PSI at or above which an evaluation is beyond (number > 0, default
        0.25: a "major" shift by convention; 0.1 is "moderate").

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> cats = np.array(["a", "b", "c"], dtype=object)
    >>> det = PSIDetector(reference=rng.choice(cats, 5_000, p=[0.6, 0.3, 0.1]), window_size=500)
    >>> det.update_many(rng.choice(cats, 2_000, p=[0.6, 0.3, 0.1]))
    []
    >>> [(c.status, c.index) for c in det.update_many(rng.choice(cats, 1_000, p=[0.2, 0.3, 0.5]))]
    [('firing', 249)]
    """

    name: ClassVar[str] = "psi"
    _default_threshold = 0.25

    def _divergence(self, r: np.ndarray, c: np.ndarray) -> float:
        r = np.maximum(r, PSI_EPS)
        c = np.maximum(c, PSI_EPS)
        return float(((c - r) * np.log(c / r)).sum())


class JSDDetector(_Divergence):
    """Jensen-Shannon distance of window vs reference category proportions (natural log).

    Equals ``scipy.spatial.distance.jensenshannon(ref, window)``; beyond when ``>= threshold``
    (default 0.1; the maximum is ``sqrt(ln 2) = 0.83``).

    Parameters
    ----------
    reference
        Categorical `Profile` or array of categories; default None: the first
        ``reference_size`` values of the stream.
    reference_size
        Values at the head of the stream that form the reference when no ``reference`` is
        given (integer >= 1, default 1000).
    window_size
        Values in the sliding current window (integer >= 1, default 1000).
    stride
        Evaluate every ``stride`` values once ``min_samples`` are there (integer >= 1,
        default 50).
    min_samples
        Window size of the first evaluation, ``1 <= min_samples <= window_size`` (default
        ``window_size``).
    n_confirm
        Consecutive beyond evaluations needed to fire (integer >= 1, default 1).
    n_clear
        Consecutive quiet evaluations needed to resolve (integer >= 1, default 20).
    cooldown
        Values after a resolution before the detector may fire again (integer >= 0,
        default 0).
    threshold
        Jensen-Shannon distance at or above which an evaluation is beyond (number > 0, default
        0.1; distances range over [0, 0.83]).

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> cats = np.array(["a", "b", "c"], dtype=object)
    >>> det = JSDDetector(reference=rng.choice(cats, 5_000, p=[0.6, 0.3, 0.1]), window_size=500)
    >>> det.update_many(rng.choice(cats, 2_000, p=[0.6, 0.3, 0.1]))
    []
    >>> [(c.status, c.index) for c in det.update_many(rng.choice(cats, 1_000, p=[0.3, 0.3, 0.4]))]
    [('firing', 149)]
    """

    name: ClassVar[str] = "jsd"
    _default_threshold = 0.1

    def _divergence(self, r: np.ndarray, c: np.ndarray) -> float:
        return float(jensenshannon(r, c))
