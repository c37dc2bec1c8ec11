"""The pipeline's predictor, built from the spec's ``[model]``: shared by the worker and the
offline commands (replay, predict-batch, train), none of which needs the worker's faust host."""

from __future__ import annotations

from driftline.errors import DriftlineError, SpecError
from driftline.model_io import load_model
from driftline.spec import PipelineSpec
from driftline.streams.model import BatchPredictor, build_builtin, check_model
from driftline.streams.plain_state import check_learnable


def build_predictor(spec: PipelineSpec) -> tuple[BatchPredictor | None, str]:
    """The predictor of ``spec.model`` and its version (``(None, "none")`` without a model).

    A model file that does not load, an object that is not a river classifier or regressor, one
    that cannot score a row of the spec's inputs, or (with ``labels.learn``) a model whose learnt
    state has no plain-data encoding is a `SpecError` naming ``model.path``, here, before
    anything runs (``driftline validate`` calls this too)."""
    m = spec.model
    if m is None:
        return None, "none"
    where = "model.path" if m.path is not None else "model.builtin"
    try:
        if m.path is not None:
            model, version = load_model(m.path)
        else:
            model, version = build_builtin(m.builtin or ""), "untrained"
        check_model(model, m.inputs)
        if spec.labels is not None and spec.labels.learn:
            check_learnable(model)  # at start, not at the first partition assignment
    except DriftlineError as e:
        raise SpecError(f"spec key {where}: {str(e).removeprefix('model: ')}") from None
    predictor = BatchPredictor(model, m.inputs)
    task = "classification" if predictor.is_classifier else "regression"
    for sl in spec.slices:
        if spec.labels is not None:
            sl.metric_for(task)  # a metric of the other task: SpecError now
    if spec.performance_estimation is not None and not predictor.is_classifier:
        raise SpecError(
            f"spec key performance_estimation: the {where} model is a regressor; label-free "
            "performance estimation (CBPE) needs a classifier's probabilities"
        )
    return predictor, m.version or version
