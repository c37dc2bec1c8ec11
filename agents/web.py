"""The worker's web surface: driftline's pages only, on the address the spec names.

faust hosts the pages (``/metrics``, ``/healthz``, ``/status``, ``/status.json``), but on its
own it binds every interface (its ``web_bind`` setting, default ``0.0.0.0``; ``web_host`` only
names the URL it advertises) and serves its built-in views beside ours: ``/router/`` (which
worker holds a key, the topics' partitions), ``/table/`` (table contents), ``/graph/``, a
statistics index and ``/performance/``, and with all of those off still ``/`` (a production
index). :func:`web_settings` binds exactly ``worker.web_host`` and turns each built-in view off;
:func:`serve_only_driftline_pages` drops the index too.
"""

from __future__ import annotations

from typing import Any

#: faust's settings for its built-in views, all off.
FAUST_VIEWS_OFF = {
    "web_router_enabled": False,
    "web_tables_enabled": False,
    "web_graph_enabled": False,
    "web_stats_enabled": False,
    "web_metrics_enabled": False,
}


def web_settings(host: str, port: int) -> dict[str, Any]:
    """``faust.App`` settings for a web server on ``host:port`` only, with no faust views.

    >>> s = web_settings("127.0.0.1", 6066)
    >>> s["web_bind"], s["web_host"], s["web_port"], s["web_router_enabled"]
    ('127.0.0.1', '127.0.0.1', 6066, False)
    """
    return {
        "web_enabled": True,
        "web_bind": host,  # the address the server listens on
        "web_host": host,  # the address faust advertises (its canonical URL)
        "web_port": port,
        "web_in_thread": False,
        **FAUST_VIEWS_OFF,
    }


def serve_only_driftline_pages(app: Any) -> None:
    """Keep faust's blueprints from being mounted when its web server starts.

    With every built-in view off (:data:`FAUST_VIEWS_OFF`) faust still mounts its production
    index at ``/``; no setting turns it off, so the blueprint list is emptied. Call before the
    worker starts (blueprints are applied when the server is initialised).
    """
    app.web.blueprints._enabled.clear()
