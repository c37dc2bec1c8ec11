"""Hostile records at the decode stage: each one becomes one dead letter with the exact reason,
the events around it go on, and no batch's time or memory grows with one record's size."""

from __future__ import annotations

import json
import logging
import time
import tomllib
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from driftline.agents.decode import JSON_FORMAT, RecordDecoder
from driftline.agents.demo import ks_adwin_spec_text, train_demo_model
from driftline.agents.pipeline import PartitionPipeline
from driftline.agents.predictor import build_predictor
from driftline.agents.stages.bounds import EventBounds
from driftline.agents.stages.dead_letters import DeadLetterLog, DeadLetters
from driftline.agents.stages.decode import decode_batch
from driftline.agents.stages.outcome import BatchOutcome
from driftline.agents.stages.records import RawRecord, RecordColumns
from driftline.agents.synthetic import SyntheticStream
from driftline.errors import RecordError
from driftline.schemas import validate
from driftline.spec import default_of, parse_spec

FIELDS = {"user": "string", "ts": "timestamp", "x": "float", "n": "int", "tag": "string"}
NOW = 1_767_225_600_000  # the worker's clock: 2026-01-01T00:00:00Z
STAMP = NOW - 60_000  # the records' broker timestamp
TS = STAMP - 1_000  # a good event time
MAX_BYTES = 2_000_000
HOUR = 3_600_000


def event(**text: str) -> bytes:
    """A JSON event with fields written as JSON text (so numbers JSON libraries will not write,
    e.g. 400 digits, can be); the rest are those of a good event."""
    fields = {"user": '"u1"', "ts": str(TS), "x": "1.5", "n": "2", "tag": '"a"', **text}
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (id, value, broker timestamp, reason or None for a valid event, words in the error)
HOSTILE: list[tuple[str, bytes | None, int | None, str | None, str]] = [
    # size
    ("oversized", event(pad='"' + "y" * MAX_BYTES + '"'), STAMP, "oversized", "over input"),
    ("key 256 bytes", event(user='"' + "k" * 256 + '"'), STAMP, None, ""),
    ("key 257 bytes", event(user='"' + "k" * 257 + '"'), STAMP, "key_too_long", "257 bytes"),
    ("key 64 emoji", event(user='"' + "\U0001f600" * 64 + '"'), STAMP, None, ""),
    (
        "key 65 emoji",
        event(user='"' + "\U0001f600" * 65 + '"'),
        STAMP,
        "key_too_long",
        "260 bytes, over input.max_key_bytes=256",
    ),
    ("key 65k chars", event(user='"' + "k" * 65_536 + '"'), STAMP, "key_too_long", "65536 bytes"),
    (
        "key 1M chars",
        event(user='"' + "k" * 1_000_000 + '"'),
        STAMP,
        "key_too_long",
        "1000000 bytes",
    ),
    ("tag 1M chars", event(tag='"' + "t" * 1_000_000 + '"'), STAMP, None, ""),
    ("key with NUL", event(user='"u1\\u0000"'), STAMP, None, ""),
    # depth
    ("1000 deep, unread field", event(other=nested(1000)), STAMP, None, ""),
    ("1025 deep", event(other=nested(1025)), STAMP, "too_deep", "more than 1024 deep"),
    ("100k deep", event(x=nested(100_000)), STAMP, "too_deep", "more than 1024 deep"),
    ("100k deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, STAMP, "too_deep", ""),
    ("deep in a read field", event(x=nested(50)), STAMP, "wrong_type", "'x' is list"),
    # encoding
    ("BOM", b"\xef\xbb\xbf" + event(), STAMP, "byte_order_mark", "byte order mark"),
    ("lone surrogate escape", event(tag='"\\ud800"'), STAMP, "invalid_utf8", "surrogate"),
    ("lone low surrogate", event(tag='"\\udc00x"'), STAMP, "invalid_utf8", "surrogate"),
    (
        "UTF-8 of a surrogate",
        event(tag='"').replace(b'"tag": "', b'"tag": "\xed\xa0\x80'),
        STAMP,
        "invalid_utf8",
        "not valid UTF-8",
    ),
    ("byte FF", event().replace(b'"a"', b'"\xff"'), STAMP, "invalid_utf8", "not valid UTF-8"),
    ("overlong slash", event().replace(b'"a"', b'"\xc0\xaf"'), STAMP, "invalid_utf8", "byte"),
    ("UTF-16", json.dumps({"user": "u1"}).encode("utf-16"), STAMP, "invalid_utf8", "byte 0"),
    ("tombstone", None, STAMP, "invalid_json", "tombstone"),
    ("empty", b"", STAMP, "invalid_json", "empty document"),
    # time
    (
        "9999-12-31",
        event(ts='"9999-12-31T23:59:59Z"'),
        STAMP,
        "future_event",
        "9999-12-31T23:59:59.000Z",
    ),
    (
        "year 9999 as ms",
        event(ts="253402300799999"),
        STAMP,
        "future_event",
        "over input.max_future_ms=3600000",
    ),
    (
        "1 ms beyond the bound",
        event(ts=str(STAMP + HOUR + 1)),
        STAMP,
        "future_event",
        "ahead of the record's broker timestamp",
    ),
    ("at the bound", event(ts=str(STAMP + HOUR)), STAMP, None, ""),
    (
        "no broker time: worker clock",
        event(ts=str(NOW + HOUR + 1)),
        None,
        "future_event",
        "worker's clock",
    ),
    ("broker time -1: worker clock", event(ts=str(NOW + HOUR)), -1, None, ""),
    (
        "broker time ahead of the clock",
        event(ts=str(NOW + 2 * HOUR)),
        NOW + 3 * HOUR,
        "future_event",
        "worker's clock",
    ),
    ("2^62", event(ts=str(2**62)), STAMP, "future_event", "4611686018427387904 ms"),
    ("2^63", event(ts=str(2**63)), STAMP, "number_out_of_range", "64-bit range"),
    ("2^64", event(ts=str(2**64)), STAMP, "number_out_of_range", "64-bit range"),
    ("-2^63 - 1", event(ts=str(-(2**63) - 1)), STAMP, "number_out_of_range", "64-bit range"),
    ("1e400 ms", event(ts="1e400"), STAMP, "number_out_of_range", "float64"),
    ("before 1970", event(ts="-1"), STAMP, "bad_timestamp", "before 1970-01-01T00:00:00Z"),
    ("year 1", event(ts='"0001-01-01T00:00:00Z"'), STAMP, "bad_timestamp", "before 1970"),
    ("float ms", event(ts="1767225540000.5"), STAMP, "bad_timestamp", "expected epoch ms"),
    # numbers
    ("400 digits", event(x="1" * 400), STAMP, "number_out_of_range", "400 digits"),
    ("5000 digits", event(x="-" + "9" * 5000), STAMP, "number_out_of_range", "5000 digits"),
    ("1e400", event(x="1e400"), STAMP, "number_out_of_range", "1e400"),
    ("-1e400", event(x="-1e400"), STAMP, "number_out_of_range", "-1e400"),
    ("1e308", event(x="1e308"), STAMP, None, ""),
    ("NaN", event(x="NaN"), STAMP, "non_finite", "NaN"),
    ("-Infinity", event(x="-Infinity"), STAMP, "non_finite", "-Infinity"),
    ("int 2^64", event(n=str(2**64)), STAMP, "number_out_of_range", "64-bit integer range"),
    ("int 2^63", event(n=str(2**63)), STAMP, None, ""),
]


def _cols(values: list[bytes | None], stamps: list[int | None]) -> RecordColumns:
    n = len(values)
    return RecordColumns("in", 0, list(range(100, 100 + n)), stamps, [b"k"] * n, values)


def _stage() -> tuple[RecordDecoder, DeadLetters, EventBounds]:
    dec = RecordDecoder(FIELDS, "user", "ts", MAX_BYTES, extra=("tag",))
    bounds = EventBounds(default_of("input.max_key_bytes"), default_of("input.max_future_ms"),
                         "user", "ts")  # fmt: skip
    return dec, DeadLetters("p", "dlq"), bounds


@pytest.mark.parametrize(
    ("value", "stamp", "reason", "words"),
    [row[1:] for row in HOSTILE],
    ids=[row[0] for row in HOSTILE],
)
def test_a_hostile_record_is_one_dead_letter_with_its_reason(
    value: bytes | None, stamp: int | None, reason: str | None, words: str
) -> None:
    dec, dead, bounds = _stage()
    out = BatchOutcome(consumed=3)
    t0 = time.perf_counter()
    frame = decode_batch(dec, _cols([event(), value, event()], [STAMP, stamp, STAMP]), dead,
                         out, NOW, bounds)  # fmt: skip
    assert time.perf_counter() - t0 < 1.0
    assert frame is not None
    if reason is None:
        assert not out.dead_letters and not out.messages
        assert frame.records.offsets == [100, 101, 102]
        return
    assert frame.records.offsets == [100, 102]  # the events around it go on
    assert frame.entities.tolist() == ["u1", "u1"] and frame.times.tolist() == [TS, TS]
    assert out.dead_letters == Counter({reason: 1})
    [(topic, key, body)] = out.messages
    doc = orjson.loads(body)
    validate("dead_letter", doc)
    assert (topic, key, doc["reason"], doc["source"]["offset"]) == ("dlq", b"k", reason, 101)
    assert words in doc["error"] and len(doc["error"]) <= 1000
    # the fast and the checked decoder agree; a reason is the decoder's or the bounds' (key,
    # time range), never both
    fast, checked = _outcome(dec.decode, value), _outcome(dec.decode_checked, value)
    assert fast == checked and fast in ("decoded", reason)


def _outcome(decode: Callable[[bytes | None], object], value: bytes | None) -> str:
    try:
        decode(value)
    except RecordError as e:
        return e.reason
    return "decoded"


def test_dead_letters_keep_record_order_across_decoder_and_bounds() -> None:
    dec, dead, bounds = _stage()
    out = BatchOutcome(consumed=5)
    values = [event(ts=str(2**62)), b"{", event(), event(user='"' + "k" * 300 + '"'), b"[]"]
    decode_batch(dec, _cols(values, [STAMP] * 5), dead, out, NOW, bounds)
    got = [(orjson.loads(b)["source"]["offset"], orjson.loads(b)["reason"])
           for _, _, b in out.messages]  # fmt: skip
    assert got == [(100, "future_event"), (101, "invalid_json"), (103, "key_too_long"),
                   (104, "not_an_object")]  # fmt: skip


def test_the_bounds_come_from_the_spec() -> None:
    text = {"pipeline": {"name": "p"}, "features": [{"name": "c", "agg": "count",
                                                     "window_ms": 60_000}],
            "input": {"topic": "t", "key_field": "user", "time_field": "ts",
                      "fields": {"user": "string", "ts": "timestamp"}}}  # fmt: skip
    spec = parse_spec(text)
    assert (spec.input.max_key_bytes, spec.input.max_future_ms) == (256, 3_600_000)
    text["input"].update(max_key_bytes=8, max_future_ms=0)
    p = PartitionPipeline(parse_spec(text), 0, None, "v")
    ok, long_key, ahead = (orjson.dumps({"user": u, "ts": t})
                           for u, t in (("u", TS), ("u" * 9, TS), ("u", STAMP + 1)))  # fmt: skip
    recs = [RawRecord("t", 0, i, STAMP, None, v) for i, v in enumerate((ok, long_key, ahead))]
    out = p.process(recs)
    assert out.dead_letters == Counter({"key_too_long": 1, "future_event": 1})
    assert (out.feature_vectors, out.late_events) == (1, 0)


def _demo_pipeline(max_key_bytes: int) -> PartitionPipeline:
    data = tomllib.loads(ks_adwin_spec_text())
    data.pop("model")
    data["input"].update(max_message_bytes=1_048_576, max_key_bytes=max_key_bytes)
    data["features"].append(
        {"name": "countries", "agg": "distinct", "field": "country", "window_ms": 60_000}
    )
    return PartitionPipeline(parse_spec(data), 0, None, "v")


@pytest.mark.parametrize(
    ("field", "size", "max_key_bytes", "dead"),
    [
        ("user_id", 65_536, 256, 1),
        ("user_id", 1_000_000, 256, 1),
        ("user_id", 65_536, 65_536, 0),  # accepted at the largest bound: still no blow-up
        ("country", 1_000_000, 256, 0),
    ],
)
def test_one_huge_value_costs_neither_time_nor_memory_of_the_batch(
    field: str, size: int, max_key_bytes: int, dead: int
) -> None:
    """Was: a 65,536-character id took a batch of 5,000 from 0.35 s to 18 s and 3.3 GB, and a
    1,000,000-character one asked numpy for 37 GiB."""
    p = _demo_pipeline(max_key_bytes)
    evs = list(SyntheticStream(n=5_000, shift_at=5_000, seed=3, n_entities=500).events())
    hostile = dict(evs[2_000], **{field: "k" * size})
    recs = [RawRecord("in", 0, i, e["ts"], None, orjson.dumps(e)) for i, e in enumerate(evs)]
    recs.insert(2_000, RawRecord("in", 0, -1, evs[2_000]["ts"], None, orjson.dumps(hostile)))
    tracemalloc.start()
    t0 = time.perf_counter()
    out = p.process(recs)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(out.dead_letters.values()) == dead
    assert out.feature_vectors == 5_001 - dead
    assert elapsed < 5.0  # ~0.1 s here; generous for a loaded CI machine
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_one_log_line_per_reason_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    dlog = DeadLetterLog(10.0, lambda: clock[0])
    dead = DeadLetters("p", "dlq", dlog)
    rec = RawRecord("in", 1, 7, None, None, b"{")
    caplog.set_level(logging.WARNING, "driftline.pipeline")
    for i in range(1_000):
        dead.letter(rec._replace(offset=i), "invalid_json", "bad", 0)
    dead.letter(rec, "too_deep", "deep", 0)
    assert [r.getMessage() for r in caplog.records] == [
        "dead-lettered in/1@0: invalid_json: bad",
        "dead-lettered in/1@7: too_deep: deep",
    ]
    caplog.clear()
    clock[0] = 5.0
    dlog.flush()  # the interval is not over: nothing yet
    clock[0] = 12.0
    dlog.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "dead-lettered 999 more invalid_json records of pipeline p in 12 s; latest in/1@999: bad"
    ]
    caplog.clear()
    clock[0] = 30.0
    dlog.flush()  # nothing held
    dead.letter(rec, "invalid_json", "again", 0)
    assert [r.getMessage() for r in caplog.records] == ["dead-lettered in/1@7: invalid_json: again"]


def test_a_bug_is_a_processing_error_with_one_traceback_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(raw: bytes | None) -> tuple:
        raise KeyError("boom")

    class Broken(RecordDecoder):  # a bug in reading a payload (the batch, then each record)
        def __init__(self) -> None:
            payload = replace(JSON_FORMAT, loads=boom, loads_checked=boom)
            super().__init__(FIELDS, "user", "ts", MAX_BYTES, payload=payload)

    _, _, bounds = _stage()
    dead = DeadLetters("p", "dlq", DeadLetterLog(10.0, lambda: 0.0))
    out = BatchOutcome(consumed=50)
    caplog.set_level(logging.WARNING, "driftline.pipeline")
    assert decode_batch(Broken(), _cols([event()] * 50, [STAMP] * 50), dead, out, NOW,
                        bounds) is None  # fmt: skip
    assert out.dead_letters == Counter({"processing_error": 50})
    [line] = caplog.records
    assert line.exc_info is not None and "KeyError('boom')" in line.getMessage()


def test_hostile_labels_are_dead_letters_and_cannot_expire_the_predictions(
    tmp_path: Path,
) -> None:
    """A label dated 9999-12-31 moved the label clock there (every waiting prediction expired);
    one at 2^63 ms stopped the batch with an OverflowError."""
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(tmp_path / "m.pkl")
    train_demo_model(tmp_path / "m.pkl", list(data["model"]["inputs"]), n=2_000)
    data["labels"] = {"ttl_ms": 60_000, "time_field": "ts"}
    spec = parse_spec(data)
    pred, version = build_predictor(spec)
    pipe = PartitionPipeline(spec, 0, pred, version)
    evs = list(SyntheticStream(n=20, shift_at=20, seed=3, n_entities=5).events())
    pipe.process([RawRecord("driftline.demo.events", 0, i, e["ts"], None, orjson.dumps(e))
                  for i, e in enumerate(evs)])  # fmt: skip
    t = evs[-1]["ts"]

    def label(i: int, ts: str) -> bytes:
        return (
            f'{{"prediction_id": "driftline.demo.events:0:{i}", "label": 1, "ts": {ts}}}'.encode()
        )

    values = [
        label(0, '"9999-12-31T23:59:59Z"'),
        label(1, str(2**63)),
        label(2, "-5"),
        b"\xef\xbb\xbf" + label(3, str(t)),
        label(4, "1" * 400),
        label(5, str(t)),
    ]
    recs = [RawRecord("driftline.labels", 0, i, t, None, v) for i, v in enumerate(values)]
    oc = pipe.process_labels(RecordColumns.from_records(recs))
    dlq = [orjson.loads(v) for topic, _, v in oc.messages if topic == spec.output.dlq_topic]
    assert [(d["source"]["offset"], d["reason"]) for d in dlq] == [
        (0, "future_event"), (1, "number_out_of_range"), (2, "bad_timestamp"),
        (3, "byte_order_mark"), (4, "number_out_of_range"),
    ]  # fmt: skip
    for d in dlq:
        validate("dead_letter", d)
    assert oc.labels is not None and oc.labels.joined == 1
    assert pipe.labels is not None and pipe.labels.counters()["expired_prediction"] == 0
