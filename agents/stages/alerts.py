"""Alert documents (``alert.schema.json``) and their deterministic ids."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from driftline.agents.stages.outcome import BatchOutcome
from driftline.spec import (
    ERROR_TARGET,
    PREDICTION_TARGET,
    DetectorSpec,
    MultivariateSpec,
    PipelineSpec,
    SkewCheckSpec,
    SliceSpec,
)
from driftline.streams.detectors.base import Detection
from driftline.streams.importance import ImportanceEvent
from driftline.streams.performance_estimation import ChunkEstimate
from driftline.streams.slices import SliceGapEvent

_KINDS = {PREDICTION_TARGET: "prediction", ERROR_TARGET: "concept", "label": "label"}


def alert_kind(target: str) -> str:
    """The ``kind`` of a drift detector's alerts, from its target."""
    return _KINDS.get(target, "covariate")


_ADAPTIVE = ("adwin", "page_hinkley", "ddm", "hddm_a", "hddm_w")
# reference: the values before the change point
_SEQUENTIAL = ("focus", "focus_scale", "np_focus", "focus_categorical")


def alert_id(
    pipeline: str, detector: str, partition: int, offset: int, status: str, topic: str = ""
) -> str:
    """Deterministic id: the same trigger record yields the same id after a replay or restart.

    ``topic`` is given for triggers on another topic than the input (the labels topic)."""
    where = f"{topic}/{partition}" if topic else str(partition)
    raw = f"{pipeline}|{detector}|{where}|{offset}|{status}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _trigger(topic: str, offset: int, event_time_ms: int, n_current: int) -> dict[str, Any]:
    """An alert's ``window`` without its start: the trigger record and the values judged."""
    return {"topic": topic, "event_time_ms": event_time_ms, "offset": offset,
            "n_current": int(n_current)}  # fmt: skip


def _window(
    topic: str, offset: int, event_time_ms: int, start: tuple[Any, Any] | None, n_current: int
) -> dict[str, Any]:
    """An alert's ``window`` with its start: the trigger record, ``start`` (event time, offset)
    the first record judged if known, and the values judged."""
    return {
        "topic": topic,
        "event_time_ms": event_time_ms,
        "offset": offset,
        "start_event_time_ms": None if start is None else start[0],
        "start_offset": None if start is None else start[1],
        "n_current": int(n_current),
    }


class AlertDocs:
    """Builds one partition's alert documents and puts them in a batch's outcome."""

    def __init__(self, spec: PipelineSpec, partition: int) -> None:
        self.spec = spec
        self.pipeline = spec.name
        self.partition = partition
        self.topic = spec.output.alerts_topic
        self._labels_topic = spec.labels.topic if spec.labels is not None else None
        #: with [business]: the partition's `agents.stages.business.BusinessStage`, which adds
        #: the business metric before vs during the episode to every alert
        self.business: Any = None

    def emit(self, out: BatchOutcome, key: str, doc: dict[str, Any]) -> None:
        """``doc`` joins the batch's alerts and its messages (on the alerts topic, by ``key``)."""
        if self.business is not None:
            self.business.annotate(doc)
        out.alerts.append(doc)
        out.messages.append((self.topic, key.encode(), orjson.dumps(doc)))

    def _id_topic(self, topic: str) -> str:
        """Part of an alert id: empty for input records (ids as before labels existed)."""
        return topic if topic == self._labels_topic else ""

    def reference_description(self, dspec: DetectorSpec, d: Detection) -> str:
        where = f"{dspec.target} on partition {self.partition}"
        if dspec.reference_profile is not None:
            return f"profile {dspec.reference_profile.name} of {dspec.target}"
        mode = dspec.params.get("reference_mode", "fixed")
        if dspec.type in _ADAPTIVE:
            return f"{dspec.type} adaptive history of {where}"
        if dspec.type in _SEQUENTIAL:
            return f"the {d.n_reference} values before the estimated change of {where}"
        if mode == "previous_window":
            ms = dspec.params.get("window_ms")
            return f"previous {ms} ms of event time (before the last {ms} ms) of {where}"
        if mode == "sliding":
            return f"the {d.n_reference} values before the current window of {where}"
        return f"first {d.n_reference} values of {where}"

    def _doc(
        self,
        *,
        name: str,
        kind: str,
        detector: str | None = None,
        detector_type: str,
        target: str,
        status: str,
        severity: str | None = None,
        statistic: float,
        p_value: float | None = None,
        threshold: float,
        window: dict[str, Any],
        reference: str,
        n_reference: int,
        now_ms: int,
        id_topic: str = "",
    ) -> dict[str, Any]:
        """The document every kind of alert shares (``name`` names it in the alert id, and is
        the ``detector`` unless one is given; ``window`` holds the trigger's topic, offset and
        event time, and n_current; ``severity`` is ``warning`` while firing, else ``info``,
        unless one is given)."""
        return {
            "alert_id": alert_id(
                self.pipeline, name, self.partition, window["offset"], status, id_topic
            ),
            "pipeline": self.pipeline,
            "kind": kind,
            "detector": name if detector is None else detector,
            "detector_type": detector_type,
            "target": target,
            "status": status,
            "severity": (
                severity if severity is not None else "warning" if status == "firing" else "info"
            ),
            "statistic": float(statistic),
            "p_value": None if p_value is None else float(p_value),
            "threshold": float(threshold),
            "window": {"partition": self.partition, **window},
            "reference": {"description": reference, "n": n_reference},
            "detected_at_ms": now_ms,
        }

    def detection(
        self,
        dspec: DetectorSpec,
        d: Detection,
        topic: str,
        offset: int,
        event_time_ms: int,
        now_ms: int,
        start: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """A detector's alert; the trigger record is ``topic``/partition@``offset``, and
        ``start`` (event time, offset) the first value of the detector's window if known."""
        if d.status == "resolved":
            severity = "info"
        elif d.p_value is not None and d.p_value < d.threshold * 1e-3:
            severity = "critical"
        else:
            severity = "warning"
        window = _window(topic, offset, event_time_ms, start, d.n_current)
        doc = self._doc(
            name=dspec.name,
            kind=alert_kind(dspec.target),
            detector_type=dspec.type,
            target=dspec.target,
            status=d.status,
            severity=severity,
            statistic=d.statistic,
            p_value=d.p_value,
            threshold=d.threshold,
            window=window,
            reference=self.reference_description(dspec, d),
            n_reference=int(d.n_reference),
            now_ms=now_ms,
            id_topic=self._id_topic(topic),
        )
        if getattr(d, "detail", ""):
            doc["detail"] = d.detail
        return doc

    def skew(
        self,
        c: SkewCheckSpec,
        d: Detection,
        topic: str,
        offset: int,
        event_time_ms: int,
        now_ms: int,
    ) -> dict[str, Any]:
        """A skew check's alert; the trigger is an input record, ``topic``/partition@``offset``."""
        window = _trigger(topic, offset, event_time_ms, d.n_current)
        return self._doc(
            name=c.name,
            kind="skew",
            detector_type="skew",
            target=f"{c.batch}~{c.streaming}",
            status=d.status,
            statistic=d.statistic,
            threshold=d.threshold,
            window=window,
            reference=f"batch feature {c.batch} vs streaming {c.streaming}: share of the last "
            f"{d.n_current} compared events that disagree",
            n_reference=0,
            now_ms=now_ms,
        )

    def multivariate(
        self,
        m: MultivariateSpec,
        d: Detection,
        topic: str,
        offset: int,
        event_time_ms: int,
        now_ms: int,
        start: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """A ``[[multivariate]]`` detector's alert (kind ``multivariate``); the trigger is the
        input record that completed the window, ``topic``/partition@``offset``, and ``start``
        (event time, offset) the window's first row if known."""
        window = _trigger(topic, offset, event_time_ms, d.n_current)
        window["start_event_time_ms"] = None if start is None else start[0]
        window["start_offset"] = None if start is None else start[1]
        features = ",".join(m.features)
        if m.reference_profile is not None:
            reference = f"PCA reference {m.name!r} of profile {m.reference_profile.name}"
        else:
            reference = f"first {d.n_reference} complete rows of {features} on partition " \
                f"{self.partition}"  # fmt: skip
        doc = self._doc(
            name=m.name,
            kind="multivariate",
            detector_type=m.method,
            target=features,
            status=d.status,
            statistic=d.statistic,
            threshold=d.threshold,
            window=window,
            reference=reference,
            n_reference=int(d.n_reference),
            now_ms=now_ms,
        )
        doc["detail"] = d.detail
        return doc

    def importance(
        self, e: ImportanceEvent, topic: str, offset: int, now_ms: int
    ) -> dict[str, Any]:
        """A feature-importance shift's alert."""
        imp = self.spec.labels.importance if self.spec.labels else None
        window = _trigger(topic, offset, int(e.time_ms or 0), e.n_examples)
        return self._doc(
            name=f"importance:{e.feature}",
            kind="importance",
            detector="importance",
            detector_type="importance",
            target=e.feature,
            status=e.status,
            statistic=e.current_share,
            threshold=imp.threshold if imp else 0.0,
            window=window,
            reference=f"{imp.method if imp else ''} importance share of {e.feature} at the "
            f"first evaluation: {e.reference_share:.4f}",
            n_reference=int(e.n_examples),
            now_ms=now_ms,
            id_topic=self._id_topic(topic),
        )

    def slice_gap(
        self,
        sl: SliceSpec,
        value: str,
        e: SliceGapEvent,
        topic: str,
        offset: int,
        event_time_ms: int,
        now_ms: int,
        estimated: bool = False,
    ) -> dict[str, Any]:
        """A slice alert: slice ``value`` of ``sl`` is worse than the global metric by more than
        the margin (``firing``), or back within half of it (``resolved``); the trigger is the
        record whose labels made the evaluation (``topic``/partition@``offset``). ``estimated``:
        both metrics are label-free estimates (CBPE) over their last chunks, and the trigger is
        the prediction that completed the value's chunk."""
        window = _trigger(topic, int(offset), int(event_time_ms), e.n_slice)
        ls = self.spec.labels
        wname = (f"last {ls.count_window} examples" if sl.window == "count"
                 else f"{ls.time_window_ms} ms event-time window") if ls else sl.window  # fmt: skip
        tag = ":estimated" if estimated else ""
        if estimated:
            wname = "last chunk of predictions (estimated, CBPE)"
        doc = self._doc(
            name=f"slice{tag}:{sl.name}={value}",
            kind="slice",
            detector=f"slice:{sl.name}{tag}",
            detector_type="slice",
            target=f"{sl.field}={value}",
            status=e.status,
            statistic=e.slice_value,
            threshold=sl.margin,
            window=window,
            reference=f"global {e.metric} over the {wname} of partition {self.partition}: "
            f"{e.global_value:.4f} (n={e.n_global})",
            n_reference=e.n_global,
            now_ms=now_ms,
            id_topic=self._id_topic(topic),
        )
        doc["slice"] = {
            "name": sl.name,
            "field": sl.field,
            "value": value,
            "metric": e.metric,
            "window": sl.window,
            "slice_value": e.slice_value,
            "global_value": e.global_value,
            "gap": e.gap,
            "margin": sl.margin,
            "n_slice": e.n_slice,
            "source": "estimated" if estimated else "realized",
            "n_global": e.n_global,
        }
        return doc

    def estimated_performance(
        self,
        metric: str,
        c: ChunkEstimate,
        status: str,
        threshold: float,
        reference: str,
        n_reference: int,
        topic: str,
        now_ms: int,
    ) -> dict[str, Any]:
        """A chunk's estimated ``metric`` crossed its threshold (down: ``firing``; back up:
        ``resolved``); the trigger is the chunk's last prediction's input record."""
        estimate, lower, upper = c.metrics[metric]
        start = (c.start_event_time_ms, c.first_offset)
        window = _window(topic, c.last_offset, c.end_event_time_ms, start, c.n)
        doc = self._doc(
            name=f"estimated_performance:{metric}",
            kind="estimated_performance",
            detector="estimated_performance",
            detector_type="cbpe",
            target=metric,
            status=status,
            statistic=estimate,
            threshold=threshold,
            window=window,
            reference=reference,
            n_reference=n_reference,
            now_ms=now_ms,
        )
        doc["detail"] = (
            f"estimated {metric} {estimate:.4f} (band {lower:.4f} to {upper:.4f}) over chunk "
            f"{c.index} of {c.n} predictions; threshold {threshold:g}"
        )
        return doc
