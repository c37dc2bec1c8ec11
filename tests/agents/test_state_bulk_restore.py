"""The bulk decode of per-key feature records (format driftline-state/4) on restore: the same
rows as reading each record alone, and every record the one-by-one reading refuses still
refused (then named by the slow path)."""

from __future__ import annotations

import zlib
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.state import (
    ChangelogError,
    ChangelogRecords,
    _decode_keyed_values,
    _keyed_row,
    decode_snapshot,
    encode_keyed_snapshot,
    snapshot_json,
)
from driftline.streams.features import FeatureDef, FeatureEngine
from tests.streams.test_feature_keyed import ALL, GRACE, KINDS, same, stream

EPOCH = 7


def _v(raw: bytes, epoch: int = EPOCH) -> bytes:
    return epoch.to_bytes(8, "big") + raw


def _z(raw: bytes, epoch: int = EPOCH) -> bytes:
    return _v(b"z" + zlib.compress(raw), epoch)


#: (name, values): well-formed records; the bulk decode equals reading each alone
GOOD: list[tuple[str, list[bytes]]] = [
    ("none", []),
    ("one", [_v(b"[1,[2.5]]")]),
    ("older epochs", [_v(b"[1,[2.5]]", 0), _v(b"[3,[-1e-300]]", EPOCH)]),
    ("nulls and nesting", [_v(b"[null,[[1,2],[]],[]]"), _v(b"[[],[[null]]]")]),
    ("whitespace inside", [_v(b"[ 1 , [ 2 ] ]"), _v(b"[\n3,[4]]")]),
    ("epoch bytes that look like JSON", [_v(b"[1]", 0x5B5D222C5B5D222C & (1 << 63) - 1)]),
    ("strings with brackets", [_v(b'[1,[["a]","[b"]]]'), _v(b'[2,[["\\"]"]]]')]),
    ("a compressed row", [_v(b"[1,[2.5]]"), _z(b"[[1,2,3],[4,5,6],[[0.5,0.25,1]],[]]")]),
    ("only compressed rows", [_z(b"[1]"), _z(b'[["x]"]]')]),
]  # fmt: skip


@pytest.mark.parametrize("values", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_bulk_decode_equals_reading_each_record(values: list[bytes]) -> None:
    epoch = max([EPOCH, *(int.from_bytes(v[:8], "big") for v in values)])
    assert _decode_keyed_values(values, epoch) == [_keyed_row(v, epoch) for v in values]


#: (name, values): some record the one-by-one reading refuses; so must the bulk decode
BAD: list[tuple[str, list[bytes]]] = [
    ("a row and a half in one record", [_v(b"[1,[1.0]],[1"), _v(b"[2.0]]")]),
    ("a record closing another's row", [_v(b"[1],[2]"), _v(b"[[3]"), _v(b"[4]]")]),
    ("brackets balanced across records", [_v(b"[]][")]),
    ("trailing junk", [_v(b"[1]x")]),
    ("not JSON", [_v(b"[1,]")]),
    ("too short", [_v(b"[1]"), b"\x00" * 8]),
    ("newer than the head", [_v(b"[1]", EPOCH + 1)]),
    ("compressed badly", [_v(b"z" + b"\x01" * 20)]),
    ("compressed twice", [_v(b"z" + zlib.compress(b"z" + zlib.compress(b"[1]")))]),
    ("a string cut across records", [_v(b'["a'), _v(b'b"]')]),
]  # fmt: skip


@pytest.mark.parametrize("values", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_bulk_decode_refuses_what_reading_each_record_refuses(values: list[bytes]) -> None:
    def alone(v: bytes) -> bool:
        try:
            _keyed_row(v, EPOCH)
        except (ValueError, zlib.error):
            return False
        return True

    assert not all(map(alone, values))
    with pytest.raises((ValueError, zlib.error)):
        _decode_keyed_values(values, EPOCH)


#: records each readable alone that the bulk decode leaves to the one-by-one reading (which
#: then checks them against the state's layout)
UNUSUAL = [
    ("a row that is not a list", [_v(b"[1]"), _v(b"2")]),
    ("whitespace after a row", [_v(b"[1] "), _v(b"[2]")]),
    ("whitespace before a row", [_v(b" [1]")]),
]


@pytest.mark.parametrize("values", [u[1] for u in UNUSUAL], ids=[u[0] for u in UNUSUAL])
def test_bulk_decode_leaves_unusual_rows_to_the_slow_path(values: list[bytes]) -> None:
    assert [_keyed_row(v, EPOCH) for v in values]
    with pytest.raises(ValueError, match="not one JSON list"):
        _decode_keyed_values(values, EPOCH)


def test_a_row_with_whitespace_still_restores() -> None:
    feats = KINDS["tumbling"][:2]
    ents = np.array(["a", "b"], dtype=object)
    live, records = _changelog(feats, (ents, np.array([1, 2]), {"amount": np.ones(2)}), [0, 2])
    key = min(k for k in records if k.startswith(b"0/w/"))
    records.add(key, records[key] + b" ", 50)
    state = decode_snapshot(records, 0)[1]  # type: ignore[index]
    restored = FeatureEngine.restore(feats, GRACE, state["features"])
    more = (np.array(["b", "a", "c"], dtype=object), np.array([5, 6, 7]),
            {"amount": np.array([2.0, 4.0, 8.0])})  # fmt: skip
    for eng in (restored, live):
        got = {k: v.tolist() for k, v in eng.update(*more).values.items()}
        assert got == {"n": [2, 2, 1], "mean": [1.5, 2.5, 8.0]}


def _changelog(
    feats: list[FeatureDef], data: Any, cuts: list[int]
) -> tuple[FeatureEngine, ChangelogRecords]:
    """An engine fed ``data`` up to ``cuts[-1]``, persisted per batch as the runner does."""
    eng = FeatureEngine(feats, GRACE)
    eng.track_changes()
    ents, ts, cols = data
    log: list[tuple[bytes, bytes | None]] = []
    for i, (a, b) in enumerate(pairwise(cuts), 1):
        eng.update(ents[a:b], ts[a:b], {k: v[a:b] for k, v in cols.items()})
        raw = snapshot_json({"features": eng.snapshot_keyed(), "offsets": {"t": b}})
        log += encode_keyed_snapshot(0, i, raw, eng.drain_changes())
    records = ChangelogRecords("t", 0)
    for off, (k, v) in enumerate(log):
        records.add(k, v, off)
    return eng, records


NUMERIC = [f for kind in ("tumbling", "hopping", "sliding idle ttl", "count idle ttl")
           for f in KINDS[kind]]  # fmt: skip


@pytest.mark.parametrize(("feats", "cat"), [
    (NUMERIC, "c{}"),  # no strings in any row: one JSON parse of them all
    (ALL, "c{}"),  # distinct values: one record at a time
    (ALL, 'c]"[{}'),  # distinct values holding brackets and quotes
], ids=["numeric", "distinct", "distinct with brackets"])  # fmt: skip
def test_a_changelog_restores_every_window_state_exactly(feats: list[FeatureDef], cat: str) -> None:
    ents, ts, cols = stream(3_000, seed=5)
    cols["cat"] = np.array([cat.format(c) for c in cols["cat"]], dtype=object)
    data = (ents, ts, cols)
    cuts = [0, 400, 1_100, 1_500]
    live, records = _changelog(feats, data, cuts)
    epoch, state = decode_snapshot(records, 0) or (None, {})
    assert epoch == len(cuts) - 1
    restored = FeatureEngine.restore(feats, GRACE, state["features"])
    assert restored.n_windows == live.n_windows > 0
    rest = [1_500, 2_200, 3_000]
    outs = []
    for eng in (live, restored):
        outs.append([eng.update(ents[a:b], ts[a:b], {k: v[a:b] for k, v in cols.items()}).values
                     for a, b in pairwise(rest)])  # fmt: skip
    assert same(outs[0], outs[1])


def test_rows_forged_across_records_are_named_by_the_first_that_is_not_json() -> None:
    """Two records whose values, joined with a comma, read as two good rows (the first holds
    a whole row and the start of the next): neither alone is JSON."""
    feats = KINDS["tumbling"][:2]
    ents = np.array(["a", "b", "c"], dtype=object)
    live, records = _changelog(feats, (ents, np.array([1, 2, 3]), {"amount": np.ones(3)}),
                               [0, 3])  # fmt: skip
    keys = [k for k in records if k.startswith(b"0/w/")]  # in the order a restore joins them
    row = records[keys[0]][8:]
    assert orjson.loads(row)[0] == 1
    cut = row.index(b",") + 1
    forged = [row + b"," + row[: cut - 1], row[cut:]]
    assert orjson.loads(b"[" + b",".join(forged) + b"]") == [orjson.loads(row)] * 2
    records.add(keys[0], _v(forged[0], 1), 100)
    records.add(keys[1], _v(forged[1], 1), 101)
    with pytest.raises(ChangelogError) as e:
        decode_snapshot(records, 0)
    assert (e.value.offset, e.value.key) in {(100, keys[0]), (101, keys[1])}
    assert "not a driftline per-key feature record: not JSON" in str(e.value)
    assert live.n_windows == 3


#: (name, records (key, value) in offset order): what a restore may read in one batch
BATCHES: list[tuple[str, list[tuple[bytes | None, bytes | None]]]] = [
    ("per-key values", [(b"0/w/0/1/a", b"x"), (b"0/m/1/b", b"y"), (b"0/w/0/1/a", b"z")]),
    ("a tombstone", [(b"0/w/0/1/a", b"x"), (b"0/w/0/1/a", None), (b"0/w/0/1/b", b"y")]),
    ("snapshot records", [(b"0/w/0/1/a", b"x"), (b"0/chunk/0/0", b"c"), (b"0/head", b"{}"),
                          (b"0/head", None), (b"0/labels/1/head", b"h")]),
    ("per-key values around the snapshot", [(b"0/w/0/1/a", b"x"), (b"0/head", b"{}"),
                                            (b"0/w/0/1/b", b"y"), (b"0/w/0/1/a", b"z")]),
    ("foreign keys", [(None, b"x"), (b"1/w/0/1/a", b"y"), (b"junk", b"z"), (b"junk", None)]),
    ("empty", []),
]  # fmt: skip


@pytest.mark.parametrize("batch", [b[1] for b in BATCHES], ids=[b[0] for b in BATCHES])
def test_adding_a_batch_of_records_is_adding_each(
    batch: list[tuple[bytes | None, bytes | None]],
) -> None:
    one, many = ChangelogRecords("t", 0), ChangelogRecords("t", 0)
    for off, (k, v) in enumerate(batch, 10):
        one.add(k, v, off)
    many.add_many([k for k, _ in batch], [v for _, v in batch], list(range(10, 10 + len(batch))))
    assert dict(many) == dict(one)
    assert (many.offsets, many.foreign, many.tombstones) == (
        one.offsets, one.foreign, one.tombstones)  # fmt: skip
