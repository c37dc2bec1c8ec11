"""A seeded event stream whose features ``x`` and ``y`` flip correlation (+0.8 -> -0.8) while
every marginal stays N(0, 1), and a spec that watches them (shared by the stage, replay and
broker tests of ``[[multivariate]]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.specs import minimal_spec

T0 = 1_700_000_000_000


def flip_events(n_before: int, n_after: int, seed: int = 0, rho: float = 0.8) -> list[dict]:
    """Events ``{user_id, ts, amount, x, y, z}``: ``x``/``y`` correlated ``rho`` for the first
    ``n_before``, ``-rho`` after; ``z`` independent; one event per 10 ms."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for i, r in enumerate((rho,) * n_before + (-rho,) * n_after):
        x, e, z = rng.standard_normal(3)
        y = r * x + np.sqrt(1 - r * r) * e
        out.append({"user_id": f"u{i % 50}", "ts": T0 + 10 * i, "amount": float(abs(x) + 1),
                    "x": float(x), "y": float(y), "z": float(z)})  # fmt: skip
    return out


MULTIVARIATE = """
[[multivariate]]
name = "xyz_pca"
features = ["x", "y", "z"]
reference_size = 1000
window_size = 250
"""


def flip_spec(name: str, topic: str = "events", extra: str = MULTIVARIATE) -> str:
    """TOML of a pipeline reading ``x``, ``y``, ``z`` with ``extra`` (the multivariate entry)."""
    spec = minimal_spec(name, topic, extra)
    return spec.replace('amount = "float"\n', 'amount = "float"\nx = "float"\ny = "float"\n'
                        'z = "float"\n', 1)  # fmt: skip
