"""`OwnedPartitions.retain` / `resume`: a partition a rebalance gives back untouched resumes
from memory; one that anyone committed on meanwhile is restored instead."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.agents.partitions import OwnedPartitions


def owned(p: int = 0, positions: dict[str, int] | None = None, epoch: int = 7) -> tuple[
    OwnedPartitions, Any
]:  # fmt: skip
    parts, pipe = OwnedPartitions(), object()
    parts.pipelines[p] = pipe  # type: ignore[assignment]
    parts.positions[p] = {"events": 100, "labels": 40} if positions is None else positions
    parts.epochs[p] = epoch
    return parts, pipe


@pytest.mark.parametrize(
    ("committed", "resumed"),
    [
        ({"events": 100, "labels": 40}, True),  # nobody moved: resume
        ({"events": 100, "labels": 40, "other": 3}, True),  # topics it never read do not count
        ({"events": 130, "labels": 40}, False),  # another member processed events
        ({"events": 100, "labels": 41}, False),  # ... or labels
        ({"events": 90, "labels": 40}, False),  # offsets went back (reset): restore
        ({"events": None, "labels": 40}, False),  # the group's offsets are gone
        ({"labels": 40}, False),
    ],
)
def test_resume_only_when_the_group_offsets_are_where_it_left_them(
    committed: dict[str, int | None], resumed: bool
) -> None:
    parts, pipe = owned()
    parts.retain(0)
    assert 0 not in parts.pipelines and 0 not in parts.positions
    assert parts.resume(0, committed) is resumed
    if resumed:
        assert parts.pipelines[0] is pipe
        assert parts.positions[0] == {"events": 100, "labels": 40}
        assert parts.epochs[0] == 7
    else:
        assert 0 not in parts.pipelines
    assert parts.retained == {}  # used once either way


def test_retained_state_is_forgotten_after_the_assignment() -> None:
    parts, _ = owned()
    parts.retain(0)
    parts.forget_retained()
    assert parts.resume(0, {"events": 100, "labels": 40}) is False


@pytest.mark.parametrize("case", ["no_positions", "pending_tombstones", "not_owned"])
def test_nothing_is_retained_that_could_not_resume_safely(case: str) -> None:
    parts, _ = owned(positions={} if case == "no_positions" else None)
    if case == "pending_tombstones":
        parts.pending[0] = [(b"0/w/0/1/x", None)]  # a --reset-state not yet written
    p = 1 if case == "not_owned" else 0
    parts.retain(p)
    assert parts.retained == {}
    assert p not in parts.pipelines


def test_retaining_twice_in_one_revoke_keeps_the_first() -> None:
    """A revoke lists the input and labels partitions of the same number."""
    parts, pipe = owned()
    parts.retain(0)
    parts.retain(0)
    assert parts.resume(0, {"events": 100, "labels": 40})
    assert parts.pipelines[0] is pipe
