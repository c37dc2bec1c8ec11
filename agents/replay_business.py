"""The ``[business]`` topic in an offline replay: a business file fed beside the events.

The worker reads the business topic beside the input; the topic is co-partitioned with it
(records keyed by entity like the events), so partition p's business values go into the alerts
of input partition p. Offline, a business record goes to the partition its key would go to:
the record's ``input.key_field`` value, hashed by the events' ``--partitioner`` over their
``--partitions`` (a record without that field goes to partition 0, as a null-keyed record may
land anywhere). A partition's business records, in business-time order (``business.time_field``:
a file has no Kafka timestamps), are fed before each events batch up to the batch's largest
event time, in batches of at most `BUSINESS_BATCH`; the rest at the end. So when an alert is
made, the business history holds what a live worker's would: every value up to the events being
scored, none later. With a business file, events go in batches of `EVENTS_BATCH` in both
``replay`` and ``report``, so the two give the same business lines in the same alerts.

Which values go in a batch does not change the business history (it is order- and
batch-independent: `driftline.streams.business.BusinessHistory`); only when the values arrive,
relative to the events, does. A record that is not a valid business record (not JSON, no
finite number in ``business.field``, an unreadable time) is dead-lettered by its partition
with the worker's reasons, and counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from driftline.agents.pipeline import RawRecord
from driftline.agents.replay_labels import EVENTS_BATCH
from driftline.agents.side_feed import UNREADABLE, record_time, timed_partitions
from driftline.agents.stages.business import read_path
from driftline.errors import SpecError
from driftline.io_files import file_format
from driftline.spec import PipelineSpec

#: Business records per business batch (at most).
BUSINESS_BATCH = 500


def check_business_spec(spec: PipelineSpec, path: str | Path) -> None:
    """Raise `SpecError` if ``path`` cannot be replayed as the spec's ``[business]`` topic."""
    b = spec.business
    if b is None:
        raise SpecError("--business: the spec has no [business] section to feed the file to")
    if b.time_field is None:
        raise SpecError(
            "--business: a business file has no Kafka timestamps: set business.time_field to "
            "the field holding each record's time"
        )
    if not Path(path).is_file():
        raise SpecError(f"--business: no such file {str(path)!r}")
    file_format(path)  # a name it cannot read fails here, before the events are read


class BusinessFeed:
    """A business file, per partition, in business-time order (see the module doc)."""

    def __init__(
        self,
        spec: PipelineSpec,
        path: str | Path,
        partitions: int,
        partitioner: str,
        batch: int = BUSINESS_BATCH,
    ) -> None:
        check_business_spec(spec, path)
        b = spec.business
        assert b is not None and b.time_field is not None
        #: events per partition batch to replay beside these records
        self.events_batch = EVENTS_BATCH
        self.batch = batch
        self.events_time_field = spec.input.time_field
        rows, self.total = timed_partitions(
            path, b.topic, b.time_field, read_path, spec.input.key_field, partitions, partitioner
        )
        #: partition -> (business time, record) not fed yet, in time order
        self.pending: dict[int, deque[tuple[int, RawRecord]]] = {
            p: deque(timed) for p, timed in rows.items()
        }

    def due(self, partition: int, until_ms: int | None) -> list[list[RawRecord]]:
        """The partition's records timed at or before ``until_ms``, in batches, in order."""
        rows = self.pending.get(partition)
        out: list[RawRecord] = []
        if rows is None or until_ms is None:
            return []
        while rows and rows[0][0] <= until_ms:
            out.append(rows.popleft()[1])
        return _chunks(out, self.batch)

    def before(
        self, partition: int, docs: list[Any], records: list[RawRecord]
    ) -> list[list[RawRecord]]:
        """The batches to feed before an events batch (``docs``, its ``records``: a topic
        range's have no documents, their JSON values are read) on ``partition``: its records
        up to the batch's largest event time."""
        if any(d is None for d in docs):
            docs = [_doc(r.value) if d is None else d for d, r in zip(docs, records, strict=True)]
        return self.due(partition, batch_time_ms(docs, self.events_time_field))

    def rest(self) -> dict[int, list[list[RawRecord]]]:
        """Every record not fed yet, per partition, in batches, in order."""
        out = {}
        for p, rows in sorted(self.pending.items()):
            if rows:
                out[p] = _chunks([r for _t, r in rows], self.batch)
                rows.clear()
        return out


def _chunks(recs: list[RawRecord], n: int) -> list[list[RawRecord]]:
    return [recs[i : i + n] for i in range(0, len(recs), n)]


def batch_time_ms(docs: Iterable[Any], time_field: str) -> int | None:
    """The largest readable ``time_field`` of an events batch's documents (None if none is).

    >>> batch_time_ms([{"t": 5}, {"t": "x"}, None, {"t": 9}], "t")
    9
    """
    best = None
    for doc in docs:
        t = _time(doc, time_field)
        if t != UNREADABLE and (best is None or t > best):
            best = t
    return best


def _doc(value: bytes | None) -> Any:
    try:
        return None if value is None else orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _time(doc: Any, field: str) -> int:
    return record_time(doc, field, read_path)
