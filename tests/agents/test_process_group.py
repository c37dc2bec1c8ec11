"""`ProcessGroup`: start, restart, give up, stop, and the supervisor's pages.

The members here are small Python processes that serve /metrics and /healthz on their port
(the supervisor treats every member the same way; tests/integration/test_processes.py runs real
workers on a real broker)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from driftline.agents.process_group import (
    EXIT_CONFIG,
    PARENT_PID_ENV,
    ProcessGroup,
    ProcessPlan,
    parse_processes,
)
from driftline.agents.scrape import parse_samples, sample_sum
from driftline.errors import UsageError
from tests.kafka_helpers import free_ports

MEMBER = r"""
import http.server, os, signal, sys, threading, time
port, behaviour, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
starts = open(marker, "a+"); starts.write("x"); starts.close()
count = len(open(marker).read())
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        metrics = self.path == "/metrics"
        body = (f'# TYPE starts gauge\nstarts {count}\n' if metrics else "ok\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
threading.Thread(target=s.serve_forever, daemon=True).start()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
if behaviour.startswith("exit"):  # exit<code> once it has started <n> times: exit3
    time.sleep(0.3); sys.exit(int(behaviour[4:]))
if behaviour == "die-first" and count == 1:
    time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL)
if behaviour == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    time.sleep(0.05)
"""


def make_group(tmp_path: Path, behaviour: str, n: int = 2, **kw: float) -> ProcessGroup:
    base = free_ports(n + 1)
    plan = ProcessPlan(count=n, web_host="127.0.0.1", web_port=base, worker_id="w")
    script = tmp_path / "member.py"
    script.write_text(MEMBER)

    def argv_of(i: int) -> list[str]:
        return [sys.executable, str(script), str(plan.port_of(i)), behaviour,
                str(tmp_path / f"starts-{i}")]  # fmt: skip

    return ProcessGroup(plan, argv_of, dict(os.environ), **kw)  # type: ignore[arg-type]


def run_in_thread(group: ProcessGroup) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(group.run(poll_s=0.05)), daemon=True)
    t.start()
    return t, result


def starts(tmp_path: Path, i: int) -> int:
    p = tmp_path / f"starts-{i}"
    return len(p.read_text()) if p.exists() else 0


def wait_for(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("text", "count"), [("1", 1), ("2", 2), ("64", 64), ("auto", max(1, os.cpu_count() or 1))]
)
def test_parse_processes(text: str, count: int) -> None:
    assert parse_processes(text) == count


@pytest.mark.parametrize("text", ["0", "-1", "65", "two", "", "1.5"])
def test_parse_processes_refuses(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--processes: got .*expected a count from 1 to 64"):
        parse_processes(text)


def test_plan_ports_and_ids() -> None:
    plan = ProcessPlan(count=3, web_host="::1", web_port=7000, worker_id="host")
    assert [plan.port_of(i) for i in range(3)] == [7001, 7002, 7003]
    assert [plan.worker_id_of(i) for i in range(3)] == ["host-0", "host-1", "host-2"]
    assert plan.url_of(2, "/metrics") == "http://[::1]:7003/metrics"


def test_members_get_the_supervisor_pid(tmp_path: Path) -> None:
    group = make_group(tmp_path, "run")
    assert group._env[PARENT_PID_ENV] == str(os.getpid())


def test_pages_merge_every_member_and_stop_ends_them(tmp_path: Path) -> None:
    group = make_group(tmp_path, "run")
    server = group.serve()
    t, result = run_in_thread(group)
    try:
        url = f"http://127.0.0.1:{group.plan.web_port}"
        wait_for(lambda: group.health()[0])
        samples = parse_samples(urllib.request.urlopen(url + "/metrics", timeout=5).read().decode())
        assert sample_sum(samples, "starts", {"process": "0"}) == 1.0
        assert sample_sum(samples, "starts", {"process": "1"}) == 1.0
        assert sample_sum(samples, "driftline_process_up") == 2.0
        assert urllib.request.urlopen(url + "/healthz", timeout=5).read() == (
            b"process 0: ok\nprocess 1: ok\n"
        )
        index = urllib.request.urlopen(url + "/", timeout=5).read().decode()
        assert "2 processes" in index and "worker id w-1" in index
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/nope", timeout=5)
        assert e.value.code == 404
        pids = list(group.pids().values())
    finally:
        group.request_stop(signal.SIGTERM)
        t.join(30)
        server.shutdown()
    assert result == [0]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_healthz_is_503_while_a_member_does_not_answer(tmp_path: Path) -> None:
    group = make_group(tmp_path, "run")  # not started: nobody answers
    ok, text = group.health()
    assert not ok
    assert text == "process 0: not ready (HTTP none)\nprocess 1: not ready (HTTP none)\n"
    samples = parse_samples(group.metrics_page().decode())
    assert sample_sum(samples, "driftline_process_up") == 0.0


def test_a_killed_member_is_started_again(tmp_path: Path) -> None:
    group = make_group(tmp_path, "die-first")
    t, result = run_in_thread(group)
    try:
        wait_for(lambda: starts(tmp_path, 0) == 2 and starts(tmp_path, 1) == 2)
        time.sleep(0.5)
        assert t.is_alive()
    finally:
        group.request_stop(signal.SIGINT)
        t.join(30)
    assert result == [130]  # stopped by SIGINT
    assert starts(tmp_path, 0) == 2


def test_restarts_beyond_the_limit_stop_the_group(tmp_path: Path) -> None:
    group = make_group(tmp_path, "exit3", restart_limit=2, restart_window_s=60)
    t, result = run_in_thread(group)
    t.join(60)
    assert result == [3]
    assert starts(tmp_path, 0) + starts(tmp_path, 1) == 4  # two first starts, two restarts


def test_a_configuration_error_is_not_restarted(tmp_path: Path) -> None:
    group = make_group(tmp_path, f"exit{EXIT_CONFIG}")
    t, result = run_in_thread(group)
    t.join(60)
    assert result == [EXIT_CONFIG]
    assert starts(tmp_path, 0) == 1


def test_a_member_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    group = make_group(tmp_path, "stubborn", n=1, stop_timeout_s=1.0)
    t, result = run_in_thread(group)
    wait_for(lambda: group.health()[0])
    began = time.monotonic()
    group.request_stop(signal.SIGTERM)
    t.join(30)
    assert result == [0]
    assert 0.9 <= time.monotonic() - began < 10
