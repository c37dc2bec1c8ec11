"""bench/entity_memory_bench.py: bytes per entity, and a one-minute soak with and without
``max_entities`` (the bounded run holds exactly the bound and its RSS stays flat)."""

from __future__ import annotations

import re

import pytest

from tests.bench.load import load_bench


def test_bytes_and_one_minute_soak(capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_bench("entity_memory_bench")
    argv = ["--bytes", "--entities", "20000", "--soak-minutes", "1", "--max-entities", "5000"]
    argv += ["--rate", "2000", "--window-ms", "60000"]
    assert mod.main(argv) == 0
    out = capsys.readouterr().out
    m = re.search(r"^\s+20,000\s+20,000\s+([\d.]+)\s+([\d,]+)\s+[\d.]+$", out, re.M)
    assert m is not None, out
    per_entity = int(m.group(2).replace(",", ""))
    assert 50 <= per_entity <= 5_000, out  # a tumbling row + registry entry + index key
    rows = {}
    for cap, held, idle, evicted, slope in re.findall(
        r"^\s+(none|5000)\s+[\d,]+\s+([\d,]+)\s+([\d,]+)/([\d,]+)\s+\S+\s+(-?[\d.]+)\s+[\d.]+$",
        out,
        re.M,
    ):
        rows[cap] = [int(x.replace(",", "")) for x in (held, idle, evicted)] + [float(slope)]
    assert set(rows) == {"none", "5000"}, out
    # 1,000 new entities per event-time second, held while within window + grace (65 s), and
    # up to 1/16 window (3.75 s) longer: the idle check's step
    held, idle, evicted, _ = rows["none"]
    assert 65_000 <= held <= 69_000 and idle > 0 and evicted == 0, out
    held, idle, evicted, slope = rows["5000"]
    assert held == 5_000 and evicted > 0 and idle == 0, out
    assert abs(slope) < 5.0, out  # bounded: no growth once at the bound
