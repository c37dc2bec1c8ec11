"""Chaos: two workers share a pipeline; one is SIGKILLed mid-stream and stays dead.

The survivor takes the dead worker's partition over once its static membership's session
expires, restores that partition's state from the changelog and finishes the stream. What was
written (read_committed) must equal an undisturbed run: 0 lost, 0 doubled, 0 differing.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.kafka_helpers import (
    kcat_produce,
    kill_after,
    start_worker,
    wait_for_metric,
    wait_until_committed,
    write_pipeline,
)
from tests.reference_run import assert_exactly_once, reference_outputs, written_outputs

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

N = 24_000


def test_one_of_two_workers_killed_the_survivor_finishes_exactly_once(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    rng = random.Random(77)
    data = named_ks_adwin_spec(f"group-{unique}")
    ports = [free_port(), free_port()]
    data["worker"].update(batch_max_records=200, batch_timeout_ms=20)
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3000)
    stream = SyntheticStream(n=N, shift_at=N // 2, seed=41, n_entities=300)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[: N // 3])

    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [
        start_worker(spec_path, kafka_bootstrap, log, wid, "--web-port", str(port))
        for log, wid, port in zip(logs, ("w-a", "w-b"), ports, strict=True)
    ]
    urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
    try:
        for url, w, log in zip(urls, workers, logs, strict=True):  # both own a partition
            wait_for_metric(url, "driftline_assigned_partitions", 1, w, log)
        kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[N // 3 :])
        kill_after(urls[1], rng.randint(100, N // 3), workers[1], logs[1])
        wait_until_committed(kafka_bootstrap, spec, N, workers[0], logs[0], 150)
        assert wait_for_metric(urls[0], "driftline_assigned_partitions", 2, workers[0], logs[0])
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(30)
    assert_exactly_once(reference_outputs(kafka_bootstrap, spec), written_outputs(
        kafka_bootstrap, spec, at_least=N))  # fmt: skip
    # the survivor kept its own partition through the rebalance: no restore of it
    assert "given back untouched since this worker's last commit; resumed from memory" in (
        logs[0].read_text()
    )
