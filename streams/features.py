"""Per-entity running aggregates over tumbling event-time windows.

One `FeatureEngine` serves one input partition and sees its events in arrival order, a batch at
a time. For every event that is not late it emits, per feature, the aggregate over the events of
the same entity in the same tumbling window ``[start, start + window_ms)`` that arrived up to and
including this one (a running value, emitted per event).

Lateness: the watermark is the running maximum of event time (earlier events of the same batch
included). An event is late when ``ts_ms < watermark_before_it - grace_ms``; late events leave
the state untouched and get NaN feature values. After each batch, windows whose end is
``<= watermark - grace_ms`` are evicted: no non-late event can land in them any more, so the
state stays bounded.

The output does not depend on how the stream is cut into batches, bit for bit: running sums are
folded left to right per (entity, window) exactly like a per-event loop would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import Any

import numpy as np

from driftline.errors import DriftlineError, SpecError
from streams.windows import check_size_ms, tumbling_start_ms

__all__ = ["AGGREGATIONS", "FeatureBatch", "FeatureDef", "FeatureEngine"]

AGGREGATIONS = ("count", "sum", "mean")
SNAPSHOT_VERSION = 1
# Running sums of a group's first _LEVELS events are computed rank by rank over all groups at
# once; longer groups finish with one np.cumsum each. Bounds the Python loop to
# _LEVELS + n / _LEVELS iterations whatever the key skew.
_LEVELS = 32


@dataclass(frozen=True)
class FeatureDef:
    """One windowed feature.

    Parameters
    ----------
    name
        Output name, e.g. ``"amount_mean_1m"``.
    field
        Numeric source column; ``None`` only for ``agg == "count"`` (a count ignores it).
    agg
        ``"count"``, ``"sum"`` or ``"mean"``.
    window_ms
        Tumbling window size in milliseconds, > 0.

    Raises
    ------
    SpecError
        If any of the above does not hold.

    Examples
    --------
    >>> FeatureDef("amount_sum_1m", "amount", "sum", 60_000).window_ms
    60000
    >>> FeatureDef("amount_sum_1m", None, "sum", 60_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: feature 'amount_sum_1m': agg 'sum' needs a numeric source field; ...
    """

    name: str
    field: str | None
    agg: str
    window_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"feature name: got {self.name!r}; expected a non-empty string")
        if self.agg not in AGGREGATIONS:
            raise SpecError(
                f"feature {self.name!r}: agg {self.agg!r} is not supported; "
                f"expected one of {', '.join(map(repr, AGGREGATIONS))}"
            )
        if self.field is None:
            if self.agg != "count":
                raise SpecError(
                    f"feature {self.name!r}: agg {self.agg!r} needs a numeric source field; "
                    "field=None is only allowed for agg='count'"
                )
        elif not isinstance(self.field, str) or not self.field:
            raise SpecError(
                f"feature {self.name!r}: field {self.field!r}; expected a non-empty column name "
                "or None"
            )
        check_size_ms(self.window_ms, f"feature {self.name!r}: window_ms")


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
        Window size -> ``int64`` start of the window containing each event (late ones too).
    """

    values: dict[str, np.ndarray]
    late: np.ndarray
    window_start_ms: dict[int, np.ndarray]


class _WindowState:
    """Running count and per-field sums of every live (entity, window start) of one window size.

    Rows of preallocated arrays; ``index`` maps ``(entity, start_ms)`` to a row, ``keys`` maps a
    row back to its key, freed rows are reused. Dict work is done through C-level ``map`` calls
    (one pass per batch over its distinct groups).
    """

    def __init__(self, size_ms: int, fields: tuple[str, ...]) -> None:
        self.size_ms = size_ms
        self.fields = fields
        self.index: dict[tuple[str, int], int] = {}
        self.free: list[int] = []
        self.n_rows = 0
        self.keys = np.empty(0, dtype=object)
        self.counts = np.zeros(0, dtype=np.int64)
        self.sums = np.zeros((0, len(fields)), dtype=np.float64)
        self.starts = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)

    def lookup(self, keys: list[tuple[str, int]]) -> np.ndarray:
        """Row of each key, -1 where unknown."""
        return np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def _grow(self, need: int) -> None:
        cap = self.counts.shape[0]
        if need <= cap:
            return
        grow = max(need, 2 * cap, 1024) - cap
        self.keys = np.concatenate([self.keys, np.empty(grow, dtype=object)])
        self.counts = np.concatenate([self.counts, np.zeros(grow, dtype=np.int64)])
        self.sums = np.concatenate([self.sums, np.zeros((grow, len(self.fields)))])
        self.starts = np.concatenate([self.starts, np.zeros(grow, dtype=np.int64)])
        self.live = np.concatenate([self.live, np.zeros(grow, dtype=bool)])

    def allocate(self, keys: list[tuple[str, int]], starts: np.ndarray) -> np.ndarray:
        """Rows (zeroed counts and sums) for new keys; ``starts`` are their window starts."""
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
        self.keys[rows] = np.fromiter(keys, dtype=object, count=k)
        self.starts[rows] = starts
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
        self.counts[rows] = 0
        self.sums[rows] = 0.0
        self.free.extend(rows.tolist())

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.live[: self.n_rows])


def _segmented_running_sum(
    x: np.ndarray, gstart: np.ndarray, gsize: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """Running sums of ``x`` (rows sorted by group, arrival order within) restarting per group.

    Group ``g`` occupies rows ``gstart[g] : gstart[g] + gsize[g]`` and starts from ``prior[g]``.
    Each output row is ``previous + x`` in arrival order, so the float result is exactly that of
    a per-event left fold, independent of what else is in the batch.
    """
    out = np.empty_like(x)
    out[gstart] = prior + x[gstart]
    max_size = int(gsize.max())
    if max_size == 1:
        return out
    by_size = np.argsort(-gsize, kind="stable")
    starts_desc = gstart[by_size]
    sizes_asc = gsize[by_size][::-1]
    levels = min(max_size, _LEVELS)
    for r in range(1, levels):
        n_longer = sizes_asc.size - int(np.searchsorted(sizes_asc, r, side="right"))
        p = starts_desc[:n_longer] + r
        out[p] = out[p - 1] + x[p]
    for g in np.flatnonzero(gsize > levels).tolist():
        a = int(gstart[g]) + levels - 1
        b = int(gstart[g] + gsize[g])
        seg = x[a:b].copy()
        seg[0] = out[a]
        out[a:b] = np.cumsum(seg, axis=0)
    return out


class FeatureEngine:
    """Per-entity running count / sum / mean over tumbling event-time windows.

    Parameters
    ----------
    features
        The features to compute; names must be unique. Features with the same ``window_ms``
        share one state (a count plus one running sum per source field).
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
        self._states: dict[int, _WindowState] = {}
        self._by_size: dict[int, list[FeatureDef]] = {}
        for f in feats:
            self._by_size.setdefault(f.window_ms, []).append(f)
        for size, fs in self._by_size.items():
            fields = tuple(sorted({f.field for f in fs if f.agg != "count" and f.field}))
            self._states[size] = _WindowState(size, fields)

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
        """Live (entity, window size, window start) states."""
        return sum(len(st.index) for st in self._states.values())

    @property
    def required_fields(self) -> tuple[str, ...]:
        """Columns `update` needs in ``columns``."""
        return tuple(sorted({f for st in self._states.values() for f in st.fields}))

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
            Source column name -> numeric array aligned with the events; must hold every field
            used by a sum or mean feature (others are ignored). Values are assumed finite.

        Returns
        -------
        FeatureBatch
            Per-event feature values, late flags and window starts.

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
        cols: dict[str, np.ndarray] = {}
        for name in self.required_fields:
            if name not in columns:
                users = [f.name for f in self._features if f.field == name and f.agg != "count"]
                raise SpecError(
                    f"columns: {name!r} is missing; features {users} need it as a numeric column"
                )
            col = np.asarray(columns[name], dtype=np.float64)
            if col.shape != (n,):
                raise DriftlineError(
                    f"columns[{name!r}]: got shape {col.shape}; expected ({n},) like ts_ms"
                )
            cols[name] = col

        values = {f.name: np.full(n, np.nan) for f in self._features}
        window_start = {size: tumbling_start_ms(ts, size) for size in self._states}
        if n == 0:
            return FeatureBatch(values, np.zeros(0, dtype=bool), window_start)

        prev = self._watermark
        wm_before = np.empty(n, dtype=np.int64)
        wm_before[0] = ts[0] if prev is None else prev
        wm_before[1:] = ts[:-1]
        np.maximum.accumulate(wm_before, out=wm_before)
        late = ts < wm_before - self._grace_ms

        idx_ok = np.flatnonzero(~late)
        m = idx_ok.size
        if m:
            ent_ok = ents[idx_ok]
            # Fixed-width unicode sorts in C, much faster than comparing Python str objects.
            uniq_ent, ent_inv = np.unique(ent_ok.astype(str), return_inverse=True)
            for size, st in self._states.items():
                self._apply(st, window_start[size][idx_ok], ent_inv, uniq_ent, idx_ok, cols, values)

        batch_max = int(ts.max())
        self._watermark = batch_max if prev is None else max(prev, batch_max)
        cutoff = self._watermark - self._grace_ms
        for st in self._states.values():
            st.evict(cutoff)
        return FeatureBatch(values, late, window_start)

    def _apply(
        self,
        st: _WindowState,
        starts: np.ndarray,
        ent_inv: np.ndarray,
        uniq_ent: np.ndarray,
        idx_ok: np.ndarray,
        cols: Mapping[str, np.ndarray],
        values: dict[str, np.ndarray],
    ) -> None:
        m = idx_ok.size
        order = np.lexsort((starts, ent_inv))  # stable: arrival order within each group
        e_s = ent_inv[order]
        s_s = starts[order]
        boundary = np.empty(m, dtype=bool)
        boundary[0] = True
        np.not_equal(e_s[1:], e_s[:-1], out=boundary[1:])
        boundary[1:] |= s_s[1:] != s_s[:-1]
        gstart = np.flatnonzero(boundary)
        gsize = np.diff(np.append(gstart, m))
        gid = np.cumsum(boundary) - 1
        rank = np.arange(m) - gstart[gid]

        g_starts = s_s[gstart]
        keys = list(zip(uniq_ent[e_s[gstart]].tolist(), g_starts.tolist(), strict=True))
        rows = st.lookup(keys)
        known = rows >= 0
        prior_count = np.zeros(gstart.size, dtype=np.int64)
        prior_count[known] = st.counts[rows[known]]
        count_s = (prior_count[gid] + rank + 1).astype(np.float64)

        pos = idx_ok[order]  # event position of each sorted row
        sums_s = None
        if st.fields:
            x = np.column_stack([cols[f] for f in st.fields])[pos]
            prior_sums = np.zeros((gstart.size, len(st.fields)))
            prior_sums[known] = st.sums[rows[known]]
            sums_s = _segmented_running_sum(x, gstart, gsize, prior_sums)

        new = np.flatnonzero(~known)
        if new.size:
            rows[new] = st.allocate([keys[i] for i in new.tolist()], g_starts[new])
        st.counts[rows] = prior_count + gsize
        if sums_s is not None:
            st.sums[rows] = sums_s[gstart + gsize - 1]

        for f in self._by_size[st.size_ms]:
            if f.agg == "count":
                values[f.name][pos] = count_s
                continue
            assert sums_s is not None
            col = sums_s[:, st.fields.index(f.field)]  # type: ignore[arg-type]
            values[f.name][pos] = col if f.agg == "sum" else col / count_s

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, Any]:
        """The full state as plain data (JSON-able: lists, ints, floats, strs, None).

        Returns
        -------
        dict
            ``{"version", "grace_ms", "watermark_ms", "features", "windows"}``; floats
            round-trip exactly through `json` and `pickle`.
        """
        windows = []
        for size, st in self._states.items():
            rows = st.live_rows()
            windows.append(
                {
                    "window_ms": size,
                    "entities": [key[0] for key in st.keys[rows].tolist()],
                    "starts": st.starts[rows].tolist(),
                    "counts": st.counts[rows].tolist(),
                    "sums": {f: st.sums[rows, j].tolist() for j, f in enumerate(st.fields)},
                }
            )
        return {
            "version": SNAPSHOT_VERSION,
            "grace_ms": self._grace_ms,
            "watermark_ms": self._watermark,
            "features": [asdict(f) for f in self._features],
            "windows": windows,
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
            windows = list(state["windows"])
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
        if watermark is not None and (
            isinstance(watermark, bool) or not isinstance(watermark, int)
        ):
            raise DriftlineError(f"state: watermark_ms {watermark!r}; expected an int or None")
        eng._watermark = watermark
        seen = set()
        for w in windows:
            try:
                size = w["window_ms"]
                st = eng._states[size]
                ents = list(w["entities"])
                starts = [int(s) for s in w["starts"]]
                counts = np.asarray(w["counts"], dtype=np.int64)
                sums = [np.asarray(w["sums"][f], dtype=np.float64) for f in st.fields]
            except (KeyError, TypeError, ValueError) as exc:
                raise DriftlineError(f"state: bad window entry ({exc!r})") from exc
            k = len(ents)
            if any(len(a) != k for a in (starts, counts, *sums)) or size in seen:
                raise DriftlineError(f"state: inconsistent window entry for window_ms={size}")
            seen.add(size)
            if not k:
                continue
            rows = st.allocate(list(zip(ents, starts, strict=True)), np.asarray(starts))
            st.counts[rows] = counts
            for j, col in enumerate(sums):
                st.sums[rows, j] = col
        return eng
