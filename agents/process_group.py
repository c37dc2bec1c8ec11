"""``driftline worker --processes N``: N worker processes on one machine under one supervisor.

One Python process runs the hot path on one core (numpy releases the GIL only in parts), so a
machine's other cores are used the way Kafka scales everything else: more members of the
pipeline's consumer group. The supervisor starts N ordinary ``driftline worker`` processes,
each its own group member with its own transactional id (``<worker-id>-<i>``) and web server
(port ``web_port + 1 + i``), and serves on ``web_port`` itself:

* ``/metrics``: every process's metrics in one page, each sample labelled ``process="<i>"``
  (`driftline.agents.merged_metrics`), plus ``driftline_process_up``;
* ``/healthz``: 200 when every process answers its own ``/healthz`` with 200, else 503;
* ``/``: the processes, their pids and their own pages' addresses.

Faults: a process that dies (killed, out of memory) is started again with the same id, so it
fences its predecessor's transaction and resumes from the committed state, as a restarted
worker does. More than `RESTART_LIMIT` restarts within `RESTART_WINDOW_S`, or a process that
exits with the configuration-error status, stops every process and ends the supervisor with
that status and a line saying which process failed. SIGTERM/SIGINT stop every process (each
has `STOP_TIMEOUT_S` to finish its batch and commit, then is killed). A process learns the
supervisor died (SIGKILL) through ``PR_SET_PDEATHSIG`` and stops too.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from driftline.agents.merged_metrics import merge_expositions
from driftline.errors import UsageError

__all__ = [
    "EXIT_CONFIG",
    "MAX_PROCESSES",
    "PARENT_PID_ENV",
    "ProcessGroup",
    "ProcessPlan",
    "die_with_parent",
    "parse_processes",
]

log = logging.getLogger(__name__)

MAX_PROCESSES = 64
#: A process restarted more often than this within `RESTART_WINDOW_S` stops the group.
RESTART_LIMIT = 3
RESTART_WINDOW_S = 600.0
#: How long a process has to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0
#: Bound on reading one process's page for the merged ``/metrics`` and ``/healthz``.
SCRAPE_TIMEOUT_S = 2.0
#: A process exiting with this status had a configuration error: restarting cannot help.
EXIT_CONFIG = 2
#: Set in each process's environment: the supervisor's pid (see `die_with_parent`).
PARENT_PID_ENV = "DRIFTLINE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def parse_processes(text: str) -> int:
    """``--processes``: a count from 1 to `MAX_PROCESSES`, or ``auto`` (this machine's cores).

    Examples
    --------
    >>> parse_processes("2"), parse_processes("auto") == (os.cpu_count() or 1)
    (2, True)
    >>> parse_processes("0")
    Traceback (most recent call last):
    ...
    driftline.errors.UsageError: --processes: got '0'; expected a count from 1 to 64, or auto
    """
    if text.strip() == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_PROCESSES))
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PROCESSES:
        raise UsageError(
            f"--processes: got {text!r}; expected a count from 1 to {MAX_PROCESSES}, or auto"
        )
    return n


@dataclass(frozen=True)
class ProcessPlan:
    """Who the N processes are: ids, ports and the supervisor's own address.

    Examples
    --------
    >>> plan = ProcessPlan(count=2, web_host="127.0.0.1", web_port=6066, worker_id="w")
    >>> [(plan.worker_id_of(i), plan.port_of(i)) for i in range(plan.count)]
    [('w-0', 6067), ('w-1', 6068)]
    >>> ProcessPlan(count=2, web_host="127.0.0.1", web_port=65534, worker_id="w")
    Traceback (most recent call last):
    ...
    driftline.errors.UsageError: --processes 2 needs ports 65535-65536 after --web-port 65534; \
give a lower --web-port
    """

    count: int
    web_host: str
    web_port: int
    worker_id: str

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PROCESSES:
            raise UsageError(f"--processes: got {self.count}; expected 1 to {MAX_PROCESSES}")
        last = self.port_of(self.count - 1)
        if last > 65535:
            raise UsageError(
                f"--processes {self.count} needs ports {self.port_of(0)}-{last} after "
                f"--web-port {self.web_port}; give a lower --web-port"
            )

    def port_of(self, i: int) -> int:
        """Process ``i``'s web port: the ones after the supervisor's."""
        return self.web_port + 1 + i

    def worker_id_of(self, i: int) -> str:
        """Process ``i``'s worker id (its transactional id is made from it): stable across
        restarts, so a restarted process fences the one it replaces."""
        return f"{self.worker_id}-{i}"

    def url_of(self, i: int, path: str) -> str:
        host = f"[{self.web_host}]" if ":" in self.web_host else self.web_host
        return f"http://{host}:{self.port_of(i)}{path}"


def die_with_parent() -> None:
    """In a process started by the supervisor: be sent SIGTERM when the supervisor dies, even
    by SIGKILL (Linux ``PR_SET_PDEATHSIG``), so no worker outlives it unwatched. Does nothing
    in a worker started any other way."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM is all there is
        return
    if str(os.getppid()) != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Member:
    index: int
    proc: subprocess.Popen[bytes]
    started: float


class ProcessGroup:
    """Starts, watches and stops the processes of a `ProcessPlan`.

    ``argv_of(i)`` is process ``i``'s command line; ``env`` the environment every process gets
    (the Kafka settings travel in it, never on a command line).
    """

    def __init__(
        self,
        plan: ProcessPlan,
        argv_of: Callable[[int], Sequence[str]],
        env: Mapping[str, str],
        *,
        restart_limit: int = RESTART_LIMIT,
        restart_window_s: float = RESTART_WINDOW_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.plan = plan
        self._argv_of = argv_of
        self._env = {**env, PARENT_PID_ENV: str(os.getpid())}
        self._restart_limit = restart_limit
        self._restart_window_s = restart_window_s
        self._stop_timeout_s = stop_timeout_s
        self._members: dict[int, _Member] = {}
        self._restarts: deque[float] = deque()
        self._stop = threading.Event()
        self._signal: int | None = None
        self._lock = threading.Lock()

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, i: int) -> None:
        proc = subprocess.Popen(list(self._argv_of(i)), env=self._env)
        with self._lock:
            self._members[i] = _Member(i, proc, time.monotonic())
        log.info("worker process %d started (pid %d, worker id %s, web port %d)",
                 i, proc.pid, self.plan.worker_id_of(i), self.plan.port_of(i))  # fmt: skip

    def pids(self) -> dict[int, int]:
        with self._lock:
            return {i: m.proc.pid for i, m in self._members.items()}

    def request_stop(self, signum: int | None = None) -> None:
        """Stop every process (from a signal handler too: it only sets a flag)."""
        self._signal = signum
        self._stop.set()

    def run(self, poll_s: float = 0.2) -> int:
        """Start every process, restart the ones that die, and return the group's exit status
        once stopped (0, 130 after SIGINT) or failed (the failed process's status, at least 1)."""
        for i in range(self.plan.count):
            self._spawn(i)
        status = 0
        try:
            while not self._stop.wait(poll_s):
                failed = self._watch()
                if failed is not None:
                    status = failed
                    break
        finally:
            self._stop_all()
        if status == 0 and self._signal == signal.SIGINT:
            return 130
        return status

    def _watch(self) -> int | None:
        """Restart dead processes; the exit status to end with when restarting cannot help."""
        with self._lock:
            dead = [m for m in self._members.values() if m.proc.poll() is not None]
        for m in dead:
            code = m.proc.returncode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if code == EXIT_CONFIG:
                log.error("worker process %d %s (a configuration error); stopping all %d "
                          "processes", m.index, how, self.plan.count)  # fmt: skip
                return EXIT_CONFIG
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > self._restart_window_s:
                self._restarts.popleft()
            if len(self._restarts) >= self._restart_limit:
                log.error(
                    "worker process %d %s, after %d restarts in the last %.0f s; stopping all "
                    "%d processes: see the lines above for why they fail",
                    m.index, how, len(self._restarts), self._restart_window_s, self.plan.count,
                )  # fmt: skip
                return max(code, 1)
            self._restarts.append(now)
            log.warning("worker process %d (pid %d) %s; starting it again (restart %d of at "
                        "most %d in %.0f s)", m.index, m.proc.pid, how, len(self._restarts),
                        self._restart_limit, self._restart_window_s)  # fmt: skip
            self._spawn(m.index)
        return None

    def _stop_all(self) -> None:
        with self._lock:
            members = list(self._members.values())
        for m in members:
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        for m in members:
            try:
                m.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process %d (pid %d) did not stop within %.0f s of SIGTERM; "
                          "killing it", m.index, m.proc.pid, self._stop_timeout_s)  # fmt: skip
                m.proc.kill()
                m.proc.wait(timeout=10)

    # -- the supervisor's pages -----------------------------------------------------------

    def _read(self, i: int, path: str) -> tuple[int, str | None]:
        try:
            with urllib.request.urlopen(self.plan.url_of(i, path), timeout=SCRAPE_TIMEOUT_S) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, None
        except (OSError, ValueError):
            return 0, None

    def read_all(self, path: str) -> list[tuple[int, str | None]]:
        """``(HTTP status, body)`` of ``path`` on every process (0, None: no answer), read in
        parallel, each bounded by `SCRAPE_TIMEOUT_S`."""
        with concurrent.futures.ThreadPoolExecutor(self.plan.count) as pool:
            return list(pool.map(lambda i: self._read(i, path), range(self.plan.count)))

    def metrics_page(self) -> bytes:
        pages = self.read_all("/metrics")
        return merge_expositions(
            [(str(i), body if status == 200 else None) for i, (status, body) in enumerate(pages)]
        )

    def health(self) -> tuple[bool, str]:
        answers = self.read_all("/healthz")
        lines = [
            f"process {i}: " + ("ok" if status == 200 else f"not ready (HTTP {status or 'none'})")
            for i, (status, _) in enumerate(answers)
        ]
        return all(status == 200 for status, _ in answers), "\n".join(lines) + "\n"

    def index_page(self) -> str:
        pids = self.pids()
        rows = [
            f"process {i}: pid {pids.get(i, '-')}, worker id {self.plan.worker_id_of(i)}, "
            f"{self.plan.url_of(i, '/status')}"
            for i in range(self.plan.count)
        ]
        return f"driftline worker, {self.plan.count} processes\n" + "\n".join(rows) + "\n"

    def serve(self) -> ThreadingHTTPServer:
        """Serve the supervisor's pages on ``web_host:web_port`` in a daemon thread."""
        group = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, group.metrics_page(), "text/plain; version=0.0.4")
                elif path == "/healthz":
                    ok, text = group.health()
                    self._reply(200 if ok else 503, text.encode(), "text/plain")
                elif path == "/":
                    self._reply(200, group.index_page().encode(), "text/plain")
                else:
                    self._reply(404, b"not found: /metrics, /healthz, /\n", "text/plain")

            def _reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(HTTPStatus(status))
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not news

        server = ThreadingHTTPServer((self.plan.web_host, self.plan.web_port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="supervisor-web", daemon=True).start()
        return server
