"""Slices stage: per slice value, the model metrics from joined labels (and the slice alert), and
the detectors the spec runs per value.

Codes come from `driftline.streams.slices.SliceIndex` per ``[[slices]]`` entry, computed once per
batch (:meth:`PartitionSlices.codes`); they travel with each prediction through the label join
(as extra feature columns) so that a label grades the slice its event was in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from driftline.agents.stages.alert_episodes import AlertEpisodes
from driftline.agents.stages.alerts import AlertDocs, alert_id
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome
from driftline.spec import (
    PREDICTION_TARGET,
    DetectorSpec,
    PipelineSpec,
    SliceSpec,
    build_spec_detector,
    level_param,
)
from driftline.streams.slices import (
    SliceEstimates,
    SliceGapEvent,
    SliceGapMonitor,
    SliceIndex,
    SliceMetrics,
)

#: The snapshot key of the partition's last chunk estimate (no slice name has a "#").
GLOBAL_ESTIMATE = "#global_estimate"


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


class PartitionSlices:
    """The slices of one partition: value codes, per-value metric windows and gap monitors.

    ``task`` is the model's (``classification`` / ``regression``), None without ``[labels]``
    (then only per-slice detectors run)."""

    def __init__(self, spec: PipelineSpec, task: str | None) -> None:
        self.spec = spec
        self.slices: list[SliceSpec] = list(spec.slices)
        self.index = {
            sl.name: SliceIndex(sl.values, sl.max_values, spec.input.fields[sl.field])
            for sl in self.slices
        }
        self.metrics: dict[str, SliceMetrics] = {}
        self.gaps: dict[str, SliceGapMonitor] = {}
        ls = spec.labels
        if task is not None and ls is not None:
            for sl in self.slices:
                self.metrics[sl.name] = SliceMetrics(task, ls.count_window, ls.time_window_ms,
                                                     ls.threshold)  # fmt: skip
                self.gaps[sl.name] = SliceGapMonitor(sl.metric_for(task), sl.margin,
                                                     sl.min_samples)  # fmt: skip
        # label-free estimates per value ([performance_estimation]): chunks of its chunk_size
        pe = spec.performance_estimation
        self.estimates = {} if pe is None else {
            sl.name: SliceEstimates(pe.chunk_size) for sl in self.slices
        }  # fmt: skip
        # ... and their slice alert: a value's estimate against the partition's last chunk's
        self.estimate_gaps = {} if pe is None else {
            sl.name: SliceGapMonitor(sl.metric_for("classification"), sl.margin, 1)
            for sl in self.slices
        }  # fmt: skip
        #: the partition's last chunk estimate (metric -> estimate, and n), set by the pipeline
        self.global_estimate: dict[str, float] | None = None
        # detectors run per slice value: (slice, its detector spec) -> code -> detector
        by_name = {d.name: d for d in spec.detectors}
        self.per_value: list[tuple[int, SliceSpec, DetectorSpec]] = [
            (j, sl, self._per_value_spec(by_name[name], sl))
            for j, sl in enumerate(self.slices)
            for name in sl.detectors
        ]
        self.instances: dict[tuple[str, str], dict[int, Any]] = {
            (sl.name, d.name): {} for _, sl, d in self.per_value
        }

    @staticmethod
    def _per_value_spec(d: DetectorSpec, sl: SliceSpec) -> DetectorSpec:
        """The spec of ``d``'s instances on ``sl``'s values: each value's own head is its
        reference (no profile: a segment differs from the population by nature), and a test's
        alpha is split over the values (Bonferroni), so the slice keeps the detector's
        false-alarm rate."""
        params = dict(d.params)
        lp = level_param(d.type)
        if lp is not None and lp in params:
            params[lp] = params[lp] / sl.n_values
        return replace(d, params=params, reference_profile=None)

    def __len__(self) -> int:
        return len(self.slices)

    def codes(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Slice codes of a batch's rows, shape ``(n, len(slices))`` (float64, as the join
        stores them)."""
        out = np.empty((n, len(self.slices)), dtype=np.float64)
        for j, sl in enumerate(self.slices):
            col = columns.get(sl.field)
            if col is None:
                col = np.full(n, None, dtype=object)
            out[:, j] = self.index[sl.name].codes(col)
        return out

    # -- detectors per slice value ----------------------------------------------------------------
    def detect(
        self,
        frame: Frame,
        out: BatchOutcome,
        now_ms: int,
        alerts: AlertDocs,
        episodes: AlertEpisodes,
        global_firing: dict[str, bool],
    ) -> None:
        """Run each slice's detectors on each value's rows of the batch (``frame.slice_codes``);
        their alerts are kind ``slice``, naming the detector, the value and whether the global
        detector (``global_firing``, by name) fires too."""
        codes = frame.slice_codes
        if not self.per_value or codes is None:
            return
        for j, sl, d in self.per_value:
            values = frame.scores if d.target == PREDICTION_TARGET else frame.vector.get(d.target)
            if values is None:
                continue
            col = codes[:, j].astype(np.int64)
            instances = self.instances[(sl.name, d.name)]
            for code in np.unique(col).tolist():
                rows = np.flatnonzero(col == code)
                det = instances.get(code)
                if det is None:
                    det = instances[code] = build_spec_detector(d)
                if getattr(det, "reference_mode", None) == "previous_window":
                    found = det.update_many(values[rows], ts_ms=frame.times[rows])
                else:
                    found = det.update_many(values[rows])
                value = self.index[sl.name].label(code)
                for x in found:
                    name = f"{d.name}@{sl.name}={value}"
                    if not episodes.changes(name, x.status):
                        continue
                    i = int(rows[x.index])
                    off = frame.records.offsets[i]
                    doc = alerts.detection(d, x, frame.records.topic, off, int(frame.times[i]),
                                           now_ms)  # fmt: skip
                    doc["alert_id"] = alert_id(alerts.pipeline, name, alerts.partition, off,
                                               x.status)  # fmt: skip
                    doc["kind"] = "slice"
                    doc["detector"] = f"{d.name}@{sl.name}"
                    doc["target"] = f"{sl.field}={value}"
                    doc["slice"] = {
                        "name": sl.name,
                        "field": sl.field,
                        "value": value,
                        "detector": d.name,
                        "detector_target": d.target,
                        "global_firing": bool(global_firing.get(d.name, False)),
                    }
                    alerts.emit(out, doc["target"], doc)

    # -- estimated performance per slice value ----------------------------------------------------
    def estimate(
        self,
        frame: Frame,
        estimator: Any,
        out: BatchOutcome | None = None,
        alerts: AlertDocs | None = None,
        episodes: AlertEpisodes | None = None,
        now_ms: int = 0,
    ) -> list[tuple[str, str, str, float]]:
        """Feed the frame's scores to each value's chunks (under ``estimator``'s calibration, a
        `streams.performance_estimation.PerformanceEstimator`); (slice, value, metric, estimate)
        of the chunks completed. With ``out``, ``alerts`` and ``episodes``, a completed chunk
        whose estimate is worse than the partition's last chunk estimate
        (`global_estimate`) by more than the slice's margin opens a slice alert (``source``
        estimated; resolved at half the margin)."""
        codes, scores = frame.slice_codes, frame.scores
        if not self.estimates or codes is None or scores is None:
            return []
        readings = []
        for j, sl in enumerate(self.slices):
            est = self.estimates[sl.name]
            col = codes[:, j].astype(np.int64)
            before = {c: est.pending(c) for c in np.unique(col).tolist()}
            done = est.update(col, scores, estimator.calibrator, estimator.threshold)
            for code in done:
                value = self.index[sl.name].label(code)
                readings += [(sl.name, value, k, float(v)) for k, v in est.latest[code].items()]
            if not done or out is None or alerts is None or episodes is None:
                continue
            if self.global_estimate is None:
                continue
            changes = self.estimate_gaps[sl.name].evaluate(
                self.global_estimate, {c: est.latest[c] for c in done}
            )
            for e in changes:
                value = self.index[sl.name].label(e.code)
                if not episodes.changes(f"slice-estimated:{sl.name}={value}", e.status):
                    continue
                # the prediction that completed the value's last chunk
                rows = np.flatnonzero((col == e.code) & np.isfinite(scores))
                b0, size = before[e.code], est.chunk_size
                i = int(rows[(b0 + rows.size) // size * size - b0 - 1])
                doc = alerts.slice_gap(sl, value, e, frame.records.topic,
                                       frame.records.offsets[i], int(frame.times[i]), now_ms,
                                       estimated=True)  # fmt: skip
                alerts.emit(out, f"{sl.field}={value}", doc)
        return readings

    # -- the label side ---------------------------------------------------------------------------
    def grade(
        self,
        codes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        label_time_ms: np.ndarray,
    ) -> None:
        """Add joined examples (``codes`` as stored with their predictions; NaN: 'other')."""
        for j, sl in enumerate(self.slices):
            m = self.metrics.get(sl.name)
            if m is None:
                continue
            ix = self.index[sl.name]
            c = codes[:, j]
            c = np.where(np.isfinite(c) & (c >= 0) & (c <= ix.other), c, ix.other).astype(np.int64)
            m.update(c, scores, labels, label_time_ms)

    def advance(self, now_ms: int) -> None:
        for m in self.metrics.values():
            m.advance(now_ms)

    def evaluate(
        self, global_results: dict[str, dict[str, float]]
    ) -> list[tuple[SliceSpec, SliceGapEvent]]:
        """Slice-gap episode changes; ``global_results`` maps "count" / "time" to the global
        window's metrics."""
        out = []
        for sl in self.slices:
            gap = self.gaps.get(sl.name)
            if gap is None:
                continue
            results = self.metrics[sl.name].results(sl.window)
            out += [(sl, e) for e in gap.evaluate(global_results[sl.window], results)]
        return out

    def readings(self) -> list[tuple[str, str, str, float]]:
        """(slice, value label, metric, value) of each slice value's compared window."""
        out = []
        for sl in self.slices:
            m = self.metrics.get(sl.name)
            if m is None:
                continue
            ix = self.index[sl.name]
            for code, r in m.results(sl.window).items():
                out += [(sl.name, ix.label(code), k, float(v)) for k, v in r.items()]
        return out

    def summary(self) -> dict[str, Any]:
        """The model-metrics message's ``slices``: per slice, each value's metrics (compared
        window) and the values whose slice alert is firing."""
        out: dict[str, Any] = {}
        for sl in self.slices:
            m = self.metrics.get(sl.name)
            if m is None:
                continue
            ix = self.index[sl.name]
            out[sl.name] = {
                "field": sl.field,
                "window": sl.window,
                "metric": self.gaps[sl.name].metric,
                "values": {
                    ix.label(code): {k: _finite(float(v)) for k, v in r.items()}
                    for code, r in m.results(sl.window).items()
                },
                "firing": [ix.label(c) for c in self.gaps[sl.name].firing],
            }
            est = self.estimates.get(sl.name)
            if est is not None and est.latest:
                out[sl.name]["estimated"] = {
                    ix.label(c): {k: _finite(v) for k, v in m.items()}
                    for c, m in sorted(est.latest.items())
                }
        return out

    def alert(
        self,
        alerts: AlertDocs,
        episodes: AlertEpisodes,
        out: BatchOutcome,
        changes: Sequence[tuple[SliceSpec, SliceGapEvent]],
        topic: str,
        offset: int,
        event_time_ms: int,
        now_ms: int,
    ) -> None:
        """Alerts (kind ``slice``) for the episode changes of one evaluation."""
        for sl, e in changes:
            value = self.index[sl.name].label(e.code)
            if not episodes.changes(f"slice:{sl.name}={value}", e.status):
                continue
            doc = alerts.slice_gap(sl, value, e, topic, offset, event_time_ms, now_ms)
            alerts.emit(out, f"{sl.field}={value}", doc)

    # -- state ------------------------------------------------------------------------------------
    @staticmethod
    def _definition(sl: SliceSpec) -> list[Any]:
        return [sl.field, None if sl.values is None else list(sl.values), sl.max_values]

    def _detector_key(self, sl: SliceSpec, d: DetectorSpec) -> str:
        return f"{d.name}|{d.type}|{d.target}|{sorted(d.params.items())}"

    def snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            sl.name: {
                "definition": self._definition(sl),
                "index": self.index[sl.name].snapshot(),
                "metrics": m.snapshot() if (m := self.metrics.get(sl.name)) else None,
                "gap": g.snapshot() if (g := self.gaps.get(sl.name)) else None,
                "estimates": e.snapshot() if (e := self.estimates.get(sl.name)) else None,
                "estimate_gap": eg.snapshot() if (eg := self.estimate_gaps.get(sl.name)) else None,
                "detectors": {
                    self._detector_key(sl, d): {
                        str(c): det.snapshot()
                        for c, det in sorted(self.instances[(sl.name, d.name)].items())
                    }
                    for _, s2, d in self.per_value
                    if s2.name == sl.name
                },
            }
            for sl in self.slices
        }
        state[GLOBAL_ESTIMATE] = self.global_estimate  # not a slice name: "#" is refused
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`snapshot`; a slice the state does not know, or knew with another
        field or values, starts empty."""
        self.global_estimate = state.get(GLOBAL_ESTIMATE)
        for sl in self.slices:
            saved = state.get(sl.name)
            if saved is None or saved.get("definition") != self._definition(sl):
                continue
            self.index[sl.name].restore(saved["index"])
            m, g = self.metrics.get(sl.name), self.gaps.get(sl.name)
            if m is not None and saved.get("metrics") is not None:
                m.restore(saved["metrics"])
            if g is not None and saved.get("gap") is not None:
                g.restore(saved["gap"])
            e = self.estimates.get(sl.name)
            if e is not None and saved.get("estimates") is not None:
                e.restore(saved["estimates"])
            eg = self.estimate_gaps.get(sl.name)
            if eg is not None and saved.get("estimate_gap") is not None:
                eg.restore(saved["estimate_gap"])
            dets = saved.get("detectors") or {}
            for _, s2, d in self.per_value:
                snaps = dets.get(self._detector_key(sl, d)) if s2.name == sl.name else None
                if snaps is None:
                    continue  # a new or changed detector starts afresh
                instances = {}
                for c, snap in snaps.items():
                    det = build_spec_detector(d)
                    det.restore(snap)
                    instances[int(c)] = det
                self.instances[(sl.name, d.name)] = instances
