"""The pipeline's predictor, built from the spec's ``[model]``: shared by the worker and the
offline commands (replay, predict-batch, train), none of which needs the worker's faust host."""

from __future__ import annotations

from driftline.model_io import load_model
from driftline.spec import PipelineSpec
from driftline.streams.model import BatchPredictor, build_builtin


def build_predictor(spec: PipelineSpec) -> tuple[BatchPredictor | None, str]:
    """The predictor of ``spec.model`` and its version (``(None, "none")`` without a model)."""
    m = spec.model
    if m is None:
        return None, "none"
    if m.path is not None:
        model, version = load_model(m.path)
    else:
        model, version = build_builtin(m.builtin or ""), "untrained"
    return BatchPredictor(model, m.inputs), m.version or version
