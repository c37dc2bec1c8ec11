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
    """Entity string <-> small int id; ids are recycled once no state refers to them (`gc`)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names = np.empty(0, dtype=object)  # id -> entity string (None when free)
        self.slots = SlotPool()
        self.next_gc = 4096

    def lookup(self, names: list[str]) -> np.ndarray:
        """The ids of ``names`` (``int64``), registering the new ones."""
        out = np.fromiter(map(self.ids.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        new = np.flatnonzero(out < 0)
        if new.size:
            ids = self.slots.take(new.size)
            grow = self.slots.size - self.names.shape[0]
            if grow:
                self.names = np.concatenate([self.names, np.empty(grow, dtype=object)])
            out[new] = ids
            new_names = [names[i] for i in new.tolist()]
            self.ids.update(zip(new_names, ids.tolist(), strict=True))
            self.names[ids] = new_names
        return out

    def ids_of(self, names: list[str]) -> np.ndarray:
        """`lookup` of a list with repeats, looking up each distinct name once."""
        if not names:
            return np.zeros(0, dtype=np.int64)
        uniq, inv = factorize([str(n) for n in names])
        return self.lookup(uniq)[inv]

    def gc_due(self) -> bool:
        return len(self.ids) >= self.next_gc

    def gc(self, live: np.ndarray) -> None:
        """Free every id not in ``live`` (the ids some state still holds), when due."""
        if not self.gc_due():
            return
        alive = np.zeros(self.names.shape[0], dtype=bool)
        alive[live] = True
        dead = np.flatnonzero(~alive & (self.names != None))  # noqa: E711
        for name in self.names[dead].tolist():
            del self.ids[name]
        self.names[dead] = None
        self.slots.release(dead.tolist())
        self.next_gc = max(4096, 2 * len(self.ids))
