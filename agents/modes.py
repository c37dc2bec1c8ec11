"""Offline model commands: ``driftline train`` and ``driftline predict-batch``.

- **batch prediction with batch features** (``predict-batch``): score every entity of a batch
  features file, with the same :class:`~streams.model.BatchPredictor` the worker uses;
- **online, batch features only**: a worker whose ``model.inputs`` are all batch features;
- **online, batch + streaming features**: a worker whose inputs mix both.
The first two give identical scores for identical inputs (tests/integration/test_modes.py).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from driftline.agents.batch_features import BatchFeatureCache
from driftline.agents.predictor import build_predictor
from driftline.agents.replay import replay_outcomes
from driftline.errors import SpecError
from driftline.io_files import RecordWriter
from driftline.model_io import load_model, save_model
from driftline.spec import PipelineSpec
from driftline.streams.model import BatchPredictor, build_builtin


def predict_batch(spec: PipelineSpec, input_path: str | Path, output_path: str | Path) -> int:
    """Predictions for every entity of a batch-features file; returns how many."""
    bf, m = spec.batch_features, spec.model
    if bf is None or m is None:
        raise SpecError("predict-batch needs [batch_features] and [model] in the spec")
    outside = [c for c in m.inputs if c not in bf.names]
    if outside:
        raise SpecError(
            f"spec key model.inputs: {outside} are not batch features; batch prediction uses "
            "batch features only (online prediction joins streaming ones)"
        )
    predictor, version = build_predictor(spec)
    assert predictor is not None
    cache = BatchFeatureCache.from_file(bf, input_path)
    entities = cache.entities()
    vals, _hit, as_of = cache.lookup(entities)
    idx = [bf.names.index(c) for c in m.inputs]
    X = vals[:, idx]
    scores = predictor.predict(X)
    source = f"file:{Path(input_path).name}"
    with RecordWriter(output_path) as w:
        w.write_many(
            {
                "prediction_id": f"batch:{e}",
                "pipeline": spec.name,
                "entity": e,
                "model_version": version,
                "score": float(s),
                "label": (int(s >= 0.5) if predictor.is_classifier else None),
                "inputs": dict(zip(m.inputs, row, strict=True)),
                "event_time_ms": int(t),
                "source": {"topic": source, "partition": 0, "offset": i, "timestamp_ms": None},
            }
            for i, (e, s, row, t) in enumerate(
                zip(entities, scores.tolist(), X.tolist(), as_of.tolist(), strict=True)
            )
        )
    return len(entities)


@dataclass
class TrainStats:
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    version: str = ""


def train(
    spec: PipelineSpec,
    input_path: str | Path,
    output_path: str | Path,
    *,
    label_field: str | None = None,
    batch_features_path: str | Path | None = None,
    version: str | None = None,
    progress: bool = True,
) -> TrainStats:
    """Fit the spec's model on a labelled events file, with the worker's own feature code.

    Each row's inputs (event fields, streaming features, batch features) are computed exactly as
    the worker computes them online, so the model trains on what it will be served.
    """
    m = spec.model
    if m is None:
        raise SpecError("train needs a [model] section naming the inputs")
    label = label_field or m.label_field
    if not label:
        raise SpecError("give the label column: model.label_field in the spec, or --label")
    if m.builtin:
        model = build_builtin(m.builtin)
    elif m.path is not None and m.path.is_file():
        model, _ = load_model(m.path)  # continue training the spec's model
    else:
        raise SpecError("spec key model: name a builtin model to train (or an existing path)")
    clf = BatchPredictor(model, m.inputs).is_classifier
    batch: dict[str, dict[str, float]] = {}
    if spec.batch_features is not None and batch_features_path is not None:
        cache = BatchFeatureCache.from_file(spec.batch_features, batch_features_path)
        names = spec.batch_features.names
        batch = {e: dict(zip(names, v.tolist(), strict=True)) for e, v in cache.items()}
    stats = TrainStats()
    bar = tqdm(unit="row", desc="train", disable=not progress, file=sys.stderr)
    for docs, oc in replay_outcomes(
        spec, input_path, progress=False, batch_features_path=batch_features_path,
        with_model=False,
    ):  # fmt: skip
        by_offset = dict((off, doc) for doc, off in docs)
        for t, _k, v in oc.all_messages():
            if t != spec.output.features_topic:
                if t in (spec.output.dlq_topic, spec.output.late_topic):
                    stats.skipped[orjson.loads(v)["reason"]] += 1
                continue
            fv = orjson.loads(v)
            doc = by_offset[fv["source"]["offset"]]
            y = doc.get(label)
            if y is None:
                stats.skipped["no_label"] += 1
                continue
            x = _inputs({**doc, **m.encode(doc)}, fv, batch, m.inputs)  # one-hot inputs too
            if x is None:
                stats.skipped["missing_input"] += 1
                continue
            model.learn_one(x, bool(y) if clf else float(y))
            stats.rows += 1
        bar.update(oc.consumed)
    bar.close()
    if stats.rows == 0:
        raise SpecError(f"no usable labelled rows in {input_path} (skipped: {dict(stats.skipped)})")
    stats.version = save_model(model, output_path, version)
    return stats


def _inputs(
    doc: dict[str, Any],
    fv: dict[str, Any],
    batch: dict[str, dict[str, float]],
    inputs: tuple[str, ...],
) -> dict[str, float] | None:
    """The model inputs of one row: streaming features, event fields, batch features."""
    x: dict[str, float] = {}
    feats = fv["features"]
    row = batch.get(fv["entity"], {})
    for name in inputs:
        if name in feats:
            v = feats[name]
        elif name in doc:
            v = doc[name]
        else:
            v = row.get(name)
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return None
        x[name] = float(v)
    return x
