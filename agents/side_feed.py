"""A side file (labels, business records) split over the events' partitions, in time order.

The offline replay feeds a side topic's file beside the events: each record goes to the
partition its key would go to (its ``input.key_field`` value, hashed by the events'
partitioner; a record without that field goes to partition 0), and a partition's records are
fed in the order of their own time field (a file has no Kafka timestamps). Records whose time
cannot be read sort first, so the decoder dead-letters them with its reasons.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline.agents.decode import parse_timestamp_ms
from driftline.agents.pipeline import RawRecord
from driftline.agents.replay import input_records, partition_for

#: Sorts before every record time: records whose time cannot be read go first (to the DLQ).
UNREADABLE = -(2**63)


def record_time(doc: Any, field: str, value_of: Callable[[dict[str, Any], str], Any]) -> int:
    """``doc``'s time in ms: ``value_of(doc, field)`` read as a timestamp, `UNREADABLE` when
    ``doc`` is not an object or the value is not a time.

    >>> record_time({"t": 5}, "t", dict.get), record_time({"t": "x"}, "t", dict.get)
    (5, -9223372036854775808)
    """
    if not isinstance(doc, dict):
        return UNREADABLE
    try:
        return parse_timestamp_ms(field, value_of(doc, field))
    except Exception:  # the decoder rejects it with its reason
        return UNREADABLE


def timed_partitions(
    path: str | Path,
    topic: str,
    time_field: str,
    value_of: Callable[[dict[str, Any], str], Any],
    key_field: str,
    partitions: int,
    partitioner: str,
) -> tuple[dict[int, list[tuple[int, RawRecord]]], int]:
    """The records of the file at ``path`` as ``topic``'s, per partition: ``(time, record)``
    in time order (`record_time` of ``time_field``, read by ``value_of``; file order among
    equal times), and how many records there are."""
    timed: dict[int, list[tuple[int, int, RawRecord]]] = defaultdict(list)
    offsets: dict[int, int] = defaultdict(int)
    total = 0
    for doc, value in input_records(path):
        p, key = 0, None
        if isinstance(doc, dict) and doc.get(key_field) is not None:
            key = str(doc[key_field]).encode()
            p = partition_for(key, partitions, partitioner)
        rec = RawRecord(topic, p, offsets[p], None, key, value)
        timed[p].append((record_time(doc, time_field, value_of), offsets[p], rec))
        offsets[p] += 1
        total += 1
    out = {}
    for p, rows in timed.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        out[p] = [(t, r) for t, _o, r in rows]
    return out, total
