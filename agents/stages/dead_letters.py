"""Dead letters: one document per record the batch step cannot use, counted by reason.

The log gets one line per pipeline and reason per :data:`LOG_INTERVAL_S` (the first record of
a kind at once, then how many more, with the latest), not a line per record: a flood of bad
input must not turn into a flood of log lines, nor a traceback per record.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from driftline.agents.stages.outcome import BatchOutcome, Outbound
from driftline.agents.stages.records import RawRecord, RecordColumns
from driftline.errors import RecordError

log = logging.getLogger("driftline.pipeline")

#: Bytes of a rejected record's key and value kept in its dead letter.
DLQ_VALUE_LIMIT = 4096
#: Seconds between two log lines of the same pipeline and dead-letter reason.
LOG_INTERVAL_S = 10.0
#: Characters of an error text kept (it may quote the record's own values).
ERROR_LIMIT = 1000


def _cut(error: str) -> str:
    """``error``, cut to :data:`ERROR_LIMIT` characters.

    >>> _cut("x" * 2000)[-30:]
    'xxxxxxxx... (2000 characters)'
    """
    if len(error) <= ERROR_LIMIT:
        return error
    return f"{error[: ERROR_LIMIT - 40]}... ({len(error)} characters)"


def _text(b: bytes | None, limit: int | None = None) -> str | None:
    if b is None:
        return None
    return (b[:limit] if limit else b).decode("utf-8", errors="replace")


def _base64_if_binary(b: bytes | None, limit: int) -> str | None:
    """The first ``limit`` bytes of ``b`` in base64 when they are not UTF-8 text (an Avro or
    Protobuf value): the text form replaces such bytes, this one keeps them.

    >>> _base64_if_binary(b"\\x00\\x00\\x00\\x00\\x01\\xff", 4096), _base64_if_binary(b"{}", 4096)
    ('AAAAAAH/', None)
    """
    if b is None:
        return None
    head = b[:limit]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(head).decode("ascii")
    return None


@dataclass
class _Held:
    """Dead letters of one kind not logged yet, and when that kind was last logged."""

    logged_at: float
    count: int = 0
    latest: str = ""


class DeadLetterLog:
    """At most one log line per (pipeline, reason) per ``interval_s``.

    The first dead letter of a kind is logged at once; the next ones within the interval are
    counted, and the next line (at the next dead letter or :meth:`flush` after the interval)
    says how many there were and names the latest.
    """

    def __init__(
        self,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.logger = logger
        self._held: dict[tuple[str, str], _Held] = {}

    def note(
        self, pipeline: str, rec: RawRecord, reason: str, error: str, exc: BaseException | None
    ) -> None:
        """One dead letter of ``reason``; ``exc`` (a bug, not bad input) gets its traceback
        logged with the line it is on."""
        now = self.clock()
        where = f"{rec.topic}/{rec.partition}@{rec.offset}"
        held = self._held.get((pipeline, reason))
        if held is not None and now - held.logged_at < self.interval_s:
            held.count += 1
            held.latest = f"{where}: {error}"
            return
        more = ""
        if held is not None and held.count:
            more = f" ({held.count} more {reason} in the {now - held.logged_at:.0f} s before)"
        self._held[(pipeline, reason)] = _Held(now)
        self.logger.warning("dead-lettered %s: %s: %s%s", where, reason, error, more,
                            exc_info=exc)  # fmt: skip

    def flush(self) -> None:
        """Log the counts held longer than the interval (called once per batch)."""
        now = self.clock()
        for (pipeline, reason), held in self._held.items():
            if held.count and now - held.logged_at >= self.interval_s:
                self.logger.warning(
                    "dead-lettered %d more %s records of pipeline %s in %.0f s; latest %s",
                    held.count, reason, pipeline, now - held.logged_at, held.latest,
                )  # fmt: skip
                held.logged_at, held.count, held.latest = now, 0, ""


#: The worker's one log of dead letters, shared by its partitions' pipelines.
DEAD_LETTER_LOG = DeadLetterLog()


class DeadLetters:
    """Builds dead-letter messages (``dead_letter.schema.json``) for one pipeline."""

    def __init__(
        self, pipeline: str, dlq_topic: str, log_to: DeadLetterLog = DEAD_LETTER_LOG
    ) -> None:
        self.pipeline = pipeline
        self.dlq_topic = dlq_topic
        self.log = log_to

    def letter(
        self,
        rec: RawRecord,
        reason: str,
        error: str,
        now_ms: int,
        topic: str | None = None,
        exc: BaseException | None = None,
    ) -> Outbound:
        """The dead letter of ``rec``, for the dead-letter topic unless ``topic`` is given."""
        error = _cut(error)
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
        for name, raw in (("key", rec.key), ("value", rec.value)):
            exact = _base64_if_binary(raw, DLQ_VALUE_LIMIT)
            if exact is not None:
                doc[f"{name}_base64"] = exact
        self.log.note(self.pipeline, rec, reason, error, exc)
        return (topic or self.dlq_topic, rec.key, orjson.dumps(doc))

    def reject(
        self, out: BatchOutcome, cols: RecordColumns, i: int, e: Exception, now_ms: int
    ) -> None:
        """Record ``i`` could not be used (``e`` says why): one dead letter, counted by reason.
        Anything but a `RecordError` is a bug: reason ``processing_error``, its traceback
        logged (once per interval), and it must not kill the worker either."""
        rec = cols[i]
        if isinstance(e, RecordError):
            reason, detail, exc = e.reason, e.detail, None
        else:
            reason, detail, exc = "processing_error", repr(e), e
        out.dead_letters[reason] += 1
        out.messages.append(self.letter(rec, reason, detail, now_ms, exc=exc))
