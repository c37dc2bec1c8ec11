"""Batch-feature join and the training-serving skew check through the batch step."""

from __future__ import annotations

import tomllib
from pathlib import Path

import orjson
import pytest

from driftline.agents.batch_features import BatchFeatureCache
from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.errors import SpecError
from driftline.schemas import validate
from driftline.spec import parse_spec

N, SHIFT, USERS = 2_000, 1_000, 40


def _spec(**skew: object):
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    data["detectors"] = []
    data["batch_features"] = {"fields": {"amount_offline": "float"},
                              "defaults": {"amount_offline": -1.0}}  # fmt: skip
    data["skew_checks"] = [{"name": "amount_skew", "batch": "amount_offline",
                            "streaming": "amount", "tolerance": 0.0, "mode": "absolute",
                            "window": 50, "max_rate": 0.2, "min_samples": 20, **skew}]  # fmt: skip
    return parse_spec(data)


def _records() -> list[RawRecord]:
    out = []
    for i in range(N):
        u = i % USERS
        amount = float(u) + (5.0 if i >= SHIFT else 0.0)  # online values drift at SHIFT
        e = {"user_id": f"u{u}", "ts": 1_767_225_600_000 + 10 * i, "amount": amount,
             "latency_ms": 1.0, "country": "de"}  # fmt: skip
        out.append(RawRecord("in", 0, i, None, e["user_id"].encode(), orjson.dumps(e)))
    return out


def _cache(spec, tmp: Path) -> BatchFeatureCache:
    p = tmp / "offline.jsonl"
    p.write_bytes(b"".join(orjson.dumps({"user_id": f"u{u}", "amount_offline": float(u)}) + b"\n"
                           for u in range(USERS - 1)))  # the last user has no row  # fmt: skip
    return BatchFeatureCache.from_file(spec.batch_features, p)


@pytest.mark.parametrize("batch", [1, 37, 5_000])
def test_skew_fires_after_the_shift_and_never_before(tmp_path: Path, batch: int) -> None:
    spec = _spec()
    pipe = PartitionPipeline(spec, 0, None, "none", _cache(spec, tmp_path))
    recs = _records()
    alerts, hits, misses, disagree = [], 0, 0, 0
    for i in range(0, N, batch):
        oc = pipe.process(recs[i : i + batch])
        alerts += oc.alerts
        hits, misses = hits + oc.batch_hits, misses + oc.batch_misses
        disagree += oc.skew_disagreements["amount_skew"]
    assert misses == N // USERS and hits == N - misses
    # the user without a row gets the default -1, which never agrees: 50 disagreements
    assert disagree == (N // USERS) + (N - SHIFT) - (N - SHIFT) // USERS
    firing = [a for a in alerts if a["status"] == "firing"]
    assert len(firing) == 1
    a = firing[0]
    validate("alert", a)
    assert a["kind"] == "skew" and a["target"] == "amount_offline~amount"
    assert a["window"]["topic"] == "in"  # the trigger's topic: its offset is on the input
    idx = (a["window"]["event_time_ms"] - 1_767_225_600_000) // 10
    assert SHIFT <= idx < SHIFT + 20


def test_skew_state_survives_a_snapshot(tmp_path: Path) -> None:
    spec = _spec()
    recs = _records()
    ref = PartitionPipeline(spec, 0, None, "none", _cache(spec, tmp_path))
    want = [a["alert_id"] for i in range(0, N, 500) for a in ref.process(recs[i : i + 500]).alerts]
    a = PartitionPipeline(spec, 0, None, "none", _cache(spec, tmp_path))
    got = [x["alert_id"] for x in a.process(recs[:1_010]).alerts]
    b = PartitionPipeline(spec, 0, None, "none", _cache(spec, tmp_path))
    b.restore(orjson.loads(orjson.dumps(a.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)))
    got += [x["alert_id"] for x in b.process(recs[1_010:]).alerts]
    assert got == want and want


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"batch": "nope"}, r"skew_checks\[0\]\.batch"),
        ({"streaming": "nope"}, r"skew_checks\[0\]\.streaming"),
        ({"window": 0}, r"skew_checks\[0\]"),
    ],
)
def test_skew_spec_errors(change: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        _spec(**change)
