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

__all__ = ["LoggedLabelJoin"]


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
            self._rows_since_checkpoint += sum(len(op[1]) for op in ops if op[0] != "e")
            self.seq += 1
        return self
