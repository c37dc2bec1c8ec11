"""The pipeline's predictor, built from the spec's ``[model]``: shared by the worker and the
offline commands (replay, predict-batch, train), none of which needs the worker's faust host."""

from __future__ import annotations

from driftline.model_io import load_model
from driftline.spec import PipelineSpec
from driftline.streams.model import BatchPredictor, build_builtin
from driftline.streams.plain_state import check_learnable


def build_predictor(spec: PipelineSpec) -> tuple[BatchPredictor | None, str]:
    """The predictor of ``spec.model`` and its version (``(None, "none")`` without a model).

    With ``labels.learn`` a model whose learnt state has no plain-data encoding is a `SpecError`
    here, before anything runs."""
    m = spec.model
    if m is None:
        return None, "none"
    if m.path is not None:
        model, version = load_model(m.path)
    else:
        model, version = build_builtin(m.builtin or ""), "untrained"
    if spec.labels is not None and spec.labels.learn:
        check_learnable(model)  # at start, not at the first partition assignment
    return BatchPredictor(model, m.inputs), m.version or version
