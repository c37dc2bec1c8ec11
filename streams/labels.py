"""Delayed label join: match ground-truth labels to the predictions they grade, by prediction id.

Labels arrive late (minutes to days after the prediction) and sometimes *before* the prediction
record itself (the label topic can be ahead of the prediction topic). `LabelJoin` keeps both sides
waiting, in bounded memory, for up to ``ttl_ms``:

- a **prediction** waits for its label; a label waits for its prediction (an *early* label);
- when the other side arrives, the pair is **joined** and returned as a `JoinedBatch` (from
  `LabelJoin.add_labels` or, for early labels, from `LabelJoin.add_predictions`);
- the joined id is remembered (for ``ttl_ms`` too) so that a second label for it is ignored and
  counted as a duplicate.

**Clock.** Everything is in event time, never in wall-clock time, so a replay joins exactly like
the live run. A prediction is timed by its ``event_time_ms`` (the event the model scored; the
worker passes the prediction record's timestamp), a label by its ``label_time_ms`` (the label
record's timestamp). A label and a prediction with the same id join iff
``|label_time_ms - event_time_ms| <= ttl_ms``; when they are further apart the one that was
waiting is dropped (counted as an expired prediction or an unmatched label) and the newcomer waits
in its place. `LabelJoin.expire` takes ``now_ms``, a *watermark* (e.g. the largest record
timestamp seen minus the allowed lateness), and drops everything timed before
``now_ms - ttl_ms``. With a true watermark (no later record is timed before it) the join results
do not depend on when or how often `LabelJoin.expire` is called, nor (while ``max_pending`` is not
reached: eviction happens at the end of each call) on how the streams are split into batches.

**Bounded memory.** At most ``max_pending`` predictions, ``max_pending`` early labels and
``max_pending`` joined ids are kept; beyond that the oldest (smallest time, then earliest
arrival) are evicted: predictions count as expired, labels as unmatched.

Within a batch, rows are taken in order; a repeated id keeps its first row.

Examples
--------
>>> j = LabelJoin(ttl_ms=60_000)
>>> ids = np.array(["p1", "p2", "p3"], dtype=object)
>>> j.add_predictions(ids, np.array([1_000, 2_000, 3_000]), np.array([0.9, 0.2, 0.7]))
JoinedBatch(n=0)
>>> out = j.add_labels(np.array(["p2", "x", "p2"], dtype=object), np.array([0.0, 1.0, 1.0]),
...                    np.array([9_000, 9_000, 9_500]))
>>> out.ids.tolist(), out.scores.tolist(), out.labels.tolist(), out.delay_ms.tolist()
(['p2'], [0.2], [0.0], [7000])
>>> j.n_joined, j.n_pending, j.n_pending_labels, j.n_duplicate_labels
(1, 2, 1, 1)
>>> j.add_predictions(np.array(["x"], dtype=object), np.array([8_000]), np.array([0.4])).ids
array(['x'], dtype=object)
>>> j.expire(now_ms=62_500), j.n_expired_predictions, j.n_pending
(1, 1, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.params import int_param
from driftline.streams.snapshots import check_snapshot, reading_snapshot

__all__ = ["JoinedBatch", "LabelJoin", "float_array", "floats_to_json"]


# ---------------------------------------------------------------------------- JSON helpers
def floats_to_json(arr: np.ndarray) -> list:
    """``arr.tolist()`` with NaN as None and +-inf as ``"inf"`` / ``"-inf"`` (valid JSON).

    orjson writes NaN and infinities as ``null``; this keeps infinities and makes snapshots
    compare equal after a round trip. `float_array` reads it back.

    Examples
    --------
    >>> floats_to_json(np.array([1.5, np.nan, -np.inf]))
    [1.5, None, '-inf']
    >>> float_array([1.5, None, "-inf"]).tolist()
    [1.5, nan, -inf]
    """
    a = np.asarray(arr, dtype=np.float64)
    if np.isfinite(a).all():
        return a.tolist()
    obj = a.astype(object)
    obj[np.isnan(a)] = None
    obj[a == np.inf] = "inf"
    obj[a == -np.inf] = "-inf"
    return obj.tolist()


def float_array(values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """float64 array from `floats_to_json` output (or a list orjson wrote: ``null`` is NaN).

    ``shape``, when given, is enforced (it keeps the columns of an empty matrix).
    """
    a = np.array(values, dtype=np.float64)
    if shape is not None:
        a = a.reshape(shape)
    return a


def _ids(values: Any, name: str = "ids") -> np.ndarray:
    a = np.asarray(values, dtype=object)
    if a.ndim != 1:
        raise DriftlineError(f"{name}: got shape {a.shape}; expected a 1-D array of ids")
    return a


def _column(values: Any, n: int, name: str, dtype: type) -> np.ndarray:
    a = np.asarray(values, dtype=dtype)
    if a.ndim == 0:
        a = np.full(n, a, dtype=dtype)
    if a.shape != (n,):
        raise DriftlineError(f"{name}: got shape {a.shape}; expected ({n},) like ids")
    return a


def _first_rows(ids: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each id, in order."""
    n = ids.shape[0]
    if n < 2:
        return np.arange(n)
    first = dict(zip(ids[::-1].tolist(), range(n - 1, -1, -1), strict=True))
    if len(first) == n:
        return np.arange(n)
    return np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))


# ---------------------------------------------------------------------------- keyed store
class _Store:
    """Rows keyed by a unique id: a time column and ``n_cols`` float columns, append-only.

    Columns live in buffers that double when full (amortised O(1) appends). Removed rows are
    marked dead and compacted away once they outnumber the live ones; row order is arrival order
    throughout (eviction breaks time ties by it).
    """

    def __init__(self, n_cols: int) -> None:
        self.n_cols = n_cols
        self.n_rows = 0
        self._ids = np.empty(0, dtype=object)
        self._t = np.empty(0, dtype=np.int64)
        self._vals = np.empty((0, n_cols), dtype=np.float64)
        self._alive = np.empty(0, dtype=bool)
        self.index: dict[Any, int] = {}

    ids = property(lambda self: self._ids[: self.n_rows])
    t = property(lambda self: self._t[: self.n_rows])
    vals = property(lambda self: self._vals[: self.n_rows])
    alive = property(lambda self: self._alive[: self.n_rows])

    def __len__(self) -> int:
        return len(self.index)

    def widen(self, n_cols: int) -> None:
        """Add NaN columns up to ``n_cols``."""
        extra = np.full((self._vals.shape[0], n_cols - self.n_cols), np.nan)
        self._vals = np.concatenate([self._vals, extra], axis=1)
        self.n_cols = n_cols

    def narrow(self, n_cols: int) -> None:
        """Keep the first ``n_cols`` columns."""
        self._vals = self._vals[:, :n_cols].copy()
        self.n_cols = n_cols

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 when absent."""
        return np.fromiter(
            map(self.index.get, ids.tolist(), repeat(-1)), dtype=np.int64, count=ids.shape[0]
        )

    def _reserve(self, n: int) -> None:
        cap = self._t.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap, 1024)
        grow = new - cap
        self._ids = np.concatenate([self._ids, np.empty(grow, dtype=object)])
        self._t = np.concatenate([self._t, np.empty(grow, dtype=np.int64)])
        self._vals = np.concatenate([self._vals, np.empty((grow, self.n_cols))])
        self._alive = np.concatenate([self._alive, np.zeros(grow, dtype=bool)])

    def append(self, ids: np.ndarray, t: np.ndarray, vals: np.ndarray) -> None:
        n0, m = self.n_rows, ids.shape[0]
        self._reserve(n0 + m)
        self._ids[n0 : n0 + m] = ids
        self._t[n0 : n0 + m] = t
        self._vals[n0 : n0 + m] = vals.reshape(m, self.n_cols)
        self._alive[n0 : n0 + m] = True
        self.n_rows = n0 + m
        self.index.update(zip(ids.tolist(), range(n0, n0 + m), strict=True))

    def remove(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        self.alive[rows] = False
        index = self.index
        for key in self.ids[rows].tolist():
            del index[key]
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        n_alive = len(self.index)
        if self.n_rows - n_alive <= max(n_alive, 1024):
            return
        keep = np.flatnonzero(self.alive)
        m = keep.size
        self._ids[:m], self._t[:m], self._vals[:m] = self.ids[keep], self.t[keep], self.vals[keep]
        self._ids[m : self.n_rows] = None  # release the dead ids
        self._alive[:m] = True
        self._alive[m:] = False
        self.n_rows = m
        self.index = dict(zip(self._ids[:m].tolist(), range(m), strict=True))

    def expire(self, cutoff_ms: int) -> int:
        """Remove live rows timed before ``cutoff_ms``; return how many."""
        rows = np.flatnonzero(self.alive & (self.t < cutoff_ms))
        self.remove(rows)
        return int(rows.size)

    def evict(self, max_rows: int) -> int:
        """Remove the oldest live rows (time, then arrival) beyond ``max_rows``; return how many."""
        k = len(self.index) - max_rows
        if k <= 0:
            return 0
        live = np.flatnonzero(self.alive)
        t = self.t[live]
        kth = np.partition(t, k - 1)[k - 1]
        below = live[t < kth]
        at = live[t == kth][: k - below.size]
        self.remove(np.concatenate([below, at]))
        return k

    def snapshot(self) -> dict[str, Any]:
        live = np.flatnonzero(self.alive)
        return {
            "ids": self.ids[live].tolist(),
            "t": self.t[live].tolist(),
            "n_cols": self.n_cols,
            "vals": floats_to_json(self.vals[live]),
        }

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> _Store:
        store = cls(int(state["n_cols"]))
        ids = np.empty(len(state["ids"]), dtype=object)
        ids[:] = list(state["ids"])
        vals = float_array(state["vals"], (ids.shape[0], store.n_cols))
        store.append(ids, np.asarray(state["t"], dtype=np.int64), vals)
        if len(store.index) != ids.shape[0]:
            raise DriftlineError("state: repeated ids in a label-join snapshot")
        return store


# ---------------------------------------------------------------------------- joined rows
@dataclass(frozen=True)
class JoinedBatch:
    """Predictions joined with their labels, one row per pair (column arrays of equal length).

    Attributes
    ----------
    ids
        Prediction ids (object array).
    event_time_ms
        The prediction's event time (int64).
    label_time_ms
        The label's time (int64).
    delay_ms
        ``label_time_ms - event_time_ms`` (negative when the label is timed before the event).
    scores
        The model's score (P(positive) for classifiers, the value for regressors).
    labels_pred
        The predicted label, NaN when none was given.
    labels
        The true label.
    features
        The prediction's feature rows, shape ``(n, n_features)``; NaN rows when none were given.
    """

    ids: np.ndarray
    event_time_ms: np.ndarray
    label_time_ms: np.ndarray
    delay_ms: np.ndarray
    scores: np.ndarray
    labels_pred: np.ndarray
    labels: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __repr__(self) -> str:
        return f"JoinedBatch(n={len(self)})"

    @classmethod
    def concat(cls, batches: Sequence[JoinedBatch], n_features: int = 0) -> JoinedBatch:
        """Rows of ``batches`` one after the other (an empty batch when there are none).

        Examples
        --------
        >>> len(JoinedBatch.concat([], n_features=2)), JoinedBatch.concat([]).features.shape
        (0, (0, 0))
        """
        if not batches:
            e = np.empty(0, dtype=np.float64)
            t = np.empty(0, dtype=np.int64)
            return cls(np.empty(0, dtype=object), t, t, t, e, e, e, np.empty((0, n_features)))
        return cls(
            *(np.concatenate([getattr(b, f) for b in batches]) for f in cls.__dataclass_fields__)
        )


# ---------------------------------------------------------------------------- the join
_SCORE, _PRED = 0, 1  # columns of the prediction store before the features


class LabelJoin:
    """Join delayed (or early) labels to predictions by id, in event time, in bounded memory.

    See the module docstring for the clock, the join condition and eviction.

    Parameters
    ----------
    ttl_ms
        How long, in event-time ms, a prediction waits for its label and a label for its
        prediction (>= 0); also the largest ``|label time - prediction time|`` that joins.
    max_pending
        At most this many waiting predictions, early labels and remembered joined ids, each
        (>= 1). The oldest are evicted beyond it.

    Raises
    ------
    SpecError
        If a hyperparameter is out of range.

    Examples
    --------
    >>> j = LabelJoin(ttl_ms=1_000, max_pending=2)
    >>> j.add_labels(np.array(["a"], dtype=object), np.array([1.0]), np.array([500]))
    JoinedBatch(n=0)
    >>> out = j.add_predictions(np.array(["b", "a", "c"], dtype=object),
    ...                         np.array([100, 200, 300]), np.array([0.1, 0.8, 0.3]),
    ...                         features=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    >>> out.ids.tolist(), out.features.tolist(), out.delay_ms.tolist()
    (['a'], [[3.0, 4.0]], [300])
    >>> j.n_pending, j.n_expired_predictions  # "b" and "c" wait; nothing evicted
    (2, 0)
    """

    def __init__(self, ttl_ms: int, max_pending: int = 1_000_000) -> None:
        self.ttl_ms = int_param("ttl_ms", ttl_ms, 0)
        self.max_pending = int_param("max_pending", max_pending, 1)
        self._preds = _Store(2)  # score, predicted label, then the features
        self._labels = _Store(1)  # the label
        self._joined = _Store(0)  # ids already joined, timed max(prediction, label)
        self._n_features: int | None = None
        self.n_joined = 0
        self.n_unmatched_labels = 0
        self.n_expired_predictions = 0
        self.n_duplicate_labels = 0
        self.n_duplicate_predictions = 0

    # ------------------------------------------------------------------ state
    @property
    def n_pending(self) -> int:
        """Predictions waiting for their label."""
        return len(self._preds)

    @property
    def n_pending_labels(self) -> int:
        """Early labels waiting for their prediction."""
        return len(self._labels)

    @property
    def n_features(self) -> int:
        """Feature columns of stored predictions (0 until a batch with features arrived)."""
        return self._n_features or 0

    def _params(self) -> dict[str, int]:
        return {"ttl_ms": self.ttl_ms, "max_pending": self.max_pending}

    def set_feature_count(self, n: int) -> None:
        """Change the feature columns of the waiting predictions to ``n`` (what the state was
        written with differs from what is stored now, e.g. slices added): new columns are NaN,
        extra ones dropped. Nothing happens before the first batch with features.

        Examples
        --------
        >>> j = LabelJoin(ttl_ms=10)
        >>> _ = j.add_predictions(np.array(["a"], dtype=object), np.array([1]), np.array([0.5]),
        ...                       features=np.array([[1.0, 2.0]]))
        >>> j.set_feature_count(3)
        >>> j.add_labels(np.array(["a"], dtype=object), np.array([1.0]), np.array([2])).features
        array([[ 1.,  2., nan]])
        """
        n = int(n)
        if self._n_features is None or n == self._n_features:
            return
        if n > self._n_features:
            self._preds.widen(2 + n)
        else:
            self._preds.narrow(2 + n)
        self._n_features = n

    def _counters(self) -> dict[str, int]:
        return {
            "n_joined": self.n_joined,
            "n_unmatched_labels": self.n_unmatched_labels,
            "n_expired_predictions": self.n_expired_predictions,
            "n_duplicate_labels": self.n_duplicate_labels,
            "n_duplicate_predictions": self.n_duplicate_predictions,
        }

    def snapshot(self) -> dict[str, Any]:
        """State as plain JSON-able data; `restore` continues exactly."""
        return {
            "kind": "label_join",
            "params": self._params(),
            "n_features": self._n_features,
            "counters": self._counters(),
            "predictions": self._preds.snapshot(),
            "labels": self._labels.snapshot(),
            "joined": self._joined.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state by a `snapshot` (also after a JSON round trip)."""
        check_snapshot(state, "label_join", self._params())
        with reading_snapshot("label_join"):
            preds = _Store.from_snapshot(state["predictions"])
            labels = _Store.from_snapshot(state["labels"])
            joined = _Store.from_snapshot(state["joined"])
            counters = {k: int(state["counters"][k]) for k in self._counters()}
        n_features = state.get("n_features")
        self._preds, self._labels, self._joined = preds, labels, joined
        self._n_features = None if n_features is None else int(n_features)
        for k, v in counters.items():
            setattr(self, k, v)

    # ------------------------------------------------------------------ helpers
    def _remember_joined(self, ids: np.ndarray, t: np.ndarray) -> None:
        self._joined.append(ids, t, np.empty((ids.shape[0], 0)))
        self._joined.evict(self.max_pending)

    def _features(self, features: Any, n: int) -> np.ndarray:
        if features is None:
            return np.full((n, self.n_features), np.nan)
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] != n:
            raise DriftlineError(f"features: got shape {f.shape}; expected ({n}, n_features)")
        if self._n_features is None:
            self._n_features = f.shape[1]
            self._preds.widen(2 + f.shape[1])
        elif f.shape[1] != self._n_features:
            raise DriftlineError(
                f"features: got {f.shape[1]} columns; expected {self._n_features} like the "
                "earlier batches"
            )
        return f

    def _meet(
        self, ids: np.ndarray, t: np.ndarray, own: _Store, other: _Store
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Match a batch of one side (predictions or labels, stored in ``own``) with the rows of
        the other side waiting in ``other``.

        Returns ``keep`` (the batch rows that take part: the first row of each id that is neither
        waiting in ``own`` nor already joined), and for the kept rows the other side's waiting
        row (-1 if none), its time, whether the two join (``close``: within ``ttl_ms``), then the
        number of rows not kept (duplicates) and of waiting rows too far away to join.
        """
        first = _first_rows(ids)
        seen = (own.lookup(ids[first]) >= 0) | (self._joined.lookup(ids[first]) >= 0)
        keep = first[~seen]
        n_dup = ids.shape[0] - keep.shape[0]
        ids, t = ids[keep], t[keep]
        row = other.lookup(ids)
        has = row >= 0
        t_other = other.t[np.where(has, row, 0)] if other.t.size else t
        close = has & (np.abs(t - t_other) <= self.ttl_ms)
        return keep, row, t_other, close, n_dup, int(np.count_nonzero(has & ~close))

    def _wait(
        self, own: _Store, ids: np.ndarray, t: np.ndarray, vals: np.ndarray, wait: np.ndarray
    ) -> int:
        """Store the rows ``wait`` in ``own``; return how many old rows that evicted."""
        own.append(ids[wait], t[wait], vals[wait])
        return own.evict(self.max_pending)

    def _batch(
        self,
        ids: np.ndarray,
        t_pred: np.ndarray,
        t_label: np.ndarray,
        pvals: np.ndarray,
        labels: np.ndarray,
    ) -> JoinedBatch:
        self.n_joined += ids.shape[0]
        self._remember_joined(ids, np.maximum(t_pred, t_label))
        return JoinedBatch(
            ids=ids,
            event_time_ms=t_pred,
            label_time_ms=t_label,
            delay_ms=t_label - t_pred,
            scores=pvals[:, _SCORE].copy(),
            labels_pred=pvals[:, _PRED].copy(),
            labels=labels,
            features=pvals[:, 2:].copy(),
        )

    # ------------------------------------------------------------------ updates
    def add_predictions(
        self,
        ids: Iterable[str] | np.ndarray,
        event_time_ms: np.ndarray,
        scores: np.ndarray,
        labels_pred: np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> JoinedBatch:
        """Store predictions awaiting labels; join those whose early label is waiting.

        Parameters
        ----------
        ids
            Prediction ids (strings), 1-D.
        event_time_ms
            Event time of each prediction (int64 ms).
        scores
            The model's scores (float64).
        labels_pred
            Predicted labels (numeric: bool, 0/1, a class index), or None.
        features
            Feature rows ``(n, n_features)`` or None; the first batch with features fixes
            ``n_features``.

        Returns
        -------
        JoinedBatch
            The predictions that met a waiting label, in input order.
        """
        ids = _ids(ids)
        n = ids.shape[0]
        t = _column(event_time_ms, n, "event_time_ms", np.int64)
        feats = self._features(features, n)
        vals = np.column_stack(
            [
                _column(scores, n, "scores", np.float64),
                np.full(n, np.nan)
                if labels_pred is None
                else _column(labels_pred, n, "labels_pred", np.float64),
                feats,
            ]
        )
        keep, lrow, t_label, close, n_dup, n_far = self._meet(ids, t, self._preds, self._labels)
        self.n_duplicate_predictions += n_dup
        self.n_unmatched_labels += n_far
        ids, t, vals = ids[keep], t[keep], vals[keep]
        joined_labels = self._labels.vals[lrow[close], 0]
        self._labels.remove(lrow[lrow >= 0])
        out = self._batch(ids[close], t[close], t_label[close], vals[close], joined_labels)
        self.n_expired_predictions += self._wait(self._preds, ids, t, vals, ~close)
        return out

    def add_labels(
        self,
        ids: Iterable[str] | np.ndarray,
        labels: np.ndarray,
        label_time_ms: np.ndarray,
    ) -> JoinedBatch:
        """Join labels to waiting predictions; keep the others as early labels.

        Parameters
        ----------
        ids
            Prediction ids the labels are for, 1-D.
        labels
            True labels (float64; 0/1 for binary classifiers).
        label_time_ms
            Time of each label (int64 ms).

        Returns
        -------
        JoinedBatch
            The joined rows, in input order.
        """
        ids = _ids(ids)
        n = ids.shape[0]
        y = _column(labels, n, "labels", np.float64)
        t = _column(label_time_ms, n, "label_time_ms", np.int64)
        keep, prow, t_pred, close, n_dup, n_far = self._meet(ids, t, self._labels, self._preds)
        self.n_duplicate_labels += n_dup
        self.n_expired_predictions += n_far
        ids, y, t = ids[keep], y[keep], t[keep]
        pvals = self._preds.vals[prow[close]]
        self._preds.remove(prow[prow >= 0])
        out = self._batch(ids[close], t_pred[close], t[close], pvals, y[close])
        self.n_unmatched_labels += self._wait(self._labels, ids, t, y, ~close)
        return out

    def expire(self, now_ms: int) -> int:
        """Drop predictions and early labels timed before ``now_ms - ttl_ms``.

        Parameters
        ----------
        now_ms
            A watermark in event time (see the module docstring).

        Returns
        -------
        int
            Predictions plus labels dropped (also added to ``n_expired_predictions`` and
            ``n_unmatched_labels``). Remembered joined ids are forgotten silently.
        """
        cutoff = int(now_ms) - self.ttl_ms
        n_pred = self._preds.expire(cutoff)
        n_lab = self._labels.expire(cutoff)
        self._joined.expire(cutoff)
        self.n_expired_predictions += n_pred
        self.n_unmatched_labels += n_lab
        return n_pred + n_lab
