"""[business] through the batch step: decoding (bad records to the DLQ), the rolling value, and
the business metric during vs before each alert's episode."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.pipeline import PartitionPipeline, RawRecord, RecordColumns
from driftline.agents.predictor import build_predictor
from driftline.alert_format import format_alert
from driftline.schemas import validate
from tests.agents.test_slices import DROP_AT, SLICE, T0, _batches, _run, _spec, _stream
from tests.agents.test_slices import model_path as model_path

BUSINESS = {"topic": "orders", "field": "order.revenue", "window_ms": 60_000}


def _pipe(model_path: Path, **business: Any) -> PartitionPipeline:
    spec = _spec(model_path, [SLICE])
    spec = spec.__class__(**{**spec.__dict__, "business": _business(business)})
    pred, version = build_predictor(spec)
    return PartitionPipeline(spec, 0, pred, version)


def _business(extra: dict[str, Any]) -> Any:
    from driftline.spec import parse_spec

    base = {
        "pipeline": {"name": "b"},
        "input": {"topic": "e", "key_field": "u", "time_field": "t",
                  "fields": {"u": "string", "t": "int"}},
        "business": {**BUSINESS, **extra},
    }  # fmt: skip
    return parse_spec(base).business


def _orders(times: np.ndarray, values: np.ndarray) -> list[RawRecord]:
    return [
        RawRecord("orders", 0, i, int(t), b"u1", orjson.dumps({"order": {"revenue": float(v)}}))
        for i, (t, v) in enumerate(zip(times, values, strict=True))
    ]


def _span(times: np.ndarray, values: np.ndarray, lo: int, hi: int) -> tuple[float | None, int]:
    """The mean of the values whose 1 s bucket starts in [lo, hi)."""
    start = times // 1_000 * 1_000
    sel = (start >= lo) & (start < hi)
    n = int(sel.sum())
    return (float(values[sel].mean()) if n else None), n


@pytest.mark.parametrize(
    ("value", "reason", "error"),
    [
        (b"not json", "invalid_json", ""),
        (b"[1]", "not_an_object", "a business record must be a JSON object"),
        (b'{"order": {}}', "missing_field", "field 'order.revenue' (business.field) is missing"),
        (b'{"order": {"revenue": "9"}}', "wrong_type", "field 'order.revenue' is str"),
        (b'{"order": {"revenue": 1e300}}', "number_out_of_range", "within ±1e15"),
        (b'{"order": {"revenue": true}}', "wrong_type", "field 'order.revenue' is bool"),
        (None, "invalid_json", "the record has no value"),
    ],
)
def test_bad_business_records_go_to_the_dlq(
    model_path: Path,
    value: bytes | None,
    reason: str,
    error: str,
) -> None:
    pipe = _pipe(model_path)
    good = _orders(np.array([T0, T0 + 10]), np.array([3.0, 5.0]))
    bad = RawRecord("orders", 0, 2, T0 + 20, b"u1", value)  # type: ignore[arg-type]
    out = pipe.process_business(RecordColumns.from_records([good[0], bad, good[1]]))
    assert out.dead_letters == {reason: 1} and out.consumed == 3
    (letter,) = [orjson.loads(v) for t, _, v in out.all_messages() if t == "driftline.dlq"]
    validate("dead_letter", letter)
    assert letter["reason"] == reason and error in letter["error"]
    assert letter["source"]["topic"] == "orders" and letter["source"]["offset"] == 2
    assert out.business == ("business", 4.0, 2)


@pytest.mark.parametrize(
    ("extra", "stamp_or_field", "reason"),
    [
        ({"time_field": "at"}, {"order": {"revenue": 1}}, "missing_field"),
        ({"time_field": "at"}, {"order": {"revenue": 1}, "at": "yesterday"}, "bad_timestamp"),
        ({"time_field": "at"}, {"order": {"revenue": 1}, "at": 2**62}, "future_event"),
        ({}, None, "bad_timestamp"),  # no Kafka timestamp and no time_field
    ],
)
def test_business_times(
    model_path: Path,
    extra: dict[str, Any],
    stamp_or_field: dict[str, Any] | None,
    reason: str,
) -> None:
    pipe = _pipe(model_path, **extra)
    doc = stamp_or_field or {"order": {"revenue": 1}}
    stamp = None if stamp_or_field is None else T0
    rec = RawRecord("orders", 0, 0, stamp, b"u", orjson.dumps(doc))
    out = pipe.process_business(RecordColumns.from_records([rec]))
    assert out.dead_letters == {reason: 1}
    assert out.business is not None and out.business[2] == 0 and math.isnan(out.business[1])


@pytest.mark.parametrize("agg", ["mean", "sum"])
def test_alerts_carry_the_business_metric_during_vs_before(
    model_path: Path,
    agg: str,
) -> None:
    pipe = _pipe(model_path, agg=agg)
    # revenue 10 per order until the drop (event time T0 + 30 s), 4 after: one order per 100 ms
    bt = T0 + np.arange(0, 60_000, 100, dtype=np.int64)
    bv = np.where(bt < T0 + 10 * DROP_AT, 10.0, 4.0)
    out = pipe.process_business(RecordColumns.from_records(_orders(bt, bv)))
    assert out.business is not None
    name, value, n = out.business
    want_n = int((bt > T0 + 59_900 - 60_000).sum())
    want = bv[-want_n:].mean() if agg == "mean" else bv[-want_n:].sum()
    assert (name, n) == ("business", want_n) and value == pytest.approx(want)
    events, y, _ = _stream()
    outs = _run(pipe, list(_batches(events, y)))
    alerts = [a for o in outs for a in o.alerts]
    assert alerts and all("business" in a for a in alerts)
    (a,) = [a for a in alerts if a["kind"] == "slice" and a["status"] == "firing"]
    validate("alert", a)
    t = a["window"]["event_time_ms"]
    b = a["business"]
    before, n_before = _span(bt, bv, t - 60_000, t)
    during, n_during = _span(bt, bv, t, T0 + 60_000)
    assert (b["before"]["n"], b["during"]["n"]) == (n_before, n_during)
    assert (b["before"]["from_ms"], b["before"]["to_ms"]) == (t - 60_000, t)
    if agg == "mean":
        assert b["before"]["value"] == pytest.approx(before)
        assert b["during"]["value"] == pytest.approx(4.0) and during == pytest.approx(4.0)
    else:  # totals per window_ms
        assert b["before"]["value"] == pytest.approx(before * n_before)
        span_ms = b["during"]["to_ms"] - b["during"]["from_ms"]
        assert b["during"]["value"] == pytest.approx(4.0 * n_during * 60_000 / span_ms)
    assert b["change"] == pytest.approx(b["during"]["value"] - b["before"]["value"])
    line = format_alert(a)
    assert f"| business ({agg}): " in line and "during the episode" in line
    msgs = [orjson.loads(v) for o in outs for t_, _, v in o.all_messages()
            if t_ == "driftline.model_metrics"]  # fmt: skip
    for m in msgs:
        validate("model_metrics", m)
    assert msgs[-1]["business"]["n"] == want_n and msgs[-1]["business"]["agg"] == agg


def test_business_state_round_trip(model_path: Path) -> None:
    pipe = _pipe(model_path)
    bt = T0 + np.arange(0, 10_000, 100, dtype=np.int64)
    pipe.process_business(RecordColumns.from_records(_orders(bt, np.arange(bt.size) * 1.0)))
    snap = orjson.loads(orjson.dumps(pipe.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY))
    again = _pipe(model_path)
    again.restore(snap, {})
    assert again.business is not None and pipe.business is not None
    assert again.business.summary() == pipe.business.summary()
