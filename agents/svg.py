"""SVG charts drawn in Python, for pages that must work offline (the worker's ``/status``, the
``driftline report`` file): no scripts, no fonts or styles fetched; every text is escaped.

Each chart is one ``<svg class="plot ...">`` of `W` x `H` pixels; the page's CSS gives the
classes their colours (``rect.ref``/``rect.cur`` bars, ``.axis``, ``.tick``, ``.hline``...).
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Sequence
from typing import Any

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
W, H = 460, 200
ML, MR, MT, MB = 52, 12, 40, 30


def fmt_num(x: float | None) -> str:
    """A number in at most 4 significant digits (``–`` for None).

    >>> fmt_num(None), fmt_num(0), fmt_num(0.123456), fmt_num(1234567.0), fmt_num(1e-5)
    ('–', '0', '0.1235', '1.23e+06', '1.00e-05')
    """
    if x is None:
        return "–"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e5 or a < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4g}"


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "–"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def esc(x: Any) -> str:
    """``x`` as HTML text or attribute value.

    >>> esc('<script>alert("x")</script>')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
    """
    return html.escape(str(x), quote=True)


def frame(title: str, cls: str, data_attrs: dict[str, Any], body: list[str]) -> str:
    """The ``<svg>`` around ``body`` with its title; ``data_attrs`` become ``data-*``."""
    attrs = " ".join(f'data-{k}="{esc(v)}"' for k, v in data_attrs.items())
    return (
        f'<svg class="plot {cls}" {attrs} xmlns="http://www.w3.org/2000/svg" '
        f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">'
        f"<title>{esc(title)}</title>"
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>'
        f'<text x="{ML}" y="16" class="ptitle">{esc(title)}</text>' + "".join(body) + "</svg>"
    )


def axes(x0: str, x1: str, y0: str, y1: str) -> list[str]:
    """Both axes with their end labels."""
    bx, by = ML, H - MB
    return [
        f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{by}" class="axis"/>',
        f'<line x1="{ML}" y1="{by}" x2="{W - MR}" y2="{by}" class="axis"/>',
        f'<text x="{bx}" y="{by + 16}" class="tick">{esc(x0)}</text>',
        f'<text x="{W - MR}" y="{by + 16}" class="tick" text-anchor="end">{esc(x1)}</text>',
        f'<text x="{ML - 4}" y="{by}" class="tick" text-anchor="end">{esc(y0)}</text>',
        f'<text x="{ML - 4}" y="{MT + 8}" class="tick" text-anchor="end">{esc(y1)}</text>',
    ]


def _legend(entries: Sequence[tuple[str, str]], step: int = 120) -> str:
    """Coloured squares with labels (``(css class, label)``) above the plot."""
    return "".join(
        f'<rect class="{cls}" x="{ML + step * i}" y="23" width="10" height="10"/>'
        f'<text x="{ML + step * i + 14}" y="32" class="tick">{esc(label)}</text>'
        for i, (cls, label) in enumerate(entries)
    )


def svg_distribution(title: str, dist: dict[str, Any], attrs: dict[str, Any]) -> str:
    """Reference (grey bars) against current (orange bars) histogram, as fractions per bin."""
    edges, ref, cur = dist["edges"], dist["reference"], dist["current"]
    ymax = max([*ref, *cur, 1e-12])
    pw, ph = W - ML - MR, H - MT - MB
    n = len(ref)
    bw = pw / n
    body = axes(fmt_num(edges[0]), fmt_num(edges[-1]), "0", f"{ymax:.2f}")
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        x = ML + i * bw
        for v, cls, off in ((r, "ref", 0.0), (c, "cur", bw * 0.45)):
            h = ph * v / ymax
            body.append(
                f'<rect class="{cls}" x="{x + off + 0.5:.1f}" y="{MT + ph - h:.1f}" '
                f'width="{bw * 0.5:.1f}" height="{h:.1f}"/>'
            )
    body.append(
        _legend(
            [
                ("ref", f"reference ({dist['n_reference']})"),
                ("cur", f"current ({dist['n_current']})"),
            ]
        )
    )
    return frame(title, "dist", attrs, body)


def svg_categories(title: str, cats: Sequence[dict[str, Any]], attrs: dict[str, Any]) -> str:
    """Reference against current share of each category (``name``, ``reference``, ``current``),
    side by side, the category under its pair of bars."""
    ymax = max([c["reference"] for c in cats] + [c["current"] for c in cats] + [1e-12])
    pw, ph = W - ML - MR, H - MT - MB
    bw = pw / max(len(cats), 1)
    body = axes("", "", "0", f"{ymax:.2f}")
    for i, c in enumerate(cats):
        x = ML + i * bw
        for v, cls, off in ((c["reference"], "ref", 0.0), (c["current"], "cur", bw * 0.45)):
            h = ph * v / ymax
            body.append(
                f'<rect class="{cls}" x="{x + off + 0.5:.1f}" y="{MT + ph - h:.1f}" '
                f'width="{bw * 0.5:.1f}" height="{h:.1f}"/>'
            )
        name = str(c["name"])
        short = name if len(name) <= 10 else name[:9] + "…"
        body.append(
            f'<text x="{x + bw / 2:.1f}" y="{H - MB + 14}" class="tick cat" '
            f'text-anchor="middle">{esc(short)}<title>{esc(name)}</title></text>'
        )
    body.append(_legend([("ref", "reference"), ("cur", "current")]))
    return frame(title, "cats", attrs, body)


def svg_lines(
    title: str,
    lines: Sequence[tuple[str, Sequence[tuple[float, float | None]]]],
    attrs: dict[str, Any],
    *,
    x_labels: tuple[str, str] = ("", ""),
    hline: float | None = None,
    bands: Sequence[tuple[float, float]] = (),
    log_y: bool = False,
    x_range: tuple[float, float] | None = None,
    marks: Sequence[tuple[float, float]] = (),
    dashed: Collection[str] = (),
) -> str:
    """Lines over a numeric x (e.g. event time), one per ``(label, [(x, y)])``; ``bands`` are
    x ranges shaded red (drift episodes), ``hline`` a dashed threshold, ``x_labels`` the axis'
    end labels, ``x_range`` the x axis' span (default: the points'), ``marks`` points circled
    red (e.g. readings while firing), ``dashed`` labels of lines drawn grey and dashed (e.g. a
    confidence band's bounds). ``log_y`` draws ``-log10(y)`` (p-values)."""

    def tr(v: float | None) -> float | None:
        if v is None or not math.isfinite(v):
            return None
        if log_y:
            return -math.log10(max(v, 1e-300))
        return v

    pts = [(x, tr(y)) for _, line in lines for x, y in line]
    pts = [(x, y) for x, y in pts if y is not None]
    pw, ph = W - ML - MR, H - MT - MB
    if not pts:
        return frame(
            title,
            "series",
            attrs,
            [*axes(*x_labels, "", ""), f'<text x="{ML + 10}" y="{MT + 40}">no readings</text>'],
        )
    x0, x1 = x_range or (min(x for x, _ in pts), max(x for x, _ in pts))
    span = max(x1 - x0, 1e-9)
    hl = tr(hline)
    vals = [y for _, y in pts] + ([hl] if hl is not None else [])
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = (lo - pad if lo < 0 or lo - pad >= 0 else 0.0), hi + pad

    def xy(x: float, y: float) -> tuple[float, float]:
        return ML + pw * (x - x0) / span, MT + ph * (1 - (y - lo) / (hi - lo))

    body = axes(*x_labels, fmt_num(lo), fmt_num(hi))
    for a, b in bands:
        xa = ML + pw * (min(max(a, x0), x1) - x0) / span
        xb = ML + pw * (min(max(b, x0), x1) - x0) / span
        body.append(
            f'<rect class="band" x="{xa:.1f}" y="{MT}" width="{max(xb - xa, 1.5):.1f}" '
            f'height="{ph}"/>'
        )
    if hl is not None:
        _, y = xy(x0, hl)
        body.append(f'<line x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" class="hline"/>')
    legend_x = ML
    for i, (label, line) in enumerate(lines):
        color = "#999" if label in dashed else PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="4 3"' if label in dashed else ""
        coords = [xy(x, y) for x, y in ((x, tr(v)) for x, v in line) if y is not None]
        if len(coords) == 1:  # a lone reading: a dot
            body.append(
                f'<circle class="dot" cx="{coords[0][0]:.1f}" cy="{coords[0][1]:.1f}" r="3" '
                f'fill="{color}" data-label="{esc(label)}"/>'
            )
        elif coords:
            p = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            body.append(
                f'<polyline class="line" points="{p}" fill="none" stroke="{color}" '
                f'stroke-width="1.6"{dash} data-label="{esc(label)}"/>'
            )
        if label:
            body.append(
                f'<text x="{legend_x}" y="32" class="tick" style="fill:{color}">'
                f"{esc(label)}</text>"
            )
            legend_x += 12 + 6 * len(label)
    body.extend(
        f'<circle class="firing" cx="{x:.1f}" cy="{y:.1f}" r="2.2"/>'
        for mx, my in marks
        if (ty := tr(my)) is not None
        for x, y in [xy(mx, ty)]
    )
    return frame(title, "series", attrs, body)
