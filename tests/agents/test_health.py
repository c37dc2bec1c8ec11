"""TransactionalRunner.health(): the states /healthz reports, on a real runner thread.

The runner runs its loop against a port where no broker listens (at_least_once, so starting
needs no transaction coordinator): the thread is alive and polling, and the test gives it the
partition, position and lag a rebalance and the loop would (the /healthz test on a real broker
is tests/integration/test_topics_and_health.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from driftline.agents.metrics import WorkerMetrics
from driftline.agents.pipeline import PartitionPipeline
from driftline.agents.runner import TransactionalRunner
from driftline.localkafka import free_port
from driftline.spec import load_spec
from tests.specs import minimal_spec

SPEC = minimal_spec(
    "health-test",
    "health-events",
    """
[worker]
processing_guarantee = "at_least_once"
batch_timeout_ms = 50
""",
)
TOPIC = "health-events"


def make_runner(tmp_path: Path, bootstrap: str | None = None) -> TransactionalRunner:
    """A runner of SPEC (its input topic does not exist: no partition is ever assigned);
    ``bootstrap`` None: a port nobody listens on (never started then)."""
    path = tmp_path / "pipeline.toml"
    path.write_text(SPEC)
    spec = load_spec(path)
    bootstrap = bootstrap or f"127.0.0.1:{free_port()}"
    return TransactionalRunner(spec, bootstrap, WorkerMetrics(spec.name), None, "none", "w-health")


@pytest.fixture
def running(tmp_path: Path, kafka_bootstrap: str) -> Iterator[TransactionalRunner]:
    # a real broker: at_least_once starts its state producer's transactions at start
    runner = make_runner(tmp_path, kafka_bootstrap)
    runner.start()
    assert runner.ready.wait(30)
    try:
        yield runner
    finally:
        runner.stop()
        runner.join(30)


def own(runner: TransactionalRunner, p: int, next_offset: int) -> None:
    """What an assignment and a processed batch leave behind for partition ``p``."""
    runner.pipelines[p] = PartitionPipeline(runner.spec, p, None, "none")
    runner.positions[p] = {TOPIC: next_offset}


def test_not_started_is_not_running(tmp_path: Path) -> None:
    h = make_runner(tmp_path).health()
    assert (h["healthy"], h["status"]) == (False, "not_running")
    assert h["reason"] == "the worker loop is not running"
    assert h["pipeline"] == "health-test" and h["partitions"] == []


def test_running_without_partitions_is_not_healthy(running: TransactionalRunner) -> None:
    assert running.is_alive()
    h = running.health()
    assert (h["healthy"], h["status"]) == (False, "no_partitions")
    assert h["reason"] == f"no partition of {TOPIC} is assigned to it"


def test_restoring_an_assignment_is_not_healthy_yet(running: TransactionalRunner) -> None:
    """Partitions are restored one by one inside the assignment: until all are, /healthz must
    not say ok with only the first of them (seen: [0] of [0, 1, 2])."""
    own(running, 0, 10)
    pending = SimpleNamespace(done=threading.Event())  # a restore that has not finished
    running._restores = {1: pending, 2: pending}  # type: ignore[dict-item]
    h = running.health()
    assert (h["healthy"], h["status"], h["partitions"]) == (False, "restoring", [0])
    assert h["reason"] == f"restoring the state of partitions [1, 2] of {TOPIC}"
    running._restores = {}
    assert running.health()["status"] == "ok"
    assert running.is_alive()


def test_running_with_partitions_is_healthy(running: TransactionalRunner) -> None:
    own(running, 0, 10)
    own(running, 1, 7)
    h = running.health()
    assert (h["healthy"], h["status"], h["partitions"]) == (True, "ok", [0, 1])
    assert h["pending_records"] == 0


def test_stalled_when_records_wait_and_positions_do_not_move(running: TransactionalRunner) -> None:
    own(running, 0, 10)
    running.metrics.set_lag(TOPIC, 0, 5)
    t0 = 1_000.0
    assert running.health(60.0, now=t0)["status"] == "ok"
    assert running.health(60.0, now=t0 + 59.0)["status"] == "ok"  # within the bound
    h = running.health(60.0, now=t0 + 61.0)
    assert (h["healthy"], h["status"], h["pending_records"]) == (False, "stalled", 5)
    assert h["reason"] == f"5 records of {TOPIC} are waiting but no batch was processed for 61 s"
    assert h["seconds_since_progress"] == 61.0
    # a batch is processed: progress again
    running.positions[0][TOPIC] = 15
    assert running.health(60.0, now=t0 + 62.0)["status"] == "ok"
    assert running.health(60.0, now=t0 + 121.0)["status"] == "ok"  # 59 s since progress
    assert running.health(60.0, now=t0 + 123.0)["status"] == "stalled"


def test_idle_without_pending_records_is_not_stalled(running: TransactionalRunner) -> None:
    own(running, 0, 10)
    running.metrics.set_lag(TOPIC, 0, 0)
    running.metrics.set_lag(TOPIC, 3, 40)  # not this worker's partition
    running.metrics.set_lag("other-topic", 0, 40)
    assert running.health(60.0, now=0.0)["status"] == "ok"
    h = running.health(60.0, now=3_600.0)
    assert (h["status"], h["pending_records"]) == ("ok", 0)


def test_failed_and_stopping_are_not_running(running: TransactionalRunner) -> None:
    own(running, 0, 10)
    running.error = RuntimeError("transaction aborted")
    h = running.health()
    assert (h["healthy"], h["status"]) == (False, "not_running")
    assert h["reason"] == "the worker loop failed: transaction aborted"
    running.error = None
    running.stop()
    h = running.health()
    assert (h["status"], h["reason"]) == ("not_running", "the worker loop is stopping")
    running.join(30)
    assert not running.is_alive()
    assert running.health()["status"] == "not_running"
