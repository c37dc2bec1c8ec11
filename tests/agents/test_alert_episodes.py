"""Alerts follow drift episodes: firing, resolved, firing, ... never firing twice in a row."""

from __future__ import annotations

import itertools
import tomllib

import numpy as np
import orjson

from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.spec import parse_spec

N, K = 30_000, 10_000


def _records() -> list[RawRecord]:
    rng = np.random.default_rng(2)
    ramp = np.clip((np.arange(N) - K) / 10_000, 0, 1) * 6.0  # a slow drift: many detections
    out = []
    for i in range(N):
        e = {
            "user_id": f"u{i % 50}",
            "ts": 1_767_225_600_000 + 10 * i,
            "amount": float(50 + ramp[i] + rng.normal()),
            "latency_ms": 1.0,
            "country": "de",
        }
        out.append(RawRecord("in", 0, i, None, e["user_id"].encode(), orjson.dumps(e)))
    return out  # fmt: skip


def test_one_firing_alert_per_episode_however_often_the_detector_detects() -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["detectors"] = [{"name": "amount_adwin", "type": "adwin", "target": "amount",
                          "delta": 1e-4, "cooldown": 3_000}]  # fmt: skip
    spec = parse_spec(data)
    pipe = PartitionPipeline(spec, 0, None, "none")
    recs = _records()
    alerts = []
    for i in range(0, N, 1_000):
        alerts += pipe.process(recs[i : i + 1_000]).alerts
        if i == N // 2:  # the episode state survives a restore
            snap = orjson.loads(orjson.dumps(pipe.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY))
            pipe = PartitionPipeline(spec, 0, None, "none")
            pipe.restore(snap)
    det = pipe.detectors[0][1]
    statuses = [a["status"] for a in alerts]
    assert statuses and statuses[0] == "firing"
    assert all(a != b for a, b in itertools.pairwise(statuses)), statuses
    assert statuses.count("firing") < det.n_detections  # repeated detections made no alert
    assert all(a["window"]["offset"] >= K for a in alerts)
