"""Reading a bounded range of a topic once: ``driftline report --topic``.

Every partition of the topic is read from its start offset (``--from-offset``, the first offset
at or after ``--from-time``, or the beginning) up to, not including, its end offset
(``--to-offset``, the first offset at or after ``--to-time``, or the end of the partition when
the read starts), with the user's client settings (:mod:`driftline.kafka_config`) and
``read_committed``. The consumer has no group and commits nothing. Every call that waits is
bounded: the metadata and offset look-ups by ``timeout_s``, the read by ``idle_s`` without a
record while a partition is unfinished (a loud error, not a hang).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from driftline.agents.kafka_io import client_conf
from driftline.agents.pipeline import RawRecord
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka


class RangeError(DriftlineError):
    """The range asked for is wrong (a usage error: exit status 2)."""


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch from an integer or an ISO 8601 time (UTC unless it says).

    >>> parse_time_ms("1700000000000"), parse_time_ms("2023-11-14T22:13:20Z")
    (1700000000000, 1700000000000)
    >>> parse_time_ms("yesterday")
    Traceback (most recent call last):
    ...
    driftline.agents.topic_range.RangeError: 'yesterday' is not a time: give milliseconds \
since the epoch or an ISO 8601 time such as 2026-11-30T12:00:00Z
    """
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(
            f"{text!r} is not a time: give milliseconds since the epoch or an ISO 8601 time "
            "such as 2026-11-30T12:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True)
class Bound:
    """One end of the range: an offset (every partition), a time (ms), or None (the
    partition's beginning or end)."""

    offset: int | None = None
    time_ms: int | None = None


class TopicRange:
    """The records of ``topic`` between ``start`` and ``end`` (see the module doc)."""

    def __init__(
        self,
        kafka: Kafka,
        topic: str,
        start: Bound = Bound(),
        end: Bound = Bound(),
        *,
        timeout_s: float = 15.0,
        idle_s: float = 30.0,
    ) -> None:
        self.kafka, self.topic, self.start, self.end = kafka, topic, start, end
        self.timeout_s, self.idle_s = timeout_s, idle_s
        self.consumer = Consumer(
            client_conf(
                kafka,
                {
                    "group.id": "driftline-report",  # never joined: partitions are assigned
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                },
            )
        )
        try:
            #: partition -> [first offset, end offset) to read
            self.ranges = self._ranges()
        except BaseException:
            self.consumer.close()
            raise

    def _offsets_at(self, parts: list[int], time_ms: int) -> dict[int, int | None]:
        """The first offset at or after ``time_ms`` per partition (None: none is)."""
        found = self.consumer.offsets_for_times(
            [TopicPartition(self.topic, p, time_ms) for p in parts], timeout=self.timeout_s
        )
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}

    def _ranges(self) -> dict[int, tuple[int, int]]:
        try:
            md = self.consumer.list_topics(self.topic, timeout=self.timeout_s)
        except KafkaException as e:
            raise DriftlineError(f"cannot read the metadata of topic {self.topic!r}: {e}") from None
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise RangeError(
                f"topic {self.topic!r} does not exist on {self.kafka}: name an existing topic "
                "with --topic"
            )
        parts = sorted(tmd.partitions)
        marks = {
            p: self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=self.timeout_s, cached=False
            )
            for p in parts
        }
        starts = {p: lo for p, (lo, _hi) in marks.items()}
        ends = {p: hi for p, (_lo, hi) in marks.items()}
        if self.start.time_ms is not None:
            at = self._offsets_at(parts, self.start.time_ms)
            starts = {p: ends[p] if at[p] is None else at[p] for p in parts}
        elif self.start.offset is not None:
            starts = {p: max(self.start.offset, marks[p][0]) for p in parts}
        if self.end.time_ms is not None:
            at = self._offsets_at(parts, self.end.time_ms)
            ends = {p: ends[p] if at[p] is None else at[p] for p in parts}
        elif self.end.offset is not None:
            ends = {p: min(self.end.offset, ends[p]) for p in parts}
        return {p: (starts[p], max(starts[p], ends[p])) for p in parts}

    @property
    def total(self) -> int:
        """Offsets in the range (records, less transaction markers and compacted gaps)."""
        return sum(b - a for a, b in self.ranges.values())

    def describe(self) -> dict[str, Any]:
        """The report's ``source``."""
        return {
            "kind": "topic",
            "topic": self.topic,
            "ranges": {str(p): {"from": a, "to": b} for p, (a, b) in self.ranges.items()},
        }

    def records(self) -> Iterator[tuple[None, RawRecord]]:
        """``(None, record)`` for every record of the range, per partition in offset order."""
        todo = {p for p, (a, b) in self.ranges.items() if b > a}
        if not todo:
            return
        self.consumer.assign(
            [TopicPartition(self.topic, p, self.ranges[p][0]) for p in sorted(todo)]
        )
        last = time.monotonic()
        while todo:
            msgs = self.consumer.consume(1000, timeout=0.5)
            if not msgs:
                if time.monotonic() - last > self.idle_s:
                    left = ", ".join(
                        f"{p} (at {self._position(p)} of {self.ranges[p][1]})" for p in sorted(todo)
                    )
                    raise DriftlineError(
                        f"topic {self.topic!r}: no record for {self.idle_s:.0f} s while "
                        f"partitions {left} were unfinished; is the broker up?"
                    )
                continue
            last = time.monotonic()
            for m in msgs:
                p = m.partition()
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(p)  # the end of what is committed
                        continue
                    if err.fatal() or not err.retriable():
                        raise DriftlineError(f"topic {self.topic!r} partition {p}: {err}")
                    continue
                if p not in todo:
                    continue
                off = m.offset()
                if off >= self.ranges[p][1]:
                    todo.discard(p)
                    continue
                ts_type, ts = m.timestamp()
                yield (
                    None,
                    RawRecord(self.topic, p, off, ts if ts_type else None, m.key(), m.value()),
                )
                if off + 1 >= self.ranges[p][1]:
                    todo.discard(p)

    def _position(self, p: int) -> int:
        (tp,) = self.consumer.position([TopicPartition(self.topic, p)])
        return tp.offset

    def close(self) -> None:
        self.consumer.close()
