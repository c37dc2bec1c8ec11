"""What the batch step reads: raw Kafka records, and one partition's batch as columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class RawRecord(NamedTuple):
    """What the runner passes in for each consumed record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


class RecordColumns:
    """One partition's batch as columns: no per-record object on the hot path.

    ``cols[i]`` builds the :class:`RawRecord` of one record when one is needed (dead letters,
    alerts); ``take`` selects rows.
    """

    __slots__ = ("keys", "offsets", "partition", "stamps", "topic", "values")

    def __init__(
        self,
        topic: str,
        partition: int,
        offsets: list[int],
        stamps: list[int | None],
        keys: list[bytes | None],
        values: list[bytes | None],
    ) -> None:
        self.topic, self.partition = topic, partition
        self.offsets, self.stamps, self.keys, self.values = offsets, stamps, keys, values

    @classmethod
    def from_records(cls, records: Sequence[RawRecord]) -> RecordColumns:
        if not records:
            return cls("", 0, [], [], [], [])
        return cls(
            records[0].topic,
            records[0].partition,
            [r.offset for r in records],
            [r.timestamp_ms for r in records],
            [r.key for r in records],
            [r.value for r in records],
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> RawRecord:
        return RawRecord(self.topic, self.partition, self.offsets[i], self.stamps[i],
                         self.keys[i], self.values[i])  # fmt: skip

    def take(self, idx: list[int]) -> RecordColumns:
        o, s, k, v = self.offsets, self.stamps, self.keys, self.values
        return RecordColumns(
            self.topic,
            self.partition,
            [o[i] for i in idx],
            [s[i] for i in idx],
            [k[i] for i in idx],
            [v[i] for i in idx],
        )
