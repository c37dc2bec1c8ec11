"""bench/detection_bench.py: a small run gives every table, with values that follow from the
streams (the KS tests find a 1-sd shift in every seed and raise no false alarm; river's KSWIN at
its defaults alarms on stationary data)."""

from __future__ import annotations

import re

import pytest

from tests.bench.load import load_bench


def load():
    return load_bench("detection_bench")


def test_quick_run_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    mod = load()
    specs = [
        {"type": "ks"},
        {"type": "ks", "reference_mode": "previous_window", "window_ms": 1000},
        {"type": "chi2"},
        {"type": "ddm"},
        {"type": "adwin", "direction": "up", "field": "error"},
        {"river": "KSWIN", "fa_length": 1_000, "seeds": 2, "pre": 500, "post": 500},
    ]
    rc = mod.main(["--quick", "--seeds", "2", "--fa-length", "3000", "--detectors",
                   __import__("json").dumps(specs)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "seeds=2 fa_length=3000 pre=2000+[0,1000) post=2000 batch=1000" in out
    for title in ("numeric:", "categorical:", "error:"):
        assert re.search(rf"^{title} false alarms per 10\^6", out, re.M), out
    ks = re.search(r"^ks\s+(.*)$", out, re.M)
    assert ks is not None
    cells = ks.group(1).split()
    assert cells[:8] == ["0"] * 8  # 7 stationary kinds and all: no false alarm
    assert re.search(r"\d+ \(2/2\)", ks.group(1))  # found in both seeds
    kswin = re.search(r"^river KSWIN\s+(\S+)", out, re.M)
    assert kswin is not None and float(kswin.group(1)) > 0


@pytest.mark.parametrize(
    ("spec", "label", "field"),
    [
        ({"type": "ks"}, "ks", "numeric"),
        ({"type": "ks", "alpha": 1e-4}, "ks alpha=0.0001", "numeric"),
        ({"type": "chi2", "seeds": 3}, "chi2", "categorical"),
        ({"type": "hddm_a"}, "hddm_a", "error"),
        ({"type": "adwin", "field": "error"}, "adwin", "error"),
        ({"river": "ADWIN", "delta": 0.01}, "river ADWIN delta=0.01", "numeric"),
        ({"type": "ks", "label": "mine"}, "mine", "numeric"),
    ],
)
def test_labels_and_field_types_of_specs(spec: dict, label: str, field: str) -> None:
    mod = load()
    assert mod.label_of(spec) == label and mod.field_of(spec) == field


def test_delays_and_rates_of_a_result() -> None:
    mod = load()
    r = mod.Result("x", "numeric", {"normal": (2, 1_000_000), "poisson": (0, 1_000_000)},
                   {"+1sd": [10, None, 30, 20]})  # fmt: skip
    assert r.fa_rate("normal") == 2.0 and r.fa_rate() == 1.0
    assert r.found("+1sd") == (3, 4) and r.median_delay("+1sd") == 20.0
