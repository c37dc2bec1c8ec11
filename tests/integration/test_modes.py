"""The three prediction modes from one spec, on a real broker.

1. batch prediction with batch features (``driftline predict-batch``);
2. online prediction with batch features only (worker, inputs = batch features);
3. online prediction with batch + streaming features (worker, mixed inputs).
Modes 1 and 2 give identical scores for identical inputs. Batch features travel through the
compacted topic (``driftline batch-features load``), tombstones delete, misses use defaults.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.demo import _to_toml, ks_adwin_spec_text
from driftline.agents.kafka_io import ensure_topics
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from driftline.schemas import validate
from driftline.spec import load_spec
from tests.kafka_helpers import kcat_produce, metric, read_topic, start_worker, wait_for_metric

pytestmark = pytest.mark.integration

N_USERS, N = 60, 3_000


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "driftline.cli", *args], capture_output=True,
                       text=True, timeout=180)  # fmt: skip
    return r


def _write_users(path: Path) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(3)
    rows = {f"u{i}": (float(rng.integers(0, 400)), round(float(rng.normal()), 6))
            for i in range(N_USERS)}  # fmt: skip
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "days_active", "segment_score"])
        for u, (d, s) in rows.items():
            w.writerow([u, d, s])
        w.writerow(["u_bad", "lots", 1.0])  # rejected: not a number
    return rows


def _spec(tmp: Path, uid: str, inputs: list[str], model: Path) -> Path:
    data = tomllib.loads(ks_adwin_spec_text())
    data["pipeline"]["name"] = f"modes-{uid}-{len(inputs)}"
    data["input"]["topic"] = f"modes-{uid}.events"
    data["input"]["fields"]["label"] = "int"
    data["output"] = {k: f"modes-{uid}-{len(inputs)}.{k.removesuffix('_topic')}"
                      for k in data["output"]}  # fmt: skip
    data["batch_features"] = {
        "topic": f"modes-{uid}.batch",
        "fields": {"days_active": "float", "segment_score": "float"},
        "defaults": {"days_active": 0.0, "segment_score": 0.0},
    }
    data["model"] = {"builtin": "logistic_regression", "inputs": inputs, "label_field": "label"}
    data["detectors"] = []
    data["worker"]["web_port"] = free_port()
    p = tmp / f"spec-{len(inputs)}.toml"
    p.write_text(_to_toml(data))
    # train with the worker's own feature code, then point the spec at the model
    events = tmp / "labelled.jsonl"
    r = _cli("train", "-c", str(p), "--input", str(events), "--output", str(model),
             "--batch-features", str(tmp / "users.csv"), "--version", f"m{len(inputs)}",
             "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "trained on" in r.stdout
    data["model"] = {"path": str(model), "inputs": inputs}
    p.write_text(_to_toml(data))
    return p


def _events(seed: int, n: int, users: int) -> list[dict[str, Any]]:
    out = []
    for e in SyntheticStream(n=n, shift_at=n, seed=seed, n_entities=users).events():
        e["label"] = int(e["amount"] > 52)
        out.append(e)
    return out


def _run_worker(spec_path: Path, bootstrap: str, kcat: str, tmp: Path, events: list[dict],
                topic: str) -> tuple[Any, dict[str, float]]:  # fmt: skip
    spec = load_spec(spec_path)
    log = tmp / f"{spec.name}.log"
    proc = start_worker(spec_path, bootstrap, log)
    url = f"http://127.0.0.1:{spec.worker.web_port}/metrics"
    try:
        wait_for_metric(url, "driftline_records_consumed_total", len(events), proc, log)
        m = {n: metric(url, n) for n in ("driftline_batch_cache_hits_total",
                                          "driftline_batch_cache_misses_total",
                                          "driftline_batch_cache_entries",
                                          "driftline_predictions_total")}  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return spec, m


def test_three_modes_from_one_spec(kafka_bootstrap: str, kcat: str, tmp_path: Path,
                                   unique: str) -> None:  # fmt: skip
    users = _write_users(tmp_path / "users.csv")
    (tmp_path / "labelled.jsonl").write_bytes(
        b"".join(orjson.dumps(e) + b"\n" for e in _events(1, 4_000, N_USERS))
    )
    batch_only = _spec(tmp_path, unique, ["days_active", "segment_score"], tmp_path / "m2.pkl")
    mixed = _spec(tmp_path, unique, ["amount", "amount_mean_1m", "days_active"],
                  tmp_path / "m3.pkl")  # fmt: skip
    spec2, spec3 = load_spec(batch_only), load_spec(mixed)

    # batch features onto the compacted topic (one bad row rejected, reported)
    r = _cli("batch-features", "load", "-c", str(batch_only), str(tmp_path / "users.csv"),
             "--bootstrap", kafka_bootstrap, "--version", "v1", "--no-progress")  # fmt: skip
    assert r.returncode == 1 and f"loaded {N_USERS} entities" in r.stdout, r.stdout + r.stderr
    assert "wrong_type:days_active=1" in r.stdout
    r = _cli("batch-features", "delete", "-c", str(batch_only), "u7",
             "--bootstrap", kafka_bootstrap)  # fmt: skip
    assert r.returncode == 0, r.stderr

    # events for known users, u7 (deleted) and one user the table never had
    events = _events(2, N, N_USERS)
    events += [{**events[0], "user_id": "stranger", "ts": events[-1]["ts"] + 10}]
    ensure_topics(kafka_bootstrap, [spec2.input.topic], partitions=2)
    kcat_produce(
        kcat,
        kafka_bootstrap,
        spec2.input.topic,
        [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events],
    )

    # mode 1: batch prediction
    r = _cli("predict-batch", "-c", str(batch_only), "--input", str(tmp_path / "users.csv"),
             "--output", str(tmp_path / "batch_preds.jsonl"))  # fmt: skip
    assert r.returncode == 0 and f"wrote {N_USERS} predictions" in r.stdout, r.stderr
    batch_scores = {}
    for line in (tmp_path / "batch_preds.jsonl").read_bytes().splitlines():
        d = orjson.loads(line)
        validate("prediction", d)
        batch_scores[d["entity"]] = d["score"]
        assert d["inputs"] == dict(zip(["days_active", "segment_score"], users[d["entity"]],
                                       strict=True))  # fmt: skip

    # mode 2: online, batch features only: the same scores for the same inputs
    spec2, m2 = _run_worker(batch_only, kafka_bootstrap, kcat, tmp_path, events,
                            spec2.input.topic)  # fmt: skip
    preds = [
        orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec2.output.predictions_topic)
    ]
    assert len(preds) == len(events) == m2["driftline_predictions_total"]
    n_missing = sum(1 for e in events if e["user_id"] in ("u7", "stranger"))
    assert m2["driftline_batch_cache_misses_total"] == n_missing
    assert m2["driftline_batch_cache_hits_total"] == len(events) - n_missing
    assert m2["driftline_batch_cache_entries"] == N_USERS - 1  # u7 deleted
    for p in preds:
        validate("prediction", p)
        if p["entity"] in ("u7", "stranger"):
            assert p["inputs"] == {"days_active": 0.0, "segment_score": 0.0}  # defaults
        else:
            assert p["score"] == batch_scores[p["entity"]]  # identical, not approximately
            assert p["inputs"] == dict(zip(["days_active", "segment_score"], users[p["entity"]],
                                           strict=True))  # fmt: skip

    # mode 3: online, batch + streaming features in one model input
    spec3, m3 = _run_worker(mixed, kafka_bootstrap, kcat, tmp_path, events, spec3.input.topic)
    preds3 = {
        (
            orjson.loads(r.value)["source"]["partition"],
            orjson.loads(r.value)["source"]["offset"],
        ): orjson.loads(r.value)
        for r in read_topic(kafka_bootstrap, spec3.output.predictions_topic)
    }
    feats3 = {
        (d["source"]["partition"], d["source"]["offset"]): d
        for d in (
            orjson.loads(r.value) for r in read_topic(kafka_bootstrap, spec3.output.features_topic)
        )
    }
    assert len(preds3) == len(events)
    for pos, p in preds3.items():
        assert p["model_version"] == "m3"
        assert p["inputs"]["amount_mean_1m"] == feats3[pos]["features"]["amount_mean_1m"]
        want = users.get(p["entity"], (0.0, 0.0))[0] if p["entity"] != "u7" else 0.0
        assert p["inputs"]["days_active"] == want
        assert p["score"] is not None
    assert m3["driftline_predictions_total"] == len(events)
