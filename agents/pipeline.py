"""One input partition's batch step: decode, features, predict, detect, encode.

No Kafka here: the runner hands in raw records and produces what comes out, so the same step
runs under the worker, in tests and (later) in offline replay.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson

from driftline.agents.decode import RecordDecoder
from driftline.agents.encode import json_items, json_strings, key_json, template
from driftline.agents.labels import (
    EVENT_ID_SEP,
    LabelDecoder,
    LabelOutcome,
    PartitionLabels,
    prediction_ids,
)
from driftline.agents.state import decode_label_log, encode_label_log, label_log_keys
from driftline.errors import DriftlineError, RecordError
from driftline.spec import (
    ERROR_TARGET,
    LABEL_TARGETS,
    PREDICTION_TARGET,
    TEST_DETECTORS,
    DetectorSpec,
    PipelineSpec,
    build_spec_detector,
    to_feature_def,
)
from driftline.streams.detectors.base import Detection
from driftline.streams.fdr import bh_levels
from driftline.streams.features import FeatureEngine
from driftline.streams.label_log import LoggedLabelJoin
from driftline.streams.labels import JoinedBatch
from driftline.streams.model import BatchPredictor
from driftline.streams.positions import PositionLog
from driftline.streams.skew import SkewCheck

log = logging.getLogger("driftline.pipeline")

DLQ_VALUE_LIMIT = 4096
#: Values whose positions are kept per detector target, to report where alert windows start
#: (at least a KS window_size; adaptive windows beyond this report an unknown start).
POSITIONS_DEFAULT, POSITIONS_MAX = 2_000, 20_000


class RawRecord(NamedTuple):
    """What the runner passes in for each consumed record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


class RecordColumns:
    """One partition's batch as columns: no per-record object on the hot path.

    ``cols[i]`` builds the :class:`RawRecord` of one record when one is needed (dead letters,
    alerts); ``take`` selects rows.
    """

    __slots__ = ("keys", "offsets", "partition", "stamps", "topic", "values")

    def __init__(
        self,
        topic: str,
        partition: int,
        offsets: list[int],
        stamps: list[int | None],
        keys: list[bytes | None],
        values: list[bytes | None],
    ) -> None:
        self.topic, self.partition = topic, partition
        self.offsets, self.stamps, self.keys, self.values = offsets, stamps, keys, values

    @classmethod
    def from_records(cls, records: Sequence[RawRecord]) -> RecordColumns:
        if not records:
            return cls("", 0, [], [], [], [])
        return cls(
            records[0].topic,
            records[0].partition,
            [r.offset for r in records],
            [r.timestamp_ms for r in records],
            [r.key for r in records],
            [r.value for r in records],
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> RawRecord:
        return RawRecord(self.topic, self.partition, self.offsets[i], self.stamps[i],
                         self.keys[i], self.values[i])  # fmt: skip

    def take(self, idx: list[int]) -> RecordColumns:
        o, s, k, v = self.offsets, self.stamps, self.keys, self.values
        return RecordColumns(
            self.topic,
            self.partition,
            [o[i] for i in idx],
            [s[i] for i in idx],
            [k[i] for i in idx],
            [v[i] for i in idx],
        )


#: A message to send: (topic, key, value).
Outbound = tuple[str, bytes | None, bytes]


@dataclass
class BatchOutcome:
    """Everything one batch produced, for the runner to send and count."""

    messages: list[Outbound] = field(default_factory=list)
    #: feature vectors and predictions, per topic, ready for ``Producer.produce_batch``
    bulk: dict[str, list[dict[str, bytes]]] = field(default_factory=dict)
    consumed: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    late_events: int = 0
    skew_disagreements: Counter[str] = field(default_factory=Counter)
    batch_hits: int = 0
    batch_misses: int = 0
    batch_age_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    feature_vectors: int = 0
    predictions: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    ingest_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    #: event times of the events that got a prediction (event time -> prediction latency)
    prediction_event_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    last_offset: int | None = None
    detector_readings: list[tuple[str, str, float, float | None]] = field(default_factory=list)
    #: the label side's results (label batches, and early labels met by predictions)
    labels: LabelOutcome | None = None
    #: labels for a prediction made on another partition: (partition, key, value) to forward
    forwarded: list[tuple[int, bytes | None, bytes]] = field(default_factory=list)

    def all_messages(self) -> Iterator[Outbound]:
        """Every message of the batch as (topic, key, value), bulk ones included."""
        yield from self.messages
        for topic, batch in self.bulk.items():
            for m in batch:
                yield (topic, m["key"], m["value"])


def alert_id(
    pipeline: str, detector: str, partition: int, offset: int, status: str, topic: str = ""
) -> str:
    """Deterministic id: the same trigger record yields the same id after a replay or restart.

    ``topic`` is given for triggers on another topic than the input (the labels topic)."""
    where = f"{topic}/{partition}" if topic else str(partition)
    raw = f"{pipeline}|{detector}|{where}|{offset}|{status}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def floats_or_none(a: np.ndarray) -> list[float | None]:
    return [v if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64).tolist()]


def _text(b: bytes | None, limit: int | None = None) -> str | None:
    if b is None:
        return None
    return (b[:limit] if limit else b).decode("utf-8", errors="replace")


class PartitionPipeline:
    """State (features, detectors) and the batch step for one input partition."""

    def __init__(
        self,
        spec: PipelineSpec,
        partition: int,
        predictor: BatchPredictor | None,
        model_version: str,
        batch_cache: Any = None,
    ) -> None:
        self.spec = spec
        self.batch_cache = batch_cache  # agents.batch_features.BatchFeatureCache, shared
        self.partition = partition
        self.predictor = predictor
        self.model_version = model_version
        inp = spec.input
        self._feature_defs = [to_feature_def(f) for f in spec.features]
        self.engine = FeatureEngine(self._feature_defs, grace_ms=spec.grace_ms)
        self.detectors = [(d, build_spec_detector(d)) for d in spec.detectors]
        self.skew = [(c, SkewCheck(**c.params)) for c in spec.skew_checks]
        self._tests = [(d, det) for d, det in self.detectors if d.type in TEST_DETECTORS]
        self._alerting: dict[str, bool] = {}  # detector -> an alert episode is open
        # where each input target's detector windows start (alerts' window bounds)
        self._positions: dict[str, PositionLog] = {}
        for d in spec.detectors:
            if d.target not in LABEL_TARGETS:
                cap = max(int(d.params.get("window_size", 0) or 0), POSITIONS_DEFAULT)
                old = self._positions.get(d.target)
                if old is None or old.capacity < cap:
                    self._positions[d.target] = PositionLog(min(cap, POSITIONS_MAX))
        self.labels: PartitionLabels | None = None
        self.label_decoder: LabelDecoder | None = None
        self._label_clock_ms: int | None = None  # largest label time seen
        self._log_keys: list[bytes] = []  # live label-log records on the changelog
        self._log_records: list[tuple[bytes, bytes | None]] = []
        if spec.labels is not None and predictor is not None:
            self.labels = PartitionLabels(spec, partition, predictor)
            self.predictor = self.labels.predictor  # its own copy when learning online
            self.label_decoder = LabelDecoder(spec, predictor.is_classifier)
        # non-numeric fields the features (distinct, filters) or detectors (categories) read
        wanted = set(self.engine.required_fields) | {d.target for d in spec.detectors}
        if spec.labels is not None and spec.input.event_id_field is not None:
            wanted.add(spec.input.event_id_field)
        extra = tuple(
            n
            for n, t in inp.fields.items()
            if n in wanted and t not in ("float", "int", "bool") and n != inp.time_field
        )
        self.decoder = RecordDecoder(
            inp.fields, inp.key_field, inp.time_field, inp.max_message_bytes, extra=extra
        )

    # -- state --------------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        defs = [repr(f) for f in self._feature_defs]
        raw = orjson.dumps({"features": defs, "grace_ms": self.spec.grace_ms})
        return hashlib.sha256(raw).hexdigest()[:16]

    def _detector_key(self, d: DetectorSpec) -> str:
        return f"{d.name}|{d.type}|{d.target}|{sorted(d.params.items())}"

    def snapshot(self) -> dict[str, Any]:
        """Everything this partition has learnt, as plain data (see :meth:`restore`)."""
        return {
            "fingerprint": self._fingerprint(),
            "features": self.engine.snapshot(),
            "detectors": {self._detector_key(d): det.snapshot() for d, det in self.detectors},
            "skew": {
                f"{c.name}|{sorted(c.params.items())}": chk.snapshot() for c, chk in self.skew
            },
            "positions": {t: log.snapshot() for t, log in self._positions.items()},
            "alerting": dict(self._alerting),
            "labels": None
            if self.labels is None
            else {**self.labels.snapshot(), "clock_ms": self._label_clock_ms},
        }

    def drain_log(self) -> list[tuple[bytes, bytes | None]]:
        """Changelog records of the label-join log since the last call (before `snapshot`):
        the new delta or checkpoint, and tombstones for entries a checkpoint made obsolete."""
        if self.labels is None:
            return []
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

    @property
    def model_version_now(self) -> str:
        """The version written on predictions: with online learning, the examples learnt."""
        if self.labels is not None and self.labels.ls.learn:
            return f"{self.model_version}+online.p{self.partition}.{self.labels.n_learned}"
        return self.model_version

    def _restore_labels(self, state: dict[str, Any] | None, records: dict[bytes, bytes]) -> None:
        if self.labels is None or state is None:
            return
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
        self.labels.restore(state, join)
        self.predictor = self.labels.predictor
        self._label_clock_ms = state.get("clock_ms")
        self._log_keys = keys

    def restore(self, state: dict[str, Any], records: dict[bytes, bytes] | None = None) -> None:
        """Continue from :meth:`snapshot`'s output.

        Feature state written under other feature definitions cannot be reused: that is an
        error (use a new pipeline name). A detector whose definition changed starts afresh.
        """
        if state.get("fingerprint") != self._fingerprint():
            raise DriftlineError(
                f"partition {self.partition}: the saved state was written by other feature "
                "definitions (features or windows.grace_ms changed); give the pipeline a new "
                "pipeline.name, or delete its state changelog topic to start over"
            )
        self.engine = FeatureEngine.restore(
            self._feature_defs, self.spec.grace_ms, state["features"]
        )
        saved_skew = state.get("skew", {})
        for c, chk in self.skew:
            snap = saved_skew.get(f"{c.name}|{sorted(c.params.items())}")
            if snap is not None:
                chk.restore(snap)
        self._restore_labels(state.get("labels"), records or {})
        self._alerting = {k: bool(v) for k, v in state.get("alerting", {}).items()}
        for target, snap in state.get("positions", {}).items():
            if target in self._positions:
                self._positions[target].restore(snap)
        saved = state.get("detectors", {})
        for d, det in self.detectors:
            snap = saved.get(self._detector_key(d))
            if snap is not None:
                det.restore(snap)
            else:
                log.warning(
                    "partition %d: detector %s has no saved state; starting it afresh",
                    self.partition,
                    d.name,
                )

    # -- dead letters -----------------------------------------------------------------------
    def _dead_letter(
        self, rec: RawRecord, reason: str, error: str, now_ms: int, topic: str | None = None
    ) -> Outbound:
        doc = {
            "pipeline": self.spec.name,
            "reason": reason,
            "error": error,
            "source": {
                "topic": rec.topic,
                "partition": rec.partition,
                "offset": rec.offset,
                "timestamp_ms": rec.timestamp_ms,
            },
            "key": _text(rec.key, DLQ_VALUE_LIMIT),
            "value": _text(rec.value, DLQ_VALUE_LIMIT),
            "value_size": 0 if rec.value is None else len(rec.value),
            "dead_lettered_at_ms": now_ms,
        }
        log.warning(
            "dead-lettered %s/%d@%d: %s: %s", rec.topic, rec.partition, rec.offset, reason, error
        )
        return (topic or self.spec.output.dlq_topic, rec.key, orjson.dumps(doc))

    def _reject(
        self, out: BatchOutcome, cols: RecordColumns, i: int, e: Exception, now_ms: int
    ) -> None:
        """Record ``i`` could not be decoded: one dead letter, counted by reason. Called in the
        ``except`` block; anything but a `RecordError` is a bug, logged with its traceback,
        and must not kill the worker either."""
        rec = cols[i]
        if isinstance(e, RecordError):
            reason, detail = e.reason, e.detail
        else:
            log.exception("cannot decode %s/%d@%d", rec.topic, rec.partition, rec.offset)
            reason, detail = "processing_error", repr(e)
        out.dead_letters[reason] += 1
        out.messages.append(self._dead_letter(rec, reason, detail, now_ms))

    # -- the batch step -----------------------------------------------------------------------
    def process(self, records: Sequence[RawRecord] | RecordColumns) -> BatchOutcome:
        cols = (
            records if isinstance(records, RecordColumns) else RecordColumns.from_records(records)
        )
        out = BatchOutcome(consumed=len(cols))
        if not len(cols):
            return out
        out.last_offset = cols.offsets[-1]
        now_ms = int(time.time() * 1000)
        t0 = time.perf_counter()

        good_idx: list[int] = []
        entities: list[str] = []
        times: list[int] = []
        rows: list[tuple[float, ...]] = []
        extras: list[tuple[Any, ...]] = []
        decode = self.decoder.decode
        for i, raw in enumerate(cols.values):
            try:
                ent, ts, nums, ext = decode(raw)
            except Exception as e:
                self._reject(out, cols, i, e, now_ms)
                continue
            good_idx.append(i)
            entities.append(ent)
            times.append(ts)
            rows.append(nums)
            extras.append(ext)
        good = cols if len(good_idx) == len(cols) else cols.take(good_idx)
        t1 = time.perf_counter()
        out.stage_seconds["decode"] = t1 - t0
        if not len(good):
            return out

        ent_arr = np.array(entities, dtype=object)
        ts_arr = np.array(times, dtype=np.int64)
        numeric = self.decoder.numeric
        mat = np.array(rows, dtype=np.float64).reshape(len(good), len(numeric))
        columns: dict[str, np.ndarray] = {name: mat[:, j] for j, name in enumerate(numeric)}
        for j, name in enumerate(self.decoder.extra):
            col = np.empty(len(extras), dtype=object)
            col[:] = [e[j] for e in extras]
            columns[name] = col
        fb = self.engine.update(ent_arr, ts_arr, columns)
        late = np.asarray(fb.late, dtype=bool)
        if late.any():
            wm = self.engine.watermark_ms
            for i in np.flatnonzero(late).tolist():
                rec = good[i]
                err = (
                    f"event time {times[i]} ms is older than the partition watermark minus "
                    f"grace (watermark {wm} ms, grace {self.spec.grace_ms} ms); raise "
                    "windows.grace_ms to accept it"
                )
                out.late_events += 1
                late_topic = self.spec.output.late_topic
                out.messages.append(self._dead_letter(rec, "late_event", err, now_ms, late_topic))
            keep = np.flatnonzero(~late)
            good = good.take(keep.tolist())
            ent_arr, ts_arr = ent_arr[keep], ts_arr[keep]
            columns = {k: v[keep] for k, v in columns.items()}
            feats = {k: np.asarray(v)[keep] for k, v in fb.values.items()}
        else:
            feats = {k: np.asarray(v) for k, v in fb.values.items()}
        vector = {**columns, **feats}
        if self.batch_cache is not None and len(ent_arr):
            bvals, hit, as_of = self.batch_cache.lookup(ent_arr.tolist())
            for j, name in enumerate(self.batch_cache.names):
                vector[name] = bvals[:, j]
            out.batch_hits = int(hit.sum())
            out.batch_misses = int(hit.size - out.batch_hits)
            out.batch_age_s = (now_ms - as_of[hit]) / 1000.0
            for c, chk in self.skew:
                n_dis, changes = chk.update(vector[c.batch], vector[c.streaming])
                out.skew_disagreements[c.name] += n_dis
                for d in changes:
                    doc = self._skew_alert(c, d, good, ts_arr, now_ms)
                    out.alerts.append(doc)
                    topic = self.spec.output.alerts_topic
                    out.messages.append((topic, doc["target"].encode(), orjson.dumps(doc)))
        t2 = time.perf_counter()
        out.stage_seconds["features"] = t2 - t1
        n = len(good)
        if n == 0:
            return out

        scores = None
        if self.predictor is not None:
            X = np.column_stack([vector[c] for c in self.predictor.inputs])
            scores = self.predictor.predict(X)
        t3 = time.perf_counter()
        out.stage_seconds["predict"] = t3 - t2

        self._bh_levels()
        off_arr = np.asarray(good.offsets, dtype=np.int64)
        finite: dict[str, np.ndarray] = {}
        for dspec, det in self.detectors:
            if dspec.target in LABEL_TARGETS:
                continue  # fed by joined labels (see _grade)
            values = scores if dspec.target == PREDICTION_TARGET else vector[dspec.target]
            if values is None:
                continue
            if dspec.target not in finite:
                finite[dspec.target] = (
                    np.isfinite(values) if values.dtype != object else np.ones(n, dtype=bool)
                )
            if getattr(det, "reference_mode", None) == "previous_window":
                detections = det.update_many(values, ts_ms=ts_arr)
            else:
                detections = det.update_many(values)
            for d in detections:
                if not self._new_episode(dspec.name, d.status):
                    continue
                start = self._positions[dspec.target].window_start(
                    ts_arr, off_arr, finite[dspec.target], d.index, d.n_current
                )
                doc = self._alert(dspec, d, good, ts_arr, now_ms, start)
                out.alerts.append(doc)
                topic = self.spec.output.alerts_topic
                out.messages.append((topic, dspec.target.encode(), orjson.dumps(doc)))
            out.detector_readings.append((dspec.name, dspec.target, det.statistic, det.p_value))
        for target, mask in finite.items():
            self._positions[target].extend(ts_arr, off_arr, mask)
        t4 = time.perf_counter()
        out.stage_seconds["detect"] = t4 - t3

        self._encode(out, good, ent_arr, ts_arr, vector, feats, scores)
        t5 = time.perf_counter()
        out.stage_seconds["encode"] = t5 - t4
        out.ingest_ms = np.array([now_ms if t is None else t for t in good.stamps], dtype=np.int64)
        if scores is not None:
            out.prediction_event_ms = ts_arr
            if self.labels is not None:
                self._await_labels(out, good, ent_arr, ts_arr, vector, columns, scores, now_ms)
                out.stage_seconds["labels"] = time.perf_counter() - t5
        return out

    def _new_episode(self, detector: str, status: str) -> bool:
        """Alerts follow drift episodes: one ``firing`` when a detector starts firing and one
        ``resolved`` when it stops. A detector that detects again while firing (ADWIN and the
        sequential tests report every river detection; each restarts their cooldown) adds
        nothing: its statistic stays on ``/metrics``."""
        firing = self._alerting.get(detector, False)
        if (status == "firing") == firing:
            return False
        self._alerting[detector] = status == "firing"
        return True

    def _bh_levels(self) -> None:
        """``[drift] correction = "benjamini_hochberg"``: give each test-based detector the level
        at which BH would reject it, given the family's latest p-values (``bh_levels``)."""
        if self.spec.correction != "benjamini_hochberg" or len(self._tests) < 2:
            return
        p = [det.p_value for _, det in self._tests]
        for alpha in {d.family_alpha for d, _ in self._tests}:
            assert alpha is not None
            levels = bh_levels(p, alpha)
            for (d, det), level in zip(self._tests, levels.tolist(), strict=True):
                if d.family_alpha == alpha:
                    det.set_alpha(level)

    # -- labels ---------------------------------------------------------------------------------
    def _join_ids(
        self, good: RecordColumns, ent_arr: np.ndarray, columns: dict[str, np.ndarray]
    ) -> np.ndarray:
        if self.spec.labels is not None and self.spec.labels.join_key == "event_id":
            eid = self.spec.input.event_id_field
            assert eid is not None
            col = columns[eid]
            if col.dtype != object:  # an int field, decoded as float64
                col = col.astype(np.int64)
            out = np.empty(len(col), dtype=object)
            out[:] = [f"{e}{EVENT_ID_SEP}{v}" for e, v in zip(ent_arr.tolist(), col.tolist(),
                                                              strict=True)]  # fmt: skip
            return out
        return prediction_ids(good.topic, self.partition, good.offsets)

    def _await_labels(
        self,
        out: BatchOutcome,
        good: RecordColumns,
        ent_arr: np.ndarray,
        ts_arr: np.ndarray,
        vector: dict[str, np.ndarray],
        columns: dict[str, np.ndarray],
        scores: np.ndarray,
        now_ms: int,
    ) -> None:
        """Store this batch's predictions until their labels come (early labels join now)."""
        lab = self.labels
        assert lab is not None and self.predictor is not None
        ids = self._join_ids(good, ent_arr, columns)
        pred = (
            (scores >= lab.ls.threshold).astype(np.float64)
            if self.predictor.is_classifier
            else None
        )
        X = None
        if lab.keeps_features:
            X = np.column_stack([vector[c] for c in self.predictor.inputs])
        jb = lab.join.add_predictions(ids, ts_arr, scores, pred, X)
        before = lab.counters()
        out.labels = LabelOutcome()
        if len(jb):
            where = dict(zip(ids.tolist(), zip(good.offsets, ts_arr.tolist(), strict=True),
                             strict=True))  # fmt: skip
            self._grade(jb, out, good.topic, where, now_ms)
        self._advance_labels(out, before, now_ms)

    def _advance_labels(self, out: BatchOutcome, before: dict[str, int], now_ms: int) -> None:
        lab = self.labels
        assert lab is not None and out.labels is not None
        clocks = [c for c in (self.engine.watermark_ms, self._label_clock_ms) if c is not None]
        if clocks:
            lab.advance(max(clocks) - self.spec.grace_ms)
        after = lab.counters()
        out.labels.counts = {k: after[k] - before.get(k, after[k]) for k in after}
        if out.labels.joined:
            readings = lab.metric_readings()
            out.labels.model_metrics = readings
            if lab.last_shares is not None:
                out.labels.importance = list(
                    zip(self.predictor.inputs if self.predictor else (),
                        lab.last_shares.tolist(), strict=True)
                )  # fmt: skip
            out.messages.append(self._model_metrics_message(readings, now_ms))

    def _model_metrics_message(
        self, readings: list[tuple[str, str, float]], now_ms: int
    ) -> Outbound:
        lab = self.labels
        assert lab is not None and lab.ls is not None
        windows: dict[str, dict[str, float | None]] = {}
        for metric, wname, v in readings:
            windows.setdefault(wname, {})[metric] = v if np.isfinite(v) else None
        j = lab.join.join
        doc = {
            "pipeline": self.spec.name,
            "partition": self.partition,
            "model_version": self.model_version_now,
            "task": lab.task,
            "windows": windows,
            "labels": {
                "joined": j.n_joined,
                "pending_predictions": j.n_pending,
                "pending_labels": j.n_pending_labels,
                **lab.counters(),
            },
            "label_time_ms": self._label_clock_ms,
            "computed_at_ms": now_ms,
        }
        if lab.last_shares is not None and self.predictor is not None:
            doc["importance"] = dict(
                zip(self.predictor.inputs, floats_or_none(lab.last_shares), strict=True)
            )
        topic = self.spec.output.model_metrics_topic
        return (topic, f"{self.spec.name}/{self.partition}".encode(), orjson.dumps(doc))

    def _grade(
        self,
        jb: JoinedBatch,
        out: BatchOutcome,
        topic: str,
        where: dict[str, tuple[int, int]],
        now_ms: int,
    ) -> None:
        """Joined rows: metrics, error/label detectors, importance (``where`` maps a join id to
        the trigger record's offset and time, for alerts)."""
        lab = self.labels
        assert lab is not None and out.labels is not None
        events = lab.grade(jb, out.labels)
        ids = jb.ids.tolist()
        alerts_topic = self.spec.output.alerts_topic
        for dspec, det in self.detectors:
            if dspec.target not in LABEL_TARGETS:
                continue
            values = lab.errors(jb) if dspec.target == ERROR_TARGET else jb.labels
            for d in det.update_many(values):
                if not self._new_episode(dspec.name, d.status):
                    continue
                off, t = where.get(ids[d.index], (-1, int(jb.label_time_ms[d.index])))
                doc = self._alert_doc(dspec, d, topic, off, t, now_ms)
                out.alerts.append(doc)
                out.messages.append((alerts_topic, dspec.target.encode(), orjson.dumps(doc)))
            out.detector_readings.append((dspec.name, dspec.target, det.statistic, det.p_value))
        for e in events:
            off, _ = where.get(ids[-1], (-1, 0))
            doc = self._importance_alert(e, topic, off, now_ms)
            out.alerts.append(doc)
            out.messages.append((alerts_topic, e.feature.encode(), orjson.dumps(doc)))

    def process_labels(self, cols: RecordColumns) -> BatchOutcome:
        """One batch of the labels topic's partition: decode, forward, join, grade."""
        out = BatchOutcome(consumed=len(cols))
        if not len(cols) or self.labels is None or self.label_decoder is None:
            return out
        out.last_offset = cols.offsets[-1]
        now_ms = int(time.time() * 1000)
        t0 = time.perf_counter()
        lab, dec = self.labels, self.label_decoder
        before = lab.counters()
        out.labels = LabelOutcome()
        ids: list[str] = []
        ys: list[float] = []
        ts: list[int] = []
        rows: list[int] = []
        for i, (raw, stamp) in enumerate(zip(cols.values, cols.stamps, strict=True)):
            try:
                jid, y, t, part = dec.decode(raw, stamp)
            except Exception as e:
                self._reject(out, cols, i, e, now_ms)
                continue
            if part is not None and part != self.partition:
                out.forwarded.append((part, cols.keys[i], raw))  # type: ignore[arg-type]
                continue
            ids.append(jid)
            ys.append(y)
            ts.append(t)
            rows.append(i)
        if ids:
            id_arr = np.empty(len(ids), dtype=object)
            id_arr[:] = ids
            t_arr = np.array(ts, dtype=np.int64)
            top = int(t_arr.max())
            if self._label_clock_ms is None or top > self._label_clock_ms:
                self._label_clock_ms = top
            jb = lab.join.add_labels(id_arr, np.array(ys, dtype=np.float64), t_arr)
            if len(jb):
                offs = [cols.offsets[r] for r in rows]
                where = dict(zip(ids, zip(offs, ts, strict=True), strict=True))
                self._grade(jb, out, cols.topic, where, now_ms)
        self._advance_labels(out, before, now_ms)
        out.stage_seconds["labels"] = time.perf_counter() - t0
        return out

    def _encode(
        self,
        out: BatchOutcome,
        good: RecordColumns,
        ent_arr: np.ndarray,
        ts_arr: np.ndarray,
        columns: dict[str, np.ndarray],
        feats: dict[str, np.ndarray],
        scores: np.ndarray | None,
    ) -> None:
        """Feature vectors and predictions, built column-wise (see :mod:`agents.encode`)."""
        spec, o = self.spec, self.spec.output
        n = len(good)
        ents = ent_arr.tolist()
        keys = [e.encode() for e in ents]
        ent_j = json_strings(ents)
        ts_j = json_items(ts_arr)
        off_arr = np.array(good.offsets, dtype=np.int64)
        off_j = json_items(off_arr)
        stamps = good.stamps
        stamp_j = json_items(stamps) if None in stamps else json_items(np.array(stamps, np.int64))
        src_topic, part = good.topic, self.partition
        source_head = (
            b',"source":{"topic":'
            + orjson.dumps(src_topic)
            + b',"partition":'
            + str(part).encode()
            + b',"offset":'
        )
        computed_ms = int(time.time() * 1000)
        names = list(feats)
        parts: list[bytes | None] = [
            b'{"pipeline":' + orjson.dumps(spec.name) + b',"entity":',
            None,
            b',"event_time_ms":',
            None,
            b',"features":{',
        ]
        for i, name in enumerate(names):
            parts += [(b"," if i else b"") + key_json(name) + b":", None]
        parts += [b"}", source_head, None, b',"timestamp_ms":', None,
                  b'},"computed_at_ms":' + str(computed_ms).encode() + b',"freshness_ms":', None,
                  b"}"]  # fmt: skip
        tmpl = template(parts)
        fresh_j = json_items(computed_ms - ts_arr)
        cols = [json_items(np.asarray(feats[k], dtype=np.float64)) for k in names]
        rows = zip(ent_j, ts_j, *cols, off_j, stamp_j, fresh_j, strict=True)
        ftopic = o.features_topic
        out.messages.extend((ftopic, key, tmpl % row) for key, row in zip(keys, rows, strict=True))
        out.feature_vectors = n
        if scores is None or self.predictor is None:
            return
        vector = columns  # the full model-input vector: fields, features, batch features
        in_names = self.predictor.inputs
        if self.predictor.is_classifier:
            label_j = json_items((scores >= 0.5).astype(np.int64))
            for i in np.flatnonzero(np.isnan(scores)).tolist():
                label_j[i] = b"null"  # an input was missing: no score, no label
        else:
            label_j = [b"null"] * n
        ingest = np.array([t or 0 for t in stamps], dtype=np.float64)
        latency = np.maximum(time.time() * 1000 - ingest, 0.0)
        pid_head = orjson.dumps(f"{src_topic}:{part}:")[:-1]  # open string, offset follows
        parts = [
            b'{"prediction_id":' + pid_head, None,
            b'","pipeline":' + orjson.dumps(spec.name) + b',"entity":', None,
            b',"model_version":' + orjson.dumps(self.model_version_now) + b',"score":', None,
            b',"label":', None, b',"inputs":{',
        ]  # fmt: skip
        for i, name in enumerate(in_names):
            parts += [(b"," if i else b"") + key_json(name) + b":", None]
        parts += [b'},"event_time_ms":', None, b',"latency_ms":', None, source_head, None,
                  b',"timestamp_ms":', None, b"}}"]  # fmt: skip
        tmpl = template(parts)
        in_cols = [json_items(np.asarray(vector[c], dtype=np.float64)) for c in in_names]
        rows = zip(off_j, ent_j, json_items(scores), label_j, *in_cols, ts_j,
                   json_items(latency), off_j, stamp_j, strict=True)  # fmt: skip
        ptopic = o.predictions_topic
        out.messages.extend((ptopic, key, tmpl % row) for key, row in zip(keys, rows, strict=True))
        out.predictions = n

    def _skew_alert(
        self, c: Any, d: Detection, good: RecordColumns, ts_arr: np.ndarray, now_ms: int
    ) -> dict[str, Any]:
        rec = good[d.index]
        return {
            "alert_id": alert_id(self.spec.name, c.name, self.partition, rec.offset, d.status),
            "pipeline": self.spec.name,
            "kind": "skew",
            "detector": c.name,
            "detector_type": "skew",
            "target": f"{c.batch}~{c.streaming}",
            "status": d.status,
            "severity": "warning" if d.status == "firing" else "info",
            "statistic": float(d.statistic),
            "p_value": None,
            "threshold": float(d.threshold),
            "window": {
                "partition": self.partition,
                "event_time_ms": int(ts_arr[d.index]),
                "offset": rec.offset,
                "n_current": int(d.n_current),
            },
            "reference": {
                "description": f"batch feature {c.batch} vs streaming {c.streaming}: share of "
                f"the last {d.n_current} compared events that disagree",
                "n": 0,
            },
            "detected_at_ms": now_ms,
        }

    def _reference_description(self, dspec: DetectorSpec, d: Detection) -> str:
        where = f"{dspec.target} on partition {self.partition}"
        if dspec.reference_profile is not None:
            return f"profile {dspec.reference_profile.name} of {dspec.target}"
        mode = dspec.params.get("reference_mode", "fixed")
        if dspec.type in ("adwin", "page_hinkley", "ddm", "hddm_a", "hddm_w"):
            return f"{dspec.type} adaptive history of {where}"
        if mode == "previous_window":
            return f"previous {dspec.params.get('window_ms')} ms event-time window of {where}"
        if mode == "sliding":
            return f"the {d.n_reference} values before the current window of {where}"
        return f"first {d.n_reference} values of {where}"

    def _alert(
        self,
        dspec: DetectorSpec,
        d: Detection,
        good: RecordColumns,
        ts_arr: np.ndarray,
        now_ms: int,
        start: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        off = good.offsets[d.index]
        return self._alert_doc(dspec, d, good.topic, off, int(ts_arr[d.index]), now_ms, start)

    def _trigger_topic(self, topic: str) -> str:
        """Part of an alert id: empty for input records (ids as before labels existed)."""
        return topic if self.spec.labels is not None and topic == self.spec.labels.topic else ""

    def _importance_alert(self, e: Any, topic: str, offset: int, now_ms: int) -> dict[str, Any]:
        own = self._trigger_topic(topic)
        imp = self.spec.labels.importance if self.spec.labels else None
        return {
            "alert_id": alert_id(
                self.spec.name, f"importance:{e.feature}", self.partition, offset, e.status, own
            ),
            "pipeline": self.spec.name,
            "kind": "importance",
            "detector": "importance",
            "detector_type": "importance",
            "target": e.feature,
            "status": e.status,
            "severity": "warning" if e.status == "firing" else "info",
            "statistic": float(e.current_share),
            "p_value": None,
            "threshold": float(imp.threshold if imp else 0.0),
            "window": {
                "partition": self.partition,
                "topic": topic,
                "event_time_ms": int(e.time_ms or 0),
                "offset": offset,
                "n_current": int(e.n_examples),
            },
            "reference": {
                "description": f"{imp.method if imp else ''} importance share of {e.feature} "
                f"at the first evaluation: {e.reference_share:.4f}",
                "n": int(e.n_examples),
            },
            "detected_at_ms": now_ms,
        }

    def _alert_doc(
        self,
        dspec: DetectorSpec,
        d: Detection,
        topic: str,
        offset: int,
        event_time_ms: int,
        now_ms: int,
        start: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        kinds = {PREDICTION_TARGET: "prediction", ERROR_TARGET: "concept", "label": "label"}
        kind = kinds.get(dspec.target, "covariate")
        if d.status == "resolved":
            severity = "info"
        elif d.p_value is not None and d.p_value < d.threshold * 1e-3:
            severity = "critical"
        else:
            severity = "warning"
        ref = self._reference_description(dspec, d)
        own = self._trigger_topic(topic)
        doc = {
            "alert_id": alert_id(self.spec.name, dspec.name, self.partition, offset, d.status, own),
            "pipeline": self.spec.name,
            "kind": kind,
            "detector": dspec.name,
            "detector_type": dspec.type,
            "target": dspec.target,
            "status": d.status,
            "severity": severity,
            "statistic": float(d.statistic),
            "p_value": None if d.p_value is None else float(d.p_value),
            "threshold": float(d.threshold),
            "window": {
                "partition": self.partition,
                "topic": topic,
                "event_time_ms": event_time_ms,
                "offset": offset,
                "start_event_time_ms": None if start is None else start[0],
                "start_offset": None if start is None else start[1],
                "n_current": int(d.n_current),
            },
            "reference": {"description": ref, "n": int(d.n_reference)},
            "detected_at_ms": now_ms,
        }
        if getattr(d, "detail", ""):
            doc["detail"] = d.detail
        return doc
