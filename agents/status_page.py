"""The worker's status page: ``/status`` (HTML, inline SVG, no scripts), ``/status.json`` and
``driftline status``, in three parts:

- `agents.status_collect`: :class:`StatusCollector` gathers the runner's detectors, the metrics
  and the recent alerts into one JSON-ready snapshot (``/status.json``);
- `agents.status_render`: :func:`render_html` draws the snapshot as the page, plots in SVG;
- `agents.status_client`: :func:`fetch_status` and :func:`summarize`, the ``driftline status``
  command.

This module keeps the names the worker and the CLI import.
"""

from __future__ import annotations

from driftline.agents.status_client import fetch_status, summarize
from driftline.agents.status_collect import (
    HISTORY,
    StatusCollector,
    alert_line,
    distribution,
    registry_samples,
)
from driftline.agents.status_render import fmt_num, fmt_seconds, render_html

__all__ = [
    "HISTORY",
    "StatusCollector",
    "alert_line",
    "distribution",
    "fetch_status",
    "fmt_num",
    "fmt_seconds",
    "registry_samples",
    "render_html",
    "summarize",
]
