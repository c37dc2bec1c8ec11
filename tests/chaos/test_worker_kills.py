"""Chaos: SIGKILL an exactly_once worker again and again at random points; 0 lost, 0 doubled.

The stream arrives in pieces, one before each start, and each worker is killed either when it
has consumed a random share of the new piece (mid-stream, mid-batch, mid-commit) or at a
random time after it was spawned (often mid-start or mid-restore). After the last kill a worker
finishes the stream, and what was written (read_committed) must equal an undisturbed run:
every input offset exactly one feature vector and one prediction, equal values, equal alerts.
``DRIFTLINE_CHAOS_KILLS`` sets the number of kills (CI: 6).
"""

from __future__ import annotations

import os
import random
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
    start_worker,
    wait_until_committed,
    write_pipeline,
)
from tests.reference_run import assert_exactly_once, reference_outputs, written_outputs

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

KILLS = int(os.environ.get("DRIFTLINE_CHAOS_KILLS", "6"))
N = 36_000


def test_random_sigkills_lose_and_double_nothing(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    rng = random.Random(1234)
    data = named_ks_adwin_spec(f"chaos-{unique}")
    data["worker"].update(web_port=free_port(), batch_max_records=200, batch_timeout_ms=20)
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3000)
    stream = SyntheticStream(n=N, shift_at=N // 2, seed=31, n_entities=300)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    pieces = [lines[i * N // KILLS : (i + 1) * N // KILLS] for i in range(KILLS)]
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    mid_stream = 0
    produced = 0
    for i, piece in enumerate(pieces):
        kcat_produce(kcat, kafka_bootstrap, spec.input.topic, piece)
        produced += len(piece)
        log = tmp_path / f"worker{i}.log"
        w = start_worker(spec_path, kafka_bootstrap, log, "w-chaos")
        if i % 2 == 0:  # when it has consumed a random share of what is new
            kill_after(url, rng.randint(1, len(piece)), w, log)
        else:  # at a random time after the spawn: during start, restore or processing
            time.sleep(rng.uniform(1.0, 8.0))
            assert w.poll() is None, log.read_text()[-3000:]
            w.send_signal(signal.SIGKILL)
            w.wait(30)
        mid_stream += committed_total(kafka_bootstrap, spec) < produced

    log = tmp_path / "worker-last.log"
    w = start_worker(spec_path, kafka_bootstrap, log, "w-chaos")
    try:
        wait_until_committed(kafka_bootstrap, spec, N, w, log, 150)
    finally:
        w.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0, log.read_text()[-3000:]
    # most kills must have hit a worker with work in hand, or the test proves little
    assert mid_stream >= KILLS // 2, f"only {mid_stream} of {KILLS} kills landed mid-stream"
    assert_exactly_once(reference_outputs(kafka_bootstrap, spec), written_outputs(
        kafka_bootstrap, spec, at_least=N))  # fmt: skip
