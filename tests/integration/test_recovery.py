"""SIGKILL a worker mid-stream, restart it: outputs equal an uninterrupted run, none duplicated.

The reference "uninterrupted run" is the same per-partition batch step run in-process over the
same records (tests/reference_run.py). Many kills, and two workers: tests/chaos/.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.kafka_helpers import (
    committed_total,
    kcat_produce,
    kill_after,
    metric,
    start_worker,
    wait_until_committed,
    write_pipeline,
)
from tests.reference_run import assert_exactly_once, reference_outputs, written_outputs

pytestmark = pytest.mark.integration

N, K = 40_000, 24_000


def test_sigkill_and_restart_gives_the_uninterrupted_outputs(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    data = named_ks_adwin_spec(f"kill-{unique}")
    data["worker"].update(web_port=free_port(), batch_max_records=200, batch_timeout_ms=20)
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3000)
    stream = SyntheticStream(n=N, shift_at=K, seed=21, n_entities=200)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    # the first 60% now; the rest after the kill, so the kill always lands mid-stream
    first = int(N * 0.6)
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[:first])
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    # first run: killed with SIGKILL once it has committed part of the stream
    log1 = tmp_path / "worker1.log"
    w1 = start_worker(spec_path, kafka_bootstrap, log1, worker_id="w-a")
    kill_after(url, N // 4, w1, log1)
    done_before = committed_total(kafka_bootstrap, spec)
    assert 0 < done_before <= first, f"{done_before}/{first} committed before the kill"
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[first:])

    # second run: same worker id; it restores state and finishes the stream
    log2 = tmp_path / "worker2.log"
    w2 = start_worker(spec_path, kafka_bootstrap, log2, worker_id="w-a")
    try:
        wait_until_committed(kafka_bootstrap, spec, N, w2, log2, 120)
        deadline = time.monotonic() + 60
        # metrics follow the commit (counted when the worker collects it): let them land,
        # then make sure nothing more is counted
        want = N - done_before
        while metric(url, "driftline_records_consumed_total") < want:
            assert time.monotonic() < deadline, log2.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)
        consumed_after = metric(url, "driftline_records_consumed_total")
    finally:
        w2.send_signal(signal.SIGTERM)
        assert w2.wait(30) == 0
    assert "state restored" in log2.read_text()
    # the restarted worker read only what the first had not committed: nothing twice
    assert consumed_after == N - done_before

    # reference: the uninterrupted per-partition batch step over the same records
    assert_exactly_once(reference_outputs(kafka_bootstrap, spec), written_outputs(
        kafka_bootstrap, spec, at_least=N))  # fmt: skip
