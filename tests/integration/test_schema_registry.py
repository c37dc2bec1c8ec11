"""Schema Registry formats end to end on a real broker.

Values are written by the client library's own serializers (Avro, Protobuf, JSON Schema) into its
in-memory registry (``mock://NAME``, one per name in a process), produced to a real topic, and read
by the worker's batch loop (``TransactionalRunner``) in this process, so it resolves the ids in
the same registry. Checked: every good event becomes a feature vector with the right values,
every bad one a dead letter with its reason, nothing else. Then the registry is unreachable (an
http URL to a closed port): the loop pauses without dead-lettering anything, says so once in its
log, on ``/metrics`` and ``/healthz``, and once the registry answers it reads every held record.
A ``driftline worker`` subprocess with the closed-port registry shows the same on its own
``/metrics`` and log.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from driftline.agents.demo import _to_toml, worker_argv
from driftline.agents.kafka_io import ensure_topics
from driftline.agents.metrics import WorkerMetrics
from driftline.agents.registry import ENV_BASIC_AUTH, registry_client
from driftline.agents.runner import TransactionalRunner
from driftline.agents.scrape import read_metric, read_text
from driftline.agents.worker import preflight
from driftline.localkafka import free_port
from driftline.schemas import load_schema, validate
from driftline.spec import PipelineSpec, SchemaRegistrySpec, parse_spec
from tests.agents.test_formats import EVENT, JSON_SCHEMA, _proto_event
from tests.kafka_helpers import LogLines, read_topic

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
N = 40  # good events per run: entity u{i % 4}, amount i
SECRET = "Registry-Pw-6b1e"  # the basic-auth password of the worker subprocess


def _spec(fmt: str, url: str, **registry: Any) -> PipelineSpec:
    name = f"sr-{fmt}-{uuid.uuid4().hex[:8]}"
    data = {
        "pipeline": {"name": name},
        "input": {"topic": f"{name}.events", "format": fmt, "key_field": "user.id",
                  "time_field": "ts",
                  "fields": {"user.id": "string", "ts": "timestamp", "amount": "float"}},
        "schema_registry": {"url": url, **registry},
        "features": [{"name": "amount_sum", "agg": "sum", "field": "amount",
                      "window_ms": 3_600_000}],
        "output": {k: f"{name}.{k.removesuffix('_topic')}" for k in
                   ("features_topic", "predictions_topic", "alerts_topic", "dlq_topic",
                    "late_topic", "model_metrics_topic")},
        "worker": {"web_port": free_port()},
    }  # fmt: skip
    return parse_spec(data)


CTX = SerializationContext("events", MessageField.VALUE)


def _event(i: int) -> dict[str, Any]:
    return {"user": {"id": f"u{i % 4}", "country": "de"}, "ts": T0 + i, "amount": float(i),
            "n": i, "ok": True}  # fmt: skip


def _writers(client: Any) -> dict[str, Callable[[int], bytes]]:
    from datetime import UTC, datetime, timedelta

    avro = AvroSerializer(client, EVENT)
    js = JSONSerializer(JSON_SCHEMA, client)
    event = _proto_event()
    proto = ProtobufSerializer(event, client, {"use.deprecated.format": False})

    def avro_value(i: int) -> bytes:
        ev = _event(i)
        return avro({**ev, "ts": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=i)},
                    CTX)  # fmt: skip

    def proto_value(i: int) -> bytes:
        msg = event(ts=T0 + i, amount=float(i), n=i, ok=True)
        msg.user.id, msg.user.country = f"u{i % 4}", "de"
        return proto(msg, CTX)

    return {"avro": avro_value, "json_schema": lambda i: js(_event(i), CTX),
            "protobuf": proto_value}  # fmt: skip


def _produce(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, v in enumerate(values):
        p.produce(topic, v, f"k{i % 4}".encode(), partition=i % 2)
    assert p.flush(60) == 0


@pytest.fixture
def registry_log() -> Iterator[list[str]]:
    handler = LogLines()
    logger = logging.getLogger("driftline.schema_registry")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def _run(spec: PipelineSpec, bootstrap: str) -> TransactionalRunner:
    preflight(spec, bootstrap)
    runner = TransactionalRunner(spec, bootstrap, WorkerMetrics(spec.name), None, "none",
                                 f"{spec.name}-w")  # fmt: skip
    runner.start()
    return runner


def _stop(runner: TransactionalRunner) -> None:
    runner.stop()
    runner.join(60)
    assert runner.error is None


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "json_schema"])
def test_each_format_end_to_end(kafka_bootstrap: str, fmt: str) -> None:
    spec = _spec(fmt, f"mock://e2e-{fmt}-{uuid.uuid4().hex[:6]}")
    assert spec.schema_registry is not None
    client = registry_client(spec.schema_registry)
    write = _writers(client)[fmt]
    good = [write(i) for i in range(N)]
    bad = {
        "bad_wire_format": [None, b'{"user": {"id": "u1"}}', b"\x00\x00"],
        "unknown_schema_id": [b"\x00" + (4321).to_bytes(4, "big") + good[0][5:]],
        "schema_decode_error": [good[1][:6]],
    }
    values: list[bytes | None] = [*good, *(v for vs in bad.values() for v in vs)]
    ensure_topics(kafka_bootstrap, [spec.input.topic], partitions=2)
    _produce(kafka_bootstrap, spec.input.topic, values)
    runner = _run(spec, kafka_bootstrap)
    try:
        dlq = read_topic(kafka_bootstrap, spec.output.dlq_topic, at_least=5)
        vectors = read_topic(kafka_bootstrap, spec.output.features_topic, at_least=N)
    finally:
        _stop(runner)
    reasons = Counter(orjson.loads(r.value)["reason"] for r in dlq)
    assert reasons == {k: len(v) for k, v in bad.items()}
    docs = [orjson.loads(r.value) for r in vectors]
    assert len(docs) == N
    # per entity, the running sum of its amounts in event order (one 1-hour window)
    last: dict[str, float] = {}
    for d in sorted(docs, key=lambda d: d["event_time_ms"]):
        last[d["entity"]] = d["features"]["amount_sum"]
    assert last == {f"u{e}": float(sum(range(e, N, 4))) for e in range(4)}
    up = runner.metrics.schema_registry_up.labels(fmt)._value.get()
    assert up == 1.0


def test_unreachable_registry_pauses_then_resumes(
    kafka_bootstrap: str, registry_log: list[str]
) -> None:
    """Nothing is dead-lettered while the registry is down; one log line when it goes, one when
    it is back; /healthz says why; every held record is read afterwards."""
    mock = f"mock://outage-{uuid.uuid4().hex[:6]}"
    spec = _spec("avro", f"http://127.0.0.1:{free_port()}", timeout_ms=500,
                 retry_backoff_ms=100, retry_backoff_max_ms=400)  # fmt: skip
    client = registry_client(_mock_registry(mock))
    values = [_writers(client)["avro"](i) for i in range(N)]
    ensure_topics(kafka_bootstrap, [spec.input.topic], partitions=2)
    _produce(kafka_bootstrap, spec.input.topic, values)
    runner = _run(spec, kafka_bootstrap)
    m = runner.metrics
    try:
        deadline = time.monotonic() + 60
        while m.schema_registry_retries.labels("avro")._value.get() < 3:
            assert time.monotonic() < deadline and runner.is_alive(), registry_log
            time.sleep(0.1)
        assert m.schema_registry_up.labels("avro")._value.get() == 0.0
        gate = runner.registry_gate
        assert gate is not None and gate.backoff_s == 0.4  # 0.1, doubled twice, capped at 0.4
        health = runner.health()
        assert health["status"] == "registry_unreachable", health
        assert "ConnectError" in health["reason"]
        reasons = ("bad_wire_format", "unknown_schema_id", "schema_decode_error")
        assert sum(m.dead_lettered.labels(r)._value.get() for r in reasons) == 0
        assert m.consumed.labels(spec.input.topic)._value.get() == 0
        # the registry becomes reachable: the readers' client now reaches one holding the schema
        assert runner.schema_readers is not None
        runner.schema_readers.client = client
        vectors = read_topic(kafka_bootstrap, spec.output.features_topic, at_least=N)
    finally:
        _stop(runner)
    assert len(vectors) == N
    assert read_topic(kafka_bootstrap, spec.output.dlq_topic) == []
    assert m.schema_registry_up.labels("avro")._value.get() == 1.0
    assert (gate.backoff_s, gate.held, gate.pending) == (0.1, [], set())  # reset for next time
    down = [ln for ln in registry_log if "unreachable: cannot resolve schema id 1" in ln]
    back = [ln for ln in registry_log if "answers again; resuming consumption" in ln]
    assert len(down) == 1 and "consumption paused, retrying in 0.1 s" in down[0], registry_log
    assert len(back) == 1, registry_log


def read_text_any(url: str) -> str:
    """The body at ``url`` whatever the HTTP status (``/healthz`` answers 503 when unhealthy)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError as e:
        return str(e.read().decode())


def _mock_registry(url: str) -> SchemaRegistrySpec:
    sr = _spec("avro", url).schema_registry
    assert sr is not None
    return sr


def _spec_dict(spec: PipelineSpec) -> dict[str, Any]:
    return {
        "pipeline": {"name": spec.name},
        "input": {"topic": spec.input.topic, "format": spec.input.format,
                  "key_field": spec.input.key_field, "time_field": spec.input.time_field,
                  "fields": dict(spec.input.fields)},
        "features": [{"name": "amount_sum", "agg": "sum", "field": "amount",
                      "window_ms": 3_600_000}],
        "schema_registry": {"url": spec.schema_registry.url},  # type: ignore[union-attr]
    }  # fmt: skip


def test_worker_process_pauses_on_an_unreachable_registry(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The real command: ``driftline worker`` with a registry on a closed port logs it once,
    exports driftline_schema_registry_up 0 and a growing retry count, says so on /healthz,
    dead-letters nothing, never shows the basic-auth password (log at debug level, /metrics,
    /status, /status.json, /healthz) and stops cleanly on SIGTERM."""
    spec = _spec("avro", f"http://127.0.0.1:{free_port()}", timeout_ms=500,
                 retry_backoff_ms=100, retry_backoff_max_ms=200)  # fmt: skip
    data = _spec_dict(spec)
    data["schema_registry"] = {"url": spec.schema_registry.url, "timeout_ms": 500,  # type: ignore[union-attr]
                               "retry_backoff_ms": 100, "retry_backoff_max_ms": 200}  # fmt: skip
    data["output"] = {"dlq_topic": spec.output.dlq_topic,
                      "features_topic": spec.output.features_topic}  # fmt: skip
    data["worker"] = {"web_port": spec.worker.web_port}
    path = tmp_path / "spec.toml"
    path.write_text(_to_toml(data))
    client = registry_client(_mock_registry(f"mock://proc-{uuid.uuid4().hex[:6]}"))
    ensure_topics(kafka_bootstrap, [spec.input.topic], partitions=2)
    _produce(kafka_bootstrap, spec.input.topic, [_writers(client)["avro"](i) for i in range(N)])
    log_path = tmp_path / "worker.log"
    env = {**os.environ, ENV_BASIC_AUTH: f"driftline:{SECRET}"}
    proc = subprocess.Popen(
        worker_argv(path, kafka_bootstrap, "--loglevel", "debug", "--create-topics"),
        stdout=subprocess.DEVNULL, stderr=log_path.open("wb"), env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{spec.worker.web_port}/metrics"
    try:
        deadline = time.monotonic() + 90
        retries = -1.0
        while retries < 5:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            try:
                retries = read_metric(url, "driftline_schema_registry_retries_total",
                                      {"format": "avro"})  # fmt: skip
            except OSError:
                pass
            time.sleep(0.3)
        assert read_metric(url, "driftline_schema_registry_up", {"format": "avro"}) == 0.0
        pages = [read_text(url.replace("/metrics", page)) for page in
                 ("/metrics", "/status", "/status.json")]  # fmt: skip
        health = read_text_any(url.replace("/metrics", "/healthz"))
        assert orjson.loads(health)["status"] == "registry_unreachable", health
        assert not any(SECRET in page for page in [*pages, health])
        assert read_metric(url, "driftline_records_dead_lettered_total") == 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert log.count("unreachable: cannot resolve schema id 1: ConnectError") == 1, log[-3000:]
    assert SECRET not in log
    assert read_topic(kafka_bootstrap, spec.output.dlq_topic) == []


def _json_form(doc: Any, node: dict[str, Any]) -> Any:
    """An Avro-decoded document as its JSON twin: the optional keys the JSON leaves out (None
    in Avro, where every field is present) dropped, following the JSON Schema ``node``."""
    if "$ref" in node:
        node = load_schema(node["$ref"].removesuffix(".schema.json"))
    if not isinstance(doc, dict):
        return doc
    props, required = node.get("properties", {}), set(node.get("required", ()))
    if not props and isinstance(node.get("additionalProperties"), dict):
        return {k: _json_form(v, node["additionalProperties"]) for k, v in doc.items()}
    return {k: _json_form(v, props.get(k, {})) for k, v in doc.items()
            if v is not None or k in required}  # fmt: skip


def test_avro_outputs_are_registered_per_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    """output.format = "avro": every output topic's values are in the wire format under the
    schema registered as <topic>-value (TopicNameStrategy); the library's own AvroDeserializer
    reads them back as documents that match the JSON Schemas; `alerts tail` reads them too."""
    from io import StringIO

    from confluent_kafka.schema_registry.avro import AvroDeserializer

    from driftline.agents.alerts_tail import tail_alerts
    from driftline.agents.demo import named_ks_adwin_spec
    from driftline.agents.formats import SchemaReaders
    from driftline.agents.predictor import build_predictor
    from driftline.agents.synthetic import SyntheticStream
    from driftline.alert_format import format_alert
    from tests.kafka_helpers import write_pipeline

    name = f"sr-out-{uuid.uuid4().hex[:8]}"
    data = named_ks_adwin_spec(name)
    data["output"]["format"] = "avro"
    data["schema_registry"] = {"url": f"mock://{name}"}
    data["worker"]["web_port"] = free_port()
    _, spec = write_pipeline(tmp_path, data, kafka_bootstrap, model_rows=2_000)
    assert spec.schema_registry is not None
    client = registry_client(spec.schema_registry)
    n = 4_000
    events = list(SyntheticStream(n=n, shift_at=n // 2, n_entities=50).events())
    p = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for e in events:
        p.produce(spec.input.topic, orjson.dumps(e), e["user_id"].encode())
    p.produce(spec.input.topic, b"not json", b"u1")
    assert p.flush(60) == 0
    preflight(spec, kafka_bootstrap)
    predictor, version = build_predictor(spec)
    runner = TransactionalRunner(spec, kafka_bootstrap, WorkerMetrics(spec.name), predictor,
                                 version, f"{name}-w")  # fmt: skip
    runner.start()
    try:
        read_topic(kafka_bootstrap, spec.output.predictions_topic, at_least=n, timeout_s=180)
        read_topic(kafka_bootstrap, spec.output.alerts_topic, at_least=1, timeout_s=60)
    finally:
        _stop(runner)
    o = spec.output
    read = AvroDeserializer(client)
    docs: dict[str, list[dict[str, Any]]] = {}
    for topic, schema in ((o.features_topic, "feature_vector"), (o.predictions_topic, "prediction"),
                          (o.alerts_topic, "alert"), (o.dlq_topic, "dead_letter")):  # fmt: skip
        sid = client.get_latest_version(f"{topic}-value").schema_id
        recs = read_topic(kafka_bootstrap, topic)
        assert recs and all(r.value[:5] == b"\x00" + sid.to_bytes(4, "big") for r in recs)
        docs[topic] = [_json_form(read(r.value, None), load_schema(schema)) for r in recs]
        for d in docs[topic]:
            validate(schema, d)
    assert len(docs[o.features_topic]) == len(docs[o.predictions_topic]) == n
    assert [d["reason"] for d in docs[o.dlq_topic]] == ["invalid_json"]
    assert {d["entity"] for d in docs[o.predictions_topic]} == {e["user_id"] for e in events}
    alerts = docs[o.alerts_topic]
    assert alerts and {a["status"] for a in alerts} <= {"firing", "resolved"}
    out = StringIO()
    tail_alerts(kafka_bootstrap, o.alerts_topic, from_beginning=True, max_alerts=len(alerts),
                timeout_s=30, out=out, readers=SchemaReaders(client, "avro"))  # fmt: skip
    assert sorted(out.getvalue().splitlines()) == sorted(format_alert(a) for a in alerts)
