"""Batch predictions from river models, vectorised with numpy where the model allows it.

river scores one dict at a time; for its linear models (optionally behind a ``StandardScaler``)
the score is an affine map plus a link function, which numpy evaluates over a whole batch.
Any other river model is scored row by row, with the same results.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from river import base, compose, linear_model, optim, preprocessing

from driftline.errors import SpecError

BUILTINS = ("logistic_regression", "linear_regression")


def build_builtin(kind: str) -> base.Estimator:
    """An untrained ``StandardScaler | <linear model>`` pipeline named by ``kind``."""
    if kind == "logistic_regression":
        est: base.Estimator = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    elif kind == "linear_regression":
        est = linear_model.LinearRegression(optimizer=optim.SGD(0.01))
    else:
        raise SpecError(f"unknown builtin model {kind!r}; expected one of {BUILTINS}")
    return compose.Pipeline(preprocessing.StandardScaler(), est)


def check_model(model: Any, inputs: Sequence[str]) -> None:
    """SpecError unless ``model`` is a river classifier or regressor (or a pipeline ending in
    one) that scores a row of ``inputs`` (all zeros) as the worker would, on a copy.

    >>> check_model(build_builtin("logistic_regression"), ["a", "b"])
    >>> check_model({"weights": [1, 2]}, ["a"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: model: got a dict; expected a river classifier or regressor ...
    """
    last = model
    if isinstance(model, compose.Pipeline):
        last = model[-1] if model.steps else None
    if not isinstance(last, base.Classifier | base.Regressor):
        raise SpecError(
            f"model: got a {type(model).__name__}; expected a river classifier or regressor "
            "(or a compose.Pipeline ending in one)"
        )
    try:
        BatchPredictor(copy.deepcopy(model), inputs).predict(np.zeros((1, len(inputs))))
    # any model the operator pickled: whatever it raises, it could not score at start
    except Exception as e:
        raise SpecError(
            f"model: a {type(model).__name__} that cannot score a row of its {len(inputs)} "
            f"inputs ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def one_hot_columns(field: str, categories: Sequence[str | int]) -> tuple[str, ...]:
    """The model column names of a one-hot encoded field: ``<field>=<category>``.

    >>> one_hot_columns("country", ["de", "fr"])
    ('country=de', 'country=fr')
    """
    return tuple(f"{field}={c}" for c in categories)


def one_hot(values: Any, categories: Sequence[str | int]) -> list[np.ndarray]:
    """One float64 0/1 column per category: 1.0 where ``values`` equals it. A value in none of
    the categories (unknown, or new since the model was trained) is 0 in every column.

    ``values`` is an array (strings as an object array, ints as floats are fine) or one value.

    >>> [c.tolist() for c in one_hot(np.array(["de", "us", "fr"], dtype=object), ["de", "fr"])]
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    >>> [float(c) for c in one_hot(3.0, [1, 3])]
    [0.0, 1.0]
    """
    v = np.asarray(values, dtype=object)
    return [np.asarray(v == c, dtype=np.float64) for c in categories]


def _stable_sigmoid(z: np.ndarray) -> np.ndarray:
    # river.utils.math.sigmoid: 0 below -30, 1 above 30, else the logistic function.
    out = np.empty_like(z)
    lo, hi = z < -30, z > 30
    mid = ~(lo | hi)
    out[lo], out[hi] = 0.0, 1.0
    out[mid] = 1.0 / (1.0 + np.exp(-z[mid]))
    return out


class BatchPredictor:
    """Scores batches of rows with a river model.

    Parameters
    ----------
    model
        A river classifier or regressor (a ``compose.Pipeline`` is fine).
    inputs
        Column names, in the order of the columns of the matrices given to :meth:`predict`.

    Examples
    --------
    >>> import numpy as np
    >>> from river import linear_model
    >>> m = linear_model.LinearRegression()
    >>> for i in range(200):
    ...     m.learn_one({"a": i % 7, "b": i % 3}, 2.0 * (i % 7) - (i % 3))
    >>> p = BatchPredictor(m, ["a", "b"])
    >>> X = np.array([[1.0, 2.0], [3.0, 0.0]])
    >>> bool(np.allclose(p.predict(X), [m.predict_one({"a": 1.0, "b": 2.0}),
    ...                                 m.predict_one({"a": 3.0, "b": 0.0})]))
    True
    """

    def __init__(self, model: Any, inputs: Sequence[str]) -> None:
        if not inputs:
            raise SpecError("a model needs at least one input column")
        self.model = model
        self.inputs = tuple(inputs)
        self.is_classifier = isinstance(model, base.Classifier) or (
            isinstance(model, compose.Pipeline) and isinstance(model[-1], base.Classifier)
        )

    @property
    def vectorised(self) -> bool:
        """True when :meth:`predict` runs as numpy over the batch (linear models)."""
        return self._linear_parts() is not None

    def _linear_parts(self) -> tuple[Any | None, Any] | None:
        steps = (
            list(self.model.steps.values())
            if isinstance(self.model, compose.Pipeline)
            else [self.model]
        )
        scaler = None
        if len(steps) == 2 and isinstance(steps[0], preprocessing.StandardScaler):
            scaler = steps[0]
            if scaler.window_size is not None:
                return None
            steps = steps[1:]
        if len(steps) != 1:
            return None
        if type(steps[0]) not in (linear_model.LinearRegression, linear_model.LogisticRegression):
            return None
        return scaler, steps[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores for the rows of ``X`` (n, len(inputs)): P(positive) or the predicted value."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.inputs):
            raise ValueError(
                f"expected a matrix with {len(self.inputs)} columns, got shape {X.shape}"
            )
        parts = self._linear_parts()
        if parts is None:
            return self._predict_rows(X)
        scaler, lin = parts
        if scaler is not None:
            means = np.array([scaler.means[c] for c in self.inputs], dtype=np.float64)
            if scaler.with_std:
                var = np.array([scaler.vars[c] for c in self.inputs], dtype=np.float64)
                sd = np.sqrt(var)
                with np.errstate(divide="ignore", invalid="ignore"):
                    X = np.where(var > 0, (X - means) / np.where(sd > 0, sd, 1.0), 0.0)
            else:
                X = X - means
        w = np.array([lin._weights.get(c, 0.0) for c in self.inputs], dtype=np.float64)
        # column by column, not BLAS: the same row scores the same whatever the batch size
        z = np.full(len(X), float(lin.intercept))
        for j in range(len(w)):
            z += X[:, j] * w[j]
        if isinstance(lin, linear_model.LogisticRegression):
            return _stable_sigmoid(z)
        return z

    def _predict_rows(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X), dtype=np.float64)
        for i, row in enumerate(X):
            x = dict(zip(self.inputs, row.tolist(), strict=True))
            if self.is_classifier:
                out[i] = float(self.model.predict_proba_one(x).get(True, 0.0))
            else:
                out[i] = float(self.model.predict_one(x))
        return out
