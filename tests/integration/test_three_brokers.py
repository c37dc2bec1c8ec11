"""An exactly_once worker on a local 3-broker cluster; one broker is SIGKILLed mid-stream and
restarted. Every input offset must have exactly one output (read_committed) and the alerts must
equal an undisturbed run's over the same input (tests/reference_run.py).

Also: the topics the worker creates are production-shaped on 3 brokers (3 replicas, min ISR 2,
the changelog compacted, the faust host's topic replicated too), and a spec asking more
replicas than the cluster has is refused with one config error line (exit status 2).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from driftline.agents.demo import named_ks_adwin_spec, stop_process
from driftline.agents.kafka_io import ensure_topics
from driftline.agents.synthetic import SyntheticStream
from driftline.agents.topics import host_leader_topic
from driftline.localcluster import LocalCluster
from driftline.localkafka import free_port
from driftline.spec import PipelineSpec
from tests.kafka_helpers import (
    committed_total,
    kcat_produce,
    start_worker,
    wait_for_metric,
    write_pipeline,
)
from tests.reference_run import assert_exactly_once, reference_outputs, written_outputs
from tests.specs import minimal_spec

pytestmark = pytest.mark.integration

N = 24_000
#: bound on finishing the stream once the killed broker is back
FINISH_S = 180.0


def _shape(bootstrap: str, topic: str) -> tuple[int, str, str]:
    """(replicas of partition 0, min.insync.replicas, cleanup.policy) of ``topic``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    replicas = len(admin.list_topics(timeout=10).topics[topic].partitions[0].replicas)
    (fut,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    config = {name: entry.value for name, entry in fut.result(timeout=30).items()}
    return replicas, config["min.insync.replicas"], config["cleanup.policy"]


def _java_hash(s: str) -> int:
    """Java's ``String.hashCode`` (ASCII ``s``)."""
    h = 0
    for ch in s:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _transaction_coordinator(bootstrap: str, transactional_id: str) -> int:
    """The broker coordinating ``transactional_id``: the leader of its __transaction_state
    partition (Kafka's TransactionStateManager.partitionFor)."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    parts = md.topics["__transaction_state"].partitions
    return int(parts[abs(_java_hash(transactional_id)) % len(parts)].leader)


def _wait_committed(
    bootstrap: str, spec: PipelineSpec, at_least: int, proc: subprocess.Popen[bytes], log: Path,
    timeout_s: float, when: str,
) -> None:  # fmt: skip
    """Wait (bounded) until the worker has committed ``at_least`` input records."""
    deadline = time.monotonic() + timeout_s
    while (done := committed_total(bootstrap, spec)) < at_least:
        tail = log.read_text(errors="replace")[-4000:]
        if proc.poll() is not None:
            raise AssertionError(
                f"the worker exited {proc.returncode} {when} ({done}/{at_least} committed):\n{tail}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the exactly_once worker committed {done} of {at_least} input records in "
                f"{timeout_s:.0f} s {when}: it stalls after a broker loss (see agents/runner.py "
                f"and agents/commit/). Last log lines:\n{tail}"
            )
        time.sleep(0.5)


def test_a_sigkilled_broker_loses_and_doubles_nothing(
    kafka_cluster3: LocalCluster, kcat: str, tmp_path: Path, unique: str
) -> None:
    cluster = kafka_cluster3
    bootstrap = cluster.bootstrap
    data = named_ks_adwin_spec(f"c3-{unique}")
    data["worker"].update(web_port=free_port(), batch_max_records=200, batch_timeout_ms=20)
    spec_path, spec = write_pipeline(tmp_path, data, bootstrap, model_rows=3000)
    assert spec.worker.processing_guarantee == "exactly_once"
    stream = SyntheticStream(n=N, shift_at=N // 2, seed=31, n_entities=300)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    first = int(N * 0.6)  # the rest while the broker is down, so the kill lands mid-stream
    kcat_produce(kcat, bootstrap, spec.input.topic, lines[:first])
    url = f"http://127.0.0.1:{data['worker']['web_port']}/metrics"

    log = tmp_path / "worker.log"
    worker = start_worker(spec_path, bootstrap, log, "w-c3")
    killed = -1
    try:
        wait_for_metric(url, "driftline_records_consumed_total", N // 4, worker, log)
        # the worker created its topics production-shaped: the spec's defaults on 3 brokers
        for topic in spec.output.all_topics:
            assert _shape(bootstrap, topic) == (3, "2", "delete"), topic
        assert _shape(bootstrap, f"{spec.group_id}.state-changelog") == (3, "2", "compact")
        assert _shape(bootstrap, host_leader_topic(spec))[:2] == (3, "2")

        # SIGKILL the worker's transaction coordinator, mid-stream
        txn_id = f"{spec.group_id}.w-c3"
        killed = _transaction_coordinator(bootstrap, txn_id) - 1
        done_at_kill = committed_total(bootstrap, spec)
        cluster.kill_broker(killed)
        kcat_produce(kcat, bootstrap, spec.input.topic, lines[first:])
        # with one broker of three down, min ISR 2 still takes writes: the worker goes on
        down = f"while broker {killed} (its transaction coordinator) was down"
        _wait_committed(bootstrap, spec, min(N, done_at_kill + 2000), worker, log, 90, down)
        cluster.start_broker(killed)
        _wait_committed(bootstrap, spec, N, worker, log, FINISH_S,
                        f"after broker {killed} was SIGKILLed and restarted")  # fmt: skip
        assert done_at_kill < N
    finally:
        stop_process(worker, 30.0)  # SIGTERM; SIGKILL if it has not exited within 30 s
        cluster.start()  # every broker up again for the next test
    assert worker.returncode == 0, (
        f"the worker did not stop cleanly on SIGTERM (exit {worker.returncode}):\n"
        + log.read_text(errors="replace")[-3000:]
    )

    assert_exactly_once(
        reference_outputs(bootstrap, spec), written_outputs(bootstrap, spec, at_least=N)
    )


def _topics_create(spec: Path, bootstrap: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", "topics", "create", "-c", str(spec),
         "--bootstrap", bootstrap],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_topics_create_on_three_brokers_and_an_existing_under_replicated_topic(
    kafka_cluster3: LocalCluster, tmp_path: Path, unique: str
) -> None:
    bootstrap = kafka_cluster3.bootstrap
    p = f"tr-{unique}"
    spec = tmp_path / "spec.toml"
    outputs = "\n".join(
        f'{k}_topic = "{p}.{k}"'
        for k in ("features", "predictions", "alerts", "dlq", "late", "model_metrics")
    )
    spec.write_text(minimal_spec(p, f"{p}.events", f"[output]\n{outputs}\n"))
    ensure_topics(bootstrap, [f"{p}.alerts"], 3, replication_factor=1)  # an older deployment's
    r = _topics_create(spec, bootstrap)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        f"created {p}.features (output, 3 partitions, 3 replicas; min.insync.replicas=2, "
        "retention.bytes=-1, retention.ms=604800000)" in r.stdout
    ), r.stdout
    assert f"created {p}.dlq (dead letters, 3 partitions, 3 replicas; " in r.stdout
    assert (
        f"exists  {p}.alerts (output, 3 partitions; 1 replica, fewer than the 3 [topics] plans: "
        "driftline does not alter existing topics" in r.stdout
    ), r.stdout
    assert _shape(bootstrap, f"{p}.events")[:2] == (3, "2")
    assert _shape(bootstrap, f"driftline.{p}.state-changelog") == (3, "2", "compact")
    assert _shape(bootstrap, f"{p}.alerts")[0] == 1  # not altered


def test_batch_features_load_replicates_its_topic_as_topics_says(
    kafka_cluster3: LocalCluster, tmp_path: Path, unique: str
) -> None:
    topic = f"bf-{unique}.batch"
    spec = tmp_path / "spec.toml"
    extra = f'[batch_features]\ntopic = "{topic}"\n[batch_features.fields]\nscore = "float"\n'
    spec.write_text(minimal_spec(f"bf-{unique}", f"bf-{unique}.events", extra))
    rows = tmp_path / "users.csv"
    rows.write_text("user_id,score\nu1,0.5\nu2,1.5\n")
    r = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "batch-features", "load", "-c", str(spec),
         str(rows), "--bootstrap", kafka_cluster3.bootstrap, "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert _shape(kafka_cluster3.bootstrap, topic) == (3, "2", "compact")


def test_more_replicas_than_brokers_is_one_config_error(
    kafka_cluster3: LocalCluster, tmp_path: Path, unique: str
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(
        minimal_spec(f"rf-{unique}", f"rf-{unique}.events", "[topics]\nreplication_factor = 4\n")
    )
    r = _topics_create(spec, kafka_cluster3.bootstrap)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert (
        "spec key topics.replication_factor: 4 replicas, but the cluster lists 3 live brokers"
        in lines[0]
    )
    assert "Traceback" not in r.stderr
