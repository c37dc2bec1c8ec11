"""Every restore refuses a snapshot of another kind, one taken with other hyperparameters and a
damaged one, each with the one message of `streams.snapshots`, and leaves its state untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from driftline.errors import DriftlineError
from driftline.streams.detectors.ks import KSWindowDetector
from driftline.streams.detectors.windowed import Chi2Detector, PSIDetector, SummaryDetector
from driftline.streams.importance import ImportanceMonitor, LabelledWindow
from driftline.streams.labels import LabelJoin
from driftline.streams.model_metrics import CountWindowMetrics, TimeWindowMetrics

# (make, make with other hyperparameters, how messages name it, a key restore reads)
CASES: list[tuple[Callable[[], Any], Callable[[], Any], str, str]] = [
    (lambda: LabelJoin(10), lambda: LabelJoin(20), "label_join", "counters"),
    (
        lambda: CountWindowMetrics("regression", 5),
        lambda: CountWindowMetrics("regression", 6),
        "count_window_metrics",
        "scores",
    ),
    (
        lambda: TimeWindowMetrics("regression", 10),
        lambda: TimeWindowMetrics("regression", 10, clock="event"),
        "time_window_metrics",
        "n_late",
    ),
    (lambda: LabelledWindow(3), lambda: LabelledWindow(4), "labelled_window", "X"),
    (
        lambda: ImportanceMonitor(),
        lambda: ImportanceMonitor(threshold=0.3),
        "importance_monitor",
        "alarms",
    ),
    (lambda: KSWindowDetector(), lambda: KSWindowDetector(stride=2), "'ks' detector", "window"),
    (lambda: Chi2Detector(), lambda: Chi2Detector(alpha=0.01), "'chi2' detector", "head"),
    (lambda: PSIDetector(), lambda: PSIDetector(threshold=0.1), "'psi' detector", "alarm"),
    (lambda: SummaryDetector(), lambda: SummaryDetector(stride=5), "'summary' detector", "n_seen"),
]
IDS = [c[2] for c in CASES]


def _a(what: str) -> str:
    return ("an " if what[0] in "aeiou" else "a ") + what


@pytest.mark.parametrize(("make", "other", "what", "key"), CASES, ids=IDS)
def test_restore_refuses_another_kind(make, other, what: str, key: str) -> None:
    obj = make()
    snap = obj.snapshot()
    tag = "detector" if "detector" in snap else "kind"
    with pytest.raises(DriftlineError) as e:
        obj.restore({**snap, tag: "something_else"})
    assert str(e.value) == f"state: not {_a(what)} snapshot (got 'something_else')"
    with pytest.raises(DriftlineError, match=rf"^state: not {_a(what)} snapshot \(got 'list'\)$"):
        obj.restore([])  # type: ignore[arg-type]
    assert obj.snapshot() == snap


@pytest.mark.parametrize(("make", "other", "what", "key"), CASES, ids=IDS)
def test_restore_refuses_other_hyperparameters(make, other, what: str, key: str) -> None:
    obj = make()
    snap = obj.snapshot()
    theirs = other().snapshot()
    with pytest.raises(DriftlineError) as e:
        obj.restore(theirs)
    assert str(e.value) == (
        f"state: snapshot hyperparameters {theirs['params']} differ from this {what}'s "
        f"{snap['params']}; restore into {_a(what)} built with the same ones"
    )
    assert obj.snapshot() == snap


@pytest.mark.parametrize(("make", "other", "what", "key"), CASES, ids=IDS)
def test_restore_refuses_a_damaged_snapshot(make, other, what: str, key: str) -> None:
    obj = make()
    snap = obj.snapshot()
    with pytest.raises(DriftlineError) as e:
        obj.restore({k: v for k, v in snap.items() if k != key})
    assert str(e.value) == f"state: malformed {what} snapshot (KeyError({key!r}))"
    assert obj.snapshot() == snap
