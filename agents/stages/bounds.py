"""Bounds on decoded events that one hostile record would otherwise push onto the whole pipeline.

* the entity id's length (``input.max_key_bytes``): ids become state, snapshot entries and output
  keys, so one huge id would cost memory and time in every later batch -> ``key_too_long``;
* the event time: an int64 (-> ``number_out_of_range``), not before 1970-01-01T00:00:00Z
  (-> ``bad_timestamp``), and at most ``input.max_future_ms`` ahead of the record's broker
  timestamp, or of the worker's clock if that is earlier (-> ``future_event``): one event dated
  9999-12-31 would otherwise move the watermark there and make every later event late.

The checks are format-independent (they read what any decoder returned) and vectorised: the
per-record cost is one ``len`` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from driftline.errors import RecordError

_INT64_MIN, _INT64_END = -(2**63), 2**63
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_END = 253_402_300_800_000  # 10000-01-01T00:00:00Z: datetime's end


def iso_ms(ms: int) -> str:
    """``ms`` as ISO-8601 UTC text, or a plain number beyond year 9999.

    >>> iso_ms(1767225600250), iso_ms(2**62)
    ('2026-01-01T00:00:00.250Z', '4611686018427387904 ms')
    """
    if not 0 <= ms < _ISO_END:
        return f"{ms} ms"
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


def _span(ms: int) -> str:
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000)):
        if ms >= size:
            return f"{ms / size:.1f} {unit}"
    return f"{ms} ms"


class EventBounds:
    """The entity-id and event-time bounds of one pipeline (``[input]`` of the spec)."""

    def __init__(self, max_key_bytes: int, max_future_ms: int, key_field: str,
                 time_field: str) -> None:  # fmt: skip
        self.max_key_bytes = max_key_bytes
        self.max_future_ms = max_future_ms
        self.key_field = key_field
        self.time_field = time_field

    def check(
        self,
        entities: Sequence[str] | None,
        times: Sequence[int],
        stamps: Sequence[int | None],
        now_ms: int,
    ) -> tuple[np.ndarray, dict[int, RecordError]]:
        """The event times as int64 (0 where out of range), and the rows out of bounds with why.

        ``stamps`` are the records' broker timestamps (None or negative: not known, the
        worker's clock ``now_ms`` stands in). ``entities`` None: the times only.
        """
        n = len(times)
        bad: dict[int, RecordError] = {}
        if entities is not None:
            self._keys(entities, bad)
        try:
            ts = np.array(times, dtype=np.int64).reshape(n)
        except OverflowError:
            ts = self._times_in_range(times, bad)
        for i in np.flatnonzero(ts < 0).tolist():
            bad.setdefault(i, RecordError(
                "bad_timestamp",
                f"field {self.time_field!r} is {int(ts[i])} ms, before 1970-01-01T00:00:00Z",
            ))  # fmt: skip
        try:
            st = np.fromiter(stamps, dtype=np.int64, count=n)
        except TypeError:  # some are None
            st = np.fromiter((-1 if s is None else s for s in stamps), dtype=np.int64, count=n)
        ref = np.where(st >= 0, np.minimum(st, now_ms), now_ms)
        for i in np.flatnonzero(ts - ref > self.max_future_ms).tolist():
            t, r = int(ts[i]), int(ref[i])
            against = "broker timestamp" if r == st[i] else "worker's clock"
            bad.setdefault(i, RecordError(
                "future_event",
                f"field {self.time_field!r} is {iso_ms(t)}, {_span(t - r)} ahead of the "
                f"record's {against} ({iso_ms(r)}); over input.max_future_ms="
                f"{self.max_future_ms}: fix the producer's clock or raise input.max_future_ms",
            ))  # fmt: skip
        return ts, bad

    def _keys(self, entities: Sequence[str], bad: dict[int, RecordError]) -> None:
        limit = self.max_key_bytes
        chars = np.fromiter(map(len, entities), dtype=np.int64, count=len(entities))
        # a UTF-8 character is at most 4 bytes: only ids over limit / 4 characters can be over
        for i in np.flatnonzero(chars > limit // 4).tolist():
            size = len(entities[i].encode("utf-8", "surrogatepass"))
            if size > limit:
                bad[i] = RecordError(
                    "key_too_long",
                    f"key field {self.key_field!r} is {size} bytes, over "
                    f"input.max_key_bytes={limit}",
                )

    def _times_in_range(self, times: Sequence[int], bad: dict[int, RecordError]) -> np.ndarray:
        ok = [_INT64_MIN <= t < _INT64_END for t in times]
        for i, fits in enumerate(ok):
            if not fits:
                bad.setdefault(i, RecordError(
                    "number_out_of_range",
                    f"field {self.time_field!r} is an integer of {len(str(abs(times[i])))} "
                    "digits, beyond the 64-bit range of epoch milliseconds",
                ))  # fmt: skip
        return np.array([t if fits else 0 for t, fits in zip(times, ok, strict=True)],
                        dtype=np.int64)  # fmt: skip
