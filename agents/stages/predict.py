"""Predict stage: the model's scores for a batch, from its model-input vector."""

from __future__ import annotations

import numpy as np

from driftline.streams.model import BatchPredictor


def model_inputs(predictor: BatchPredictor, vector: dict[str, np.ndarray]) -> np.ndarray:
    """The model's input matrix: one row per event, one column per ``predictor.inputs``."""
    return np.column_stack([vector[c] for c in predictor.inputs])


def predict(predictor: BatchPredictor | None, vector: dict[str, np.ndarray]) -> np.ndarray | None:
    """One score per event (NaN where an input is missing); None without a model."""
    if predictor is None:
        return None
    return predictor.predict(model_inputs(predictor, vector))
