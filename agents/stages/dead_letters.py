"""Dead letters: one document per record the batch step cannot use, counted by reason."""

from __future__ import annotations

import logging

import orjson

from driftline.agents.stages.outcome import BatchOutcome, Outbound
from driftline.agents.stages.records import RawRecord, RecordColumns
from driftline.errors import RecordError

log = logging.getLogger("driftline.pipeline")

#: Bytes of a rejected record's key and value kept in its dead letter.
DLQ_VALUE_LIMIT = 4096


def _text(b: bytes | None, limit: int | None = None) -> str | None:
    if b is None:
        return None
    return (b[:limit] if limit else b).decode("utf-8", errors="replace")


class DeadLetters:
    """Builds dead-letter messages (``dead_letter.schema.json``) for one pipeline."""

    def __init__(self, pipeline: str, dlq_topic: str) -> None:
        self.pipeline = pipeline
        self.dlq_topic = dlq_topic

    def letter(
        self, rec: RawRecord, reason: str, error: str, now_ms: int, topic: str | None = None
    ) -> Outbound:
        """The dead letter of ``rec``, for the dead-letter topic unless ``topic`` is given."""
        doc = {
            "pipeline": self.pipeline,
            "reason": reason,
            "error": error,
            "source": {
                "topic": rec.topic,
                "partition": rec.partition,
                "offset": rec.offset,
                "timestamp_ms": rec.timestamp_ms,
            },
            "key": _text(rec.key, DLQ_VALUE_LIMIT),
            "value": _text(rec.value, DLQ_VALUE_LIMIT),
            "value_size": 0 if rec.value is None else len(rec.value),
            "dead_lettered_at_ms": now_ms,
        }
        log.warning(
            "dead-lettered %s/%d@%d: %s: %s", rec.topic, rec.partition, rec.offset, reason, error
        )
        return (topic or self.dlq_topic, rec.key, orjson.dumps(doc))

    def reject(
        self, out: BatchOutcome, cols: RecordColumns, i: int, e: Exception, now_ms: int
    ) -> None:
        """Record ``i`` could not be decoded: one dead letter, counted by reason. Called in the
        ``except`` block; anything but a `RecordError` is a bug, logged with its traceback,
        and must not kill the worker either."""
        rec = cols[i]
        if isinstance(e, RecordError):
            reason, detail = e.reason, e.detail
        else:
            log.exception("cannot decode %s/%d@%d", rec.topic, rec.partition, rec.offset)
            reason, detail = "processing_error", repr(e)
        out.dead_letters[reason] += 1
        out.messages.append(self.letter(rec, reason, detail, now_ms))
