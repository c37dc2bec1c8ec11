"""Every detector type and KS reference mode, declared in a spec, runs in the batch step."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.agents.demo import ks_adwin_spec_text, train_demo_model
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.predictor import build_predictor
from driftline.agents.replay import build_profile
from driftline.agents.synthetic import SyntheticStream
from driftline.schemas import validate
from driftline.spec import parse_spec

N, K = 16_000, 8_000
START, STEP = 1_767_225_600_000, 10

DETECTORS = [
    {"name": "ks_fixed", "type": "ks", "target": "amount", "reference_size": 1000,
     "window_size": 1000, "stride": 100, "alpha": 1e-6},
    {"name": "ks_sliding", "type": "ks", "target": "amount", "reference_size": 1000,
     "window_size": 1000, "stride": 100, "alpha": 1e-6, "reference_mode": "sliding"},
    {"name": "ks_prev", "type": "ks", "target": "latency_ms", "reference_mode": "previous_window",
     "window_ms": 20_000, "stride": 100, "alpha": 1e-6},
    {"name": "ks_profile", "type": "ks", "target": "amount", "reference_size": 1000,
     "window_size": 1000, "stride": 100, "alpha": 1e-6, "reference_profile": "ref.json"},
    {"name": "summary_amount", "type": "summary", "target": "amount",
     "reference_profile": "ref.json"},
    {"name": "chi2_country", "type": "chi2", "target": "country", "alpha": 1e-6},
    {"name": "psi_country", "type": "psi", "target": "country"},
    {"name": "jsd_country", "type": "jsd", "target": "country"},
    {"name": "adwin_latency", "type": "adwin", "target": "latency_ms", "delta": 1e-5},
    {"name": "ph_latency", "type": "page_hinkley", "target": "latency_ms"},  # scale-free
    {"name": "ks_prediction", "type": "ks", "target": "prediction", "reference_size": 1000,
     "window_size": 1000, "stride": 100, "alpha": 1e-6},
    {"name": "focus_amount", "type": "focus", "target": "amount"},
    {"name": "focus_scale_latency", "type": "focus_scale", "target": "latency_ms",
     "direction": "up", "false_alarms_per_million": 10.0},
    {"name": "np_focus_amount", "type": "np_focus", "target": "amount"},
    {"name": "focus_categorical_country", "type": "focus_categorical", "target": "country"},
]  # fmt: skip
# country shifts too: from uniform over 4 to mostly "us" after K
SHIFTED = {d["name"] for d in DETECTORS}


def _events(n: int, shift_at: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    out = []
    for i, e in enumerate(SyntheticStream(n=n, shift_at=shift_at, seed=seed).events()):
        if i >= shift_at and rng.random() < 0.6:
            e["country"] = "us"
        out.append(e)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = Path(tmp_path_factory.mktemp("dets"))
    data = tomllib.loads(ks_adwin_spec_text())
    train_demo_model(tmp / "demo-model.pkl", list(data["model"]["inputs"]), n=3000)
    # the reference profile comes from pre-shift "training" data, via `driftline profile`'s code
    train = tmp / "train.jsonl"
    train.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _events(5000, 5000, 99)))
    data["detectors"] = []
    ref = build_profile(parse_spec(data, base_dir=tmp), train, progress=False)
    (tmp / "ref.json").write_bytes(orjson.dumps(ref))
    data["detectors"] = DETECTORS
    spec = parse_spec(data, base_dir=tmp)
    pred, version = build_predictor(spec)
    pipe = PartitionPipeline(spec, 0, pred, version)
    recs = [RawRecord("in", 0, i, None, e["user_id"].encode(), orjson.dumps(e))
            for i, e in enumerate(_events(N, K, 5))]  # fmt: skip
    alerts = []
    for i in range(0, N, 2_000):
        alerts += pipe.process(recs[i : i + 2_000]).alerts
    return alerts


def test_every_detector_fires_after_the_shift_and_never_before(run: list[dict]) -> None:
    firing: dict[str, list[int]] = {}
    for a in run:
        validate("alert", a)
        idx = (a["window"]["event_time_ms"] - START) // STEP
        if a["status"] == "firing":
            firing.setdefault(a["detector"], []).append(idx)
    assert set(firing) == SHIFTED, sorted(SHIFTED - set(firing))
    for name, idx in firing.items():
        assert min(idx) >= K, f"{name} fired at {min(idx)}, before the shift at {K}"
        assert min(idx) < K + 4_000, f"{name} first fired {min(idx) - K} events after the shift"


def test_alert_kinds_and_types(run: list[dict]) -> None:
    by_name = {a["detector"]: a for a in run if a["status"] == "firing"}
    assert by_name["ks_prediction"]["kind"] == "prediction"
    assert by_name["chi2_country"]["kind"] == "covariate"
    assert by_name["ks_profile"]["reference"]["description"].startswith("profile ref.json")
    assert by_name["ks_prev"]["reference"]["description"].startswith("previous 20000 ms")
    focus_ref = by_name["focus_amount"]["reference"]["description"]
    assert focus_ref.endswith("values before the estimated change of amount on partition 0")
    share = by_name["focus_categorical_country"]
    assert share["kind"] == "covariate" and share["detail"].startswith("share of 'us': ")
    assert {a["detector_type"] for a in run} >= {"ks", "summary", "chi2", "psi", "jsd", "adwin",
                                                  "page_hinkley", "focus",
                                                  "focus_scale", "np_focus",
                                                  "focus_categorical"}  # fmt: skip
