"""A PCA reference of several features: standardisation, the kept components, and the
distribution of the reconstruction error on held-out reference rows.

As in NannyML's data reconstruction drift: each feature is standardised with the reference's mean
and (population) standard deviation, a PCA fitted on the standardised reference keeps the fewest
components whose explained variance ratio exceeds ``variance`` (sklearn's rule for a fractional
``n_components``), and a row's *reconstruction error* is the Euclidean distance between its
standardised values and their projection back from the kept components. A change in how the
features move together (a correlation that flips) moves the error even when every feature's own
distribution stays the same.

Calibration moments
-------------------
The detector compares a window's mean error with the reference's, so it needs the error's mean,
standard deviation, skewness and excess kurtosis on rows the PCA did *not* see (rows it was fitted
on reconstruct better than new rows). They are estimated by ``folds``-fold cross-fitting: the
scaler and PCA (same number of components) are refitted without each fold and the fold's errors
computed with that fit. Fits on (folds-1)/folds of the rows reconstruct new rows slightly worse
than the fit on all of them, so the moments err towards larger, more spread errors (fewer false
alarms).

Errors are computed with ``np.einsum`` loops (no BLAS): a row's error does not depend on the
other rows of its batch, so feeding rows one by one or in batches gives identical bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.params import float_param
from driftline.streams.snapshots import reading_snapshot

__all__ = ["PCAReference", "n_components_for", "reconstruction_errors"]

#: Folds of the cross-fitting that estimates the error's moments on unseen rows.
FOLDS = 5
#: Quantile of the held-out reference errors at which every error is capped (winsorised): one
#: wild row moves a window's mean by at most cap / window_size, and the capped error's moments,
#: well estimated from the reference, describe a window mean's tail (see the module doc).
CAP_QUANTILE = 0.99


def n_components_for(explained_variance: np.ndarray, variance: float) -> int:
    """The fewest components whose cumulative explained variance ratio exceeds ``variance``
    (sklearn ``PCA(n_components=variance)``, a fraction in (0, 1)).

    Examples
    --------
    >>> n_components_for(np.array([1.8, 0.2]), 0.65), n_components_for(np.array([1., 1.]), 0.5)
    (1, 2)
    """
    total = float(explained_variance.sum())
    if total <= 0.0:
        return 1
    ratio = np.cumsum(explained_variance) / total
    return int(min(np.searchsorted(ratio, variance, side="right") + 1, explained_variance.size))


def _scale_of(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # a constant reference column: unit scale (its own drift then shows as error, not inf)
    return mean, np.where(std > 0.0, std, 1.0)


def _components(z: np.ndarray, k: int | None, variance: float) -> np.ndarray:
    """The first principal axes of standardised ``z`` (rows), as rows, signs fixed as sklearn
    does (largest |loading| positive)."""
    _u, s, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    if k is None:
        k = n_components_for(s**2 / max(z.shape[0] - 1, 1), variance)
    vt = vt[:k]
    signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
    return vt * np.where(signs == 0, 1.0, signs)[:, None]


def reconstruction_errors(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """Euclidean reconstruction error of each row of ``x`` (rows x features), each row's sums
    in a fixed order (independent of the batch it is in).

    Examples
    --------
    >>> comp = np.array([[1.0, 1.0]]) / np.sqrt(2.0)
    >>> x = np.array([[1.0, 1.0], [1.0, -1.0]])
    >>> reconstruction_errors(x, np.zeros(2), np.ones(2), comp).round(6).tolist()
    [0.0, 1.414214]
    """
    z = (x - mean) / scale
    # np.einsum without `optimize` runs its own loops (never BLAS, whose summation order may
    # depend on the matrix's shape): each row's sums are the same in a batch of any size
    proj = np.einsum("ij,kj->ik", z, components)
    resid = z - np.einsum("ik,kj->ij", proj, components)
    return np.sqrt(np.einsum("ij,ij->i", resid, resid))


@dataclass
class PCAReference:
    """What a PCA reconstruction detector compares with (plain data, `to_dict` / `from_dict`).

    Attributes
    ----------
    mean, scale
        Per feature: the reference mean and population standard deviation (1 where constant).
    components
        The kept principal axes of the standardised reference, one row each.
    n
        Reference rows.
    error_cap
        The `CAP_QUANTILE` quantile of the held-out reference errors: errors are capped there.
    error_mean, error_std, error_skew, error_kurtosis
        Moments of the capped reconstruction error on held-out reference rows (see the module
        doc); kurtosis is the excess kurtosis.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=4000)
    >>> ref = PCAReference.fit(x, variance=0.65)
    >>> ref.n_components, round(ref.error_mean, 2)
    (1, 0.35)
    >>> PCAReference.from_dict(ref.to_dict()) == ref
    True
    """

    mean: list[float]
    scale: list[float]
    components: list[list[float]]
    n: int
    error_cap: float
    error_mean: float
    error_std: float
    error_skew: float
    error_kurtosis: float

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @property
    def n_components(self) -> int:
        return len(self.components)

    @classmethod
    def fit(cls, x: np.ndarray, variance: float = 0.65) -> PCAReference:
        """Fit on the rows of ``x`` (finite values, at least ``2 * FOLDS`` rows, 2+ columns).

        Raises
        ------
        DriftlineError
            If ``x`` is not a finite 2-D array with enough rows and columns.
        """
        variance = float_param("variance", variance, low=0.0, high=1.0)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < 2:
            raise DriftlineError(f"reference: got shape {x.shape}; expected rows of 2+ features")
        if x.shape[0] < 2 * FOLDS or not np.isfinite(x).all():
            raise DriftlineError(
                f"reference: needs at least {2 * FOLDS} rows of finite values (got "
                f"{x.shape[0]} rows)"
            )
        mean, scale = _scale_of(x)
        comp = _components((x - mean) / scale, None, variance)
        k = comp.shape[0]
        errs = np.empty(x.shape[0])
        fold = np.arange(x.shape[0]) % FOLDS
        for f in range(FOLDS):
            train, test = x[fold != f], x[fold == f]
            m, s = _scale_of(train)
            errs[fold == f] = reconstruction_errors(test, m, s, _components((train - m) / s, k, 0))
        cap = float(np.quantile(errs, CAP_QUANTILE))
        errs = np.minimum(errs, cap)
        mu, sd = float(errs.mean()), float(errs.std())
        if sd > 0:
            zc = (errs - mu) / sd
            skew, kurt = float((zc**3).mean()), float((zc**4).mean() - 3.0)
        else:
            skew = kurt = 0.0
        return cls(mean.tolist(), scale.tolist(), comp.tolist(), int(x.shape[0]),
                   cap, mu, sd, skew, kurt)  # fmt: skip

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Reconstruction error of each row of ``x`` (see `reconstruction_errors`), capped at
        ``error_cap``."""
        errs = reconstruction_errors(
            x, np.asarray(self.mean), np.asarray(self.scale), np.asarray(self.components)
        )
        return np.minimum(errs, self.error_cap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Any) -> PCAReference:
        """Inverse of `to_dict`; `DriftlineError` if ``d`` is not one."""
        with reading_snapshot("PCA reference"):
            ref = cls(
                [float(v) for v in d["mean"]],
                [float(v) for v in d["scale"]],
                [[float(v) for v in row] for row in d["components"]],
                int(d["n"]),
                float(d["error_cap"]),
                float(d["error_mean"]),
                float(d["error_std"]),
                float(d["error_skew"]),
                float(d["error_kurtosis"]),
            )
        d_ = ref.n_features
        numbers = [*ref.mean, *ref.scale, *(v for r in ref.components for v in r)]
        ok = (
            d_ >= 2
            and len(ref.scale) == d_
            and 1 <= ref.n_components <= d_
            and all(len(r) == d_ for r in ref.components)
            and all(math.isfinite(v) for v in numbers)
            and all(s > 0 for s in ref.scale)
            and ref.n >= 2
            and ref.error_cap >= 0
            and math.isfinite(ref.error_mean)
            and ref.error_std >= 0
            and math.isfinite(ref.error_skew)
            and math.isfinite(ref.error_kurtosis)
        )
        if not ok:
            raise DriftlineError(
                "state: malformed PCA reference (sizes or values out of range: 2+ features, "
                "1..features components of that length, positive scales, finite moments)"
            )
        return ref
