"""Multivariate drift: PCA reconstruction error of several features over windows of rows.

`PCAReconstructionDetector` watches the joint distribution of ``d`` features, which no
univariate detector sees: a correlation that flips (+0.8 to -0.8) leaves every feature's own
distribution the same, but moves the rows away from the reference's principal subspace.

How it decides
--------------
1. Reference: a `streams.pca_reference.PCAReference` given (from ``driftline profile``) or fitted
   on the first ``reference_size`` complete rows (rows with a missing or non-finite value are
   skipped: they neither count nor move any window).
2. Each later row's reconstruction error; every ``stride`` rows (default ``window_size``:
   tumbling chunks, as NannyML does) the mean error of the last ``window_size`` rows.
3. The window is *beyond* when its mean is outside ``[lower, upper]``: the reference error mean
   plus the two-sided Cornish-Fisher quantiles, at level ``false_alarm_rate * stride / 2`` per
   side, of the difference between a window mean and the reference mean (variance
   ``sd^2 (1/window_size + 2/n_reference)``: the reference mean's sampling error, and as much
   again for the PCA fitted on the same rows, whose own error varies from one reference to the
   next; skewness and kurtosis from the held-out reference errors). Each evaluation is beyond
   with probability at most about ``false_alarm_rate * stride`` on a stationary stream, so
   beyond evaluations, and hence false alarms, number at most about ``false_alarm_rate`` per
   row (evaluations of overlapping windows are correlated: fewer).
4. `streams.detectors.alarm.Alarm` turns beyond evaluations into firing / resolved episodes
   (``n_confirm``, ``n_clear``, ``cooldown``).

The measured false alarms and delays are in ``bench/multivariate_bench.py``.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.detectors.base import FIRING, AlarmedDetector, Detection
from driftline.streams.params import MAX_VALUES, float_param, int_param, show
from driftline.streams.pca_reference import FOLDS, PCAReference
from driftline.streams.plain_state import dec_float, enc_float
from driftline.streams.snapshots import check_snapshot, reading_snapshot

__all__ = ["METHODS", "PCAReconstructionDetector", "cornish_fisher", "error_limits"]

#: The reference side's share of a window-vs-reference difference's variance, in units of
#: ``sd^2 / n_reference``: 1 for the reference mean, 1 more for the fit (see the module doc).
#: With 1 alone, 3e7 stationary rows (normal, 5 features) gave 1.17 false alarms per 10^6 rows
#: at a nominal 1e-6: the references whose mean came out low dominate the average.
REFERENCE_VARIANCE = 2.0

#: ``[[multivariate]] method`` values.
METHODS: tuple[str, ...] = ("pca",)


def cornish_fisher(z: float, k3: float, k4: float) -> float:
    """Quantile of a standardised variable with third / fourth cumulants ``k3`` / ``k4`` at the
    normal quantile ``z`` (Cornish-Fisher expansion to second order).

    Examples
    --------
    >>> cornish_fisher(3.0, 0.0, 0.0), round(cornish_fisher(3.0, 0.1, 0.0), 4)
    (3.0, 3.1225)
    """
    return (
        z
        + (z * z - 1.0) * k3 / 6.0
        + (z**3 - 3.0 * z) * k4 / 24.0
        - (2.0 * z**3 - 5.0 * z) * k3 * k3 / 36.0
    )


def error_limits(ref: PCAReference, window_size: int, level: float) -> tuple[float, float]:
    """``(lower, upper)`` limits of a ``window_size``-row mean reconstruction error, each side
    at ``level / 2`` (see the module doc).

    Examples
    --------
    >>> ref = PCAReference([0, 0], [1, 1], [[1, 0]], 1000, 3.0, 1.0, 0.5, 0.0, 0.0)
    >>> lo, hi = error_limits(ref, 250, 0.05)
    >>> round(lo, 4), round(hi, 4)
    (0.9241, 1.0759)
    """
    vw, vr = 1.0 / window_size, REFERENCE_VARIANCE / ref.n
    s = ref.error_std * math.sqrt(vw + vr)
    k3 = ref.error_skew * (vw * vw - vr * vr) / (vw + vr) ** 1.5
    k4 = ref.error_kurtosis * (vw**3 + vr**3) / (vw + vr) ** 2
    z = NormalDist().inv_cdf(1.0 - level / 2.0)
    lo = ref.error_mean + cornish_fisher(-z, k3, k4) * s
    hi = ref.error_mean + cornish_fisher(z, k3, k4) * s
    return min(lo, ref.error_mean), max(hi, ref.error_mean)


class PCAReconstructionDetector(AlarmedDetector):
    """Drift in the joint distribution of ``n_features`` features, over batches of rows.

    An `streams.detectors.base.AlarmedDetector` whose values are rows: ``statistic`` is the last
    evaluated window's mean reconstruction error (NaN before the first), ``n_seen`` counts
    complete rows (the reference's included). Not in the univariate registry
    (`streams.detectors.factory.DETECTORS`): a spec declares it under ``[[multivariate]]``.

    Parameters
    ----------
    n_features
        Columns of every batch (2 or more).
    reference_size
        Complete rows at the head of the stream that form the reference (unless ``reference``).
    variance
        Share of the standardised reference's variance the kept components explain (0-1).
    window_size
        Rows whose mean reconstruction error is compared with the reference.
    stride
        Evaluate every ``stride`` rows; None: ``window_size`` (non-overlapping windows).
    false_alarm_rate
        Beyond-threshold evaluations per row on a stationary stream (see the module doc).
    n_confirm, n_clear, cooldown
        `streams.detectors.alarm.Alarm`'s hysteresis.
    reference
        A fitted `streams.pca_reference.PCAReference` (with ``n_features`` features).

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> pos = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=3000)
    >>> neg = rng.multivariate_normal([0, 0], [[1, -0.8], [-0.8, 1]], size=1000)
    >>> det = PCAReconstructionDetector(2, reference_size=2000, window_size=250)
    >>> [(d.status, d.index) for d in det.update_many(np.vstack([pos, neg]))]
    [('firing', 3249)]
    >>> det.n_components, round(det.statistic, 2), det.in_drift
    (1, 0.75, True)
    """

    name = "pca"
    inputs = "real"

    def __init__(
        self,
        n_features: int,
        reference_size: int = 2000,
        variance: float = 0.65,
        window_size: int = 500,
        stride: int | None = None,
        false_alarm_rate: float = 1e-6,
        n_confirm: int = 1,
        n_clear: int = 3,
        cooldown: int = 0,
        reference: PCAReference | None = None,
    ) -> None:
        self.n_features = int_param("n_features", n_features, 2, 10_000)
        self.reference_size = int_param("reference_size", reference_size, 2 * FOLDS, MAX_VALUES)
        self.variance = float_param("variance", variance, low=0.0, high=1.0)
        self.window_size = int_param("window_size", window_size, 2, MAX_VALUES)
        self.stride = (
            self.window_size if stride is None else int_param("stride", stride, 1, MAX_VALUES)
        )
        self.false_alarm_rate = float_param("false_alarm_rate", false_alarm_rate, low=0.0,
                                            high=1.0)  # fmt: skip
        self.level = self.false_alarm_rate * self.stride
        if self.level >= 1.0:
            raise SpecError(
                f"false_alarm_rate: got {show(false_alarm_rate)}; times stride "
                f"({self.stride}) it must stay below 1 (it is the level of each evaluation)"
            )
        self._alarm = Alarm(n_confirm, n_clear, cooldown)
        self.n_confirm, self.n_clear, self.cooldown = n_confirm, n_clear, cooldown
        if reference is not None and reference.n_features != self.n_features:
            raise DriftlineError(
                f"reference: has {reference.n_features} features; expected {self.n_features}"
            )
        self._given_reference = reference is not None
        self._ref: PCAReference | None = None
        self._limits = (math.nan, math.nan)
        self._buffer: list[list[float]] = []  # reference rows while the reference fills
        self._errors = np.zeros(0)  # the last window_size - 1 errors
        self._n_monitored = 0  # rows after the reference
        self._n_seen = 0
        self._n_eval = 0
        self._statistic = math.nan
        if reference is not None:
            self._set_reference(reference)

    # ------------------------------------------------------------------ reading
    @property
    def reference(self) -> PCAReference | None:
        """The reference (None while the head of the stream fills it)."""
        return self._ref

    @property
    def n_components(self) -> int:
        """Kept principal components (0 before the reference)."""
        return 0 if self._ref is None else self._ref.n_components

    @property
    def limits(self) -> tuple[float, float]:
        """``(lower, upper)`` bounds of a window's mean error (NaN before the reference)."""
        return self._limits

    @property
    def p_value(self) -> None:
        """None: the limits are quantiles, not a test's p-value."""
        return None

    def _set_reference(self, ref: PCAReference) -> None:
        self._ref = ref
        self._limits = error_limits(ref, self.window_size, self.level)

    # ------------------------------------------------------------------ updating
    def update(self, row: np.ndarray) -> list[Detection]:  # type: ignore[override]
        """One row; same as ``update_many(row[None, :])``."""
        return self.update_many(np.asarray(row, dtype=np.float64).reshape(1, -1))

    def update_many(self, rows: np.ndarray) -> list[Detection]:
        """Consume a batch (rows x ``n_features``) in order; return the state changes it caused,
        ``index`` being the position in ``rows`` of the row that completed the window."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise DriftlineError(
                f"rows: got shape {x.shape}; expected (n, {self.n_features}), one column per "
                "feature"
            )
        pos = np.flatnonzero(np.isfinite(x).all(axis=1))
        if pos.size == 0:
            return []
        start = 0
        if self._ref is None:
            take = min(self.reference_size - len(self._buffer), pos.size)
            self._buffer.extend(x[pos[:take]].tolist())
            start = take
            if len(self._buffer) == self.reference_size:
                self._set_reference(PCAReference.fit(np.asarray(self._buffer), self.variance))
                self._buffer = []
        self._n_seen += start
        if start == pos.size:
            return []
        return self._monitor(x, pos[start:])

    def _monitor(self, x: np.ndarray, pos: np.ndarray) -> list[Detection]:
        assert self._ref is not None
        errs = self._ref.errors(x[pos])
        w, before = self.window_size, self._n_monitored
        counts = before + 1 + np.arange(pos.size)  # rows monitored after each row
        at = np.flatnonzero((counts >= w) & ((counts - w) % self.stride == 0))
        ext = np.concatenate([self._errors, errs])
        base = self._errors.size  # ext index of errs[0]
        stats = np.array([math.fsum(ext[base + j - w + 1 : base + j + 1].tolist()) / w
                          for j in at.tolist()])  # fmt: skip
        self._errors = ext[-(w - 1) :] if w > 1 else ext[:0]
        self._n_monitored = before + pos.size
        seen_before = self._n_seen
        self._n_seen += pos.size
        if at.size == 0:
            return []
        self._n_eval += at.size
        self._statistic = float(stats[-1])
        lo, hi = self._limits
        beyond = (stats > hi) | (stats < lo)
        out = []
        for i, status in self._alarm.feed(beyond, seen_before + at + 1):
            stat = float(stats[i])
            out.append(
                Detection(
                    index=int(pos[at[i]]),
                    statistic=stat,
                    p_value=None,
                    threshold=lo if stat < lo else hi,
                    n_reference=self._ref.n,
                    n_current=w,
                    status=status,
                    detail=self._detail(stat, status),
                )
            )
        return out

    def _detail(self, stat: float, status: str) -> str:
        assert self._ref is not None
        lo, hi = self._limits
        where = "outside" if status == FIRING else "back within"
        return (
            f"mean reconstruction error {stat:.4g} over {self.window_size} rows {where} "
            f"[{lo:.4g}, {hi:.4g}] (reference mean {self._ref.error_mean:.4g}; "
            f"{self._ref.n_components} of {self.n_features} components)"
        )

    # ------------------------------------------------------------------ state
    def _params(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "reference_size": self.reference_size,
            "variance": self.variance,
            "window_size": self.window_size,
            "stride": self.stride,
            "false_alarm_rate": self.false_alarm_rate,
            **self._alarm.params(),
        }

    def snapshot(self) -> dict[str, Any]:
        """State as plain JSON data; ``restore(snapshot())`` continues exactly."""
        return {
            "detector": self.name,
            "params": self._params(),
            "reference": None if self._ref is None else self._ref.to_dict(),
            "buffer": [list(r) for r in self._buffer],
            "errors": self._errors.tolist(),
            "n_monitored": self._n_monitored,
            "n_seen": self._n_seen,
            "n_eval": self._n_eval,
            "statistic": enc_float(self._statistic),
            "alarm": self._alarm.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a `snapshot` taken with the same hyperparameters."""
        check_snapshot(state, self.name, self._params(), key="detector",
                       what=f"{self.name!r} detector")  # fmt: skip
        with reading_snapshot(f"{self.name!r} detector"):
            ref = None if state["reference"] is None else PCAReference.from_dict(state["reference"])
            buffer = [[float(v) for v in r] for r in state["buffer"]]
            errors = np.asarray([float(v) for v in state["errors"]], dtype=np.float64)
            n_mon, n_seen, n_eval = (int(state[k]) for k in ("n_monitored", "n_seen", "n_eval"))
            stat = dec_float(state["statistic"], "statistic")
            alarm = Alarm(self.n_confirm, self.n_clear, self.cooldown)
            alarm.restore(state["alarm"])
        consistent = (
            (ref is None or ref.n_features == self.n_features)
            and (n_mon == 0 and len(buffer) < self.reference_size if ref is None else not buffer)
            and all(len(r) == self.n_features for r in buffer)
            and errors.size == min(n_mon, self.window_size - 1)
            and np.isfinite(errors).all()
            and n_seen >= n_mon >= 0
        )
        if not consistent:
            raise DriftlineError(
                f"state: malformed {self.name!r} detector snapshot (its reference, buffered rows "
                "and window do not fit together or these hyperparameters)"
            )
        self._ref, self._limits = None, (math.nan, math.nan)
        if ref is not None:
            self._set_reference(ref)
        self._buffer, self._errors = buffer, errors
        self._n_monitored, self._n_seen, self._n_eval = n_mon, n_seen, n_eval
        self._statistic, self._alarm = stat, alarm
