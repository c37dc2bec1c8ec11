"""Label-free performance estimation of a binary classifier (CBPE, as NannyML does it).

Given calibrated probabilities ``p_i = P(y_i = 1 | score_i)`` (`streams.calibration`), each event
contributes its *expected* confusion-matrix counts: a predicted positive (``score >= threshold``)
is a true positive with probability ``p_i`` and a false positive with ``1 - p_i``; a predicted
negative a false negative with ``p_i`` and a true negative with ``1 - p_i``. The estimates
(`expected_metrics`) are NannyML's: accuracy ``(E[TP] + E[TN]) / n``, precision
``E[TP] / (E[TP] + E[FP])``, recall ``E[TP] / (E[TP] + E[FN])``, F1
``2 E[TP] / (2 E[TP] + E[FP] + E[FN])`` and ROC AUC from the expected ROC curve (events ranked
by their raw score, expected true- and false-positive rates accumulated from ``p_i``; tied scores
form one step, so ties count half as in ``sklearn.metrics.roc_auc_score``). A ratio whose
denominator is 0 is NaN.

The confidence band (`sampled_spread`) is the spread of the metric the labels *would* give if
each label were drawn from its calibrated probability (independent Bernoulli draws: the
Poisson-binomial model CBPE rests on), by seeded Monte Carlo: ``estimate +- sigmas * std``,
clipped to [0, 1]. NannyML's own band is ``3 *`` a sampling error from the reference; with
``sigmas = 3`` both are 3-sigma bands of the chunk's sampling noise.

`PerformanceEstimator` runs it on a stream: non-overlapping chunks of ``chunk_size``
consecutive predictions (NannyML's size-based chunks), calibration fitted on the first
``reference_size`` labelled examples (or given). A chunk's estimate does not depend on how the
stream is batched, and the state is plain JSON.

**What it cannot see.** CBPE assumes ``P(y | score)`` stays what it was on the reference: it
follows *covariate* shift (the inputs move, the relation between inputs and labels holds), not
*concept* shift (the same inputs now mean another label). Under concept shift the estimate stays
where the calibration puts it while the realized metric moves: use the label-based model metrics
and the ``error`` detectors for that (tested: `tests/streams/test_performance_estimation.py`).

Examples
--------
>>> p = np.array([0.9, 0.8, 0.3, 0.1])
>>> r = expected_metrics(p, p, threshold=0.5)
>>> {k: round(v, 3) for k, v in r.items()}
{'accuracy': 0.825, 'precision': 0.85, 'recall': 0.81, 'f1': 0.829, 'auc': 0.863}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.stats import rankdata

from driftline.errors import DriftlineError
from driftline.streams.calibration import IsotonicCalibrator
from driftline.streams.labels import float_array, floats_to_json
from driftline.streams.params import float_param, int_param
from driftline.streams.snapshots import check_snapshot, reading_snapshot

__all__ = [
    "ESTIMATED_METRICS",
    "ChunkEstimate",
    "PerformanceEstimator",
    "expected_auc",
    "expected_metrics",
    "sampled_spread",
]

ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "auc")

#: Bernoulli draws per chunk evaluation are made in blocks of at most this many values.
_BLOCK_VALUES = 4_000_000


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def expected_auc(probs: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of the expected ROC curve: events ranked by ``scores`` (descending), expected
    true positives ``sum p`` and false positives ``sum 1 - p`` accumulated over the ranks.

    NaN when no positive or no negative is expected.

    Examples
    --------
    >>> expected_auc(np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.9, 0.8, 0.3, 0.1]))
    1.0
    >>> expected_auc(np.array([0.5, 0.5]), np.array([0.7, 0.7]))
    0.5
    >>> expected_auc(np.array([1.0, 1.0]), np.array([0.7, 0.2]))
    nan
    """
    p = np.asarray(probs, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if p.size == 0:
        return math.nan
    order = np.argsort(-s, kind="stable")
    s, p = s[order], p[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last row of each tied group
    tps = np.r_[0.0, np.cumsum(p)[ends]]
    fps = np.r_[0.0, np.cumsum(1.0 - p)[ends]]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return math.nan
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def expected_metrics(probs: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """CBPE estimates of `ESTIMATED_METRICS` (see the module docstring).

    Parameters
    ----------
    probs
        Calibrated P(class 1) per event.
    scores
        The model's raw scores (they decide the predicted class and the ranking).
    threshold
        A score ``>= threshold`` predicts class 1.
    """
    p = np.asarray(probs, dtype=np.float64)
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    n = p.size
    tp = float(p[pred].sum())
    fp = float(np.count_nonzero(pred)) - tp
    fn = float(p[~pred].sum())
    tn = float(n - np.count_nonzero(pred)) - fn
    return {
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": expected_auc(p, scores),
    }


def sampled_spread(
    probs: np.ndarray, scores: np.ndarray, threshold: float, draws: int, seed: Any
) -> dict[str, float]:
    """Standard deviation of each realized metric when every label is drawn from its
    calibrated probability (``draws`` seeded Monte Carlo draws; ties ranked as sklearn does).

    Examples
    --------
    >>> p = np.full(400, 0.8)
    >>> sd = sampled_spread(p, p, 0.5, 2_000, 0)
    >>> round(sd["accuracy"], 3), round(math.sqrt(0.8 * 0.2 / 400), 3)
    (0.02, 0.02)
    """
    p = np.asarray(probs, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    n = p.size
    if n == 0:
        return dict.fromkeys(ESTIMATED_METRICS, math.nan)
    pred = s >= threshold
    n_pred = float(np.count_nonzero(pred))
    ranks = rankdata(s)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {m: [] for m in ESTIMATED_METRICS}
    block = max(1, _BLOCK_VALUES // n)
    done = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        while done < draws:
            k = min(block, draws - done)
            y = rng.random((k, n)) < p
            pos = y.sum(axis=1).astype(np.float64)
            tp = (y & pred).sum(axis=1).astype(np.float64)
            fp, fn = n_pred - tp, pos - tp
            tn = n - tp - fp - fn
            u = y.astype(np.float64) @ ranks - pos * (pos + 1) / 2.0
            out["accuracy"].append((tp + tn) / n)
            out["precision"].append(np.where(n_pred > 0, tp / n_pred, np.nan))
            out["recall"].append(np.where(pos > 0, tp / pos, np.nan))
            out["f1"].append(np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan))
            out["auc"].append(np.where(pos * (n - pos) > 0, u / (pos * (n - pos)), np.nan))
            done += k
    result = {}
    for m, parts in out.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        result[m] = float(v.std()) if v.size >= 2 else math.nan
    return result


@dataclass
class ChunkEstimate:
    """One chunk's estimates: ``metrics[m] = (estimate, lower, upper)`` (NaN when undefined)."""

    index: int
    n: int
    first_offset: int
    last_offset: int
    start_event_time_ms: int
    end_event_time_ms: int
    metrics: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """As on the model-metrics topic (NaN as null)."""

        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "chunk": self.index,
            "n": self.n,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "start_event_time_ms": self.start_event_time_ms,
            "end_event_time_ms": self.end_event_time_ms,
            "metrics": {
                m: {"estimate": num(e), "lower": num(lo), "upper": num(hi)}
                for m, (e, lo, hi) in self.metrics.items()
            },
        }


def estimate_chunk(
    probs: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    draws: int,
    sigmas: float,
    seed: Any,
) -> dict[str, tuple[float, float, float]]:
    """(estimate, lower, upper) per metric of one chunk (band: ``sigmas`` sampled std,
    clipped to [0, 1])."""
    est = expected_metrics(probs, scores, threshold)
    sd = sampled_spread(probs, scores, threshold, draws, seed)
    out = {}
    for m in ESTIMATED_METRICS:
        e, s = est[m], sd[m]
        if math.isfinite(e) and math.isfinite(s):
            out[m] = (e, max(0.0, e - sigmas * s), min(1.0, e + sigmas * s))
        else:
            out[m] = (e, math.nan, math.nan)
    return out


class PerformanceEstimator:
    """CBPE over consecutive chunks of one stream of predictions (one input partition).

    Parameters
    ----------
    chunk_size
        Predictions per chunk (>= 2).
    reference_size
        Labelled examples (`add_reference`) the calibration is fitted on, the first ones
        offered (>= 2); ignored when ``calibration`` is given.
    threshold
        A score ``>= threshold`` predicts class 1.
    draws
        Monte Carlo draws of the confidence band per chunk.
    sigmas
        Half-width of the band in standard deviations.
    calibration
        A fitted `IsotonicCalibrator` (e.g. from a reference profile); None: fit it on the
        first ``reference_size`` labelled examples.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(0.0, 1.0, 6_000)
    >>> y = (rng.random(x.size) < 1 / (1 + np.exp(-2 * x))).astype(float)
    >>> score = 1 / (1 + np.exp(-x))  # ranks right, under-confident
    >>> est = PerformanceEstimator(chunk_size=1_000, reference_size=4_000)
    >>> est.add_reference(score[:4_000], y[:4_000])
    True
    >>> [c] = est.update(score[4_000:5_000], np.arange(1_000), np.arange(1_000))
    >>> e, lo, hi = c.metrics["accuracy"]
    >>> from driftline.streams.model_metrics import classification_metrics
    >>> realized = classification_metrics(y[4_000:5_000], score[4_000:5_000])["accuracy"]
    >>> bool(lo <= realized <= hi), round(e, 2), round(realized, 2)
    (True, 0.78, 0.78)
    """

    kind: ClassVar[str] = "performance_estimator"

    def __init__(
        self,
        chunk_size: int,
        reference_size: int,
        threshold: float = 0.5,
        draws: int = 200,
        sigmas: float = 3.0,
        calibration: IsotonicCalibrator | None = None,
    ) -> None:
        self.chunk_size = int_param("chunk_size", chunk_size, 2)
        self.reference_size = int_param("reference_size", reference_size, 2)
        self.threshold = float_param(
            "threshold", threshold, low=0.0, high=1.0, low_open=False, high_open=False
        )
        self.draws = int_param("draws", draws, 2)
        self.sigmas = float_param("sigmas", sigmas, low=0.0, high=100.0)
        self.fixed_calibration = calibration is not None
        self.calibrator = calibration if calibration is not None else IsotonicCalibrator()
        self._ref_scores = np.empty(0, dtype=np.float64)
        self._ref_labels = np.empty(0, dtype=np.float64)
        self._scores = np.empty(0, dtype=np.float64)
        self._first_offset: int | None = None
        self._t_min: int | None = None
        self._t_max: int | None = None
        self.n_chunks = 0  # chunks completed (estimated or not)
        self.n_uncalibrated_chunks = 0  # completed before the calibration was fitted

    def _params(self) -> dict[str, Any]:
        return {
            "chunk_size": self.chunk_size,
            "reference_size": self.reference_size,
            "threshold": self.threshold,
            "draws": self.draws,
            "sigmas": self.sigmas,
            "fixed_calibration": self.fixed_calibration,
        }

    @property
    def calibrated(self) -> bool:
        return self.calibrator.fitted

    @property
    def n_reference(self) -> int:
        """Examples the calibration was (or is being) fitted on."""
        return self.calibrator.n_fit if self.calibrated else int(self._ref_scores.size)

    @property
    def n_pending(self) -> int:
        """Predictions in the current, incomplete chunk."""
        return int(self._scores.size)

    def add_reference(self, scores: np.ndarray, labels: np.ndarray) -> bool:
        """Offer labelled examples (scores, 0/1 labels); the first ``reference_size`` valid
        ones fit the calibration. Returns whether the calibration was fitted by this call."""
        if self.calibrated:
            return False
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        ok = np.isfinite(s) & ((y == 0.0) | (y == 1.0))
        room = self.reference_size - self._ref_scores.size
        self._ref_scores = np.concatenate([self._ref_scores, s[ok][:room]])
        self._ref_labels = np.concatenate([self._ref_labels, y[ok][:room]])
        if self._ref_scores.size < self.reference_size:
            return False
        self.calibrator.fit(self._ref_scores, self._ref_labels)
        self._ref_scores = self._ref_labels = np.empty(0, dtype=np.float64)
        return True

    def update(
        self, scores: np.ndarray, offsets: np.ndarray, times_ms: np.ndarray
    ) -> list[ChunkEstimate]:
        """Add predictions (scores with their input offsets and event times, in offset order);
        return the estimates of the chunks they complete (none before the calibration is
        fitted: those chunks are counted in ``n_uncalibrated_chunks``). Non-finite scores are
        left out."""
        s = np.asarray(scores, dtype=np.float64)
        off = np.asarray(offsets, dtype=np.int64)
        t = np.asarray(times_ms, dtype=np.int64)
        if not (s.shape == off.shape == t.shape) or s.ndim != 1:
            raise DriftlineError("scores, offsets and times must be 1-D arrays of equal length")
        ok = np.isfinite(s)
        if not ok.all():
            s, off, t = s[ok], off[ok], t[ok]
        out: list[ChunkEstimate] = []
        i = 0
        while i < s.size:
            take = min(self.chunk_size - self._scores.size, s.size - i)
            part = slice(i, i + take)
            if self._first_offset is None:
                self._first_offset = int(off[i])
            lo, hi = int(t[part].min()), int(t[part].max())
            self._t_min = lo if self._t_min is None else min(self._t_min, lo)
            self._t_max = hi if self._t_max is None else max(self._t_max, hi)
            self._scores = np.concatenate([self._scores, s[part]])
            i += take
            if self._scores.size == self.chunk_size:
                c = self._close(int(off[i - 1]))
                if c is not None:
                    out.append(c)
        return out

    def _close(self, last_offset: int) -> ChunkEstimate | None:
        assert self._first_offset is not None and self._t_min is not None
        assert self._t_max is not None
        index = self.n_chunks
        self.n_chunks += 1
        scores = self._scores
        chunk = ChunkEstimate(
            index=index,
            n=int(scores.size),
            first_offset=self._first_offset,
            last_offset=last_offset,
            start_event_time_ms=self._t_min,
            end_event_time_ms=self._t_max,
        )
        self._scores = np.empty(0, dtype=np.float64)
        self._first_offset = self._t_min = self._t_max = None
        if not self.calibrated:
            self.n_uncalibrated_chunks += 1
            return None
        probs = self.calibrator.predict(scores)
        chunk.metrics = estimate_chunk(
            probs, scores, self.threshold, draws=self.draws, sigmas=self.sigmas,
            seed=[index, chunk.first_offset],
        )  # fmt: skip
        return chunk

    # -- state -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """State as plain JSON-able data; `restore` continues exactly."""
        return {
            "kind": self.kind,
            "params": self._params(),
            "calibration": self.calibrator.snapshot() if self.calibrated else None,
            "reference_scores": floats_to_json(self._ref_scores),
            "reference_labels": floats_to_json(self._ref_labels),
            "scores": floats_to_json(self._scores),
            "first_offset": self._first_offset,
            "t_min": self._t_min,
            "t_max": self._t_max,
            "n_chunks": self.n_chunks,
            "n_uncalibrated_chunks": self.n_uncalibrated_chunks,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state by a `snapshot` (also after a JSON round trip)."""
        check_snapshot(state, self.kind, self._params())
        with reading_snapshot(self.kind):
            cal = state["calibration"]
            calibrator = self.calibrator
            if cal is not None and not self.fixed_calibration:
                calibrator = IsotonicCalibrator.from_snapshot(cal)
            ref_s = float_array(state["reference_scores"])
            ref_y = float_array(state["reference_labels"], ref_s.shape)
            scores = float_array(state["scores"])
            first = state["first_offset"]
            t_min, t_max = state["t_min"], state["t_max"]
            first, t_min, t_max = (None if v is None else int(v) for v in (first, t_min, t_max))
            counts = int(state["n_chunks"]), int(state["n_uncalibrated_chunks"])
        if scores.size >= self.chunk_size or ref_s.size > self.reference_size:
            raise DriftlineError("state: a performance_estimator snapshot holds too many values")
        self.calibrator = calibrator
        self._ref_scores, self._ref_labels, self._scores = ref_s, ref_y, scores
        self._first_offset, self._t_min, self._t_max = first, t_min, t_max
        self.n_chunks, self.n_uncalibrated_chunks = counts
