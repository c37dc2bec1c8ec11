"""Worker logging: plain lines (faust's format) or one JSON object per line; secrets redacted.

``driftline worker --log-format json`` writes lines like::

    {"ts": "2026-01-01T00:00:00.123Z", "level": "WARNING", "logger": "driftline.pipeline",
     "message": "dead-lettered events/1@42: invalid_json: ...", "topic": "events",
     "partition": 1, "offset": 42}

``topic``/``partition``/``offset`` come from the record's ``extra`` when given, else from the
``<topic>/<partition>@<offset>`` or ``partition=<p> offset=<o>`` the message itself names.

Both formats go through :class:`RedactFilter`: a password (``sasl.password=...``,
``password: ...``, a URL's ``user:password@``) is replaced by ``***`` before any handler formats
the record, so bootstrap credentials never reach the logs.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

FORMATS = ("plain", "json")
REDACTED = "***"

_SECRET_KEY = (
    r"(?:[\w.\-]*(?:password|passwd|pwd|secret|api[_.\-]?key|token)"
    r"|sasl\.jaas\.config|sasl_plain_password)"
)
_PATTERNS = (
    # key=value, key: value, "key": "value" (the key may be dotted: sasl.password, ssl.key.password)
    re.compile(
        rf"(?i)(\b{_SECRET_KEY}\\?[\"']?\s*[=:]\s*\\?[\"']?)([^\s\"'\\,;&}}\]]+)",
    ),
    # scheme://user:password@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+._\-]*://[^\s:/@]+:)([^\s@/]+)(?=@)"),
)


#: Secret values known to this process (the Kafka passwords): replaced wherever they appear.
_SECRETS: set[str] = set()


def add_secrets(values: list[str]) -> None:
    """Redact these exact values too (e.g. ``sasl.password``'s), whatever text surrounds them."""
    _SECRETS.update(v for v in values if len(v) >= 3)


def redact(text: str) -> str:
    """Replace secrets in ``text`` with ``***``.

    Examples
    --------
    >>> redact("bootstrap sasl.password=hunter2 sasl.username=bob")
    'bootstrap sasl.password=*** sasl.username=bob'
    >>> redact('{"sasl.password": "hunter2", "x": 1}')
    '{"sasl.password": "***", "x": 1}'
    >>> redact("kafka://bob:hunter2@broker:9092")
    'kafka://bob:***@broker:9092'
    """
    for secret in _SECRETS:
        text = text.replace(secret, REDACTED)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactFilter(logging.Filter):
    """Handler filter: redacts the formatted message, exception text and stack of a record.

    Records without secrets are left untouched (their ``args`` stay for faust's formatters).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string: let the handler report it
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


#: Loggers of the Kafka clients: librdkafka (through ``driftline.kafka``), aiokafka, faust's
#: transport. During a broker outage they write hundreds of lines a second.
CLIENT_LOGGERS = ("driftline.kafka", "aiokafka", "faust.transport")
#: Seconds during which a client line of the same kind is held back after one is written.
CLIENT_LOG_PERIOD_S = 60.0
_NUMBERS = re.compile(r"\d+")


class ClientNoise(logging.Filter):
    """Handler filter: each kind of Kafka client line at most once per ``period_s``.

    A kind is the logger, level and message with every number blanked (ports, milliseconds,
    counts, node ids differ between repeats). The next line of a kind after its period says
    how many like it were held back. driftline's own lines (and every other logger) pass:
    ``driftline.outage`` says once when the brokers are lost and when they are back.
    """

    MAX_KINDS = 1_000

    def __init__(
        self, period_s: float = CLIENT_LOG_PERIOD_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.period_s = period_s
        self.clock = clock
        #: kind -> [when the last line of it was written, lines held back since]
        self._kinds: dict[tuple[str, int, str], list[float]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(CLIENT_LOGGERS):
            return True
        try:
            msg = record.getMessage()
        except Exception:
            return True
        kind = (record.name, record.levelno, _NUMBERS.sub("#", msg)[:300])
        now = self.clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.period_s:
                seen[1] += 1
                return False
            if len(self._kinds) >= self.MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = [now, 0]
        held = 0 if seen is None else int(seen[1])
        if held:
            record.msg, record.args = f"{msg} ({held} more like it held back)", ()
        return True


_TPO = re.compile(r"(?P<topic>[A-Za-z0-9._\-]+)/(?P<partition>\d+)@(?P<offset>\d+)")
_PART = re.compile(r"\bpartition=(\d+)")
_OFFSET = re.compile(r"\boffset=(\d+)")
_TOPIC = re.compile(r"\btopic=([A-Za-z0-9._\-]+)")


def record_position(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """``topic``/``partition``/``offset`` of the Kafka record a log line is about, if any."""
    out: dict[str, Any] = {}
    for k in ("topic", "partition", "offset"):
        v = getattr(record, k, None)
        if v is not None:
            out[k] = v
    if out:
        return out
    m = _TPO.search(message)
    if m:
        return {
            "topic": m["topic"],
            "partition": int(m["partition"]),
            "offset": int(m["offset"]),
        }
    for k, pat, conv in (
        ("topic", _TOPIC, str),
        ("partition", _PART, int),
        ("offset", _OFFSET, int),
    ):
        m = pat.search(message)
        if m:
            out[k] = conv(m.group(1))
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ms), ``level``, ``logger``, ``message``, and
    ``topic``/``partition``/``offset`` when the record names them, ``exc`` for exceptions."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        doc.update(record_position(record, message))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return orjson.dumps(doc, default=str).decode()


def logging_config(log_format: str, loglevel: str | int = "info") -> dict[str, Any]:
    """A fresh :func:`logging.config.dictConfig` dict for the worker: stderr, redacted.

    ``plain`` keeps faust/mode's own line format (``[time] [pid] [LEVEL] message``).
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format: got {log_format!r}; expected one of {', '.join(FORMATS)}")
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    if log_format == "json":
        formatter: dict[str, Any] = {"()": "driftline.agents.logs.JsonFormatter"}
    else:
        from mode.utils.logging import DEFAULT_FORMATTERS

        # colours only when stderr is a terminal
        formatter = {**DEFAULT_FORMATTERS["colored"], "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": "driftline.agents.logs.RedactFilter"},
            "client_noise": {"()": "driftline.agents.logs.ClientNoise"},
        },
        "formatters": {"driftline": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "level": level,
                "formatter": "driftline",
                "filters": ["client_noise", "redact"],
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }
