"""``driftline worker --processes 2`` on a real broker: two group members under one supervisor.

Each process takes one of the two partitions; the supervisor's one /metrics page shows both,
labelled by process. One process is SIGKILLed mid-stream: the supervisor starts it again with
the same worker id, it fences its predecessor and resumes, and what was written equals an
undisturbed run. SIGTERM to the supervisor stops every process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from driftline.agents.demo import named_ks_adwin_spec, worker_argv
from driftline.agents.scrape import parse_samples, read_text, sample_sum
from driftline.agents.synthetic import SyntheticStream
from tests.kafka_helpers import free_ports, kcat_produce, wait_until_committed, write_pipeline
from tests.reference_run import assert_exactly_once, reference_outputs, written_outputs

pytestmark = pytest.mark.integration

N = 16_000


def samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    try:
        return parse_samples(read_text(url + "/metrics"))
    except OSError:
        return []


def wait(cond, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"supervisor exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def pids(url: str) -> dict[int, int]:
    found = re.findall(r"process (\d+): pid (\d+)", read_text(url + "/"))
    return {int(i): int(p) for i, p in found}


def test_two_processes_share_the_partitions_survive_a_kill_and_stop_together(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    data = named_ks_adwin_spec(f"procs-{unique}")
    data["worker"].update(batch_max_records=200, batch_timeout_ms=20)
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=3000)
    stream = SyntheticStream(n=N, shift_at=N // 2, seed=5, n_entities=300)
    lines = [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in stream.events()]
    port = free_ports(3)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "supervisor.log"
    argv = ["--processes", "2", "--web-port", str(port), "--worker-id", "box"]
    sup = subprocess.Popen(
        worker_argv(spec_path, kafka_bootstrap, *argv),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        def each_has_one() -> bool:
            s = samples(url)
            return all(
                sample_sum(s, "driftline_assigned_partitions", {"process": p}) == 1
                for p in ("0", "1")
            )

        wait(each_has_one, sup, log)
        assert sample_sum(samples(url), "driftline_process_up") == 2
        assert read_text(url + "/healthz") == "process 0: ok\nprocess 1: ok\n"
        kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[: N // 2])
        wait(lambda: sample_sum(samples(url), "driftline_records_consumed_total") > 1000, sup, log)
        victim = pids(url)[1]
        os.kill(victim, signal.SIGKILL)
        wait(lambda: pids(url).get(1) not in (None, victim), sup, log, 30)
        kcat_produce(kcat, kafka_bootstrap, spec.input.topic, lines[N // 2 :])
        wait_until_committed(kafka_bootstrap, spec, N, sup, log, 150)
        wait(each_has_one, sup, log)
        children = list(pids(url).values())
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(60) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(30)
    text = log.read_text()
    assert f"worker process 1 (pid {victim}) was killed by signal 9; starting it again" in text
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert_exactly_once(reference_outputs(kafka_bootstrap, spec), written_outputs(
        kafka_bootstrap, spec, at_least=N))  # fmt: skip
