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

import errno
import socket
from typing import Any

from driftline.errors import SpecError

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


def check_listen(host: str, port: int) -> None:
    """A `SpecError` unless the web server could listen on ``host:port``: checked before the
    worker starts, so a host that is not this machine's or a port in use is one line naming
    the setting, not a traceback from the web server once everything else has started.

    >>> with socket.socket() as s:
    ...     s.bind(("127.0.0.1", 0))
    ...     s.listen()
    ...     check_listen("127.0.0.1", s.getsockname()[1])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: worker.web_port ...: in use on 127.0.0.1 (another worker ...
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise SpecError(
            f"worker.web_host {host!r}: no such address ({e.strerror}); give an address of "
            "this host (127.0.0.1: this host only)"
        ) from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise SpecError(
                    f"worker.web_port {port}: in use on {host} (another worker on this host?); "
                    "give each worker its own port (worker.web_port or --web-port)"
                ) from None
            raise SpecError(
                f"worker.web_host {host!r}: cannot listen there ({e.strerror}); give an "
                "address of this host (127.0.0.1: this host only)"
            ) from None
