"""Per-partition state on a compacted changelog topic, written inside the batch's transaction.

Every committed transaction holds, for each input partition it touched: the outputs, the
partition's state snapshot, and the consumer offsets. So after a crash the committed offsets
and the last committed snapshot always describe the same point of the stream: a restarted
worker neither loses nor double-counts what it had.

Layout on the changelog (partition = input partition, cleanup.policy=compact):
``<p>/chunk/<i>`` → zlib-compressed slice of the snapshot (JSON), and ``<p>/head`` →
``{"epoch", "chunks", "sha256"}`` written last. A restore reads the partition to its end,
keeps the newest head and the chunks of that epoch.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from driftline.errors import DriftlineError

CHUNK_BYTES = 512 * 1024
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
    "max.message.bytes": str(2 * CHUNK_BYTES),
}


def snapshot_json(state: dict[str, Any]) -> bytes:
    return orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_snapshot(partition: int, epoch: int, state: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The (key, value) records that store ``state`` for ``partition``; the head comes last."""
    return encode_snapshot_json(partition, epoch, snapshot_json(state))


def encode_snapshot_json(partition: int, epoch: int, raw: bytes) -> list[tuple[bytes, bytes]]:
    """`encode_snapshot` of a state already serialised by `snapshot_json`."""
    blob = zlib.compress(raw, 1)
    chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    records = [
        (f"{partition}/chunk/{i}".encode(), epoch.to_bytes(8, "big") + c)
        for i, c in enumerate(chunks)
    ]
    head = {"epoch": epoch, "chunks": len(chunks), "sha256": hashlib.sha256(blob).hexdigest()}
    records.append((f"{partition}/head".encode(), orjson.dumps(head)))
    return records


def decode_snapshot(
    records: dict[bytes, bytes], partition: int
) -> tuple[int, dict[str, Any]] | None:
    """The newest complete snapshot among the latest value of each key, or None."""
    raw_head = records.get(f"{partition}/head".encode())
    if raw_head is None:
        return None
    head = orjson.loads(raw_head)
    parts = []
    for i in range(head["chunks"]):
        v = records.get(f"{partition}/chunk/{i}".encode())
        if v is None or int.from_bytes(v[:8], "big") != head["epoch"]:
            raise DriftlineError(
                f"state changelog partition {partition}: chunk {i} of epoch {head['epoch']} is "
                "missing; the changelog was altered outside driftline"
            )
        parts.append(v[8:])
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != head["sha256"]:
        raise DriftlineError(f"state changelog partition {partition}: checksum mismatch")
    return head["epoch"], orjson.loads(zlib.decompress(blob))


def read_changelog_partition(
    bootstrap: str, topic: str, partition: int, timeout_s: float = 120.0
) -> dict[bytes, bytes]:
    """Latest committed value per key of one changelog partition (read_committed, to its end)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "driftline-restore",  # never subscribes or commits; assign() only
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    latest: dict[bytes, bytes] = {}
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        if hi <= lo:
            return latest
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise DriftlineError(
                    f"restoring state from {topic}[{partition}] took over {timeout_s:.0f}s; "
                    "is another transaction holding it open? (see transaction.timeout.ms)"
                )
            for m in c.consume(10_000, timeout=1.0):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return latest
                    raise DriftlineError(f"reading {topic}[{partition}]: {err}")
                key = m.key()
                if key is not None:
                    value = m.value()
                    if value is None:
                        latest.pop(key, None)
                    else:
                        latest[key] = value
    finally:
        c.close()


# ---------------------------------------------------------------------------- label-join log
# The label join logs deltas and rare checkpoints (streams.label_log) on the same changelog
# partition: ``<p>/labels/<seq>/chunk/<i>`` and ``<p>/labels/<seq>/head`` (``{"kind", "chunks",
# "sha256"}``). The partition's snapshot names the last seq and the checkpoint's; older entries
# are deleted with tombstones when a checkpoint supersedes them.


def label_log_keys(partition: int, seq: int, chunks: int) -> list[bytes]:
    base = f"{partition}/labels/{seq}"
    return [f"{base}/chunk/{i}".encode() for i in range(chunks)] + [f"{base}/head".encode()]


def encode_label_log(partition: int, seq: int, kind: str, data: Any) -> list[tuple[bytes, bytes]]:
    """Records storing one delta or checkpoint of the label-join log; the head comes last."""
    blob = zlib.compress(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), 1)
    chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    keys = label_log_keys(partition, seq, len(chunks))
    head = {"kind": kind, "chunks": len(chunks), "sha256": hashlib.sha256(blob).hexdigest()}
    return [*zip(keys[:-1], chunks, strict=True), (keys[-1], orjson.dumps(head))]


def decode_label_log(records: dict[bytes, bytes], partition: int, seq: int) -> tuple[str, Any, int]:
    """(kind, data, chunk count) of log entry ``seq``; DriftlineError if it is missing."""
    where = f"state changelog partition {partition}: label-join log entry {seq}"
    raw_head = records.get(f"{partition}/labels/{seq}/head".encode())
    if raw_head is None:
        raise DriftlineError(f"{where} is missing; the changelog was altered outside driftline")
    head = orjson.loads(raw_head)
    keys = label_log_keys(partition, seq, head["chunks"])[:-1]
    parts = [records.get(k) for k in keys]
    if any(p is None for p in parts):
        raise DriftlineError(f"{where} has missing chunks")
    blob = b"".join(p for p in parts if p is not None)
    if hashlib.sha256(blob).hexdigest() != head["sha256"]:
        raise DriftlineError(f"{where}: checksum mismatch")
    return head["kind"], orjson.loads(zlib.decompress(blob)), head["chunks"]
