"""Live model quality over rolling windows of joined (prediction, label) examples.

Two windows, same metrics:

- `CountWindowMetrics` -- the last ``size`` joined examples, in arrival order;
- `TimeWindowMetrics` -- a *sliding* event-time window ``(t - window_ms, t]`` where ``t`` is the
  largest time seen so far (or given to `TimeWindowMetrics.advance`). The time is the label's
  (``clock="label"``, default: "quality of what was graded in the last window") or the
  prediction's event time (``clock="event"``: "quality of the predictions made in the last window,
  among those labelled so far"). Examples already at or before ``t - window_ms`` when their
  batch is added (``t`` including the batch's own times) are dropped and counted in ``n_late``.
  The window's contents do not depend on how the stream is batched; ``n_late`` does.

Metrics (`classification_metrics`, `regression_metrics`), recomputed exactly from the window at
each `result` call:

- **classification** (binary, positive class 1, labels 0/1): a score ``>= threshold`` (0.5)
  predicts 1. ``accuracy``; ``precision`` ``tp / (tp + fp)``; ``recall`` ``tp / (tp + fn)``;
  ``f1`` ``2 tp / (2 tp + fp + fn)``; ``auc`` the exact area under the ROC curve with tied scores
  counted half (equal to ``sklearn.metrics.roc_auc_score``). A ratio whose denominator is 0 is
  NaN (sklearn's ``zero_division=np.nan``); ``auc`` is NaN unless both classes are present.
- **regression**: ``mae``, ``rmse``.

Every result also has ``n`` (examples in the window). Examples whose score or label is not finite,
or (classification) whose label is not 0 or 1, are skipped and counted in ``n_skipped``. An empty
window gives NaN metrics.

Examples
--------
>>> m = CountWindowMetrics("classification", size=4)
>>> m.update_many(np.array([0.9, 0.2, 0.6, 0.4, 0.8]), np.array([1.0, 0.0, 0.0, 1.0, 1.0]))
>>> {k: round(v, 3) for k, v in m.result().items()}
{'n': 4.0, 'accuracy': 0.5, 'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'auc': 0.75}
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.stats import rankdata

from driftline.errors import DriftlineError
from driftline.streams.labels import JoinedBatch, float_array, floats_to_json
from driftline.streams.params import choice_param, float_param, int_param
from driftline.streams.snapshots import check_snapshot, reading_snapshot

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "CountWindowMetrics",
    "TimeWindowMetrics",
    "classification_metrics",
    "regression_metrics",
    "roc_auc",
]

TASKS = ("classification", "regression")
CLASSIFICATION_METRICS = ("n", "accuracy", "precision", "recall", "f1", "auc")
REGRESSION_METRICS = ("n", "mae", "rmse")


# ---------------------------------------------------------------------------- metric kernels
def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC: P(score of a positive > score of a negative) + P(tie) / 2.

    Mann-Whitney with average ranks, equal to ``sklearn.metrics.roc_auc_score`` (whose ROC
    curve joins tied scores by a straight segment). NaN unless both classes are present.

    Parameters
    ----------
    y_true
        0/1 labels.
    scores
        Scores, higher meaning more likely positive.

    Examples
    --------
    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> roc_auc(np.array([0, 1, 1]), np.array([0.5, 0.5, 0.5]))
    0.5
    >>> roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))
    nan
    """
    y = np.asarray(y_true) == 1
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # average ranks for ties
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def classification_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Binary metrics of ``scores`` against 0/1 labels (see the module docstring).

    Examples
    --------
    >>> r = classification_metrics(np.array([1, 0, 1]), np.array([0.7, 0.5, 0.2]))
    >>> r["accuracy"], r["precision"], r["recall"], r["auc"]
    (0.3333333333333333, 0.5, 0.5, 0.5)
    >>> classification_metrics(np.array([]), np.array([]))["accuracy"]
    nan
    """
    y = np.asarray(y_true) == 1
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    n = y.size
    tp = int(np.count_nonzero(y & pred))
    n_pred_pos = int(np.count_nonzero(pred))
    n_pos = int(np.count_nonzero(y))
    fp, fn = n_pred_pos - tp, n_pos - tp
    tn = n - tp - fp - fn
    return {
        "n": float(n),
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(y, scores) if n else math.nan,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Mean absolute error and root mean squared error.

    Examples
    --------
    >>> regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 2.0]))
    {'n': 3.0, 'mae': 1.0, 'rmse': 1.2909944487358056}
    """
    err = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    if err.size == 0:
        return {"n": 0.0, "mae": math.nan, "rmse": math.nan}
    return {
        "n": float(err.size),
        "mae": float(np.mean(np.abs(err))),
        "rmse": math.sqrt(float(np.mean(err * err))),
    }


# ---------------------------------------------------------------------------- windows
def _vector(values: Any, n: int | None, name: str, dtype: type = np.float64) -> np.ndarray:
    a = np.asarray(values, dtype=dtype)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        expected = "a 1-D array" if n is None else f"shape ({n},) like scores"
        raise DriftlineError(f"{name}: got shape {a.shape}; expected {expected}")
    return a


class _WindowMetrics:
    """Shared validation, skipping, results and state of the rolling windows."""

    kind: ClassVar[str]

    def __init__(self, task: str, threshold: float) -> None:
        self.task = choice_param("task", task, TASKS)
        self.threshold = float_param(
            "threshold", threshold, low=0.0, high=1.0, low_open=False, high_open=False
        )
        self._scores = np.empty(0, dtype=np.float64)
        self._labels = np.empty(0, dtype=np.float64)
        self.n_seen = 0
        self.n_skipped = 0

    def _params(self) -> dict[str, Any]:
        return {"task": self.task, "threshold": self.threshold}

    def _valid(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        ok = np.isfinite(scores) & np.isfinite(labels)
        if self.task == "classification":
            ok &= (labels == 0.0) | (labels == 1.0)
        self.n_seen += int(ok.size)
        self.n_skipped += int(ok.size - np.count_nonzero(ok))
        return ok

    @property
    def n(self) -> int:
        """Examples in the window."""
        return int(self._scores.shape[0])

    def result(self) -> dict[str, float]:
        """Metrics over the current window (names in `CLASSIFICATION_METRICS` /
        `REGRESSION_METRICS`; NaN when undefined)."""
        if self.task == "classification":
            return classification_metrics(self._labels, self._scores, self.threshold)
        return regression_metrics(self._labels, self._scores)

    def _state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self._params(),
            "n_seen": self.n_seen,
            "n_skipped": self.n_skipped,
            "scores": floats_to_json(self._scores),
            "labels": floats_to_json(self._labels),
        }

    def _load(self, state: dict[str, Any]) -> dict[str, Any]:
        check_snapshot(state, self.kind, self._params())
        with reading_snapshot(self.kind):
            scores = float_array(state["scores"])
            labels = float_array(state["labels"], scores.shape)
            counts = int(state["n_seen"]), int(state["n_skipped"])
        self._scores, self._labels = scores, labels
        self.n_seen, self.n_skipped = counts
        return state


class CountWindowMetrics(_WindowMetrics):
    """Metrics over the last ``size`` valid joined examples (arrival order).

    Parameters
    ----------
    task
        ``"classification"`` (scores are P(class 1), labels 0/1) or ``"regression"``.
    size
        Window length in examples (>= 1).
    threshold
        Classification: a score ``>= threshold`` predicts class 1 (in [0, 1]).

    Raises
    ------
    SpecError
        If a hyperparameter is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 1_000).astype(float)
    >>> m = CountWindowMetrics("regression", size=500)
    >>> m.update_many(y + rng.normal(0.0, 0.5, 1_000), y)
    >>> r = m.result()
    >>> r["n"], round(r["rmse"], 2)
    (500.0, 0.51)
    """

    kind: ClassVar[str] = "count_window_metrics"

    def __init__(self, task: str, size: int, threshold: float = 0.5) -> None:
        super().__init__(task, threshold)
        self.size = int_param("size", size, 1)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "size": self.size}

    def update(self, joined: JoinedBatch) -> None:
        """Add the rows of a `streams.labels.JoinedBatch` (scores against labels)."""
        self.update_many(joined.scores, joined.labels)

    def update_many(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add examples in arrival order; keep the last ``size`` valid ones.

        Parameters
        ----------
        scores
            Model scores (classification: P(class 1); regression: the predicted value).
        labels
            True labels / values, same length.
        """
        s = _vector(scores, None, "scores")
        y = _vector(labels, s.shape[0], "labels")
        ok = self._valid(s, y)
        if not ok.all():
            s, y = s[ok], y[ok]
        keep = self.size
        self._scores = np.concatenate([self._scores, s])[-keep:]
        self._labels = np.concatenate([self._labels, y])[-keep:]

    def snapshot(self) -> dict[str, Any]:
        """State as plain JSON-able data; `restore` continues exactly."""
        return self._state()

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state by a `snapshot` (also after a JSON round trip)."""
        self._load(state)
        if self.n > self.size:
            raise DriftlineError(f"state: {self.n} examples in a window of size {self.size}")


class TimeWindowMetrics(_WindowMetrics):
    """Metrics over the sliding event-time window ``(t - window_ms, t]``.

    ``t`` is the largest time seen (`update_many` or `advance`); examples at or before
    ``t - window_ms`` leave the window, and ones that arrive already that old are dropped and
    counted in ``n_late``.

    Parameters
    ----------
    task
        ``"classification"`` or ``"regression"`` (see `CountWindowMetrics`).
    window_ms
        Window length in ms (>= 1).
    threshold
        Classification decision threshold (in [0, 1]).
    clock
        Which time places a joined example in the window: ``"label"`` (the label's time,
        default) or ``"event"`` (the prediction's event time).

    Raises
    ------
    SpecError
        If a hyperparameter is out of range.

    Examples
    --------
    >>> m = TimeWindowMetrics("classification", window_ms=1_000)
    >>> m.update_many(np.array([0.9, 0.1, 0.8]), np.array([1.0, 1.0, 0.0]),
    ...               np.array([0, 500, 999]))
    >>> m.result()["accuracy"], m.n
    (0.3333333333333333, 3)
    >>> m.advance(1_500)  # (500, 1500]: only the example at 999 is left
    >>> m.result()["accuracy"], m.window_end_ms
    (0.0, 1500)
    """

    kind: ClassVar[str] = "time_window_metrics"
    CLOCKS: ClassVar[tuple[str, ...]] = ("label", "event")

    def __init__(
        self,
        task: str,
        window_ms: int,
        threshold: float = 0.5,
        clock: Literal["label", "event"] = "label",
    ) -> None:
        super().__init__(task, threshold)
        self.window_ms = int_param("window_ms", window_ms, 1)
        self.clock = choice_param("clock", clock, self.CLOCKS)
        self._t = np.empty(0, dtype=np.int64)
        self._end: int | None = None
        self.n_late = 0

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "window_ms": self.window_ms, "clock": self.clock}

    @property
    def window_end_ms(self) -> int | None:
        """``t``, the window's (inclusive) end; None before any example."""
        return self._end

    def update(self, joined: JoinedBatch) -> None:
        """Add a `streams.labels.JoinedBatch`, timed by its label or event time (``clock``)."""
        t = joined.label_time_ms if self.clock == "label" else joined.event_time_ms
        self.update_many(joined.scores, joined.labels, t)

    def update_many(self, scores: np.ndarray, labels: np.ndarray, time_ms: np.ndarray) -> None:
        """Add examples timed ``time_ms`` (int64 ms, any order); slide the window to their max.

        Parameters
        ----------
        scores, labels
            As in `CountWindowMetrics.update_many`.
        time_ms
            Each example's time.
        """
        s = _vector(scores, None, "scores")
        y = _vector(labels, s.shape[0], "labels")
        t = _vector(time_ms, s.shape[0], "time_ms", np.int64)
        ok = self._valid(s, y)
        if not ok.all():
            s, y, t = s[ok], y[ok], t[ok]
        if t.size == 0:
            return
        end = int(t.max()) if self._end is None else max(self._end, int(t.max()))
        fresh = t > end - self.window_ms
        self.n_late += int(fresh.size - np.count_nonzero(fresh))
        self._end = end
        self._scores = np.concatenate([self._scores, s[fresh]])
        self._labels = np.concatenate([self._labels, y[fresh]])
        self._t = np.concatenate([self._t, t[fresh]])
        self._slide()

    def advance(self, now_ms: int) -> None:
        """Move the window end to ``now_ms`` (if later) without adding examples."""
        now = int(now_ms)
        if self._end is None or now > self._end:
            self._end = now
            self._slide()

    def _slide(self) -> None:
        assert self._end is not None
        cutoff = self._end - self.window_ms
        if self._t.size and int(self._t.min()) <= cutoff:
            keep = self._t > cutoff
            self._scores, self._labels, self._t = (
                self._scores[keep],
                self._labels[keep],
                self._t[keep],
            )

    def result(self) -> dict[str, float]:
        """Metrics over ``(t - window_ms, t]`` (see `CountWindowMetrics`)."""
        return super().result()

    def snapshot(self) -> dict[str, Any]:
        """State as plain JSON-able data; `restore` continues exactly."""
        return {**self._state(), "t": self._t.tolist(), "end": self._end, "n_late": self.n_late}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state by a `snapshot` (also after a JSON round trip)."""
        self._load(state)
        with reading_snapshot(self.kind):
            t = np.asarray(state["t"], dtype=np.int64).reshape(self._scores.shape)
            end = None if state["end"] is None else int(state["end"])
            n_late = int(state["n_late"])
        self._t, self._end, self.n_late = t, end, n_late
