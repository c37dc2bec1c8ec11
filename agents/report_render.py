"""The ``driftline report`` HTML page, drawn from the report's JSON twin alone
(:meth:`ReportCollector.report <driftline.agents.report_data.ReportCollector.report>`).

One self-contained file: inline CSS, inline SVG charts (:mod:`driftline.agents.svg`), no
script, no link, no font or image fetched, so it opens offline and can be mailed or attached to
a CI run. Everything that comes from the spec or the data (pipeline, detector, field and
category names, file names) is HTML-escaped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from driftline.agents.svg import esc, fmt_num, svg_categories, svg_distribution, svg_lines
from driftline.alert_format import iso_ms

#: Detector kinds in the order the page shows them (others follow, by name).
KIND_ORDER = ("covariate", "multivariate", "prediction", "estimated_performance", "concept",
              "label", "slice", "skew", "importance")  # fmt: skip
KIND_TITLES = {
    "covariate": "Input drift (fields and features)",
    "multivariate": "Multivariate drift",
    "prediction": "Prediction drift",
    "concept": "Concept drift (model errors)",
    "label": "Label drift",
    "slice": "Slices",
    "skew": "Training/serving skew",
    "importance": "Feature importance",
    "estimated_performance": "Estimated performance (CBPE, without labels)",
}

#: Lines drawn as a band's dashed bounds (an estimate's confidence band).
BOUNDS = ("lower", "upper")
#: Model-metrics document parts, as the page titles them.
SECTION_TITLES = {
    "windows": "Realized metrics (joined labels)",
    "estimated_performance": "Estimated performance (CBPE) and realized",
    "slices": "Slices",
    "labels": "Label join",
    "business": "Business metric",
    "importance": "Feature importance",
}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:20px 28px;color:#222}
h1{font-size:21px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 10px;border-bottom:2px solid #ddd}
h3{font-size:15px;margin:18px 0 6px} h4{font-size:14px;margin:12px 0 4px}
table{border-collapse:collapse;margin:4px 0 10px} th{background:#f4f4f4}
td,th{padding:3px 9px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0} svg.plot{border:1px solid #ddd}
.ptitle{font-size:13px;font-weight:600} .tick{font-size:11px;fill:#555}
.axis{stroke:#999} .hline{stroke:#d62728;stroke-dasharray:4 3}
rect.ref{fill:#7f7f7f;fill-opacity:.6} rect.cur{fill:#ff7f0e;fill-opacity:.75}
rect.band{fill:#d62728;fill-opacity:.12}
.badge{padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff}
.badge.fired{background:#d62728} .badge.quiet{background:#2ca02c} .badge.open{background:#b36b00}
section.detector{border-left:3px solid #eee;padding-left:12px;margin:14px 0}
.muted{color:#777} code{font:12px ui-monospace,Menlo,Consolas,monospace}
"""


def _t(ms: Any) -> str:
    return "–" if ms is None else iso_ms(int(ms))


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], num_from: int = 99) -> str:
    """A table; cells are HTML already (escape them first), columns from ``num_from`` right."""
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i >= num_from else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _source_line(src: dict[str, Any]) -> str:
    if src.get("kind") == "topic":
        ranges = ", ".join(
            f"p{esc(p)} {esc(r['from'])}–{esc(r['to'])}" for p, r in sorted(src["ranges"].items())
        )
        return f"topic <code>{esc(src['topic'])}</code> (offsets {ranges or 'none'})"
    return (
        f"file <code>{esc(src.get('path', ''))}</code>, {esc(src.get('partitions', 1))} "
        f"partition(s), partitioner {esc(src.get('partitioner', ''))}"
    )


def _summary(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    dead = ", ".join(f"{esc(k)} {v}" for k, v in s["dead_letters"].items()) or "none"
    rows = [
        ("events replayed", s["events"]),
        ("feature vectors", s["feature_vectors"]),
        ("predictions", s["predictions"]),
        ("late events", s["late"]),
        ("labels replayed", s["labels"]),
        *([("business records replayed", s.get("business", 0))] if r.get("business") else []),
        ("dead letters", dead),
        ("alerts", s["alerts"]),
        ("drift episodes", s["episodes"]),
        ("event time", f"{_t(s['first_event_time_ms'])} → {_t(s['last_event_time_ms'])}"),
        ("partitions", esc(", ".join(map(str, s["partitions"])) or "none")),
    ]
    out = ["<h2 id='summary'>Summary</h2>", _table(["", "value"], rows)]
    det_rows = []
    for i, d in enumerate(r["detectors"]):
        eps = d["episodes"]
        badge = (
            f"<span class='badge fired'>fired {len(eps)}×</span>"
            if eps
            else "<span class='badge quiet'>quiet</span>"
        )
        first = eps[0]["fired"] if eps else None
        det_rows.append(
            (
                f"<a href='#det-{i}'>{esc(d['name'])}</a>",
                esc(d["type"]),
                esc(d["target"]),
                badge,
                "–" if first is None else f"p{eps[0]['partition']} @ {first['offset']}",
                "–" if first is None else _t(first["event_time_ms"]),
            )
        )
    if not det_rows:
        return out
    out += [
        "<h3>Detectors</h3>",
        _table(
            ["detector", "type", "target", "would have fired", "first at (partition @ offset)",
             "first at (event time)"],
            det_rows,
        ),
    ]  # fmt: skip
    return out


#: Episode rows shown per detector (all of them are in the JSON twin).
MAX_EPISODE_ROWS = 100


def episode_business(e: dict[str, Any]) -> dict[str, Any] | None:
    """An episode's business line: its resolved alert's (the whole episode), else its firing
    alert's (what had arrived after the trigger)."""
    z = e["resolved"]
    if z is not None and z.get("business") is not None:
        return z["business"]
    return e["fired"].get("business")


def business_cell(b: dict[str, Any] | None) -> str:
    """``before → during (change)`` of a business line, with each side's events.

    >>> business_cell({"before": {"value": 10.0, "n": 5}, "during": {"value": 4.0, "n": 3},
    ...                "change": -6.0})
    "<span class='business'>10 (n=5) → 4 (n=3) <b>(-6)</b></span>"
    """
    if b is None:
        return "–"
    bf, du = b["before"], b["during"]
    change = "" if b.get("change") is None else f" <b>({b['change']:+.4g})</b>"
    return (
        f"<span class='business'>{fmt_num(bf['value'])} (n={bf['n']}) → "
        f"{fmt_num(du['value'])} (n={du['n']}){change}</span>"
    )


def _episode_rows(d: dict[str, Any], business: bool = False) -> list[tuple[Any, ...]]:
    rows = []
    for e in d["episodes"][:MAX_EPISODE_ROWS]:
        f, z = e["fired"], e["resolved"]
        start = "–" if f["start_offset"] is None else f"{f['start_offset']}"
        rows.append(
            (
                esc(d["name"]),
                esc(d["target"]),
                e["partition"],
                f["offset"],
                _t(f["event_time_ms"]),
                start,
                "<span class='badge open'>open at the end</span>"
                if z is None
                else f"{z['offset']} ({_t(z['event_time_ms'])})",
                fmt_num(f["statistic"]),
                fmt_num(f["p_value"]),
                esc(f["severity"] or ""),
                *((business_cell(episode_business(e)),) if business else ()),
            )
        )
    return rows


_EPISODE_HEAD = ["detector", "target", "partition", "fired at offset", "event time",
                 "window from offset", "resolved at offset", "statistic", "p-value",
                 "severity"]  # fmt: skip


def _episode_table(detectors: Sequence[dict[str, Any]]) -> str:
    """The episodes of ``detectors``, at most `MAX_EPISODE_ROWS` each, saying how many more."""
    business = any(episode_business(e) is not None for d in detectors for e in d["episodes"])
    rows = [row for d in detectors for row in _episode_rows(d, business)]
    head = [*_EPISODE_HEAD, "business before → during (change)"] if business else _EPISODE_HEAD
    more = [
        f"<p class='muted more'>… and {len(d['episodes']) - MAX_EPISODE_ROWS} more episodes of "
        f"{esc(d['name'])} (all of them are in the JSON report)</p>"
        for d in detectors
        if len(d["episodes"]) > MAX_EPISODE_ROWS
    ]
    return _table(head, rows, num_from=2) + "".join(more)


def _episodes(r: dict[str, Any]) -> list[str]:
    out = ["<h2 id='episodes'>Where the detectors would have fired</h2>"]
    if not any(d["episodes"] for d in r["detectors"]):
        return [*out, "<p class='muted'>No detector fired on this data.</p>"]
    return [*out, _episode_table(r["detectors"])]


def _x_axis(points: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """``svg_lines`` keywords for an event-time x axis spanning every point (values or not)."""
    xs = [p[0] for p in points]
    if not xs:
        return {}
    return {"x_labels": (_t(min(xs)), _t(max(xs))), "x_range": (min(xs), max(xs))}


def _detector(i: int, d: dict[str, Any]) -> list[str]:
    name = d["name"]
    out = [
        f"<section class='detector' id='det-{i}' data-detector=\"{esc(name)}\">",
        f"<h3>{esc(name)} <span class='muted'>({esc(d['type'])}) on "
        f"<code>{esc(d['target'])}</code></span></h3>",
        f"<div class='muted'>reference: {esc(d['reference'] or '–')} · threshold "
        f"{fmt_num(d['threshold'])}"
        + ("" if d["statistic_limit"] is None else f" · limit {fmt_num(d['statistic_limit'])}")
        + " · episodes "
        f"<b class='n-episodes'>{len(d['episodes'])}</b></div>",
    ]
    plots = []
    attrs = {"detector": name}
    bands = []  # each episode, from firing to resolved (or the last reading, if still open)
    for e in d["episodes"]:
        a = e["fired"]["event_time_ms"]
        b = e["resolved"]["event_time_ms"] if e["resolved"] else _last_x(d, e["partition"])
        if a is not None and b is not None:
            bands.append((a, max(a, b)))
    if d["series"]:
        all_pts = [p for s in d["series"] for p in s["points"]]
        stat_lines = [
            (f"p{s['partition']}", [(p[0], p[2]) for p in s["points"]]) for s in d["series"]
        ]
        plots.append(
            svg_lines(f"{name}: statistic over event time", stat_lines, attrs,
                      **_x_axis(all_pts), bands=bands, hline=d["statistic_limit"])
        )  # fmt: skip
        if any(p[3] is not None for p in all_pts):
            p_lines = [
                (f"p{s['partition']}", [(p[0], p[3]) for p in s["points"]]) for s in d["series"]
            ]
            plots.append(
                svg_lines(f"{name}: -log10 p-value (dashed: threshold)", p_lines, attrs,
                          **_x_axis(all_pts), bands=bands, hline=d["threshold"],
                          log_y=True)
            )  # fmt: skip
    dist = d["distribution"]
    if dist is not None and dist["kind"] == "numeric" and dist["histogram"] is not None:
        plots.append(
            svg_distribution(
                f"{d['target']}: reference vs current",
                {**dist["histogram"], "n_reference": dist["n_reference"],
                 "n_current": dist["n_current"]},
                attrs,
            )
        )  # fmt: skip
    elif dist is not None and dist["kind"] == "categorical":
        plots.append(svg_categories(f"{d['target']}: category shares", dist["categories"], attrs))
    if plots:
        out.append("<div class='plots'>" + "".join(plots) + "</div>")
    if dist is not None and dist["kind"] == "numeric":
        ref, cur = dist["reference"], dist["current"]
        names = list(ref["quantiles"] or cur["quantiles"])
        rows = [
            (label, s["n"], fmt_num(s["mean"]), fmt_num(s["std"]),
             *(fmt_num(s["quantiles"].get(q)) for q in names))
            for label, s in (("reference", ref), ("current", cur))
        ]  # fmt: skip
        out.append(_table(["", "n", "mean", "std", *names], rows, num_from=1))
    elif dist is not None:
        rows = [
            (esc(c["name"]), f"{c['reference']:.4f}", f"{c['current']:.4f}")
            for c in dist["categories"]
        ]
        out.append(_table(["category", "reference share", "current share"], rows, num_from=1))
    if d["episodes"]:
        out.append(_episode_table([d]))
    out.append("</section>")
    return out


def _last_x(d: dict[str, Any], partition: int) -> float:
    """The last reading's time on ``partition``: where a still-open episode's band ends."""
    pts = [p[0] for s in d["series"] if s["partition"] == partition for p in s["points"]]
    return max(pts) if pts else 0.0


def _detectors(r: dict[str, Any]) -> list[str]:
    out = ["<h2 id='detectors'>Detectors</h2>"]
    if not r["detectors"]:
        return [*out, "<p class='muted'>The spec has no detectors.</p>"]
    by_kind: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for i, d in enumerate(r["detectors"]):
        by_kind[d["kind"]].append((i, d))
    order = [k for k in KIND_ORDER if k in by_kind] + sorted(set(by_kind) - set(KIND_ORDER))
    for kind in order:
        out.append(f"<h3 class='kind'>{esc(KIND_TITLES.get(kind, kind))}</h3>")
        for i, d in by_kind[kind]:
            out += _detector(i, d)
    return out


def _model_metrics(r: dict[str, Any]) -> list[str]:
    mm = r["model_metrics"]
    out = ["<h2 id='model'>Model metrics and estimated performance</h2>"]
    if not mm["charts"]:
        return [
            *out,
            "<p class='muted'>The replay wrote no model-metrics documents: no labels were "
            "joined and no performance was estimated for these events.</p>",
        ]
    out.append(f"<p class='muted'>{mm['documents']} model-metrics documents.</p>")
    by_section: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in mm["charts"]:
        by_section[c["title"].split("/")[0].split(" · ")[0]].append(c)
    for section, charts in by_section.items():
        title = SECTION_TITLES.get(section, section)
        out.append(f"<h3 class='metrics'>{esc(title)}</h3><div class='plots'>")
        for c in charts:
            pts = [p for ln in c["lines"] for p in ln["points"]]
            parts = {ln["partition"] for ln in c["lines"]}
            lines = [
                (ln["name"] if len(parts) == 1 else f"{ln['name']} p{ln['partition']}",
                 [(p[0], p[1]) for p in ln["points"]])
                for ln in c["lines"]
            ]  # fmt: skip
            chart = svg_lines(
                c["title"], lines, {"metrics": c["title"]}, **_x_axis(pts), dashed=BOUNDS
            )
            out.append(chart)
        out.append("</div>")
        rows = [
            (esc(c["title"]), esc(ln["name"]), ln["partition"],
             fmt_num(ln["points"][-1][1] if ln["points"] else None))
            for c in charts
            for ln in c["lines"]
        ]  # fmt: skip
        out.append(_table(["chart", "metric", "partition", "last value"], rows, num_from=2))
    return out


def _business(r: dict[str, Any]) -> list[str]:
    """The ``[business]`` metric's rolling value over business time, per partition."""
    b = r.get("business")
    if b is None:
        return []
    title = f"{b['name']} ({b['agg']} of {b['field']} over {fmt_num(b['window_ms'] / 1000)} s)"
    out = [f"<h2 id='business'>Business metric: {esc(title)}</h2>"]
    series = [s for s in b["series"] if s["points"]]
    if not series:
        return [*out, "<p class='muted'>No business records were replayed (--business FILE)."
                "</p>"]  # fmt: skip
    pts = [p for s in series for p in s["points"]]
    lines = [(f"p{s['partition']}", [(p[0], p[1]) for p in s["points"]]) for s in series]
    end = max(p[0] for p in pts)
    bands = [  # every detector's episodes, to the end of the chart while still open
        (f["event_time_ms"], max(f["event_time_ms"], z["event_time_ms"] if z else end))
        for d in r["detectors"]
        for e in d["episodes"]
        for f, z in [(e["fired"], e["resolved"])]
        if f["event_time_ms"] is not None and (z is None or z["event_time_ms"] is not None)
    ]
    chart = svg_lines(f"{b['name']}: rolling {b['agg']} over business time (shaded: episodes)",
                      lines, {"business": b["name"]}, **_x_axis(pts), bands=bands)  # fmt: skip
    out.append(f"<div class='plots'>{chart}</div>")
    rows = [
        (s["partition"], _t(s["points"][-1][0]), fmt_num(s["points"][-1][1]), s["points"][-1][2])
        for s in series
    ]
    out.append(_table(["partition", "business time", "last value", "events in window"], rows))
    out.append(
        f"<p class='muted'>{b['records']} business records replayed; each episode row above "
        "shows the metric over the window before the episode opened and during it.</p>"
    )
    return out


def render_report(r: dict[str, Any]) -> str:
    """The HTML page of report ``r`` (the JSON twin)."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>driftline report · {esc(r['pipeline'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>driftline report · pipeline <span id='pipeline'>{esc(r['pipeline'])}</span></h1>",
        f"<div class='muted'>{_source_line(r['source'])} · generated {_t(r['generated_at_ms'])}"
        "</div>",
        "<nav class='muted'><a href='#summary'>summary</a> · <a href='#episodes'>episodes</a> · "
        "<a href='#detectors'>detectors</a> · <a href='#model'>model metrics</a>"
        + (" · <a href='#business'>business</a>" if r.get("business") else "")
        + "</nav>",
        *_summary(r),
        *_episodes(r),
        *_detectors(r),
        *_model_metrics(r),
        *_business(r),
        "</body></html>",
    ]
    return "\n".join(parts)
