"""Decode stage: raw records -> a :class:`Frame` of valid events, column-wise.

Records that do not decode (``agents.decode.RecordDecoder`` says why) become dead letters; a
Schema Registry that cannot be reached is not the records' fault: it stops the batch
(:class:`~driftline.agents.formats.RegistryUnavailable`) before any state changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.agents.decode import RecordDecoder
from driftline.agents.formats import RegistryUnavailable
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
) -> Frame | None:
    """The valid events of ``cols`` (None if there is none); the others go to ``out`` as dead
    letters."""
    good_idx: list[int] = []
    entities: list[str] = []
    times: list[int] = []
    rows: list[tuple[float, ...]] = []
    extras: list[tuple[Any, ...]] = []
    decode = decoder.decode
    for i, raw in enumerate(cols.values):
        try:
            ent, ts, nums, ext = decode(raw)
        except RegistryUnavailable:
            raise
        except Exception as e:
            dead.reject(out, cols, i, e, now_ms)
            continue
        good_idx.append(i)
        entities.append(ent)
        times.append(ts)
        rows.append(nums)
        extras.append(ext)
    if not good_idx:
        return None
    good = cols if len(good_idx) == len(cols) else cols.take(good_idx)
    numeric = decoder.numeric
    mat = np.array(rows, dtype=np.float64).reshape(len(good), len(numeric))
    columns: dict[str, np.ndarray] = {name: mat[:, j] for j, name in enumerate(numeric)}
    for j, name in enumerate(decoder.extra):
        col = np.empty(len(extras), dtype=object)
        col[:] = [e[j] for e in extras]
        columns[name] = col
    return Frame(good, np.array(entities, dtype=object), np.array(times, dtype=np.int64), columns)
