"""One readable line per alert, for the demo and ``driftline alerts tail``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso_ms(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def format_alert(a: dict[str, Any]) -> str:
    """``[FIRING critical] covariate drift on amount by amount_ks (ks): statistic=...``

    Examples
    --------
    >>> line = format_alert({"status": "firing", "severity": "warning", "kind": "covariate",
    ...     "target": "x", "detector": "x_ks", "detector_type": "ks", "statistic": 0.25,
    ...     "p_value": 1e-7, "threshold": 1e-6,
    ...     "window": {"partition": 0, "offset": 42, "event_time_ms": 0, "n_current": 500}})
    >>> line.split(" partition=")[0]
    '[FIRING warning] covariate drift on x by x_ks (ks): statistic=0.25 p=1e-07 (threshold 1e-06)'
    >>> line.split(" partition=")[1]
    '0 offset=42 event_time=1970-01-01T00:00:00.000Z'

    The topic the offset is on, when the alert names it (a label detector's is the labels'):

    >>> format_alert({"status": "firing", "severity": "warning", "kind": "concept",
    ...     "target": "error", "detector": "e", "detector_type": "ddm", "statistic": 1.0,
    ...     "threshold": 3.0, "window": {"partition": 1, "topic": "driftline.labels",
    ...     "offset": 7, "event_time_ms": 0, "n_current": 9}}).split(") ")[-1]
    'topic=driftline.labels partition=1 offset=7 event_time=1970-01-01T00:00:00.000Z'

    A label-free performance estimate below its threshold (``[performance_estimation]``):

    >>> format_alert({"status": "firing", "severity": "warning",
    ...     "kind": "estimated_performance", "target": "accuracy",
    ...     "detector": "estimated_performance", "detector_type": "cbpe", "statistic": 0.6512,
    ...     "threshold": 0.7, "window": {"partition": 0, "offset": 9, "event_time_ms": 0,
    ...     "n_current": 500}}).split(" partition=")[0]
    '[FIRING warning] estimated accuracy 0.6512 below its threshold 0.7 (cbpe, 500 predictions)'
    """
    w = a["window"]
    p = "" if a.get("p_value") is None else f" p={a['p_value']:.3g}"
    sl = a.get("slice")
    if sl is not None:  # the slice's metric against the global one
        p = (f" ({sl['metric']} {sl['slice_value']:.4g} vs global {sl['global_value']:.4g}, "
             f"n={sl['n_slice']})")  # fmt: skip
    # the offset is on the trigger record's topic: the input's, or the labels' (label detectors)
    topic = f" topic={w['topic']}" if w.get("topic") else ""
    where = (
        f"{topic} partition={w['partition']} offset={w['offset']} "
        f"event_time={iso_ms(w['event_time_ms'])}{business_line(a)}"
    )
    head = f"[{a['status'].upper()} {a['severity']}]"
    if a["kind"] == "estimated_performance":
        side = "below" if a["status"] == "firing" else "back at or above"
        return (
            f"{head} estimated {a['target']} {a['statistic']:.4g} {side} its threshold "
            f"{a['threshold']:.3g} ({a['detector_type']}, {w['n_current']} predictions){where}"
        )
    return (
        f"{head} {a['kind']} drift on {a['target']} by "
        f"{a['detector']} ({a['detector_type']}): statistic={a['statistic']:.4g}{p} "
        f"(threshold {a['threshold']:.3g}){where}"
    )


def _value(part: dict[str, Any]) -> str:
    return "n/a" if part["value"] is None else f"{part['value']:.4g}"


def business_line(a: dict[str, Any]) -> str:
    """`` | revenue (mean): 9.8 during the episode vs 12.1 before`` when the alert carries its
    business metric (``[business]``), else empty.

    >>> business_line({"business": {"name": "revenue", "agg": "mean",
    ...     "before": {"value": 12.1, "n": 40}, "during": {"value": 9.8, "n": 10}}})
    ' | revenue (mean): 9.8 during the episode (n=10) vs 12.1 before (n=40)'
    """
    b = a.get("business")
    if b is None:
        return ""
    d, bf = b["during"], b["before"]
    return (
        f" | {b['name']} ({b['agg']}): {_value(d)} during the episode (n={d['n']}) vs "
        f"{_value(bf)} before (n={bf['n']})"
    )
