"""The interface between `streams.features.FeatureEngine` and its window states.

Per batch the engine hands each `WindowState` the batch's non-late events (`BatchEvents`) and
gets back a `WindowColumns`: the per-output-row quantities of that state (count, running sums,
extremes, distinct counts, ...) from which every feature of the state reads its values with
`WindowColumns.values`. Features with the same window and filter share one state, a
`WindowGroup`.

The two kinds of state: `streams.feature_time_state` (tumbling and hopping windows: running
aggregates per (entity, window start)) and `streams.feature_member_state` (sliding and count
windows: the member events per entity).
"""

from __future__ import annotations

import functools
import gc
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.feature_defs import FeatureDef
from driftline.streams.feature_registry import EntityRegistry

__all__ = [
    "I64_MAX",
    "I64_MIN",
    "BatchEvents",
    "KeyedChanges",
    "KeyedRow",
    "KeyedRowError",
    "KeyedRows",
    "WindowColumns",
    "WindowGroup",
    "WindowState",
    "first_occurrences",
    "gc_paused",
    "keyed_columns",
    "memoized",
]

I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min


@dataclass
class BatchEvents:
    """One batch's non-late events, in arrival order."""

    pos: np.ndarray  # event position in the batch
    code: np.ndarray  # batch-local entity code (index into ``names``)
    names: np.ndarray  # the batch's distinct entity strings, sorted
    eid: np.ndarray | None  # registry ids (only when some state is per entity)
    ts: np.ndarray
    seq: np.ndarray  # arrival sequence number over the engine's life
    num: dict[str, np.ndarray]  # numeric columns (full batch)
    raw: dict[str, np.ndarray]  # distinct / filter columns (full batch)


@dataclass
class KeyedChanges:
    """What changed in one window state since it was last drained, one entry per key.

    ``kind`` is ``"w"`` (tumbling/hopping: keys are ``(entity, window start)``) or ``"m"``
    (sliding/count: keys are entity strings); ``rows[i]`` is the plain-data state of
    ``keys[i]``; ``gone`` are the keys that no longer hold anything (evicted).
    """

    kind: str
    keys: list[Any]
    rows: list[Any]
    gone: list[Any]


#: One key's saved state as a restore hands it back: (its changelog key, the key as
#: `KeyedChanges` gives it, its row).
KeyedRow = tuple[bytes, Any, Any]


class KeyedRows(Sequence[KeyedRow]):
    """`KeyedRow` s kept as three parallel lists (changelog keys, keys, rows): what a restore
    of a million keys hands a state without building a tuple per key.

    Examples
    --------
    >>> rows = KeyedRows([b"k1", b"k2"], [("a", 0), ("b", 0)], [[1], [2]])
    >>> len(rows), rows[1], list(rows[:1])
    (2, (b'k2', ('b', 0), [2]), [(b'k1', ('a', 0), [1])])
    """

    __slots__ = ("idents", "keys", "values")

    def __init__(
        self, keys: list[bytes] | None = None, idents: list[Any] | None = None,
        values: list[Any] | None = None,
    ) -> None:  # fmt: skip
        self.keys: list[bytes] = [] if keys is None else keys
        self.idents: list[Any] = [] if idents is None else idents
        self.values: list[Any] = [] if values is None else values
        if not len(self.keys) == len(self.idents) == len(self.values):
            raise ValueError("KeyedRows: keys, idents and values differ in length")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [*zip(self.keys[i], self.idents[i], self.values[i], strict=True)]
        return self.keys[i], self.idents[i], self.values[i]

    def extend(self, keys: list[bytes], idents: list[Any], values: list[Any]) -> None:
        """Append parallel lists of rows."""
        self.keys += keys
        self.idents += idents
        self.values += values


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (and back on after, if it was on).

    Decoding and loading a million saved rows allocates millions of lists and tuples, none of
    them in a cycle; with the collector on, it scans them again and again while they are made
    (about half of a restore's CPU time at a million keys)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def keyed_columns(rows: Sequence[KeyedRow]) -> tuple[list[bytes], list[Any], list[Any]]:
    """(changelog keys, keys, rows) of ``rows`` as three lists (no copy for `KeyedRows`)."""
    if isinstance(rows, KeyedRows):
        return rows.keys, rows.idents, rows.values
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


class KeyedRowError(DriftlineError):
    """A saved row a window state cannot load; ``key`` names its changelog record."""

    def __init__(self, key: bytes, problem: str) -> None:
        super().__init__(f"state: {problem}")
        self.key = key
        self.problem = problem


_Q = TypeVar("_Q", bound="WindowColumns")


def memoized(
    method: Callable[[_Q, str | None], np.ndarray],
) -> Callable[[_Q, str | None], np.ndarray]:
    """Compute a `WindowColumns` quantity once per field: features sharing it (a mean and a sum
    of one column, a var and a std) read the same array."""
    name = method.__name__

    @functools.wraps(method)
    def once(self: _Q, field: str | None = None) -> np.ndarray:
        key = (name, field)
        memo = self._memo
        if key not in memo:
            memo[key] = method(self, field)
        return memo[key]

    return once


class WindowColumns(ABC):
    """A window state's quantities per output row of one batch.

    Attributes
    ----------
    n
        Number of (matching) events in each output row's window.
    positions
        Each output row's event, as an index into the batch's non-late events.
    """

    def __init__(self, n: np.ndarray, positions: np.ndarray) -> None:
        self.n = n
        self.positions = positions
        self._memo: dict[tuple[str, str | None], np.ndarray] = {}

    def values(self, agg: str, field: str | None) -> np.ndarray:
        """The feature ``agg`` of ``field`` per output row (empty windows: see the aggregations)."""
        n = self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            if agg == "count":
                return n.astype(np.float64)
            if agg == "rate":
                return self.rate()
            if agg == "since_prev":
                return self.since_prev()
            if agg == "sum":
                return self.sum(field)
            if agg == "mean":
                return self.sum(field) / n
            if agg == "var":
                return self.var(field)
            if agg == "std":
                return np.sqrt(self.var(field))
            if agg == "distinct":
                return self.distinct(field)
            extreme = {"min": self.min, "max": self.max, "first": self.first, "last": self.last}
            if agg in extreme:
                return np.where(n > 0, extreme[agg](field), np.nan)
        raise AssertionError(agg)  # pragma: no cover

    # The quantities, one float64 per output row; the subclasses memoize them per field.
    @abstractmethod
    def sum(self, field: str | None) -> np.ndarray: ...

    @abstractmethod
    def var(self, field: str | None) -> np.ndarray:
        """Sample variance; NaN below two events."""

    @abstractmethod
    def min(self, field: str | None) -> np.ndarray: ...

    @abstractmethod
    def max(self, field: str | None) -> np.ndarray: ...

    @abstractmethod
    def first(self, field: str | None) -> np.ndarray: ...

    @abstractmethod
    def last(self, field: str | None) -> np.ndarray: ...

    @abstractmethod
    def distinct(self, field: str | None) -> np.ndarray: ...

    @abstractmethod
    def rate(self, field: str | None = None) -> np.ndarray: ...

    @abstractmethod
    def since_prev(self, field: str | None = None) -> np.ndarray: ...


class WindowState(ABC):
    """The state of one window spec and filter, shared by its features."""

    #: the feature definitions the state was built for
    feats: tuple[FeatureDef, ...]

    @abstractmethod
    def apply(self, events: BatchEvents, match: np.ndarray | None) -> WindowColumns:
        """Fold the batch in (only the events where ``match``, all when None) and return the
        quantities of the output rows."""

    @abstractmethod
    def evict(self, cutoff_ms: int) -> None:
        """Drop what no event at or after ``cutoff_ms`` (watermark minus grace) can reach."""

    @property
    @abstractmethod
    def n_windows(self) -> int: ...

    @property
    @abstractmethod
    def idle_ms(self) -> int:
        """`evict` has dropped every entity whose newest event is at or more than this far
        behind the cutoff (tumbling/hopping: the window length; sliding: the window, or
        ``idle_ttl_ms`` if shorter; count: ``idle_ttl_ms``)."""

    @abstractmethod
    def drop_entities(self, drop: np.ndarray) -> None:
        """Drop all state of the entities ``drop`` marks (a bool mask over registry ids); their
        keys are drained as gone."""

    @abstractmethod
    def extent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(entity id, latest event time, arrival seq) per item held: what a restored state
        tells of when each entity was last seen (upper bounds on time)."""

    @abstractmethod
    def snapshot(self, names: np.ndarray) -> dict[str, Any]:
        """Plain data; ``names`` maps registry ids to entity strings."""

    @abstractmethod
    def load(self, snap: Mapping[str, Any], entities: list[str], registry: EntityRegistry) -> None:
        """Restore from `snapshot` output into a fresh state (``entities`` as strings)."""

    # Per-key changes, for a changelog that stores one record per key and writes only what
    # changed (`KeyedChanges`); `tracking` is off until a worker turns it on.
    tracking: bool

    @property
    @abstractmethod
    def n_keys(self) -> int:
        """Keys holding state now (one changelog record each)."""

    @abstractmethod
    def mark_all_dirty(self) -> None:
        """Every live key changed (the next `drain` gives them all)."""

    @abstractmethod
    def drain(self) -> KeyedChanges:
        """What changed since the last call (tracking on)."""

    def load_rows(self, rows: Sequence[KeyedRow]) -> None:
        """Restore a fresh state from the rows `drain` gave (the newest of each key).

        Raises
        ------
        KeyedRowError
            Naming the first row that is not of this state's layout, or that does not load
            (a bad value: found by loading each row alone into a fresh state like this one).
        """
        if not len(rows):  # a state with no live keys when the snapshot was taken
            return
        try:
            with gc_paused():
                self._load_rows(rows)
        except (TypeError, ValueError, IndexError) as e:
            self._check_layout(rows)
            if len(rows) == 1:
                raise KeyedRowError(rows[0][0], f"a value of this record is malformed ({e})") from e
            for row in rows:
                type(self)(self.feats).load_rows([row])  # raises for the bad one
            raise KeyedRowError(rows[0][0], f"the records do not load together ({e})") from e

    @abstractmethod
    def _load_rows(self, rows: Sequence[KeyedRow]) -> None:
        """`load_rows` in bulk: TypeError, ValueError or IndexError if a row is bad."""

    @abstractmethod
    def _check_layout(self, rows: Sequence[KeyedRow]) -> None:
        """Raise `KeyedRowError` for the first row not of this state's layout."""


@dataclass
class WindowGroup:
    """Features with one window spec and filter, and their shared state."""

    features: list[FeatureDef]
    state: WindowState

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def match(self, raw: Mapping[str, np.ndarray], idx: np.ndarray) -> np.ndarray | None:
        """Which events ``idx`` of the batch pass the filter (None without a filter)."""
        f0 = self.features[0]
        if f0.where_field is None:
            return None
        eq = raw[f0.where_field][idx] == f0.where_equals
        return np.broadcast_to(np.asarray(eq, dtype=bool), idx.shape)


def first_occurrences(groups: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """True at the first row (in row order) of each distinct ``(groups, codes)`` pair.

    >>> first_occurrences(np.array([0, 0, 0, 1, 1]), np.array([5, 7, 5, 5, 5])).tolist()
    [True, True, False, True, False]
    """
    n = codes.shape[0]
    o = np.lexsort((codes, groups))  # a stable sort: ties keep their row order
    first = np.ones(n, dtype=bool)
    first[1:] = (codes[o][1:] != codes[o][:-1]) | (groups[o][1:] != groups[o][:-1])
    out = np.zeros(n, dtype=bool)
    out[o[first]] = True
    return out
