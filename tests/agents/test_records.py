"""Consumed messages into per-partition columns (the runner's hot path), with real
confluent-kafka ``Message`` objects."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Message

from driftline.agents.stages.records import RawRecord, RecordColumns, errors_of, group_messages


def msg(topic: str, p: int, offset: int, ts: int = 1000, key: bytes | None = b"k",
        value: bytes | None = b"{}", error: KafkaError | None = None) -> Message:  # fmt: skip
    return Message(topic=topic, partition=p, offset=offset, key=key, value=value,
                   timestamp=(1 if ts >= 0 else 0, ts), error=error)  # fmt: skip


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([], {}),
        ([("a", 0)] * 3, {("a", 0): [0, 1, 2]}),
        ([("a", 0), ("a", 1), ("a", 0), ("b", 0), ("a", 1)],
         {("a", 0): [0, 2], ("a", 1): [1, 4], ("b", 0): [3]}),
        ([("a", 1), ("a", 1), ("a", 0), ("a", 0), ("a", 1)],
         {("a", 1): [0, 1, 4], ("a", 0): [2, 3]}),
    ],
)  # fmt: skip
def test_messages_grouped_by_partition_in_order(where, expected) -> None:
    ms = [msg(t, p, i) for i, (t, p) in enumerate(where)]
    groups, errors = group_messages(ms)
    assert {k: [m.offset() for m in v] for k, v in groups.items()} == expected
    assert list(groups) == list(expected)  # first seen first
    assert errors == [] and list(errors_of(ms)) == []


def test_error_messages_are_set_apart() -> None:
    err = KafkaError(KafkaError._PARTITION_EOF)
    ms = [msg("a", 0, 0), msg("a", 0, 1, error=err), msg("a", 1, 2), msg("a", 0, 3)]
    groups, errors = group_messages(ms)
    assert {k: [m.offset() for m in v] for k, v in groups.items()} == {
        ("a", 0): [0, 3], ("a", 1): [2]
    }
    assert [m.offset() for m in errors] == [1]
    assert [e.code() for e in errors_of(ms)] == [KafkaError._PARTITION_EOF]


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [([5, 6, 7], [5, 6, 7]), ([5, -1, 7], [5, None, 7]), ([-1], [None]), ([], [])],
)
def test_columns_of_messages_equal_the_records(stamps, expected) -> None:
    ms = [msg("t", 3, 10 + i, ts, key=None if i == 1 else b"k%d" % i,
              value=None if i == 2 else b'{"i": %d}' % i)
          for i, ts in enumerate(stamps)]  # fmt: skip
    cols = RecordColumns.from_messages("t", 3, ms)
    assert cols.stamps == expected
    recs = [
        RawRecord("t", 3, m.offset(), t, m.key(), m.value())
        for m, t in zip(ms, expected, strict=True)
    ]
    assert [cols[i] for i in range(len(cols))] == recs
    ref = RecordColumns.from_records(recs)
    assert (cols.offsets, cols.stamps, cols.keys, cols.values) == (
        ref.offsets, ref.stamps, ref.keys, ref.values
    )
