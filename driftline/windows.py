"""Event-time window arithmetic: driftline's public Python API.

Exact integer arithmetic (epoch milliseconds) for the windows a spec's ``[[features]]`` use,
for notebooks and your own services:

* `tumbling_start_ms` / `window_end_ms`: the half-open tumbling window ``[start, start +
  size)`` that contains a time (floored, so correct before 1970 too);
* `hopping_starts_ms`: the ``size // step`` hopping windows that contain each time;
* `sliding_range_ms`: the half-open range ``(ts - size, ts]`` a sliding window looks back on;
* `check_size_ms`, `check_step_ms`: validate sizes as the spec does (`driftline.errors.SpecError`
  naming the key);
* `WINDOW_KINDS`: ``tumbling``, ``hopping``, ``sliding``, ``count``.

Aggregators are in `driftline.features`. Everything else (``driftline.streams...``) is
internal and may change.

Examples
--------
>>> import numpy as np
>>> from driftline.windows import hopping_starts_ms, tumbling_start_ms
>>> rng = np.random.default_rng(0)
>>> ts = rng.integers(0, 3_600_000, 4)  # four events within an hour
>>> ts.tolist()
[3062247, 2293062, 1840091, 971232]
>>> tumbling_start_ms(ts, 60_000).tolist()  # their minute
[3060000, 2280000, 1800000, 960000]
>>> hopping_starts_ms(ts[:1], 60_000, 30_000).tolist()  # minutes that hop every 30 s
[[3060000, 3030000]]
"""

from __future__ import annotations

from driftline.streams import windows as _windows
from driftline.streams.windows import *  # noqa: F403 - the public names are exactly these

__all__ = list(_windows.__all__)
