"""Windowed aggregators: plain-state reference classes and the vectorised segment kernels.

Every aggregator is a small class with the quixstreams-like life cycle

``initialise() -> state``, ``add(state, values, ts_ms) -> state`` (one numpy batch of one
window, in arrival order), ``merge(a, b) -> state`` (``a`` arrived before ``b``) and
``result(state) -> float``.

States are plain picklable Python data (tuples of floats/ints, a dict for distinct values).
Adding a batch in pieces gives the same state, bit for bit, as adding it at once (``add(add(s,
a), b) == add(s, a + b)``), so a state can be saved between any two batches. Every class is
registered by its ``agg`` name in `AGGREGATORS` (`register_aggregator`, `build_aggregator`);
the contract tests (``tests/streams/test_contract.py``) run over that registry.
`streams.features.FeatureEngine` does not call these classes per event: it computes the same
quantities for whole batches with the segment kernels at the bottom of this module (one numpy
pass over all (entity, window) groups), and the tests check both against each other and against
a brute-force recomputation.

Semantics shared by the engine:

- **count** -- number of events; **sum** -- left-to-right float sum in arrival order; **mean** --
  ``sum / count``.
- **var / std** -- *sample* variance (``ddof=1``) and its square root; NaN for fewer than two
  events. Running values use the shifted-data algorithm: the first value ``K`` of the window is
  subtracted before summing (``S1 = sum(x - K)``, ``S2 = sum((x - K)**2)``, ``var = (S2 - S1**2/n)
  / (n - 1)``), which is as stable as Welford's update when ``K`` is within a few standard
  deviations of the mean (e.g. ``1e9 + noise``) and, unlike Welford, is a plain running sum, so
  it vectorises with ``cumsum`` and is bit-for-bit independent of batching. `Variance.merge`
  combines two states with Chan's parallel formula.
- **min / max** -- NaN for an empty window.
- **first / last** -- the value of the event with the smallest / largest event time; ties are
  broken by arrival order (first: the earliest arrival among equal times wins, last: the latest
  arrival wins).
- **distinct** -- exact number of distinct values, capped at `DISTINCT_CAP` per window: once a
  window has seen that many distinct values it stops recording new ones and reports the cap
  (read a result equal to the cap as "at least the cap").
- **rate** -- events per second over the window's length: ``count * 1000 / length_ms`` where the
  length is the window size for tumbling, hopping and sliding windows (for count windows the
  engine uses the span of the events' times, see `streams.features`).
- **since_prev** -- milliseconds from the latest event time among the window's *other* events that
  arrived earlier to this event's time (NaN when there is none; negative when this event is out
  of order). A count window of 2 gives the plain per-entity gap.

Examples
--------
>>> v = Variance()
>>> s = v.add(v.initialise(), np.array([1e9 + 1, 1e9 + 2, 1e9 + 3]))
>>> v.result(s)
1.0
>>> a = v.add(v.initialise(), np.array([1.0, 2.0]))
>>> b = v.add(v.initialise(), np.array([3.0]))
>>> v.result(v.merge(a, b))
1.0
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from driftline.streams.params import int_param
from driftline.streams.registry import build, register

DISTINCT_CAP = 10_000
"""Exact distinct values recorded per window before `Distinct` saturates."""

# Running values of a group's first _LEVELS rows are computed rank by rank over all groups at
# once; longer groups finish with one ``ufunc.accumulate`` each. Bounds the Python loop to
# _LEVELS + n / _LEVELS iterations whatever the key skew.
_LEVELS = 32


# ---------------------------------------------------------------------------- reference classes
class _Additive:
    """Aggregators whose state is a number that merges by addition (a count, a sum)."""

    mergeable: ClassVar[bool] = True

    def merge(self, a: Any, b: Any) -> Any:
        return a + b

    def result(self, state: float) -> float:
        return float(state)


class Count(_Additive):
    """Number of events. State: ``int``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c = Count()
    >>> c.result(c.add(c.initialise(), rng.normal(size=7)))
    7.0
    >>> c.result(c.merge(c.add(c.initialise(), np.zeros(3)), 2))
    5.0
    """

    name: ClassVar[str] = "count"

    def initialise(self) -> int:
        return 0

    def add(self, state: int, values: np.ndarray, ts_ms: np.ndarray | None = None) -> int:
        return state + len(values)


class Sum(_Additive):
    """Left-to-right float sum in arrival order. State: ``float``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(10.0, 2.0, 1_000)
    >>> s = Sum()
    >>> round(s.result(s.add(s.initialise(), x)), 6)
    9891.493554
    >>> s.result(s.add(s.initialise(), np.array([0.1, 0.2, 0.3])))  # left to right
    0.6000000000000001
    """

    name: ClassVar[str] = "sum"

    def initialise(self) -> float:
        return 0.0

    def add(self, state: float, values: np.ndarray, ts_ms: np.ndarray | None = None) -> float:
        x = np.asarray(values, dtype=np.float64)
        if x.size == 0:
            return state
        return float(np.add.accumulate(np.concatenate([[state], x]))[-1])  # sequential fold


class Mean:
    """``sum / count``. State: ``(count, sum)``.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> m = Mean()
    >>> round(m.result(m.add(m.initialise(), rng.exponential(3.0, 500))), 6)
    2.725062
    >>> m.result(m.add(m.initialise(), np.array([1.0, 2.0, 6.0])))
    3.0
    >>> m.result(m.initialise())
    nan
    """

    name: ClassVar[str] = "mean"
    mergeable: ClassVar[bool] = True

    def initialise(self) -> tuple[int, float]:
        return (0, 0.0)

    def add(self, state, values: np.ndarray, ts_ms: np.ndarray | None = None):
        return (state[0] + len(values), Sum().add(state[1], values))

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])

    def result(self, state) -> float:
        return state[1] / state[0] if state[0] else math.nan


class Variance:
    """Sample variance (ddof=1) by the shifted-data algorithm. State: ``(n, K, S1, S2)``.

    ``K`` is the window's first value (arrival order), ``S1 = sum(x - K)``, ``S2 = sum((x -
    K)**2)``. `merge` uses Chan et al.'s parallel formula and re-centres on the merged mean.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = 1e9 + rng.normal(0.0, 1e-3, 1_000)
    >>> v = Variance()
    >>> bool(np.isclose(v.result(v.add(v.initialise(), x)), np.var(x, ddof=1), rtol=1e-9))
    True
    >>> v.result(v.add(v.initialise(), np.array([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])))
    4.571428571428571
    >>> v.result(v.add(v.initialise(), np.array([5.0])))
    nan
    """

    name: ClassVar[str] = "var"
    mergeable: ClassVar[bool] = True

    def initialise(self) -> tuple[int, float, float, float]:
        return (0, 0.0, 0.0, 0.0)

    def add(self, state, values: np.ndarray, ts_ms: np.ndarray | None = None):
        n, k, s1, s2 = state
        x = np.asarray(values, dtype=np.float64)
        if x.size == 0:
            return state
        if n == 0:
            k = float(x[0])
        d = x - k
        s1 = float(np.add.accumulate(np.concatenate([[s1], d]))[-1])
        s2 = float(np.add.accumulate(np.concatenate([[s2], d * d]))[-1])
        return (n + x.size, k, s1, s2)

    @staticmethod
    def _mean_m2(state) -> tuple[int, float, float]:
        n, k, s1, s2 = state
        if n == 0:
            return 0, 0.0, 0.0
        return n, k + s1 / n, max(s2 - s1 * s1 / n, 0.0)

    def merge(self, a, b):
        na, ma, m2a = self._mean_m2(a)
        nb, mb, m2b = self._mean_m2(b)
        if na == 0:
            return b
        if nb == 0:
            return a
        n = na + nb
        delta = mb - ma
        mean = ma + delta * nb / n
        m2 = m2a + m2b + delta * delta * na * nb / n
        return (n, mean, 0.0, m2)

    def result(self, state) -> float:
        n, _, s1, s2 = state
        if n < 2:
            return math.nan
        return max(s2 - s1 * s1 / n, 0.0) / (n - 1)


class Std(Variance):
    """Sample standard deviation, ``sqrt`` of `Variance`.

    Examples
    --------
    >>> rng = np.random.default_rng(4)
    >>> s = Std()
    >>> round(s.result(s.add(s.initialise(), rng.normal(0.0, 1.0, 100))), 6)
    1.017219
    >>> s.result(s.add(s.initialise(), np.array([1.0, 3.0])))
    1.4142135623730951
    """

    name: ClassVar[str] = "std"

    def result(self, state) -> float:
        return math.sqrt(super().result(state))


class Min:
    """Smallest value, NaN when empty. State: ``float`` (``inf`` when empty).

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> m = Min()
    >>> round(m.result(m.add(m.initialise(), rng.uniform(-3.0, 3.0, 50))), 6)
    -2.992802
    >>> m.result(m.merge(m.add(m.initialise(), np.array([3.0, -1.0])), 2.0))
    -1.0
    """

    name: ClassVar[str] = "min"
    mergeable: ClassVar[bool] = True
    _empty: ClassVar[float] = math.inf

    def initialise(self) -> float:
        return self._empty

    def add(self, state: float, values: np.ndarray, ts_ms: np.ndarray | None = None) -> float:
        return self.merge(state, float(np.min(values))) if len(values) else state

    def merge(self, a: float, b: float) -> float:
        return min(a, b)

    def result(self, state: float) -> float:
        return math.nan if state == self._empty else float(state)


class Max(Min):
    """Largest value, NaN when empty. State: ``float`` (``-inf`` when empty).

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> m = Max()
    >>> round(m.result(m.add(m.initialise(), rng.uniform(-3.0, 3.0, 50))), 6)
    2.995057
    >>> m.result(m.add(m.initialise(), np.array([3.0, -1.0])))
    3.0
    """

    name: ClassVar[str] = "max"
    _empty: ClassVar[float] = -math.inf

    def add(self, state: float, values: np.ndarray, ts_ms: np.ndarray | None = None) -> float:
        return self.merge(state, float(np.max(values))) if len(values) else state

    def merge(self, a: float, b: float) -> float:
        return max(a, b)


class First:
    """Value of the earliest event time; ties go to the earliest arrival.

    State: ``(ts_ms, value)`` or ``None`` when empty. `add` needs ``ts_ms``.

    Examples
    --------
    >>> rng = np.random.default_rng(6)
    >>> x, ts = rng.normal(size=5).round(3), rng.integers(0, 1_000, 5)
    >>> x.tolist(), ts.tolist()
    ([1.053, 1.776, -2.553, -0.138, 1.014], [755, 329, 672, 679, 451])
    >>> f = First()
    >>> f.result(f.add(f.initialise(), x, ts))  # the value at ts 329
    1.776
    >>> f.result(f.add(f.initialise(), np.array([1.0, 2.0, 3.0]), np.array([50, 10, 10])))
    2.0
    """

    name: ClassVar[str] = "first"
    mergeable: ClassVar[bool] = True

    def initialise(self) -> tuple[int, float] | None:
        return None

    def _better(self, new_ts: int, old_ts: int) -> bool:
        return new_ts < old_ts

    def add(self, state, values: np.ndarray, ts_ms: np.ndarray | None = None):
        if ts_ms is None:
            raise ValueError(f"{self.name}: add needs ts_ms")
        for x, t in zip(np.asarray(values).tolist(), np.asarray(ts_ms).tolist(), strict=True):
            state = self.merge(state, (t, x))
        return state

    def merge(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return b if self._better(b[0], a[0]) else a

    def result(self, state) -> float:
        return math.nan if state is None else float(state[1])


class Last(First):
    """Value of the latest event time; ties go to the latest arrival.

    Examples
    --------
    >>> rng = np.random.default_rng(6)
    >>> x, ts = rng.normal(size=5).round(3), rng.integers(0, 1_000, 5)
    >>> f = Last()
    >>> f.result(f.add(f.initialise(), x, ts))  # the value at ts 755
    1.053
    >>> f.result(f.add(f.initialise(), np.array([1.0, 2.0, 3.0]), np.array([50, 10, 50])))
    3.0
    """

    name: ClassVar[str] = "last"

    def _better(self, new_ts: int, old_ts: int) -> bool:
        return new_ts >= old_ts


class Distinct:
    """Exact distinct count up to `DISTINCT_CAP`, then saturates at the cap.

    State: ``dict`` value -> None (insertion ordered, so the first ``cap`` distinct values in
    arrival order are kept). Values may be floats or strings.

    Parameters
    ----------
    cap
        Distinct values recorded per window before the count saturates (integer >= 1,
        default `DISTINCT_CAP` = 10,000).

    Raises
    ------
    SpecError
        If ``cap`` is not an integer >= 1.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> d = Distinct()
    >>> d.result(d.add(d.initialise(), rng.integers(0, 20, 100).astype(float)))
    20.0
    >>> d.result(d.add(d.initialise(), np.array(["a", "b", "a"], dtype=object)))
    2.0
    >>> small = Distinct(cap=2)
    >>> small.result(small.add(small.initialise(), np.array([1.0, 2.0, 3.0])))
    2.0
    """

    name: ClassVar[str] = "distinct"
    mergeable: ClassVar[bool] = True

    def __init__(self, cap: int = DISTINCT_CAP) -> None:
        self.cap = int_param("cap", cap, 1)

    def initialise(self) -> dict[Hashable, None]:
        return {}

    def add(self, state, values: np.ndarray, ts_ms: np.ndarray | None = None):
        out = dict(state)
        for x in np.asarray(values).tolist():
            if len(out) >= self.cap:
                break
            out.setdefault(x, None)
        return out

    def merge(self, a, b):
        return self.add(a, np.array(list(b), dtype=object))

    def result(self, state) -> float:
        return float(min(len(state), self.cap))


class Rate(Count):
    """Events per second over a window of ``length_ms``. State: ``int`` count (a `Count`'s).

    Parameters
    ----------
    length_ms
        Window length in milliseconds (integer >= 1, default 1000: events in the last second).

    Raises
    ------
    SpecError
        If ``length_ms`` is not an integer >= 1.

    Examples
    --------
    >>> rng = np.random.default_rng(8)
    >>> r = Rate(60_000)
    >>> r.result(r.add(r.initialise(), rng.normal(size=90)))  # 90 events in a minute
    1.5
    >>> r.result(r.add(r.initialise(), np.zeros(30)))
    0.5
    """

    name: ClassVar[str] = "rate"

    def __init__(self, length_ms: int = 1000) -> None:
        self.length_ms = int_param("length_ms", length_ms, 1, unit="milliseconds")

    def result(self, state: int) -> float:
        return state * 1000.0 / self.length_ms


class SincePrev:
    """Milliseconds from the latest earlier event time to a query time. State: max ts or None.

    `result` takes the query event's time; the state must hold the *other* events only.

    Examples
    --------
    >>> rng = np.random.default_rng(9)
    >>> ts = rng.integers(0, 10_000, 5)
    >>> ts.tolist()
    [4215, 8702, 9610, 2868, 1143]
    >>> s = SincePrev()
    >>> s.result(s.add(s.initialise(), np.zeros(5), ts), 10_000)  # 10000 - 9610
    390.0
    >>> st = s.add(s.initialise(), np.zeros(2), np.array([1_000, 4_000]))
    >>> s.result(st, 4_500), s.result(s.initialise(), 4_500)
    (500.0, nan)
    """

    name: ClassVar[str] = "since_prev"
    mergeable: ClassVar[bool] = True

    def initialise(self) -> int | None:
        return None

    def add(self, state, values: np.ndarray, ts_ms: np.ndarray | None = None):
        if ts_ms is None or len(ts_ms) == 0:
            return state
        return self.merge(state, int(np.max(ts_ms)))

    def merge(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return max(a, b)

    def result(self, state, ts_ms: int) -> float:
        return math.nan if state is None else float(ts_ms - state)


Aggregator = Count | Sum | Mean | Variance | Min | First | Distinct | SincePrev
"""Any reference aggregator (`Std` is a `Variance`, `Max` a `Min`, `Last` a `First`, `Rate` a
`Count`)."""

AGGREGATORS: dict[str, type[Aggregator]] = {}
"""The aggregator registry: ``agg`` name -> reference class (see `register_aggregator`)."""

A = TypeVar("A", bound=type[Aggregator])


def register_aggregator(cls: A) -> A:
    """Add ``cls`` to `AGGREGATORS` under its ``name``; the contract tests cover it from then on.

    Raises
    ------
    DriftlineError
        If the name is taken by another class.

    Examples
    --------
    >>> register_aggregator(Count) is Count
    True
    """
    return register(AGGREGATORS, cls, "agg", "aggregator")


for _cls in (Count, Sum, Mean, Variance, Std, Min, Max, First, Last, Distinct, Rate, SincePrev):
    register_aggregator(_cls)


def build_aggregator(name: str, **params: Any) -> Aggregator:
    """A new aggregator ``name`` (`AGGREGATIONS`) with constructor ``params``.

    Raises
    ------
    SpecError
        If ``name`` or a parameter is unknown, or a parameter is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> agg = build_aggregator("distinct", cap=3)
    >>> agg.result(agg.add(agg.initialise(), rng.integers(0, 10, 50)))
    3.0
    >>> build_aggregator("median")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: agg: got 'median'; expected one of count, distinct, first, ...
    >>> build_aggregator("rate", length=60)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: length: the rate aggregator has no parameter 'length'; ...
    """
    return build(AGGREGATORS, "agg", "aggregator", name, params)


AGGREGATIONS: tuple[str, ...] = tuple(AGGREGATORS)
"""Every supported ``agg`` name."""

NEEDS_FIELD: frozenset[str] = frozenset(AGGREGATIONS) - {"count", "rate", "since_prev"}
"""Aggregations that read a source column (count, rate and since_prev ignore ``field``)."""


# ---------------------------------------------------------------------------- segment kernels
def segmented_accumulate(
    op: np.ufunc, x: np.ndarray, gstart: np.ndarray, gsize: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """Running ``op`` of ``x`` (rows sorted by group, arrival order within) restarting per group.

    Group ``g`` occupies rows ``gstart[g] : gstart[g] + gsize[g]`` (every group non-empty) and
    starts from ``prior[g]``. Each output row is ``op(previous, x[row])`` in row order, so for
    ``np.add`` the float result is exactly that of a per-event left fold, independent of what
    else is in the batch.

    Parameters
    ----------
    op
        A binary ufunc: ``np.add``, ``np.minimum``, ``np.maximum``.
    x
        Values, shape ``(m,)`` or ``(m, k)``.
    gstart, gsize
        Group starts and sizes (int arrays, sizes >= 1, groups contiguous and covering ``x``).
    prior
        Starting value per group, shape ``(g,)`` or ``(g, k)``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``x``.

    Examples
    --------
    >>> segmented_accumulate(
    ...     np.add, np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 3]), np.array([3, 1]),
    ...     np.array([10.0, 0.0]),
    ... ).tolist()
    [11.0, 13.0, 16.0, 4.0]
    """
    out = np.empty_like(x)
    if x.shape[0] == 0:
        return out
    out[gstart] = op(prior, x[gstart])
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
        out[p] = op(out[p - 1], x[p])
    for g in np.flatnonzero(gsize > levels).tolist():
        a = int(gstart[g]) + levels - 1
        b = int(gstart[g] + gsize[g])
        seg = x[a:b].copy()
        seg[0] = out[a]
        out[a:b] = op.accumulate(seg, axis=0)
    return out


def segment_ffill(flag: np.ndarray, row_gstart: np.ndarray) -> np.ndarray:
    """Index of the last flagged row at or before each row within its group, else -1.

    Parameters
    ----------
    flag
        ``bool`` per row (rows sorted by group).
    row_gstart
        First row of each row's group.

    Returns
    -------
    numpy.ndarray
        ``int64`` indices.

    Examples
    --------
    >>> segment_ffill(np.array([False, True, False, False, True]),
    ...               np.array([0, 0, 0, 3, 3])).tolist()
    [-1, 1, 1, -1, 4]
    """
    idx = np.where(flag, np.arange(flag.shape[0], dtype=np.int64), -1)
    if idx.size:
        np.maximum.accumulate(idx, out=idx)
    idx[idx < row_gstart] = -1
    return idx


def segment_bounds(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group starts, sizes and per-row group id of rows already sorted by ``keys``.

    Examples
    --------
    >>> [a.tolist() for a in segment_bounds([np.array([1, 1, 2]), np.array([5, 5, 5])])]
    [[0, 2], [2, 1], [0, 0, 1]]
    """
    m = keys[0].shape[0]
    boundary = np.zeros(m, dtype=bool)
    if m:
        boundary[0] = True
        for k in keys:
            boundary[1:] |= k[1:] != k[:-1]
    gstart = np.flatnonzero(boundary)
    gsize = np.diff(np.append(gstart, m))
    gid = np.cumsum(boundary) - 1
    return gstart, gsize, gid


def count_le(member_keys: Sequence[np.ndarray], query_keys: Sequence[np.ndarray]) -> np.ndarray:
    """Number of members whose key tuple is ``<=`` each query's key tuple (lexicographic).

    Keys are given most significant first. One stable sort of members and queries together.

    Examples
    --------
    >>> count_le([np.array([0, 0, 1]), np.array([1, 5, 2])],
    ...          [np.array([0, 0, 1, 2]), np.array([4, 5, -9, 0])]).tolist()
    [1, 2, 2, 3]
    """
    nm = member_keys[0].shape[0]
    nq = query_keys[0].shape[0]
    kind = np.concatenate([np.zeros(nm, dtype=np.int8), np.ones(nq, dtype=np.int8)])
    cols = [np.concatenate([a, b]) for a, b in zip(member_keys, query_keys, strict=True)]
    order = np.lexsort((kind, *cols[::-1]))
    is_member = kind[order] == 0
    before = np.cumsum(is_member)
    out = np.empty(nq, dtype=np.int64)
    qpos = np.flatnonzero(~is_member)
    out[order[qpos] - nm] = before[qpos]
    return out


def as_state_list(values: Any) -> list:
    """Plain list of a numpy array or sequence (for snapshots)."""
    return np.asarray(values).tolist()
