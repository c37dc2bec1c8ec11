"""Tumbling and hopping windows: running aggregates per (entity, window start).

`TimeWindowState` keeps one row of preallocated columns per live window (count, sums, shifted
variance sums, min, max, first/last value and time, distinct sets). A batch is folded in as one
numpy pass: every contributing event is expanded to the windows it belongs to (one for
tumbling, ``window_ms // step_ms`` for hopping), the rows are grouped by (entity, window start)
in arrival order, running values are accumulated per group starting from the window's prior
state, each group's last running value is written back, and every output row reads the running
value at (or, for an event that does not match the filter, just before) its own position:
`TimeWindowColumns`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.aggregators import (
    DISTINCT_CAP,
    segment_bounds,
    segment_ffill,
    segmented_accumulate,
)
from driftline.streams.feature_defs import NUMERIC_AGGS, FeatureDef
from driftline.streams.feature_registry import EntityRegistry, SlotPool
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
from driftline.streams.windows import tumbling_start_ms

__all__ = ["TimeWindowColumns", "TimeWindowState"]

#: The state column a quantity's fields are listed under (``K``/``S1``/``S2`` are the shifted
#: variance sums, ``dcount`` the distinct counts).
_FIELDS_OF = {"K": "var", "S1": "var", "S2": "var", "dcount": "distinct"}


class _Column(NamedTuple):
    """One state column: dtype, width (one per field, or None for a 1-D column), empty value."""

    dtype: Any
    width: int | None
    fill: Any


@dataclass
class _Contributors:
    """The (event, window) rows that add to the state, in segments of one window group each."""

    ev: np.ndarray  # the row's event (index into the batch's non-late events)
    group: np.ndarray  # the row's window group
    start: np.ndarray  # first row of each segment
    size: np.ndarray  # rows per segment
    seg: np.ndarray  # the row's segment
    seg_group: np.ndarray  # the window group of each segment

    @property
    def n(self) -> int:
        return self.ev.shape[0]


@dataclass
class _OutputRows:
    """Where each output row reads its window's running state."""

    positions: np.ndarray  # the row's event (index into the batch's non-late events)
    group: np.ndarray  # the row's window group
    at: np.ndarray  # the last contributing row at or before it (where ``has_at``)
    has_at: np.ndarray | None  # None: no filter, every output row contributes
    before: np.ndarray  # the last contributing row strictly before it (where ``has_before``)
    has_before: np.ndarray
    every_row: bool  # tumbling: every contributing row is an output row, in order


class _Prior:
    """The state columns of the batch's window groups before the batch (fresh for new windows),
    gathered once per column."""

    def __init__(self, state: TimeWindowState, rows: np.ndarray) -> None:
        self._state = state
        self._rows = rows
        self._known = rows >= 0
        self._all_known = bool(self._known.all())
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        got = self._cache.get(name)
        if got is None:
            col = self._state.c[name]
            if self._all_known:
                got = col[self._rows]
            else:
                got = self._state.fresh(name, self._rows.shape[0])
                got[self._known] = col[self._rows[self._known]]
            self._cache[name] = got
        return got

    def gather_all(self) -> None:
        """Read every column now (before the batch's state is written back)."""
        for name in self._state.columns:
            self[name]


class TimeWindowState(WindowState):
    """Running aggregates of every live (entity, window start) of one tumbling/hopping spec.

    Rows of preallocated column arrays; ``index`` maps ``(entity, start_ms)`` to a row, freed
    rows are reused. Dict work goes through C-level ``map`` calls over the batch's groups.
    """

    def __init__(self, feats: Sequence[FeatureDef]) -> None:
        f0 = feats[0]
        self.kind = f0.window
        self.size_ms = int(f0.window_ms)  # type: ignore[arg-type]
        self.step_ms = int(f0.step_ms) if f0.window == "hopping" else self.size_ms  # type: ignore[arg-type]
        by: dict[str, list[str]] = {}
        for f in feats:
            if f.agg in NUMERIC_AGGS | {"distinct"}:
                key = {"mean": "sum", "std": "var"}.get(f.agg, f.agg)
                by.setdefault(key, [])
                if f.field not in by[key]:
                    by[key].append(f.field)  # type: ignore[arg-type]
        self.fields = {k: sorted(v) for k, v in by.items()}
        aggs = {f.agg for f in feats}
        need_last_ts = "last" in self.fields or "since_prev" in aggs
        columns: dict[str, _Column] = {"count": _Column(np.int64, None, 0)}
        fills = {"sum": 0.0, "min": np.inf, "max": -np.inf, "first": np.nan, "last": np.nan}
        for k, v in fills.items():
            if k in self.fields:
                columns[k] = _Column(np.float64, len(self.fields[k]), v)
        if "var" in self.fields:
            for k in ("K", "S1", "S2"):
                columns[k] = _Column(np.float64, len(self.fields["var"]), 0.0)
        if "first" in self.fields:
            columns["first_ts"] = _Column(np.int64, None, I64_MAX)
        if need_last_ts:
            columns["last_ts"] = _Column(np.int64, None, I64_MIN)
        if "distinct" in self.fields:
            columns["dcount"] = _Column(np.int64, len(self.fields["distinct"]), 0)
            columns["dist"] = _Column(object, len(self.fields["distinct"]), None)
        self.columns = columns
        self.feats = tuple(feats)
        self.index: dict[tuple[str, int], int] = {}
        self.rows = SlotPool()
        self.keys = np.empty(0, dtype=object)
        self.starts = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)
        self.row_eid = np.zeros(0, dtype=np.int64)  # the row's entity id (-1: no registry)
        #: the engine's entity ids (`row_eid`), so that `drop_entities` finds an entity's rows
        self.registry: EntityRegistry | None = None
        self.c: dict[str, np.ndarray] = {k: self.fresh(k, 0) for k in columns}
        #: whether `dirty` collects the windows changed since the last `drain` (a worker's
        #: changelog writes only those); off for offline use, where nothing drains it
        self.tracking = False
        self.dirty: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ rows
    def fresh(self, name: str, k: int) -> np.ndarray:
        """``k`` rows of column ``name`` in the empty-window state."""
        dtype, width, fill = self.columns[name]
        shape = (k,) if width is None else (k, width)
        return np.full(shape, fill, dtype=dtype)

    def _grow(self, need: int) -> None:
        cap = self.live.shape[0]
        if need <= cap:
            return
        grow = max(need, 2 * cap, 1024) - cap
        self.keys = np.concatenate([self.keys, np.empty(grow, dtype=object)])
        self.starts = np.concatenate([self.starts, np.zeros(grow, dtype=np.int64)])
        self.live = np.concatenate([self.live, np.zeros(grow, dtype=bool)])
        self.row_eid = np.concatenate([self.row_eid, np.full(grow, -1, dtype=np.int64)])
        for k in self.c:
            self.c[k] = np.concatenate([self.c[k], self.fresh(k, grow)])

    def allocate(
        self, keys: list[tuple[str, int]], eids: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows (fresh columns) for new ``(entity, start)`` keys (``eids``: their entities'
        registry ids, looked up when not given)."""
        k = len(keys)
        rows = self.rows.take(k)
        self._grow(self.rows.size)
        self.index.update(zip(keys, rows.tolist(), strict=True))
        karr = np.empty(k, dtype=object)
        karr[:] = keys
        self.keys[rows] = karr
        self.starts[rows] = np.fromiter(map(itemgetter(1), keys), dtype=np.int64, count=k)
        self.live[rows] = True
        if eids is not None:
            self.row_eid[rows] = eids
        elif self.registry is not None:
            self.row_eid[rows] = self.registry.ids_of([key[0] for key in keys])
        return rows

    def evict(self, cutoff_ms: int) -> None:
        """Drop windows whose end ``start + size_ms`` is ``<= cutoff_ms``."""
        if not self.index:
            return
        n = self.rows.size
        self._drop_rows(
            np.flatnonzero(self.live[:n] & (self.starts[:n] <= cutoff_ms - self.size_ms))
        )

    @property
    def idle_ms(self) -> int:
        """An entity whose newest event is this far behind the cutoff holds no window here."""
        return self.size_ms

    def drop_entities(self, drop: np.ndarray) -> None:
        """Drop every window of the entities ``drop`` marks (a mask over registry ids)."""
        n = self.rows.size
        live = self.live[:n]
        rows = np.flatnonzero(live & drop[np.where(live, self.row_eid[:n], 0)])
        self._drop_rows(rows)

    def extent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per live window: its entity id, the latest time an event of it can have, and no
        arrival seq (the int64 minimum): what a restore knows of when its entity was seen."""
        rows = self.live_rows()
        ts = self.starts[rows] + (self.size_ms - 1)
        return self.row_eid[rows], ts, np.full(rows.size, I64_MIN, dtype=np.int64)

    def _drop_rows(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        gone = self.keys[rows].tolist()
        if self.tracking:
            self.dirty.update(gone)
        deque(map(self.index.__delitem__, gone), maxlen=0)
        self.keys[rows] = None
        self.live[rows] = False
        self.row_eid[rows] = -1
        for k, arr in self.c.items():
            arr[rows] = self.columns[k].fill
        self.rows.release(rows.tolist())

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.live[: self.rows.size])

    @property
    def n_windows(self) -> int:
        return len(self.index)

    # ------------------------------------------------------------------ the batch step
    def _window_rows(
        self, events: BatchEvents, match: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Each event once per window it is added to: (event, window start, output row?).

        Hopping windows add a matching event to all its ``window_ms // step_ms`` windows and
        output the latest one; an event that does not match only reads its latest window.
        """
        m = events.ts.shape[0]
        if self.kind == "tumbling":
            return np.arange(m), tumbling_start_ms(events.ts, self.size_ms), None
        n_hops = self.size_ms // self.step_ms
        last = tumbling_start_ms(events.ts, self.step_ms)
        rep = np.full(m, n_hops) if match is None else np.where(match, n_hops, 1)
        ends = np.cumsum(rep)
        ev = np.repeat(np.arange(m), rep)
        j = np.arange(int(ends[-1])) - (ends - rep)[ev]
        return ev, last[ev] - j * self.step_ms, j == 0

    def apply(self, events: BatchEvents, match: np.ndarray | None) -> TimeWindowColumns:
        """Fold the batch in; return the quantities of each output row."""
        ev, r_start, r_out = self._window_rows(events, match)
        r_eid = events.code[ev]
        order = np.lexsort((r_start, r_eid))  # stable: arrival order within each group
        s_eid = r_eid[order]
        s_start = r_start[order]
        s_ev = ev[order]
        gstart, gsize, gid = segment_bounds([s_eid, s_start])
        n_groups = gstart.size
        keys = list(
            zip(events.names[s_eid[gstart]].tolist(), s_start[gstart].tolist(), strict=True)
        )
        rows = np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        prior = _Prior(self, rows)

        # the rows that contribute (match the filter), in segments per window group
        if match is None:
            s_match = None
            mc = _Contributors(s_ev, gid, gstart, gsize, gid, np.arange(n_groups))
        else:
            s_match = match[s_ev]
            mi = np.flatnonzero(s_match)
            mev, mg = s_ev[mi], gid[mi]
            mstart, msize, mseg = segment_bounds([mg])
            mc = _Contributors(mev, mg, mstart, msize, mseg, mg[mstart])
        run, new_values = self._running(events, mc, prior)

        if mc.n:
            prior.gather_all()
            g_eid = None if events.eid is None else events.eid[s_ev[gstart]]
            self._write_back(keys, rows, g_eid, mc, run, new_values)

        # per output row: the last contributing row at or before it, else the prior
        oi = np.arange(order.shape[0]) if r_out is None else np.flatnonzero(r_out[order])
        og = gid[oi]
        if s_match is None:
            cm = oi
            valid = None
            cmx = cm - 1
        else:
            cmall = np.cumsum(s_match) - 1
            cm = cmall[oi]
            cmx = cm - s_match[oi]
            valid = (cm >= 0) & (mc.group[np.maximum(cm, 0)] == og) if mc.n else cm < -1
        validx = (cmx >= 0) & (mc.group[np.maximum(cmx, 0)] == og) if mc.n else cmx < -1
        out = _OutputRows(s_ev[oi], og, cm, valid, cmx, validx, r_out is None)
        return TimeWindowColumns(self, events, prior, run, mc.n, out)

    def _running(
        self, events: BatchEvents, mc: _Contributors, prior: _Prior
    ) -> tuple[dict[str, np.ndarray], list[tuple[int, np.ndarray, np.ndarray]]]:
        """Each state column's running value after each contributing row, and per distinct
        field the rows' values and which of them are new to their window."""
        run: dict[str, np.ndarray] = {}
        mstart, msize, mseg, seg_g = mc.start, mc.size, mc.seg, mc.seg_group
        rank = np.arange(mc.n) - mstart[mseg]
        run["count"] = prior["count"][seg_g][mseg] + rank + 1
        mpos = events.pos[mc.ev]
        row_gstart = mstart[mseg]

        def stack(kind: str) -> np.ndarray:
            return np.column_stack([events.num[f][mpos] for f in self.fields[kind]])

        def acc(op: np.ufunc, x: np.ndarray, name: str) -> np.ndarray:
            return segmented_accumulate(op, x, mstart, msize, prior[name][seg_g])

        if "sum" in self.fields:
            run["sum"] = acc(np.add, stack("sum"), "sum")
        if "var" in self.fields:
            xv = stack("var")
            had = (prior["count"][seg_g] > 0)[:, None]
            k_seg = np.where(had, prior["K"][seg_g], xv[mstart])
            d = xv - k_seg[mseg]
            run["K"] = k_seg[mseg]
            run["S1"] = acc(np.add, d, "S1")
            run["S2"] = acc(np.add, d * d, "S2")
        if "min" in self.fields:
            run["min"] = acc(np.minimum, stack("min"), "min")
        if "max" in self.fields:
            run["max"] = acc(np.maximum, stack("max"), "max")
        mts = events.ts[mc.ev]
        for name, ts_name, op in (
            ("first", "first_ts", np.minimum),
            ("last", "last_ts", np.maximum),
        ):
            if ts_name not in self.columns:
                continue
            run_ts = acc(op, mts, ts_name)
            run[ts_name] = run_ts
            if name not in self.fields or mc.n == 0:
                continue
            excl = np.empty_like(run_ts)
            excl[1:] = run_ts[:-1]
            excl[mstart] = prior[ts_name][seg_g]
            improve = mts < excl if name == "first" else mts >= excl
            idx = segment_ffill(improve, row_gstart)
            run[name] = np.where(
                (idx >= 0)[:, None], stack(name)[np.maximum(idx, 0)], prior[name][seg_g][mseg]
            )
        new_values: list[tuple[int, np.ndarray, np.ndarray]] = []
        if "distinct" in self.fields:
            run["dcount"] = np.zeros((mc.n, len(self.fields["distinct"])), dtype=np.int64)
            for j, f in enumerate(self.fields["distinct"]):
                vals = np.asarray(events.raw[f])[mpos]
                new = self._distinct_new(vals, mc, prior["dist"][:, j])
                cum = np.cumsum(new)
                run_new = cum - (cum[mstart] - new[mstart])[mseg]
                run["dcount"][:, j] = np.minimum(
                    prior["dcount"][seg_g, j][mseg] + run_new, DISTINCT_CAP
                )
                new_values.append((j, vals, new))
        return run, new_values

    def _write_back(
        self,
        keys: list[tuple[str, int]],
        rows: np.ndarray,
        g_eid: np.ndarray | None,
        mc: _Contributors,
        run: dict[str, np.ndarray],
        new_values: list[tuple[int, np.ndarray, np.ndarray]],
    ) -> None:
        """The state of each contributing window after its last row; new distinct values."""
        mstart, msize, seg_g = mc.start, mc.size, mc.seg_group
        seg_rows = rows[seg_g]
        fresh = np.flatnonzero(seg_rows < 0)
        if fresh.size:
            new_g = seg_g[fresh]
            seg_rows[fresh] = self.allocate(
                [keys[g] for g in new_g.tolist()], None if g_eid is None else g_eid[new_g]
            )
        if self.tracking:
            self.dirty.update(map(keys.__getitem__, seg_g.tolist()))
        lastm = mstart + msize - 1
        for name, arr in run.items():
            self.c[name][seg_rows] = arr[lastm]
        for j, vals, new in new_values:
            dist = self.c["dist"]
            for s in np.flatnonzero(np.add.reduceat(new, mstart) > 0).tolist():
                a, b = int(mstart[s]), int(mstart[s] + msize[s])
                r = int(seg_rows[s])
                d = dist[r, j]
                if d is None:
                    d = dist[r, j] = {}
                room = DISTINCT_CAP - len(d)
                if room > 0:
                    d.update(dict.fromkeys(vals[a:b][new[a:b]][:room].tolist()))

    def _distinct_new(
        self, vals: np.ndarray, mc: _Contributors, prior_dicts: np.ndarray
    ) -> np.ndarray:
        """True where a row's value is its group's first occurrence and not in the prior set."""
        n = vals.shape[0]
        if n == 0:
            return np.zeros(0, dtype=bool)
        _, codes = np.unique(vals, return_inverse=True)
        new = first_occurrences(mc.seg, codes)
        seg_dicts = prior_dicts[mc.seg_group]
        for s in np.flatnonzero(seg_dicts != None).tolist():  # noqa: E711
            d = seg_dicts[s]
            a, b = int(mc.start[s]), int(mc.start[s] + mc.size[s])
            new[a:b] &= ~np.fromiter(map(d.__contains__, vals[a:b].tolist()), bool, b - a)
        return new

    # ------------------------------------------------------------------ snapshot
    def column_fields(self, name: str) -> list[str]:
        """The fields of a per-field column, in its column order."""
        return self.fields[_FIELDS_OF.get(name, name)]

    def snapshot(self, names: np.ndarray) -> dict[str, Any]:
        rows = self.live_rows()
        cols: dict[str, Any] = {}
        for k, col in self.columns.items():
            if k == "dist":
                continue
            arr = self.c[k][rows]
            if col.width is None:
                cols[k] = arr.tolist()
            else:
                cols[k] = {f: arr[:, j].tolist() for j, f in enumerate(self.column_fields(k))}
        snap: dict[str, Any] = {
            "entities": [key[0] for key in self.keys[rows].tolist()],
            "starts": self.starts[rows].tolist(),
            "columns": cols,
        }
        if "dist" in self.columns:
            snap["distinct"] = {
                f: [None if d is None else list(d) for d in self.c["dist"][rows, j].tolist()]
                for j, f in enumerate(self.fields["distinct"])
            }
        return snap

    # ------------------------------------------------------------------ per-key changes
    @property
    def n_keys(self) -> int:
        """Live (entity, window start) keys: one changelog record each."""
        return len(self.index)

    def mark_all_dirty(self) -> None:
        self.dirty = set(self.index)

    def drain(self) -> KeyedChanges:
        """The windows changed since the last call: each live one's row (in `row_layout`
        order), and the keys of those evicted since."""
        keys = list(self.dirty)
        self.dirty = set()
        rows = np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        live = rows >= 0
        gone = [keys[i] for i in np.flatnonzero(~live).tolist()]
        kept = [keys[i] for i in np.flatnonzero(live).tolist()]
        r = rows[live]
        cols: list[list[Any]] = []
        for name in self.columns:
            if name == "dist":
                cols.append([
                    [None if d is None else list(d) for d in row]
                    for row in self.c["dist"][r].tolist()
                ])  # fmt: skip
            else:
                cols.append(self.c[name][r].tolist())
        return KeyedChanges("w", kept, [list(t) for t in zip(*cols, strict=True)], gone)

    def _load_rows(self, rows: Sequence[KeyedRow]) -> None:
        """Rows ``(key, (entity, start), row)`` from `drain`, column by column (the checks on
        every row go through C-level ``map`` calls: a million rows load in about a second)."""
        _, keys, data = keyed_columns(rows)
        k = len(data)
        if set(map(type, data)) - {list} or set(map(len, data)) - {len(self.columns)}:
            raise ValueError("a row of another layout")
        cols: dict[str, Any] = {}
        for i, (name, col) in enumerate(self.columns.items()):
            vals = list(map(itemgetter(i), data))
            if name == "dist":
                if set(map(type, vals)) - {list} or set(map(len, vals)) - {col.width}:
                    raise ValueError("distinct values of another layout")
                cols[name] = vals
                continue
            arr = np.asarray(vals, dtype=col.dtype)
            if arr.shape != ((k,) if col.width is None else (k, col.width)):
                raise ValueError(f"column {name} of shape {arr.shape}")
            cols[name] = arr
        if set(map(type, keys)) - {tuple} or set(map(len, keys)) - {2}:
            raise ValueError("a key that is not (entity, start)")
        at = self.allocate(keys)
        for name, arr in cols.items():
            if name != "dist":
                self.c[name][at] = arr
                continue
            dist = self.c["dist"]
            for r, sets in zip(at.tolist(), arr, strict=True):
                for j, vals in enumerate(sets):
                    dist[r, j] = None if vals is None else dict.fromkeys(vals)

    def _check_layout(self, rows: Sequence[KeyedRow]) -> None:
        widths = [c.width for c in self.columns.values()]
        for key, ident, row in rows:
            ok = (
                isinstance(ident, tuple) and len(ident) == 2 and isinstance(row, list)
                and len(row) == len(widths)
                and all(
                    (w is None) != (isinstance(v, list) and len(v) == w)
                    for v, w in zip(row, widths, strict=True)
                )
            )  # fmt: skip
            if not ok:
                raise KeyedRowError(key, f"not a row of this {self.kind} window's columns")

    def load(self, snap: Mapping[str, Any], entities: list[str], registry: EntityRegistry) -> None:
        starts = [int(s) for s in snap["starts"]]
        k = len(starts)
        if len(entities) != k:
            raise DriftlineError("state: inconsistent window entry (entities vs starts)")
        if not k:
            return
        rows = self.allocate(list(zip(entities, starts, strict=True)))
        for name, col in self.columns.items():
            if name == "dist":
                continue
            data = snap["columns"][name]
            if col.width is None:
                self.c[name][rows] = np.asarray(data, dtype=col.dtype)
            else:
                for j, f in enumerate(self.column_fields(name)):
                    self.c[name][rows, j] = np.asarray(data[f], dtype=col.dtype)
        if "dist" in self.columns:
            for j, f in enumerate(self.fields["distinct"]):
                for r, vals in zip(rows.tolist(), snap["distinct"][f], strict=True):
                    self.c["dist"][r, j] = None if vals is None else dict.fromkeys(vals)


def _stored(column: str) -> Callable[[TimeWindowColumns, str | None], np.ndarray]:
    """The `WindowColumns` quantity of that name, read from the state column of that name."""

    def read(self: TimeWindowColumns, field: str | None) -> np.ndarray:
        return self._field(column, field)

    read.__name__ = column
    read.__qualname__ = f"TimeWindowColumns.{column}"
    return memoized(read)


class TimeWindowColumns(WindowColumns):
    """Per output row: the running state of its window at its own position in the batch (the
    last contributing row at or before it, else the window's prior state)."""

    def __init__(
        self,
        state: TimeWindowState,
        events: BatchEvents,
        prior: _Prior,
        run: dict[str, np.ndarray],
        n_contributing: int,
        out: _OutputRows,
    ) -> None:
        self._state = state
        self._events = events
        self._prior = prior
        self._run = run
        self._n_m = n_contributing
        self._out = out
        self._at = np.maximum(out.at, 0)
        super().__init__(self._gather("count"), out.positions)

    def _gather(self, name: str, j: int | None = None) -> np.ndarray:
        """State column ``name`` (its field ``j``) as of each output row."""
        out = self._out
        p = self._prior[name] if j is None else self._prior[name][:, j]
        if self._n_m == 0:
            return p[out.group]
        r = self._run[name] if j is None else self._run[name][:, j]
        if out.has_at is None:
            return r if out.every_row else r[out.at]
        return np.where(out.has_at, r[self._at], p[out.group])

    def _field(self, column: str, field: str | None) -> np.ndarray:
        """Column ``column`` of ``field`` as of each output row."""
        j = self._state.column_fields(column).index(field)  # type: ignore[arg-type]
        return self._gather(column, j)

    # the quantities the state keeps as they are, one column each
    sum = _stored("sum")
    min = _stored("min")
    max = _stored("max")
    first = _stored("first")
    last = _stored("last")

    @memoized
    def var(self, field: str | None) -> np.ndarray:
        n = self.n
        s1, s2 = self._field("S1", field), self._field("S2", field)
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
        val[n < 2] = np.nan
        return val

    @memoized
    def distinct(self, field: str | None) -> np.ndarray:
        return self._field("dcount", field).astype(np.float64)

    @memoized
    def rate(self, field: str | None = None) -> np.ndarray:
        return self.n * 1000.0 / self._state.size_ms

    @memoized
    def since_prev(self, field: str | None = None) -> np.ndarray:
        """ms since the latest earlier event of the window (NaN for its first event)."""
        out = self._out
        p = self._prior["last_ts"][out.group]
        if self._n_m:
            mx = np.where(out.has_before, self._run["last_ts"][np.maximum(out.before, 0)], p)
        else:
            mx = p
        with np.errstate(invalid="ignore"):
            o_ts = self._events.ts[self.positions]
            return np.where(mx == I64_MIN, np.nan, (o_ts - mx).astype(np.float64))
