"""An operation log around `streams.labels.LabelJoin`: small per-batch deltas, rare checkpoints.

A label join can hold a million waiting predictions; writing its full snapshot after every batch
would cost seconds. `LoggedLabelJoin` instead records each call (``add_predictions``,
``add_labels``, ``expire``) with its inputs. The join is deterministic, so replaying the calls on
the last checkpoint rebuilds the state exactly, counters included.

- `LoggedLabelJoin.drain` returns the calls made since the last drain (a *delta*, plain JSON-able
  data) with its sequence number, or a full checkpoint when the rows logged since the last one
  outnumber the live rows (so the log stays at most about twice the state: amortised O(1) per row,
  and a restore replays at most that much);
- `LoggedLabelJoin.recover` rebuilds from a checkpoint and the deltas after it.

Storing deltas and checkpoints (and deleting obsolete ones) is the caller's job.

Examples
--------
>>> j = LoggedLabelJoin(ttl_ms=10_000, min_checkpoint_rows=4)
>>> ids = np.array(["a", "b"], dtype=object)
>>> _ = j.add_predictions(ids, np.array([1, 2]), np.array([0.9, 0.1]))
>>> kind, seq, data = j.drain()
>>> kind, seq, len(data)
('delta', 1, 1)
>>> _ = j.add_labels(np.array(["a"], dtype=object), np.array([1.0]), np.array([5]))
>>> d2 = j.drain()
>>> again = LoggedLabelJoin.recover(10_000, 1_000_000, None, [data, d2[2]])
>>> again.join.n_joined, again.join.n_pending, again.seq
(1, 1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from driftline.errors import DriftlineError
from driftline.streams.labels import JoinedBatch, LabelJoin, float_array, floats_to_json

__all__ = ["LoggedLabelJoin", "check_log_entry"]

_INT64 = (-(2**63), 2**63 - 1)
_FLOAT_TYPES = {float, int, type(None), str}


def _ints(v: Any, n: int | None, where: str) -> int:
    if type(v) is not list or (n is not None and len(v) != n):
        raise DriftlineError(f"{where}: expected a list of {n if n is not None else ''} integers")
    if v and ({type(x) for x in v} != {int} or min(v) < _INT64[0] or max(v) > _INT64[1]):
        raise DriftlineError(f"{where}: expected 64-bit integers")
    return len(v)


def _ids(v: Any, where: str) -> int:
    if type(v) is not list or not all(type(x) is str for x in v):
        raise DriftlineError(f"{where}: expected a list of string ids")
    return len(v)


def _floats(v: Any, n: int, where: str) -> None:
    """As `floats_to_json` writes them: numbers, null (NaN), "inf" and "-inf"."""
    if type(v) is not list or len(v) != n:
        raise DriftlineError(f"{where}: expected a list of {n} numbers")
    if not {type(x) for x in v} <= _FLOAT_TYPES or not all(
        x in ("inf", "-inf") for x in v if type(x) is str
    ):
        raise DriftlineError(f"{where}: expected numbers, null, 'inf' or '-inf'")


def _count(v: Any, where: str, hi: int = 2**62) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        raise DriftlineError(f"{where}: got {str(v)[:40]!r}; expected an integer >= 0")
    return v


def _check_op(op: Any, where: str) -> None:
    if type(op) is not list or not op or op[0] not in ("p", "l", "e", "w"):
        raise DriftlineError(f"{where}: not a 'p', 'l', 'e' or 'w' entry")
    kind = op[0]
    if kind == "w":
        if len(op) != 2:
            raise DriftlineError(f"{where}: a 'w' entry is ['w', feature columns]")
        _count(op[1], f"{where}[1]", 1 << 20)
        return
    if kind == "e":
        if len(op) != 2:
            raise DriftlineError(f"{where}: an 'e' entry is ['e', time]")
        _ints([op[1]], 1, f"{where}[1]")
        return
    if kind == "l":
        if len(op) != 4:
            raise DriftlineError(f"{where}: an 'l' entry is ['l', ids, labels, times]")
        n = _ids(op[1], f"{where}[1]")
        _floats(op[2], n, f"{where}[2]")
        _ints(op[3], n, f"{where}[3]")
        return
    if len(op) != 6:
        raise DriftlineError(f"{where}: a 'p' entry is ['p', ids, times, scores, labels, features]")
    n = _ids(op[1], f"{where}[1]")
    _ints(op[2], n, f"{where}[2]")
    _floats(op[3], n, f"{where}[3]")
    if op[4] is not None:
        _floats(op[4], n, f"{where}[4]")
    f = op[5]
    if f is not None:
        if type(f) is not list or len(f) != 2:
            raise DriftlineError(f"{where}[5]: features are [columns, values]")
        cols = _count(f[0], f"{where}[5][0]", 1 << 20)
        _floats(f[1], n * cols, f"{where}[5][1]")


def _check_store(v: Any, where: str) -> None:
    if type(v) is not dict or set(v) != {"ids", "t", "n_cols", "vals"}:
        raise DriftlineError(f"{where}: expected {{ids, t, n_cols, vals}}")
    n = _ids(v["ids"], f"{where}.ids")
    _ints(v["t"], n, f"{where}.t")
    cols = _count(v["n_cols"], f"{where}.n_cols", 1 << 20)
    rows = v["vals"]  # one list of n_cols numbers per id
    if type(rows) is not list or len(rows) != n:
        raise DriftlineError(f"{where}.vals: expected {n} rows")
    for i, row in enumerate(rows):
        _floats(row, cols, f"{where}.vals[{i}]")


def check_log_entry(kind: str, data: Any) -> None:
    """`DriftlineError` unless ``data`` has the shape of a `LoggedLabelJoin.drain` ``kind``
    entry ("delta" or "checkpoint"): lists of string ids, integer times, numbers.

    Examples
    --------
    >>> check_log_entry("delta", [["e", 5], ["l", ["a"], [1.0], [7]]])
    >>> check_log_entry("delta", [["l", ["a"], ["__import__('os')"], [7]]])
    Traceback (most recent call last):
    ...
    driftline.errors.DriftlineError: delta[0][2]: expected numbers, null, 'inf' or '-inf'
    """
    if kind == "delta":
        if type(data) is not list:
            raise DriftlineError("delta: expected a list of entries")
        for i, op in enumerate(data):
            _check_op(op, f"delta[{i}]")
        return
    if kind != "checkpoint":
        raise DriftlineError(f"unknown label-join log entry kind {kind!r}")
    if type(data) is not dict or set(data) != {"join", "last_expire_ms"}:
        raise DriftlineError("checkpoint: expected {join, last_expire_ms}")
    if data["last_expire_ms"] is not None:
        _ints([data["last_expire_ms"]], 1, "checkpoint.last_expire_ms")
    join = data["join"]
    keys = {"kind", "params", "n_features", "counters", "predictions", "labels", "joined"}
    if type(join) is not dict or not keys <= set(join) or join["kind"] != "label_join":
        raise DriftlineError(f"checkpoint.join: expected a label_join snapshot with {sorted(keys)}")
    counters = join["counters"]
    if type(counters) is not dict:
        raise DriftlineError("checkpoint.join.counters: expected an object")
    for k, v in counters.items():
        _count(v, f"checkpoint.join.counters.{k}")
    if join["n_features"] is not None:
        _count(join["n_features"], "checkpoint.join.n_features", 1 << 20)
    for store in ("predictions", "labels", "joined"):
        _check_store(join[store], f"checkpoint.join.{store}")


class LoggedLabelJoin:
    """`streams.labels.LabelJoin` whose calls are logged for incremental persistence.

    Parameters
    ----------
    ttl_ms, max_pending
        As `streams.labels.LabelJoin`.
    min_checkpoint_rows
        A checkpoint is taken only once at least this many rows were logged since the last one.
    """

    def __init__(self, ttl_ms: int, max_pending: int = 1_000_000,
                 min_checkpoint_rows: int = 50_000) -> None:  # fmt: skip
        self.join = LabelJoin(ttl_ms, max_pending)
        self.min_checkpoint_rows = int(min_checkpoint_rows)
        self.seq = 0  # number of the last drained delta or checkpoint
        self.checkpoint_seq: int | None = None
        self._ops: list[list[Any]] = []
        self._rows_since_checkpoint = 0
        self._last_expire: int | None = None

    # ------------------------------------------------------------------ logged calls
    def add_predictions(
        self,
        ids: np.ndarray,
        event_time_ms: np.ndarray,
        scores: np.ndarray,
        labels_pred: np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> JoinedBatch:
        ids = np.asarray(ids, dtype=object)
        t = np.asarray(event_time_ms, dtype=np.int64)
        s = np.asarray(scores, dtype=np.float64)
        lp = None if labels_pred is None else np.asarray(labels_pred, dtype=np.float64)
        f = None if features is None else np.asarray(features, dtype=np.float64)
        out = self.join.add_predictions(ids, t, s, lp, f)
        self._ops.append([
            "p", ids.tolist(), t.tolist(), floats_to_json(s),
            None if lp is None else floats_to_json(lp),
            None if f is None else [f.shape[1], floats_to_json(f.ravel())],
        ])  # fmt: skip
        self._rows_since_checkpoint += ids.shape[0]
        return out

    def add_labels(
        self, ids: np.ndarray, labels: np.ndarray, label_time_ms: np.ndarray
    ) -> JoinedBatch:
        ids = np.asarray(ids, dtype=object)
        y = np.asarray(labels, dtype=np.float64)
        t = np.asarray(label_time_ms, dtype=np.int64)
        out = self.join.add_labels(ids, y, t)
        self._ops.append(["l", ids.tolist(), floats_to_json(y), t.tolist()])
        self._rows_since_checkpoint += ids.shape[0]
        return out

    def set_feature_count(self, n: int) -> None:
        """`streams.labels.LabelJoin.set_feature_count`, logged (when it changes anything)."""
        if self.join._n_features is None or int(n) == self.join._n_features:
            return
        self.join.set_feature_count(n)
        self._ops.append(["w", int(n)])

    def expire(self, now_ms: int) -> int:
        now = int(now_ms)
        if self._last_expire is not None and now <= self._last_expire:
            return 0  # nothing can expire that did not already
        self._last_expire = now
        self._ops.append(["e", now])
        return self.join.expire(now)

    # ------------------------------------------------------------------ persistence
    @property
    def live_rows(self) -> int:
        j = self.join
        return j.n_pending + j.n_pending_labels + len(j._joined)

    def drain(self) -> tuple[str, int, Any] | None:
        """The calls since the last drain: ``("delta", seq, ops)``, or ``("checkpoint", seq,
        snapshot)`` when a checkpoint is due (it includes those calls); None if nothing happened.
        """
        if not self._ops:
            return None
        self.seq += 1
        due = self._rows_since_checkpoint >= max(self.live_rows, self.min_checkpoint_rows)
        if due:
            self._ops = []
            self._rows_since_checkpoint = 0
            self.checkpoint_seq = self.seq
            snap = {"join": self.join.snapshot(), "last_expire_ms": self._last_expire}
            return ("checkpoint", self.seq, snap)
        ops, self._ops = self._ops, []
        return ("delta", self.seq, ops)

    def position(self) -> dict[str, Any]:
        """What a restore needs besides the stored records: the last seq and the checkpoint's."""
        return {"seq": self.seq, "checkpoint_seq": self.checkpoint_seq}

    def apply(self, ops: Sequence[list[Any]]) -> None:
        """Replay the calls of one delta (no logging)."""
        j = self.join
        for op in ops:
            kind = op[0]
            if kind == "p":
                _, ids, t, s, lp, f = op
                ids_a = np.empty(len(ids), dtype=object)
                ids_a[:] = ids
                feats = None if f is None else float_array(f[1]).reshape(len(ids), f[0])
                j.add_predictions(
                    ids_a, np.asarray(t, dtype=np.int64), float_array(s),
                    None if lp is None else float_array(lp), feats,
                )  # fmt: skip
            elif kind == "l":
                _, ids, y, t = op
                ids_a = np.empty(len(ids), dtype=object)
                ids_a[:] = ids
                j.add_labels(ids_a, float_array(y), np.asarray(t, dtype=np.int64))
            elif kind == "w":
                j.set_feature_count(int(op[1]))
            elif kind == "e":
                j.expire(int(op[1]))
                self._last_expire = int(op[1])
            else:
                raise DriftlineError(f"state: unknown label-join log entry {kind!r}")

    @classmethod
    def recover(
        cls,
        ttl_ms: int,
        max_pending: int,
        checkpoint: tuple[int, dict[str, Any]] | None,
        deltas: Sequence[Sequence[list[Any]]],
        min_checkpoint_rows: int = 50_000,
    ) -> LoggedLabelJoin:
        """Rebuild from ``checkpoint`` = (seq, snapshot) or None, then ``deltas`` in order (the
        ones numbered after the checkpoint)."""
        self = cls(ttl_ms, max_pending, min_checkpoint_rows)
        if checkpoint is not None:
            self.checkpoint_seq, snap = checkpoint
            self.join.restore(snap["join"])
            self._last_expire = snap["last_expire_ms"]
            self.seq = self.checkpoint_seq
        for ops in deltas:
            self.apply(ops)
            self._rows_since_checkpoint += sum(len(op[1]) for op in ops if op[0] in ("p", "l"))
            self.seq += 1
        return self
