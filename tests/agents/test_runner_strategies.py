"""The processing guarantee picks the runner's commit strategy once, with its producer."""

from __future__ import annotations

import tomllib

import pytest

from driftline.agents.commit import STRATEGIES, AtLeastOnceCommit, ExactlyOnceCommit
from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.runner import TransactionalRunner
from driftline.schemas import load_schema
from driftline.spec import parse_spec


def _runner(guarantee: str) -> TransactionalRunner:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["worker"]["processing_guarantee"] = guarantee
    spec = parse_spec(data)
    return TransactionalRunner(spec, "127.0.0.1:9", WorkerMetrics(spec.name), None, "none", "w1")


@pytest.mark.parametrize(
    ("guarantee", "cls"),
    [("exactly_once", ExactlyOnceCommit), ("at_least_once", AtLeastOnceCommit)],
)
def test_one_strategy_per_guarantee(guarantee: str, cls: type) -> None:
    runner = _runner(guarantee)
    try:
        assert type(runner.commit) is cls and runner.commit.guarantee == guarantee
        assert STRATEGIES[guarantee] is cls
        assert runner.exactly_once == (guarantee == "exactly_once")
        # the strategy works on the runner's own partitions (what /status and /healthz read)
        assert runner.commit.partitions.pipelines is runner.pipelines
        config = runner.commit.producer_config()
        if guarantee == "exactly_once":  # transactional: the worker id fences a predecessor
            assert config["transactional.id"] == f"{runner.spec.group_id}.w1"
            assert "enable.idempotence" not in config
        else:  # no transaction; failed deliveries reach the strategy
            assert "transactional.id" not in config
            assert config["enable.idempotence"] is True
            assert config["on_delivery"] == runner.commit._delivered
    finally:
        runner.commit.close()


def test_every_guarantee_the_spec_allows_has_a_strategy() -> None:
    worker = load_schema("spec")["properties"]["worker"]["properties"]
    assert set(STRATEGIES) == set(worker["processing_guarantee"]["enum"])


@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_at_least_once_recovery_waits_for_the_checkpoint_in_flight(outcome: str) -> None:
    """Partitions restored while a checkpoint's state transaction is still open would miss it,
    and its per-key records would outlive the restore: recover lets it end first."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    runner = _runner("at_least_once")
    commit = runner.commit
    assert isinstance(commit, AtLeastOnceCommit)
    ended: list[float] = []

    def checkpoint() -> list:
        time.sleep(0.3)
        ended.append(time.monotonic())
        if outcome == "failed":
            raise RuntimeError("the state transaction was aborted")
        return []

    with ThreadPoolExecutor(1) as pool:
        commit._checkpointing = pool.submit(checkpoint)
        commit._dirty.add(0)
        commit.recover("fatal", threading.Event())
        assert ended and time.monotonic() >= ended[0]  # returned only after it ended
    assert commit._checkpointing is None and not commit._dirty
    commit.close()
