"""Decode stage: raw records -> a :class:`Frame` of valid events, column-wise.

Records that do not decode (``agents.decode.RecordDecoder`` says why) and events out of the
pipeline's bounds (:mod:`.bounds`: entity-id length, event time) become dead letters; a
Schema Registry that cannot be reached is not the records' fault: it stops the batch
(:class:`~driftline.agents.formats.RegistryUnavailable`) before any state changes.
"""

from __future__ import annotations

import numpy as np

from driftline.agents.decode import RecordDecoder
from driftline.agents.formats import RegistryUnavailable
from driftline.agents.stages.bounds import EventBounds
from driftline.agents.stages.dead_letters import DeadLetters
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome
from driftline.agents.stages.records import RecordColumns


def decode_batch(
    decoder: RecordDecoder,
    cols: RecordColumns,
    dead: DeadLetters,
    out: BatchOutcome,
    now_ms: int,
    bounds: EventBounds,
) -> Frame | None:
    """The valid events of ``cols`` (None if there is none); the others go to ``out`` as dead
    letters, in record order: those that do not decode, and those out of ``bounds``."""
    dead.log.flush()
    batch = decoder.decode_many(cols.values, (RegistryUnavailable,))
    good_idx, entities, times, rejected = batch.good, batch.entities, batch.times, batch.rejected
    stamps = cols.stamps if len(good_idx) == len(cols) else [cols.stamps[i] for i in good_idx]
    times_arr, out_of_bounds = bounds.check(entities, times, stamps, now_ms)
    numeric, extras = batch.numeric, batch.extra
    if out_of_bounds:
        rejected = rejected + [(good_idx[j], e) for j, e in out_of_bounds.items()]
        keep = [j for j in range(len(good_idx)) if j not in out_of_bounds]
        good_idx = [good_idx[j] for j in keep]
        entities = [entities[j] for j in keep]
        numeric = tuple([c[j] for j in keep] for c in numeric)
        extras = tuple([c[j] for j in keep] for c in extras)
        times_arr = times_arr[keep]
    for i, e in sorted(rejected, key=lambda r: r[0]):
        dead.reject(out, cols, i, e, now_ms)
    if not good_idx:
        return None
    good = cols if len(good_idx) == len(cols) else cols.take(good_idx)
    columns: dict[str, np.ndarray] = {
        name: np.array(col, dtype=np.float64)
        for name, col in zip(decoder.numeric, numeric, strict=True)
    }
    for name, values in zip(decoder.extra, extras, strict=True):
        col = np.empty(len(values), dtype=object)
        col[:] = values
        columns[name] = col
    ents = np.empty(len(entities), dtype=object)
    ents[:] = entities
    return Frame(good, ents, times_arr, columns)
