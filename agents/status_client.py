"""``driftline status``: read a worker's ``/status.json`` and summarise it, one fact a line."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson

from driftline.agents.status_collect import QUANTILES
from driftline.agents.status_render import fmt_num, fmt_seconds
from driftline.errors import DriftlineError


def fetch_status(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET ``<url>/status.json`` (``url`` may name ``/status.json`` itself)."""
    u = url.rstrip("/")
    if not u.endswith("/status.json"):
        u += "/status.json"
    try:
        with urllib.request.urlopen(u, timeout=timeout_s) as r:
            return orjson.loads(r.read())
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as e:
        raise DriftlineError(f"cannot read the worker status at {u}: {e}") from e


def summarize(data: dict[str, Any]) -> str:
    """``driftline status``: one ``key: value`` line per fact."""
    c = data["counters"]
    dead = ", ".join(f"{r} {n}" for r, n in sorted(data["dead_letters_by_reason"].items()))
    firing = [
        f"{d['detector']}[{d['target']}] p{d['partition']}"
        for d in data["detectors"]
        if d["firing"]
    ]
    lat = data["latency"]
    lag = sum(data["consumer_lag"].values())
    lines = [
        f"pipeline: {data['pipeline']}",
        f"worker: {data['worker_id']}",
        f"input: {data['input_topic']}",
        f"partitions: {', '.join(map(str, data['partitions'])) or 'none'}",
        f"consumed: {c['consumed']}",
        *([f"label records: {c['label_records']}"] if c.get("label_records") else []),
        f"dead letters: {c['dead_lettered']}" + (f" ({dead})" if dead else ""),
        f"feature vectors: {c['feature_vectors']}",
        f"predictions: {c['predictions']}",
        f"consumer lag: {lag}",
        f"alerts firing: {len(firing)}" + (f" ({', '.join(firing)})" if firing else ""),
        f"alerts sent: {c['alerts']}",
        "latency: "
        + "  ".join(
            f"p{round(q * 100)} {fmt_seconds(lat.get(f'p{round(q * 100)}'))}" for q in QUANTILES
        ),
    ]
    labels = data.get("labels") or {}
    if labels:
        lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    for r in data.get("model_quality", []):
        vals = "  ".join(f"{k} {fmt_num(v)}" for k, v in r.items()
                         if k not in ("partition", "window"))  # fmt: skip
        lines.append(f"model p{r['partition']} {r['window']}: {vals}")
    for r in data.get("estimated_performance", []):
        below = "  BELOW THRESHOLD" if r.get("firing") else ""
        lines.append(
            f"estimated p{r['partition']} {r['metric']}: {fmt_num(r.get('estimate'))} "
            f"({fmt_num(r.get('lower'))} to {fmt_num(r.get('upper'))}){below}"
        )
    for r in data.get("slices") or []:
        vals = "  ".join(f"{k} {fmt_num(v)}" for k, v in r.items()
                         if k not in ("slice", "value", "partition", "firing"))  # fmt: skip
        worse = "  WORSE THAN THE WHOLE" if r.get("firing") else ""
        lines.append(f"slice p{r['partition']} {r['slice']}={r['value']}: {vals}{worse}")
    for r in data.get("business") or []:
        lines.append(
            f"business p{r['partition']} {r['metric']}: {fmt_num(r.get('value'))} "
            f"(n {fmt_num(r.get('n'))})"
        )
    if data["recent_alerts"]:
        lines.append(f"last alert: {data['recent_alerts'][0]['line']}")
    return "\n".join(lines)
