"""PositionLog: window starts equal a brute-force lookup over every value fed, any batching."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.errors import SpecError
from driftline.streams.positions import PositionLog


@pytest.mark.parametrize("capacity", [1, 5, 64])
@pytest.mark.parametrize("batch", [1, 3, 17, 200])
def test_window_start_matches_brute_force(capacity: int, batch: int) -> None:
    rng = np.random.default_rng(capacity * 1000 + batch)
    n = 400
    ts = np.cumsum(rng.integers(0, 5, n)) + 1_000
    off = np.arange(n) * 2 + 7  # gaps, like transaction markers
    finite = rng.random(n) > 0.2
    fed = np.flatnonzero(finite)  # rows a detector saw, in order
    log = PositionLog(capacity)
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        for i in range(min(batch, n - s)):
            row = s + i
            seen = fed[fed <= row]
            for n_cur in (1, 2, capacity, capacity + 3):
                got = log.window_start(ts[sl], off[sl], finite[sl], i, n_cur)
                k = seen.size - n_cur
                in_batch = seen[k] >= s if 0 <= k < seen.size else False
                if k < 0 or (
                    not in_batch and seen.size - k - np.count_nonzero(seen >= s) > capacity
                ):
                    assert got is None
                else:
                    assert got == (int(ts[seen[k]]), int(off[seen[k]]))
        log.extend(ts[sl], off[sl], finite[sl])
        snap = log.snapshot()
        log = PositionLog(capacity)
        log.restore(snap)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_capacity_is_validated(bad: object) -> None:
    with pytest.raises(SpecError, match="capacity"):
        PositionLog(bad)  # type: ignore[arg-type]
