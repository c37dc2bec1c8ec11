"""The state changelog on a real broker: a snapshot written there restores exactly; a record a
restore cannot use (here a pickle crafted to run a command) stops the restore, and a real worker,
with a ChangelogError naming the topic, partition and the record's broker offset. Nothing runs,
nothing restarts empty. (The same cases without a broker: tests/agents/test_state.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from driftline.agents.demo import named_ks_adwin_spec
from driftline.agents.kafka_io import ensure_topics
from driftline.agents.state import (
    CHANGELOG_CONFIG,
    ChangelogError,
    read_changelog_partition,
    restore_snapshot,
)
from driftline.agents.synthetic import SyntheticStream
from driftline.localkafka import free_port
from tests.agents.test_state import Changelog, batches, evil_pickle, fresh, make_spec, run
from tests.kafka_helpers import kcat_produce, read_topic, start_worker, write_pipeline

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, partition: int, records: list) -> list[int]:
    """Send (key, value) records to one partition in order; their offsets."""
    offsets: list[int] = []
    errors: list[str] = []

    def done(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            offsets.append(msg.offset())  # type: ignore[attr-defined]

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "message.max.bytes": 2_000_000})  # fmt: skip
    for key, value in records:
        p.produce(topic, value, key, partition=partition, on_delivery=done)
    assert p.flush(30) == 0 and not errors, errors
    return offsets


def test_a_crafted_record_on_a_real_changelog_is_named_by_its_offset(
    kafka_bootstrap: str, tmp_path: Path, unique: str
) -> None:
    from driftline.agents.demo import train_demo_model

    model = tmp_path / "m.pkl"
    train_demo_model(model, ["amount", "latency_ms", "amount_mean_1m"], n=3_000)
    spec = make_spec(model)
    topic = f"state-{unique}.state-changelog"
    ensure_topics(kafka_bootstrap, [topic], 1, config=CHANGELOG_CONFIG)
    bs = batches()
    cut = len(bs) // 2
    live = fresh(spec)
    live.engine.track_changes()
    log = Changelog()
    for b in bs[:cut]:
        run(live, [b])
        log.persist(live)
    produce(kafka_bootstrap, topic, 0, log.records)
    expected = run(live, bs[cut:])

    records = read_changelog_partition(kafka_bootstrap, topic, 0)
    pipe = fresh(spec)
    assert restore_snapshot(records, 0, pipe.restore) is not None
    assert run(pipe, bs[cut:]) == expected  # online model, detectors, join: as if never stopped

    marker = tmp_path / "pwned"
    [offset] = produce(kafka_bootstrap, topic, 0, [(b"0/head", evil_pickle(marker))])
    records = read_changelog_partition(kafka_bootstrap, topic, 0)
    assert records.offsets[b"0/head"] == offset
    with pytest.raises(ChangelogError) as e:
        restore_snapshot(records, 0, fresh(spec).restore)
    assert f"topic {topic}, partition 0, offset {offset} (key '0/head'): " in str(e.value)
    assert "--reset-state 0" in str(e.value)
    assert not marker.exists()


def test_a_worker_stops_on_a_poisoned_changelog_naming_the_record(
    kafka_bootstrap: str, kcat: str, tmp_path: Path, unique: str
) -> None:
    data = named_ks_adwin_spec(f"poison-{unique}")
    data["worker"].update(web_port=free_port())
    spec_path, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=2_000)
    changelog = f"{spec.group_id}.state-changelog"
    ensure_topics(kafka_bootstrap, [changelog], 2, config=CHANGELOG_CONFIG)
    marker = tmp_path / "pwned"
    [offset] = produce(kafka_bootstrap, changelog, 0, [(b"0/head", evil_pickle(marker))])
    events = list(SyntheticStream(n=500, shift_at=500, seed=1, n_entities=20).events())
    kcat_produce(kcat, kafka_bootstrap, spec.input.topic,
                 [e["user_id"].encode() + b"|" + orjson.dumps(e) for e in events])  # fmt: skip

    log_path = tmp_path / "worker.log"
    w = start_worker(spec_path, kafka_bootstrap, log_path, worker_id="w-poison")
    try:
        code = w.wait(180)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait(30)
    text = log_path.read_text(errors="replace")
    assert code != 0, text[-3000:]
    assert "ChangelogError" in text, text[-3000:]
    assert f"topic {changelog}, partition 0, offset {offset} (key '0/head')" in text
    assert "--reset-state 0" in text
    assert not marker.exists()
    # the poisoned partition was not started over: nothing came of its events (partition 1,
    # restored beside it in the background, may have run until the worker stopped)
    time.sleep(1)
    written = read_topic(kafka_bootstrap, spec.output.features_topic)
    assert [r for r in written if orjson.loads(r.value)["source"]["partition"] == 0] == []
