"""Label-free performance estimation (CBPE) against the realized metrics on seeded streams.

A model scores ``x`` as ``sigmoid(3 x)`` (it ranks right but is over-confident); the truth is
``P(y = 1 | x) = sigmoid(2 x - 0.5)``. The calibration is fitted on 5,000 reference events
(``x ~ N(0, 1)``), then 20 chunks of 1,000 predictions follow:

- ``covariate``: the inputs move (the mean of ``x`` goes from 0 to 2 over the chunks), the concept
  holds. CBPE should follow the realized metrics within its band.
- ``concept``: the inputs stay, the concept flips (``P(y = 1 | x) = sigmoid(0.5 - 2 x)``). CBPE
  cannot see it: its estimate stays at the reference's level while the realized metrics collapse
  (the documented limit).

Run ``python bench/cbpe_bench.py`` (a few CPU seconds) for the mean absolute error of the
accuracy / F1 / AUC estimates and how many chunks' realized value lies inside the band, over
seeds 0-9; ``tests/streams/test_performance_estimation.py`` asserts the same on fewer seeds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from driftline.streams.model_metrics import classification_metrics
from driftline.streams.performance_estimation import ESTIMATED_METRICS, PerformanceEstimator

REFERENCE = 5_000
CHUNK = 1_000
CHUNKS = 20


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def seeded_stream(seed: int, shift: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(reference scores, reference labels, stream scores, stream labels) of one seeded run;
    ``shift`` is ``"covariate"``, ``"concept"`` or ``"none"``."""
    rng = np.random.default_rng(seed)
    x_ref = rng.normal(0.0, 1.0, REFERENCE)
    y_ref = (rng.random(REFERENCE) < _sigmoid(2 * x_ref - 0.5)).astype(np.float64)
    mu = np.repeat(np.linspace(0.0, 2.0, CHUNKS), CHUNK) if shift == "covariate" else 0.0
    x = rng.normal(0.0, 1.0, CHUNKS * CHUNK) + mu
    logit = 0.5 - 2 * x if shift == "concept" else 2 * x - 0.5
    y = (rng.random(x.size) < _sigmoid(logit)).astype(np.float64)
    return _sigmoid(3 * x_ref), y_ref, _sigmoid(3 * x), y


@dataclass
class Run:
    """Per chunk and metric: estimate, lower, upper, realized (arrays of CHUNKS)."""

    estimate: dict[str, np.ndarray]
    lower: dict[str, np.ndarray]
    upper: dict[str, np.ndarray]
    realized: dict[str, np.ndarray]

    def mae(self, m: str) -> float:
        return float(np.mean(np.abs(self.estimate[m] - self.realized[m])))

    def inside(self, m: str) -> float:
        r = self.realized[m]
        return float(np.mean((self.lower[m] <= r) & (r <= self.upper[m])))


def run(seed: int, shift: str, batch: int = 777) -> Run:
    """CBPE on one seeded stream fed in batches of ``batch`` predictions."""
    s_ref, y_ref, s, y = seeded_stream(seed, shift)
    est = PerformanceEstimator(chunk_size=CHUNK, reference_size=REFERENCE)
    est.add_reference(s_ref, y_ref)
    chunks = []
    offsets = np.arange(s.size)
    for i in range(0, s.size, batch):
        chunks += est.update(s[i : i + batch], offsets[i : i + batch], offsets[i : i + batch])
    out = Run({}, {}, {}, {})
    for m in ESTIMATED_METRICS:
        out.estimate[m] = np.array([c.metrics[m][0] for c in chunks])
        out.lower[m] = np.array([c.metrics[m][1] for c in chunks])
        out.upper[m] = np.array([c.metrics[m][2] for c in chunks])
        out.realized[m] = np.array(
            [
                classification_metrics(y[c.first_offset : c.last_offset + 1],
                                       s[c.first_offset : c.last_offset + 1])[m]
                for c in chunks
            ]
        )  # fmt: skip
    return out


def main(argv: list[str]) -> int:
    seeds = range(int(argv[0]) if argv else 10)
    print(f"{len(seeds)} seeds x {CHUNKS} chunks of {CHUNK}; reference {REFERENCE} events")
    print(f"{'shift':10} {'metric':10} {'MAE':>8} {'max err':>8} {'in band':>8}")
    for shift in ("none", "covariate", "concept"):
        runs = [run(seed, shift) for seed in seeds]
        for m in ("accuracy", "f1", "auc"):
            err = np.concatenate([np.abs(r.estimate[m] - r.realized[m]) for r in runs])
            inside = np.mean([r.inside(m) for r in runs])
            print(f"{shift:10} {m:10} {err.mean():8.4f} {err.max():8.4f} {inside:8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
