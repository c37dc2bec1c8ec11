"""Decode and validate raw input records against the spec's declared fields.

Every failure is a :class:`~driftline.errors.RecordError` with a stable ``reason`` code that
becomes the dead letter's ``reason`` and the ``reason`` label of the dead-letter counter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from driftline.errors import RecordError


def _check_float(name: str, v: Any) -> float:
    if type(v) is float:
        if not math.isfinite(v):
            raise RecordError("non_finite", f"field {name!r} is {v}, expected a finite number")
        return v
    if type(v) is int:
        return float(v)
    raise RecordError("wrong_type", f"field {name!r} is {type(v).__name__}, expected a number")


def _check_int(name: str, v: Any) -> float:
    if type(v) is int:
        return float(v)
    raise RecordError("wrong_type", f"field {name!r} is {type(v).__name__}, expected an integer")


def _check_bool(name: str, v: Any) -> float:
    if type(v) is bool:
        return float(v)
    raise RecordError("wrong_type", f"field {name!r} is {type(v).__name__}, expected true/false")


def _check_string(name: str, v: Any) -> str:
    if type(v) is str:
        return v
    raise RecordError("wrong_type", f"field {name!r} is {type(v).__name__}, expected a string")


def parse_timestamp_ms(name: str, v: Any) -> int:
    """Epoch milliseconds from an integer, or from an ISO-8601 string that carries a zone."""
    if type(v) is int:
        return v
    if type(v) is str:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise RecordError("bad_timestamp", f"field {name!r}={v!r} is not ISO-8601") from None
        if dt.tzinfo is None:
            raise RecordError(
                "bad_timestamp", f"field {name!r}={v!r} has no time zone; add Z or +hh:mm"
            )
        return int(dt.timestamp() * 1000)
    raise RecordError(
        "bad_timestamp", f"field {name!r} is {type(v).__name__}, expected epoch ms or ISO-8601 text"
    )


CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "float": _check_float,
    "int": _check_int,
    "bool": _check_bool,
    "string": _check_string,
    "timestamp": parse_timestamp_ms,
}


class RecordDecoder:
    """Turns one raw value into ``(entity, event_time_ms, numeric values)`` or raises RecordError.

    Examples
    --------
    >>> d = RecordDecoder({"user": "string", "ts": "timestamp", "x": "float"}, "user", "ts", 1024)
    >>> d.decode(b'{"user": "u1", "ts": "2026-01-01T00:00:00Z", "x": 2}')
    ('u1', 1767225600000, (2.0,))
    >>> d.decode(b'{"user": "u1", "ts": 5, "x": "2"}')
    Traceback (most recent call last):
    ...
    driftline.errors.RecordError: wrong_type: field 'x' is str, expected a number
    """

    def __init__(
        self, fields: Mapping[str, str], key_field: str, time_field: str, max_bytes: int
    ) -> None:
        self.key_field = key_field
        self.time_field = time_field
        self.max_bytes = max_bytes
        self.numeric = tuple(
            n for n, t in fields.items() if t in ("float", "int", "bool") and n != key_field
        )
        self._checks = [(n, CHECKS[t]) for n, t in fields.items()]
        self._numeric_set = set(self.numeric)

    def decode(self, raw: bytes | None) -> tuple[str, int, tuple[float, ...]]:
        if raw is None:
            raise RecordError(
                "invalid_json", "the record has no value (a tombstone); send a JSON object"
            )
        if len(raw) > self.max_bytes:
            raise RecordError(
                "oversized",
                f"value is {len(raw)} bytes, over input.max_message_bytes={self.max_bytes}",
            )
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise self._classify_bad_json(raw, e) from None
        if type(obj) is not dict:
            raise RecordError(
                "not_an_object", f"value is a JSON {type(obj).__name__}, expected an object"
            )
        out: dict[str, Any] = {}
        for name, check in self._checks:
            try:
                v = obj[name]
            except KeyError:
                raise RecordError("missing_field", f"field {name!r} is missing") from None
            if v is None:
                raise RecordError("missing_field", f"field {name!r} is null")
            out[name] = check(name, v)
        key = obj[self.key_field]
        if type(key) is not str and type(key) is not int:
            raise RecordError(
                "wrong_type", f"key field {self.key_field!r} must be a string or integer"
            )
        return str(key), out[self.time_field], tuple(out[n] for n in self.numeric)

    @staticmethod
    def _classify_bad_json(raw: bytes, err: Exception) -> RecordError:
        # orjson rejects NaN/Infinity tokens; tell them apart from broken JSON.
        try:
            json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return RecordError("invalid_json", f"not valid UTF-8 JSON: {err}")
        return RecordError(
            "non_finite", "value contains NaN or Infinity, which JSON does not allow"
        )
