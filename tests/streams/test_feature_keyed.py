"""Per-key feature state (what the changelog of format driftline-state/4 stores): each batch
drains only the keys it changed and the keys evicted; replaying the drains into a compacted
store (newest value per key, a tombstone deletes) restores an engine that goes on exactly as the
uninterrupted one, for every window kind, however the stream was cut into batches."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from driftline.errors import DriftlineError
from driftline.streams.feature_state import KeyedRowError
from driftline.streams.features import FeatureDef, FeatureEngine

KINDS: dict[str, list[FeatureDef]] = {
    "tumbling": [
        FeatureDef("n", None, "count", 10_000),
        FeatureDef("mean", "amount", "mean", 10_000),
        FeatureDef("sd", "amount", "std", 10_000),
        FeatureDef("lo", "amount", "min", 10_000),
        FeatureDef("last", "amount", "last", 10_000),
        FeatureDef("gap", None, "since_prev", 10_000),
    ],
    "tumbling distinct + filter": [
        FeatureDef("cats", "cat", "distinct", 10_000),
        FeatureDef("buys", None, "count", 10_000, where_field="cat", where_equals="c1"),
    ],
    "hopping": [
        FeatureDef("hn", None, "count", 8_000, window="hopping", step_ms=2_000),
        FeatureDef("hmax", "amount", "max", 8_000, window="hopping", step_ms=2_000),
    ],
    "sliding": [
        FeatureDef("smax", "amount", "max", 6_000, window="sliding"),
        FeatureDef("scats", "cat", "distinct", 6_000, window="sliding"),
    ],
    "sliding idle ttl": [
        FeatureDef("ssum", "amount", "sum", 60_000, window="sliding", idle_ttl_ms=3_000),
    ],
    "count idle ttl": [
        FeatureDef("c3", "amount", "sum", None, window="count", count=3, idle_ttl_ms=5_000),
        FeatureDef("cfirst", "amount", "first", None, window="count", count=3, idle_ttl_ms=5_000),
    ],
}
ALL = [f for fs in KINDS.values() for f in fs]
GRACE = 1_000


def stream(n: int, seed: int, n_entities: int = 60) -> tuple[Any, Any, dict[str, Any]]:
    """``n`` events, mostly in time order (some late), entities with '/' and non-ASCII ids."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 60, n)) - rng.integers(0, 1_500, n) * (rng.random(n) < 0.05)
    names = [f"u/{i}" if i % 7 else f"é{i}" for i in range(n_entities)]
    ents = np.array([names[i] for i in rng.integers(0, n_entities, n)], dtype=object)
    cols = {"amount": rng.normal(size=n),
            "cat": np.array([f"c{i}" for i in rng.integers(0, 4, n)], dtype=object)}  # fmt: skip
    return ents, ts.astype(np.int64), cols


class Store:
    """A compacted changelog of per-key rows: the newest value per key; tombstones delete."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str, Any], Any] = {}
        self.written: list[int] = []  # keys written (values and tombstones) per drain

    def apply(self, engine: FeatureEngine) -> None:
        n = 0
        for g, ch in enumerate(engine.drain_changes()):
            for k in ch.gone:
                self.rows.pop((g, ch.kind, k), None)
            self.rows.update({(g, ch.kind, k): r for k, r in zip(ch.keys, ch.rows, strict=True)})
            n += len(ch.gone) + len(ch.keys)
        self.written.append(n)

    def restore(self, engine: FeatureEngine) -> FeatureEngine:
        """A new engine from ``engine``'s keyed snapshot and these rows."""
        meta = engine.snapshot_keyed()
        for g, entry in enumerate(meta["states"]):
            rows = [(repr(k).encode(), k[2], r) for k, r in self.rows.items() if k[0] == g]
            assert len(rows) == entry["keyed"]["n"], "a key changed without being drained"
            entry["rows"] = rows
        return FeatureEngine.restore(engine.features, engine.grace_ms, meta)


def feed(engine: FeatureEngine, data: tuple[Any, Any, dict[str, Any]], cuts: list[int],
         store: Store | None = None) -> list[dict[str, Any]]:  # fmt: skip
    ents, ts, cols = data
    out = []
    for a, b in pairwise(cuts):
        fb = engine.update(ents[a:b], ts[a:b], {k: v[a:b] for k, v in cols.items()})
        out.append(fb.values)
        if store is not None:
            store.apply(engine)
    return out


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    cat = [{k: np.concatenate([x[k] for x in xs]) for k in xs[0]} for xs in (a, b)]
    return all(np.array_equal(cat[0][k], cat[1][k], equal_nan=True) for k in cat[0])


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("batch", [1, 37, 500])
def test_restored_from_drained_keys_goes_on_exactly(kind: str, batch: int) -> None:
    feats = KINDS[kind]
    data = stream(3_000, seed=len(kind) + batch)
    cut = 1_800
    live = FeatureEngine(feats, GRACE)
    live.track_changes()
    store = Store()
    feed(live, data, [*range(0, cut, batch), cut], store)
    restored = store.restore(live)
    rest = [cut, 2_400, 3_000]
    assert same(feed(restored, data, rest), feed(live, data, rest))
    assert restored.n_windows == live.n_windows


def test_evicted_keys_become_tombstones_and_the_store_stays_bounded() -> None:
    """Entities come and go: what eviction drops is deleted from the store too."""
    live = FeatureEngine(ALL, GRACE)
    live.track_changes()
    store = Store()
    n = 0
    for wave in range(6):  # each wave its own 40 entities, 20 s after the previous one
        ents, ts, cols = stream(800, seed=wave, n_entities=40)
        ents = np.array([f"w{wave}-{e}" for e in ents], dtype=object)
        feed(live, (ents, ts + 20_000 * wave, cols), [0, 400, 800], store)
        n = len(store.rows)
        assert all(k[2][0].startswith(f"w{wave}-") if k[1] == "w" else k[2].startswith(f"w{wave}")
                   for k in store.rows)  # fmt: skip
    assert n == sum(e["keyed"]["n"] for e in live.snapshot_keyed()["states"]) > 0


@pytest.mark.parametrize(("n_entities", "expected_max"), [(1_000, 250), (20_000, 250)])
def test_a_batch_writes_what_it_touched_not_the_whole_state(
    n_entities: int, expected_max: int
) -> None:
    """50 events on 50 entities write at most their windows (a few keys each), whether the
    state holds 1,000 entities or 20,000."""
    feats = KINDS["tumbling"] + KINDS["sliding"]
    live = FeatureEngine(feats, GRACE)
    live.track_changes()
    store = Store()
    ents = np.array([f"e{i}" for i in range(n_entities)], dtype=object)
    ts = np.arange(n_entities, dtype=np.int64) // 1000
    live.update(ents, ts, {"amount": np.ones(n_entities), "cat": ents})
    store.apply(live)
    assert store.written[-1] >= n_entities  # the first batch: every entity is new
    t = int(ts[-1])
    for _ in range(5):
        pick = np.arange(50)
        live.update(ents[pick], np.full(50, t), {"amount": np.ones(50), "cat": ents[pick]})
        store.apply(live)
    assert max(store.written[1:]) <= expected_max


def test_after_an_inline_restore_every_key_is_written_once() -> None:
    """A snapshot holding the entities inline (formats 2 and 3): the changelog has no per-key
    records of them, so the first drain after `track_changes` gives every live key."""
    live = FeatureEngine(ALL, GRACE)
    feed(live, stream(1_000, seed=3), [0, 1_000])
    restored = FeatureEngine.restore(ALL, GRACE, live.snapshot())
    restored.track_changes()
    store = Store()
    store.apply(restored)
    assert store.written == [sum(e["keyed"]["n"] for e in restored.snapshot_keyed()["states"])]
    again = store.restore(restored)
    data = stream(2_000, seed=3)
    assert same(feed(again, data, [1_000, 2_000]), feed(live, data, [1_000, 2_000]))
    store.apply(restored)
    assert store.written[-1] == 0  # nothing changed since


def test_draining_without_tracking_is_an_error() -> None:
    with pytest.raises(DriftlineError, match="call track_changes"):
        FeatureEngine(ALL, GRACE).drain_changes()


def _rows(kind: str) -> list[Any]:
    live = FeatureEngine(KINDS[kind], GRACE)
    live.track_changes()
    feed(live, stream(300, seed=1), [0, 300])
    ch = live.drain_changes()[0]
    return [(f"k{i}".encode(), k, r) for i, (k, r) in enumerate(zip(ch.keys, ch.rows,
                                                                     strict=True))]  # fmt: skip


#: (window kind, how to spoil the second row, the message)
BAD_ROWS = [
    ("tumbling", lambda r: [1, 2], "not a row of this tumbling window's columns"),
    ("tumbling", lambda r: ["x", *r[1:]], "a value of this record is malformed"),
    ("tumbling", lambda r: [r[0], [1.0, 2.0], *r[2:]], "not a row of this tumbling"),
    ("tumbling", lambda r: {"count": 1}, "not a row of this tumbling"),
    ("sliding", lambda r: [[], [], [[]], [[]]], "not one entity's members of this sliding"),
    ("sliding", lambda r: [r[0], r[1][:-1], r[2], r[3]] if len(r[0]) > 1 else [r[0], [], r[2],
                                                                              r[3]],
     "not one entity's members"),
    ("sliding", lambda r: [["t"] * len(r[0]), *r[1:]], "a value of this record is malformed"),
    ("count idle ttl", lambda r: [r[0], r[1], [], r[3]], "not one entity's members of this count"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "spoil", "problem"), BAD_ROWS)
def test_a_bad_row_is_named_by_its_key(kind: str, spoil: Any, problem: str) -> None:
    rows = _rows(kind)
    assert len(rows) > 2
    key, ident, row = rows[1]
    rows[1] = (key, ident, spoil(row))
    fresh = FeatureEngine(KINDS[kind], GRACE)
    with pytest.raises(KeyedRowError, match=problem) as e:
        fresh._groups[0].state.load_rows(rows)
    assert e.value.key == b"k1"


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_state_with_no_live_keys_restores_and_goes_on(kind: str) -> None:
    """No live window when the snapshot was taken (no event yet, or every window closed and
    evicted): zero rows restore an empty state that goes on exactly as the live one (a CI run
    where a SIGKILLed worker's restart failed on 'list index out of range')."""
    feats = KINDS[kind]
    empty = FeatureEngine(feats, GRACE)
    empty.track_changes()
    store = Store()
    store.apply(empty)
    assert all(e["keyed"]["n"] == 0 for e in empty.snapshot_keyed()["states"])
    restored = store.restore(empty)
    assert restored.n_windows == 0
    data = stream(500, seed=12)
    assert same(feed(restored, data, [0, 250, 500]), feed(empty, data, [0, 250, 500]))
