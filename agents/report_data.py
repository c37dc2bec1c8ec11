"""What ``driftline report`` shows, collected from a replay: the report's JSON twin.

:class:`ReportCollector` reads each batch outcome of a replay (a history file or a topic range
run through the spec's own pipeline, :mod:`driftline.agents.replay`) and keeps, bounded:

- every alert, paired into **episodes** per detector and partition (``firing`` opens one, the
  next ``resolved`` closes it; one still open at the end is ``open``): where the detector
  would have fired, as partition, offset and event time;
- each detector's **statistic over time** (one reading per batch and partition, thinned to
  `MAX_POINTS` per line keeping each stretch's largest value);
- **reference vs current** values of every input-side detector's target: the first values of
  the stream (or the detector's reference profile) against the last ones, as shared-bin
  histograms and quantiles (category shares for categorical targets);
- every **model-metrics** document the replay wrote (realized metrics from joined labels,
  estimated performance, slices: whatever numbers they hold), as lines over event time.

:meth:`ReportCollector.report` is the JSON document of ``schemas/report.schema.json``;
:mod:`driftline.agents.report_render` draws the HTML page from it alone.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.agents.stages.alerts import alert_kind
from driftline.agents.status_collect import distribution
from driftline.spec import LABEL_TARGETS, DetectorSpec, PipelineSpec
from driftline.streams.profile import Profile

REPORT_FORMAT = "driftline-report/1"
#: Points kept per line of a chart (statistic or metric over time).
MAX_POINTS = 400
#: Values kept per target for the reference and the current distributions, when the detectors
#: on it name no reference_size / window_size (and at most).
DEFAULT_SAMPLE, MAX_SAMPLE = 1_000, 20_000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Categories shown per categorical target (the rest are summed into "other").
TOP_CATEGORIES = 12
#: Model-metrics lines kept (one per document path and partition).
MAX_METRIC_LINES = 200
#: Detector types that adapt their reference as they go (no fixed reference sample).
ADAPTIVE = frozenset({"adwin", "page_hinkley", "ddm", "hddm_a", "hddm_w"})
#: Top-level keys of a model-metrics document that are not metrics.
_NOT_METRICS = frozenset({"pipeline", "partition", "model_version", "task", "computed_at_ms",
                          "label_time_ms"})  # fmt: skip


def _finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def thin(points: list[list[Any]], value_at: int = 2, limit: int = MAX_POINTS) -> list[list[Any]]:
    """At most ``limit`` of ``points`` (in order): the largest ``point[value_at]`` of each of
    ``limit`` equal stretches, so peaks survive.

    >>> thin([[i, 0, float(i % 7)] for i in range(20)], limit=5)
    [[3, 0, 3.0], [6, 0, 6.0], [11, 0, 4.0], [13, 0, 6.0], [19, 0, 5.0]]
    """
    if len(points) <= limit:
        return points
    out = []
    bounds = np.linspace(0, len(points), limit + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        chunk = points[a:b]
        out.append(max(chunk, key=lambda p: -math.inf if p[value_at] is None else p[value_at]))
    return out


def flatten_numbers(doc: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """Every number (or null) in nested mappings, by its ``a/b/c`` path.

    >>> flatten_numbers({"windows": {"last_50": {"n": 50, "auc": None}}, "task": "x"})
    {'windows/last_50/n': 50.0, 'windows/last_50/auc': None}
    """
    out: dict[str, float | None] = {}
    for k, v in doc.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_numbers(v, path + "/"))
        elif v is None or (isinstance(v, int | float) and not isinstance(v, bool)):
            out[path] = _finite(v)
    return out


def _sample_size(specs: Iterable[DetectorSpec], key: str) -> int:
    sizes = [int(d.params.get(key) or 0) for d in specs]
    return min(max([*sizes, 0]) or DEFAULT_SAMPLE, MAX_SAMPLE)


class _Values:
    """The first ``n_head`` and the last ``n_tail`` values of one target, in stream order."""

    def __init__(self, n_head: int, n_tail: int) -> None:
        self.n_head = n_head
        self.head: list[np.ndarray] = []
        self.head_n = 0
        self.tail: deque[np.ndarray] = deque()
        self.tail_n = 0
        self.n_tail = n_tail
        self.categorical = False

    def add(self, values: np.ndarray) -> None:
        if values.dtype == object:
            self.categorical = True
        if self.head_n < self.n_head:
            take = values[: self.n_head - self.head_n]
            self.head.append(take)
            self.head_n += len(take)
        self.tail.append(values[-self.n_tail :])
        self.tail_n += len(self.tail[-1])
        while self.tail_n - len(self.tail[0]) >= self.n_tail:
            self.tail_n -= len(self.tail.popleft())

    def first(self, n: int) -> np.ndarray:
        return _cat(self.head)[:n]

    def last(self, n: int) -> np.ndarray:
        return _cat(list(self.tail))[-n:]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.empty(0)
    return np.concatenate([np.asarray(p) for p in parts])


def numeric_summary(values: np.ndarray) -> dict[str, Any]:
    """Count, mean, std and `QUANTILES` of the finite values.

    >>> numeric_summary(np.array([1.0, 2.0, 3.0, np.nan]))["quantiles"]["p50"]
    2.0
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "quantiles": {}}
    qs = np.quantile(v, QUANTILES)
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "quantiles": {_qname(q): float(x) for q, x in zip(QUANTILES, qs, strict=True)},
    }


def _qname(q: float) -> str:
    return f"p{round(q * 100):02d}"


def categorical_shares(reference: Counter[str], current: Counter[str]) -> list[dict[str, Any]]:
    """Share of each category in both samples: the `TOP_CATEGORIES` most frequent in either,
    then ``other`` (the rest, if any).

    >>> categorical_shares(Counter({"a": 3, "b": 1}), Counter({"b": 2}))
    [{'name': 'a', 'reference': 0.75, 'current': 0.0}, {'name': 'b', 'reference': 0.25, \
'current': 1.0}]
    """
    nr, nc = max(sum(reference.values()), 1), max(sum(current.values()), 1)
    both = Counter({k: v / nr for k, v in reference.items()})
    for k, v in current.items():
        both[k] += v / nc
    top = sorted(both, key=lambda k: (-both[k], k))[:TOP_CATEGORIES]
    out = [
        {"name": k, "reference": reference.get(k, 0) / nr, "current": current.get(k, 0) / nc}
        for k in sorted(top)
    ]
    rest_r = 1.0 - sum(c["reference"] for c in out) if reference else 0.0
    rest_c = 1.0 - sum(c["current"] for c in out) if current else 0.0
    if rest_r > 1e-12 or rest_c > 1e-12:
        out.append({"name": "other", "reference": max(rest_r, 0.0), "current": max(rest_c, 0.0)})
    return out


def _counts(values: np.ndarray) -> Counter[str]:
    return Counter(str(v) for v in values.tolist() if v is not None and v == v)


class ReportCollector:
    """Reads a replay's batch outcomes (:meth:`add`); :meth:`report` is the JSON twin."""

    def __init__(self, spec: PipelineSpec, source: dict[str, Any]) -> None:
        self.spec = spec
        self.source = source
        self.started_ms = int(time.time() * 1000)
        self.counts: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.alerts: list[dict[str, Any]] = []
        self.partitions: set[int] = set()
        self.first_time_ms: int | None = None
        self.last_time_ms: int | None = None
        #: (detector, partition) -> [event time, offset, statistic, p-value] per batch
        self.readings: dict[tuple[str, int], list[list[Any]]] = defaultdict(list)
        by_target: dict[str, list[DetectorSpec]] = defaultdict(list)
        for d in spec.detectors:
            if d.target not in LABEL_TARGETS:
                by_target[d.target].append(d)
        #: per target: the first and last values of each partition (target -> partition ->)
        self.sizes = {
            t: (_sample_size(ds, "reference_size"), _sample_size(ds, "window_size"))
            for t, ds in by_target.items()
        }
        self.values: dict[str, dict[int, _Values]] = {t: {} for t in self.sizes}
        #: (multivariate detector, partition) -> its latest upper limit of the statistic
        self.limits: dict[tuple[str, int], float | None] = {}
        #: (document path, partition) -> [event time, value] per model-metrics document
        self.metrics: dict[tuple[str, int], list[list[Any]]] = {}
        self.metric_docs = 0
        #: partition -> [business clock, rolling value, events in window] per business batch
        self.business: dict[int, list[list[Any]]] = defaultdict(list)

    # -- reading outcomes ---------------------------------------------------------------------
    def add(self, oc: Any, side: bool = False) -> None:
        """One batch outcome of the replay (``replay.partition_outcomes``): of events, or of a
        ``side`` topic (labels; business records when ``oc.business`` is set)."""
        o = self.spec.output
        kind = "events" if not side else "business" if oc.business is not None else "labels"
        self.counts[kind] += oc.consumed
        if kind == "business" and oc.detector_inputs is not None:
            self._business_reading(oc)
        self.counts["late"] += oc.late_events
        self.counts["feature_vectors"] += oc.feature_vectors
        self.counts["predictions"] += oc.predictions
        self.dead_letters.update(oc.dead_letters)
        self.alerts.extend(oc.alerts)
        inputs = oc.detector_inputs
        t_ms = off = None
        if inputs is not None and len(inputs.times):
            self.partitions.add(inputs.partition)
            t_ms, off = int(inputs.times[-1]), int(inputs.offsets[-1])
            lo, hi = int(inputs.times.min()), int(inputs.times.max())
            self.first_time_ms = lo if self.first_time_ms is None else min(self.first_time_ms, lo)
            self.last_time_ms = hi if self.last_time_ms is None else max(self.last_time_ms, hi)
            for target, vals in inputs.values.items():
                parts = self.values.get(target)
                if parts is not None:
                    if inputs.partition not in parts:
                        parts[inputs.partition] = _Values(*self.sizes[target])
                    parts[inputs.partition].add(np.asarray(vals))
            for name, _target, stat, p in oc.detector_readings:
                self.readings[(name, inputs.partition)].append(
                    [t_ms, off, _finite(stat), _finite(p)]
                )
            for name, _lo, hi in getattr(oc, "multivariate_limits", ()):
                self.limits[(name, inputs.partition)] = _finite(hi)
        for topic, _key, value in oc.messages:
            if topic == o.model_metrics_topic:
                self._metrics_doc(orjson.loads(value), t_ms)

    def _business_reading(self, oc: Any) -> None:
        """The rolling business value after a batch of business records, at its clock."""
        _name, value, n = oc.business
        if oc.business_clock_ms is None:
            return
        p = oc.detector_inputs.partition
        self.business[p].append([int(oc.business_clock_ms), _finite(value), int(n)])

    def _metrics_doc(self, doc: dict[str, Any], batch_time_ms: int | None) -> None:
        self.metric_docs += 1
        t = doc.get("label_time_ms") if batch_time_ms is None else batch_time_ms
        if t is None:
            return
        p = int(doc.get("partition", 0))
        body = {k: v for k, v in doc.items() if k not in _NOT_METRICS}
        for path, v in flatten_numbers(body).items():
            if not is_metric(path) or path.startswith("business/"):  # see `business_report`
                continue
            key = (path, p)
            line = self.metrics.get(key)
            if line is None:
                if len(self.metrics) >= MAX_METRIC_LINES:
                    continue
                line = self.metrics[key] = []
            line.append([int(t), v])

    # -- the report -----------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The JSON twin (``schemas/report.schema.json``)."""
        episodes = episodes_of(self.alerts)
        detectors = [self._detector(d, episodes.pop(d.name, [])) for d in self.spec.detectors]
        detectors += [
            self._multivariate(m, episodes.pop(m.name, []))
            for m in getattr(self.spec, "multivariate", ())
        ]
        by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in self.alerts:
            by_name[a["detector"]].append(a)
        for name, eps in sorted(episodes.items()):  # skew checks, importance, slices...
            a = by_name[name][0]
            detectors.append(
                {
                    "name": name,
                    "type": a["detector_type"],
                    "target": a["target"],
                    "kind": a["kind"],
                    "reference": "",
                    "threshold": _finite(a.get("threshold")),
                    "statistic_limit": None,
                    "episodes": eps,
                    "series": [],
                    "distribution": None,
                }
            )
        return {
            "format": REPORT_FORMAT,
            "pipeline": self.spec.name,
            "generated_at_ms": int(time.time() * 1000),
            "source": self.source,
            "summary": {
                "events": self.counts["events"],
                "feature_vectors": self.counts["feature_vectors"],
                "predictions": self.counts["predictions"],
                "late": self.counts["late"],
                "labels": self.counts["labels"],
                "business": self.counts["business"],
                "dead_letters": dict(sorted(self.dead_letters.items())),
                "alerts": len(self.alerts),
                "episodes": sum(len(d["episodes"]) for d in detectors),
                "partitions": sorted(self.partitions),
                "first_event_time_ms": self.first_time_ms,
                "last_event_time_ms": self.last_time_ms,
            },
            "detectors": detectors,
            "model_metrics": self._model_metrics(),
            "business": self.business_report(),
        }

    def business_report(self) -> dict[str, Any] | None:
        """The ``[business]`` metric (None without one): its rolling value over business
        time per partition (one point per business batch, thinned to `MAX_POINTS`). It
        replaces the ``business`` numbers of the model-metrics documents: the same value,
        but only where labels or estimates wrote a document."""
        b = self.spec.business
        if b is None:
            return None
        return {
            "name": b.name,
            "field": b.field,
            "agg": b.agg,
            "window_ms": b.window_ms,
            "records": self.counts["business"],
            "series": [
                {"partition": p, "points": thin(pts, value_at=1)}
                for p, pts in sorted(self.business.items())
            ],
        }

    def _series(self, name: str) -> list[dict[str, Any]]:
        return [
            {"partition": p, "points": thin(pts)}
            for (n, p), pts in sorted(self.readings.items())
            if n == name
        ]

    def _detector(self, d: DetectorSpec, episodes: list[dict[str, Any]]) -> dict[str, Any]:
        threshold = next((e["fired"]["threshold"] for e in episodes), None)
        return {
            "name": d.name,
            "type": d.type,
            "target": d.target,
            "kind": alert_kind(d.target),
            "reference": self._reference_text(d),
            "threshold": threshold,
            "statistic_limit": None,
            "episodes": episodes,
            "series": self._series(d.name),
            "distribution": self._distribution(d),
        }

    def _multivariate(self, m: Any, episodes: list[dict[str, Any]]) -> dict[str, Any]:
        """A ``[[multivariate]]`` detector: its statistic (the window's mean reconstruction
        error) against its upper limit (the highest of the partitions' latest)."""
        limits = [v for (n, _p), v in self.limits.items() if n == m.name and v is not None]
        if m.reference_profile is not None:
            reference = f"PCA reference of profile {Path(m.reference_profile).name}"
        else:
            reference = "PCA reference of the first complete rows of each partition"
        return {
            "name": m.name,
            "type": m.method,
            "target": ",".join(m.features),
            "kind": "multivariate",
            "reference": reference,
            "threshold": next((e["fired"]["threshold"] for e in episodes), None),
            "statistic_limit": max(limits) if limits else None,
            "episodes": episodes,
            "series": self._series(m.name),
            "distribution": None,
        }

    def _reference_text(self, d: DetectorSpec) -> str:
        """What the detector compares with; the distributions' reference follows it where it
        is a fixed sample (the first values, or a profile)."""
        n = _sample_size([d], "reference_size")
        if d.reference_profile is not None:
            return f"reference profile {Path(d.reference_profile).name}"
        if d.type in ADAPTIVE:
            return f"{d.type}'s adaptive history (distributions: the first {n} values vs the last)"
        mode = d.params.get("reference_mode", "fixed")
        if mode == "previous_window":
            return (
                f"the previous {d.params.get('window_ms')} ms event-time window (distributions: "
                f"the first {n} values vs the last)"
            )
        if mode == "sliding":
            return f"the values before the current window (distributions: the first {n} values)"
        return f"the first {n} values of {d.target} on each partition"

    def _distribution(self, d: DetectorSpec) -> dict[str, Any] | None:
        """Reference vs current values of the detector's target: each partition's first
        ``reference_size`` and last ``window_size`` values (as each partition's detector
        sees them: independent of how the partitions' batches interleave), or its profile."""
        parts = [v for _, v in sorted(self.values.get(d.target, {}).items()) if v.head_n]
        if not parts:
            return None
        n_ref = _sample_size([d], "reference_size")
        n_cur = _sample_size([d], "window_size")
        current = _cat([v.last(n_cur) for v in parts])
        first = _cat([v.first(n_ref) for v in parts])
        profile = None
        if d.reference_profile is not None:
            profile = Profile.from_dict(orjson.loads(Path(d.reference_profile).read_bytes()))
        categorical = any(v.categorical for v in parts)
        if categorical or (profile is not None and profile.kind == "categorical"):
            ref_counts = (
                Counter(profile.categories) + Counter({"other": profile.other_count})
                if profile is not None
                else _counts(first)
            )
            return {
                "kind": "categorical",
                "n_reference": sum(ref_counts.values()),
                "n_current": len(current),
                "categories": categorical_shares(ref_counts, _counts(current)),
            }
        if profile is not None:
            reference = profile.sample(min(max(profile.count, 1), MAX_SAMPLE))
            ref_summary = {
                **numeric_summary(reference),
                "n": profile.count,
                "mean": profile.mean,
                "std": _finite(profile.std),
            }
        else:
            reference = first.astype(np.float64)
            ref_summary = numeric_summary(reference)
        cur = current.astype(np.float64)
        hist = distribution(reference, cur)
        return {
            "kind": "numeric",
            "n_reference": ref_summary["n"],
            "n_current": int(np.isfinite(cur).sum()),
            "reference": ref_summary,
            "current": numeric_summary(cur),
            "histogram": None
            if hist is None
            else {k: hist[k] for k in ("edges", "reference", "current")},
        }

    def _model_metrics(self) -> dict[str, Any]:
        """Lines grouped into charts: one chart per document path without its last part
        (``windows/last_500``: accuracy, f1...), one line per metric and partition; an
        estimated metric (CBPE) shares its chart with the realized one where labels joined."""
        charts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for (path, p), pts in sorted(self.metrics.items()):
            group, name = chart_of(path)
            charts[group].append({"name": name, "partition": p, "points": thin(pts, value_at=1)})
        realized = sorted(  # count windows (last_N) first, then time windows (<S>s)
            (g for g in charts if g.startswith("windows/") and " · " not in g),
            key=lambda g: (not g.startswith("windows/last_"), g),
        )
        for group in [g for g in charts if g.startswith(ESTIMATED)]:
            metric = group.removeprefix(ESTIMATED)
            for g in realized:
                same = [ln for ln in charts[g] if ln["name"] == metric]
                if same:
                    charts[group] += [{**ln, "name": f"realized ({g.split('/')[1]})"}
                                      for ln in same]  # fmt: skip
                    break
        return {
            "documents": self.metric_docs,
            "charts": [{"title": g, "lines": lines} for g, lines in sorted(charts.items())],
        }


#: Chart path prefix of an estimated metric (``estimated_performance/metrics/<metric>``).
ESTIMATED = "estimated_performance/metrics/"


def is_metric(path: str) -> bool:
    """Whether a model-metrics number is worth a line: not a position, time or chunk index.

    >>> [is_metric(p) for p in ("windows/10s/auc", "estimated_performance/chunk",
    ...  "estimated_performance/first_offset", "estimated_performance/end_event_time_ms",
    ...  "estimated_performance/calibration/n_reference")]
    [True, False, False, False, False]
    """
    last = path.rpartition("/")[2]
    if "/calibration/" in f"/{path}/":  # how the estimator was fitted: a constant
        return False
    return not (last.endswith(("_ms", "_offset")) or last in ("chunk", "partition"))


def chart_of(path: str) -> tuple[str, str]:
    """``(chart, line)`` of a model-metrics number: its path without the last part, and that
    part; a slice's values share one chart per metric; example counts (``n``) get their own.

    >>> chart_of("windows/last_500/auc"), chart_of("windows/last_500/n")
    (('windows/last_500', 'auc'), ('windows/last_500 · n', 'n'))
    >>> chart_of("slices/country/values/fr/accuracy"), chart_of("labels/joined")
    (('slices/country/accuracy', 'fr'), ('labels', 'joined'))
    >>> chart_of("slices/country/estimated/fr/accuracy")
    ('slices/country/accuracy (estimated)', 'fr')
    """
    parts = path.split("/")
    if len(parts) == 5 and parts[0] == "slices" and parts[2] in ("values", "estimated"):
        est = " (estimated)" if parts[2] == "estimated" else ""
        return f"slices/{parts[1]}/{parts[4]}{est}", parts[3]
    group, _, name = path.rpartition("/")
    group = group or "metrics"
    return (f"{group} · n", name) if name == "n" else (group, name)


def _where(a: dict[str, Any]) -> dict[str, Any]:
    w = a["window"]
    return {
        "offset": w["offset"],
        "event_time_ms": w.get("event_time_ms"),
        "topic": w.get("topic"),
        "start_offset": w.get("start_offset"),
        "start_event_time_ms": w.get("start_event_time_ms"),
        "n_current": w.get("n_current"),
        "statistic": _finite(a.get("statistic")),
        "p_value": _finite(a.get("p_value")),
        "threshold": _finite(a.get("threshold")),
        "severity": a.get("severity"),
        "alert_id": a.get("alert_id"),
        "business": a.get("business"),
    }


def episodes_of(alerts: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each detector's episodes: a ``firing`` alert opens one on its partition, the next
    ``resolved`` alert there closes it; ordered by partition, then offset.

    >>> a = lambda s, o: {"detector": "d", "status": s, "window": {"partition": 0, "offset": o}}
    >>> [(e["status"], e["fired"]["offset"], e["resolved"] and e["resolved"]["offset"])
    ...  for e in episodes_of([a("firing", 5), a("resolved", 9), a("firing", 12)])["d"]]
    [('resolved', 5, 9), ('open', 12, None)]
    """
    open_: dict[tuple[str, int], dict[str, Any]] = {}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        key = (a["detector"], int(a["window"]["partition"]))
        if a["status"] == "firing":
            ep = {"partition": key[1], "status": "open", "fired": _where(a), "resolved": None}
            open_[key] = ep
            out[key[0]].append(ep)
        elif key in open_:
            ep = open_.pop(key)
            ep["status"], ep["resolved"] = "resolved", _where(a)
    for eps in out.values():
        eps.sort(key=lambda e: (e["partition"], e["fired"]["offset"]))
    return dict(out)
