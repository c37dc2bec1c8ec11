"""bench/formats_bench.py: a small run on the real broker gives both formats' rates and ratios."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "formats_bench.py"


@pytest.mark.integration
def test_small_run_on_the_broker(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("formats_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["formats_bench"] = mod
    spec.loader.exec_module(mod)
    rc = mod.main(["--events", "6000", "--rounds", "1", "--bootstrap", kafka_bootstrap])
    out = capsys.readouterr().out
    assert rc == 0, out
    for row in mod.ROWS:
        m = re.search(rf"^{re.escape(row)}\s+([\d,.]+)\s+([\d,.]+)\s+([\d.]+)$", out, re.M)
        assert m is not None, out
        json_v, avro_v, ratio = (float(g.replace(",", "")) for g in m.groups())
        assert json_v > 0 and avro_v > 0
        # the ratio is computed before the two values are rounded for print
        assert ratio == pytest.approx(avro_v / json_v, rel=0.01, abs=0.02)
    assert re.search(r"^mean value bytes\s+90\s+35$", out, re.M), out
