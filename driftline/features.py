"""Streaming aggregators for notebooks and your own services: driftline's public Python API.

The aggregations a spec's ``[[features]] agg`` names, as small classes with the life cycle
``initialise() -> state``, ``add(state, values, ts_ms) -> state``, ``merge(a, b) -> state`` and
``result(state) -> float``. States are plain Python data: keep one per window or entity, save
it anywhere, and adding a batch in pieces gives the same state as adding it at once.

==================  ===================  ==============================================
class               ``agg``              result
==================  ===================  ==============================================
`Count`             ``count``            number of events
`Sum`               ``sum``              left-to-right float sum
`Mean`              ``mean``             sum / count
`Variance`, `Std`   ``var``, ``std``     sample variance (ddof=1), standard deviation
`Min`, `Max`        ``min``, ``max``     smallest / largest value
`First`, `Last`     ``first``, ``last``  value at the earliest / latest event time
`Distinct`          ``distinct``         exact distinct count up to ``cap``
`Rate`              ``rate``             events per second over ``length_ms``
`SincePrev`         ``since_prev``       ms since the latest earlier event
==================  ===================  ==============================================

Also public: `AGGREGATORS` (the registry: name -> class), `AGGREGATIONS` (the names),
`build_aggregator`, `register_aggregator`, `DISTINCT_CAP`. Event-time window arithmetic is in
`driftline.windows`. Everything else (``driftline.streams...``) is internal and may change.

Examples
--------
>>> import numpy as np
>>> from driftline.features import Mean, Std
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(5.0, 2.0, 1_000)
>>> m, s = Mean(), Std()
>>> state = m.add(m.initialise(), x[:400])
>>> state = m.add(state, x[400:])  # in two pieces, the same as at once
>>> round(m.result(state), 6), round(s.result(s.add(s.initialise(), x)), 6)
(4.903943, 1.954483)
"""

from __future__ import annotations

from driftline.streams.aggregators import (
    AGGREGATIONS,
    AGGREGATORS,
    DISTINCT_CAP,
    Count,
    Distinct,
    First,
    Last,
    Max,
    Mean,
    Min,
    Rate,
    SincePrev,
    Std,
    Sum,
    Variance,
    build_aggregator,
    register_aggregator,
)

__all__ = [
    "AGGREGATIONS",
    "AGGREGATORS",
    "DISTINCT_CAP",
    "Count",
    "Distinct",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Rate",
    "SincePrev",
    "Std",
    "Sum",
    "Variance",
    "build_aggregator",
    "register_aggregator",
]
