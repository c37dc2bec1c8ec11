"""Vectorised river scoring equals river's own predict_one / predict_proba_one."""

from __future__ import annotations

import numpy as np
import pytest
from river import compose, linear_model, preprocessing, tree

from driftline.errors import SpecError
from driftline.streams.model import BatchPredictor, build_builtin

INPUTS = ["a", "b", "c"]


def _train(model, seed: int = 0, n: int = 500, classify: bool = True):
    rng = np.random.default_rng(seed)
    X = rng.normal([10, -3, 0], [5, 1, 0.001], size=(n, 3))
    for row in X.tolist():
        x = dict(zip(INPUTS, row, strict=True))
        z = 0.3 * (row[0] - 10) - 0.8 * (row[1] + 3)
        y = bool(rng.random() < 1 / (1 + np.exp(-z))) if classify else z + rng.normal()
        model.learn_one(x, y)
    return model, rng.normal([10, -3, 0], [8, 2, 1], size=(300, 3))


def _river_scores(model, X: np.ndarray, classify: bool) -> np.ndarray:
    out = []
    for row in X.tolist():
        x = dict(zip(INPUTS, row, strict=True))
        out.append(model.predict_proba_one(x)[True] if classify else model.predict_one(x))
    return np.array(out)


@pytest.mark.parametrize(
    ("make", "classify", "vectorised"),
    [
        (lambda: linear_model.LogisticRegression(), True, True),
        (lambda: linear_model.LinearRegression(), False, True),
        (lambda: build_builtin("logistic_regression"), True, True),
        (lambda: build_builtin("linear_regression"), False, True),
        (
            lambda: compose.Pipeline(
                preprocessing.StandardScaler(with_std=False), linear_model.LinearRegression()
            ),
            False,
            True,
        ),
        (
            lambda: compose.Pipeline(
                preprocessing.StandardScaler(), tree.HoeffdingTreeClassifier()
            ),
            True,
            False,
        ),
        (lambda: tree.HoeffdingTreeRegressor(), False, False),
    ],
)
def test_batch_scores_equal_river(make, classify: bool, vectorised: bool) -> None:
    model, X = _train(make(), classify=classify)
    p = BatchPredictor(model, INPUTS)
    assert p.is_classifier is classify
    assert p.vectorised is vectorised
    np.testing.assert_allclose(
        p.predict(X), _river_scores(model, X, classify), rtol=1e-12, atol=1e-12
    )


def test_untrained_model_and_constant_feature() -> None:
    m = build_builtin("logistic_regression")
    p = BatchPredictor(m, INPUTS)
    X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_allclose(p.predict(X), _river_scores(m, X, True))
    # a feature with zero variance scales to 0 in river; same here
    m2 = build_builtin("linear_regression")
    for i in range(50):
        m2.learn_one({"a": float(i), "b": 1.0, "c": 2.0}, float(i))
    np.testing.assert_allclose(BatchPredictor(m2, INPUTS).predict(X), _river_scores(m2, X, False))


def test_extreme_logits_clamp_like_river() -> None:
    m = linear_model.LogisticRegression()
    m._weights["a"] = 100.0
    X = np.array([[-1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]])
    np.testing.assert_array_equal(BatchPredictor(m, INPUTS).predict(X), [0.0, 1.0, 0.5])


def test_shape_and_spec_errors() -> None:
    p = BatchPredictor(linear_model.LinearRegression(), INPUTS)
    with pytest.raises(ValueError, match="3 columns"):
        p.predict(np.zeros((2, 2)))
    with pytest.raises(SpecError):
        BatchPredictor(linear_model.LinearRegression(), [])
    with pytest.raises(SpecError, match="unknown builtin"):
        build_builtin("svm")
