"""``[drift] correction = "benjamini_hochberg"`` through the batch step."""

from __future__ import annotations

import tomllib

import numpy as np
import orjson
import pytest

from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.synthetic import SyntheticStream
from driftline.spec import parse_spec
from driftline.streams.fdr import benjamini_hochberg

ALPHA, N, SHIFT = 1e-4, 30_000, 15_000


def _spec(correction: str):
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["drift"] = {"correction": correction}
    data["detectors"] = [
        {
            "name": f"{t}_ks",
            "type": "ks",
            "target": t,
            "reference_size": 1000,
            "window_size": 1000,
            "stride": 250,
            "alpha": ALPHA,
        }
        for t in ("amount", "latency_ms")
    ] + [{"name": "country_chi2", "type": "chi2", "target": "country", "alpha": ALPHA}]
    return parse_spec(data)


def _records(amount_shift: float) -> list[RawRecord]:
    s = SyntheticStream(n=N, shift_at=SHIFT, seed=5, amount_shift=amount_shift)
    return [RawRecord("in", 0, i, None, e["user_id"].encode(), orjson.dumps(e))
            for i, e in enumerate(s.events())]  # fmt: skip


@pytest.mark.parametrize("correction", ["bonferroni", "benjamini_hochberg"])
def test_levels_and_alerts(correction: str) -> None:
    spec = _spec(correction)
    assert [d.params["alpha"] for d in spec.detectors] == [ALPHA / 3] * 3
    pipe = PartitionPipeline(spec, 0, None, "none")
    recs = _records(8.0)
    alerts = []
    for i in range(0, N, 1_000):
        alerts += pipe.process(recs[i : i + 1_000]).alerts
        if correction == "bonferroni":
            assert [det.alpha for _, det in pipe.detectors] == [ALPHA / 3] * 3
    p = [det.p_value for _, det in pipe.detectors]
    firing = [a for a in alerts if a["status"] == "firing"]
    assert firing and all(a["window"]["offset"] >= SHIFT for a in alerts)
    assert {a["target"] for a in firing} >= {"amount", "latency_ms"}
    if correction == "benjamini_hochberg":
        # after the batch step, the levels in force are BH's for the latest p-values
        pipe.bh_correction.apply()
        levels = np.array([det.alpha for _, det in pipe.detectors])
        p_arr = np.array([np.nan if v is None else v for v in p])
        assert ((p_arr <= levels) == benjamini_hochberg(p_arr, ALPHA)).all()
        assert levels.max() > ALPHA / 3  # other small p-values loosen a test's level


def test_bh_is_quiet_on_a_stationary_stream() -> None:
    pipe = PartitionPipeline(_spec("benjamini_hochberg"), 0, None, "none")
    s = SyntheticStream(n=N, shift_at=N, seed=5)
    recs = [RawRecord("in", 0, i, None, e["user_id"].encode(), orjson.dumps(e))
            for i, e in enumerate(s.events())]  # fmt: skip
    alerts = []
    for i in range(0, N, 1_000):
        alerts += pipe.process(recs[i : i + 1_000]).alerts
    assert alerts == []
