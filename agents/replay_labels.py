"""Labels in an offline replay: a labels file fed to the partitions as the worker gets them.

The worker reads the labels topic beside the input: a label joins its prediction whenever both
have arrived. Offline, each label goes to the partition of its entity (``labels.join_key =
"event_id"``: the label names ``input.key_field`` and ``input.event_id_field``, and is keyed by
the entity like the events). A partition's labels, in label-time order, go in batches of
`LABEL_BATCH`, each right after the first events batch that brings the partition's event-time
watermark to its last label time; the rest at the end. The label batches do not depend on the
events' batch size; with labels, events go in batches of `EVENTS_BATCH` (the label side reads
the events' watermark when it grades, so the interleaving must not depend on the command), and
a replay and a report find the same label-side alerts. Realized model metrics, ``error`` and
``label`` detectors and ``[[slices]]`` then come out of a replay as they do on the stream.

A file has no Kafka timestamps, so label times come from ``labels.time_field``. A line that
is not a valid label is dead-lettered by the partition it would have gone to (the first one
when its key is unreadable), with the worker's reasons.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from driftline.agents.pipeline import RawRecord
from driftline.agents.side_feed import timed_partitions
from driftline.errors import SpecError
from driftline.spec import PipelineSpec


def check_labels_spec(spec: PipelineSpec) -> None:
    """Raise `SpecError` if the spec cannot join a labels file offline."""
    ls = spec.labels
    if ls is None or spec.model is None:
        raise SpecError("--labels: the spec has no [labels] section (and a model) to join them")
    if ls.join_key != "event_id":
        raise SpecError(
            '--labels: a labels file joins by event id (labels.join_key = "event_id", with '
            "input.event_id_field); prediction ids name offsets of the live topic"
        )
    if ls.time_field is None:
        raise SpecError(
            "--labels: a labels file has no Kafka timestamps: set labels.time_field to the "
            "field holding each label's time"
        )


#: Events per partition batch when labels are joined (replay and report alike).
EVENTS_BATCH = 100
#: Labels per label batch: the batches are the same whatever the events' batch size, so the
#: label side (metrics, slice checks, alerts) gives the same results in a replay and a report.
LABEL_BATCH = 500


class LabelFeed:
    """A labels file, per partition, in label-time order, in batches of `LABEL_BATCH` (see
    the module doc)."""

    def __init__(
        self,
        spec: PipelineSpec,
        path: str | Path,
        partitions: int,
        partitioner: str,
        batch: int = LABEL_BATCH,
    ) -> None:
        check_labels_spec(spec)
        #: events per partition batch to replay beside these labels
        self.events_batch = EVENTS_BATCH
        ls = spec.labels
        assert ls is not None and ls.time_field is not None
        rows, self.total = timed_partitions(
            path, ls.topic, ls.time_field, dict.get, spec.input.key_field, partitions, partitioner
        )
        #: partition -> batches not fed yet: (largest label time, records), in time order
        self.pending: dict[int, deque[tuple[int, list[RawRecord]]]] = {}
        for p, timed in rows.items():
            self.pending[p] = deque(
                (timed[min(i + batch, len(timed)) - 1][0], [r for _t, r in timed[i : i + batch]])
                for i in range(0, len(timed), batch)
            )

    def due(self, partition: int, watermark_ms: int | None) -> list[list[RawRecord]]:
        """The partition's label batches whose labels are all at or before ``watermark_ms``
        (its events' watermark), in order."""
        batches = self.pending.get(partition)
        out: list[list[RawRecord]] = []
        if batches is None or watermark_ms is None:
            return out
        while batches and batches[0][0] <= watermark_ms:
            out.append(batches.popleft()[1])
        return out

    def rest(self) -> dict[int, list[list[RawRecord]]]:
        """Every label batch not fed yet, per partition, in order."""
        out = {}
        for p, batches in sorted(self.pending.items()):
            if batches:
                out[p] = [recs for _t, recs in batches]
                batches.clear()
        return out
