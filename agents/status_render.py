"""Rendering the worker's status page: ``/status``, one self-contained HTML page (no scripts)
with SVG plots drawn here, server-side, from a :meth:`StatusCollector.snapshot
<agents.status_collect.StatusCollector.snapshot>`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from driftline.agents.metrics import RECENT_ALERTS
from driftline.agents.status_collect import QUANTILES
from driftline.agents.svg import (
    ML,
    MR,
    MT,
    W,
    fmt_num,
    fmt_seconds,
    svg_distribution,
    svg_lines,
)
from driftline.agents.svg import esc as _esc
from driftline.agents.svg import frame as _frame
from driftline.alert_format import iso_ms

# -- SVG (the charts themselves are agents.svg's) ------------------------------------------------


def svg_series(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float | None, bool]]]],
    now_ms: int,
    attrs: dict[str, Any],
    hline: float | None = None,
) -> str:
    """Lines over time (one per label; ``(t_ms, value, firing)`` points); firing points red."""
    times = [t for _, ser in series for t, v, _ in ser if v is not None]
    t0 = min(times) if times else now_ms
    span = max(now_ms - t0, 1000)
    return svg_lines(
        title,
        [(label, [(t, v) for t, v, _ in ser]) for label, ser in series],
        attrs,
        x_labels=(f"-{span / 1000:.0f} s", "now"),
        x_range=(t0, t0 + span),
        hline=hline,
        marks=[(t, v) for _, ser in series for t, v, f in ser if f and v is not None],
    )


def svg_latency(lat: dict[str, Any]) -> str:
    """Horizontal bars: p50/p90/p95/p99 of ingest-to-output latency."""
    qs = [(f"p{round(q * 100)}", lat.get(f"p{round(q * 100)}")) for q in QUANTILES]
    vmax = max([v for _, v in qs if v is not None] + [1e-9])
    pw = W - ML - MR - 70
    body = []
    for i, (name, v) in enumerate(qs):
        y = MT + 8 + i * 36
        w = 0 if v is None else pw * v / vmax
        body.append(
            f'<text x="{ML - 6}" y="{y + 15}" class="tick" text-anchor="end">{name}</text>'
            f'<rect class="lat" x="{ML}" y="{y}" width="{w:.1f}" height="22"/>'
            f'<text x="{ML + w + 6:.1f}" y="{y + 15}" class="tick">{fmt_seconds(v)}</text>'
        )
    return _frame(f"latency, ingest → output ({lat.get('count', 0)} records)", "latency", {}, body)


# -- HTML -----------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:18px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600}
.badge.firing{background:#d62728;color:#fff} .badge.ok{background:#2ca02c;color:#fff}
.plots{display:flex;flex-wrap:wrap;gap:10px} svg.plot{border:1px solid #ddd}
.ptitle{font-size:13px;font-weight:600} .tick{font-size:11px;fill:#555}
.axis{stroke:#999} .hline{stroke:#d62728;stroke-dasharray:4 3}
rect.ref{fill:#7f7f7f;fill-opacity:.6} rect.cur{fill:#ff7f0e;fill-opacity:.75}
rect.lat{fill:#1f77b4} circle.firing{fill:none;stroke:#d62728;stroke-width:1.2}
ul.alerts{font:12px/1.5 ui-monospace,Menlo,Consolas,monospace;padding-left:18px}
li.alert-line.firing{color:#b00} li.alert-line.resolved{color:#070}
.muted{color:#777}
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], num_from: int = 99) -> str:
    h = "".join(f"<th>{_esc(c)}</th>" for c in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i >= num_from else f"<td>{c}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _quality_cell(metric: str, v: float | None) -> str:
    """A model-quality table cell: counts as integers, metrics as numbers."""
    if metric == "n" and v is not None:
        return f"{int(v):,}"
    return fmt_num(v)


#: The throughput table: column head, counter of the snapshot.
THROUGHPUT = (
    ("consumed", "consumed"),
    ("label records", "label_records"),
    ("dead letters", "dead_lettered"),
    ("late events", "late_events"),
    ("feature vectors", "feature_vectors"),
    ("predictions", "predictions"),
    ("alerts", "alerts"),
    ("batches", "batches"),
)


def render_html(data: dict[str, Any], refresh_s: int = 5) -> str:
    """The ``/status`` page for a :meth:`StatusCollector.snapshot`."""
    c = data["counters"]
    labelled = bool(c.get("label_records") or data.get("labels"))
    throughput = [(h, k) for h, k in THROUGHPUT if k != "label_records" or labelled]
    now = data["generated_at_ms"]
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{refresh_s}'>",
        f"<title>driftline · {_esc(data['pipeline'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>driftline · pipeline <span id='pipeline'>{_esc(data['pipeline'])}</span></h1>",
        f"<div class='muted'>worker {_esc(data['worker_id'])} · input {_esc(data['input_topic'])}"
        f" · partitions {_esc(', '.join(map(str, data['partitions'])) or 'none')}"
        f" · {iso_ms(now)} (refreshes every {refresh_s} s)</div>",
        "<h2>Throughput</h2>",
        _table(
            [head for head, _ in throughput],
            [[c.get(key, 0) for _, key in throughput]],
            num_from=0,
        ),
    ]
    if data["dead_letters_by_reason"]:
        parts.append("<p>dead letters by reason: ")
        parts.append(
            ", ".join(
                f"{_esc(r)} <b>{n}</b>" for r, n in sorted(data["dead_letters_by_reason"].items())
            )
        )
        parts.append("</p>")
    if data["consumer_lag"]:
        parts.append(
            "<p>consumer lag (records): "
            + ", ".join(
                f"partition {_esc(p)} <b>{n}</b>" for p, n in sorted(data["consumer_lag"].items())
            )
            + "</p>"
        )

    # drift
    dets = data["detectors"]
    parts.append(
        f"<h2>Drift <span class='muted'>({data['alerts_firing']} of {len(dets)} firing)</span></h2>"
    )
    rows = []
    for d in dets:
        badge = (
            "<span class='badge firing'>FIRING</span>"
            if d["firing"]
            else "<span class='badge ok'>ok</span>"
        )
        params = ", ".join(f"{k}={v}" for k, v in sorted(d["params"].items()))
        rows.append(
            [
                f"<span class='det-name'>{_esc(d['detector'])}</span>",
                _esc(d["type"]),
                _esc(d["target"]),
                d["partition"],
                badge,
                fmt_num(d["statistic"]),
                fmt_num(d["p_value"]),
                d["n_seen"],
                f"<span class='muted'>{_esc(params)}</span>",
            ]
        )
    parts.append(
        _table(
            [
                "detector",
                "type",
                "target",
                "partition",
                "status",
                "statistic",
                "p-value",
                "seen",
                "parameters",
            ],
            rows,
        )
        if rows
        else "<p class='muted'>no partition assigned yet</p>"
    )
    dists = [
        svg_distribution(
            f"{d['detector']} · {d['target']} · partition {d['partition']}",
            d["distribution"],
            {"detector": d["detector"], "partition": d["partition"]},
        )
        for d in dets
        if d["distribution"] is not None
    ]
    if dists:
        parts.append("<h3>Reference vs current (KS)</h3><div class='plots'>")
        parts.extend(dists)
        parts.append("</div>")
    elif not data.get("values_shown", True) and any(d["type"] == "ks" for d in dets):
        parts.append(
            "<p class='muted' id='values-hidden'>Reference vs current histograms are off: they "
            "show input values (set worker.status_values = true to show them).</p>"
        )
    by_det: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in dets:
        by_det.setdefault((d["detector"], d["target"]), []).append(d)
    parts.append("<h3>Drift statistic over time</h3><div class='plots'>")
    for (name, target), ds in by_det.items():
        series = [
            (f"partition {d['partition']}", [(h[0], h[1], h[3]) for h in d["history"]]) for d in ds
        ]
        parts.append(svg_series(f"{name} · {target}: statistic", series, now, {"detector": name}))
        if ds[0]["type"] == "ks" and "alpha" in ds[0]["params"]:
            pseries = [
                (
                    f"partition {d['partition']}",
                    [
                        (h[0], -math.log10(max(h[2], 1e-300)) if h[2] is not None else None, h[3])
                        for h in d["history"]
                    ],
                )
                for d in ds
            ]
            parts.append(
                svg_series(
                    f"{name} · {target}: -log10 p (dashed: alpha)",
                    pseries,
                    now,
                    {"detector": name},
                    # the level in force (Benjamini-Hochberg moves it between batches)
                    hline=-math.log10(float(ds[0].get("alpha") or ds[0]["params"]["alpha"])),
                )
            )
    parts.append("</div>")

    # latency
    lat = data["latency"]
    parts.append("<h2>Latency</h2><div class='plots'>")
    parts.append(svg_latency(lat))
    parts.append("</div>")
    stage_rows = [
        [_esc(k), v["batches"], fmt_seconds(v["mean_s"])] for k, v in data["stages"].items()
    ]
    parts.append("<h3>Per batch, by stage</h3>")
    parts.append(_table(["stage", "batches", "mean"], stage_rows, num_from=1))

    # model quality (delayed labels)
    if data.get("model_quality") or data.get("labels"):
        parts.append("<h2>Model quality <span class='muted'>(from joined labels)</span></h2>")
        labels = data.get("labels", {})
        if labels:
            parts.append(_table(["outcome", "count"], sorted(labels.items()), num_from=1))
        rows = data.get("model_quality", [])
        names = [k for k in ("n", "accuracy", "precision", "recall", "f1", "auc", "mae", "rmse")
                 if any(r.get(k) is not None for r in rows)]  # fmt: skip
        parts.append(
            _table(
                ["partition", "window", *names],
                (
                    [
                        _esc(r["partition"]),
                        _esc(r["window"]),
                        *(_quality_cell(k, r.get(k)) for k in names),
                    ]
                    for r in rows
                ),
                num_from=2,
            )
        )

    # slices (per value of a categorical field) and the business metric
    slice_rows = data.get("slices") or []
    if slice_rows:
        parts.append("<h2>Slices <span class='muted'>(model quality per value)</span></h2>")
        names = [k for k in ("n", "accuracy", "precision", "recall", "f1", "auc", "mae", "rmse")
                 if any(r.get(k) is not None for r in slice_rows)]  # fmt: skip
        parts.append(
            _table(
                ["slice", "value", "partition", "alert", *names],
                (
                    [
                        _esc(r["slice"]),
                        _esc(r["value"]),
                        _esc(r["partition"]),
                        "FIRING" if r.get("firing") else "",
                        *(_quality_cell(k, r.get(k)) for k in names),
                    ]
                    for r in slice_rows
                ),
                num_from=4,
            )
        )
    if data.get("business"):
        parts.append("<h2>Business metric <span class='muted'>(rolling window)</span></h2>")
        parts.append(
            _table(
                ["metric", "partition", "value", "events"],
                (
                    [_esc(r["metric"]), _esc(r["partition"]), fmt_num(r.get("value")),
                     _quality_cell("n", r.get("n"))]
                    for r in data["business"]
                ),
                num_from=2,
            )
        )  # fmt: skip
    # estimated performance (no labels)
    if data.get("estimated_performance"):
        parts.append(
            "<h2>Estimated performance <span class='muted'>(no labels: CBPE over the latest "
            f"chunk of predictions; {data.get('estimated_chunks', 0)} chunks estimated)</span></h2>"
        )
        parts.append(
            _table(
                ["partition", "metric", "estimate", "band", "below threshold"],
                (
                    [
                        _esc(r["partition"]),
                        _esc(r["metric"]),
                        fmt_num(r.get("estimate")),
                        f"{fmt_num(r.get('lower'))} to {fmt_num(r.get('upper'))}",
                        "yes" if r.get("firing") else "no",
                    ]
                    for r in data["estimated_performance"]
                ),
                num_from=2,
            )
        )

    # alerts
    parts.append(
        f"<h2>Recent alerts <span class='muted'>(last {RECENT_ALERTS}, newest first)</span></h2>"
    )
    if data["alerts_by"]:
        parts.append(
            _table(
                ["kind", "detector", "status", "count"],
                (
                    [
                        _esc(a.get("kind")),
                        _esc(a.get("detector")),
                        _esc(a.get("status")),
                        a["count"],
                    ]
                    for a in data["alerts_by"]
                ),
                num_from=3,
            )
        )
    if data["recent_alerts"]:
        parts.append("<ul class='alerts'>")
        parts.extend(
            f"<li class='alert-line {_esc(a.get('status', ''))}'>{_esc(a['line'])}</li>"
            for a in data["recent_alerts"]
        )
        parts.append("</ul>")
    else:
        parts.append("<p class='muted'>no alert since this worker started</p>")
    parts.append("</body></html>")
    return "".join(parts)
