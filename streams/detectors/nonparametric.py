"""Distribution-free sequential detectors with a calibrated false-alarm rate.

* `NPFocusDetector` (``np_focus``, numbers): any change of the distribution -- location,
  scale or shape (a normal stream turning bimodal with the same mean and variance) -- seen
  through the bins between 15 quantiles of the warm-up values. In the NP-FOCuS family
  (Romano, Eckley, Fearnhead, arXiv 2302.02718: CUSUMs over every change size on the
  indicators ``x <= q_k``), with two differences: the 16 bins are compared jointly by one
  multinomial likelihood ratio (more power for shape changes than the sum of per-quantile
  ratios: in a prototype, normal -> bimodal was found after a median 118 values against none
  within 2,000), and the change points
  scanned are a geometric grid (``t - w`` for the windows ``w`` of
  `streams.detectors.binscan.WINDOWS`) rather than FOCuS's exact pruned set, so the cost is
  a fixed 17 comparisons per value. The pre-change distribution is not assumed: each window is
  compared with every earlier value of the reference (a two-sample test), so the estimate of
  the reference sharpens as the stream goes on.
* `FocusCategoricalDetector` (``focus_categorical``, categories): a change of any one
  category's share (0.30 -> 0.36, a new category appearing), the largest over the categories of
  the Bernoulli likelihood ratios "this category against the rest", same scan.

Ranks and bins make both distribution-free: on any continuous stream the null distribution
of ``np_focus``'s statistic is the same (bins between sample quantiles have the same
probabilities whatever the distribution), and ties (integer or heavily rounded values) only
merge bins, which lowers the statistic: the calibration is conservative there. Each threshold
was calibrated by simulation (``bench/calibrate_nonparametric.py``; the tables are below and
in the README) to ``false_alarms_per_million`` false alarms (episodes started) per 10^6 values
of a stationary stream, the warm-up and the small references right after it included.
Episodes and resolution: `streams.detectors.binscan`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.detectors.base import finite_values
from driftline.streams.detectors.binscan import (
    MAX_WINDOW,
    BinScanDetector,
    g_bernoulli,
    g_bernoulli_max,
    g_multinomial,
    threshold_for,
    window_grid,
)
from driftline.streams.params import int_param

__all__ = [
    "BERNOULLI_TABLE",
    "NP_FOCUS_TABLE",
    "FocusCategoricalDetector",
    "NPFocusDetector",
]

N_QUANTILES = 15
MAX_CATEGORIES = 60
OTHER = "(other)"

#: ``np_focus`` (15 quantiles, warm-up 100): (false alarms per 10^6 values, threshold on the
#: log likelihood ratio). Made by ``bench/calibrate_nonparametric.py``.
NP_FOCUS_TABLE: tuple[tuple[float, float], ...] = (
    (0.001, 38.67),  # extrapolated along the simulated tail
    (0.01, 35.46),  # extrapolated
    (0.1, 32.26),  # extrapolated
    (1.0, 29.0),  # measured: 10^7 simulated values
    (10.0, 25.86),
    (100.0, 22.62),
    (1000.0, 18.57),
)
#: One category's Bernoulli ratio (warm-up 100): (false alarms per 10^6 values, threshold);
#: ``focus_categorical`` with ``m`` bins uses the row of ``rate / m`` (Bonferroni; 1 bin
#: when there are 2, whose ratios are equal). Made by ``bench/calibrate_nonparametric.py``.
BERNOULLI_TABLE: tuple[tuple[float, float], ...] = (
    (0.001, 20.64),  # extrapolated along the simulated tail
    (0.01, 18.15),  # extrapolated
    (0.1, 15.66),  # extrapolated
    (1.0, 13.17),  # extrapolated
    (10.0, 11.11),  # measured: 10^7 simulated values per share, windows 16 ... 16,384
    (100.0, 8.1),
    (1000.0, 5.57),
)


def _most_changed(window: np.ndarray, ref: np.ndarray) -> int:
    """The bin whose share differs most significantly (largest `g_bernoulli`) between them."""
    return int(np.argmax(g_bernoulli(window, np.array(window.sum()), ref, np.array(ref.sum()))))


class NPFocusDetector(BinScanDetector):
    """Distribution-free detector of any change of a numeric stream's distribution.

    The first ``warmup`` values fix 15 quantile points (ties merge them); then, after every
    value, the counts of the last ``w`` values between those points are compared with the
    counts of all earlier reference values for ``w`` = 16, 23, 32, ... 4096 (a multinomial
    likelihood ratio); the detector fires when the largest exceeds the threshold calibrated to
    ``false_alarms_per_million``. See the module for the method and
    `streams.detectors.binscan` for episodes (one per sustained drift; it resolves when the
    values since the change no longer differ from the reference).

    Parameters
    ----------
    false_alarms_per_million
        False alarms (episodes started) per 10^6 values of a stationary stream, between
        0.001 and 1000 (default 1): picks the threshold from the calibration table.
    warmup
        Values before the first test (integer >= 16, default 100): their quantiles are the
        bins' edges, and no window is compared with fewer reference values. The table was
        simulated at 100; measured at 1000 false alarms per 10^6, warm-ups of 16 / 30 / 1000
        gave 0.46 / 0.64 / 1.22 times the rate.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> det = NPFocusDetector()
    >>> det.update_many(rng.normal(0.0, 1.0, 5_000))
    []
    >>> # same mean and variance, two modes
    >>> bimodal = rng.choice([-0.9, 0.9], 2_000) + rng.normal(0.0, 0.436, 2_000)
    >>> [(d.status, d.index, d.n_current) for d in det.update_many(bimodal)]
    [('firing', 190, 181)]
    >>> det.n_reference  # frozen at the values before the window that fired
    5010
    """

    name: ClassVar[str] = "np_focus"

    def __init__(self, false_alarms_per_million: float = 1.0, warmup: int = 100) -> None:
        super().__init__(warmup, false_alarms_per_million, N_QUANTILES + 1)
        self._edges = np.zeros(0)

    @property
    def edges(self) -> list[float]:
        """The bins' upper edges (quantiles of the warm-up values; empty before its end)."""
        return self._edges.tolist()

    def _prepare(self, xs: Any) -> tuple[np.ndarray, np.ndarray]:
        return finite_values(xs)

    def _set_up(self, warm: list[Any]) -> int:
        s = np.sort(np.asarray(warm, dtype=np.float64))
        ranks = np.ceil(np.arange(1, N_QUANTILES + 1) * s.size / (N_QUANTILES + 1)).astype(int)
        self._edges = np.unique(s[ranks - 1])
        return self._edges.size + 1

    def _bins(self, values: np.ndarray | list[Any]) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        return np.searchsorted(self._edges, x, side="left").astype(np.int64)

    def _g(self, a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> np.ndarray:
        return g_multinomial(a, na, b, nb)

    def _calibrated_threshold(self) -> float:
        return threshold_for(self._rate, NP_FOCUS_TABLE)

    def _detail(self, window: np.ndarray, ref: np.ndarray) -> str:
        j = _most_changed(window, ref)
        w, r = window / window.sum(), ref / max(int(ref.sum()), 1)
        lo = "-inf" if j == 0 else f"{self._edges[j - 1]:.4g}"
        hi = "inf" if j == self._edges.size else f"{self._edges[j]:.4g}"
        return f"share of values in ({lo}, {hi}]: {r[j]:.3f} -> {w[j]:.3f}"

    def _setup_state(self) -> dict[str, Any]:
        return {"edges": self._edges.tolist()}

    def _load_setup(self, state: dict[str, Any]) -> int:
        edges = np.array(state["edges"], dtype=np.float64).reshape(-1)
        if edges.size == 0 or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise ValueError(f"edges must be increasing finite numbers, got {edges.tolist()}")
        self._edges = edges
        return edges.size + 1


class FocusCategoricalDetector(BinScanDetector):
    """Detector of a change of any one category's share (categories; None/NaN skipped).

    The first ``warmup`` values name the categories (the ``max_categories`` most frequent;
    the others, and categories first seen later, count together as ``"(other)"``); then, after
    every value, each category's share among the last ``w`` values is compared with its share
    among all earlier reference values (a Bernoulli likelihood ratio, the category against the
    rest) for ``w`` = 16, 23, ... 16384; the detector fires when the largest exceeds the
    threshold calibrated to ``false_alarms_per_million`` (Bonferroni over the categories).
    `Detection.detail` names the category and its two shares.

    Parameters
    ----------
    false_alarms_per_million
        False alarms (episodes started) per 10^6 values of a stationary stream, between
        0.001 and 1000 (default 1).
    warmup
        Values before the first test (integer >= 16, default 100): they name the categories,
        and no window is compared with fewer reference values.
    max_categories
        Categories watched one by one (integer between 1 and 60, default 20), besides
        ``"(other)"``; each costs a little power (the Bonferroni split).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cats = np.array(["a", "b", "c", "d"], dtype=object)
    >>> det = FocusCategoricalDetector()
    >>> det.update_many(rng.choice(cats, 20_000, p=[0.3, 0.3, 0.2, 0.2]))
    []
    >>> (d,) = det.update_many(rng.choice(cats, 5_000, p=[0.36, 0.274, 0.183, 0.183]))
    >>> d.status, d.index, d.detail
    ('firing', 1919, "share of 'a': 0.292 -> 0.351")
    """

    name: ClassVar[str] = "focus_categorical"
    inputs: ClassVar[str] = "categorical"
    #: A share change of a few points needs thousands of values (0.30 -> 0.36: about 2,000,
    #: more when the reference share came out high); windows to 16,384 keep such a change
    #: found once it is older than 4,096 values, when the reference has absorbed part of it.
    max_window: ClassVar[int] = 4 * MAX_WINDOW
    windows: ClassVar[np.ndarray] = window_grid(4 * MAX_WINDOW)

    def __init__(
        self, false_alarms_per_million: float = 1.0, warmup: int = 100, max_categories: int = 20
    ) -> None:
        self.max_categories = int_param("max_categories", max_categories, 1, MAX_CATEGORIES)
        super().__init__(warmup, false_alarms_per_million, 16)
        self._categories: list[str] = []
        self._codes: dict[str, int] = {}

    @property
    def categories(self) -> list[str]:
        """The categories watched one by one, most frequent first (empty before the warm-up
        ends); every other value counts as ``"(other)"``."""
        return list(self._categories)

    def update(self, x: Any) -> None:
        """Consume one value (a category; None/NaN skipped)."""
        self.update_many([x])

    def _prepare(self, xs: Any) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(xs, dtype=object)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise DriftlineError(f"xs: got shape {arr.shape}; expected a 1-D array")
        keep = [
            i
            for i, v in enumerate(arr.tolist())
            if not (v is None or (isinstance(v, float) and math.isnan(v)))
        ]
        values = np.array([str(v) for v in arr[keep].tolist()], dtype=object)
        return values, np.array(keep, dtype=np.int64)

    def _set_up(self, warm: list[Any]) -> int:
        names, counts = np.unique(np.array(warm, dtype=str), return_counts=True)
        order = sorted(range(names.size), key=lambda i: (-counts[i], names[i]))
        self._categories = [str(names[i]) for i in order[: self.max_categories]]
        self._codes = {c: i for i, c in enumerate(self._categories)}
        return len(self._categories) + 1

    def _bins(self, values: np.ndarray | list[Any]) -> np.ndarray:
        other, codes = len(self._categories), self._codes
        vals = values.tolist() if isinstance(values, np.ndarray) else values
        return np.fromiter((codes.get(v, other) for v in vals), dtype=np.int64, count=len(vals))

    def _g(self, a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> np.ndarray:
        return g_bernoulli_max(a, na, b, nb)

    def _calibrated_threshold(self) -> float:
        family = self._n_bins if self._n_bins > 2 else 1
        return threshold_for(self._rate / family, BERNOULLI_TABLE)

    def _detail(self, window: np.ndarray, ref: np.ndarray) -> str:
        j = _most_changed(window, ref)
        name = self._categories[j] if j < len(self._categories) else OTHER
        w, r = window[j] / window.sum(), ref[j] / max(int(ref.sum()), 1)
        return f"share of {name!r}: {r:.3f} -> {w:.3f}"

    def _setup_state(self) -> dict[str, Any]:
        return {"categories": list(self._categories)}

    def _load_setup(self, state: dict[str, Any]) -> int:
        cats = [str(c) for c in state["categories"]]
        if not cats or len(set(cats)) != len(cats) or len(cats) > self.max_categories:
            raise ValueError(f"categories must be 1 to {self.max_categories} distinct names")
        self._categories = cats
        self._codes = {c: i for i, c in enumerate(cats)}
        return len(cats) + 1
