"""bench/entity_memory_bench.py: bytes per entity, and a one-minute soak with and without
``max_entities`` (the bounded run holds exactly the bound and its RSS stays flat)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "entity_memory_bench.py"


def _load():
    spec = importlib.util.spec_from_file_location("entity_memory_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["entity_memory_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_bytes_and_one_minute_soak(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
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
    # 1,000 new entities per event-time second, held while within window + grace (65 s)
    assert rows["none"][:3][0] == 65_000 and rows["none"][2] == 0, out
    held, idle, evicted, slope = rows["5000"]
    assert held == 5_000 and evicted > 0 and idle == 0, out
    assert abs(slope) < 5.0, out  # bounded: no growth once at the bound
