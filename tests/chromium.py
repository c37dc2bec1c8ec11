"""Headless Chromium for the page tests (``/status``, ``driftline report``), and a proxy that
records every request it is asked to make (a self-contained page makes none)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is missing: apt-get install -y chromium (.ci/run does this)")


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-{uuid.uuid4().hex[:6]}"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise
    finally:
        try:  # chromium's helpers share its session: none may outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(profile, ignore_errors=True)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


#: Hosts Chromium itself calls whatever the page (clock, component updates, accounts): not the
#: page's requests.
BROWSER_HOSTS = frozenset({"clients2.google.com", "update.googleapis.com", "accounts.google.com"})


def page_requests(requests: list[str]) -> list[str]:
    """``requests`` (``recording_proxy``'s) without Chromium's own calls to `BROWSER_HOSTS`.

    >>> page_requests(["CONNECT update.googleapis.com:443", "GET http://cdn.example/x.js"])
    ['GET http://cdn.example/x.js']
    """
    out = []
    for r in requests:
        target = r.split(" ", 1)[1]
        host = target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if host not in BROWSER_HOSTS:
            out.append(r)
    return out


@contextmanager
def recording_proxy() -> Iterator[tuple[str, list[str]]]:
    """``(proxy address, requests)``: an HTTP proxy on loopback that answers every request
    (``CONNECT`` for https too) with 502 and appends ``"<method> <target>"`` to ``requests``.
    Give Chromium ``--proxy-server=<address>`` to see every request a page makes."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_error(502)

        do_GET = do_POST = do_HEAD = do_CONNECT = do_OPTIONS = _refuse

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
