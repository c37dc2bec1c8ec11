"""A seeded corpus of hostile input records: mutations of good events, by kind.

Each kind is a function ``(rng, event) -> (key, value)`` of raw bytes, as a producer could send
them: broken encodings, bad JSON, wrong types, extreme numbers and times, huge or odd keys and
entity ids, deep nesting, oversized values. `corpus` interleaves them with good events.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson

Record = tuple[bytes | None, bytes | None]
Mutation = Callable[[random.Random, dict[str, Any]], Record]


def _dump(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def _key(event: dict[str, Any]) -> bytes:
    return str(event["user_id"]).encode()


def _with(field: str, value: Any) -> Mutation:
    def mutate(rng: random.Random, e: dict[str, Any]) -> Record:
        return _key(e), _dump({**e, field: value})

    return mutate


def _raw_field(field: str, raw: bytes) -> Mutation:
    """``field`` set to a JSON token orjson would not write (NaN, huge numbers, ...)."""

    def mutate(rng: random.Random, e: dict[str, Any]) -> Record:
        body = _dump({k: v for k, v in e.items() if k != field})
        return _key(e), body[:-1] + b',"' + field.encode() + b'":' + raw + b"}"

    return mutate


def _without(field: str) -> Mutation:
    return lambda rng, e: (_key(e), _dump({k: v for k, v in e.items() if k != field}))


def _in_user_id(event: dict[str, Any], raw: bytes) -> bytes:
    """The event's JSON with ``raw`` bytes at the start of the user_id string."""
    return _dump(event).replace(b'"user_id":"', b'"user_id":"' + raw, 1)


def _truncated(rng: random.Random, e: dict[str, Any]) -> Record:
    body = _dump(e)
    return _key(e), body[: rng.randrange(1, len(body) - 1)]


def _byte_flipped(rng: random.Random, e: dict[str, Any]) -> Record:
    body = bytearray(_dump(e))
    i = rng.randrange(len(body))
    body[i] = (body[i] + rng.randrange(1, 256)) % 256
    return _key(e), bytes(body)


def _deep(depth: int) -> Mutation:
    def mutate(rng: random.Random, e: dict[str, Any]) -> Record:
        body = _dump(e)
        return _key(e), body[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"

    return mutate


def _long_entity(n: int) -> Mutation:
    def mutate(rng: random.Random, e: dict[str, Any]) -> Record:
        uid = "u" * n
        return uid.encode()[:64], _dump({**e, "user_id": uid})

    return mutate


#: kind -> how to make one record of it
KINDS: dict[str, Mutation] = {
    "truncated": _truncated,
    "byte_flipped": _byte_flipped,
    "random_bytes": lambda rng, e: (_key(e), rng.randbytes(rng.randrange(1, 300))),
    "empty_value": lambda rng, e: (_key(e), b""),
    "null_value": lambda rng, e: (_key(e), None),
    "invalid_utf8": lambda rng, e: (_key(e), _in_user_id(e, b"\xff\xfe")),
    "lone_surrogate": lambda rng, e: (_key(e), _in_user_id(e, b"\\ud800")),
    "bom_prefix": lambda rng, e: (_key(e), b"\xef\xbb\xbf" + _dump(e)),
    "utf16": lambda rng, e: (_key(e), _dump(e).decode().encode("utf-16")),
    "json_list": lambda rng, e: (_key(e), b"[1, 2, 3]"),
    "json_number": lambda rng, e: (_key(e), b"42"),
    "json_string": lambda rng, e: (_key(e), b'"hello"'),
    "json_null": lambda rng, e: (_key(e), b"null"),
    "trailing_garbage": lambda rng, e: (_key(e), _dump(e) + b"}}"),
    "two_documents": lambda rng, e: (_key(e), _dump(e) + b"\n" + _dump(e)),
    "nested_1000": _deep(1_000),
    "nested_100000": _deep(100_000),
    "missing_ts": _without("ts"),
    "missing_amount": _without("amount"),
    "missing_user_id": _without("user_id"),
    "ts_string": _with("ts", "yesterday"),
    "ts_negative": _with("ts", -5),
    "ts_year_9999": _with("ts", "9999-12-31T23:59:59Z"),
    "ts_far_future_ms": _with("ts", 253_402_300_799_000),
    "ts_2_pow_64": _raw_field("ts", b"18446744073709551616"),
    "ts_float": _with("ts", 1.5e12),
    "ts_bool": _with("ts", True),
    "ts_null": _with("ts", None),
    "amount_string": _with("amount", "12.5"),
    "amount_bool": _with("amount", False),
    "amount_null": _with("amount", None),
    "amount_list": _with("amount", [1, 2]),
    "amount_object": _with("amount", {"v": 1}),
    "amount_400_digits": _raw_field("amount", b"9" * 400),
    "amount_1e999": _raw_field("amount", b"1e999"),
    "amount_nan_token": _raw_field("amount", b"NaN"),
    "amount_infinity_token": _raw_field("amount", b"Infinity"),
    "amount_huge_float": _with("amount", 1.7e308),
    "user_id_number": _with("user_id", 12345),
    "user_id_null": _with("user_id", None),
    "user_id_empty": _with("user_id", ""),
    "user_id_object": _with("user_id", {"id": 1}),
    "user_id_65k": _long_entity(65_536),
    "user_id_1m": _long_entity(1_000_000),
    "user_id_control_chars": _with("user_id", "a\x00b\x1f\u2028"),
    "country_huge": _with("country", "x" * 200_000),
    "duplicate_keys": lambda rng, e: (_key(e), _dump(e)[:-1] + b',"amount":"dup"}'),
    "extra_fields": _with("unexpected", {"deep": [1, {"x": None}]}),
    "key_null": lambda rng, e: (None, _dump(e)),
    "key_binary": lambda rng, e: (rng.randbytes(16), _dump(e)),
    "key_huge": lambda rng, e: (b"k" * 500_000, _dump(e)),
    "oversized_value": lambda rng, e: (_key(e), _dump({**e, "pad": "p" * 1_050_000})[:1_040_000]),
}


def corpus(
    events: list[dict[str, Any]], bad_share: float, seed: int
) -> Iterator[tuple[str, Record]]:
    """``events`` as records, each replaced by a hostile one of a random kind with probability
    ``bad_share``; yields (kind or ``"good"``, record). Every kind appears at least once."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    first = dict(zip(rng.sample(range(len(events)), len(kinds)), kinds, strict=True))
    for i, e in enumerate(events):
        kind = first.get(i)
        if kind is None and rng.random() < bad_share:
            kind = rng.choice(kinds)
        if kind is None:
            yield "good", (_key(e), _dump(e))
        else:
            yield kind, KINDS[kind](rng, e)
