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

from agents.decode import RecordDecoder
from agents.encode import json_items, json_strings, key_json, template
from driftline.errors import DriftlineError, RecordError
from driftline.spec import (
    PREDICTION_TARGET,
    DetectorSpec,
    PipelineSpec,
    build_spec_detector,
    to_feature_def,
)
from streams.detectors.base import Detection
from streams.features import FeatureEngine
from streams.model import BatchPredictor
from streams.skew import SkewCheck

log = logging.getLogger("driftline.pipeline")

DLQ_VALUE_LIMIT = 4096


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

    def all_messages(self) -> Iterator[Outbound]:
        """Every message of the batch as (topic, key, value), bulk ones included."""
        yield from self.messages
        for topic, batch in self.bulk.items():
            for m in batch:
                yield (topic, m["key"], m["value"])


def alert_id(pipeline: str, detector: str, partition: int, offset: int, status: str) -> str:
    """Deterministic id: the same trigger record yields the same id after a replay or restart."""
    raw = f"{pipeline}|{detector}|{partition}|{offset}|{status}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


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
        # non-numeric fields the features (distinct, filters) or detectors (categories) read
        wanted = set(self.engine.required_fields) | {d.target for d in spec.detectors}
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
        }

    def restore(self, state: dict[str, Any]) -> None:
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
            except RecordError as e:
                out.dead_letters[e.reason] += 1
                out.messages.append(self._dead_letter(cols[i], e.reason, e.detail, now_ms))
                continue
            except Exception as e:  # a bug must not kill the worker; the record is kept
                rec = cols[i]
                log.exception("cannot decode %s/%d@%d", rec.topic, rec.partition, rec.offset)
                out.dead_letters["processing_error"] += 1
                out.messages.append(self._dead_letter(rec, "processing_error", repr(e), now_ms))
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

        for dspec, det in self.detectors:
            values = scores if dspec.target == PREDICTION_TARGET else vector[dspec.target]
            if values is None:
                continue
            if getattr(det, "reference_mode", None) == "previous_window":
                detections = det.update_many(values, ts_ms=ts_arr)
            else:
                detections = det.update_many(values)
            for d in detections:
                doc = self._alert(dspec, d, good, ts_arr, now_ms)
                out.alerts.append(doc)
                topic = self.spec.output.alerts_topic
                out.messages.append((topic, dspec.target.encode(), orjson.dumps(doc)))
            out.detector_readings.append((dspec.name, dspec.target, det.statistic, det.p_value))
        t4 = time.perf_counter()
        out.stage_seconds["detect"] = t4 - t3

        self._encode(out, good, ent_arr, ts_arr, vector, feats, scores)
        out.stage_seconds["encode"] = time.perf_counter() - t4
        out.ingest_ms = np.array([now_ms if t is None else t for t in good.stamps], dtype=np.int64)
        if scores is not None:
            out.prediction_event_ms = ts_arr
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
            b',"model_version":' + orjson.dumps(self.model_version) + b',"score":', None,
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
    ) -> dict[str, Any]:
        rec = good[d.index]
        kind = "prediction" if dspec.target == PREDICTION_TARGET else "covariate"
        if d.status == "resolved":
            severity = "info"
        elif d.p_value is not None and d.p_value < d.threshold * 1e-3:
            severity = "critical"
        else:
            severity = "warning"
        ref = self._reference_description(dspec, d)
        doc = {
            "alert_id": alert_id(self.spec.name, dspec.name, self.partition, rec.offset, d.status),
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
                "event_time_ms": int(ts_arr[d.index]),
                "offset": rec.offset,
                "n_current": int(d.n_current),
            },
            "reference": {"description": ref, "n": int(d.n_reference)},
            "detected_at_ms": now_ms,
        }
        if getattr(d, "detail", ""):
            doc["detail"] = d.detail
        return doc
