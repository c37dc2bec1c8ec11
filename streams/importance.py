"""Feature importance over time: how much each model input matters, and alerts when that moves.

Two measures, both reported as **shares** (non-negative, summing to 1; all NaN when every
feature's importance is 0 or the measure is undefined):

- `linear_importance` -- for river's ``LinearRegression`` / ``LogisticRegression``, optionally
  behind a ``StandardScaler`` in a ``compose.Pipeline``: ``|w_j| * std_j``, the spread that
  feature ``j`` contributes to the linear score (``std_j`` of the input *as the linear model
  sees it*, i.e. after the scaler). Without a window of rows, a standard-scaled input counts as
  std 1 (0 if the scaler saw no variance).
- `permutation_importance` -- for any row-wise scorer ``score(X) -> scores``: the increase of the
  mean loss (log-loss for classifiers, squared error for regressors) when one column of a window
  of labelled examples is shuffled. Shuffles come from ``numpy.random.default_rng(seed)``, one
  ``rng.permutation(n)`` per (repeat, feature) in that order; the whole set of shuffled windows
  is scored in a few stacked calls. Negative increases (noise) count as 0 in the shares. For a
  linear regressor the expected increase is ``2 w_j^2 var_j``, so these shares weigh features by
  ``w^2`` where `linear_importance` uses ``|w|``.

`ImportanceMonitor` keeps the first share vector computed on enough examples as its reference
and fires an `ImportanceEvent` when a feature's share moves more than ``threshold`` (absolute)
away from it, with drift-detector hysteresis (`streams.detectors.alarm.Alarm`).
`LabelledWindow` keeps the last labelled feature rows for `permutation_importance`.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(1_000, 3))
>>> w = np.array([2.0, 1.0, 0.0])
>>> r = permutation_importance(lambda A: A @ w, X, X @ w, loss="squared_error", seed=0)
>>> np.round(r.shares, 2).tolist(), r.baseline_loss
([0.81, 0.19, 0.0], 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.detectors.alarm import Alarm
from driftline.streams.labels import JoinedBatch, float_array, floats_to_json
from driftline.streams.model import BatchPredictor
from driftline.streams.params import choice_param, int_param, probability_param
from driftline.streams.snapshots import check_snapshot, reading_snapshot

__all__ = [
    "ImportanceEvent",
    "ImportanceMonitor",
    "LabelledWindow",
    "PermutationImportance",
    "linear_importance",
    "permutation_importance",
    "shares",
]

LOSSES = ("log_loss", "squared_error")
_EPS = float(np.finfo(np.float64).eps)  # log-loss clipping, as sklearn.metrics.log_loss
_MAX_CELLS = 4_000_000  # stacked permuted windows scored per call (rows * columns)


def shares(values: np.ndarray) -> np.ndarray:
    """``max(values, 0)`` normalised to sum to 1; all NaN if nothing is positive or finite.

    Examples
    --------
    >>> shares(np.array([3.0, -1.0, 1.0])).tolist()
    [0.75, 0.0, 0.25]
    >>> shares(np.array([0.0, 0.0])).tolist()
    [nan, nan]
    """
    v = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    total = float(v.sum())
    if not math.isfinite(total) or total <= 0.0:
        return np.full(v.shape, np.nan)
    return v / total


# ---------------------------------------------------------------------------- linear models
def linear_importance(model: Any, inputs: Sequence[str], X: np.ndarray | None = None) -> np.ndarray:
    """Shares of ``|weight| * std`` of a river linear model's inputs.

    Parameters
    ----------
    model
        ``linear_model.LinearRegression`` or ``LogisticRegression``, alone or as
        ``compose.Pipeline(preprocessing.StandardScaler(), <linear model>)``.
    inputs
        The model's input names, in the order of the columns of ``X``.
    X
        A window of input rows ``(n, len(inputs))`` to measure the stds on (after the scaler, as
        the linear model sees them; ``ddof=0``). Optional behind a ``StandardScaler`` with
        ``with_std=True``, where a scaled input has std 1 (0 when the scaler saw no variance).

    Returns
    -------
    numpy.ndarray
        One share per input (see `shares`).

    Raises
    ------
    DriftlineError
        If the model is not such a linear model, or ``X`` is needed and missing or misshapen.

    Examples
    --------
    >>> from river import compose, linear_model, preprocessing
    >>> m = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())
    >>> rng = np.random.default_rng(1)
    >>> for a, b in rng.normal(size=(2_000, 2)).tolist():
    ...     m.learn_one({"a": a, "b": 10 * b}, 3 * a + 10 * b)
    >>> np.round(linear_importance(m, ["a", "b"]), 2).tolist()
    [0.23, 0.77]
    """
    predictor = BatchPredictor(model, inputs)
    parts = predictor._linear_parts()
    if parts is None:
        raise DriftlineError(
            "linear_importance: expected a river LinearRegression/LogisticRegression, "
            f"optionally behind a StandardScaler; got {type(model).__name__}"
        )
    scaler, lin = parts
    names = predictor.inputs
    w = np.abs(np.array([lin._weights.get(c, 0.0) for c in names], dtype=np.float64))
    if X is None:
        if scaler is None or not scaler.with_std:
            raise DriftlineError(
                "linear_importance: X (a window of input rows) is needed to measure the input "
                "stds of a model without a StandardScaler(with_std=True)"
            )
        var = np.array([scaler.vars[c] for c in names], dtype=np.float64)
        return shares(w * (var > 0))
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise DriftlineError(f"X: got shape {X.shape}; expected (n, {len(names)})")
    if scaler is not None:
        means = np.array([scaler.means[c] for c in names], dtype=np.float64)
        X = X - means
        if scaler.with_std:
            sd = np.sqrt(np.array([scaler.vars[c] for c in names], dtype=np.float64))
            X = np.where(sd > 0, X / np.where(sd > 0, sd, 1.0), 0.0)
    return shares(w * X.std(axis=0))


# ---------------------------------------------------------------------------- permutation
@dataclass(frozen=True)
class PermutationImportance:
    """Result of `permutation_importance`.

    Attributes
    ----------
    baseline_loss
        Mean loss of the unshuffled window.
    increase
        Mean loss increase per feature when its column is shuffled (mean over repeats; may be
        negative).
    shares
        ``shares(increase)``.
    """

    baseline_loss: float
    increase: np.ndarray
    shares: np.ndarray


def _losses(y: np.ndarray, s: np.ndarray, loss: str) -> np.ndarray:
    if loss == "squared_error":
        d = s - y
        return d * d
    p = np.clip(s, _EPS, 1.0 - _EPS)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def permutation_importance(
    score: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    loss: Literal["log_loss", "squared_error"] = "log_loss",
    n_repeats: int = 1,
    seed: int = 0,
) -> PermutationImportance:
    """Loss increase when each column of a window is shuffled, and its shares.

    Parameters
    ----------
    score
        ``score(X) -> scores``, one score per row that depends on that row only (e.g.
        `streams.model.BatchPredictor.predict`): P(class 1) for ``"log_loss"``, the predicted
        value for ``"squared_error"``. It is called on stacks of shuffled copies of ``X``.
    X
        Window of feature rows ``(n, k)``, n >= 2.
    y
        Labels (0/1 for ``"log_loss"``) or target values, ``(n,)``.
    loss
        ``"log_loss"`` (classifiers; scores clipped to ``[eps, 1 - eps]``) or
        ``"squared_error"`` (regressors).
    n_repeats
        Shuffles per feature (>= 1); the increase is their mean.
    seed
        Seed of ``numpy.random.default_rng``; permutations are drawn per repeat, then feature.

    Returns
    -------
    PermutationImportance

    Raises
    ------
    SpecError
        If ``loss`` or ``n_repeats`` is invalid.
    DriftlineError
        If the shapes do not match or ``score`` returns the wrong number of scores.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> X = rng.normal(size=(2_000, 2))
    >>> p = lambda A: 1.0 / (1.0 + np.exp(-3.0 * A[:, 0]))
    >>> y = (rng.random(2_000) < p(X)).astype(float)
    >>> r = permutation_importance(p, X, y, n_repeats=3, seed=7)
    >>> r.shares.tolist(), round(r.baseline_loss, 3)
    ([1.0, 0.0], 0.355)
    """
    choice_param("loss", loss, LOSSES)
    n_repeats = int_param("n_repeats", n_repeats, 1)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2 or y.shape != (X.shape[0],):
        raise DriftlineError(
            f"X, y: got shapes {X.shape} and {y.shape}; expected (n, k) and (n,) with n >= 2"
        )
    n, k = X.shape

    def run(A: np.ndarray) -> np.ndarray:
        s = np.asarray(score(A), dtype=np.float64)
        if s.shape != (A.shape[0],):
            raise DriftlineError(f"score: returned shape {s.shape}; expected ({A.shape[0]},)")
        return s

    base = float(_losses(y, run(X), loss).mean())
    rng = np.random.default_rng(seed)
    perms = np.empty((n_repeats, k, n), dtype=np.int64)
    for r in range(n_repeats):
        for j in range(k):
            perms[r, j] = rng.permutation(n)
    # blocks (r, j) in a flat order; each block is X with column j shuffled
    blocks = [(r, j) for r in range(n_repeats) for j in range(k)]
    per_call = max(1, _MAX_CELLS // (n * k))
    mean_loss = np.empty((n_repeats, k))
    for c in range(0, len(blocks), per_call):
        chunk = blocks[c : c + per_call]
        stack = np.tile(X, (len(chunk), 1))
        for b, (r, j) in enumerate(chunk):
            stack[b * n : (b + 1) * n, j] = X[perms[r, j], j]
        lo = _losses(np.tile(y, len(chunk)), run(stack), loss).reshape(len(chunk), n)
        for b, (r, j) in enumerate(chunk):
            mean_loss[r, j] = lo[b].mean()
    increase = mean_loss.mean(axis=0) - base
    return PermutationImportance(base, increase, shares(increase))


# ---------------------------------------------------------------------------- window
class LabelledWindow:
    """The last ``size`` labelled feature rows of joined predictions (for importance).

    Rows with a non-finite feature or label are skipped (``n_skipped``).

    Parameters
    ----------
    size
        Rows kept (>= 2).

    Examples
    --------
    >>> w = LabelledWindow(size=2)
    >>> w.update_many(np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 4.0], [5.0, 6.0]]),
    ...               np.array([0.0, 1.0, 1.0, 0.0]))
    >>> w.X.tolist(), w.y.tolist(), w.n_skipped
    ([[3.0, 4.0], [5.0, 6.0]], [1.0, 0.0], 1)
    """

    kind: ClassVar[str] = "labelled_window"

    def __init__(self, size: int) -> None:
        self.size = int_param("size", size, 2)
        self.X: np.ndarray = np.empty((0, 0))
        self.y: np.ndarray = np.empty(0)
        self.n_skipped = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def update(self, joined: JoinedBatch) -> None:
        """Add the feature rows and labels of a `streams.labels.JoinedBatch`."""
        self.update_many(joined.features, joined.labels)

    def update_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """Append rows (the first non-empty batch fixes the number of columns)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise DriftlineError(f"X, y: got shapes {X.shape} and {y.shape}; expected (n, k), (n,)")
        if X.shape[0] == 0:
            return
        if len(self) == 0 and self.X.shape[1] != X.shape[1]:
            self.X = np.empty((0, X.shape[1]))
        if X.shape[1] != self.X.shape[1]:
            raise DriftlineError(f"X: got {X.shape[1]} columns; expected {self.X.shape[1]}")
        ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
        self.n_skipped += int(ok.size - np.count_nonzero(ok))
        self.X = np.concatenate([self.X, X[ok]])[-self.size :]
        self.y = np.concatenate([self.y, y[ok]])[-self.size :]

    def snapshot(self) -> dict[str, Any]:
        """State as plain JSON-able data; `restore` continues exactly."""
        return {
            "kind": self.kind,
            "params": {"size": self.size},
            "n_cols": int(self.X.shape[1]),
            "X": self.X.tolist(),
            "y": self.y.tolist(),
            "n_skipped": self.n_skipped,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state by a `snapshot` (also after a JSON round trip)."""
        check_snapshot(state, self.kind, {"size": self.size})
        with reading_snapshot(self.kind):
            y = float_array(state["y"])
            X = float_array(state["X"], (y.shape[0], int(state["n_cols"])))
            n_skipped = int(state["n_skipped"])
        self.X, self.y, self.n_skipped = X, y, n_skipped


# ---------------------------------------------------------------------------- monitor
@dataclass(frozen=True)
class ImportanceEvent:
    """A feature's importance share moved away from (firing) or back to (resolved) its reference.

    Attributes
    ----------
    feature
        The feature's name.
    reference_share, current_share
        Its share in the reference vector and in the evaluation that changed the state.
    status
        ``"firing"`` or ``"resolved"``.
    evaluation
        Number of the evaluation (1-based count of `ImportanceMonitor.update` calls that were
        evaluated, the reference being 1).
    n_examples
        Examples the current shares were computed on.
    time_ms
        The time passed to `ImportanceMonitor.update`, if any.
    """

    feature: str
    reference_share: float
    current_share: float
    status: str
    evaluation: int
    n_examples: int
    time_ms: int | None = None

    @property
    def kind(self) -> str:
        """Always ``"importance"``."""
        return "importance"


class ImportanceMonitor:
    """Alert when a feature's importance share moves away from its reference.

    The first share vector given with at least ``min_examples`` examples (and finite) becomes the
    reference. Each later one is compared feature by feature: ``|share - reference| >
    threshold`` is "beyond". Per feature, an `streams.detectors.alarm.Alarm` fires after
    ``n_confirm`` consecutive beyond evaluations and resolves after ``n_clear`` consecutive
    within ones (not firing again before ``cooldown`` more evaluations).

    Parameters
    ----------
    threshold
        Absolute share change that counts as a move, in (0, 1).
    min_examples
        Evaluations on fewer examples are ignored (>= 1).
    n_confirm, n_clear, cooldown
        Hysteresis, in evaluations (>= 1, >= 1, >= 0).
    features
        Feature names for the events (default ``"0"``, ``"1"``, ...); their number must match
        the share vectors.

    Raises
    ------
    SpecError
        If a hyperparameter is out of range.

    Examples
    --------
    >>> mon = ImportanceMonitor(threshold=0.2, min_examples=100, features=["a", "b"])
    >>> mon.update(np.array([0.5, 0.5]), n_examples=50)  # too few examples: ignored
    []
    >>> mon.update(np.array([0.5, 0.5]), n_examples=500)  # the reference
    []
    >>> [(e.feature, e.status, e.current_share) for e in mon.update(np.array([0.8, 0.2]), 500)]
    [('a', 'firing', 0.8), ('b', 'firing', 0.2)]
    >>> for s in ([0.6, 0.4], [0.6, 0.4]):
    ...     events = mon.update(np.array(s), 500)
    >>> [(e.feature, e.status, e.evaluation) for e in mon.update(np.array([0.55, 0.45]), 500)]
    [('a', 'resolved', 5), ('b', 'resolved', 5)]
    """

    kind: ClassVar[str] = "importance_monitor"

    def __init__(
        self,
        threshold: float = 0.2,
        min_examples: int = 200,
        n_confirm: int = 1,
        n_clear: int = 3,
        cooldown: int = 0,
        features: Sequence[str] | None = None,
    ) -> None:
        self.threshold = probability_param("threshold", threshold)
        self.min_examples = int_param("min_examples", min_examples, 1)
        self._alarm_params = Alarm(n_confirm, n_clear, cooldown).params()
        self.features = None if features is None else [str(f) for f in features]
        if self.features is not None and (
            not self.features or len(set(self.features)) != len(self.features)
        ):
            raise SpecError(f"features: got {features!r}; expected distinct names")
        self.reference: np.ndarray | None = None
        self.current: np.ndarray | None = None
        self._alarms: list[Alarm] = []
        self.n_evaluations = 0
        self.n_ignored = 0

    def _params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "min_examples": self.min_examples,
            **self._alarm_params,
            "features": self.features,
        }

    @property
    def firing(self) -> list[str]:
        """Names of the features whose alarm is firing."""
        return [self._name(j) for j, a in enumerate(self._alarms) if a.firing]

    def _name(self, j: int) -> str:
        return self.features[j] if self.features is not None else str(j)

    def update(
        self, shares: np.ndarray, n_examples: int, time_ms: int | None = None
    ) -> list[ImportanceEvent]:
        """Compare a share vector with the reference; return the state changes it caused.

        Parameters
        ----------
        shares
            Importance shares, one per feature (e.g. `permutation_importance(...).shares`).
        n_examples
            Examples they were computed on (ignored below ``min_examples``).
        time_ms
            Time to stamp the events with (e.g. the window's last event time).

        Returns
        -------
        list of ImportanceEvent
            Firing / resolved changes, in feature order.
        """
        s = np.asarray(shares, dtype=np.float64)
        k = len(self.features) if self.features is not None else None
        if self.reference is not None:
            k = self.reference.shape[0]
        if s.ndim != 1 or (k is not None and s.shape[0] != k):
            raise DriftlineError(f"shares: got shape {s.shape}; expected ({k},)")
        if int(n_examples) < self.min_examples or not np.isfinite(s).all():
            self.n_ignored += 1
            return []
        self.n_evaluations += 1
        self.current = s.copy()
        if self.reference is None:
            self.reference = s.copy()
            self._alarms = [Alarm(**self._alarm_params) for _ in range(s.shape[0])]
            return []
        beyond = np.abs(s - self.reference) > self.threshold
        seen = np.array([self.n_evaluations])
        out = []
        for j, alarm in enumerate(self._alarms):
            for _, status in alarm.feed(beyond[j : j + 1], seen):
                out.append(
                    ImportanceEvent(
                        feature=self._name(j),
                        reference_share=float(self.reference[j]),
                        current_share=float(s[j]),
                        status=status,
                        evaluation=self.n_evaluations,
                        n_examples=int(n_examples),
                        time_ms=None if time_ms is None else int(time_ms),
                    )
                )
        return out

    def snapshot(self) -> dict[str, Any]:
        """State as plain JSON-able data; `restore` continues exactly."""
        return {
            "kind": self.kind,
            "params": self._params(),
            "reference": None if self.reference is None else floats_to_json(self.reference),
            "current": None if self.current is None else floats_to_json(self.current),
            "alarms": [a.snapshot() for a in self._alarms],
            "n_evaluations": self.n_evaluations,
            "n_ignored": self.n_ignored,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state by a `snapshot` (also after a JSON round trip)."""
        check_snapshot(state, self.kind, self._params())
        with reading_snapshot(self.kind):
            ref = None if state["reference"] is None else float_array(state["reference"])
            cur = None if state["current"] is None else float_array(state["current"])
            alarms = []
            for a in state["alarms"]:
                alarm = Alarm(**self._alarm_params)
                alarm.restore(a)
                alarms.append(alarm)
            counts = int(state["n_evaluations"]), int(state["n_ignored"])
        if (ref is None) != (not alarms) or (ref is not None and ref.shape[0] != len(alarms)):
            raise DriftlineError("state: reference and alarms disagree")
        self.reference, self.current, self._alarms = ref, cur, alarms
        self.n_evaluations, self.n_ignored = counts
