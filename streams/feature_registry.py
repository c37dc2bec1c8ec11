"""Small integer ids that are recycled: `SlotPool`, and `EntityRegistry` (entity string <-> id).

The feature engine's states live in preallocated numpy columns indexed by small ints: the rows of
a tumbling/hopping state (one per live (entity, window)) and the entity ids of the sliding/count
states. Both hand out ids from a `SlotPool`, which reuses freed ids before growing.

Examples
--------
>>> pool = SlotPool()
>>> pool.take(3).tolist(), pool.size
([0, 1, 2], 3)
>>> pool.release([2, 0])
>>> pool.take(3).tolist(), pool.size
([2, 0, 3], 4)
>>> reg = EntityRegistry()
>>> reg.lookup(["b", "a"]).tolist(), reg.lookup(["a", "c"]).tolist()
([0, 1], [1, 2])
>>> uniq, inv = factorize(["b", "a", "b", "a" + chr(0)])
>>> uniq, inv.tolist()
(['a', 'a\\x00', 'b'], [2, 0, 2, 1])
"""

from __future__ import annotations

from collections import deque
from itertools import repeat

import numpy as np

__all__ = ["EntityRegistry", "SlotPool", "factorize"]


def factorize(names: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct ``names`` in sorted order, and each name's index in them (``int64``).

    Same result as ``np.unique(np.array(names, dtype=str), return_inverse=True)`` without its
    fixed-width array: that one holds ``len(names) x`` the longest name x 4 bytes (one
    1,000,000-character id in a batch of 10,000 asked for 37 GiB), this one a pointer per name.
    It is also faster (hashing, not sorting, the repeats) and keeps trailing NULs, which a
    fixed-width unicode array drops (``"a\\x00"`` was ``"a"``).
    """
    uniq = sorted(set(names))
    index = dict(zip(uniq, range(len(uniq)), strict=True))
    return uniq, np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))


class SlotPool:
    """Integer slots ``0 .. size - 1``; released slots are handed out again before new ones.

    `take` reuses the most recently released slots (in the order they were released) and then
    extends ``size``; the caller grows its columns to ``size``.
    """

    def __init__(self) -> None:
        self.size = 0
        self.free: list[int] = []

    def take(self, k: int) -> np.ndarray:
        """``k`` slots (``int64``): released ones first, then fresh ones above ``size``."""
        n_free = min(k, len(self.free))
        out = np.empty(k, dtype=np.int64)
        out[:n_free] = self.free[len(self.free) - n_free :]
        del self.free[len(self.free) - n_free :]
        n_new = k - n_free
        if n_new:
            out[n_free:] = np.arange(self.size, self.size + n_new)
            self.size += n_new
        return out

    def release(self, slots: list[int]) -> None:
        self.free.extend(slots)


class EntityRegistry:
    """Entity string <-> small int id; ids are recycled once no state refers to them.

    Per id it also keeps when the entity was last seen (`touch`): its newest event time and
    the arrival sequence number of its latest event, which `FeatureEngine` uses to drop idle
    entities and, with ``max_entities``, the least recently seen ones (`drop`).
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names = np.empty(0, dtype=object)  # id -> entity string (None when free)
        self.used = np.zeros(0, dtype=bool)  # id -> held by an entity
        self.max_ts = np.zeros(0, dtype=np.int64)  # id -> newest event time seen
        self.last_seq = np.zeros(0, dtype=np.int64)  # id -> arrival seq of its latest event
        self.slots = SlotPool()

    def lookup(self, names: list[str]) -> np.ndarray:
        """The ids of ``names`` (``int64``), registering the new ones (never seen: their
        ``max_ts`` and ``last_seq`` are the int64 minimum)."""
        out = np.fromiter(map(self.ids.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        new = np.flatnonzero(out < 0)
        if new.size:
            ids = self.slots.take(new.size)
            grow = self.slots.size - self.names.shape[0]
            if grow:
                low = np.iinfo(np.int64).min
                self.names = np.concatenate([self.names, np.empty(grow, dtype=object)])
                self.used = np.concatenate([self.used, np.zeros(grow, dtype=bool)])
                self.max_ts = np.concatenate([self.max_ts, np.full(grow, low, dtype=np.int64)])
                self.last_seq = np.concatenate([self.last_seq, np.full(grow, low, dtype=np.int64)])
            out[new] = ids
            new_names = [names[i] for i in new.tolist()]
            self.ids.update(zip(new_names, ids.tolist(), strict=True))
            self.names[ids] = new_names
            self.used[ids] = True
        return out

    def ids_of(self, names: list[str]) -> np.ndarray:
        """`lookup` of a list with repeats, looking up each distinct name once."""
        if not names:
            return np.zeros(0, dtype=np.int64)
        uniq, inv = factorize([str(n) for n in names])
        return self.lookup(uniq)[inv]

    def touch(self, ids: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> None:
        """Entities ``ids`` (repeats allowed) were seen with events at ``ts``, ``seq``."""
        np.maximum.at(self.max_ts, ids, ts)
        np.maximum.at(self.last_seq, ids, seq)

    def live(self) -> np.ndarray:
        """The ids held now."""
        return np.flatnonzero(self.used)

    def drop(self, ids: np.ndarray) -> None:
        """Forget the entities ``ids`` (their ids are handed out again)."""
        if not ids.size:
            return
        deque(map(self.ids.__delitem__, self.names[ids].tolist()), maxlen=0)
        low = np.iinfo(np.int64).min
        self.names[ids] = None
        self.used[ids] = False
        self.max_ts[ids] = low
        self.last_seq[ids] = low
        self.slots.release(ids.tolist())
