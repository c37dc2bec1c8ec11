"""The stationary streams the ``focus`` / ``focus_scale`` calibration covers.

``bench/calibrate_sequential.py`` takes, for every threshold, the largest level over these
streams; ``bench/focus_bench.py`` and the tests measure the false alarms on them. Each maps a
generator and a shape to values.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> sorted(PANEL)
['bimodal', 'lognormal', 'normal', 'poisson2', 'rounded', 'student_t3', 'uniform']
>>> PANEL["rounded"](rng, 5).tolist()
[0.0, -0.0, 1.0, 0.0, -1.0]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["PANEL", "Gen"]

Gen = Callable[[np.random.Generator, "int | tuple[int, ...]"], np.ndarray]

#: Name -> generator of stationary values: skewed, heavy-tailed, light-tailed, bimodal, integer
#: and heavily tied (a normal rounded to integers: 5 values hold 99.9%, 38% on 0).
PANEL: dict[str, Gen] = {
    "normal": lambda r, s: r.normal(0.0, 1.0, s),
    "lognormal": lambda r, s: r.lognormal(0.0, 1.0, s),
    "student_t3": lambda r, s: r.standard_t(3, s),
    "uniform": lambda r, s: r.uniform(0.0, 1.0, s),
    "bimodal": lambda r, s: np.where(r.random(s) < 0.5, -2.0, 2.0) + r.normal(0.0, 1.0, s),
    "poisson2": lambda r, s: r.poisson(2.0, s).astype(np.float64),
    "rounded": lambda r, s: np.round(r.normal(0.0, 1.0, s)),
}
