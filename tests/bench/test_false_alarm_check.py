"""bench/false_alarm_check.py: its Poisson interval (Garwood's exact values) and a small run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # its detection_bench

from tests.bench.load import load_bench


@pytest.mark.parametrize(
    ("k", "lo", "hi"),
    [(0, 0.0, 3.6889), (1, 0.0253, 5.5716), (3, 0.6186, 8.7673), (10, 4.7954, 18.3904)],
)
def test_poisson_interval_is_garwoods(k: int, lo: float, hi: float) -> None:
    got = load_bench("false_alarm_check").poisson_interval(k)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_a_small_run_counts_every_value(capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_bench("false_alarm_check")
    pair, alarms, values, cpu = mod.count("focus:normal", 3, 4_000)
    assert (pair, values) == ("focus:normal", 4_000)
    assert alarms == 0 and cpu >= 0.0  # 1 per 10^6: none expected in 4,000 values
    assert mod.main(["--pairs", "np_focus:uniform", "--seeds", "2", "--length", "3000"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| np_focus | uniform | 6e+03 | 0 | 0.00 | 0.00 … 614.81 |"), row
