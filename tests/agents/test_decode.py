"""Record decoding: every kind of bad input maps to one stable dead-letter reason."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.agents.decode import RecordDecoder, parse_timestamp_ms
from driftline.errors import RecordError

FIELDS = {"user": "string", "ts": "timestamp", "x": "float", "n": "int", "ok": "bool"}


@pytest.fixture
def dec() -> RecordDecoder:
    return RecordDecoder(FIELDS, "user", "ts", max_bytes=200)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"user":"a","ts":5,"x":1.5,"n":2,"ok":true}', ("a", 5, (1.5, 2.0, 1.0), ())),
        (
            b'{"user":"a","ts":5,"x":1,"n":-2,"ok":false,"extra":[1]}',
            ("a", 5, (1.0, -2.0, 0.0), ()),
        ),
        (
            b'{"user":"a","ts":"1970-01-01T00:00:01+00:00","x":0,"n":0,"ok":true}',
            ("a", 1000, (0.0, 0.0, 1.0), ()),
        ),
        (
            b'{"user":"a","ts":"2026-01-01T01:00:00.250+01:00","x":0,"n":0,"ok":true}',
            ("a", 1767225600250, (0.0, 0.0, 1.0), ()),
        ),
        (b'{"user":"a","ts":-5,"x":-1e300,"n":0,"ok":true}', ("a", -5, (-1e300, 0.0, 1.0), ())),
    ],
)
def test_valid_records(dec: RecordDecoder, raw: bytes, expected: tuple) -> None:
    assert dec.decode(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason", "words"),
    [
        (None, "invalid_json", "tombstone"),
        (b"", "invalid_json", "empty document"),
        (b"{not json", "invalid_json", "not valid"),
        (b"\xff\xfe{}", "invalid_utf8", "byte 0"),
        (b"[1,2]", "not_an_object", "JSON list"),
        (b'"text"', "not_an_object", "JSON str"),
        (b"null", "not_an_object", "NoneType"),
        (b'{"user":"a","ts":5,"x":NaN,"n":1,"ok":true}', "non_finite", "contains NaN"),
        (b'{"user":"a","ts":5,"x":Infinity,"n":1,"ok":true}', "non_finite", "contains Infinity"),
        (
            b'{"user":"a","ts":5,"x":1e999,"n":1,"ok":true}',
            "number_out_of_range",
            "1e999, beyond the range of a float64",
        ),
        (b'{"user":"a","ts":5,"n":1,"ok":true}', "missing_field", "'x' is missing"),
        (b'{"user":"a","ts":5,"x":null,"n":1,"ok":true}', "missing_field", "'x' is null"),
        (b'{"ts":5,"x":1,"n":1,"ok":true}', "missing_field", "'user' is missing"),
        (b'{"user":"a","ts":5,"x":"1","n":1,"ok":true}', "wrong_type", "'x' is str"),
        (b'{"user":"a","ts":5,"x":true,"n":1,"ok":true}', "wrong_type", "'x' is bool"),
        (b'{"user":"a","ts":5,"x":1,"n":1.5,"ok":true}', "wrong_type", "'n' is float"),
        (b'{"user":"a","ts":5,"x":1,"n":1,"ok":1}', "wrong_type", "'ok' is int"),
        (b'{"user":7,"ts":5,"x":1,"n":1,"ok":true}', "wrong_type", "'user' is int"),
        (
            b'{"user":"a","ts":"2026-01-01T00:00:00","x":1,"n":1,"ok":true}',
            "bad_timestamp",
            "no time zone",
        ),
        (b'{"user":"a","ts":"soon","x":1,"n":1,"ok":true}', "bad_timestamp", "not ISO-8601"),
        (b'{"user":"a","ts":5.5,"x":1,"n":1,"ok":true}', "bad_timestamp", "expected epoch ms"),
        (b'{"user":"a","ts":true,"x":1,"n":1,"ok":true}', "bad_timestamp", "bool"),
        (
            b'{"user":"a","ts":5,"x":1,"n":1,"ok":true,"pad":"' + b"y" * 200 + b'"}',
            "oversized",
            "over input.max_message_bytes=200",
        ),
    ],
)
def test_bad_records(dec: RecordDecoder, raw: bytes | None, reason: str, words: str) -> None:
    with pytest.raises(RecordError) as e:
        dec.decode(raw)
    assert e.value.reason == reason
    assert words in e.value.detail


def test_integer_keys_are_allowed_when_declared() -> None:
    d = RecordDecoder({"id": "int", "ts": "timestamp", "x": "float"}, "id", "ts", 100)
    assert d.decode(b'{"id": 42, "ts": 1, "x": 2}') == ("42", 1, (2.0,), ())
    assert d.numeric == ("x",)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (1767225600000, 1767225600000),
        ("2026-01-01T00:00:00Z", 1767225600000),
        ("2025-12-31T19:00:00-05:00", 1767225600000),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_timestamps(value: object, ms: int) -> None:
    assert parse_timestamp_ms("ts", value) == ms


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ms: int, offset_min: int = 0) -> str:
    """ISO-8601 text of ``ms`` at a zone offset, built with integer (timedelta) arithmetic."""
    dt = (EPOCH + timedelta(milliseconds=ms)).astimezone(timezone(timedelta(minutes=offset_min)))
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        # float seconds * 1000 truncated these to one millisecond less
        ("2004-04-08T05:56:40.031Z", 1081403800031),
        ("2004-04-08T11:26:40.031+05:30", 1081403800031),
        ("2004-04-07T21:56:40.031-08:00", 1081403800031),
        ("1970-07-14T10:40:35.762Z", 16800035762),
        ("1970-07-14T12:40:35.762+02:00", 16800035762),
        ("2038-01-29T20:18:52.569Z", 2148409132569),
        ("2038-01-30T09:03:52.569+12:45", 2148409132569),
        ("1969-06-18T06:55:14.131Z", -16995885869),
        # these were right before and stay right
        ("2024-01-01T00:00:00.001Z", 1704067200001),
        ("2024-01-01T00:00:00.009Z", 1704067200009),
        ("2024-01-01T00:00:00.123Z", 1704067200123),
        ("2023-12-31T19:00:00.123-05:00", 1704067200123),
        ("2024-01-01T00:00:00.123999Z", 1704067200123),  # microseconds are floored
        ("1969-12-31T23:59:59.9995Z", -1),  # floored, not truncated towards zero
    ],
)
def test_iso_timestamps_keep_every_millisecond(dec: RecordDecoder, text: str, ms: int) -> None:
    assert parse_timestamp_ms("ts", text) == ms
    raw = json.dumps({"user": "a", "ts": text, "x": 0, "n": 0, "ok": True}).encode()
    assert dec.decode(raw)[1] == dec.decode_checked(raw)[1] == ms


def test_random_iso_timestamps_equal_integer_arithmetic() -> None:
    rng = random.Random(20240101)
    cases = []
    for _ in range(3000):
        if rng.random() < 0.5:  # anywhere in 1900..2100
            ms = rng.randrange(-2_208_988_800_000, 4_102_444_800_000)
        else:  # just after a power of two of seconds, where the float product errs most
            ms = 2 ** rng.randrange(20, 33) * 1000 + rng.randrange(0, 30 * 86_400_000)
        cases.append((ms, iso(ms, 15 * rng.randrange(-48, 57))))
    got = [parse_timestamp_ms("ts", text) for _, text in cases]
    assert got == [ms for ms, _ in cases]
    # the sample does exercise the old float truncation
    floats = [int(datetime.fromisoformat(text).timestamp() * 1000) for _, text in cases]
    assert sum(f != ms for f, (ms, _) in zip(floats, cases, strict=True)) > 100


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**1023, -(2**1023), 2**1100, 2**1023 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "1970-01-01T00:00:00.001+00:00"]
    ),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["user", "ts", "x", "n", "ok", "other"]), _values))
def test_fast_path_equals_the_checked_decoder(doc: dict) -> None:
    dec = RecordDecoder(FIELDS, "user", "ts", max_bytes=200)
    raw = json.dumps(doc).encode()  # stdlib writes NaN/Infinity tokens too

    def outcome(f):
        try:
            return ("ok", f(raw))
        except RecordError as e:
            return ("err", e.reason, e.detail)

    assert outcome(dec.decode) == outcome(dec.decode_checked)


def test_extra_fields_come_back_as_they_are() -> None:
    d = RecordDecoder(FIELDS, "user", "ts", 200, extra=("user", "ok"))
    raw = b'{"user":"a","ts":5,"x":1,"n":2,"ok":true}'
    assert d.decode(raw) == d.decode_checked(raw) == ("a", 5, (1.0, 2.0, 1.0), ("a", True))
    with pytest.raises(ValueError, match="not declared"):
        RecordDecoder(FIELDS, "user", "ts", 200, extra=("nope",))


NESTED = {"user.id": "string", "ts": "timestamp", "geo.lat": "float", "user.tier": "string"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"user":{"id":"a","tier":"gold"},"ts":5,"geo":{"lat":1.5}}',
            ("ok", ("a", 5, (1.5,), ("gold",))),
        ),
        # a key that is the dotted name itself, when the path is not there
        (
            b'{"user":{"id":"a"},"user.tier":"x","ts":5,"geo":{"lat":2}}',
            ("ok", ("a", 5, (2.0,), ("x",))),
        ),
        (b'{"user":{"id":"a","tier":"g"},"ts":5,"geo":{}}', ("err", "missing_field", "geo.lat")),
        (b'{"user":"a","ts":5,"geo":{"lat":1}}', ("err", "missing_field", "user.id")),
        (b'{"user":{"id":"a","tier":"g"},"ts":5,"geo":[1]}', ("err", "missing_field", "geo.lat")),
        (
            b'{"user":{"id":"a","tier":"g"},"ts":5,"geo":{"lat":"1"}}',
            ("err", "wrong_type", "geo.lat"),
        ),
        (b'{"user":{"id":3,"tier":"g"},"ts":5,"geo":{"lat":1}}', ("err", "wrong_type", "user.id")),
    ],
)
def test_nested_fields_by_dotted_path(raw: bytes, expected: tuple) -> None:
    d = RecordDecoder(NESTED, "user.id", "ts", 200, extra=("user.tier",))

    def outcome(f):
        try:
            return ("ok", f(raw))
        except RecordError as e:
            assert expected[2] in e.detail
            return ("err", e.reason, expected[2])

    assert outcome(d.decode) == outcome(d.decode_checked) == expected


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), 1767225600000),
        (datetime(2026, 1, 1, 1, 0, 0, 250_999, tzinfo=timezone(timedelta(hours=1))),
         1767225600250),
        (datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC), -1),
    ],
)  # fmt: skip
def test_zone_aware_datetimes_are_timestamps(value: datetime, ms: int) -> None:
    assert parse_timestamp_ms("ts", value) == ms
    with pytest.raises(RecordError, match="bad_timestamp"):
        parse_timestamp_ms("ts", value.replace(tzinfo=None))


def _many_equals_each(d: RecordDecoder, values: list[bytes | None]) -> None:
    """decode_many's columns and errors are decode_checked's, record by record."""
    batch = d.decode_many(values)
    good, rejected = [], []
    for i, raw in enumerate(values):
        try:
            good.append((i, d.decode_checked(raw)))
        except RecordError as e:
            rejected.append((i, e.reason, e.detail))
    assert batch.good == [i for i, _ in good]
    assert batch.entities == [r[0] for _, r in good]
    assert batch.times == [r[1] for _, r in good]
    assert batch.numeric == tuple([r[2][j] for _, r in good] for j in range(len(d.numeric)))
    assert batch.extra == tuple([r[3][j] for _, r in good] for j in range(len(d.extra)))
    assert [(i, e.reason, e.detail) for i, e in batch.rejected] == rejected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.dictionaries(st.sampled_from(["user", "ts", "x", "n", "ok", "other"]), _values),
            st.sampled_from([None, b"", b"{", b"[1]", b"\xef\xbb\xbf{}", b'{"user":"a"}']),
        ),
        max_size=12,
    )
)
def test_decode_many_equals_the_checked_decoder_per_record(docs: list) -> None:
    d = RecordDecoder(FIELDS, "user", "ts", max_bytes=200, extra=("user", "ok"))
    values = [v if v is None or isinstance(v, bytes) else json.dumps(v).encode() for v in docs]
    _many_equals_each(d, values)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [b'{"user":{"id":"a","tier":"gold"},"ts":5,"geo":{"lat":1.5}}'] * 3,
        [  # the middle one decodes on the checked path only (a dotted key), between two others
            b'{"user":{"id":"a","tier":"g"},"ts":5,"geo":{"lat":1}}',
            b'{"user":{"id":"b"},"user.tier":"x","ts":6,"geo":{"lat":2}}',
            b'{"user":{"id":3,"tier":"g"},"ts":5,"geo":{"lat":1}}',
            b'{"user":{"id":"c","tier":"h"},"ts":7,"geo":{"lat":3}}',
        ],
        [b"{", b'{"user":{"id":"b"},"user.tier":"x","ts":6,"geo":{"lat":2}}', None],
    ],
)
def test_decode_many_of_nested_fields(values: list) -> None:
    _many_equals_each(RecordDecoder(NESTED, "user.id", "ts", 200, extra=("user.tier",)), values)


def test_decode_many_when_the_payload_reader_fails_unexpectedly() -> None:
    """A reader raising what it does not declare: the batch is decoded record by record (the
    record's error is its dead letter); an error of the ``passthrough`` types propagates."""
    from dataclasses import replace

    from driftline.agents.decode import JSON_FORMAT

    class Outage(Exception):
        pass

    def loads(raw: bytes):
        if raw == b'"boom"':
            raise KeyError("schema 7")
        if raw == b'"outage"':
            raise Outage("registry down")
        return JSON_FORMAT.loads(raw)

    payload = replace(JSON_FORMAT, loads=loads, loads_checked=lambda raw: loads(raw))
    d = RecordDecoder(FIELDS, "user", "ts", 200, payload=payload)
    ok = b'{"user":"a","ts":5,"x":1,"n":2,"ok":true}'
    batch = d.decode_many([ok, b'"boom"', ok])
    assert batch.good == [0, 2] and batch.numeric == ([1.0, 1.0], [2.0, 2.0], [1.0, 1.0])
    [(i, e)] = batch.rejected
    assert i == 1 and isinstance(e, KeyError)
    with pytest.raises(Outage):
        d.decode_many([ok, b'"outage"'], (Outage,))
