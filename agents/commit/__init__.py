"""Commit strategies: how a worker makes each batch's outputs, state and offsets durable.

One class per ``[worker] processing_guarantee`` (like Kafka Streams' ``processing.guarantee``),
chosen once by :func:`commit_strategy`; the runner's consume -> process loop is the same for
both:

- ``exactly_once`` (:class:`~.exactly_once.ExactlyOnceCommit`): one Kafka transaction per batch
  with its outputs, the touched partitions' snapshots and the consumer offsets.
- ``at_least_once`` (:class:`~.at_least_once.AtLeastOnceCommit`): outputs sent at once; every
  ``commit_interval_ms`` snapshots carrying their offsets, acknowledged, then the offsets.
"""

from __future__ import annotations

from driftline.agents.commit.at_least_once import AtLeastOnceCommit
from driftline.agents.commit.base import CommitStrategy, StrategyContext
from driftline.agents.commit.exactly_once import ExactlyOnceCommit

STRATEGIES: dict[str, type[CommitStrategy]] = {
    "exactly_once": ExactlyOnceCommit,
    "at_least_once": AtLeastOnceCommit,
}

__all__ = [
    "STRATEGIES",
    "AtLeastOnceCommit",
    "CommitStrategy",
    "ExactlyOnceCommit",
    "StrategyContext",
    "commit_strategy",
]


def commit_strategy(ctx: StrategyContext) -> CommitStrategy:
    """The strategy of ``ctx.spec.worker.processing_guarantee``."""
    return STRATEGIES[ctx.spec.worker.processing_guarantee](ctx)
