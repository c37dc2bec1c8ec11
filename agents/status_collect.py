"""Collecting what the worker's status page shows: :class:`StatusCollector`.

It reads what the worker already has: the runner's
:meth:`~agents.runner.TransactionalRunner.status` (partitions, each detector's state and, for KS
detectors, its reference and current samples), the :class:`~agents.metrics.WorkerMetrics`
counters and latency histogram, and the recent alerts. It keeps a bounded history of every
detector's statistic (sampled by the worker every half second, only when the detector saw new
values). :meth:`StatusCollector.snapshot` is ``/status.json``; `agents.status_render` draws it
as ``/status`` and `agents.status_client` summarises it for ``driftline status``.

Input values stay off the pages unless the spec says ``worker.status_values = true``: without
it a KS detector's reference and current histograms (their bin edges are percentiles of the
input) are left out, and an alert detail quoting a window's min/max says only that they left
the reference range. Statistics, p-values, counts, offsets and event times are shown either way.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from driftline.alert_format import format_alert

HISTORY = 300  #: statistic readings kept per (detector, target, partition)
HIST_BINS = 30
QUANTILES = (0.5, 0.9, 0.95, 0.99)

Key = tuple[str, str, int]

#: An alert detail's part that quotes input values (the summary detector's range check).
_VALUES_IN_DETAIL = re.compile(r"min/max \S+/\S+")


def hide_values(alert: dict[str, Any]) -> dict[str, Any]:
    """``alert`` without the input values its ``detail`` may quote.

    >>> hide_values({"detail": "mean shift 2.1 std > 0.5; min/max -3.2/412.5 > 0.1"})["detail"]
    'mean shift 2.1 std > 0.5; min/max outside the reference range > 0.1'
    """
    detail = alert.get("detail")
    if not isinstance(detail, str):
        return alert
    return {**alert, "detail": _VALUES_IN_DETAIL.sub("min/max outside the reference range", detail)}


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def registry_samples(registry: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a prometheus_client registry: name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in registry.collect():
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in samples.get(name, []))


def alert_line(a: dict[str, Any]) -> str:
    """One readable line per alert: the ``alerts tail`` line for full alert documents."""
    try:
        return format_alert(a)
    except (KeyError, TypeError, ValueError):
        w = a.get("window", {})
        stat = a.get("statistic")
        p = a.get("p_value")
        return (
            f"[{str(a.get('status', '?')).upper()}] drift on {a.get('target')} by "
            f"{a.get('detector')}: statistic={'-' if stat is None else f'{stat:.4g}'}"
            f"{'' if p is None else f' p={p:.3g}'} partition={w.get('partition')} "
            f"offset={w.get('offset')}"
        )


def distribution(
    reference: np.ndarray | None, current: np.ndarray | None, bins: int = HIST_BINS
) -> dict[str, Any] | None:
    """Shared-bin histograms of a KS detector's reference and current samples (fractions).

    Bins span the 0.5-99.5 percentiles of both samples; values outside land in the edge bins.
    """
    if reference is None or current is None:
        return None
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 and cur.size == 0:
        return None
    both = np.concatenate([ref, cur])
    lo, hi = (float(x) for x in np.percentile(both, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)

    def frac(x: np.ndarray) -> list[float]:
        if x.size == 0:
            return [0.0] * bins
        c, _ = np.histogram(np.clip(x, lo, hi), bins=edges)
        return (c / x.size).tolist()

    return {
        "edges": edges.tolist(),
        "reference": frac(ref),
        "current": frac(cur),
        "n_reference": int(ref.size),
        "n_current": int(cur.size),
    }


class StatusCollector:
    """What ``/status`` and ``/status.json`` show, for one worker."""

    def __init__(
        self,
        runner: Any,
        metrics: Any,
        *,
        history: int = HISTORY,
        clock: Callable[[], float] = time.time,
        values: bool = False,
    ) -> None:
        """``values``: show input values (``worker.status_values``; see the module doc)."""
        self.runner = runner
        self.values = values
        self.metrics = metrics
        self.history_len = history
        self.clock = clock
        self._history: dict[Key, deque[tuple[int, float | None, float | None, bool]]] = {}
        self._seen: dict[Key, int] = {}

    def close(self) -> None:
        """Nothing to release (kept so callers can treat the collector as a resource)."""

    def _record(self, detectors: Iterable[dict[str, Any]]) -> None:
        now_ms = int(self.clock() * 1000)
        for d in detectors:
            key = (d["detector"], d["target"], int(d["partition"]))
            n = int(d["n_seen"])
            if self._seen.get(key) == n:
                continue  # nothing new since the last reading
            self._seen[key] = n
            hist = self._history.get(key)
            if hist is None:
                hist = self._history[key] = deque(maxlen=self.history_len)
            hist.append((now_ms, _finite(d["statistic"]), _finite(d["p_value"]), d["firing"]))

    def sample(self) -> None:
        """Take one reading of every detector (the worker calls this twice a second)."""
        self._record(self.runner.status()["detectors"])

    def recent_alerts(self) -> list[dict[str, Any]]:
        """The last alerts the runner committed (``WorkerMetrics.record_alert``), oldest first."""
        return list(self.metrics.recent_alerts)

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data."""
        st = self.runner.status()
        self._record(st["detectors"])
        m = self.metrics
        s = registry_samples(m.registry)
        dead = {  # every reason's series exists from the start: only those that happened
            lb.get("reason", ""): int(v)
            for lb, v in s.get("driftline_records_dead_lettered_total", [])
            if v
        }
        lag = {
            lb.get("partition", ""): int(v) for lb, v in s.get("driftline_consumer_lag_records", [])
        }
        alerts_by = [{**lb, "count": int(v)} for lb, v in s.get("driftline_alerts_total", []) if v]
        stages = {}
        for lb, v in s.get("driftline_stage_duration_seconds_count", []):
            total = next(
                (x for lb2, x in s.get("driftline_stage_duration_seconds_sum", []) if lb2 == lb),
                0.0,
            )
            stages[lb.get("stage", "")] = {
                "batches": int(v),
                "mean_s": total / v if v else None,
            }
        lat = m.latency["ingest_to_output"]
        latency = {
            "path": "ingest_to_output",
            "count": int(lat.count),
            "mean_s": lat.total / lat.count if lat.count else None,
            **{f"p{round(q * 100)}": _finite(lat.quantile(q)) for q in QUANTILES},
        }
        detectors = []
        for d in st["detectors"]:
            key = (d["detector"], d["target"], int(d["partition"]))
            detectors.append(
                {
                    "detector": d["detector"],
                    "type": d["type"],
                    "target": d["target"],
                    "partition": int(d["partition"]),
                    "params": {k: v for k, v in d.get("params", {}).items()},
                    "firing": bool(d["firing"]),
                    "statistic": _finite(d["statistic"]),
                    "p_value": _finite(d["p_value"]),
                    "n_seen": int(d["n_seen"]),
                    "distribution": (
                        distribution(d.get("reference"), d.get("current")) if self.values else None
                    ),
                    "history": [list(h) for h in self._history.get(key, ())],
                }
            )
        alerts = self.recent_alerts()
        if not self.values:
            alerts = [hide_values(a) for a in alerts]
        quality: dict[tuple[str, str], dict[str, float | None]] = {}
        for lb, v in s.get("driftline_model_metric", []):
            key = (lb.get("partition", ""), lb.get("window", ""))
            quality.setdefault(key, {})[lb.get("metric", "")] = _finite(v)
        estimated: dict[tuple[str, str], dict[str, Any]] = {}
        for lb, v in s.get("driftline_estimated_performance", []):
            key = (lb.get("partition", ""), lb.get("metric", ""))
            estimated.setdefault(key, {"firing": False})[lb.get("bound", "")] = _finite(v)
        for lb, v in s.get("driftline_estimated_performance_firing", []):
            key = (lb.get("partition", ""), lb.get("metric", ""))
            estimated.setdefault(key, {})["firing"] = bool(v)
        labels = {
            lb.get("outcome", ""): int(v)
            for lb, v in s.get("driftline_label_join_outcomes_total", [])
            if v
        }
        slices: dict[tuple[str, str, str], dict[str, Any]] = {}
        for lb, v in s.get("driftline_slice_model_metric", []):
            key = (lb.get("slice", ""), lb.get("value", ""), lb.get("partition", ""))
            slices.setdefault(key, {})[lb.get("metric", "")] = _finite(v)
        for lb, v in s.get("driftline_slice_firing", []):
            key = (lb.get("slice", ""), lb.get("value", ""), lb.get("partition", ""))
            slices.setdefault(key, {})["firing"] = bool(v)
        business: dict[tuple[str, str], dict[str, Any]] = {}
        for lb, v in s.get("driftline_business_metric", []):
            key = (lb.get("metric", ""), lb.get("partition", ""))
            business.setdefault(key, {})[lb.get("stat", "")] = _finite(v)
        # the counter has one series per topic read: the input's events, the labels' records
        by_topic = {lb.get("topic"): v for lb, v in s.get("driftline_records_consumed_total", [])}
        events = by_topic.pop(st["input_topic"], 0.0)
        return {
            "pipeline": st["pipeline"],
            "worker_id": st["worker_id"],
            "input_topic": st["input_topic"],
            "generated_at_ms": int(self.clock() * 1000),
            "values_shown": self.values,
            "partitions": list(st["partitions"]),
            "watermarks_ms": {str(p): w for p, w in st["watermarks_ms"].items()},
            "counters": {
                "consumed": int(events),
                "label_records": int(sum(by_topic.values())),
                "dead_lettered": sum(dead.values()),
                "feature_vectors": int(_total(s, "driftline_feature_vectors_total")),
                "predictions": int(_total(s, "driftline_predictions_total")),
                "late_events": int(_total(s, "driftline_late_events_total")),
                "alerts": int(_total(s, "driftline_alerts_total")),
                "batches": int(_total(s, "driftline_batches_total")),
            },
            "dead_letters_by_reason": dead,
            "alerts_by": alerts_by,
            "consumer_lag": lag,
            "latency": latency,
            "stages": stages,
            "detectors": detectors,
            "alerts_firing": sum(1 for d in detectors if d["firing"]),
            "recent_alerts": [{**a, "line": alert_line(a)} for a in alerts[::-1]],
            "labels": labels,
            "model_quality": [
                {"partition": p, "window": w, **vals} for (p, w), vals in sorted(quality.items())
            ],
            "slices": [
                {"slice": n, "value": v, "partition": p, **vals}
                for (n, v, p), vals in sorted(slices.items())
            ],
            "business": [
                {"metric": n, "partition": p, **vals} for (n, p), vals in sorted(business.items())
            ],
            "estimated_performance": [
                {"partition": p, "metric": m, **vals} for (p, m), vals in sorted(estimated.items())
            ],
            "estimated_chunks": int(_total(s, "driftline_estimated_chunks_total")),
        }

    def json_bytes(self) -> bytes:
        return orjson.dumps(self.snapshot(), option=orjson.OPT_NON_STR_KEYS)
