"""Schema Registry input formats: values written by the client library's own serializers into its
in-memory registry (``mock://``), decoded into the pipeline's fields or dead-lettered with a
precise reason; an unreachable registry is never the record's fault."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
from google.protobuf.message_factory import GetMessageClass

from driftline.agents.decode import RecordDecoder
from driftline.agents.formats import (
    RegistryUnavailable,
    SchemaReaders,
    registry_format,
    wire_schema_id,
)
from driftline.agents.pipeline import PartitionPipeline, RawRecord
from driftline.agents.registry import (
    ENV_BASIC_AUTH,
    ENV_KEY_PASSWORD,
    registry_client,
    registry_client_config,
    registry_secrets,
)
from driftline.errors import RecordError, SpecError
from driftline.localkafka import free_port
from driftline.spec import SchemaRegistrySpec, parse_spec

CTX = SerializationContext("events", MessageField.VALUE)
FIELDS = {"user.id": "string", "user.country": "string", "ts": "timestamp", "amount": "float",
          "n": "int", "ok": "bool"}  # fmt: skip
T0 = 1_767_225_600_000
USER = {"type": "record", "name": "User", "fields": [
    {"name": "id", "type": "string"}, {"name": "country", "type": "string"}]}  # fmt: skip


def _avro(*fields: dict[str, Any], name: str = "Event") -> str:
    return orjson.dumps({"type": "record", "name": name, "namespace": "t", "fields": list(fields)}
                        ).decode()  # fmt: skip


EVENT = _avro(
    {"name": "user", "type": USER},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "amount", "type": ["null", "double"]},
    {"name": "n", "type": "long"},
    {"name": "ok", "type": "boolean"},
)
#: the same event with ``n`` written as a string
EVENT_N_TEXT = _avro(
    {"name": "user", "type": USER}, {"name": "ts", "type": "long"},
    {"name": "amount", "type": "double"}, {"name": "n", "type": "string"},
    {"name": "ok", "type": "boolean"},
)  # fmt: skip
#: no country in the user
EVENT_NO_COUNTRY = _avro(
    {"name": "user", "type": {"type": "record", "name": "U2", "fields": [
        {"name": "id", "type": "string"}]}},
    {"name": "ts", "type": "long"}, {"name": "amount", "type": "double"},
    {"name": "n", "type": "long"}, {"name": "ok", "type": "boolean"},
)  # fmt: skip


def _sr(url: str, **kw: Any) -> SchemaRegistrySpec:
    return SchemaRegistrySpec(url, kw.pop("timeout_ms", 5000), 500, 30_000, **kw)


def _ev(**over: Any) -> dict[str, Any]:
    ev = {"user": {"id": "a", "country": "de"}, "ts": datetime(2026, 1, 1, tzinfo=UTC),
          "amount": 1.5, "n": 2, "ok": True}  # fmt: skip
    return {**ev, **over}


def _outcome(f: Callable[[Any], Any], raw: Any) -> tuple:
    try:
        return ("ok", f(raw))
    except RecordError as e:
        return ("err", e.reason, e.detail)


class Registry:
    """One in-memory registry (a fresh ``mock://`` name) and a decoder of a format over it."""

    def __init__(self, fmt: str, max_bytes: int = 300) -> None:
        self.client = registry_client(_sr(f"mock://{fmt}-{uuid.uuid4().hex[:8]}"))
        self.readers = SchemaReaders(self.client, fmt)
        self.decoder = RecordDecoder(FIELDS, "user.id", "ts", max_bytes, extra=("user.country",),
                                     payload=registry_format(self.readers))  # fmt: skip

    def avro(self, schema: str, value: Any) -> bytes:
        return AvroSerializer(self.client, schema, conf={"auto.register.schemas": True})(value, CTX)

    def check(self, raw: Any, expected: tuple) -> None:
        """Fast path and checked path agree, and give ``expected`` (reason and words)."""
        fast, slow = _outcome(self.decoder.decode, raw), _outcome(self.decoder.decode_checked, raw)
        assert fast == slow
        if expected[0] == "ok":
            assert fast == expected
        else:
            assert fast[:2] == expected[:2] and expected[2] in fast[2], fast


GOOD = ("ok", ("a", T0, (1.5, 2.0, 1.0), ("de",)))


def _frame(sid: int, payload: bytes) -> bytes:
    return b"\x00" + sid.to_bytes(4, "big") + payload


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda r: r.avro(EVENT, _ev()), GOOD),
        (lambda r: r.avro(EVENT, _ev(amount=-1e300, n=-7, ok=False,
                                    ts=datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))),
         ("ok", ("a", -1, (-1e300, -7.0, 0.0), ("de",)))),
        (lambda r: None, ("err", "bad_wire_format", "tombstone")),
        (lambda r: b"\x00\x00\x01", ("err", "bad_wire_format", "value is 3 bytes")),
        (lambda r: b'{"user": {"id": "a"}}', ("err", "bad_wire_format", "looks like plain JSON")),
        (lambda r: b"\x01" + uuid.uuid4().bytes, ("err", "bad_wire_format", "schema-GUID")),
        (lambda r: _frame(424242, r.avro(EVENT, _ev())[5:]),
         ("err", "unknown_schema_id", "schema id 424242 is not in the registry (HTTP 404")),
        (lambda r: r.avro(EVENT, _ev())[:-4], ("err", "schema_decode_error", "EOFError")),
        (lambda r: _frame(r.client.register_schema("other-value", Schema('{"type": "object"}',
                                                                        "JSON")), b"{}"),
         ("err", "schema_decode_error", "is a JSON schema but input.format is 'avro'")),
        (lambda r: r.avro(EVENT, _ev(amount=None)), ("err", "missing_field", "'amount' is null")),
        (lambda r: r.avro(EVENT, _ev(amount=float("nan"))), ("err", "non_finite", "'amount'")),
        (lambda r: r.avro(EVENT_N_TEXT, {**_ev(n="2"), "ts": T0}),
         ("err", "wrong_type", "'n' is str")),
        (lambda r: r.avro(EVENT_NO_COUNTRY, {**_ev(user={"id": "a"}), "ts": T0}),
         ("err", "missing_field", "'user.country' is missing")),
        (lambda r: r.avro('"string"', "just text"), ("err", "not_an_object", "Avro str")),
        (lambda r: r.avro(EVENT, _ev(user={"id": "a" * 400, "country": "de"})),
         ("err", "oversized", "over input.max_message_bytes=300")),
    ],
)  # fmt: skip
def test_avro_values(make: Callable[[Registry], Any], expected: tuple) -> None:
    r = Registry("avro")
    raw = make(r)
    r.check(raw, expected)
    if expected[0] == "ok":  # the fast reader reads what the library's AvroDeserializer reads
        assert r.decoder.check_object(AvroDeserializer(r.client)(raw, None)) == expected[1]


def test_avro_schema_ids_are_resolved_once_and_unknown_ones_remembered() -> None:
    r = Registry("avro")
    raws = [r.avro(EVENT, _ev(n=i)) for i in range(50)]
    assert {wire_schema_id(x) for x in raws} == {1}
    calls: list[int] = []
    get_schema = r.client.get_schema
    r.client.get_schema = lambda sid, *a, **k: (calls.append(sid), get_schema(sid, *a, **k))[1]
    unknown = _frame(77, raws[0][5:])
    r.readers.prefetch_ids({1, 77})
    assert [r.decoder.decode(x)[2][1] for x in raws] == [float(i) for i in range(50)]
    for _ in range(3):
        r.check(unknown, ("err", "unknown_schema_id", "schema id 77"))
    r.readers.prefetch_ids({1, 77})  # 77 stays unknown until UNKNOWN_TTL_S has passed
    assert calls == [1, 77]


def _proto_event() -> Any:
    """``srtest.Event`` (user, ts, amount, n, ok, a Timestamp and an enum), built at run time
    the way protoc's output would register it."""
    pool = descriptor_pool.Default()
    try:
        return GetMessageClass(pool.FindMessageTypeByName("srtest.Event"))
    except KeyError:
        pass
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="srtest/events.proto", package="srtest",
                                             syntax="proto3")  # fmt: skip
    fdp.dependency.append(timestamp_pb2.DESCRIPTOR.name)
    kind = fdp.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSET", number=0)
    kind.value.add(name="PURCHASE", number=1)
    user = fdp.message_type.add(name="User")
    user.field.add(name="id", number=1, type=f.TYPE_STRING)
    user.field.add(name="country", number=2, type=f.TYPE_STRING)
    ev = fdp.message_type.add(name="Event")
    ev.field.add(name="user", number=1, type=f.TYPE_MESSAGE, type_name=".srtest.User")
    ev.field.add(name="ts", number=2, type=f.TYPE_INT64)
    ev.field.add(name="amount", number=3, type=f.TYPE_DOUBLE)
    ev.field.add(name="n", number=4, type=f.TYPE_SINT64)
    ev.field.add(name="ok", number=5, type=f.TYPE_BOOL)
    ev.field.add(name="at", number=6, type=f.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    ev.field.add(name="kind", number=7, type=f.TYPE_ENUM, type_name=".srtest.Kind")
    pool.Add(fdp)
    return GetMessageClass(pool.FindMessageTypeByName("srtest.Event"))


def _proto(r: Registry, user: bool = True, **kw: Any) -> bytes:
    event = _proto_event()
    msg = event(**{"ts": T0, "amount": 1.5, "n": 2, "ok": True, **kw})
    if user:
        msg.user.id, msg.user.country = "a", "de"
    return ProtobufSerializer(event, r.client, {"use.deprecated.format": False})(msg, CTX)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda r: _proto(r), GOOD),
        # proto3 zero values are values, not missing fields
        (lambda r: _proto(r, amount=0.0, n=0, ok=False),
         ("ok", ("a", T0, (0.0, 0.0, 0.0), ("de",)))),
        (lambda r: _proto(r, n=-(2**62)), ("ok", ("a", T0, (1.5, float(-(2**62)), 1.0), ("de",)))),
        (lambda r: _proto(r, user=False), ("err", "missing_field", "'user.id' is missing")),
        (lambda r: _proto(r)[:-3], ("err", "schema_decode_error", "schema id 1")),
        (lambda r: _frame(999, _proto(r)[5:]), ("err", "unknown_schema_id", "schema id 999")),
        (lambda r: b"\x07" + _proto(r)[1:], ("err", "bad_wire_format", "magic byte is 0x07")),
        (lambda r: _frame(r.client.register_schema("x-value", Schema(EVENT, "AVRO")), b"\x02"),
         ("err", "schema_decode_error", "is a AVRO schema but input.format is 'protobuf'")),
    ],
)  # fmt: skip
def test_protobuf_values(make: Callable[[Registry], Any], expected: tuple) -> None:
    r = Registry("protobuf")
    r.check(make(r), expected)


def test_protobuf_schemas_are_asked_for_serialized() -> None:
    """A real registry gives a Protobuf schema as .proto text unless asked for the serialized
    descriptor, which is what the library parses (and its cache keeps by id alone)."""
    r = Registry("protobuf")
    raw = _proto(r)
    asked: list[tuple[int, str | None]] = []
    get_schema = r.client.get_schema

    def spy(sid: int, *a: Any, **k: Any) -> Any:  # get_schema(id, subject_name, fmt, ...)
        asked.append((sid, k.get("fmt", a[1] if len(a) > 1 else None)))
        return get_schema(sid, *a, **k)

    r.client.get_schema = spy  # type: ignore[method-assign]
    r.check(raw, GOOD)
    assert asked[0] == (1, "serialized")


def test_protobuf_messages_become_plain_values() -> None:
    r = Registry("protobuf")
    at = timestamp_pb2.Timestamp()
    at.FromMilliseconds(T0 + 5)
    raw = _proto(r, at=at, kind=1)
    obj = r.readers.get(wire_schema_id(raw))(raw)
    assert obj == {"user": {"id": "a", "country": "de"}, "ts": T0, "amount": 1.5, "n": 2,
                   "ok": True, "at": datetime.fromtimestamp((T0 + 5) / 1000, UTC),
                   "kind": "PURCHASE"}  # fmt: skip


JSON_SCHEMA = orjson.dumps({
    "type": "object",
    "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "string"},
                                                  "country": {"type": "string"}}},
        "ts": {"type": "integer"}, "amount": {"type": "number"}, "n": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["user", "ts"],
}).decode()  # fmt: skip


def _json(r: Registry, doc: dict[str, Any]) -> bytes:
    return JSONSerializer(JSON_SCHEMA, r.client)(doc, CTX)


DOC = {"user": {"id": "a", "country": "de"}, "ts": T0, "amount": 1.5, "n": 2, "ok": True}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda r: _json(r, DOC), GOOD),
        (lambda r: _json(r, {**DOC, "amount": 1}), ("ok", ("a", T0, (1.0, 2.0, 1.0), ("de",)))),
        (lambda r: _json(r, DOC)[:5] + b'{"user": {"id": "a"}, "ts": "x"}',
         ("err", "schema_decode_error", "'x' is not of type 'integer'")),
        (lambda r: _json(r, DOC)[:5] + b"{not json", ("err", "schema_decode_error", "schema id")),
        (lambda r: _json(r, {"user": {"id": "a", "country": "de"}, "ts": T0, "n": 1, "ok": True}),
         ("err", "missing_field", "'amount' is missing")),
        (lambda r: _frame(31337, b"{}"), ("err", "unknown_schema_id", "schema id 31337")),
    ],
)  # fmt: skip
def test_json_schema_values(make: Callable[[Registry], Any], expected: tuple) -> None:
    r = Registry("json_schema")
    r.check(make(r), expected)


# -- the registry client: configuration, secrets, reachability -----------------------------------
def test_secrets_come_from_the_environment_first_then_files(tmp_path: Path) -> None:
    auth, keypw = tmp_path / "auth", tmp_path / "keypw"
    auth.write_text("file-user:file-pass\n")
    keypw.write_text("file-key-pw\n")
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    sr = _sr("https://registry:8081", basic_auth_file=auth, ca_file=tmp_path / "ca.pem",
             cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem",
             key_password_file=keypw)  # fmt: skip
    conf = registry_client_config(sr, {})
    assert conf == {"url": "https://registry:8081", "timeout": 5.0, "max.retries": 0,
                    "basic.auth.user.info": "file-user:file-pass",
                    "ssl.ca.location": str(tmp_path / "ca.pem"),
                    "ssl.certificate.location": str(tmp_path / "c.pem"),
                    "ssl.key.location": str(tmp_path / "k.pem"),
                    "ssl.key.password": "file-key-pw"}  # fmt: skip
    env = {ENV_BASIC_AUTH: "env-user:env:pass", ENV_KEY_PASSWORD: "env-key-pw"}
    conf = registry_client_config(sr, env)
    secrets = (conf["basic.auth.user.info"], conf["ssl.key.password"])
    assert secrets == ("env-user:env:pass", "env-key-pw")
    bare = {"url": "http://r:8081", "timeout": 5.0, "max.retries": 0}
    assert registry_client_config(_sr("http://r:8081"), {}) == bare


@pytest.mark.parametrize(
    ("kw", "env", "words"),
    [
        ({}, {ENV_BASIC_AUTH: "no-colon-s3cret"}, "is not user:password"),
        ({}, {ENV_BASIC_AUTH: ":s3cret"}, "is not user:password"),
        ({"basic_auth_file": Path("/nonexistent/auth")}, {}, "basic_auth_file: cannot read"),
        ({}, {ENV_KEY_PASSWORD: "s3cret"}, "no key_file to unlock"),
        ({"ca_file": Path("/nonexistent/ca.pem")}, {}, "ca_file: no file at"),
    ],
)  # fmt: skip
def test_unusable_secrets_fail_without_showing_them(kw: dict, env: dict, words: str) -> None:
    with pytest.raises(SpecError, match=words) as err:
        registry_client_config(_sr("http://r:8081", **kw), env)
    assert "s3cret" not in str(err.value)


def _spec_data(fmt: str = "avro", registry: dict | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pipeline": {"name": "f"},
        "input": {"topic": "events", "format": fmt, "key_field": "user.id", "time_field": "ts",
                  "fields": {"user.id": "string", "ts": "timestamp", "amount": "float"}},
        "features": [{"name": "amount_sum", "agg": "sum", "field": "amount", "window_ms": 60_000}],
    }  # fmt: skip
    if registry is not None:
        data["schema_registry"] = registry
    return data


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_spec_data("avro"), 'spec key input.format: "avro" values name their schema in a Schema'),
        (_spec_data("json", {"url": "http://r:8081"}),
         'spec key schema_registry: input.format is "json" and output.format "json", which '
         "need no registry"),
        (_spec_data("avro", {"url": "http://bob:s3cret@r:8081"}),
         "spec key schema_registry.url: has user:password@ in it"),
        (_spec_data("avro", {"url": "ftp://r"}), "'ftp://r' is not an http://, https:// or mock"),
        (_spec_data("avro", {"url": "http://r", "cert_file": "c.pem"}),
         "mutual TLS needs both cert_file and key_file"),
        (_spec_data("protobuf", {"url": "http://r", "timeout_ms": 5}),
         "spec key schema_registry.timeout_ms: 5 is less than the minimum of 100"),
        (_spec_data("xml"), "spec key input.format: 'xml' is not one of"),
        ({**_spec_data("json"), "output": {"format": "avro"}},
         'spec key output.format: "avro" outputs register their schemas in a Schema Registry'),
    ],
)  # fmt: skip
def test_spec_refuses_registry_settings_that_cannot_work(data: dict, words: str) -> None:
    with pytest.raises(SpecError, match=words.replace("(", r"\(")) as err:
        parse_spec(data)
    assert "s3cret" not in str(err.value)


def test_spec_paths_are_relative_to_the_spec_file(tmp_path: Path) -> None:
    data = _spec_data("json_schema", {"url": "https://a:1,https://b:2", "ca_file": "ca.pem",
                                      "basic_auth_file": "/abs/auth"})  # fmt: skip
    sr = parse_spec(data, base_dir=tmp_path).schema_registry
    assert sr == _sr("https://a:1,https://b:2", ca_file=tmp_path / "ca.pem",
                     basic_auth_file=Path("/abs/auth"))  # fmt: skip


def test_an_unreachable_registry_is_not_the_records_fault() -> None:
    """Connection refused: RegistryUnavailable within the timeout (the client does not retry),
    nothing remembered as unknown, and the decode stage raises instead of dead-lettering."""
    url = f"http://127.0.0.1:{free_port()}"
    data = _spec_data("avro", {"url": url, "timeout_ms": 1000})
    spec = parse_spec(data)
    pipe = PartitionPipeline(spec, 0, None, "none")
    assert pipe.schema_readers is not None
    raw = _frame(1, b"\x02a")
    t0 = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=r"cannot resolve schema id 1: ConnectError"):
        pipe.process([RawRecord("events", 0, 0, None, None, raw)])
    assert time.monotonic() - t0 < 5
    assert pipe.schema_readers.unknown == {} and pipe.schema_readers.readers == {}
    with pytest.raises(RegistryUnavailable):
        pipe.schema_readers.prefetch_ids({1})


def test_replay_reads_event_files_as_json_whatever_the_topic_format(tmp_path: Path) -> None:
    from driftline.agents.replay import replay_outcomes

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"user": {"id": f"u{i % 2}"}, "ts": T0 + i,
                                              "amount": float(i)}) for i in range(6)))  # fmt: skip
    avro = parse_spec(_spec_data("avro", {"url": "http://127.0.0.1:1"}))
    sums = [
        [v for _, out in replay_outcomes(spec, path, progress=False, with_model=False)
         for v in out.all_messages() if v[0] == spec.output.features_topic]
        for spec in (avro, parse_spec(_spec_data("json")))
    ]  # fmt: skip
    assert len(sums[0]) == 6
    features = [[orjson.loads(m[2])["features"] for m in ms] for ms in sums]
    assert features[0] == features[1]


def test_registry_secrets_are_handed_to_the_log_redactor(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    sr = _sr("http://r:8081", cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem")
    conf = registry_client_config(sr, {ENV_BASIC_AUTH: "bob:pw:with:colons",
                                       ENV_KEY_PASSWORD: "kpw"})  # fmt: skip
    assert registry_secrets(conf) == ["pw:with:colons", "kpw"]
    assert registry_secrets(registry_client_config(_sr("http://r:8081"), {})) == []


def test_validate_checks_the_registry_secrets(tmp_path: Path) -> None:
    """``driftline validate`` fails as the worker would (exit 2, one line) when a secret file
    cannot be read, before any broker is asked."""
    import subprocess
    import sys

    from driftline.agents.demo import _to_toml

    data = _spec_data("avro", {"url": "https://r:8081", "basic_auth_file": "missing-auth"})
    (tmp_path / "spec.toml").write_text(_to_toml(data))
    run = subprocess.run([sys.executable, "-m", "driftline.cli", "validate", "-c",
                          str(tmp_path / "spec.toml")], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"driftline: error: spec key schema_registry.basic_auth_file: cannot read "
        f"{tmp_path / 'missing-auth'}: No such file or directory; point it at a readable file "
        f"(or set ${ENV_BASIC_AUTH})"
    ]
    (tmp_path / "missing-auth").write_text("bob:pw\n")
    run = subprocess.run([sys.executable, "-m", "driftline.cli", "validate", "-c",
                          str(tmp_path / "spec.toml")], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"type": "integer"}, "long"),
        ({"type": ["number", "null"]}, ["null", "double"]),
        ({"enum": ["a", "b"]}, "string"),
        ({"type": "object", "additionalProperties": {"type": ["integer", "null"]}},
         {"type": "map", "values": ["null", "long"]}),
        ({"type": "array", "items": {"type": "boolean"}}, {"type": "array", "items": "boolean"}),
        ({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"},
                                                              "b": {"type": "number"}}},
         {"type": "record", "name": "X", "namespace": "driftline", "fields": [
             {"name": "a", "type": "string"},
             {"name": "b", "type": ["null", "double"], "default": None}]}),
    ],
)  # fmt: skip
def test_json_schema_to_avro(node: dict, expected: Any) -> None:
    from driftline.agents.avro_out import _type

    assert _type(node, "x", {}) == expected


@pytest.mark.parametrize("node", [{"type": ["string", "number"]}, {"oneOf": [{}, {}]},
                                  {"type": "object"}])  # fmt: skip
def test_json_schema_without_an_avro_twin_is_refused(node: dict) -> None:
    from driftline.agents.avro_out import _type

    with pytest.raises(ValueError, match="x: "):
        _type(node, "x", {})


def test_every_output_document_has_an_avro_schema() -> None:
    from fastavro import parse_schema

    from driftline.agents.avro_out import DOCUMENTS, avro_schema

    for document in set(DOCUMENTS.values()):
        schema = parse_schema(avro_schema(document))
        assert schema["name"] == "driftline." + "".join(w.title() for w in document.split("_"))


def test_avro_outputs_need_their_schemas_registered() -> None:
    """An unreachable registry at start: one error naming the topic and subject (the worker
    exits with it), not a worker that writes unregistered values."""
    from driftline.agents.avro_out import AvroOutputs
    from driftline.errors import DriftlineError

    data = _spec_data("json", {"url": f"http://127.0.0.1:{free_port()}", "timeout_ms": 500})
    data["output"] = {"format": "avro", "features_topic": "f.features"}
    spec = parse_spec(data)
    assert spec.schema_registry is not None
    with pytest.raises(DriftlineError, match=r"cannot register the Avro schema of output topic "
                       r"f\.features \(subject f\.features-value\) .*ConnectError"):  # fmt: skip
        AvroOutputs(spec, registry_client(spec.schema_registry))


def test_binary_dead_letters_keep_their_bytes() -> None:
    """A dead-lettered Avro value is not UTF-8: its dead letter carries the exact bytes in
    value_base64 (the text form has replacement characters); a JSON one does not need it."""
    import base64

    from driftline.schemas import validate

    spec = parse_spec(_spec_data("avro", {"url": f"mock://dl-{uuid.uuid4().hex[:8]}"}))
    pipe = PartitionPipeline(spec, 0, None, "none")
    bad = [b"\x00\x00\x00\x00\x63\xff\xfe", b'{"user": 1}']
    out = pipe.process([RawRecord("events", 0, i, None, b"\xc3k", v) for i, v in enumerate(bad)])
    docs = [orjson.loads(m[2]) for m in out.all_messages()]
    for d in docs:
        validate("dead_letter", d)
    assert [d["reason"] for d in docs] == ["unknown_schema_id", "bad_wire_format"]
    assert base64.b64decode(docs[0]["value_base64"]) == bad[0] and "\ufffd" in docs[0]["value"]
    assert "value_base64" not in docs[1] and docs[1]["value"] == '{"user": 1}'
    assert [base64.b64decode(d["key_base64"]) for d in docs] == [b"\xc3k", b"\xc3k"]
