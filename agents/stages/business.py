"""Business stage: one partition of the ``[business]`` topic, and the business line of alerts.

A business record is a JSON object with the spec's numeric ``field`` (a dotted path reads a
nested one) and, optionally, its event time in ``time_field`` (else the record's Kafka
timestamp). A record that is not such an object goes to the dead-letter topic with a precise
reason, like any input. Values go into a `driftline.streams.business.BusinessHistory`; every
alert of the partition gets a ``business`` field: the metric before its episode and during it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from driftline.agents.decode import field_path, json_object, parse_timestamp_ms
from driftline.agents.stages.bounds import EventBounds
from driftline.agents.stages.dead_letters import DeadLetters
from driftline.agents.stages.outcome import BatchOutcome
from driftline.agents.stages.records import RecordColumns
from driftline.errors import RecordError
from driftline.spec import BusinessSpec, PipelineSpec
from driftline.streams.business import BusinessHistory, EpisodeSpans


def read_path(doc: dict[str, Any], path: str) -> Any:
    """`agents.decode.field_path`, None when absent."""
    try:
        return field_path(doc, path)
    except KeyError:
        return None


class BusinessDecoder:
    """Decodes business records: (value, event time ms) or a `RecordError`."""

    def __init__(self, b: BusinessSpec, max_bytes: int) -> None:
        self.b = b
        self.max_bytes = max_bytes

    def decode(self, raw: bytes | None, stamp_ms: int | None) -> tuple[float, int]:
        doc = json_object(raw, self.max_bytes, "a business record")
        f = self.b.field
        v = read_path(doc, f)
        if v is None:
            raise RecordError("missing_field", f"field {f!r} (business.field) is missing or null")
        if type(v) not in (int, float):
            raise RecordError(
                "wrong_type", f"field {f!r} is {type(v).__name__}; business.field is a number"
            )
        if not math.isfinite(v):
            raise RecordError("non_finite", f"field {f!r} is {v}, expected a finite number")
        if abs(v) > 1e15:
            raise RecordError(
                "number_out_of_range", f"field {f!r} is {v:g}; business values are within ±1e15"
            )
        tf = self.b.time_field
        if tf is not None:
            t = read_path(doc, tf)
            if t is None:
                raise RecordError("missing_field", f"field {tf!r} (business.time_field) is missing")
            return float(v), parse_timestamp_ms(tf, t)
        if stamp_ms is None or stamp_ms < 0:
            raise RecordError(
                "bad_timestamp", "the record has no timestamp; set business.time_field"
            )
        return float(v), int(stamp_ms)


class BusinessStage:
    """The business metric of one partition."""

    def __init__(self, spec: PipelineSpec, dead: DeadLetters) -> None:
        assert spec.business is not None
        b = self.b = spec.business
        inp = spec.input
        self.decoder = BusinessDecoder(b, inp.max_message_bytes)
        self.bounds = EventBounds(inp.max_key_bytes, inp.max_future_ms, "",
                                  b.time_field or "the record's timestamp")  # fmt: skip
        self.dead = dead
        self.history = BusinessHistory(b.bucket_ms, b.history_ms, b.agg)
        self.episodes = EpisodeSpans(b.window_ms)

    def process(self, cols: RecordColumns, out: BatchOutcome, now_ms: int) -> None:
        """One batch of the business topic's partition."""
        vals: list[float] = []
        ts: list[int] = []
        rows: list[int] = []
        rejected: list[tuple[int, Exception]] = []
        for i, (raw, stamp) in enumerate(zip(cols.values, cols.stamps, strict=True)):
            try:
                v, t = self.decoder.decode(raw, stamp)
            except Exception as e:
                rejected.append((i, e))
                continue
            vals.append(v)
            ts.append(t)
            rows.append(i)
        t_arr, bad = self.bounds.check(None, ts, [cols.stamps[r] for r in rows], now_ms)
        if bad:
            rejected += [(rows[j], e) for j, e in bad.items()]
        keep = np.array([j not in bad for j in range(len(rows))], dtype=bool)
        for i, e in sorted(rejected, key=lambda r: r[0]):
            self.dead.reject(out, cols, i, e, now_ms)
        if keep.any():
            self.history.update(np.array(vals, dtype=np.float64)[keep], t_arr[keep])
        out.business = self.reading()
        out.business_clock_ms = self.history.clock_ms

    def reading(self) -> tuple[str, float, int]:
        """(name, rolling value (NaN without events), events in the window)."""
        v, n = self.history.rolling(self.b.window_ms)
        return self.b.name, (math.nan if v is None else float(v)), n

    def summary(self) -> dict[str, Any]:
        """The model-metrics message's ``business``."""
        v, n = self.history.rolling(self.b.window_ms)
        return {"name": self.b.name, "field": self.b.field, "agg": self.b.agg,
                "window_ms": self.b.window_ms, "value": v, "n": n,
                "clock_ms": self.history.clock_ms}  # fmt: skip

    def annotate(self, doc: dict[str, Any]) -> None:
        """Add the alert's ``business`` field (before vs during its episode)."""
        key = f"{doc['detector']}|{doc['target']}"
        cmp = self.episodes.compare(
            key, doc["status"], doc["window"]["event_time_ms"], self.history
        )
        doc["business"] = {"name": self.b.name, "field": self.b.field, "agg": self.b.agg, **cmp}

    def snapshot(self) -> dict[str, Any]:
        return {"history": self.history.snapshot(), "episodes": self.episodes.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.history.restore(state.get("history", {}))
        self.episodes.restore(state.get("episodes", {}))
