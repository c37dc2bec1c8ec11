"""The broker goes away under a running worker (kill -9, or a clean stop) and comes back.

Each test owns its broker (driftline's launcher, its own data directory and port, never the
session broker): the worker must resume by itself within 30 s of the broker's return, without
a hang (SIGTERM ends it), with the same outputs as an uninterrupted run (read_committed:
exactly_once writes every input offset's feature vector exactly once; at_least_once at least
once, with the same values), the group's committed offsets at the log end (read through the
admin API), and one driftline line per outage change instead of the clients' flood.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.agents.demo import named_ks_adwin_spec, stop_process
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import LocalKafka, free_port
from driftline.spec import PipelineSpec
from tests.kafka_helpers import (
    committed_total,
    kcat_produce,
    metric,
    start_worker,
    wait_for_metric,
    write_pipeline,
)
from tests.reference_run import assert_exactly_once, reference_outputs, written_outputs

pytestmark = pytest.mark.integration

#: events before the outage (being processed when the broker goes), and after it
N_BEFORE, N_AFTER = 6_000, 4_000
N = N_BEFORE + N_AFTER
DOWN_S = 10.0
#: the worker has resumed once it commits new input this long after the broker is back
RESUME_BOUND_S = 30.0
#: how long a worker may take to exit after SIGTERM, brokers up or away
STOP_BOUND_S = 90.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own (its data directory survives its restarts)."""
    kafka = LocalKafka(port=free_port(), data_dir=tmp_path / "kafka")
    kafka.start(timeout_s=180)
    try:
        yield kafka
    finally:
        LocalKafka(port=kafka.port, data_dir=kafka.data_dir).stop()


def take_down(kafka: LocalKafka, how: str) -> None:
    """``kill``: SIGKILL the broker's JVM; ``stop``: a clean stop (SIGTERM, controlled shutdown)."""
    if how == "stop":
        kafka.stop()
        return
    pid = int(json.loads(kafka.state_file.read_text())["pid"])
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while kafka.status()["running"]:
        assert time.monotonic() < deadline, "the killed broker is still running"
        time.sleep(0.1)


def bring_back(kafka: LocalKafka) -> float:
    """Start the broker again on the same port and data; when it answers (monotonic)."""
    LocalKafka(port=kafka.port, data_dir=kafka.data_dir).start(timeout_s=180)
    return time.monotonic()


def group_offsets(bootstrap: str, spec: PipelineSpec, partitions: int = 2) -> dict[int, int]:
    """The group's committed offsets on the input partitions, through the admin API (-1: none)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    req = ConsumerGroupTopicPartitions(
        spec.group_id, [TopicPartition(spec.input.topic, p) for p in range(partitions)]
    )
    got = admin.list_consumer_group_offsets([req])[spec.group_id].result(timeout=15)
    return {tp.partition: tp.offset for tp in got.topic_partitions}


def committed_now(bootstrap: str, spec: PipelineSpec, timeout_s: float = 60) -> int:
    """Input records the group has committed, retried while the broker settles. (A consumer's
    committed(): the admin API's offset listing can crash the test process while the broker
    restarts; the final checks use it once the broker is settled.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return committed_total(bootstrap, spec)
        except Exception:
            assert time.monotonic() < deadline, "the group's offsets could not be read"
            time.sleep(0.5)


def log_ends(bootstrap: str, spec: PipelineSpec, partitions: int = 2) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    from confluent_kafka.admin import OffsetSpec

    req = {TopicPartition(spec.input.topic, p): OffsetSpec.latest() for p in range(partitions)}
    return {tp.partition: r.result(timeout=15).offset for tp, r in admin.list_offsets(req).items()}


def wait_committed(bootstrap: str, spec: PipelineSpec, at_least: int, worker: subprocess.Popen,
                   log_path: Path, timeout_s: float) -> float:  # fmt: skip
    """Wait until the group has committed ``at_least`` input records; when (monotonic)."""
    deadline = time.monotonic() + timeout_s
    done = -1
    while time.monotonic() < deadline:
        assert worker.poll() is None, tail(log_path)
        done = committed_now(bootstrap, spec, timeout_s)
        if done >= at_least:
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"{done} of {at_least} committed in {timeout_s:.0f} s:\n{tail(log_path)}")


def tail(log_path: Path, chars: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-chars:]


def setup_pipeline(tmp_path: Path, bootstrap: str, kcat: str, name: str, guarantee: str,
                   ) -> tuple[Path, PipelineSpec, dict, list[bytes]]:  # fmt: skip
    data = named_ks_adwin_spec(name)
    data["worker"].update(web_port=free_port(), batch_max_records=200, batch_timeout_ms=20,
                          processing_guarantee=guarantee)  # fmt: skip
    if guarantee == "at_least_once":
        data["worker"]["commit_interval_ms"] = 200
    spec_path, spec = write_pipeline(tmp_path, data, bootstrap, model_rows=3000)
    stream = SyntheticStream(n=N, shift_at=N_BEFORE, seed=31, n_entities=200)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    kcat_produce(kcat, bootstrap, spec.input.topic, lines[:N_BEFORE])
    return spec_path, spec, data, lines


@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_worker_resumes_after_the_broker_returns(
    broker: LocalKafka, kcat: str, tmp_path: Path, guarantee: str, how: str,
    record_property: pytest.RecordProperty,
) -> None:  # fmt: skip
    bootstrap = broker.bootstrap
    spec_path, spec, data, lines = setup_pipeline(
        tmp_path, bootstrap, kcat, f"restart-{how}-{guarantee[:5]}", guarantee
    )
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"
    log_path = tmp_path / "worker.log"
    w = start_worker(spec_path, bootstrap, log_path, "w-restart")
    try:
        # the broker goes while the worker is busy with the first part
        wait_for_metric(url, "driftline_records_consumed_total", N_BEFORE // 4, w, log_path)
        lines_before = len(log_path.read_text(errors="replace").splitlines())
        take_down(broker, how)
        time.sleep(DOWN_S)
        assert w.poll() is None, tail(log_path)
        back = bring_back(broker)
        lines_outage = len(log_path.read_text(errors="replace").splitlines()) - lines_before
        before = committed_now(bootstrap, spec)  # nothing commits while it is away
        kcat_produce(kcat, bootstrap, spec.input.topic, lines[N_BEFORE:])
        # resumed: the group's committed offsets move again
        resume_s = wait_committed(bootstrap, spec, before + 1, w, log_path, 90) - back
        caught_up_s = wait_committed(bootstrap, spec, N, w, log_path, 150) - back
        record_property("resume_s", round(resume_s, 2))
        record_property("caught_up_s", round(caught_up_s, 2))
        print(f"\n{guarantee} broker {how}: committing again {resume_s:.1f} s after the broker "
              f"returned, all {N} committed after {caught_up_s:.1f} s ({before} before); "
              f"{lines_outage} log lines while it was away")  # fmt: skip
        assert resume_s < RESUME_BOUND_S, tail(log_path)
        # the group's offsets are the log end (for lag monitors), nothing left to process
        deadline = time.monotonic() + 30
        while group_offsets(bootstrap, spec) != log_ends(bootstrap, spec):
            assert time.monotonic() < deadline, (group_offsets(bootstrap, spec),
                                                 log_ends(bootstrap, spec))  # fmt: skip
            time.sleep(0.5)
    finally:
        t0 = time.monotonic()
        stop_process(w, STOP_BOUND_S)
        stop_s = time.monotonic() - t0
    assert w.returncode == 0 and stop_s < 30, (w.returncode, stop_s, tail(log_path))

    text = log_path.read_text(errors="replace")
    # one line when the brokers are lost, one when they are back (a stalled commit counts as
    # losing them too), not the clients' hundreds of lines a second
    lost = text.count("lost connection to the Kafka brokers")
    back_lines = text.count("reconnected to the Kafka brokers")
    assert 1 <= lost <= 3 and back_lines == lost, text[-4000:]
    assert lines_outage < 60 + 10 * DOWN_S, f"{lines_outage} lines during the outage"

    reference = reference_outputs(bootstrap, spec)
    written = written_outputs(bootstrap, spec, at_least=N)
    if guarantee == "exactly_once":  # every input offset exactly once, the same values
        assert_exactly_once(reference, written)
    else:  # at least once, and repeats are copies: the state never counts anything twice
        assert set(written.features) == set(reference.features), "feature vectors lost"
        differing = [p for p, f in reference.features.items() if written.features[p] != f]
        assert differing == [], f"{len(differing)} feature vectors differ"
        assert set(written.alerts) == set(reference.alerts) and reference.alerts


def test_sigterm_ends_a_worker_while_the_broker_is_away(
    broker: LocalKafka, kcat: str, tmp_path: Path
) -> None:
    """No hang on the way out either: the broker is gone mid-stream and stays gone."""
    spec_path, _, data, _ = setup_pipeline(
        tmp_path, broker.bootstrap, kcat, "restart-sigterm", "exactly_once"
    )
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"
    log_path = tmp_path / "worker.log"
    w = start_worker(spec_path, broker.bootstrap, log_path, "w-sigterm")
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N_BEFORE // 4, w, log_path)
        take_down(broker, "kill")
        time.sleep(DOWN_S)
        assert w.poll() is None, tail(log_path)
    finally:
        t0 = time.monotonic()
        stop_process(w, STOP_BOUND_S)
        stop_s = time.monotonic() - t0
    print(f"\nSIGTERM with the broker away: exited {w.returncode} in {stop_s:.1f} s")
    assert stop_s < STOP_BOUND_S - 5, tail(log_path)
    assert w.returncode in (0, 1), tail(log_path)


def test_at_least_once_commits_the_restored_snapshot_offsets_without_new_input(
    broker: LocalKafka, kcat: str, tmp_path: Path
) -> None:
    """A worker stopped between a snapshot and its offset commit leaves the group behind the
    snapshot (simulated by rewinding the group): the next worker commits the snapshot's offsets
    at once, with no new input, so lag monitors see no lag that is not there."""
    bootstrap = broker.bootstrap
    spec_path, spec, data, _ = setup_pipeline(tmp_path, bootstrap, kcat, "alo-lag", "at_least_once")
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"
    log1 = tmp_path / "worker1.log"
    w1 = start_worker(spec_path, bootstrap, log1, "w-lag")
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N_BEFORE, w1, log1)
    finally:
        stop_process(w1, STOP_BOUND_S)  # a clean stop: the last snapshot covers everything
    assert w1.returncode == 0, tail(log1)
    ends = log_ends(bootstrap, spec)
    assert sum(ends.values()) == N_BEFORE
    admin = AdminClient({"bootstrap.servers": bootstrap})
    behind = {0: ends[0] // 3, 1: 0}
    rewind = ConsumerGroupTopicPartitions(
        spec.group_id, [TopicPartition(spec.input.topic, p, o) for p, o in behind.items()]
    )
    deadline = time.monotonic() + 60
    while True:  # possible once the static member's session has expired
        try:
            done = admin.alter_consumer_group_offsets([rewind])[spec.group_id].result(timeout=30)
            if all(tp.error is None for tp in done.topic_partitions):
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "could not rewind the group"
        time.sleep(2)
    assert group_offsets(bootstrap, spec) == behind

    log2 = tmp_path / "worker2.log"
    w2 = start_worker(spec_path, bootstrap, log2, "w-lag")
    try:
        deadline = time.monotonic() + 60
        while group_offsets(bootstrap, spec) != ends:
            assert w2.poll() is None, tail(log2)
            assert time.monotonic() < deadline, (group_offsets(bootstrap, spec), ends, tail(log2))
            time.sleep(0.5)
        time.sleep(1.0)
        consumed = metric(url, "driftline_records_consumed_total")
    finally:
        stop_process(w2, STOP_BOUND_S)
    assert w2.returncode == 0, tail(log2)
    assert consumed == 0, "the restarted worker re-read what its snapshot covers"
