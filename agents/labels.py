"""The label side of one partition: decode labels, join them to predictions, grade the model.

Thin glue around `streams/`: the join is `streams.label_log.LoggedLabelJoin`, the metrics
`streams.model_metrics`, importance `streams.importance`. Everything here is per input partition:
a prediction made on partition p waits on partition p, and its label is read from partition p of
the labels topic (labels that name a prediction id made elsewhere are forwarded there).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from driftline.agents.decode import json_object, parse_timestamp_ms
from driftline.errors import DriftlineError, RecordError
from driftline.spec import LabelsSpec, PipelineSpec
from driftline.streams.importance import (
    ImportanceMonitor,
    LabelledWindow,
    linear_importance,
    permutation_importance,
)
from driftline.streams.label_log import LoggedLabelJoin
from driftline.streams.labels import JoinedBatch
from driftline.streams.model import BatchPredictor
from driftline.streams.model_metrics import CountWindowMetrics, TimeWindowMetrics
from driftline.streams.plain_state import (
    ModelMismatch,
    check_learnable,
    model_state,
    restore_model,
)

log = logging.getLogger("driftline.labels")

#: Join-id separator for ``join_key = "event_id"``: entity, then event id.
EVENT_ID_SEP = "\x1f"


def prediction_ids(topic: str, partition: int, offsets: list[int]) -> np.ndarray:
    """The ids the worker writes as ``prediction_id``: ``<topic>:<partition>:<offset>``."""
    head = f"{topic}:{partition}:"
    out = np.empty(len(offsets), dtype=object)
    out[:] = [head + str(o) for o in offsets]
    return out


def prediction_partition(pid: str, input_topic: str) -> int:
    """The input partition a prediction id was made on (RecordError if it is not one of ours)."""
    topic, sep, rest = pid.rpartition(":")
    topic, sep2, part = topic.rpartition(":")
    if not (sep and sep2) or topic != input_topic or not part.isdigit() or not rest.isdigit():
        raise RecordError(
            "wrong_type",
            f"prediction_id {pid[:200]!r} is not a prediction of input topic {input_topic!r} "
            "(expected '<topic>:<partition>:<offset>' as written on the predictions topic)",
        )
    return int(part)


@dataclass
class LabelRecords:
    """Decoded labels of one batch, column-wise, with their positions in the batch."""

    ids: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    #: (batch row, target partition) of labels that belong to another partition
    forward: list[tuple[int, int]] = field(default_factory=list)


class LabelDecoder:
    """Decodes label records (JSON objects) per the spec's ``[labels]`` section."""

    def __init__(self, spec: PipelineSpec, is_classifier: bool) -> None:
        assert spec.labels is not None
        self.ls: LabelsSpec = spec.labels
        self.input_topic = spec.input.topic
        self.key_field = spec.input.key_field
        self.event_id_field = spec.input.event_id_field
        self.is_classifier = is_classifier
        self.max_bytes = spec.input.max_message_bytes

    def _label(self, v: Any) -> float:
        name = self.ls.label_field
        if self.is_classifier:
            if v is True or v is False or v in (0, 1):
                if type(v) in (bool, int) or (type(v) is float and v in (0.0, 1.0)):
                    return float(v)
            raise RecordError(
                "wrong_type",
                f"field {name!r} is {v!r}; a classifier's label must be 0, 1, true or false",
            )
        if type(v) in (int, float) and math.isfinite(v):
            return float(v)
        if type(v) in (int, float):
            raise RecordError("non_finite", f"field {name!r} is {v}, expected a finite number")
        raise RecordError("wrong_type", f"field {name!r} is {type(v).__name__}, expected a number")

    def _id(self, doc: dict[str, Any]) -> tuple[str, int | None]:
        if self.ls.join_key == "prediction_id":
            pid = doc.get("prediction_id")
            if pid is None:
                raise RecordError("missing_field", "field 'prediction_id' is missing")
            if type(pid) is not str:
                raise RecordError("wrong_type", "field 'prediction_id' must be a string")
            return pid, prediction_partition(pid, self.input_topic)
        assert self.event_id_field is not None
        parts = []
        for f in (self.key_field, self.event_id_field):
            v = doc.get(f)
            if v is None:
                raise RecordError("missing_field", f"field {f!r} is missing")
            if type(v) not in (str, int):
                raise RecordError("wrong_type", f"field {f!r} must be a string or an integer")
            parts.append(str(v))
        return EVENT_ID_SEP.join(parts), None

    def decode(
        self, value: bytes | None, stamp_ms: int | None
    ) -> tuple[str, float, int, int | None]:
        """(join id, label, label time ms, partition named by the id or None)."""
        doc = json_object(value, self.max_bytes, "a label")
        jid, part = self._id(doc)
        if self.ls.label_field not in doc:
            raise RecordError("missing_field", f"field {self.ls.label_field!r} is missing")
        y = self._label(doc[self.ls.label_field])
        tf = self.ls.time_field
        if tf is not None:
            if tf not in doc:
                raise RecordError("missing_field", f"field {tf!r} is missing")
            t = parse_timestamp_ms(tf, doc[tf])
        elif stamp_ms is not None:
            t = int(stamp_ms)
        else:
            raise RecordError("bad_timestamp", "the record has no timestamp; set labels.time_field")
        return jid, y, t, part


@dataclass
class LabelOutcome:
    """What the label side produced in one batch (counted by the runner after commit)."""

    joined: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> new count
    delay_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    model_metrics: list[tuple[str, str, float]] = field(default_factory=list)
    importance: list[tuple[str, float]] = field(default_factory=list)
    learned: int = 0
    #: (slice, value, metric, value) of each slice value's compared window
    slice_metrics: list[tuple[str, str, str, float]] = field(default_factory=list)


class PartitionLabels:
    """Per-partition label state: the logged join, metric windows, importance, online model."""

    COUNTERS: ClassVar[dict[str, str]] = {
        "unmatched_label": "n_unmatched_labels",
        "expired_prediction": "n_expired_predictions",
        "duplicate_label": "n_duplicate_labels",
        "duplicate_prediction": "n_duplicate_predictions",
    }

    def __init__(self, spec: PipelineSpec, partition: int, predictor: BatchPredictor) -> None:
        assert spec.labels is not None
        ls = self.ls = spec.labels
        self.partition = partition
        self.task = "classification" if predictor.is_classifier else "regression"
        self.join = LoggedLabelJoin(ls.ttl_ms, ls.max_pending)
        self.windows = {
            f"last_{ls.count_window}": CountWindowMetrics(self.task, ls.count_window, ls.threshold),
            f"{ls.time_window_ms // 1000}s": TimeWindowMetrics(
                self.task, ls.time_window_ms, ls.threshold
            ),
        }
        self.predictor = predictor
        self.n_learned = 0
        self._configured_model = predictor.model
        if ls.learn:  # each partition learns on its own copy (its state is partition-local)
            # the learnt model goes to the state changelog as plain data (no pickle), which
            # only some models have: refuse the others before anything is processed
            check_learnable(predictor.model)
            self.predictor = BatchPredictor(copy.deepcopy(predictor.model), predictor.inputs)
        imp = ls.importance
        self.importance_window = None if imp is None else LabelledWindow(imp.window)
        self.importance = (
            None
            if imp is None
            else ImportanceMonitor(
                threshold=imp.threshold,
                min_examples=imp.min_examples,
                n_confirm=imp.n_confirm,
                n_clear=imp.n_clear,
                features=list(predictor.inputs),
            )
        )
        self.since_importance = 0
        self.last_shares: np.ndarray | None = None
        self.keeps_features = imp is not None or ls.learn

    # -- joined rows -------------------------------------------------------------------------
    def errors(self, jb: JoinedBatch) -> np.ndarray:
        """The error stream: 1.0 for a misclassified example (0.0 otherwise), |y - score| for
        a regressor."""
        if self.task == "classification":
            return ((jb.scores >= self.ls.threshold) != (jb.labels >= 0.5)).astype(np.float64)
        return np.abs(jb.labels - jb.scores)

    def grade(self, jb: JoinedBatch, oc: LabelOutcome) -> list[Any]:
        """Metrics, learning and importance for newly joined rows; importance events."""
        oc.joined += len(jb)
        oc.delay_s = np.concatenate([oc.delay_s, np.maximum(jb.delay_ms, 0) / 1000.0])
        for w in self.windows.values():
            w.update(jb)
        events: list[Any] = []
        if self.ls.learn:
            oc.learned += self._learn(jb)
        if self.importance is not None and self.importance_window is not None:
            self.importance_window.update(jb)
            self.since_importance += len(jb)
            imp = self.ls.importance
            assert imp is not None
            win = self.importance_window
            if self.since_importance >= imp.every and len(win) >= imp.min_examples:
                self.since_importance = 0
                self.last_shares = self._shares(win.X, win.y)
                t = int(jb.label_time_ms.max()) if len(jb) else None
                events = self.importance.update(self.last_shares, len(win), t)
        return events

    def _shares(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        imp = self.ls.importance
        assert imp is not None
        if imp.method == "linear":
            return linear_importance(self.predictor.model, self.predictor.inputs, X)
        loss = "log_loss" if self.task == "classification" else "squared_error"
        return permutation_importance(self.predictor.predict, X, y, loss, seed=imp.seed).shares

    def _learn(self, jb: JoinedBatch) -> int:
        model, inputs = self.predictor.model, self.predictor.inputs
        ok = np.isfinite(jb.features).all(axis=1) & np.isfinite(jb.labels)
        if jb.features.shape[1] != len(inputs):
            return 0
        n = 0
        for row, y in zip(jb.features[ok].tolist(), jb.labels[ok].tolist(), strict=True):
            x = dict(zip(inputs, row, strict=True))
            model.learn_one(x, bool(y >= 0.5) if self.task == "classification" else y)
            n += 1
        self.n_learned += n
        return n

    def window_results(
        self, readings: list[tuple[str, str, float]] | None = None
    ) -> dict[str, dict[str, float]]:
        """The global metrics of the "count" and the "time" window (from `metric_readings`'
        ``readings`` when given, else computed)."""
        kinds = {
            name: "count" if isinstance(w, CountWindowMetrics) else "time"
            for name, w in self.windows.items()
        }
        if readings is None:
            return {kinds[name]: w.result() for name, w in self.windows.items()}
        out: dict[str, dict[str, float]] = {k: {} for k in kinds.values()}
        for metric, wname, v in readings:
            out[kinds[wname]][metric] = v
        return out

    def metric_readings(self) -> list[tuple[str, str, float]]:
        out = []
        for wname, w in self.windows.items():
            for metric, v in w.result().items():
                out.append((metric, wname, float(v)))
        return out

    def advance(self, now_ms: int) -> int:
        """Expire waiting predictions and labels, and slide the time window, to ``now_ms``."""
        for w in self.windows.values():
            if isinstance(w, TimeWindowMetrics):
                w.advance(now_ms)
        return self.join.expire(now_ms)

    def counters(self) -> dict[str, int]:
        j = self.join.join
        return {k: int(getattr(j, attr)) for k, attr in self.COUNTERS.items()}

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "log": self.join.position(),
            "windows": {k: w.snapshot() for k, w in self.windows.items()},
            "since_importance": self.since_importance,
            "n_learned": self.n_learned,
        }
        if self.importance is not None and self.importance_window is not None:
            state["importance"] = {
                "window": self.importance_window.snapshot(),
                "monitor": self.importance.snapshot(),
                "shares": None if self.last_shares is None else self.last_shares.tolist(),
            }
        if self.ls.learn:  # weights, intercept, scaler statistics: streams.plain_state
            state["model"] = model_state(self.predictor.model)
        return state

    def restore(self, state: dict[str, Any], join: LoggedLabelJoin) -> None:
        self.join = join
        for k, w in self.windows.items():
            snap = state["windows"].get(k)
            if snap is not None:
                w.restore(snap)
        self.since_importance = int(state.get("since_importance", 0))
        self.n_learned = int(state.get("n_learned", 0))
        imp = state.get("importance")
        if imp is not None and self.importance is not None and self.importance_window is not None:
            self.importance_window.restore(imp["window"])
            self.importance.restore(imp["monitor"])
            shares = imp.get("shares")
            self.last_shares = None if shares is None else np.array(shares, dtype=np.float64)
        if self.ls.learn and "model" in state:
            try:
                model = restore_model(self._configured_model, state["model"])
            except ModelMismatch as e:
                log.warning(
                    "partition %d: %s; the configured model changed, so online learning starts "
                    "again from it",
                    self.partition,
                    e,
                )
                model, self.n_learned = copy.deepcopy(self._configured_model), 0
            except DriftlineError as e:
                raise DriftlineError(
                    f"partition {self.partition}: the saved online model cannot be read ({e})"
                ) from e
            self.predictor = BatchPredictor(model, self.predictor.inputs)
