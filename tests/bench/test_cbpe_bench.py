"""bench/cbpe_bench.py: its table (10 seeds) is the one the README quotes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.streams.test_performance_estimation import _bench

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quotes_the_bench_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench().main([]) == 0
    rows = {}
    row = re.compile(r"(none|covariate|concept)\s+(accuracy|f1|auc)\s+([\d.]+)\s+\S+\s+([\d.]+)%")
    for line in capsys.readouterr().out.splitlines():
        m = row.match(line)
        if m:
            rows[m[1], m[2]] = (float(m[3]), float(m[4]))
    assert len(rows) == 9
    readme = (ROOT / "README.md").read_text()
    for shift, label in (("none", "stationary"), ("covariate", "covariate shift")):
        line = next(x for x in readme.splitlines() if re.match(rf"\| {label} [|(]", x))
        maes = " / ".join(f"{rows[shift, m][0]:.4f}" for m in ("accuracy", "f1", "auc"))
        inside = " / ".join(f"{rows[shift, m][1]:.1f}%" for m in ("accuracy", "f1", "auc"))
        assert f"| {maes} | {inside} |" in line, (line, maes, inside)
    line = next(x for x in readme.splitlines() if re.match(r"\| concept shift [|(]", x))
    maes = " / ".join(f"{rows['concept', m][0]:.2f}" for m in ("accuracy", "f1", "auc"))
    assert f"| {maes} | 0% |" in line, (line, maes)
