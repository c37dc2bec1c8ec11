"""``[drift] correction = "benjamini_hochberg"``: the detectors with a p-value level as one
family (the others keep the Bonferroni share the spec gave them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from driftline.spec import DetectorSpec, p_value_level
from driftline.streams.fdr import bh_levels


class BHCorrection:
    """Before each batch, gives each test-based detector the level at which Benjamini-Hochberg
    would reject it, given the family's latest p-values (``streams.fdr.bh_levels``).

    A no-op under ``"bonferroni"`` and ``"none"`` (the spec set the levels once), and for a
    family of fewer than two tests."""

    def __init__(self, correction: str, detectors: Sequence[tuple[DetectorSpec, Any]]) -> None:
        tests = [(d, det) for d, det in detectors if p_value_level(d.type)]
        self.tests = tests if correction == "benjamini_hochberg" and len(tests) >= 2 else []

    def apply(self) -> None:
        if not self.tests:
            return
        p = [det.p_value for _, det in self.tests]
        for alpha in {d.family_alpha for d, _ in self.tests}:
            assert alpha is not None
            levels = bh_levels(p, alpha)
            for (d, det), level in zip(self.tests, levels.tolist(), strict=True):
                if d.family_alpha == alpha:
                    det.set_level(level)
