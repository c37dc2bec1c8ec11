"""The spec's ``alpha`` is the user's level: checked before the family-wise split.

With m test-based detectors (ks, chi2) and ``[drift] correction = "bonferroni"`` each tests at
``alpha / m``; a level outside (0, 1) must be refused as written, not after dividing it.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from driftline.agents.demo import ks_adwin_spec_text
from driftline.errors import SpecError
from driftline.spec import parse_spec


def two_tests(tmp_path: Path, alpha: Any, correction: str = "bonferroni") -> dict[str, Any]:
    """The demo spec with a second KS detector (m = 2) and ``alpha`` on the first."""
    data = tomllib.loads(ks_adwin_spec_text())
    (tmp_path / "demo-model.pkl").write_bytes(b"x")
    second = copy.deepcopy(data["detectors"][0])
    second["name"] = "latency_ks"
    second["target"] = "latency_ms"
    data["detectors"].append(second)
    data["detectors"][0]["alpha"] = alpha
    data["drift"] = {"correction": correction}
    return data


@pytest.mark.parametrize("correction", ["bonferroni", "benjamini_hochberg", "none"])
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.0, 0.0, -0.5, True])
def test_alpha_out_of_range_is_refused_before_the_split(
    tmp_path: Path, alpha: float, correction: str
) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(two_tests(tmp_path, alpha, correction), base_dir=tmp_path)
    # the message quotes the value the user wrote, not alpha / m
    assert str(e.value) == (
        f"spec key detectors[0].alpha: got {alpha!r}; expected a number strictly between 0 and 1"
    )


def test_a_valid_alpha_is_split_over_the_tests(tmp_path: Path) -> None:
    spec = parse_spec(two_tests(tmp_path, 0.01), base_dir=tmp_path)
    ks = [d for d in spec.detectors if d.type == "ks"]
    assert [d.family_alpha for d in ks] == [0.01, 1e-6]
    assert [d.params["alpha"] for d in ks] == [0.005, 5e-7]
