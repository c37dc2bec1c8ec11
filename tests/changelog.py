"""The state changelog as a compacted topic keeps it, for batch-step tests without Kafka."""

from __future__ import annotations

from typing import Any


def drain_into(pipe: Any, changelog: dict[bytes, bytes]) -> list[bytes]:
    """Apply ``pipe.drain_log()`` (a `PartitionPipeline`'s label-log records since the last
    call) to ``changelog`` as compaction would: a tombstone deletes its key. Returns the keys."""
    keys = []
    for key, value in pipe.drain_log():
        keys.append(key)
        if value is None:
            changelog.pop(key, None)
        else:
            changelog[key] = value
    return keys
