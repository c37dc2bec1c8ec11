"""The batch's valid events as columns, handed from stage to stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from driftline.agents.stages.records import RecordColumns


@dataclass(slots=True)
class Frame:
    """Row ``i`` of every array is the event of ``records[i]``.

    Stages fill it in order: decode (``entities``, ``times``, ``columns``), features
    (``features``), batch join (``vector``), predict (``scores``).
    """

    #: the source records of the rows (topic, partition, offsets, broker timestamps, keys)
    records: RecordColumns
    #: entity ids (object array)
    entities: np.ndarray
    #: event times, ms (int64)
    times: np.ndarray
    #: decoded input fields, name -> column (float64; object for strings)
    columns: dict[str, np.ndarray]
    #: streaming feature values, name -> float64 column
    features: dict[str, np.ndarray] = field(default_factory=dict)
    #: what the model, detectors and skew checks read: fields, features and batch features
    vector: dict[str, np.ndarray] = field(default_factory=dict)
    #: the model's scores (None without a model)
    scores: np.ndarray | None = None
    #: with [[slices]]: each row's slice codes, shape (n, slices) (agents.stages.slices)
    slice_codes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def take(self, keep: np.ndarray) -> Frame:
        """The rows ``keep`` (indices) of the decoded columns and features; the vector and the
        scores come later, from the rows kept."""
        return Frame(
            self.records.take(keep.tolist()),
            self.entities[keep],
            self.times[keep],
            {k: v[keep] for k, v in self.columns.items()},
            {k: v[keep] for k, v in self.features.items()},
        )
