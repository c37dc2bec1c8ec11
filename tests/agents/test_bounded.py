"""Bounded waits: a call that never returns costs its bound, never the caller or the exit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from driftline.agents.bounded import DaemonExecutor, Stalled, call_bounded, wait_for

FOREVER = threading.Event()  # never set: waiting on it is a call that never returns


@pytest.mark.parametrize(
    ("fn", "timeout_s", "outcome"),
    [
        (lambda: 42, 1.0, 42),
        (lambda: None, 1.0, None),
        (lambda: time.sleep(0.05) or "late but in time", 2.0, "late but in time"),
        (lambda: FOREVER.wait(), 0.3, Stalled),
        (lambda: FOREVER.wait(), 0.0, Stalled),
        (lambda: 1 / 0, 1.0, ZeroDivisionError),
    ],
)
def test_call_bounded(fn, timeout_s: float, outcome: object) -> None:
    t0 = time.monotonic()
    if isinstance(outcome, type) and issubclass(outcome, BaseException):
        with pytest.raises(outcome):
            call_bounded("the call", timeout_s, fn)
    else:
        assert call_bounded("the call", timeout_s, fn) == outcome
    assert time.monotonic() - t0 < timeout_s + 1.0


def test_stalled_says_what_and_how_long() -> None:
    with pytest.raises(Stalled) as e:
        call_bounded("send_offsets_to_transaction", 0.2, FOREVER.wait)
    assert str(e.value) == "send_offsets_to_transaction did not return within 0 s"
    assert (e.value.what, e.value.timeout_s) == ("send_offsets_to_transaction", 0.2)


def test_executor_runs_calls_in_order_and_reports_each() -> None:
    ex = DaemonExecutor("test-executor")
    done: list[int] = []
    futs = [ex.submit(done.append, i) for i in range(5)]
    failing = ex.submit(lambda: 1 / 0)
    assert [wait_for(f, 5, "append") for f in futs] == [None] * 5
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(ZeroDivisionError):
        wait_for(failing, 5, "divide")
    assert ex.shutdown(5) is True


def test_a_stuck_call_bounds_the_wait_and_the_shutdown() -> None:
    ex = DaemonExecutor("test-stuck")
    stuck = ex.submit(FOREVER.wait)
    behind = ex.submit(lambda: "never reached")
    with pytest.raises(Stalled):
        wait_for(stuck, 0.2, "the stuck call")
    t0 = time.monotonic()
    assert ex.shutdown(0.3) is False  # gave up on it
    assert time.monotonic() - t0 < 1.5
    assert not behind.done()
    assert DaemonExecutor("unused").shutdown(0.1) is True


@pytest.mark.parametrize("kind", ["executor", "call"])
def test_a_stuck_call_does_not_keep_the_process_alive(kind: str) -> None:
    """concurrent.futures joins its threads at exit (one stuck call: no exit ever); these not."""
    script = f"""
import threading
from driftline.agents.bounded import DaemonExecutor, Stalled, call_bounded, wait_for
never = threading.Event()
if {kind!r} == "executor":
    fut = DaemonExecutor("stuck").submit(never.wait)
    try:
        wait_for(fut, 0.2, "stuck")
    except Stalled:
        pass
else:
    try:
        call_bounded("stuck", 0.2, never.wait)
    except Stalled:
        pass
print("done")
"""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout.strip()) == (0, "done"), r.stderr
    assert time.monotonic() - t0 < 15
