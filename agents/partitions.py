"""The input partitions a worker owns: each one's pipeline, how far it has read, its snapshots.

Input partition p and labels partition p share one state (the runner's range assignment keeps
them on the same worker), so everything here is keyed by the partition number.
"""

from __future__ import annotations

from driftline.agents.pipeline import BatchOutcome, PartitionPipeline
from driftline.agents.state import snapshot_json
from driftline.streams.feature_state import KeyedChanges

#: A partition's snapshot ready to write: (partition, epoch, serialised state without the
#: feature windows, the windows' keys changed since the last snapshot).
Snapshot = tuple[int, int, bytes, list[KeyedChanges]]
#: Changelog records (key, value; None deletes the key).
ChangelogRecords = list[tuple[bytes, bytes | None]]


class OwnedPartitions:
    """Pipelines, positions and snapshot epochs of the partitions assigned to this worker."""

    def __init__(self) -> None:
        self.pipelines: dict[int, PartitionPipeline] = {}
        #: per input partition: the next offset of each of its topics (in the snapshot)
        self.positions: dict[int, dict[str, int]] = {}
        #: per input partition: the epoch of its latest snapshot on the changelog
        self.epochs: dict[int, int] = {}
        #: per input partition: records its next snapshot writes first (tombstones of the
        #: per-key records of a state started over with ``--reset-state``)
        self.pending: dict[int, ChangelogRecords] = {}
        #: partitions revoked by a rebalance, kept until the assignment that follows it: one
        #: given back untouched resumes from memory instead of a restore from the changelog
        self.retained: dict[int, tuple[PartitionPipeline, dict[str, int], int]] = {}

    def advance(self, topic: str, p: int, oc: BatchOutcome) -> int:
        """Partition ``p`` of ``topic`` has been processed up to ``oc``: its next offset."""
        assert oc.last_offset is not None
        nxt = oc.last_offset + 1
        self.positions.setdefault(p, {})[topic] = nxt
        return nxt

    def snapshot(self, p: int) -> tuple[ChangelogRecords, Snapshot]:
        """Partition ``p``'s label-log records since its last snapshot, then its next snapshot
        (the state with the offsets it covers, serialised now: the state moves on with the
        next batch) and the feature windows changed since the last one (copied out now)."""
        pipe = self.pipelines[p]
        log = self.pending.pop(p, []) + pipe.drain_log()
        self.epochs[p] += 1
        small, changes = pipe.snapshot_keyed()
        state = {**small, "offsets": dict(self.positions[p])}
        return log, (p, self.epochs[p], snapshot_json(state), changes)

    def drop(self, p: int) -> None:
        self.pipelines.pop(p, None)
        self.positions.pop(p, None)
        self.pending.pop(p, None)

    def retain(self, p: int) -> None:
        """Drop ``p`` but keep its pipeline, positions and epoch until the next assignment
        (`resume`): a rebalance that gives it back to this worker, with nobody having
        committed anything on it in between, needs no restore."""
        pipe, positions = self.pipelines.get(p), self.positions.get(p)
        if pipe is not None and positions and not self.pending.get(p):
            self.retained[p] = (pipe, dict(positions), self.epochs.get(p, 0))
        self.drop(p)

    def resume(self, p: int, committed: dict[str, int | None]) -> bool:
        """Own ``p`` again from what `retain` kept, if the group's committed offsets of its
        topics (``committed``) are still where this worker left them; False (and nothing
        kept) otherwise: another member processed it meanwhile, restore it."""
        kept = self.retained.pop(p, None)
        if kept is None:
            return False
        pipe, positions, epoch = kept
        if any(committed.get(topic) != offset for topic, offset in positions.items()):
            return False
        self.pipelines[p], self.positions[p], self.epochs[p] = pipe, positions, epoch
        return True

    def forget_retained(self) -> None:
        """The assignment is complete: what was not given back belongs to others now."""
        self.retained.clear()
