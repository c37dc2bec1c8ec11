"""One input partition's batch step: decode, features, predict, detect, encode.

No Kafka here: the runner hands in raw records and produces what comes out, so the same step
runs under the worker, in tests and in offline replay. Each stage is a module of
:mod:`driftline.agents.stages` (its docstring lists them); :class:`PartitionPipeline` holds one
partition's state and composes the stages.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from driftline.agents.decode import JSON_FORMAT, RecordDecoder
from driftline.agents.formats import SchemaReaders, registry_format
from driftline.agents.labels import PartitionLabels
from driftline.agents.stages.alert_episodes import AlertEpisodes
from driftline.agents.stages.alerts import AlertDocs, alert_id
from driftline.agents.stages.batch_join import join_batch_features
from driftline.agents.stages.bh_correction import BHCorrection
from driftline.agents.stages.bounds import EventBounds
from driftline.agents.stages.business import BusinessStage
from driftline.agents.stages.dead_letters import DeadLetters
from driftline.agents.stages.decode import decode_batch
from driftline.agents.stages.detect import InputDetection
from driftline.agents.stages.encode import OutputEncoder
from driftline.agents.stages.estimate import EstimateStage
from driftline.agents.stages.labels import LabelStage
from driftline.agents.stages.lateness import LateEvents
from driftline.agents.stages.multivariate import MultivariateDetection
from driftline.agents.stages.outcome import BatchOutcome, Outbound, StageTimer
from driftline.agents.stages.predict import predict
from driftline.agents.stages.records import RawRecord, RecordColumns
from driftline.agents.stages.skew import SkewChecks
from driftline.agents.stages.slices import PartitionSlices
from driftline.errors import DriftlineError
from driftline.spec import DetectorSpec, PipelineSpec, build_spec_detector, to_feature_def
from driftline.streams.feature_state import KeyedChanges
from driftline.streams.features import FeatureEngine
from driftline.streams.model import BatchPredictor

#: Clock differences between the machine that wrote a snapshot and the one restoring it that a
#: restored watermark may show beyond ``input.max_future_ms``.
CLOCK_SLACK_MS = 3_600_000


def check_watermark(watermark_ms: int | None, now_ms: float, max_future_ms: int) -> None:
    """Raise `DriftlineError` if a restored ``watermark_ms`` is further ahead of ``now_ms``
    than events may be (``max_future_ms``, ``input.max_future_ms``) plus `CLOCK_SLACK_MS`:
    every later event would be late.

    Examples
    --------
    >>> check_watermark(None, 0.0, 3_600_000)
    >>> check_watermark(1_700_007_000_000, 1.7e12, 3_600_000)  # 1 h 57 min ahead: clock slack
    >>> check_watermark(2**62, 1.7e12, 3_600_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.DriftlineError: state: the saved watermark 4611686018427387904 is ... ahead \
of this machine's clock ...
    """
    if watermark_ms is not None and watermark_ms > now_ms + max_future_ms + CLOCK_SLACK_MS:
        ahead_h = (watermark_ms - now_ms) / 3_600_000
        raise DriftlineError(
            f"state: the saved watermark {watermark_ms} is {ahead_h:.4g} hours ahead of this "
            f"machine's clock (events may be {max_future_ms} ms ahead, input.max_future_ms, plus "
            f"{CLOCK_SLACK_MS} ms of clock slack): every later event would be late. The snapshot "
            "was forged, or written before driftline bounded event times"
        )


# the batch step's types, importable from here as before the stages had modules of their own
__all__ = [
    "BatchOutcome",
    "Outbound",
    "PartitionPipeline",
    "RawRecord",
    "RecordColumns",
    "alert_id",
]

log = logging.getLogger("driftline.pipeline")


class PartitionPipeline:
    """State (features, detectors, labels) and the batch step for one input partition."""

    def __init__(
        self,
        spec: PipelineSpec,
        partition: int,
        predictor: BatchPredictor | None,
        model_version: str,
        batch_cache: Any = None,
        schema_readers: SchemaReaders | None = None,
    ) -> None:
        """``schema_readers``: the worker's schema-id cache, shared by its partitions (one is
        made for ``[schema_registry]`` if not given)."""
        self.spec = spec
        self.batch_cache = batch_cache  # agents.batch_features.BatchFeatureCache, shared
        self.partition = partition
        self._predictor = predictor
        self.model_version = model_version
        inp = spec.input
        self._feature_defs = [to_feature_def(f) for f in spec.features]
        self.engine = FeatureEngine(
            self._feature_defs, grace_ms=spec.grace_ms, max_entities=spec.max_entities
        )
        self.detectors = [(d, build_spec_detector(d)) for d in spec.detectors]
        # the stages, in the order `process` runs them
        self.dead_letters = DeadLetters(spec.name, spec.output.dlq_topic)
        self.late_events = LateEvents(spec.output.late_topic, spec.grace_ms, self.dead_letters)
        self.alert_docs = AlertDocs(spec, partition)
        self.episodes = AlertEpisodes()
        self.skew = SkewChecks(spec, self.alert_docs)
        self.bh_correction = BHCorrection(spec.correction, self.detectors)
        self.detection = InputDetection(self.detectors, self.episodes, self.alert_docs)
        self.multivariate = MultivariateDetection(spec, self.episodes, self.alert_docs)
        self.encoder = OutputEncoder(spec, partition)
        self.slices: PartitionSlices | None = None
        if spec.slices:
            task = None
            if spec.labels is not None and predictor is not None:
                task = "classification" if predictor.is_classifier else "regression"
            self.slices = PartitionSlices(spec, task)
        self.business: BusinessStage | None = None
        if spec.business is not None:
            self.business = self.alert_docs.business = BusinessStage(spec, self.dead_letters)
        self.label_stage: LabelStage | None = None
        if spec.labels is not None and predictor is not None:
            self.label_stage = LabelStage(spec, partition, predictor, model_version,
                                          self.detectors, self.episodes, self.alert_docs,
                                          self.dead_letters, self.slices)  # fmt: skip
        self.estimate_stage: EstimateStage | None = None
        if spec.performance_estimation is not None and predictor is not None:
            self.estimate_stage = EstimateStage(spec, partition, self.alert_docs, self.episodes)
            if self.label_stage is not None:
                self.label_stage.on_joined = self.estimate_stage.reference_labels
        # non-numeric fields the features (distinct, filters) or detectors (categories) read
        wanted = set(self.engine.required_fields) | {d.target for d in spec.detectors}
        wanted |= set(spec.model.categorical_fields if spec.model else ())  # one-hot inputs
        wanted |= {sl.field for sl in spec.slices}
        if spec.labels is not None and spec.input.event_id_field is not None:
            wanted.add(spec.input.event_id_field)
        extra = tuple(
            n
            for n, t in inp.fields.items()
            if n in wanted and t not in ("float", "int", "bool") and n != inp.time_field
        )
        payload = JSON_FORMAT
        if inp.format != "json":
            if schema_readers is None:
                from driftline.agents.registry import registry_client

                assert spec.schema_registry is not None  # parse_spec requires it
                schema_readers = SchemaReaders(registry_client(spec.schema_registry), inp.format)
            payload = registry_format(schema_readers)
        self.schema_readers = schema_readers
        self.decoder = RecordDecoder(
            inp.fields, inp.key_field, inp.time_field, inp.max_message_bytes, extra=extra,
            payload=payload,
        )  # fmt: skip
        self.bounds = EventBounds(
            inp.max_key_bytes, inp.max_future_ms, inp.key_field, inp.time_field
        )

    @property
    def predictor(self) -> BatchPredictor | None:
        """The model: with ``[labels] learn``, this partition's own copy."""
        return self.label_stage.predictor if self.label_stage is not None else self._predictor

    @property
    def labels(self) -> PartitionLabels | None:
        """The label state (``agents.labels.PartitionLabels``), None without ``[labels]``."""
        return self.label_stage.labels if self.label_stage is not None else None

    @property
    def model_version_now(self) -> str:
        """The version written on predictions: with online learning, the examples learnt."""
        if self.label_stage is not None:
            return self.label_stage.model_version
        return self.model_version

    # -- the batch step -----------------------------------------------------------------------
    def process(self, records: Sequence[RawRecord] | RecordColumns) -> BatchOutcome:
        """One batch of the input topic's partition."""
        cols = (
            records if isinstance(records, RecordColumns) else RecordColumns.from_records(records)
        )
        out = BatchOutcome(consumed=len(cols))
        if not len(cols):
            return out
        out.last_offset = cols.offsets[-1]
        now_ms = int(time.time() * 1000)
        timer = StageTimer(out)

        frame = decode_batch(self.decoder, cols, self.dead_letters, out, now_ms, self.bounds)
        timer.lap("decode")
        if frame is None:
            return out

        fb = self.engine.update(frame.entities, frame.times, frame.columns)
        frame.features = {k: np.asarray(v) for k, v in fb.values.items()}
        frame = self.late_events.split(frame, fb.late, self.engine.watermark_ms, out, now_ms)
        frame.vector = {**frame.columns, **frame.features}
        if self.spec.model is not None:
            frame.vector.update(self.spec.model.encode(frame.columns))  # one-hot model inputs
        if self.batch_cache is not None and len(frame):
            join_batch_features(self.batch_cache, frame, out, now_ms)
            self.skew.check(frame, out, now_ms)
        timer.lap("features")
        if not len(frame):
            return out

        frame.scores = predict(self.predictor, frame.vector)
        timer.lap("predict")
        if self.slices is not None:
            frame.slice_codes = self.slices.codes(frame.columns, len(frame))

        self.bh_correction.apply()
        self.detection.detect(frame, out, now_ms)
        if self.slices is not None:
            firing = {d.name: bool(det.in_drift) for d, det in self.detectors}
            self.slices.detect(frame, out, now_ms, self.alert_docs, self.episodes, firing)
        self.multivariate.detect(frame, out, now_ms)
        timer.lap("detect")

        self.encoder.encode(out, frame, self.predictor, self.model_version_now)
        timer.lap("encode")
        stamps = frame.records.stamps
        out.ingest_ms = np.array(
            [now_ms if t is None else t for t in stamps] if None in stamps else stamps,
            dtype=np.int64,
        )
        if frame.scores is not None:
            out.prediction_event_ms = frame.times
            if self.label_stage is not None:
                self.label_stage.await_labels(frame, out, self.engine.watermark_ms, now_ms)
                timer.lap("labels")
            if self.estimate_stage is not None:
                if self.slices is not None:  # first: the chunk messages carry them
                    out.slice_estimates = self.slices.estimate(
                        frame, self.estimate_stage.estimator, out, self.alert_docs,
                        self.episodes, now_ms,
                    )  # fmt: skip
                ls = self.label_stage
                self.estimate_stage.predictions(
                    frame, out, self.model_version_now, now_ms,
                    None if ls is None else ls.metrics_fields(),
                )  # fmt: skip
                if self.slices is not None and out.estimates:
                    last = out.estimates[-1]  # the next value chunks compare with it
                    self.slices.global_estimate = {
                        "n": float(last.n), **{k: v[0] for k, v in last.metrics.items()}
                    }
                timer.lap("estimate")
        return out

    def _side_batch(
        self, cols: RecordColumns, stage: str, run: Callable[[BatchOutcome, int], None] | None
    ) -> BatchOutcome:
        """A batch of a side topic (labels, business): ``run(out, now_ms)``, timed as ``stage``."""
        out = BatchOutcome(consumed=len(cols))
        if not len(cols) or run is None:
            return out
        out.last_offset = cols.offsets[-1]
        timer = StageTimer(out)
        run(out, int(time.time() * 1000))
        timer.lap(stage)
        return out

    def process_labels(self, cols: RecordColumns) -> BatchOutcome:
        """One batch of the labels topic's partition: decode, forward, join, grade."""
        ls = self.label_stage
        run = None if ls is None else (
            lambda out, now: ls.process(cols, out, self.engine.watermark_ms, now))  # fmt: skip
        return self._side_batch(cols, "labels", run)

    def process_business(self, cols: RecordColumns) -> BatchOutcome:
        """One batch of the ``[business]`` topic's partition."""
        b = self.business
        return self._side_batch(
            cols, "business", None if b is None else (lambda out, now: b.process(cols, out, now))
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
        return self._snapshot(self.engine.snapshot())

    def snapshot_keyed(self) -> tuple[dict[str, Any], list[KeyedChanges]]:
        """`snapshot` with the feature windows kept per key: the snapshot without their rows,
        and the keys changed since the last call (the engine tracks them once the worker has
        called ``engine.track_changes()``). `restore` takes the snapshot back with each window
        state's rows under ``"rows"``."""
        changes = self.engine.drain_changes()
        return self._snapshot(self.engine.snapshot_keyed()), changes

    def _snapshot(self, features: dict[str, Any]) -> dict[str, Any]:
        return {
            "fingerprint": self._fingerprint(),
            "features": features,
            "detectors": {self._detector_key(d): det.snapshot() for d, det in self.detectors},
            "skew": self.skew.snapshot(),
            "multivariate": self.multivariate.snapshot(),
            "positions": self.detection.snapshot_positions(),
            "alerting": self.episodes.snapshot(),
            "labels": None if self.label_stage is None else self.label_stage.snapshot(),
            "slices": None if self.slices is None else self.slices.snapshot(),
            "business": None if self.business is None else self.business.snapshot(),
            "estimate": None if self.estimate_stage is None else self.estimate_stage.snapshot(),
        }

    def drain_log(self) -> list[tuple[bytes, bytes | None]]:
        """Changelog records of the label-join log since the last call (before `snapshot`):
        the new delta or checkpoint, and tombstones for entries a checkpoint made obsolete."""
        return [] if self.label_stage is None else self.label_stage.drain_log()

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
        engine = FeatureEngine.restore(
            self._feature_defs, self.spec.grace_ms, state["features"], self.spec.max_entities
        )
        check_watermark(engine.watermark_ms, time.time() * 1000, self.spec.input.max_future_ms)
        self.engine = engine
        self.skew.restore(state.get("skew", {}))
        self.multivariate.restore(state.get("multivariate", {}))
        labels = state.get("labels")
        if self.label_stage is not None and labels is not None:
            self.label_stage.restore(labels, records or {})
        if self.slices is not None and state.get("slices") is not None:
            self.slices.restore(state["slices"])
        if self.business is not None and state.get("business") is not None:
            self.business.restore(state["business"])
        estimate = state.get("estimate")
        if self.estimate_stage is not None and estimate is not None:
            self.estimate_stage.restore(estimate)
        self.episodes.restore(state.get("alerting", {}))
        self.detection.restore_positions(state.get("positions", {}))
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
