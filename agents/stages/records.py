"""What the batch step reads: raw Kafka records, and one partition's batch as columns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from itertools import groupby
from operator import is_not, itemgetter
from typing import Any, NamedTuple

_first, _second = itemgetter(0), itemgetter(1)
_not_none = partial(is_not, None)


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

    @classmethod
    def from_messages(cls, topic: str, partition: int, msgs: Sequence[Any]) -> RecordColumns:
        """The columns of consumed messages (confluent-kafka ``Message``s of one partition),
        read with C-level ``map`` over the message type's methods: no Python step per record.
        A negative timestamp (none known) becomes None."""
        if not msgs:
            return cls(topic, partition, [], [], [], [])
        kind = type(msgs[0])
        stamps: list[int | None] = list(map(_second, map(kind.timestamp, msgs)))
        if min(stamps) < 0:  # type: ignore[type-var]
            stamps = [None if t < 0 else t for t in stamps]  # type: ignore[operator]
        return cls(
            topic,
            partition,
            list(map(kind.offset, msgs)),
            stamps,
            list(map(kind.key, msgs)),
            list(map(kind.value, msgs)),
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


def group_messages(msgs: Sequence[Any]) -> tuple[dict[tuple[str, int], list[Any]], list[Any]]:
    """Consumed messages (confluent-kafka ``Message``s) by ``(topic, partition)``, in order, and
    the error messages apart; runs of one partition are taken whole (C-level ``groupby``).

    >>> from types import SimpleNamespace as M
    >>> class Msg(M):
    ...     def error(self): return self.e
    ...     def topic(self): return self.t
    ...     def partition(self): return self.p
    >>> ms = [Msg(e=None, t="a", p=0, i=0), Msg(e=None, t="a", p=1, i=1),
    ...       Msg(e="boom", t="a", p=0, i=2), Msg(e=None, t="a", p=0, i=3)]
    >>> groups, errors = group_messages(ms)
    >>> {k: [m.i for m in v] for k, v in groups.items()}, [m.i for m in errors]
    ({('a', 0): [0, 3], ('a', 1): [1]}, [2])
    """
    by_part: dict[tuple[str, int], list[Any]] = {}
    if not msgs:
        return by_part, []
    kind = type(msgs[0])
    errors: list[Any] = []
    if next(errors_of(msgs), None) is not None:
        errors = [m for m in msgs if m.error() is not None]
        msgs = [m for m in msgs if m.error() is None]
    where = zip(map(kind.topic, msgs), map(kind.partition, msgs), strict=True)
    for key, run in groupby(zip(where, msgs, strict=True), key=_first):
        part = by_part.get(key)
        if part is None:
            part = by_part[key] = []
        part.extend(map(_second, run))
    return by_part, errors


def errors_of(msgs: Sequence[Any]) -> Iterator[Any]:
    """The errors (``Message.error()`` not None) of consumed messages, in order.

    >>> from types import SimpleNamespace as M
    >>> class Msg(M):
    ...     def error(self): return self.e
    >>> list(errors_of([Msg(e=None), Msg(e="x"), Msg(e=None)]))
    ['x']
    """
    if not msgs:
        return iter(())
    return filter(_not_none, map(type(msgs[0]).error, msgs))
