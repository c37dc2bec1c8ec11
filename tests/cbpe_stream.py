"""A seeded classifier stream for label-free performance estimation tests (offline and on a broker).

One input ``x``; the truth is ``P(y = 1 | x) = sigmoid(2 x - 0.5)``; the model is a river logistic
regression fitted on reference data (``x ~ N(0, 1.5)``). ``covariate_events`` moves the inputs
to the decision boundary from event ``shift_at`` on (``x ~ N(0.25, 0.4)``), so the accuracy drops
while ``P(y | x)`` holds: what CBPE can follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from river import linear_model, optim

from driftline.model_io import save_model

T0 = 1_767_225_600_000
STEP_MS = 10


def truth(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(x.size) < 1.0 / (1.0 + np.exp(-(2.0 * x - 0.5)))).astype(np.int64)


def train_model(path: Path, seed: int = 5, n: int = 4_000) -> str:
    """Fit and save the stream's model (scores rise with ``x``)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.5, n)
    y = truth(x, rng)
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.1))
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        model.learn_one({"x": xi}, bool(yi))
    return save_model(model, path, version="cbpe-logreg-1")


def covariate_events(
    n: int, shift_at: int, seed: int = 7, t0: int = T0
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``n`` events (``user_id``, ``ts``, ``x``) and their labels; covariate shift at
    ``shift_at``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.5, n)
    x[shift_at:] = rng.normal(0.25, 0.4, n - shift_at)
    y = truth(x, rng)
    docs = [
        {"user_id": f"u{i % 37}", "ts": t0 + STEP_MS * i, "x": float(v)}
        for i, v in enumerate(x.tolist())
    ]
    return docs, y


def spec_data(name: str, topic: str, model_path: Path, **pe: Any) -> dict[str, Any]:
    """A pipeline (as parsed TOML) with the model, ``[labels]`` and ``[performance_estimation]``
    (``pe`` overrides its keys; ``labels=None`` leaves ``[labels]`` out)."""
    labels = pe.pop("labels", {"topic": f"{topic}.labels", "ttl_ms": 600_000})
    data: dict[str, Any] = {
        "pipeline": {"name": name},
        "input": {
            "topic": topic,
            "key_field": "user_id",
            "time_field": "ts",
            "fields": {"user_id": "string", "ts": "timestamp", "x": "float"},
        },
        "features": [{"name": "x_mean_1m", "field": "x", "agg": "mean", "window_ms": 60_000}],
        "model": {"path": str(model_path), "inputs": ["x"]},
        "output": {
            f"{k}_topic": f"{topic}.{k}"
            for k in ("features", "predictions", "alerts", "dlq", "late", "model_metrics")
        },
        "performance_estimation": {"chunk_size": 500, "reference_size": 1_000, **pe},
    }
    if labels is not None:
        data["labels"] = labels
    return data
