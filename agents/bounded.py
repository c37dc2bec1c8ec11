"""Bounded waits on calls that can block for good inside the Kafka client library.

Some librdkafka calls wait on a condition that may never be signalled, whatever timeout they
are given: ``send_offsets_to_transaction`` after a broker restart is one (it waits for a
coordinator request that is never retried; librdkafka issue 5456). A thread stuck in C cannot
be cancelled, so such calls run on daemon threads and the caller waits for them with a bound:
past it the caller gives the call (and the client it used) up instead of hanging, and the
process can still exit. ``concurrent.futures.ThreadPoolExecutor`` is not used for this: it joins
its threads at interpreter exit, so one stuck call would keep the process alive forever.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from driftline.errors import DriftlineError

T = TypeVar("T")

__all__ = ["DaemonExecutor", "Stalled", "call_bounded", "wait_for"]


class Stalled(DriftlineError):
    """A call did not return within its bound (it may still be running on its thread)."""

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"{what} did not return within {timeout_s:.0f} s")
        self.what = what
        self.timeout_s = timeout_s


def _run(fut: Future[T], fn: Callable[..., T], args: tuple[Any, ...]) -> None:
    if not fut.set_running_or_notify_cancel():
        return
    try:
        fut.set_result(fn(*args))
    except BaseException as e:  # handed to whoever waits on the future
        fut.set_exception(e)


class DaemonExecutor:
    """Runs submitted calls one after another on one daemon thread (started on first use).

    Like a one-thread ``ThreadPoolExecutor``, except that a call stuck for good never keeps the
    process from exiting; a caller that gives up on a stuck call makes a new executor.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]
                                       | None] = queue.SimpleQueue()  # fmt: skip
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            _run(*item)

    def shutdown(self, timeout_s: float) -> bool:
        """Let the queued calls finish, waiting up to ``timeout_s``; whether they did."""
        with self._lock:
            thread = self._thread
            self._queue.put(None)
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()


def wait_for(fut: Future[T], timeout_s: float, what: str) -> T:
    """``fut``'s result (or its exception) within ``timeout_s``, else `Stalled`."""
    try:
        return fut.result(timeout=max(timeout_s, 0.0))
    except FutureTimeout:
        raise Stalled(what, timeout_s) from None


def call_bounded(what: str, timeout_s: float, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on its own daemon thread; its result within ``timeout_s``, else `Stalled`
    (the call is left running)."""
    fut: Future[T] = Future()
    threading.Thread(target=_run, args=(fut, fn, args), name=f"driftline-{what}",
                     daemon=True).start()  # fmt: skip
    return wait_for(fut, timeout_s, what)


def deadline_left(deadline: float) -> float:
    """Seconds until the ``time.monotonic()`` ``deadline`` (0 once past)."""
    return max(0.0, deadline - time.monotonic())
