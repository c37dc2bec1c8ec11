"""Score calibration by isotonic regression (pool-adjacent-violators), pure numpy.

A classifier's score is calibrated when, among the events scored ``s``, a share ``s`` is
positive. Label-free performance estimation (`streams.performance_estimation`) needs calibrated
probabilities: `IsotonicCalibrator` fits the non-decreasing map score -> P(y = 1 | score) on a
labelled reference, the same fit as ``sklearn.isotonic.IsotonicRegression(out_of_bounds="clip",
y_min=0, y_max=1)`` (tested against it): equal scores are pooled into their weighted mean, the
pool-adjacent-violators algorithm makes the means non-decreasing, and a new score is mapped by
linear interpolation between the fitted points (clipped at both ends).

Examples
--------
>>> cal = IsotonicCalibrator().fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
>>> cal.x.tolist(), cal.y.tolist()
([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
>>> [round(p, 6) for p in cal.predict(np.array([0.0, 0.15, 0.35, 0.9])).tolist()]
[0.0, 0.25, 0.75, 1.0]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.labels import float_array, floats_to_json
from driftline.streams.snapshots import check_snapshot, reading_snapshot

__all__ = ["IsotonicCalibrator", "pool_adjacent_violators"]


def pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares.

    Parameters
    ----------
    y
        Values in their order (1-D).
    w
        Positive weights, same length.

    Returns
    -------
    numpy.ndarray
        The fitted values (blocks of equal values: the weighted means of the pooled ``y``).

    Examples
    --------
    >>> pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0]), np.ones(4)).tolist()
    [1.0, 2.5, 2.5, 4.0]
    >>> pool_adjacent_violators(np.array([3.0, 1.0]), np.array([1.0, 3.0])).tolist()
    [1.5, 1.5]
    """
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(np.asarray(y, dtype=np.float64).tolist(),
                     np.asarray(w, dtype=np.float64).tolist(), strict=True):  # fmt: skip
        m, ww, n = v, wt, 1
        while means and means[-1] >= m:  # pool with the previous block while it violates
            pw = weights.pop()
            m = (means.pop() * pw + m * ww) / (pw + ww)
            ww += pw
            n += sizes.pop()
        means.append(m)
        weights.append(ww)
        sizes.append(n)
    return np.repeat(np.array(means, dtype=np.float64), np.array(sizes, dtype=np.int64))


class IsotonicCalibrator:
    """Non-decreasing map from a score to P(class 1), fitted on labelled scores.

    The fitted map is two arrays of plain numbers (`x`, `y`: the fitted points, as sklearn's
    ``X_thresholds_`` / ``y_thresholds_``), kept in snapshots as JSON.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(0, 1, 20_000)
    >>> y = (rng.uniform(0, 1, s.size) < s**2).astype(float)  # over-confident scores
    >>> cal = IsotonicCalibrator().fit(s, y)
    >>> [round(p, 1) for p in cal.predict(np.array([0.5, 0.9])).tolist()]
    [0.2, 0.8]
    """

    kind: ClassVar[str] = "isotonic_calibrator"

    def __init__(self) -> None:
        self.x = np.empty(0, dtype=np.float64)
        self.y = np.empty(0, dtype=np.float64)
        self.n_fit = 0

    @property
    def fitted(self) -> bool:
        return self.x.size > 0

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        """Fit on scores and their 0/1 labels (non-finite pairs are left out).

        Raises
        ------
        DriftlineError
            If no finite (score, label) pair is given.
        """
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if s.shape != y.shape or s.ndim != 1:
            raise DriftlineError(f"calibration: scores {s.shape} and labels {y.shape} differ")
        ok = np.isfinite(s) & np.isfinite(y)
        s, y = s[ok], y[ok]
        if s.size == 0:
            raise DriftlineError("calibration: no finite (score, label) pair to fit on")
        order = np.lexsort((y, s))
        s, y = s[order], y[order]
        ux, start, counts = np.unique(s, return_index=True, return_counts=True)
        means = np.add.reduceat(y, start) / counts  # equal scores pooled
        fitted = np.clip(pool_adjacent_violators(means, counts.astype(np.float64)), 0.0, 1.0)
        keep = np.ones(fitted.size, dtype=bool)  # the points where the fitted map bends
        if fitted.size > 2:
            keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
        self.x, self.y, self.n_fit = ux[keep], fitted[keep], int(s.size)
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``scores`` (NaN stays NaN)."""
        if not self.fitted:
            raise DriftlineError("calibration: predict before fit")
        s = np.asarray(scores, dtype=np.float64)
        if self.x.size == 1:
            return np.where(np.isnan(s), np.nan, self.y[0])
        return np.interp(s, self.x, self.y)

    def snapshot(self) -> dict[str, Any]:
        """The fitted map as plain JSON data (`restore` continues from it)."""
        return {
            "kind": self.kind,
            "params": {},
            "x": floats_to_json(self.x),
            "y": floats_to_json(self.y),
            "n_fit": self.n_fit,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the map by a `snapshot` (also after a JSON round trip)."""
        check_snapshot(state, self.kind, {})
        with reading_snapshot(self.kind):
            x = float_array(state["x"])
            y = float_array(state["y"], x.shape)
            n_fit = int(state["n_fit"])
        if x.size and (np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0)):
            raise DriftlineError("state: the calibration map is not increasing")
        self.x, self.y, self.n_fit = x, y, n_fit

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> IsotonicCalibrator:
        cal = cls()
        cal.restore(state)
        return cal
