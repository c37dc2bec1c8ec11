"""A seeded synthetic event stream whose distribution shifts at a known event index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SyntheticStream:
    """Events ``{"user_id", "ts", "amount", "latency_ms", "country"}`` with a shift at ``shift_at``.

    Before ``shift_at``: amount ~ N(50, 10), latency_ms ~ N(100, 15). From ``shift_at`` on:
    amount ~ N(50 + amount_shift, 10), latency_ms ~ N(100 + latency_shift, 15). Event time
    advances ``step_ms`` per event from ``start_ms``; entities are drawn uniformly.

    Examples
    --------
    >>> s = SyntheticStream(n=4, shift_at=2, seed=1, n_entities=3)
    >>> [e["ts"] for e in s.events()]
    [1767225600000, 1767225600010, 1767225600020, 1767225600030]
    """

    n: int = 200_000
    shift_at: int = 120_000
    seed: int = 7
    n_entities: int = 1_000
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    step_ms: int = 10
    amount_shift: float = 8.0
    latency_shift: float = 30.0

    def arrays(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        after = np.arange(self.n) >= self.shift_at
        return {
            "user_id": rng.integers(0, self.n_entities, self.n),
            "ts": self.start_ms + self.step_ms * np.arange(self.n, dtype=np.int64),
            "amount": rng.normal(50.0, 10.0, self.n) + self.amount_shift * after,
            "latency_ms": rng.normal(100.0, 15.0, self.n) + self.latency_shift * after,
            "country": rng.choice(np.array(["de", "fr", "us", "br"]), self.n),
        }

    def events(self) -> Iterator[dict[str, Any]]:
        a = self.arrays()
        for u, ts, am, lat, c in zip(
            a["user_id"].tolist(),
            a["ts"].tolist(),
            a["amount"].tolist(),
            a["latency_ms"].tolist(),
            a["country"].tolist(),
            strict=True,
        ):
            yield {
                "user_id": f"u{u}",
                "ts": ts,
                "amount": round(am, 4),
                "latency_ms": round(lat, 4),
                "country": c,
            }


def labels_for(amount: np.ndarray, latency_ms: np.ndarray, seed: int) -> np.ndarray:
    """Ground-truth labels for training the demo model: P(y=1) rises with amount and latency."""
    rng = np.random.default_rng(seed)
    z = 0.15 * (amount - 50.0) + 0.05 * (latency_ms - 100.0)
    return (rng.random(len(amount)) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
