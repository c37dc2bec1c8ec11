"""Memory per entity, bounded: ``max_entities`` (least recently seen evicted, with tombstones)
and idle eviction of every window kind (the registry forgets idle entities too)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.errors import SpecError
from driftline.streams.feature_state import KeyedChanges
from driftline.streams.features import FeatureDef, FeatureEngine

#: one count feature per window kind (ids name the kind); ``idle_ms``: the state's horizon
KINDS: dict[str, tuple[FeatureDef, list[Any], int]] = {
    # kind: (feature, the changelog keys of an entity "a" whose only event is at t=0, idle_ms)
    "tumbling": (FeatureDef("n", None, "count", 60_000), [("a", 0)], 60_000),
    "hopping": (
        FeatureDef("n", None, "count", 60_000, window="hopping", step_ms=30_000),
        [("a", -30_000), ("a", 0)],
        60_000,
    ),
    "sliding": (
        FeatureDef("n", None, "count", 60_000, window="sliding", idle_ttl_ms=10_000),
        ["a"],
        10_000,
    ),
    "count": (
        FeatureDef("n", None, "count", None, window="count", count=3, idle_ttl_ms=10_000),
        ["a"],
        10_000,
    ),
}
GRACE = 1_000


def _engine(kind: str, max_entities: int | None = None) -> FeatureEngine:
    return FeatureEngine([KINDS[kind][0]], grace_ms=GRACE, max_entities=max_entities)


def _feed(eng: FeatureEngine, ents: list[str], ts: list[int]) -> list[float]:
    out = eng.update(np.array(ents, dtype=object), np.array(ts, dtype=np.int64), {})
    return out.values["n"].tolist()


def _gone(changes: list[KeyedChanges]) -> list[Any]:
    return sorted(k for c in changes for k in c.gone)


def _restore(eng: FeatureEngine, kind: str, rows: dict[Any, Any]) -> FeatureEngine:
    snap = eng.snapshot_keyed()
    snap["states"][0]["rows"] = [(b"k", key, row) for key, row in rows.items()]
    return FeatureEngine.restore([KINDS[kind][0]], GRACE, snap, eng.max_entities)


@pytest.mark.parametrize("kind", list(KINDS))
def test_max_entities_evicts_least_recently_seen_with_tombstones(kind: str) -> None:
    eng = _engine(kind, max_entities=2)
    eng.track_changes()
    assert _feed(eng, ["a", "b", "c", "b"], [0, 1, 2, 3]) == [1.0, 1.0, 1.0, 2.0]
    # a arrived first and not since: evicted after the batch, b and c kept
    assert (eng.n_entities, eng.evicted) == (2, {"idle": 0, "max_entities": 1})
    changes = eng.drain_changes()
    assert _gone(changes) == sorted(KINDS[kind][1])
    assert sorted({k if isinstance(k, str) else k[0] for c in changes for k in c.keys}) == [
        "b",
        "c",
    ]
    # a starts from empty windows; b and c go on (c's arrival now evicts b, the oldest)
    assert _feed(eng, ["a", "c"], [4, 5]) == [1.0, 2.0]
    assert eng.evicted == {"idle": 0, "max_entities": 2}
    assert eng.drain_evicted() == {"idle": 0, "max_entities": 2}
    assert eng.drain_evicted() == {"idle": 0, "max_entities": 0}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    ("cap", "ents", "kept"),
    [
        (1, ["a", "b", "c"], ["c"]),  # more new entities in one batch than the bound
        (2, ["a", "b", "a", "c"], ["a", "c"]),  # a seen again after b: b is the oldest
        (3, ["a", "b", "a", "c"], ["a", "b", "c"]),  # at the bound: nothing evicted
    ],
)
def test_which_entities_are_kept(kind: str, cap: int, ents: list[str], kept: list[str]) -> None:
    eng = _engine(kind, max_entities=cap)
    _feed(eng, ents, list(range(len(ents))))
    assert eng.n_entities == len(kept)
    assert eng.evicted["max_entities"] == len(set(ents)) - len(kept)
    # kept entities go on counting, the others start afresh
    unbounded = _engine(kind)
    _feed(unbounded, ents, list(range(len(ents))))
    probe = sorted(set(ents))
    t = [len(ents)] * len(probe)
    want = [v if e in kept else 1.0 for e, v in zip(probe, _feed(unbounded, probe, t), strict=True)]
    assert _feed(eng, probe, t) == want


@pytest.mark.parametrize("kind", list(KINDS))
def test_restore_after_eviction_holds_only_the_kept(kind: str) -> None:
    eng = _engine(kind, max_entities=2)
    eng.track_changes()
    _feed(eng, ["a", "b", "c"], [0, 1, 2])
    rows: dict[Any, Any] = {}
    for c in eng.drain_changes():  # the compacted changelog: latest row per key, no tombstoned
        rows.update(zip(c.keys, c.rows, strict=True))
        for k in c.gone:
            rows.pop(k, None)
    back = _restore(eng, kind, rows)
    assert back.n_entities == 2
    assert _feed(back, ["a", "b", "c"], [3, 4, 5]) == [1.0, 2.0, 2.0]
    assert _feed(eng, ["a", "b", "c"], [3, 4, 5]) == [1.0, 2.0, 2.0]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_smaller_bound_at_restore_evicts_at_the_next_batch(kind: str) -> None:
    eng = _engine(kind)
    eng.track_changes()
    _feed(eng, ["a", "b", "c"], [0, 1, 2])
    rows: dict[Any, Any] = {}
    for c in eng.drain_changes():
        rows.update(zip(c.keys, c.rows, strict=True))
    snap = eng.snapshot_keyed()
    snap["states"][0]["rows"] = [(b"k", key, row) for key, row in rows.items()]
    back = FeatureEngine.restore([KINDS[kind][0]], GRACE, snap, max_entities=1)
    back.track_changes()
    assert back.n_entities == 3
    assert _feed(back, ["c"], [3]) == [2.0]
    assert back.n_entities == 1
    gone = {k if isinstance(k, str) else k[0] for k in _gone(back.drain_changes())}
    # tumbling/hopping rows tell no arrival order: ties go by time, a (t=0) and b (t=1) first
    assert gone == {"a", "b"}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("after_ms", "idle"), [(-1, False), (0, True), (1, True)])
def test_idle_entities_leave_state_and_registry(kind: str, after_ms: int, idle: bool) -> None:
    """An entity with no event for the window's horizon plus grace is dropped everywhere."""
    horizon = KINDS[kind][2]
    eng = _engine(kind)
    eng.track_changes()
    _feed(eng, ["a"], [0])
    eng.drain_changes()
    # b's event moves the cutoff (watermark - grace) to horizon + after_ms
    _feed(eng, ["b"], [horizon + GRACE + after_ms])
    assert eng.n_entities == (1 if idle else 2)
    assert eng.evicted == {"idle": int(idle), "max_entities": 0}
    assert ("a" in eng._registry.ids) is not idle
    # idle: all its keys tombstoned; else only its closed windows (hopping's earlier one)
    keys = sorted(KINDS[kind][1])
    assert _gone(eng.drain_changes()) == (keys if idle else keys[:-1])


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("cap", [None, 50])
def test_ever_new_entities_stay_bounded(kind: str, cap: int | None) -> None:
    """200 batches of 20 new entities 1 s apart: the state and the registry's id space stay
    bounded (by the horizon without a cap, by the cap with one)."""
    eng = _engine(kind, max_entities=cap)
    for b in range(200):
        _feed(eng, [f"e{b}-{i}" for i in range(20)], [b * 1_000] * 20)
    # idle entities go once the cutoff moved on by 1/16 of the horizon since the last check
    horizon_batches = (KINDS[kind][2] * 17 // 16 + GRACE) // 1_000 + 1
    bound = 20 * horizon_batches if cap is None else cap
    assert eng.n_entities <= bound
    assert eng._registry.slots.size <= bound + 20
    assert eng.evicted["idle"] + eng.evicted["max_entities"] == 4_000 - eng.n_entities


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "10"])
def test_max_entities_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(SpecError, match="max_entities: got"):
        FeatureEngine([KINDS["tumbling"][0]], max_entities=bad)
