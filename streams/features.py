"""Per-entity windowed features over event time: tumbling, hopping, sliding and count windows.

One `FeatureEngine` serves one input partition and sees its events in arrival order, a batch at
a time. For every event that is not late it emits, per feature, one value:

- **tumbling** (``window_ms``): the running aggregate of the entity's events in the same window
  ``[start, start + window_ms)`` that arrived up to and including this one.
- **hopping** (``window_ms``, ``step_ms``; ``step_ms`` divides ``window_ms``): every event is
  added to the ``window_ms // step_ms`` windows ``[k * step_ms, k * step_ms + window_ms)`` that
  contain it; the value emitted is the running aggregate of the *most recent* of them (the one
  whose start is the largest multiple of ``step_ms`` that is ``<= ts``).
- **sliding** (``window_ms``): the aggregate over the entity's non-late events with time in
  ``(ts - window_ms, ts]`` that arrived so far (this one included). An event that arrives later
  with an earlier time is included in later outputs only.
- **count** (``count`` = N): the aggregate over the entity's last N non-late events in arrival
  order, this one included, of which only those with time ``> ts - idle_ttl_ms`` count (an
  entity idle for ``idle_ttl_ms`` starts afresh; this bounds the state).

A filter (``where_field``/``where_equals``) restricts which events *contribute*; every non-late
event still gets the value of its (filtered) window. An empty window gives count 0, sum 0,
distinct 0, rate 0 and NaN for the rest. See `streams.aggregators` for each aggregation.

Lateness: the watermark is the running maximum of event time (earlier events of the same batch
included). An event is late when ``ts_ms < watermark_before_it - grace_ms``; late events leave
the state untouched and get NaN feature values. After each batch, state no non-late event can
reach any more is evicted (tumbling/hopping windows whose end is ``<= watermark - grace_ms``,
sliding events with time ``<= watermark - grace_ms - window_ms``, count-window entities whose
events are all ``<= watermark - grace_ms - idle_ttl_ms``), so the state stays bounded and
eviction never changes an output.

The output does not depend on how the stream is cut into batches, bit for bit, nor on a
snapshot/restore at a batch boundary: running sums are folded left to right in arrival order per
group, set aggregates (sliding, count) are folded over the window's members in arrival order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import Any

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.aggregators import (
    AGGREGATIONS,
    DISTINCT_CAP,
    NEEDS_FIELD,
    count_le,
    segment_bounds,
    segment_ffill,
    segmented_accumulate,
)
from driftline.streams.windows import WINDOW_KINDS, check_size_ms, check_step_ms, tumbling_start_ms

__all__ = ["AGGREGATIONS", "FeatureBatch", "FeatureDef", "FeatureEngine"]

SNAPSHOT_VERSION = 2
DEFAULT_IDLE_TTL_MS = 86_400_000
_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
_NUMERIC_AGGS = frozenset({"sum", "mean", "var", "std", "min", "max", "first", "last"})


@dataclass(frozen=True)
class FeatureDef:
    """One windowed feature.

    Parameters
    ----------
    name
        Output name, e.g. ``"amount_mean_1m"``.
    field
        Source column. Numeric for sum, mean, var, std, min, max, first, last; any hashable
        values (e.g. strings) for distinct; ignored by count, rate and since_prev (may be None).
    agg
        One of `AGGREGATIONS`: ``count``, ``sum``, ``mean``, ``var``, ``std``, ``min``, ``max``,
        ``first``, ``last``, ``distinct``, ``rate``, ``since_prev``.
    window_ms
        Window size (tumbling, hopping) or look-back (sliding) in ms, > 0; None for count
        windows.
    window
        ``"tumbling"`` (default), ``"hopping"``, ``"sliding"`` or ``"count"``.
    step_ms
        Hopping only: the hop, > 0, dividing ``window_ms``.
    count
        Count windows only: N, the number of most recent events, > 0.
    where_field, where_equals
        Optional filter: only events whose ``where_field`` column equals ``where_equals``
        contribute (give both or neither).
    idle_ttl_ms
        Count windows only: events older than this relative to the current event do not count
        and idle entities are dropped; default one day.

    Raises
    ------
    SpecError
        If any of the above does not hold.

    Examples
    --------
    >>> FeatureDef("amount_sum_1m", "amount", "sum", 60_000).window
    'tumbling'
    >>> FeatureDef("amount_sum_1m", None, "sum", 60_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: feature 'amount_sum_1m': agg 'sum' needs a numeric source field; ...
    >>> FeatureDef("last5", "amount", "mean", None, window="count", count=5).idle_ttl_ms
    86400000
    """

    name: str
    field: str | None
    agg: str
    window_ms: int | None
    window: str = "tumbling"
    step_ms: int | None = None
    count: int | None = None
    where_field: str | None = None
    where_equals: str | int | float | bool | None = None
    idle_ttl_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"feature name: got {self.name!r}; expected a non-empty string")
        where = f"feature {self.name!r}"
        if self.agg not in AGGREGATIONS:
            raise SpecError(
                f"{where}: agg {self.agg!r} is not supported; "
                f"expected one of {', '.join(map(repr, AGGREGATIONS))}"
            )
        if self.field is None:
            if self.agg in NEEDS_FIELD:
                kind = "numeric " if self.agg != "distinct" else ""
                raise SpecError(
                    f"{where}: agg {self.agg!r} needs a {kind}source field; field=None is only "
                    "allowed for agg 'count', 'rate' and 'since_prev'"
                )
        elif not isinstance(self.field, str) or not self.field:
            raise SpecError(
                f"{where}: field {self.field!r}; expected a non-empty column name or None"
            )
        if self.window not in WINDOW_KINDS:
            raise SpecError(
                f"{where}: window {self.window!r}; expected one of "
                f"{', '.join(map(repr, WINDOW_KINDS))}"
            )
        if self.window == "count":
            if self.window_ms is not None:
                raise SpecError(
                    f"{where}: window_ms {self.window_ms!r}; count windows take count=N and "
                    "window_ms=None"
                )
            check_size_ms(self.count, f"{where}: count")  # same rule: integer > 0
            ttl = DEFAULT_IDLE_TTL_MS if self.idle_ttl_ms is None else self.idle_ttl_ms
            object.__setattr__(self, "idle_ttl_ms", check_size_ms(ttl, f"{where}: idle_ttl_ms"))
        else:
            check_size_ms(self.window_ms, f"{where}: window_ms")
            for key in ("count", "idle_ttl_ms"):
                if getattr(self, key) is not None:
                    raise SpecError(
                        f"{where}: {key} {getattr(self, key)!r} is only for window='count'; "
                        "expected None"
                    )
        if self.window == "hopping":
            check_step_ms(int(self.window_ms), self.step_ms, f"{where}: step_ms")  # type: ignore[arg-type]
        elif self.step_ms is not None:
            raise SpecError(
                f"{where}: step_ms {self.step_ms!r} is only for window='hopping'; expected None"
            )
        if self.where_field is None:
            if self.where_equals is not None:
                raise SpecError(f"{where}: where_equals is set; expected where_field with it")
        else:
            if not isinstance(self.where_field, str) or not self.where_field:
                raise SpecError(
                    f"{where}: where_field {self.where_field!r}; expected a non-empty column name"
                )
            if not isinstance(self.where_equals, str | int | float | bool):
                raise SpecError(
                    f"{where}: where_equals {self.where_equals!r}; expected a str, int, float "
                    "or bool to compare the where_field column with"
                )

    @property
    def source(self) -> str | None:
        """The column this feature reads (None for count, rate and since_prev)."""
        return self.field if self.agg in NEEDS_FIELD else None

    @property
    def group_key(self) -> tuple:
        """Features with equal keys share one window state."""
        return (
            self.window,
            self.window_ms,
            self.step_ms,
            self.count,
            self.idle_ttl_ms,
            self.where_field,
            type(self.where_equals).__name__,
            self.where_equals,
        )


@dataclass
class FeatureBatch:
    """Output of `FeatureEngine.update`, aligned with the input events.

    Attributes
    ----------
    values
        Feature name -> ``float64`` array, one value per event, NaN where the event was late.
    late
        ``bool`` array, True where the event was late and NOT applied to the state.
    window_start_ms
        Tumbling window size -> ``int64`` start of the window containing each event (late ones
        too).
    """

    values: dict[str, np.ndarray]
    late: np.ndarray
    window_start_ms: dict[int, np.ndarray]


class _Registry:
    """Entity string <-> small int id; ids are recycled once no state refers to them."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names = np.empty(0, dtype=object)
        self.free: list[int] = []
        self.next_gc = 4096

    def lookup(self, names: list[str]) -> np.ndarray:
        out = np.fromiter(map(self.ids.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        new = np.flatnonzero(out < 0)
        if new.size:
            k = new.size
            n_free = min(k, len(self.free))
            got = self.free[len(self.free) - n_free :]
            del self.free[len(self.free) - n_free :]
            start = self.names.shape[0]
            fresh = list(range(start, start + k - n_free))
            if fresh:
                self.names = np.concatenate([self.names, np.empty(len(fresh), dtype=object)])
            ids = got + fresh
            out[new] = ids
            new_names = [names[i] for i in new.tolist()]
            self.ids.update(zip(new_names, ids, strict=True))
            self.names[ids] = new_names
        return out

    def gc(self, live: np.ndarray) -> None:
        if len(self.ids) < self.next_gc:
            return
        alive = np.zeros(self.names.shape[0], dtype=bool)
        alive[live] = True
        dead = np.flatnonzero(~alive & (self.names != None))  # noqa: E711
        for name in self.names[dead].tolist():
            del self.ids[name]
        self.names[dead] = None
        self.free.extend(dead.tolist())
        self.next_gc = max(4096, 2 * len(self.ids))


@dataclass
class _Ctx:
    """One batch's non-late events, in arrival order."""

    pos: np.ndarray  # event position in the batch
    code: np.ndarray  # batch-local entity code (index into ``names``)
    names: np.ndarray  # the batch's distinct entity strings, sorted
    eid: np.ndarray | None  # registry ids (only when some state is per entity)
    ts: np.ndarray
    seq: np.ndarray
    num: dict[str, np.ndarray]  # numeric columns (full batch)
    raw: dict[str, np.ndarray]  # distinct / filter columns (full batch)


def _needs(features: Sequence[FeatureDef]) -> tuple[list[str], list[str], set[str]]:
    num = sorted({f.field for f in features if f.agg in _NUMERIC_AGGS})  # type: ignore[misc]
    dist = sorted({f.field for f in features if f.agg == "distinct"})  # type: ignore[misc]
    return num, dist, {f.agg for f in features}


def _result(agg: str, n: np.ndarray, get: Any, field: str | None) -> np.ndarray:
    """Per-row result of ``agg`` from gathered per-row quantities (``get(name, field)``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if agg == "count":
            return n.astype(np.float64)
        if agg == "rate":
            return get("rate", None)
        if agg == "since_prev":
            return get("since_prev", None)
        if agg == "sum":
            return get("sum", field)
        if agg == "mean":
            return get("sum", field) / n
        if agg in ("var", "std"):
            var = get("var", field)
            return np.sqrt(var) if agg == "std" else var
        if agg in ("min", "max", "first", "last"):
            return np.where(n > 0, get(agg, field), np.nan)
        if agg == "distinct":
            return get("distinct", field)
    raise AssertionError(agg)  # pragma: no cover


class _TimeState:
    """Running aggregates of every live (entity, window start) of one tumbling/hopping spec.

    Rows of preallocated column arrays; ``index`` maps ``(entity id, start_ms)`` to a row, freed
    rows are reused. Dict work goes through C-level ``map`` calls over the batch's groups.
    """

    def __init__(self, feats: Sequence[FeatureDef]) -> None:
        f0 = feats[0]
        self.kind = f0.window
        self.size_ms = int(f0.window_ms)  # type: ignore[arg-type]
        self.step_ms = int(f0.step_ms) if f0.window == "hopping" else self.size_ms  # type: ignore[arg-type]
        by: dict[str, list[str]] = {}
        for f in feats:
            if f.agg in _NUMERIC_AGGS | {"distinct"}:
                key = {"mean": "sum", "std": "var"}.get(f.agg, f.agg)
                by.setdefault(key, [])
                if f.field not in by[key]:
                    by[key].append(f.field)  # type: ignore[arg-type]
        self.fields = {k: sorted(v) for k, v in by.items()}
        aggs = {f.agg for f in feats}
        self.need_last_ts = "last" in self.fields or "since_prev" in aggs
        spec: dict[str, tuple[Any, int | None, Any]] = {"count": (np.int64, None, 0)}
        fills = {"sum": 0.0, "min": np.inf, "max": -np.inf, "first": np.nan, "last": np.nan}
        for k, v in fills.items():
            if k in self.fields:
                spec[k] = (np.float64, len(self.fields[k]), v)
        if "var" in self.fields:
            for k in ("K", "S1", "S2"):
                spec[k] = (np.float64, len(self.fields["var"]), 0.0)
        if "first" in self.fields:
            spec["first_ts"] = (np.int64, None, _I64_MAX)
        if self.need_last_ts:
            spec["last_ts"] = (np.int64, None, _I64_MIN)
        if "distinct" in self.fields:
            spec["dcount"] = (np.int64, len(self.fields["distinct"]), 0)
            spec["dist"] = (object, len(self.fields["distinct"]), None)
        self.spec = spec
        self.index: dict[tuple[int, int], int] = {}
        self.free: list[int] = []
        self.n_rows = 0
        self.keys = np.empty(0, dtype=object)
        self.starts = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)
        self.c: dict[str, np.ndarray] = {k: self._fresh(k, 0) for k in spec}

    def _fresh(self, name: str, k: int) -> np.ndarray:
        dtype, width, fill = self.spec[name]
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
        for k in self.c:
            self.c[k] = np.concatenate([self.c[k], self._fresh(k, grow)])

    def allocate(self, keys: list[tuple[str, int]]) -> np.ndarray:
        """Rows (fresh columns) for new ``(entity, start)`` keys."""
        k = len(keys)
        n_free = min(k, len(self.free))
        reused = self.free[len(self.free) - n_free :]
        del self.free[len(self.free) - n_free :]
        rows = np.empty(k, dtype=np.int64)
        rows[:n_free] = reused
        n_new = k - n_free
        if n_new:
            self._grow(self.n_rows + n_new)
            rows[n_free:] = np.arange(self.n_rows, self.n_rows + n_new)
            self.n_rows += n_new
        self.index.update(zip(keys, rows.tolist(), strict=True))
        karr = np.empty(k, dtype=object)
        karr[:] = keys
        self.keys[rows] = karr
        self.starts[rows] = np.fromiter((key[1] for key in keys), dtype=np.int64, count=k)
        self.live[rows] = True
        return rows

    def evict(self, cutoff_ms: int) -> None:
        """Drop windows whose end ``start + size_ms`` is ``<= cutoff_ms``."""
        if not self.index:
            return
        n = self.n_rows
        rows = np.flatnonzero(self.live[:n] & (self.starts[:n] <= cutoff_ms - self.size_ms))
        if rows.size == 0:
            return
        deque(map(self.index.__delitem__, self.keys[rows].tolist()), maxlen=0)
        self.keys[rows] = None
        self.live[rows] = False
        for k, arr in self.c.items():
            arr[rows] = self.spec[k][2]
        self.free.extend(rows.tolist())

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.live[: self.n_rows])

    @property
    def n_windows(self) -> int:
        return len(self.index)

    def live_eids(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)  # keyed by entity string, not registry ids

    # ------------------------------------------------------------------ the batch step
    def apply(self, ctx: _Ctx, match: np.ndarray | None) -> dict[tuple[str, str | None], Any]:
        """Fold the batch in; return a getter of per-output-row quantities and positions."""
        m = ctx.ts.shape[0]
        if self.kind == "tumbling":
            ev = np.arange(m)
            r_start = tumbling_start_ms(ctx.ts, self.size_ms)
            r_out = None
        else:
            n_hops = self.size_ms // self.step_ms
            last = tumbling_start_ms(ctx.ts, self.step_ms)
            rep = np.full(m, n_hops) if match is None else np.where(match, n_hops, 1)
            ends = np.cumsum(rep)
            ev = np.repeat(np.arange(m), rep)
            j = np.arange(int(ends[-1])) - (ends - rep)[ev]
            r_start = last[ev] - j * self.step_ms
            r_out = j == 0
        r_eid = ctx.code[ev]
        order = np.lexsort((r_start, r_eid))  # stable: arrival order within each group
        s_eid = r_eid[order]
        s_start = r_start[order]
        s_ev = ev[order]
        gstart, gsize, gid = segment_bounds([s_eid, s_start])
        n_groups = gstart.size
        keys = list(zip(ctx.names[s_eid[gstart]].tolist(), s_start[gstart].tolist(), strict=True))
        rows = np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        known = rows >= 0
        krows = rows[known]
        all_known = bool(known.all())
        prior_cache: dict[str, np.ndarray] = {}

        def prior(name: str) -> np.ndarray:
            if name not in prior_cache:
                if all_known:
                    prior_cache[name] = self.c[name][rows]
                else:
                    arr = self._fresh(name, n_groups)
                    arr[known] = self.c[name][krows]
                    prior_cache[name] = arr
            return prior_cache[name]

        # ---- running state over the contributing (matching) rows
        if match is None:
            s_match = None
            mev, mg = s_ev, gid
            mstart, msize, mseg = gstart, gsize, gid
            seg_g = np.arange(n_groups)
        else:
            s_match = match[s_ev]
            mi = np.flatnonzero(s_match)
            mev, mg = s_ev[mi], gid[mi]
            mstart, msize, mseg = segment_bounds([mg])
            seg_g = mg[mstart]
        n_m = mev.shape[0]
        run: dict[str, np.ndarray] = {}
        rank = np.arange(n_m) - mstart[mseg]
        run["count"] = prior("count")[seg_g][mseg] + rank + 1
        mpos = ctx.pos[mev]
        row_gstart = mstart[mseg]

        def stack(kind: str) -> np.ndarray:
            return np.column_stack([ctx.num[f][mpos] for f in self.fields[kind]])

        def acc(op: np.ufunc, x: np.ndarray, name: str) -> np.ndarray:
            return segmented_accumulate(op, x, mstart, msize, prior(name)[seg_g])

        if "sum" in self.fields:
            run["sum"] = acc(np.add, stack("sum"), "sum")
        if "var" in self.fields:
            xv = stack("var")
            had = (prior("count")[seg_g] > 0)[:, None]
            k_seg = np.where(had, prior("K")[seg_g], xv[mstart])
            d = xv - k_seg[mseg]
            run["K"] = k_seg[mseg]
            run["S1"] = acc(np.add, d, "S1")
            run["S2"] = acc(np.add, d * d, "S2")
        if "min" in self.fields:
            run["min"] = acc(np.minimum, stack("min"), "min")
        if "max" in self.fields:
            run["max"] = acc(np.maximum, stack("max"), "max")
        mts = ctx.ts[mev]
        for name, ts_name, op in (
            ("first", "first_ts", np.minimum),
            ("last", "last_ts", np.maximum),
        ):
            if ts_name not in self.spec:
                continue
            run_ts = acc(op, mts, ts_name)
            run[ts_name] = run_ts
            if name not in self.fields or n_m == 0:
                continue
            excl = np.empty_like(run_ts)
            excl[1:] = run_ts[:-1]
            excl[mstart] = prior(ts_name)[seg_g]
            improve = mts < excl if name == "first" else mts >= excl
            idx = segment_ffill(improve, row_gstart)
            run[name] = np.where(
                (idx >= 0)[:, None], stack(name)[np.maximum(idx, 0)], prior(name)[seg_g][mseg]
            )
        new_vals: list[tuple[int, np.ndarray, np.ndarray]] = []
        if "distinct" in self.fields:
            run["dcount"] = np.zeros((n_m, len(self.fields["distinct"])), dtype=np.int64)
            for j, f in enumerate(self.fields["distinct"]):
                vals = np.asarray(ctx.raw[f])[mpos]
                new = self._distinct_new(vals, mstart, msize, mseg, seg_g, prior("dist")[:, j])
                cum = np.cumsum(new)
                run_new = cum - (cum[mstart] - new[mstart])[mseg]
                run["dcount"][:, j] = np.minimum(
                    prior("dcount")[seg_g, j][mseg] + run_new, DISTINCT_CAP
                )
                new_vals.append((j, vals, new))

        # ---- write back: the state of each contributing group after its last row
        if n_m:
            seg_rows = rows[seg_g]
            fresh = np.flatnonzero(seg_rows < 0)
            if fresh.size:
                seg_rows[fresh] = self.allocate([keys[g] for g in seg_g[fresh].tolist()])
            lastm = mstart + msize - 1
            for name, arr in run.items():
                self.c[name][seg_rows] = arr[lastm]
            for j, vals, new in new_vals:
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

        # ---- gather per output row: last contributing row at or before it, else the prior
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
            valid = (cm >= 0) & (mg[np.maximum(cm, 0)] == og) if n_m else cm < -1
        validx = (cmx >= 0) & (mg[np.maximum(cmx, 0)] == og) if n_m else cmx < -1
        cmc = np.maximum(cm, 0)
        o_ev = s_ev[oi]

        def gather(name: str, j: int | None = None) -> np.ndarray:
            p = prior(name) if j is None else prior(name)[:, j]
            if n_m == 0:
                return p[og]
            r = run[name] if j is None else run[name][:, j]
            if valid is None:
                return r if r_out is None else r[cm]
            return np.where(valid, r[cmc], p[og])

        n = gather("count")
        out: dict[tuple[str, str | None], Any] = {("__n__", None): n, ("__pos__", None): o_ev}

        def get(name: str, field: str | None) -> np.ndarray:
            key = (name, field)
            if key in out:
                return out[key]
            if name == "rate":
                val = n * 1000.0 / self.size_ms
            elif name == "since_prev":
                p = prior("last_ts")[og]
                if n_m:
                    mx = np.where(validx, run["last_ts"][np.maximum(cmx, 0)], p)
                else:
                    mx = p
                with np.errstate(invalid="ignore"):
                    o_ts = ctx.ts[o_ev]
                    val = np.where(mx == _I64_MIN, np.nan, (o_ts - mx).astype(np.float64))
            elif name == "var":
                j = self.fields["var"].index(field)  # type: ignore[arg-type]
                s1, s2 = gather("S1", j), gather("S2", j)
                with np.errstate(divide="ignore", invalid="ignore"):
                    val = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
                val[n < 2] = np.nan
            elif name == "distinct":
                val = gather("dcount", self.fields["distinct"].index(field)).astype(np.float64)  # type: ignore[arg-type]
            else:
                val = gather(name, self.fields[name].index(field))  # type: ignore[arg-type]
            out[key] = val
            return val

        out[("__get__", None)] = get
        return out

    def _distinct_new(
        self,
        vals: np.ndarray,
        mstart: np.ndarray,
        msize: np.ndarray,
        mseg: np.ndarray,
        seg_g: np.ndarray,
        prior_dicts: np.ndarray,
    ) -> np.ndarray:
        """True where a row's value is its group's first occurrence and not in the prior set."""
        n = vals.shape[0]
        if n == 0:
            return np.zeros(0, dtype=bool)
        _, codes = np.unique(vals, return_inverse=True)
        o = np.lexsort((np.arange(n), codes, mseg))
        firsts = np.ones(n, dtype=bool)
        firsts[1:] = (codes[o][1:] != codes[o][:-1]) | (mseg[o][1:] != mseg[o][:-1])
        new = np.zeros(n, dtype=bool)
        new[o[firsts]] = True
        seg_dicts = prior_dicts[seg_g]
        for s in np.flatnonzero(seg_dicts != None).tolist():  # noqa: E711
            d = seg_dicts[s]
            a, b = int(mstart[s]), int(mstart[s] + msize[s])
            new[a:b] &= ~np.fromiter(map(d.__contains__, vals[a:b].tolist()), bool, b - a)
        return new

    # ------------------------------------------------------------------ snapshot
    def _col_fields(self, name: str) -> list[str]:
        return self.fields[
            {"K": "var", "S1": "var", "S2": "var", "dcount": "distinct"}.get(name, name)
        ]

    def snapshot(self, names: np.ndarray) -> dict[str, Any]:
        rows = self.live_rows()
        cols: dict[str, Any] = {}
        for k, (_, width, _) in self.spec.items():
            if k == "dist":
                continue
            arr = self.c[k][rows]
            if width is None:
                cols[k] = arr.tolist()
            else:
                cols[k] = {f: arr[:, j].tolist() for j, f in enumerate(self._col_fields(k))}
        snap: dict[str, Any] = {
            "entities": [key[0] for key in self.keys[rows].tolist()],
            "starts": self.starts[rows].tolist(),
            "columns": cols,
        }
        if "dist" in self.spec:
            snap["distinct"] = {
                f: [None if d is None else list(d) for d in self.c["dist"][rows, j].tolist()]
                for j, f in enumerate(self.fields["distinct"])
            }
        return snap

    def load(self, snap: Mapping[str, Any], names: list[str]) -> None:
        starts = [int(s) for s in snap["starts"]]
        k = len(starts)
        if len(names) != k:
            raise DriftlineError("state: inconsistent window entry (entities vs starts)")
        if not k:
            return
        rows = self.allocate(list(zip(names, starts, strict=True)))
        for name, (_, width, _) in self.spec.items():
            if name == "dist":
                continue
            col = snap["columns"][name]
            if width is None:
                self.c[name][rows] = np.asarray(col, dtype=self.spec[name][0])
            else:
                for j, f in enumerate(self._col_fields(name)):
                    self.c[name][rows, j] = np.asarray(col[f], dtype=self.spec[name][0])
        if "dist" in self.spec:
            for j, f in enumerate(self.fields["distinct"]):
                for r, vals in zip(rows.tolist(), snap["distinct"][f], strict=True):
                    self.c["dist"][r, j] = None if vals is None else dict.fromkeys(vals)


class _SetState:
    """Buffered member events per entity for sliding and count windows.

    Members are kept sorted by (entity id, time, arrival seq) for sliding windows and by
    (entity id, arrival seq) for count windows. Each output is a reduction over the members of
    the event's window, found with two sorted-search passes and expanded into (event, member)
    pairs: the cost per event is the size of its window.
    """

    def __init__(self, feats: Sequence[FeatureDef]) -> None:
        f0 = feats[0]
        self.kind = f0.window
        self.size_ms = int(f0.window_ms) if f0.window == "sliding" else 0  # type: ignore[arg-type]
        self.count = int(f0.count) if f0.window == "count" else 0  # type: ignore[arg-type]
        self.ttl_ms = int(f0.idle_ttl_ms) if f0.window == "count" else 0  # type: ignore[arg-type]
        self.num_fields, self.dist_fields, _ = _needs(feats)
        self.eid = np.zeros(0, dtype=np.int64)
        self.ts = np.zeros(0, dtype=np.int64)
        self.seq = np.zeros(0, dtype=np.int64)
        self.x = np.zeros((0, len(self.num_fields)))
        self.d = [np.empty(0, dtype=object) for _ in self.dist_fields]

    @property
    def n_windows(self) -> int:
        if self.eid.size == 0:
            return 0
        return int(np.count_nonzero(self.eid[1:] != self.eid[:-1])) + 1

    def live_eids(self) -> np.ndarray:
        return self.eid

    def _sort_keys(self, eid: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> np.ndarray:
        if self.kind == "sliding":
            return np.lexsort((seq, ts, eid))
        return np.lexsort((seq, eid))

    def apply(self, ctx: _Ctx, match: np.ndarray | None) -> dict[tuple[str, str | None], Any]:
        m = ctx.ts.shape[0]
        sel = np.arange(m) if match is None else np.flatnonzero(match)
        pos = ctx.pos[sel]
        assert ctx.eid is not None
        eid = np.concatenate([self.eid, ctx.eid[sel]])
        ts = np.concatenate([self.ts, ctx.ts[sel]])
        seq = np.concatenate([self.seq, ctx.seq[sel]])
        x_new = np.zeros((pos.size, len(self.num_fields)))
        for j, f in enumerate(self.num_fields):
            x_new[:, j] = ctx.num[f][pos]
        x = np.concatenate([self.x, x_new])
        d = [
            np.concatenate([old, np.asarray(ctx.raw[f], dtype=object)[pos]])
            for old, f in zip(self.d, self.dist_fields, strict=True)
        ]
        order = self._sort_keys(eid, ts, seq)
        eid, ts, seq, x = eid[order], ts[order], seq[order], x[order]
        d = [a[order] for a in d]
        self.eid, self.ts, self.seq, self.x, self.d = eid, ts, seq, x, d

        q_eid, q_ts, q_seq = ctx.eid, ctx.ts, ctx.seq
        if self.kind == "sliding":
            both = count_le(
                [eid, ts],
                [np.concatenate([q_eid, q_eid]), np.concatenate([q_ts - self.size_ms, q_ts])],
            )
            lo, hi = both[:m], both[m:]
        else:
            both = count_le(
                [eid, seq],
                [np.concatenate([q_eid, q_eid - 1]), np.concatenate([q_seq, q_seq * 0 + _I64_MAX])],
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
        pstart = (np.cumsum(n) - n)[ne]
        psize = n[ne]
        plast = pstart + psize - 1
        # arrival order of pairs (for folds) and time order (for first/last)
        if self.kind == "sliding":
            ao = np.lexsort((seq[mem], qof))
            to = None
        else:
            ao = None
            to = np.lexsort((seq[mem], ts[mem], qof))
        mem_ao = mem if ao is None else mem[ao]
        mem_to = mem if to is None else mem[to]
        cache: dict[tuple[str, str | None], Any] = {}

        def fold(values: np.ndarray) -> np.ndarray:
            out = np.zeros((m, *values.shape[1:]))
            if ne.size:
                prior = np.zeros((ne.size, *values.shape[1:]))
                run = segmented_accumulate(np.add, values, pstart, psize, prior)
                out[ne] = run[plast]
            return out

        def col(f: str) -> int:
            return self.num_fields.index(f)

        def get(name: str, field: str | None) -> np.ndarray:
            key = (name, field)
            if key in cache:
                return cache[key]
            val = np.full(m, np.nan)
            if name == "sum":
                val = fold(x[mem_ao, col(field)])  # type: ignore[arg-type]
            elif name == "var":
                with np.errstate(divide="ignore", invalid="ignore"):
                    mean = get("sum", field) / n
                    dev = x[mem_ao, col(field)] - mean[qof]  # type: ignore[arg-type]
                    val = fold(dev * dev) / (n - 1)
                val[n < 2] = np.nan
            elif name in ("min", "max") and ne.size:
                op = np.minimum if name == "min" else np.maximum
                val[ne] = op.reduceat(x[mem, col(field)], pstart)  # type: ignore[arg-type]
            elif name in ("first", "last") and ne.size:
                val[ne] = x[mem_to, col(field)][pstart if name == "first" else plast]  # type: ignore[arg-type]
            elif name == "distinct":
                val = np.zeros(m)
                if ne.size:
                    vals = d[self.dist_fields.index(field)]  # type: ignore[arg-type]
                    _, codes = np.unique(vals, return_inverse=True)
                    pc = codes[mem]
                    o = np.lexsort((pc, qof))
                    first = np.ones(o.size, dtype=bool)
                    first[1:] = (pc[o][1:] != pc[o][:-1]) | (qof[o][1:] != qof[o][:-1])
                    val = np.minimum(np.bincount(qof[o][first], minlength=m), DISTINCT_CAP)
                    val = val.astype(np.float64)
            elif name == "rate" and self.kind == "sliding":
                val = n * 1000.0 / self.size_ms
            elif name == "rate" and ne.size:
                # count windows: (n - 1) intervals over the span of the members' times
                tsm = ts[mem]
                span = np.maximum.reduceat(tsm, pstart) - np.minimum.reduceat(tsm, pstart)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = (psize - 1) * 1000.0 / span
                val[ne] = np.where(span > 0, r, np.nan)
            elif name == "since_prev" and ne.size:
                other = np.where(seq[mem] != q_seq[qof], ts[mem], _I64_MIN)
                mx = np.maximum.reduceat(other, pstart)
                val[ne] = np.where(mx == _I64_MIN, np.nan, (q_ts[ne] - mx).astype(np.float64))
            cache[key] = val
            return val

        return {
            ("__n__", None): n,
            ("__pos__", None): np.arange(m),
            ("__get__", None): get,
        }

    def evict(self, cutoff_ms: int) -> None:
        if self.eid.size == 0:
            return
        if self.kind == "sliding":
            keep = self.ts > cutoff_ms - self.size_ms
        else:
            gstart, gsize, gid = segment_bounds([self.eid])
            from_end = (gstart + gsize - 1)[gid] - np.arange(self.eid.size)
            newest = np.maximum.reduceat(self.ts, gstart)
            keep = (from_end < self.count) & (newest > cutoff_ms - self.ttl_ms)[gid]
        if keep.all():
            return
        self.eid, self.ts, self.seq, self.x = (
            self.eid[keep],
            self.ts[keep],
            self.seq[keep],
            self.x[keep],
        )
        self.d = [a[keep] for a in self.d]

    def snapshot(self, names: np.ndarray) -> dict[str, Any]:
        return {
            "entities": names[self.eid].tolist(),
            "ts": self.ts.tolist(),
            "seq": self.seq.tolist(),
            "values": {f: self.x[:, j].tolist() for j, f in enumerate(self.num_fields)},
            "distinct": {f: a.tolist() for f, a in zip(self.dist_fields, self.d, strict=True)},
        }

    def load(self, snap: Mapping[str, Any], eids: np.ndarray) -> None:
        eids = np.asarray(eids, dtype=np.int64)
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
        order = self._sort_keys(eids, ts, seq)
        self.eid, self.ts, self.seq, self.x = eids[order], ts[order], seq[order], x[order]
        self.d = [a[order] for a in d]


class FeatureEngine:
    """Per-entity windowed features of one input partition (see the module docstring).

    Parameters
    ----------
    features
        The features to compute; names must be unique. Features with the same window spec and
        filter share one state.
    grace_ms
        Allowed lateness, >= 0: an event is late when its time is more than ``grace_ms`` behind
        the watermark (the max event time seen before it).

    Raises
    ------
    SpecError
        If ``features`` is empty, has duplicate names, or ``grace_ms`` is not an integer >= 0.

    Examples
    --------
    >>> eng = FeatureEngine(
    ...     [FeatureDef("n_1m", None, "count", 60_000),
    ...      FeatureDef("amount_mean_1m", "amount", "mean", 60_000)],
    ...     grace_ms=1_000,
    ... )
    >>> out = eng.update(
    ...     np.array(["a", "b", "a", "a"], dtype=object),
    ...     np.array([0, 1_000, 59_999, 60_000]),
    ...     {"amount": np.array([1.0, 5.0, 3.0, 10.0])},
    ... )
    >>> out.values["n_1m"].tolist(), out.values["amount_mean_1m"].tolist()
    ([1.0, 1.0, 2.0, 1.0], [1.0, 5.0, 2.0, 10.0])
    >>> eng.watermark_ms, eng.n_windows
    (60000, 3)

    58 000 is more than 1 s behind the watermark, 59 500 is not and joins ``a``'s first window:

    >>> out = eng.update(
    ...     np.array(["a", "a"], dtype=object), np.array([58_000, 59_500]),
    ...     {"amount": np.array([7.0, 5.0])},
    ... )
    >>> out.late.tolist(), out.values["n_1m"].tolist(), out.values["amount_mean_1m"].tolist()
    ([True, False], [nan, 3.0], [nan, 3.0])
    >>> restored = FeatureEngine.restore(eng.features, eng.grace_ms, eng.snapshot())
    >>> restored.watermark_ms, restored.n_windows
    (60000, 3)

    Sliding, count and filtered features:

    >>> eng = FeatureEngine([
    ...     FeatureDef("max_10s", "amount", "max", 10_000, window="sliding"),
    ...     FeatureDef("last2_sum", "amount", "sum", None, window="count", count=2),
    ...     FeatureDef("buys_1m", None, "count", 60_000, where_field="type",
    ...                where_equals="buy"),
    ... ])
    >>> out = eng.update(
    ...     np.array(["a", "a", "a"], dtype=object), np.array([0, 5_000, 12_000]),
    ...     {"amount": np.array([3.0, 1.0, 2.0]),
    ...      "type": np.array(["buy", "view", "buy"], dtype=object)},
    ... )
    >>> [out.values[k].tolist() for k in ("max_10s", "last2_sum", "buys_1m")]
    [[3.0, 3.0, 2.0], [3.0, 4.0, 3.0], [1.0, 1.0, 2.0]]
    """

    def __init__(self, features: Sequence[FeatureDef], grace_ms: int = 0) -> None:
        feats = tuple(features)
        if not feats:
            raise SpecError("features: got an empty list; expected at least one FeatureDef")
        for f in feats:
            if not isinstance(f, FeatureDef):
                raise SpecError(f"features: got {f!r}; expected FeatureDef instances")
        names = [f.name for f in feats]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"features: names {dup} are used more than once; names must be unique")
        if isinstance(grace_ms, bool) or not isinstance(grace_ms, int | np.integer) or grace_ms < 0:
            raise SpecError(
                f"grace_ms: got {grace_ms!r}; expected an integer number of milliseconds >= 0"
            )
        self._features = feats
        self._grace_ms = int(grace_ms)
        self._watermark: int | None = None
        self._seq = 0
        self._registry = _Registry()
        groups: dict[tuple, list[FeatureDef]] = {}
        for f in feats:
            groups.setdefault(f.group_key, []).append(f)
        self._groups: list[tuple[list[FeatureDef], _TimeState | _SetState]] = []
        for fs in groups.values():
            cls = _TimeState if fs[0].window in ("tumbling", "hopping") else _SetState
            self._groups.append((fs, cls(fs)))
        self._per_entity = any(isinstance(st, _SetState) for _, st in self._groups)
        self._num, self._dist, _ = _needs(feats)
        self._where = sorted({f.where_field for f in feats if f.where_field is not None})
        self._tumbling_sizes = sorted(
            {int(f.window_ms) for f in feats if f.window == "tumbling"}  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ properties
    @property
    def features(self) -> tuple[FeatureDef, ...]:
        """The feature definitions, in output order."""
        return self._features

    @property
    def grace_ms(self) -> int:
        """Allowed lateness in milliseconds."""
        return self._grace_ms

    @property
    def watermark_ms(self) -> int | None:
        """Max event time seen so far, None before the first event."""
        return self._watermark

    @property
    def n_windows(self) -> int:
        """Live states: (entity, window) pairs for tumbling/hopping, entities for sliding/count."""
        return sum(st.n_windows for _, st in self._groups)

    @property
    def required_fields(self) -> tuple[str, ...]:
        """Columns `update` needs in ``columns``."""
        return tuple(sorted({*self._num, *self._dist, *self._where}))

    # ------------------------------------------------------------------ update
    def update(
        self, entities: np.ndarray, ts_ms: np.ndarray, columns: Mapping[str, np.ndarray]
    ) -> FeatureBatch:
        """Apply one batch of events (arrival order) and return their feature values.

        Parameters
        ----------
        entities
            Entity key of each event, an object array of ``str``.
        ts_ms
            Event time of each event, integer milliseconds.
        columns
            Column name -> array aligned with the events; must hold every field in
            `required_fields` (others are ignored). Numeric fields are converted to float64 and
            assumed finite; distinct and filter fields may be of any dtype (e.g. object ``str``).

        Returns
        -------
        FeatureBatch
            Per-event feature values, late flags and tumbling window starts.

        Raises
        ------
        SpecError
            If a column needed by a feature is missing.
        DriftlineError
            If the arrays are not 1-D of equal length or ``ts_ms`` is not integer.
        """
        ts = np.asarray(ts_ms)
        if ts.ndim != 1 or ts.dtype.kind not in "iu":
            raise DriftlineError(
                f"ts_ms: got shape {ts.shape} dtype {ts.dtype}; expected a 1-D integer array"
            )
        ts = ts.astype(np.int64, copy=False)
        n = ts.shape[0]
        ents = np.asarray(entities, dtype=object)
        if ents.shape != (n,):
            raise DriftlineError(f"entities: got shape {ents.shape}; expected ({n},) like ts_ms")
        num: dict[str, np.ndarray] = {}
        raw: dict[str, np.ndarray] = {}
        for name in self.required_fields:
            if name not in columns:
                users = [f.name for f in self._features if name in (f.source, f.where_field)]
                kind = "a numeric column" if name in self._num else "a column"
                raise SpecError(f"columns: {name!r} is missing; features {users} need it as {kind}")
            arr = np.asarray(columns[name])
            if arr.shape != (n,):
                raise DriftlineError(
                    f"columns[{name!r}]: got shape {arr.shape}; expected ({n},) like ts_ms"
                )
            if name in self._num:
                num[name] = arr.astype(np.float64, copy=False)
            raw[name] = arr

        values = {f.name: np.full(n, np.nan) for f in self._features}
        window_start = {size: tumbling_start_ms(ts, size) for size in self._tumbling_sizes}
        if n == 0:
            return FeatureBatch(values, np.zeros(0, dtype=bool), window_start)

        prev = self._watermark
        wm_before = np.empty(n, dtype=np.int64)
        wm_before[0] = ts[0] if prev is None else prev
        wm_before[1:] = ts[:-1]
        np.maximum.accumulate(wm_before, out=wm_before)
        late = ts < wm_before - self._grace_ms

        idx_ok = np.flatnonzero(~late)
        if idx_ok.size:
            ent_ok = ents[idx_ok]
            # Fixed-width unicode sorts in C, much faster than comparing Python str objects.
            uniq_ent, ent_inv = np.unique(ent_ok.astype(str), return_inverse=True)
            eids = None
            if self._per_entity:
                eids = self._registry.lookup(uniq_ent.tolist())[ent_inv]
            names = uniq_ent.astype(object)
            ctx = _Ctx(idx_ok, ent_inv, names, eids, ts[idx_ok], self._seq + idx_ok, num, raw)
            for fs, st in self._groups:
                match = None
                if fs[0].where_field is not None:
                    eq = raw[fs[0].where_field][idx_ok] == fs[0].where_equals
                    match = np.broadcast_to(np.asarray(eq, dtype=bool), idx_ok.shape)
                res = st.apply(ctx, match)
                n_out = res[("__n__", None)]
                pos = idx_ok[res[("__pos__", None)]]
                get = res[("__get__", None)]
                for f in fs:
                    values[f.name][pos] = _result(f.agg, n_out, get, f.source)

        self._seq += n
        batch_max = int(ts.max())
        self._watermark = batch_max if prev is None else max(prev, batch_max)
        cutoff = self._watermark - self._grace_ms
        for _, st in self._groups:
            st.evict(cutoff)
        if len(self._registry.ids) >= self._registry.next_gc:
            live = [st.live_eids() for _, st in self._groups]
            self._registry.gc(np.concatenate(live) if live else np.zeros(0, np.int64))
        return FeatureBatch(values, late, window_start)

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, Any]:
        """The full state as plain data (JSON-able: lists, dicts, ints, floats, strs, None).

        Returns
        -------
        dict
            ``{"version", "grace_ms", "watermark_ms", "seq", "features", "states"}`` with one
            entry in ``states`` per shared window state; floats round-trip exactly through
            `json` and `pickle` (distinct-value sets hold the column's own values).
        """
        names = self._registry.names
        return {
            "version": SNAPSHOT_VERSION,
            "grace_ms": self._grace_ms,
            "watermark_ms": self._watermark,
            "seq": self._seq,
            "features": [asdict(f) for f in self._features],
            "states": [
                {"features": [f.name for f in fs], **st.snapshot(names)} for fs, st in self._groups
            ],
        }

    @classmethod
    def restore(
        cls, features: Sequence[FeatureDef], grace_ms: int, state: Mapping[str, Any]
    ) -> FeatureEngine:
        """Build an engine from `snapshot` output; it continues exactly where that one stopped.

        Parameters
        ----------
        features, grace_ms
            Must equal those of the engine that took the snapshot.
        state
            A `snapshot` dict (possibly after a JSON or pickle round trip).

        Returns
        -------
        FeatureEngine
            A new engine.

        Raises
        ------
        SpecError
            If ``features`` or ``grace_ms`` differ from the snapshot's (state cannot be carried
            across a spec change).
        DriftlineError
            If ``state`` is not a valid snapshot.
        """
        eng = cls(features, grace_ms)
        try:
            version = state["version"]
            snap_feats = [dict(f) for f in state["features"]]
            snap_grace = state["grace_ms"]
            watermark = state["watermark_ms"]
            seq = state["seq"]
            states = list(state["states"])
        except (KeyError, TypeError) as exc:
            raise DriftlineError(f"state: not a FeatureEngine snapshot ({exc!r})") from exc
        if version != SNAPSHOT_VERSION:
            raise DriftlineError(
                f"state: snapshot version {version!r}; expected {SNAPSHOT_VERSION}"
            )
        if snap_feats != [asdict(f) for f in eng._features] or snap_grace != eng._grace_ms:
            raise SpecError(
                f"restore: the snapshot was taken with features {snap_feats} and grace_ms "
                f"{snap_grace}; got {[asdict(f) for f in eng._features]} and {eng._grace_ms}. "
                "Pass the same features and grace_ms (state is not carried across spec changes)"
            )
        for key, val in (("watermark_ms", watermark), ("seq", seq)):
            if (val is not None or key == "seq") and (
                isinstance(val, bool) or not isinstance(val, int)
            ):
                raise DriftlineError(f"state: {key} {val!r}; expected an int")
        eng._watermark = watermark
        eng._seq = seq
        if len(states) != len(eng._groups):
            raise DriftlineError(f"state: {len(states)} window states; expected {len(eng._groups)}")
        for (fs, st), snap in zip(eng._groups, states, strict=True):
            try:
                if list(snap["features"]) != [f.name for f in fs]:
                    raise DriftlineError(
                        f"state: window state for {snap['features']!r} "
                        f"does not match {[f.name for f in fs]}"
                    )
                ents = [str(e) for e in snap["entities"]]
                if isinstance(st, _TimeState):
                    st.load(snap, ents)
                    continue
                eids = np.zeros(0, dtype=np.int64)
                if ents:
                    uniq, inv = np.unique(np.array(ents, dtype=str), return_inverse=True)
                    eids = eng._registry.lookup(uniq.tolist())[inv]
                st.load(snap, eids)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise DriftlineError(f"state: bad window entry ({exc!r})") from exc
        return eng
