"""State that is gone or damaged is never a silent reset (issue 12, item 5), on a real broker.

A worker commits its state; then the changelog is damaged as an operator or a tool could:
the snapshot head tombstoned, or the whole topic deleted (the worker recreates it empty). Each
time a restarted worker refuses the partition with one message naming the topic, partition and
offset and the way out, and writes nothing; ``--reset-state`` then starts the partition over on
purpose and the pipeline goes on from the group's committed offsets.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from driftline.agents.demo import named_ks_adwin_spec, stop_process
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from driftline.spec import PipelineSpec
from tests.agents.test_state_changelog import produce
from tests.kafka_helpers import (
    committed_offsets,
    kcat_produce,
    read_topic,
    start_worker,
    wait_until_committed,
    write_pipeline,
)

pytestmark = pytest.mark.integration


def send_events(kcat: str, bootstrap: str, spec: PipelineSpec, n: int, seed: int) -> None:
    events = SyntheticStream(n=n, shift_at=n, seed=seed, n_entities=20).events()
    kcat_produce(kcat, bootstrap, spec.input.topic,
                 [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events])  # fmt: skip


def run_until_committed(
    spec_path: Path, spec: PipelineSpec, bootstrap: str, log_path: Path, total: int, *opts: str
) -> None:
    """A worker that runs until the group has committed ``total`` input records, then stops."""
    w = start_worker(spec_path, bootstrap, log_path, "w-integrity", *opts)
    try:
        wait_until_committed(bootstrap, spec, total, w, log_path, 150)
    finally:
        stop_process(w, 30)


def refused(spec_path: Path, bootstrap: str, log_path: Path) -> str:
    """Start a worker that must refuse to start; its log."""
    w = start_worker(spec_path, bootstrap, log_path, "w-integrity")
    try:
        code = w.wait(120)
    except subprocess.TimeoutExpired:
        w.kill()
        w.wait(30)
        raise AssertionError("the worker ran on: " + log_path.read_text()[-3000:]) from None
    text = log_path.read_text(errors="replace")
    assert code != 0, text[-3000:]
    assert "SystemError" not in text, text[-3000:]
    return text


def test_missing_or_tombstoned_state_is_refused_and_reset_only_on_purpose(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    data = named_ks_adwin_spec(f"integrity-{unique}")
    data["worker"].update(web_port=free_port())
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=2_000)
    changelog = f"{spec.group_id}.state-changelog"
    send_events(kcat, kafka_bootstrap, spec, 400, seed=1)
    run_until_committed(spec_path, spec, kafka_bootstrap, tmp_path / "w1.log", 400)
    features_before = len(read_topic(kafka_bootstrap, spec.output.features_topic, at_least=400))

    # 1. the head of partition 0 deleted with a tombstone: named by its offset
    [offset] = produce(kafka_bootstrap, changelog, 0, [(b"0/head", None)])
    text = refused(spec_path, kafka_bootstrap, tmp_path / "w2.log")
    assert (f"topic {changelog}, partition 0, offset {offset} (key '0/head'): the snapshot head "
            "was deleted") in text, text[-3000:]  # fmt: skip
    assert "--reset-state 0" in text, text[-3000:]

    # 2. started over on purpose: partition 0 empty, partition 1 restored; new events go through
    send_events(kcat, kafka_bootstrap, spec, 200, seed=2)
    log3 = tmp_path / "w3.log"
    run_until_committed(spec_path, spec, kafka_bootstrap, log3, 600, "--reset-state", "0")
    assert "partition 0: saved state ignored on request (--reset-state)" in log3.read_text()
    features = read_topic(kafka_bootstrap, spec.output.features_topic, at_least=600)
    assert len(features) == features_before + 200
    # the old state's per-key window records went with the reset (tombstones): a plain restart
    # restores partition 0 from the new state alone
    send_events(kcat, kafka_bootstrap, spec, 100, seed=4)
    log3b = tmp_path / "w3b.log"
    run_until_committed(spec_path, spec, kafka_bootstrap, log3b, 700)
    assert "ChangelogError" not in log3b.read_text()
    features = read_topic(kafka_bootstrap, spec.output.features_topic, at_least=700)
    assert len(features) == features_before + 300

    # 3. the changelog topic deleted (the worker recreates it empty): every partition refused
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for f in admin.delete_topics([changelog], operation_timeout=30).values():
        f.result(60)
    time.sleep(2)
    text = refused(spec_path, kafka_bootstrap, tmp_path / "w4.log")
    done = committed_offsets(kafka_bootstrap, spec.group_id, spec.input.topic, 2)
    assert any(
        f"no snapshot, but the consumer group has committed offset {done[p]} on "
        f"{spec.input.topic}[{p}]" in text
        for p in (0, 1)
    ), text[-3000:]
    assert len(read_topic(kafka_bootstrap, spec.output.features_topic)) == len(features)
