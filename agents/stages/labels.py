"""Labels stage: predictions wait for their labels; label batches join, grade and detect.

The label state itself (join, metric windows, importance, online model) is
:class:`driftline.agents.labels.PartitionLabels`; this stage feeds it from both sides of the
batch step, runs the label-side detectors (``error``, ``label``) and writes the model-metrics
messages. The join's changes go to the state changelog as a log (:meth:`LabelStage.drain_log`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import orjson

from driftline.agents.labels import (
    EVENT_ID_SEP,
    LabelDecoder,
    LabelOutcome,
    PartitionLabels,
    prediction_ids,
)
from driftline.agents.stages.alert_episodes import AlertEpisodes
from driftline.agents.stages.alerts import AlertDocs
from driftline.agents.stages.bounds import EventBounds
from driftline.agents.stages.dead_letters import DeadLetters
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome, Outbound
from driftline.agents.stages.predict import model_inputs
from driftline.agents.stages.records import RecordColumns
from driftline.agents.stages.slices import PartitionSlices
from driftline.agents.state import decode_label_log, encode_label_log, label_log_keys
from driftline.errors import DriftlineError
from driftline.spec import ERROR_TARGET, LABEL_TARGETS, DetectorSpec, PipelineSpec
from driftline.streams.label_log import LoggedLabelJoin
from driftline.streams.labels import JoinedBatch
from driftline.streams.model import BatchPredictor


def floats_or_none(a: np.ndarray) -> list[float | None]:
    return [v if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64).tolist()]


class LabelStage:
    """The label side of one partition (only with a ``[labels]`` section and a model)."""

    def __init__(
        self,
        spec: PipelineSpec,
        partition: int,
        predictor: BatchPredictor,
        model_version: str,
        detectors: Sequence[tuple[DetectorSpec, Any]],
        episodes: AlertEpisodes,
        alerts: AlertDocs,
        dead: DeadLetters,
        slices: PartitionSlices | None = None,
    ) -> None:
        self.spec = spec
        #: with [[slices]]: per-slice metrics; the slice codes ride with each prediction as
        #: the last feature columns of the join
        self.slices = slices if slices is not None and len(slices) else None
        self.partition = partition
        self.base_version = model_version
        self.labels = PartitionLabels(spec, partition, predictor)
        self.decoder = LabelDecoder(spec, predictor.is_classifier)
        self.detectors = [(d, det) for d, det in detectors if d.target in LABEL_TARGETS]
        self.episodes = episodes
        self.alerts = alerts
        self.dead = dead
        # label times: bounded like event times, so one label cannot expire every prediction
        ls, inp = spec.labels, spec.input
        assert ls is not None
        self.bounds = EventBounds(inp.max_key_bytes, inp.max_future_ms, "",
                                  ls.time_field or "the record's timestamp")  # fmt: skip
        self.clock_ms: int | None = None  # largest label time seen
        self._log_keys: list[bytes] = []  # live label-log records on the changelog
        self._trigger: tuple[str, int, int] = ("", -1, 0)  # last joined: topic, offset, time
        #: called with each batch of newly joined examples (the estimate stage's reference)
        self.on_joined: Callable[[JoinedBatch], None] | None = None

    @property
    def n_codes(self) -> int:
        """Slice-code columns after the model inputs in the join's feature rows."""
        return 0 if self.slices is None else len(self.slices)

    @property
    def n_join_features(self) -> int:
        """Feature columns the join stores per prediction (model inputs kept for importance or
        learning, then the slice codes)."""
        kept = len(self.predictor.inputs) if self.labels.keeps_features else 0
        return kept + self.n_codes

    @property
    def predictor(self) -> BatchPredictor:
        """The model predictions are made with (the partition's own copy when learning)."""
        return self.labels.predictor

    @property
    def model_version(self) -> str:
        """The version written on predictions: with online learning, the examples learnt."""
        if self.labels.ls.learn:
            return f"{self.base_version}+online.p{self.partition}.{self.labels.n_learned}"
        return self.base_version

    # -- the prediction side --------------------------------------------------------------------
    def _join_ids(self, frame: Frame) -> np.ndarray:
        if self.labels.ls.join_key == "event_id":
            eid = self.spec.input.event_id_field
            assert eid is not None
            col = frame.columns[eid]
            if col.dtype != object:  # an int field, decoded as float64
                col = col.astype(np.int64)
            ents = frame.entities.tolist()
            out = np.empty(len(col), dtype=object)
            out[:] = [f"{e}{EVENT_ID_SEP}{v}" for e, v in zip(ents, col.tolist(), strict=True)]
            return out
        return prediction_ids(frame.records.topic, self.partition, frame.records.offsets)

    def await_labels(
        self, frame: Frame, out: BatchOutcome, watermark_ms: int | None, now_ms: int
    ) -> None:
        """Store the frame's predictions until their labels come (early labels join now)."""
        lab, predictor = self.labels, self.predictor
        assert frame.scores is not None
        scores = frame.scores
        ids = self._join_ids(frame)
        pred = (scores >= lab.ls.threshold).astype(np.float64) if predictor.is_classifier else None
        X = model_inputs(predictor, frame.vector) if lab.keeps_features else None
        if self.slices is not None:
            codes = frame.slice_codes
            if codes is None:
                codes = self.slices.codes(frame.columns, len(frame))
            X = codes if X is None else np.column_stack([X, codes])
        jb = lab.join.add_predictions(ids, frame.times, scores, pred, X)
        before = lab.counters()
        out.labels = LabelOutcome()
        if len(jb):
            where = dict(zip(ids.tolist(), zip(frame.records.offsets, frame.times.tolist(),
                                               strict=True), strict=True))  # fmt: skip
            self._grade(jb, out, frame.records.topic, where, now_ms)
        self._advance(out, before, watermark_ms, now_ms)

    # -- the labels topic -----------------------------------------------------------------------
    def process(
        self, cols: RecordColumns, out: BatchOutcome, watermark_ms: int | None, now_ms: int
    ) -> None:
        """One batch of the labels topic's partition: decode, forward, join, grade."""
        lab, dec = self.labels, self.decoder
        before = lab.counters()
        out.labels = LabelOutcome()
        ids: list[str] = []
        ys: list[float] = []
        ts: list[int] = []
        rows: list[int] = []
        rejected: list[tuple[int, Exception]] = []
        for i, (raw, stamp) in enumerate(zip(cols.values, cols.stamps, strict=True)):
            try:
                jid, y, t, part = dec.decode(raw, stamp)
            except Exception as e:
                rejected.append((i, e))
                continue
            if part is not None and part != self.partition:
                out.forwarded.append((part, cols.keys[i], raw))  # type: ignore[arg-type]
                continue
            ids.append(jid)
            ys.append(y)
            ts.append(t)
            rows.append(i)
        t_arr, out_of_bounds = self.bounds.check(None, ts, [cols.stamps[r] for r in rows], now_ms)
        if out_of_bounds:
            rejected += [(rows[j], e) for j, e in out_of_bounds.items()]
            keep = [j for j in range(len(rows)) if j not in out_of_bounds]
            ids, ys, ts = [ids[j] for j in keep], [ys[j] for j in keep], [ts[j] for j in keep]
            rows, t_arr = [rows[j] for j in keep], t_arr[keep]
        for i, e in sorted(rejected, key=lambda r: r[0]):
            self.dead.reject(out, cols, i, e, now_ms)
        if ids:
            id_arr = np.empty(len(ids), dtype=object)
            id_arr[:] = ids
            top = int(t_arr.max())
            if self.clock_ms is None or top > self.clock_ms:
                self.clock_ms = top
            jb = lab.join.add_labels(id_arr, np.array(ys, dtype=np.float64), t_arr)
            if len(jb):
                offs = [cols.offsets[r] for r in rows]
                where = dict(zip(ids, zip(offs, ts, strict=True), strict=True))
                self._grade(jb, out, cols.topic, where, now_ms)
        self._advance(out, before, watermark_ms, now_ms)

    # -- both -----------------------------------------------------------------------------------
    def _grade(
        self,
        jb: JoinedBatch,
        out: BatchOutcome,
        topic: str,
        where: dict[str, tuple[int, int]],
        now_ms: int,
    ) -> None:
        """Joined rows: metrics, error/label detectors, importance (``where`` maps a join id to
        the trigger record's offset and time, on ``topic``, for alerts)."""
        lab = self.labels
        assert out.labels is not None
        if self.slices is not None:
            k, f = self.n_codes, jb.features
            if f.shape[1] < self.n_join_features:  # joined before the join stored any codes
                pad = np.full((len(jb), self.n_join_features - f.shape[1]), np.nan)
                f = np.column_stack([f, pad])
            codes = f[:, f.shape[1] - k :]
            jb = replace(jb, features=f[:, : f.shape[1] - k])
            self.slices.grade(codes, jb.scores, jb.labels, jb.label_time_ms)
        events = lab.grade(jb, out.labels)
        if self.on_joined is not None:
            self.on_joined(jb)
        ids = jb.ids.tolist()
        if len(jb):
            off, t = where.get(ids[-1], (-1, int(jb.label_time_ms[-1])))
            self._trigger = (topic, off, t)
        for dspec, det in self.detectors:
            values = lab.errors(jb) if dspec.target == ERROR_TARGET else jb.labels
            for d in det.update_many(values):
                if not self.episodes.changes(dspec.name, d.status):
                    continue
                off, t = where.get(ids[d.index], (-1, int(jb.label_time_ms[d.index])))
                doc = self.alerts.detection(dspec, d, topic, off, t, now_ms)
                self.alerts.emit(out, dspec.target, doc)
            out.detector_readings.append((dspec.name, dspec.target, det.statistic, det.p_value))
        for e in events:
            off, _ = where.get(ids[-1], (-1, 0))
            self.alerts.emit(out, e.feature, self.alerts.importance(e, topic, off, now_ms))

    def _advance(
        self, out: BatchOutcome, before: dict[str, int], watermark_ms: int | None, now_ms: int
    ) -> None:
        """Expire what waited past its TTL (in event time: the later of the partition's
        watermark and the label clock, minus grace); metrics after a batch that joined."""
        lab = self.labels
        assert out.labels is not None
        clocks = [c for c in (watermark_ms, self.clock_ms) if c is not None]
        if clocks:
            lab.advance(max(clocks) - self.spec.grace_ms)
            if self.slices is not None:
                self.slices.advance(max(clocks) - self.spec.grace_ms)
        after = lab.counters()
        out.labels.counts = {k: after[k] - before.get(k, after[k]) for k in after}
        if out.labels.joined:
            readings = lab.metric_readings()
            out.labels.model_metrics = readings
            if self.slices is not None:
                changes = self.slices.evaluate(lab.window_results(readings))
                topic, off, t = self._trigger
                self.slices.alert(self.alerts, self.episodes, out, changes, topic, off, t, now_ms)
                out.labels.slice_metrics = self.slices.readings()
            if lab.last_shares is not None:
                out.labels.importance = list(
                    zip(self.predictor.inputs, lab.last_shares.tolist(), strict=True)
                )
            out.messages.append(self._model_metrics_message(readings, now_ms))

    def metrics_fields(
        self, readings: list[tuple[str, str, float]] | None = None
    ) -> dict[str, Any]:
        """The label side's part of a model-metrics message: metric windows (``readings``, or
        the current ones), join counts and the label clock; with slices, each value's metrics
        and estimates, with [business] its rolling value."""
        lab = self.labels
        windows: dict[str, dict[str, float | None]] = {}
        for metric, wname, v in lab.metric_readings() if readings is None else readings:
            windows.setdefault(wname, {})[metric] = v if np.isfinite(v) else None
        j = lab.join.join
        fields: dict[str, Any] = {
            "windows": windows,
            "labels": {
                "joined": j.n_joined,
                "pending_predictions": j.n_pending,
                "pending_labels": j.n_pending_labels,
                **lab.counters(),
            },
            "label_time_ms": self.clock_ms,
        }
        if self.slices is not None:
            fields["slices"] = self.slices.summary()
        if self.alerts.business is not None:
            fields["business"] = self.alerts.business.summary()
        return fields

    def _model_metrics_message(
        self, readings: list[tuple[str, str, float]], now_ms: int
    ) -> Outbound:
        lab = self.labels
        doc: dict[str, Any] = {
            "pipeline": self.spec.name,
            "partition": self.partition,
            "model_version": self.model_version,
            "task": lab.task,
            **self.metrics_fields(readings),
            "computed_at_ms": now_ms,
        }
        if lab.last_shares is not None:
            doc["importance"] = dict(
                zip(self.predictor.inputs, floats_or_none(lab.last_shares), strict=True)
            )
        topic = self.spec.output.model_metrics_topic
        return (topic, f"{self.spec.name}/{self.partition}".encode(), orjson.dumps(doc))

    # -- state ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {**self.labels.snapshot(), "clock_ms": self.clock_ms}

    def drain_log(self) -> list[tuple[bytes, bytes | None]]:
        """Changelog records of the label-join log since the last call (before `snapshot`):
        the new delta or checkpoint, and tombstones for entries a checkpoint made obsolete."""
        entry = self.labels.join.drain()
        if entry is None:
            return []
        kind, seq, data = entry
        records: list[tuple[bytes, bytes | None]] = list(
            encode_label_log(self.partition, seq, kind, data)
        )
        if kind == "checkpoint":
            records += [(k, None) for k in self._log_keys]
            self._log_keys = []
        self._log_keys += [k for k, _ in records if _ is not None]
        return records

    def restore(self, state: dict[str, Any], records: dict[bytes, bytes]) -> None:
        """Continue from :meth:`snapshot`'s output and the label-log ``records`` of the
        changelog: the checkpoint it names, then the deltas after it."""
        ls = self.labels.ls
        pos = state["log"]
        seq, ck = int(pos["seq"]), pos["checkpoint_seq"]
        keys: list[bytes] = []
        checkpoint = None
        if ck is not None:
            kind, data, n = decode_label_log(records, self.partition, int(ck))
            if kind != "checkpoint":
                raise DriftlineError(f"label-join log entry {ck} is a {kind}, not a checkpoint")
            checkpoint = (int(ck), data)
            keys += label_log_keys(self.partition, int(ck), n)
        deltas = []
        for q in range((ck or 0) + 1, seq + 1):
            _kind, data, n = decode_label_log(records, self.partition, q)
            deltas.append(data)
            keys += label_log_keys(self.partition, q, n)
        join = LoggedLabelJoin.recover(ls.ttl_ms, ls.max_pending, checkpoint, deltas)
        # written with other feature columns (slices or learning/importance switched): the
        # waiting predictions get NaN columns (their slice: 'other') or lose the extra ones
        join.set_feature_count(self.n_join_features)
        self.labels.restore(state, join)
        self.clock_ms = state.get("clock_ms")
        self._log_keys = keys
