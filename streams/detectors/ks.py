"""Two-sample Kolmogorov-Smirnov drift test: fixed reference vs a sliding current window."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.stats import ks_2samp

from driftline.errors import DriftlineError, SpecError
from streams.detectors.base import (
    FIRING,
    RESOLVED,
    Detection,
    DriftDetector,
    check_state_params,
    finite_values,
)

__all__ = ["KSWindowDetector"]


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise SpecError(f"{name}: got {value!r}; expected an integer >= {minimum}")
    return int(value)


class KSWindowDetector(DriftDetector):
    """KS test of a fixed reference sample against the last ``window_size`` values.

    The reference is the first ``reference_size`` finite values seen, or ``reference`` if
    given. Values after the reference is complete fill a sliding current window (a ring buffer;
    it never overlaps the reference). Once it is full, ``scipy.stats.ks_2samp(reference,
    current)`` is evaluated on the value that filled it and then every ``stride`` values. The
    detector fires when ``p < alpha`` and resolves when ``p >= alpha`` again; `update_many`
    returns a `Detection` only on such a change.

    Parameters
    ----------
    reference_size
        Size of the reference sample taken from the head of the stream (>= 1). Ignored when
        ``reference`` is given (it becomes ``len(reference)``).
    window_size
        Size of the sliding current window (>= 1).
    alpha
        Significance level, in (0, 1).
    stride
        Evaluate every ``stride`` values once the window is full (>= 1).
    reference
        Optional fixed reference sample (1-D, finite, non-empty), e.g. training data.

    Raises
    ------
    SpecError
        If a hyperparameter is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> det = KSWindowDetector(reference_size=200, window_size=200, alpha=0.001, stride=20)
    >>> det.update_many(rng.normal(0.0, 1.0, 1_000))
    []
    >>> changes = det.update_many(rng.normal(2.0, 1.0, 300))
    >>> [(c.status, c.index, c.p_value < 0.001) for c in changes]
    [('firing', 39, True)]
    >>> det.drift_detected, det.n_seen, det.n_evaluations
    (True, 1300, 46)
    """

    name: ClassVar[str] = "ks"

    def __init__(
        self,
        reference_size: int = 500,
        window_size: int = 500,
        alpha: float = 0.001,
        stride: int = 50,
        *,
        reference: np.ndarray | None = None,
    ) -> None:
        self.window_size = _positive_int("window_size", window_size)
        self.stride = _positive_int("stride", stride)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, int | float | np.floating)
            or not 0.0 < float(alpha) < 1.0
        ):
            raise SpecError(f"alpha: got {alpha!r}; expected a number strictly between 0 and 1")
        self.alpha = float(alpha)
        if reference is not None:
            ref = np.asarray(reference, dtype=np.float64)
            if ref.ndim != 1 or ref.size == 0 or not np.isfinite(ref).all():
                raise SpecError(
                    f"reference: got an array of shape {ref.shape} "
                    f"({int((~np.isfinite(ref)).sum())} non-finite); "
                    "expected a non-empty 1-D array of finite numbers"
                )
            self.reference_size = int(ref.size)
            self._ref = ref.copy()
            self._n_ref = self.reference_size
        else:
            self.reference_size = _positive_int("reference_size", reference_size)
            self._ref = np.empty(self.reference_size, dtype=np.float64)
            self._n_ref = 0
        self._buf = np.empty(self.window_size, dtype=np.float64)
        self._pos = 0  # next write position in the ring
        self._n_cur = 0  # values consumed after the reference was complete
        self._n_eval = 0
        self._n_seen = 0
        self._firing = False
        self._statistic = math.nan
        self._p_value: float | None = None

    # ------------------------------------------------------------------ state
    @property
    def drift_detected(self) -> bool:
        """True while the last evaluation had ``p < alpha``."""
        return self._firing

    @property
    def statistic(self) -> float:
        """KS D of the last evaluation (NaN before the first)."""
        return self._statistic

    @property
    def p_value(self) -> float | None:
        """p-value of the last evaluation (None before the first)."""
        return self._p_value

    @property
    def n_seen(self) -> int:
        """Finite values consumed, reference included."""
        return self._n_seen

    @property
    def n_evaluations(self) -> int:
        """Number of KS tests run so far."""
        return self._n_eval

    @property
    def reference(self) -> np.ndarray:
        """Copy of the reference collected so far."""
        return self._ref[: self._n_ref].copy()

    @property
    def current_window(self) -> np.ndarray:
        """Copy of the current window, oldest first (may be shorter than ``window_size``)."""
        if self._n_cur < self.window_size:
            return self._buf[: self._n_cur].copy()
        return np.concatenate([self._buf[self._pos :], self._buf[: self._pos]])

    # ------------------------------------------------------------------ update
    def update_many(self, xs: np.ndarray) -> list[Detection]:
        """Consume a batch; return the firing/resolved changes with their batch positions.

        Parameters
        ----------
        xs
            1-D array of values; non-finite ones are skipped.

        Returns
        -------
        list of Detection
            In order; empty when the state did not change.
        """
        vals, pos = finite_values(xs)
        k = vals.size
        out: list[Detection] = []
        if k == 0:
            return out
        self._n_seen += k
        i = 0
        if self._n_ref < self.reference_size:
            i = min(self.reference_size - self._n_ref, k)
            self._ref[self._n_ref : self._n_ref + i] = vals[:i]
            self._n_ref += i
            if i == k:
                return out
        new = vals[i:]
        new_pos = pos[i:]
        w, s = self.window_size, self.stride
        counts = self._n_cur + np.arange(1, new.size + 1)
        evals = np.flatnonzero((counts >= w) & ((counts - w) % s == 0))
        if evals.size:
            history = self.current_window
            stream = np.concatenate([history, new])
            off = history.size + 1
            for j in evals.tolist():
                current = stream[off + j - w : off + j]
                res = ks_2samp(self._ref, current, method="auto")
                stat, p = float(res.statistic), float(res.pvalue)
                self._statistic, self._p_value = stat, p
                self._n_eval += 1
                firing = p < self.alpha
                if firing != self._firing:
                    self._firing = firing
                    out.append(
                        Detection(
                            index=int(new_pos[j]),
                            statistic=stat,
                            p_value=p,
                            threshold=self.alpha,
                            n_reference=self.reference_size,
                            n_current=w,
                            status=FIRING if firing else RESOLVED,
                        )
                    )
        self._push(new)
        return out

    def _push(self, new: np.ndarray) -> None:
        w = self.window_size
        if new.size >= w:
            self._buf[:] = new[-w:]
            self._pos = 0
        else:
            idx = (self._pos + np.arange(new.size)) % w
            self._buf[idx] = new
            self._pos = (self._pos + new.size) % w
        self._n_cur += new.size

    # ------------------------------------------------------------------ snapshot
    def _params(self) -> dict[str, Any]:
        return {
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "alpha": self.alpha,
            "stride": self.stride,
        }

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON-able); `restore` continues exactly."""
        return {
            "detector": self.name,
            "params": self._params(),
            "reference": self.reference.tolist(),
            "window": self.current_window.tolist(),
            "n_current": self._n_cur,
            "n_seen": self._n_seen,
            "n_evaluations": self._n_eval,
            "firing": self._firing,
            "statistic": None if math.isnan(self._statistic) else self._statistic,
            "p_value": self._p_value,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `snapshot` taken by a detector with the same hyperparameters.

        Raises
        ------
        DriftlineError
            If ``state`` is not a KS snapshot with these hyperparameters.
        """
        check_state_params(self.name, state, self._params())
        try:
            ref = np.asarray(state["reference"], dtype=np.float64)
            window = np.asarray(state["window"], dtype=np.float64)
            n_cur = int(state["n_current"])
            n_seen = int(state["n_seen"])
            n_eval = int(state["n_evaluations"])
            firing = bool(state["firing"])
            stat = state["statistic"]
            p = state["p_value"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DriftlineError(f"state: not a KS detector snapshot ({exc!r})") from exc
        if (
            ref.ndim != 1
            or ref.size > self.reference_size
            or window.size != min(n_cur, self.window_size)
            or (n_cur and ref.size != self.reference_size)
        ):
            raise DriftlineError("state: inconsistent KS snapshot (reference/window sizes)")
        self._ref = np.empty(self.reference_size, dtype=np.float64)
        self._ref[: ref.size] = ref
        self._n_ref = int(ref.size)
        self._buf = np.empty(self.window_size, dtype=np.float64)
        self._buf[: window.size] = window
        self._pos = window.size % self.window_size
        self._n_cur = n_cur
        self._n_seen = n_seen
        self._n_eval = n_eval
        self._firing = firing
        self._statistic = math.nan if stat is None else float(stat)
        self._p_value = None if p is None else float(p)
