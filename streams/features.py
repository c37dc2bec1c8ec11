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
  with an earlier time is included in later outputs only. With ``idle_ttl_ms`` only events with
  time ``> ts - idle_ttl_ms`` count too (an entity idle that long starts afresh).
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
sliding events with time ``<= watermark - grace_ms - min(window_ms, idle_ttl_ms)``, count-window
entities whose events are all ``<= watermark - grace_ms - idle_ttl_ms``), so the state stays
bounded and eviction never changes an output. The entity registry forgets an entity once its
newest event is older than the longest of these horizons (checked each time the cutoff has moved
on by 1/16 of it). With ``max_entities``, after each batch the least recently seen entities above
the bound lose all their state (a later event of theirs starts from empty windows): the one
eviction that changes outputs.

The output does not depend on how the stream is cut into batches, bit for bit, nor on a
snapshot/restore at a batch boundary: running sums are folded left to right in arrival order per
group, set aggregates (sliding, count) are folded over the window's members in arrival order.

Where the parts live: `streams.feature_defs` (`FeatureDef`, `FeatureBatch`),
`streams.feature_state` (what a window state takes and gives: `BatchEvents`, `WindowColumns`),
`streams.feature_time_state` (tumbling, hopping), `streams.feature_member_state` (sliding,
count), `streams.feature_registry` (entity ids), `streams.feature_snapshot` (the snapshot format).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.aggregators import AGGREGATIONS
from driftline.streams.feature_defs import FeatureBatch, FeatureDef, needed_columns
from driftline.streams.feature_member_state import MemberWindowState
from driftline.streams.feature_registry import EntityRegistry, factorize
from driftline.streams.feature_snapshot import EngineSnapshot
from driftline.streams.feature_state import BatchEvents, KeyedChanges, WindowGroup
from driftline.streams.feature_time_state import TimeWindowState
from driftline.streams.windows import tumbling_start_ms

__all__ = [
    "AGGREGATIONS",
    "EVICTION_REASONS",
    "KEYED_KIND",
    "FeatureBatch",
    "FeatureDef",
    "FeatureEngine",
]

#: The per-key layout of each window state: ``"w"`` one record per (entity, window start),
#: ``"m"`` one record per entity (its member events).
KEYED_KIND: dict[type, str] = {TimeWindowState: "w", MemberWindowState: "m"}


#: Why entities leave the windows (`FeatureEngine.evicted`).
EVICTION_REASONS = ("idle", "max_entities")


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
    max_entities
        At most this many entities held after each batch (None: no bound). Above it, the least
        recently seen entities (by the arrival of their latest event) lose all their state in
        every window; see `evicted`.

    Raises
    ------
    SpecError
        If ``features`` is empty, has duplicate names, ``grace_ms`` is not an integer >= 0 or
        ``max_entities`` not an integer >= 1.

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

    def __init__(
        self, features: Sequence[FeatureDef], grace_ms: int = 0, max_entities: int | None = None
    ) -> None:
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
        if max_entities is not None and (
            isinstance(max_entities, bool)
            or not isinstance(max_entities, int | np.integer)
            or max_entities < 1
        ):
            raise SpecError(f"max_entities: got {max_entities!r}; expected an integer >= 1 or None")
        self._features = feats
        self._grace_ms = int(grace_ms)
        self._max_entities = None if max_entities is None else int(max_entities)
        #: entities evicted so far, by reason (see `evicted`)
        self._evicted = dict.fromkeys(EVICTION_REASONS, 0)
        self._evicted_seen = dict.fromkeys(EVICTION_REASONS, 0)  # as of `drain_evicted`
        self._idle_cutoff: int | None = None
        self._watermark: int | None = None
        self._seq = 0
        self._registry = EntityRegistry()
        by_key: dict[tuple, list[FeatureDef]] = {}
        for f in feats:
            by_key.setdefault(f.group_key, []).append(f)
        self._groups: list[WindowGroup] = []
        for fs in by_key.values():
            kind = TimeWindowState if fs[0].window in ("tumbling", "hopping") else MemberWindowState
            self._groups.append(WindowGroup(fs, kind(fs)))
        for g in self._groups:
            g.state.registry = self._registry
        #: an entity whose newest event is this far behind the cutoff holds no state
        self._idle_ms = max(g.state.idle_ms for g in self._groups)
        #: restored from a snapshot holding the entities inline (not per key): the changelog
        #: has no per-key records of them yet, so `track_changes` marks them all changed
        self._inline_restored = False
        self._num, self._dist = needed_columns(feats)
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
        return sum(g.state.n_windows for g in self._groups)

    @property
    def n_entities(self) -> int:
        """Entities held: those seen less than the longest window (or idle TTL) behind the
        cutoff (watermark minus grace), and not evicted."""
        return len(self._registry.ids)

    @property
    def max_entities(self) -> int | None:
        return self._max_entities

    @property
    def evicted(self) -> dict[str, int]:
        """Entities dropped so far, by reason: ``idle`` (no event for the longest window or
        idle TTL plus grace: every window had already let it go) and ``max_entities`` (the
        least recently seen ones above the bound, with all their state)."""
        return dict(self._evicted)

    def drain_evicted(self) -> dict[str, int]:
        """`evicted` since the last call (for a counter metric)."""
        new = {r: k - self._evicted_seen[r] for r, k in self._evicted.items()}
        self._evicted_seen = dict(self._evicted)
        return new

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
            # no fixed-width str array: its size is the batch times the longest id
            uniq_ent, ent_inv = factorize(list(map(str, ent_ok.tolist())))
            eids = self._registry.lookup(uniq_ent)[ent_inv]
            self._registry.touch(eids, ts[idx_ok], self._seq + idx_ok)
            names = np.empty(len(uniq_ent), dtype=object)
            names[:] = uniq_ent
            events = BatchEvents(
                idx_ok, ent_inv, names, eids, ts[idx_ok], self._seq + idx_ok, num, raw
            )
            for group in self._groups:
                cols = group.state.apply(events, group.match(raw, idx_ok))
                pos = idx_ok[cols.positions]
                for f in group.features:
                    values[f.name][pos] = cols.values(f.agg, f.source)

        self._seq += n
        batch_max = int(ts.max())
        self._watermark = batch_max if prev is None else max(prev, batch_max)
        cutoff = self._watermark - self._grace_ms
        for g in self._groups:
            g.state.evict(cutoff)
        self._bound_entities(cutoff)
        return FeatureBatch(values, late, window_start)

    def _bound_entities(self, cutoff: int) -> None:
        """Forget the entities idle past every window, then, above ``max_entities``, evict the
        least recently seen (oldest latest arrival; ties: oldest newest event time, then id).

        The idle check scans the registry, so it runs once the cutoff has moved on by 1/16 of
        the longest window since the last one (an idle entity is forgotten that much later).
        """
        reg = self._registry
        step = max(1, self._idle_ms // 16)
        if self._idle_cutoff is None or cutoff >= self._idle_cutoff + step:
            self._idle_cutoff = cutoff
            idle = np.flatnonzero(reg.used & (reg.max_ts <= cutoff - self._idle_ms))
            reg.drop(idle)  # their windows are gone already (`WindowState.idle_ms`)
            self._evicted["idle"] += int(idle.size)
        cap = self._max_entities
        if cap is None or len(reg.ids) <= cap:
            return
        live = reg.live()
        k = live.size - cap
        seq = reg.last_seq[live]
        # the k oldest arrivals in O(entities); a full sort only when ties straddle the cut
        pick = np.argpartition(seq, k - 1)[:k]
        last = seq[pick].max()
        if np.count_nonzero(seq == last) != np.count_nonzero(seq[pick] == last):
            pick = np.lexsort((live, reg.max_ts[live], seq))[:k]
        victims = live[pick]
        mask = np.zeros(reg.used.shape[0], dtype=bool)
        mask[victims] = True
        for g in self._groups:
            g.state.drop_entities(mask)
        reg.drop(victims)
        self._evicted["max_entities"] += int(victims.size)

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
        return EngineSnapshot(
            self._grace_ms,
            self._watermark,
            self._seq,
            [asdict(f) for f in self._features],
            [{"features": g.names, **g.state.snapshot(names)} for g in self._groups],
        ).to_data()

    # ------------------------------------------------------------------ per-key state
    def track_changes(self) -> None:
        """Collect, from now on, the keys whose state changes (for `drain_changes`); after a
        restore from an inline snapshot every live key counts as changed."""
        for g in self._groups:
            g.state.tracking = True
            if self._inline_restored:
                g.state.mark_all_dirty()
        self._inline_restored = False

    def drain_changes(self) -> list[KeyedChanges]:
        """Per window state (in `snapshot` order): the keys changed since the last call, and
        those evicted since.

        Raises
        ------
        DriftlineError
            If `track_changes` was not called: what changed before is not known.
        """
        if not all(g.state.tracking for g in self._groups):
            raise DriftlineError(
                "FeatureEngine.drain_changes: call track_changes() first (before the batches "
                "whose changes are to be drained)"
            )
        return [g.state.drain() for g in self._groups]

    def snapshot_keyed(self) -> dict[str, Any]:
        """`snapshot` without the per-key data: each state entry says its kind and how many
        keys it holds (``{"features", "keyed": {"kind", "n"}}``); the keys' rows are stored
        apart (`drain_changes`) and handed back to `restore` under ``"rows"``."""
        return EngineSnapshot(
            self._grace_ms,
            self._watermark,
            self._seq,
            [asdict(f) for f in self._features],
            [self._keyed_entry(g) for g in self._groups],
        ).to_data()

    @staticmethod
    def _keyed_entry(g: WindowGroup) -> dict[str, Any]:
        keyed = {"kind": KEYED_KIND[type(g.state)], "n": g.state.n_keys}
        return {"features": g.names, "keyed": keyed}

    @classmethod
    def restore(
        cls,
        features: Sequence[FeatureDef],
        grace_ms: int,
        state: Mapping[str, Any],
        max_entities: int | None = None,
    ) -> FeatureEngine:
        """Build an engine from `snapshot` output; it continues exactly where that one stopped.

        Parameters
        ----------
        features, grace_ms
            Must equal those of the engine that took the snapshot.
        max_entities
            As for the constructor (may differ from the snapshot's engine; a smaller bound
            evicts at the next batch).
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
        KeyedRowError
            If a per-key row (a ``"keyed"`` entry's ``"rows"``) does not fit its state.
        """
        eng = cls(features, grace_ms, max_entities)
        snap = EngineSnapshot.parse(state, eng._features, eng._grace_ms)
        eng._watermark = snap.watermark_ms
        eng._seq = snap.seq
        if len(snap.states) != len(eng._groups):
            raise DriftlineError(
                f"state: {len(snap.states)} window states; expected {len(eng._groups)}"
            )
        for group, entry in zip(eng._groups, snap.states, strict=True):
            try:
                if list(entry["features"]) != group.names:
                    raise DriftlineError(
                        f"state: window state for {entry['features']!r} "
                        f"does not match {group.names}"
                    )
                keyed = entry.get("keyed")
                if keyed is not None:
                    kind = KEYED_KIND[type(group.state)]
                    if keyed.get("kind") != kind:
                        raise DriftlineError(
                            f"state: window state for {group.names} is kept per key as "
                            f"{keyed.get('kind')!r}; expected {kind!r}"
                        )
                    group.state.load_rows(entry["rows"])
                    continue
                ents = [str(e) for e in entry["entities"]]
                group.state.load(entry, ents, eng._registry)
                eng._inline_restored = True
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise DriftlineError(f"state: bad window entry ({exc!r})") from exc
        for g in eng._groups:  # when each restored entity was last seen, as far as known
            eids, ts, seq = g.state.extent()
            eng._registry.touch(eids, ts, seq)
        return eng
