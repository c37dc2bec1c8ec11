"""Offline replay and reference profiles: the same ``streams/`` code as the worker, on a file.

Feature values equal the streaming path's for the same events when each event lands in the same
input partition in the same order: give ``--partitions`` (the input topic's count) and the
producer's partitioner (``consistent`` = librdkafka's default, CRC-32 of the key, used by kcat
and confluent-kafka; ``murmur2`` = the Java client's default). Feature state never crosses
entities, so only lateness (a per-partition watermark) depends on the partitioning.

A JSON Lines record is replayed as its line's bytes, the value a producer would have sent: a line
that is not JSON, not an object or not valid against the spec is dead-lettered exactly as the
worker does it (same ``reason`` and ``error``), counted, and the replay goes on. The offline run
has no broker, so no record has a broker timestamp: predictions carry no ``latency_ms``.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.agents.batch_features import BatchFeatureCache
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.progress import progress_bar
from driftline.agents.stages.outcome import DetectorInputs
from driftline.agents.stages.records import RecordColumns
from driftline.errors import DriftlineError
from driftline.io_files import RecordWriter, count_records, file_format, read_records
from driftline.spec import MultivariateSpec, PipelineSpec, default_of
from driftline.streams.calibration import IsotonicCalibrator
from driftline.streams.pca_reference import PCAReference
from driftline.streams.profile import Profile

PARTITIONERS = ("consistent", "murmur2")
PROFILE_FORMAT = "driftline-profile/1"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed int32.

    >>> murmur2(b"21"), murmur2(b"foobar"), murmur2(b"")
    (-973932308, -790332482, 275646681)
    """
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    rest = length % 4
    tail = data[4 * n4 :]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int, partitioner: str) -> int:
    if partitions <= 1:
        return 0
    if partitioner == "consistent":
        return zlib.crc32(key) % partitions
    if partitioner == "murmur2":
        return (murmur2(key) & 0x7FFFFFFF) % partitions
    raise DriftlineError(f"unknown partitioner {partitioner!r}; use one of {PARTITIONERS}")


def input_records(
    path: str | Path, fields: Mapping[str, str] | None = None
) -> Iterator[tuple[Any, bytes]]:
    """``(document or None, value bytes)`` per record of an events file.

    JSON Lines give each non-blank line's own bytes (without the line end) and its parsed
    document, None when the line is not JSON: the pipeline's decoder dead-letters it as the
    worker would. CSV and Parquet rows are documents, serialised to JSON values.
    """
    fmt = file_format(path)
    if fmt not in ("jsonl", "jsonl.gz"):
        for doc in read_records(path, fields):
            yield doc, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        return
    with gzip.open(path, "rb") if fmt == "jsonl.gz" else open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            value = line.rstrip(b"\r\n")
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                doc = None
            yield doc, value


@dataclass
class ReplayStats:
    events: int = 0
    feature_vectors: int = 0
    predictions: int = 0
    alerts: int = 0
    late: int = 0
    model_metrics: int = 0
    labels: int = 0
    business: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)


def pipeline_factory(
    spec: PipelineSpec,
    *,
    with_model: bool = True,
    batch_features_path: str | Path | None = None,
    detector_inputs: bool = False,
) -> Callable[[int], PartitionPipeline]:
    """``partition -> PartitionPipeline`` sharing one model and batch-feature cache, as a
    worker's partitions do; ``detector_inputs``: batches keep what each detector read
    (``BatchOutcome.detector_inputs``, for reports)."""
    predictor, version = build_predictor(spec) if with_model else (None, "none")
    cache = None
    if spec.batch_features is not None:
        if batch_features_path is None:
            raise DriftlineError(
                "the spec declares [batch_features]: pass --batch-features FILE with the table "
                "to join (the same file `driftline batch-features load` published)"
            )
        cache = BatchFeatureCache.from_file(spec.batch_features, batch_features_path)

    def make(p: int) -> PartitionPipeline:
        pipe = PartitionPipeline(spec, p, predictor, version, cache)
        pipe.detection.keep_inputs = detector_inputs
        return pipe

    return make


def partition_outcomes(
    records: Iterable[tuple[Any, RawRecord]],
    make_pipeline: Callable[[int], PartitionPipeline],
    *,
    batch: int = 10_000,
    bar: Any = None,
    labels: Any = None,
    business: Any = None,
) -> Iterator[tuple[list[tuple[Any, int]] | None, Any]]:
    """Run ``(document, record)`` pairs through one pipeline per partition, ``batch`` records of
    a partition at a time; yield ``([(document, offset)], BatchOutcome)`` per batch (each
    partition's last, partial batch at the end, partitions in order).

    ``labels`` (an ``agents.replay_labels.LabelFeed``): after each events batch, the labels of
    its partition up to the partition's watermark go through ``process_labels``, yielded as
    ``(None, BatchOutcome)``; the rest at the end. ``business`` (an
    ``agents.replay_business.BusinessFeed``): before each events batch, the business records
    of its partition up to the batch's largest event time go through ``process_business``,
    yielded as ``(None, BatchOutcome)`` too (their ``BatchOutcome.business`` is set); the rest
    at the end, before the remaining labels."""
    pipes: dict[int, PartitionPipeline] = {}
    pending: dict[int, list[RawRecord]] = defaultdict(list)
    docs: dict[int, list[Any]] = defaultdict(list)
    last: dict[int, int] = {}  # each partition's last event offset

    def pipe_of(p: int) -> PartitionPipeline:
        pipe = pipes.get(p)
        if pipe is None:
            pipe = pipes[p] = make_pipeline(p)
        return pipe

    def placed(pipe: PartitionPipeline, oc: Any) -> Any:
        """A side batch's outcome; for reports, where it sits among the partition's events."""
        if pipe.detection.keep_inputs:
            w = pipe.engine.watermark_ms
            oc.detector_inputs = DetectorInputs(
                pipe.partition,
                np.array([] if w is None else [w], dtype=np.int64),
                np.array([] if w is None else [last.get(pipe.partition, 0)], dtype=np.int64),
                {},
            )
        return oc

    def feed_labels(pipe: PartitionPipeline, recs: list[RawRecord]) -> Any:
        return placed(pipe, pipe.process_labels(RecordColumns.from_records(recs)))

    def feed_business(pipe: PartitionPipeline, recs: list[RawRecord]) -> Any:
        return placed(pipe, pipe.process_business(RecordColumns.from_records(recs)))

    def flush(p: int) -> Iterator[tuple[list[tuple[Any, int]] | None, Any]]:
        pipe = pipe_of(p)
        recs, ds = pending.pop(p), docs.pop(p)
        if business is not None:
            for due in business.before(p, ds, recs):
                yield None, feed_business(pipe, due)
        last[p] = recs[-1].offset
        yield list(zip(ds, (r.offset for r in recs), strict=True)), pipe.process(recs)
        if bar is not None:
            bar.update(len(recs))
        if labels is not None:
            for due in labels.due(p, pipe.engine.watermark_ms):
                yield None, feed_labels(pipe, due)

    for doc, rec in records:
        p = rec.partition
        pending[p].append(rec)
        docs[p].append(doc)
        if len(pending[p]) >= batch:
            yield from flush(p)
    for p in sorted(pending):
        yield from flush(p)
    if business is not None:
        for p, batches in business.rest().items():
            for recs in batches:
                yield None, feed_business(pipe_of(p), recs)
    if labels is not None:
        for p, batches in labels.rest().items():
            for recs in batches:
                yield None, feed_labels(pipe_of(p), recs)


def file_records(
    spec: PipelineSpec, input_path: str | Path, partitions: int = 1, partitioner: str = "consistent"
) -> Iterator[tuple[Any, RawRecord]]:
    """``(document, record)`` per record of an events file, each in the partition the
    ``partitioner`` puts its key in (offsets count per partition from 0). The arguments are
    checked at the call, before the file is read."""
    if partitions < 1:
        raise DriftlineError("--partitions must be at least 1")
    partition_for(b"", partitions, partitioner)  # validates the partitioner name
    topic = f"replay:{Path(input_path).name}"
    key_field = spec.input.key_field

    def records() -> Iterator[tuple[Any, RawRecord]]:
        offsets: dict[int, int] = defaultdict(int)
        for doc, value in input_records(input_path, spec.input.fields):
            k = doc.get(key_field) if isinstance(doc, dict) else None
            key = None if k is None else str(k).encode()
            p = partition_for(key or b"", partitions, partitioner)
            yield doc, RawRecord(topic, p, offsets[p], None, key, value)
            offsets[p] += 1

    return records()


def as_file_spec(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` reading JSON values: files hold documents, whatever ``[input] format`` the topic
    has (an Avro topic's events exported to JSON Lines replay as they are)."""
    if spec.input.format != "json":
        spec = replace(spec, input=replace(spec.input, format="json"), schema_registry=None)
    if not spec.output.emit_features:  # replay, profile and train read the feature vectors
        spec = replace(spec, output=replace(spec.output, emit_features=True))
    return spec


def replay_outcomes(
    spec: PipelineSpec,
    input_path: str | Path,
    *,
    partitions: int = 1,
    partitioner: str = "consistent",
    batch: int = 10_000,
    progress: bool = True,
    batch_features_path: str | Path | None = None,
    with_model: bool = True,
    detector_inputs: bool = False,
    desc: str = "replay",
    labels: Any = None,
    business: Any = None,
) -> Iterator[tuple[list[tuple[dict[str, Any], int]] | None, Any]]:
    """Yield ``([(input doc, offset)], BatchOutcome)`` per partition batch of a file, and
    ``(None, BatchOutcome)`` per batch of ``labels`` (see `partition_outcomes`).

    Files hold documents: they are read as JSON values whatever ``[input] format`` the topic
    has (an Avro topic's events exported to JSON Lines replay as they are)."""
    spec = as_file_spec(spec)
    records = file_records(spec, input_path, partitions, partitioner)  # checks its arguments
    make = pipeline_factory(
        spec,
        with_model=with_model,
        batch_features_path=batch_features_path,
        detector_inputs=detector_inputs,
    )
    bar = progress_bar(count_records(input_path), desc, enabled=progress)
    try:
        yield from partition_outcomes(
            records, make, batch=batch, bar=bar, labels=labels, business=business
        )
    finally:
        bar.close()


def replay(
    spec: PipelineSpec,
    input_path: str | Path,
    output_path: str | Path,
    *,
    partitions: int = 1,
    partitioner: str = "consistent",
    predictions_path: str | Path | None = None,
    alerts_path: str | Path | None = None,
    dead_letters_path: str | Path | None = None,
    progress: bool = True,
    batch_features_path: str | Path | None = None,
    labels: Any = None,
    model_metrics_path: str | Path | None = None,
    business: Any = None,
) -> ReplayStats:
    """Write the feature vectors the worker would write, and optionally its predictions, alerts,
    dead letters and model-metrics messages (documents of those topics' schemas; offline, the
    model metrics are the estimated performance per chunk, ``[performance_estimation]`` with a
    ``reference_profile``, and with ``labels`` (an ``agents.replay_labels.LabelFeed`` to join)
    the realized metrics; with ``business`` (an ``agents.replay_business.BusinessFeed``) the
    business records are fed beside the events, into the alerts and model metrics)."""
    stats = ReplayStats()
    o = spec.output
    with ExitStack() as files:
        writer = files.enter_context(RecordWriter(output_path))
        pred_writer, alert_writer, dlq_writer, metrics_writer = (
            None if path is None else files.enter_context(RecordWriter(path))
            for path in (predictions_path, alerts_path, dead_letters_path, model_metrics_path)
        )
        for docs, oc in replay_outcomes(
            spec,
            input_path,
            partitions=partitions,
            partitioner=partitioner,
            progress=progress,
            batch_features_path=batch_features_path,
            labels=labels,
            business=business,
            batch=events_batch(labels, business, 10_000),
        ):
            if docs is None and oc.business is not None:
                stats.business += oc.consumed
            elif docs is None:
                stats.labels += oc.consumed
            else:
                stats.events += oc.consumed
            stats.late += oc.late_events
            stats.dead_letters.update(oc.dead_letters)
            stats.alerts += len(oc.alerts)
            by_topic: dict[str, list[bytes]] = defaultdict(list)
            for t, _k, v in oc.all_messages():
                by_topic[t].append(v)
            feats = [orjson.loads(v) for v in by_topic[o.features_topic]]
            writer.write_many(feats)
            stats.feature_vectors += len(feats)
            if pred_writer is not None:
                preds = [
                    _no_unknown_latency(orjson.loads(v)) for v in by_topic[o.predictions_topic]
                ]
                pred_writer.write_many(preds)
                stats.predictions += len(preds)
            if alert_writer is not None:
                alert_writer.write_many(oc.alerts)
            if dlq_writer is not None:
                dlq_writer.write_many(orjson.loads(v) for v in by_topic[o.dlq_topic])
            if metrics_writer is not None:
                metrics = [orjson.loads(v) for v in by_topic[o.model_metrics_topic]]
                metrics_writer.write_many(metrics)
                stats.model_metrics += len(metrics)
    return stats


def events_batch(labels: Any, business: Any, default: int) -> int:
    """Events per partition batch: a side feed's (labels, business) when there is one, so a
    replay and a report feed it at the same points; else ``default``."""
    for feed in (labels, business):
        if feed is not None:
            return int(feed.events_batch)
    return default


def _no_unknown_latency(prediction: dict[str, Any]) -> dict[str, Any]:
    """Drop ``latency_ms`` (broker append time to prediction) from a prediction whose record has
    no broker timestamp: the pipeline counts from 0 there, i.e. from 1970."""
    if prediction["source"].get("timestamp_ms") is None:
        prediction.pop("latency_ms", None)
    return prediction


def build_profile(
    spec: PipelineSpec, input_path: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """A reference profile of every input field, feature and the prediction score; and, when
    the events carry labels (``labels.label_field``: 0/1 or true/false) and the model is a
    classifier, the isotonic calibration of its scores (for ``[performance_estimation]``)."""
    o = spec.output
    columns: dict[str, list[Any]] = defaultdict(list)
    fields = [
        n for n, t in spec.input.fields.items() if t != "timestamp" and n != spec.input.key_field
    ]
    label_field = spec.labels.label_field if spec.labels else default_of("labels.label_field")
    scored: list[float] = []
    labelled: list[float] = []
    n = 0
    for docs, oc in replay_outcomes(spec, input_path, progress=progress):
        bad = _dead_offsets(oc)
        labels_at = {}
        for doc, offset in docs:
            if offset in bad:
                continue
            for name in fields:
                columns[name].append(doc.get(name))
            y = doc.get(label_field)
            if y is not None and type(y) in (bool, int, float) and y in (0, 1):
                labels_at[offset] = float(y)
        for t, _k, v in oc.all_messages():
            if t == o.features_topic:
                for name, x in orjson.loads(v)["features"].items():
                    columns[name].append(np.nan if x is None else x)
            elif t == o.predictions_topic:
                pred = orjson.loads(v)
                columns["prediction"].append(pred["score"])
                y = labels_at.get(pred["source"]["offset"])
                if y is not None and pred.get("label") is not None:  # a classifier's score
                    scored.append(pred["score"])
                    labelled.append(y)
        n += oc.consumed
    profiles = {}
    for name, values in columns.items():
        if spec.input.fields.get(name) == "string":
            arr = np.array([None if v is None else str(v) for v in values], dtype=object)
        else:
            arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        profiles[name] = Profile.from_values(arr).to_dict()
    doc = {"format": PROFILE_FORMAT, "pipeline": spec.name, "events": n, "columns": profiles}
    if scored:
        doc["calibration"] = (
            IsotonicCalibrator().fit(np.array(scored), np.array(labelled)).snapshot()
        )
    if spec.multivariate:
        doc["multivariate"] = {m.name: _pca_reference(m, columns) for m in spec.multivariate}
    return doc


def _pca_reference(m: MultivariateSpec, columns: Mapping[str, list[Any]]) -> dict[str, Any]:
    """The PCA reference of ``[[multivariate]]`` entry ``m``, fitted on every profiled row
    whose features are all present and finite."""
    missing = [f for f in m.features if f not in columns]
    if missing:
        raise DriftlineError(
            f"multivariate {m.name!r}: no values of {missing} in the input (batch features are "
            "not profiled); its reference comes from the first rows each worker sees instead"
        )
    rows = np.column_stack(
        [np.array([np.nan if v is None else float(v) for v in columns[f]]) for f in m.features]
    )
    rows = rows[np.isfinite(rows).all(axis=1)]
    try:
        return PCAReference.fit(rows, m.params["variance"]).to_dict()
    except DriftlineError as e:
        raise DriftlineError(f"multivariate {m.name!r}: {e}") from None


def _dead_offsets(oc: Any) -> set[int]:
    """Batch positions of records that were dead-lettered or late (their offsets)."""
    out = set()
    for _t, _k, v in oc.all_messages():
        if b'"reason"' in v[:200] or b'"dead_lettered_at_ms"' in v:
            doc = orjson.loads(v)
            if "reason" in doc and "source" in doc:
                out.add(doc["source"]["offset"])
    return out
