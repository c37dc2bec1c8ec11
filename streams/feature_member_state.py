"""Sliding and count windows: the member events per entity, reduced per output event.

`MemberWindowState` buffers each entity's contributing events (time, arrival sequence number,
numeric values, distinct values), sorted by (entity id, time, seq) for sliding windows and by
(entity id, seq) for count windows. For a batch it finds each event's window members with two
sorted-search passes, expands them into (event, member) pairs (the cost per event is the size of
its window) and `MemberWindowColumns` reduces the pairs per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.aggregators import (
    DISTINCT_CAP,
    count_le,
    segment_bounds,
    segmented_accumulate,
)
from driftline.streams.feature_defs import FeatureDef, needed_columns
from driftline.streams.feature_registry import EntityRegistry
from driftline.streams.feature_state import (
    I64_MAX,
    I64_MIN,
    BatchEvents,
    KeyedChanges,
    KeyedRow,
    KeyedRowError,
    WindowColumns,
    WindowState,
    first_occurrences,
    keyed_columns,
    memoized,
)

__all__ = ["MemberWindowColumns", "MemberWindowState"]


@dataclass
class _Members:
    """The members of a state (all entities), as of one batch."""

    ts: np.ndarray
    seq: np.ndarray
    x: np.ndarray  # numeric values, one column per numeric field
    d: list[np.ndarray]  # values of each distinct field


@dataclass
class _Pairs:
    """(output event, window member) pairs, grouped per output event."""

    qof: np.ndarray  # the pair's output event
    mem: np.ndarray  # the pair's member (index into `_Members`)
    ne: np.ndarray  # output events with a non-empty window
    pstart: np.ndarray  # their first pair
    psize: np.ndarray  # their number of pairs
    mem_ao: np.ndarray  # members in arrival order per event (for folds)
    mem_to: np.ndarray  # members in time order per event (for first/last)

    @property
    def plast(self) -> np.ndarray:
        return self.pstart + self.psize - 1


class MemberWindowState(WindowState):
    """Buffered member events per entity for sliding and count windows.

    Members are kept sorted by (entity id, time, arrival seq) for sliding windows and by
    (entity id, arrival seq) for count windows. Each output is a reduction over the members of
    the event's window, found with two sorted-search passes and expanded into (event, member)
    pairs: the cost per event is the size of its window.
    """

    def __init__(self, feats: Sequence[FeatureDef]) -> None:
        f0 = feats[0]
        self.feats = tuple(feats)
        self.kind = f0.window
        self.size_ms = int(f0.window_ms) if f0.window == "sliding" else 0  # type: ignore[arg-type]
        self.count = int(f0.count) if f0.window == "count" else 0  # type: ignore[arg-type]
        self.ttl_ms = 0 if f0.idle_ttl_ms is None else int(f0.idle_ttl_ms)
        # sliding: how far back a member counts (the window, or less with idle_ttl_ms)
        self.reach_ms = min(self.size_ms, self.ttl_ms or self.size_ms)
        self.num_fields, self.dist_fields = needed_columns(feats)
        self.eid = np.zeros(0, dtype=np.int64)
        self.ts = np.zeros(0, dtype=np.int64)
        self.seq = np.zeros(0, dtype=np.int64)
        self.x = np.zeros((0, len(self.num_fields)))
        self.d = [np.empty(0, dtype=object) for _ in self.dist_fields]
        #: whether `dirty` collects the entities changed since the last `drain`; the engine's
        #: registry names their ids
        self.tracking = False
        self.dirty: set[str] = set()
        self.registry: EntityRegistry | None = None

    @property
    def n_windows(self) -> int:
        if self.eid.size == 0:
            return 0
        return int(np.count_nonzero(self.eid[1:] != self.eid[:-1])) + 1

    def _keep(self, idx: np.ndarray) -> None:
        """Keep the members ``idx`` (a selection, or an order), in that order."""
        self.eid, self.ts, self.seq, self.x = (
            self.eid[idx],
            self.ts[idx],
            self.seq[idx],
            self.x[idx],
        )
        self.d = [a[idx] for a in self.d]

    def _sort(self) -> None:
        if self.kind == "sliding":
            self._keep(np.lexsort((self.seq, self.ts, self.eid)))
        else:
            self._keep(np.lexsort((self.seq, self.eid)))

    def _add(self, events: BatchEvents, sel: np.ndarray) -> None:
        """Add the events ``sel`` as members, keeping the members sorted."""
        pos = events.pos[sel]
        assert events.eid is not None
        if self.tracking:
            self.dirty.update(events.names[np.unique(events.code[sel])].tolist())
        x_new = np.zeros((pos.size, len(self.num_fields)))
        for j, f in enumerate(self.num_fields):
            x_new[:, j] = events.num[f][pos]
        self.eid = np.concatenate([self.eid, events.eid[sel]])
        self.ts = np.concatenate([self.ts, events.ts[sel]])
        self.seq = np.concatenate([self.seq, events.seq[sel]])
        self.x = np.concatenate([self.x, x_new])
        self.d = [
            np.concatenate([old, np.asarray(events.raw[f], dtype=object)[pos]])
            for old, f in zip(self.d, self.dist_fields, strict=True)
        ]
        self._sort()

    def apply(self, events: BatchEvents, match: np.ndarray | None) -> MemberWindowColumns:
        m = events.ts.shape[0]
        self._add(events, np.arange(m) if match is None else np.flatnonzero(match))
        eid, ts, seq = self.eid, self.ts, self.seq
        q_eid, q_ts, q_seq = events.eid, events.ts, events.seq
        assert q_eid is not None
        if self.kind == "sliding":
            both = count_le(
                [eid, ts],
                [np.concatenate([q_eid, q_eid]), np.concatenate([q_ts - self.reach_ms, q_ts])],
            )
            lo, hi = both[:m], both[m:]
        else:
            both = count_le(
                [eid, seq],
                [np.concatenate([q_eid, q_eid - 1]), np.concatenate([q_seq, q_seq * 0 + I64_MAX])],
            )
            hi, ent_lo = both[:m], both[m:]
            lo = np.maximum(ent_lo, hi - self.count)
        lens = hi - lo
        total = int(lens.sum())
        qof = np.repeat(np.arange(m), lens)
        mem = lo[qof] + np.arange(total) - (np.cumsum(lens) - lens)[qof]
        if self.kind == "sliding":
            keep = seq[mem] <= q_seq[qof]
        else:
            keep = ts[mem] > q_ts[qof] - self.ttl_ms
        qof, mem = qof[keep], mem[keep]
        n = np.bincount(qof, minlength=m)
        ne = np.flatnonzero(n)
        # arrival order of pairs (for folds) and time order (for first/last)
        if self.kind == "sliding":
            mem_ao, mem_to = mem[np.lexsort((seq[mem], qof))], mem
        else:
            mem_ao, mem_to = mem, mem[np.lexsort((seq[mem], ts[mem], qof))]
        pairs = _Pairs(qof, mem, ne, (np.cumsum(n) - n)[ne], n[ne], mem_ao, mem_to)
        members = _Members(ts, seq, self.x, self.d)
        return MemberWindowColumns(self, events, members, pairs, n)

    def evict(self, cutoff_ms: int) -> None:
        if self.eid.size == 0:
            return
        if self.kind == "sliding":
            keep = self.ts > cutoff_ms - self.reach_ms
        else:
            gstart, gsize, gid = segment_bounds([self.eid])
            from_end = (gstart + gsize - 1)[gid] - np.arange(self.eid.size)
            newest = np.maximum.reduceat(self.ts, gstart)
            keep = (from_end < self.count) & (newest > cutoff_ms - self.ttl_ms)[gid]
        if not keep.all():
            if self.tracking:
                assert self.registry is not None
                self.dirty.update(self.registry.names[np.unique(self.eid[~keep])].tolist())
            self._keep(keep)

    @property
    def idle_ms(self) -> int:
        """An entity whose newest event is this far behind the cutoff has no members here."""
        return self.reach_ms if self.kind == "sliding" else self.ttl_ms

    def drop_entities(self, drop: np.ndarray) -> None:
        """Drop every member of the entities ``drop`` marks (a mask over registry ids)."""
        if self.eid.size == 0:
            return
        gone = drop[self.eid]
        if gone.any():
            if self.tracking:
                assert self.registry is not None
                self.dirty.update(self.registry.names[np.unique(self.eid[gone])].tolist())
            self._keep(~gone)

    def extent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per member: its entity id, time and arrival seq."""
        return self.eid, self.ts, self.seq

    # ------------------------------------------------------------------ per-key changes
    @property
    def n_keys(self) -> int:
        """Entities with members: one changelog record each."""
        return self.n_windows

    def mark_all_dirty(self) -> None:
        assert self.registry is not None
        self.dirty = set(self.registry.names[np.unique(self.eid)].tolist())

    def drain(self) -> KeyedChanges:
        """The entities changed since the last call: each one's members ``[ts, seq, [values
        per numeric field], [values per distinct field]]`` (in member order), and those left
        without members."""
        names = list(self.dirty)
        self.dirty = set()
        assert self.registry is not None
        ids = self.registry.ids
        eids = np.fromiter(map(ids.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        lo = np.searchsorted(self.eid, eids, "left")
        hi = np.searchsorted(self.eid, eids, "right")
        has = (eids >= 0) & (hi > lo)
        gone = [names[i] for i in np.flatnonzero(~has).tolist()]
        kept, rows = [], []
        for i in np.flatnonzero(has).tolist():
            a, b = int(lo[i]), int(hi[i])
            kept.append(names[i])
            rows.append([
                self.ts[a:b].tolist(), self.seq[a:b].tolist(),
                [self.x[a:b, j].tolist() for j in range(len(self.num_fields))],
                [d[a:b].tolist() for d in self.d],
            ])  # fmt: skip
        return KeyedChanges("m", kept, rows, gone)

    def _load_rows(self, rows: Sequence[KeyedRow]) -> None:
        """Rows ``(key, entity, members)`` from `drain`, column by column (checked with
        C-level ``map`` calls, no Python loop per row)."""
        nn, nd = len(self.num_fields), len(self.dist_fields)
        _, names, data = keyed_columns(rows)
        if set(map(type, data)) - {list} or set(map(len, data)) - {4}:
            raise ValueError("a row of another layout")
        ts_l, seq_l, x_l, d_l = (list(map(itemgetter(i), data)) for i in range(4))
        lens = list(map(len, ts_l))
        if (lens and min(lens) < 1) or list(map(len, seq_l)) != lens:
            raise ValueError("members of another layout")
        if set(map(len, x_l)) - {nn} or set(map(len, d_l)) - {nd}:
            raise ValueError("members of another layout")
        xs = [list(map(itemgetter(j), x_l)) for j in range(nn)]
        ds = [list(map(itemgetter(j), d_l)) for j in range(nd)]
        if any(list(map(len, c)) != lens for c in (*xs, *ds)):
            raise ValueError("members of another layout")
        if set(map(type, names)) - {str}:
            raise ValueError("an entity that is not a string")
        snap = {
            "ts": list(chain.from_iterable(ts_l)),
            "seq": list(chain.from_iterable(seq_l)),
            "values": {
                f: list(chain.from_iterable(c)) for f, c in zip(self.num_fields, xs, strict=True)
            },
            "distinct": {
                f: list(chain.from_iterable(c)) for f, c in zip(self.dist_fields, ds, strict=True)
            },
        }
        entities = list(chain.from_iterable(map(repeat, names, lens)))
        registry = EntityRegistry() if self.registry is None else self.registry
        self.load(snap, entities, registry)

    def _check_layout(self, rows: Sequence[KeyedRow]) -> None:
        nn, nd = len(self.num_fields), len(self.dist_fields)
        for key, ident, row in rows:
            ok = isinstance(ident, str) and isinstance(row, list) and len(row) == 4
            if ok:
                ts, seq, x, d = row
                ok = (
                    isinstance(ts, list) and 0 < len(ts) and isinstance(seq, list)
                    and len(seq) == len(ts) and isinstance(x, list) and len(x) == nn
                    and isinstance(d, list) and len(d) == nd
                    and all(isinstance(c, list) and len(c) == len(ts) for c in (*x, *d))
                )  # fmt: skip
            if not ok:
                raise KeyedRowError(key, f"not one entity's members of this {self.kind} window")

    def snapshot(self, names: np.ndarray) -> dict[str, Any]:
        return {
            "entities": names[self.eid].tolist(),
            "ts": self.ts.tolist(),
            "seq": self.seq.tolist(),
            "values": {f: self.x[:, j].tolist() for j, f in enumerate(self.num_fields)},
            "distinct": {f: a.tolist() for f, a in zip(self.dist_fields, self.d, strict=True)},
        }

    def load(self, snap: Mapping[str, Any], entities: list[str], registry: EntityRegistry) -> None:
        eids = registry.ids_of(entities)
        ts = np.asarray(snap["ts"], dtype=np.int64).reshape(-1)
        seq = np.asarray(snap["seq"], dtype=np.int64).reshape(-1)
        k = ts.size
        x = np.zeros((k, len(self.num_fields)))
        for j, f in enumerate(self.num_fields):
            x[:, j] = np.asarray(snap["values"][f], dtype=np.float64)
        d = []
        for f in self.dist_fields:
            a = np.empty(k, dtype=object)
            a[:] = list(snap["distinct"][f])
            d.append(a)
        if eids.size != k or seq.size != k:
            raise DriftlineError("state: inconsistent window entry (entities vs ts vs seq)")
        self.eid, self.ts, self.seq, self.x, self.d = eids, ts, seq, x, d
        self._sort()


class MemberWindowColumns(WindowColumns):
    """Per output event: a reduction over the (event, member) pairs of its window."""

    def __init__(
        self,
        state: MemberWindowState,
        events: BatchEvents,
        members: _Members,
        pairs: _Pairs,
        n: np.ndarray,
    ) -> None:
        super().__init__(n, np.arange(n.shape[0]))
        self._state = state
        self._events = events
        self._m = members
        self._p = pairs

    def _x(self, field: str | None, mem: np.ndarray) -> np.ndarray:
        """Numeric field ``field`` of the members ``mem``."""
        return self._m.x[mem, self._state.num_fields.index(field)]  # type: ignore[arg-type]

    def _fold(self, values: np.ndarray) -> np.ndarray:
        """Left-to-right sum per output event of per-pair ``values`` (arrival order)."""
        p = self._p
        out = np.zeros((self.n.shape[0], *values.shape[1:]))
        if p.ne.size:
            prior = np.zeros((p.ne.size, *values.shape[1:]))
            run = segmented_accumulate(np.add, values, p.pstart, p.psize, prior)
            out[p.ne] = run[p.plast]
        return out

    def _empty(self) -> np.ndarray:
        return np.full(self.n.shape[0], np.nan)

    @memoized
    def sum(self, field: str | None) -> np.ndarray:
        return self._fold(self._x(field, self._p.mem_ao))

    @memoized
    def var(self, field: str | None) -> np.ndarray:
        n = self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self.sum(field) / n
            dev = self._x(field, self._p.mem_ao) - mean[self._p.qof]
            val = self._fold(dev * dev) / (n - 1)
        val[n < 2] = np.nan
        return val

    def _reduce(self, op: np.ufunc, field: str | None) -> np.ndarray:
        val = self._empty()
        if self._p.ne.size:
            val[self._p.ne] = op.reduceat(self._x(field, self._p.mem), self._p.pstart)
        return val

    @memoized
    def min(self, field: str | None) -> np.ndarray:
        return self._reduce(np.minimum, field)

    @memoized
    def max(self, field: str | None) -> np.ndarray:
        return self._reduce(np.maximum, field)

    def _at(self, which: np.ndarray, field: str | None) -> np.ndarray:
        """The value of the member at pair ``which`` of each event, in time order."""
        val = self._empty()
        if self._p.ne.size:
            val[self._p.ne] = self._x(field, self._p.mem_to)[which]
        return val

    @memoized
    def first(self, field: str | None) -> np.ndarray:
        return self._at(self._p.pstart, field)

    @memoized
    def last(self, field: str | None) -> np.ndarray:
        return self._at(self._p.plast, field)

    @memoized
    def distinct(self, field: str | None) -> np.ndarray:
        m, p = self.n.shape[0], self._p
        if not p.ne.size:
            return np.zeros(m)
        vals = self._m.d[self._state.dist_fields.index(field)]  # type: ignore[arg-type]
        _, codes = np.unique(vals, return_inverse=True)
        first = first_occurrences(p.qof, codes[p.mem])
        counts = np.minimum(np.bincount(p.qof[first], minlength=m), DISTINCT_CAP)
        return counts.astype(np.float64)

    @memoized
    def rate(self, field: str | None = None) -> np.ndarray:
        if self._state.kind == "sliding":
            return self.n * 1000.0 / self._state.size_ms
        # count windows: (n - 1) intervals over the span of the members' times
        val, p = self._empty(), self._p
        if p.ne.size:
            tsm = self._m.ts[p.mem]
            span = np.maximum.reduceat(tsm, p.pstart) - np.minimum.reduceat(tsm, p.pstart)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = (p.psize - 1) * 1000.0 / span
            val[p.ne] = np.where(span > 0, r, np.nan)
        return val

    @memoized
    def since_prev(self, field: str | None = None) -> np.ndarray:
        """ms since the latest time among the window's other members (NaN if none)."""
        val, p = self._empty(), self._p
        if p.ne.size:
            q_seq, q_ts = self._events.seq, self._events.ts
            other = np.where(self._m.seq[p.mem] != q_seq[p.qof], self._m.ts[p.mem], I64_MIN)
            mx = np.maximum.reduceat(other, p.pstart)
            val[p.ne] = np.where(mx == I64_MIN, np.nan, (q_ts[p.ne] - mx).astype(np.float64))
        return val
