"""The worker's garbage-collector settings."""

from __future__ import annotations

import gc

from driftline.agents.gc_tuning import GEN0_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    alive = {"a": [1, 2]}
    old = tune_gc()
    try:
        assert gc.get_threshold() == (GEN0_THRESHOLD, 20, 100)
        assert gc.get_freeze_count() > 0
        assert not any(alive is o for o in gc.get_objects())  # frozen: not in any generation
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
    assert gc.get_threshold() == old
    assert any(alive is o for o in gc.get_objects())
