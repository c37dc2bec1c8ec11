"""Batch join: each event's row of the offline batch-feature table joins its model vector."""

from __future__ import annotations

from typing import Any

from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome


def join_batch_features(cache: Any, frame: Frame, out: BatchOutcome, now_ms: int) -> None:
    """Add the batch features of each row's entity to ``frame.vector`` (defaults where the
    table has no row); count hits, misses and the age of the rows used.

    ``cache`` is the worker's shared ``agents.batch_features.BatchFeatureCache``."""
    bvals, hit, as_of = cache.lookup(frame.entities.tolist())
    for j, name in enumerate(cache.names):
        frame.vector[name] = bvals[:, j]
    out.batch_hits = int(hit.sum())
    out.batch_misses = int(hit.size - out.batch_hits)
    out.batch_age_s = (now_ms - as_of[hit]) / 1000.0
