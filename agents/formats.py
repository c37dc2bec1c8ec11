"""Schema Registry wire formats: ``[input] format = "avro" | "protobuf" | "json_schema"``.

A value is ``0x00`` (the magic byte), the writer schema's id (4 bytes, big-endian) and the
payload (Protobuf: message indexes, then the message). :class:`SchemaReaders` resolves each
schema id once through ``confluent_kafka.schema_registry`` and keeps a reader per id;
:func:`registry_format` turns them into the :class:`~driftline.agents.decode.PayloadFormat` the
:class:`~driftline.agents.decode.RecordDecoder` parses values with, so the field checks (names,
dotted paths, types) are the JSON path's.

Readers: Avro values of a schema without references or rules are read by fastavro's
``schemaless_reader`` against the writer schema, the call ``AvroDeserializer`` itself makes on
the payload, without its per-record bookkeeping (3-4x faster); any other Avro schema, Protobuf
and JSON Schema values go through the library's ``AvroDeserializer``, ``ProtobufDeserializer``
(one per schema id and message) and ``JSONDeserializer`` (which validates against the schema).

Dead-letter reasons: ``bad_wire_format`` (no value, shorter than 5 bytes, or a magic byte other
than 0), ``unknown_schema_id`` (the registry answers 404 for the id), ``schema_decode_error``
(the payload does not decode with its schema, or the schema is of another format). A registry
that cannot be reached (connection refused, timeout, 5xx, 401/403) raises
:class:`RegistryUnavailable`: not the record's fault, so it is never dead-lettered; the runner
pauses consumption until the registry answers (``agents.registry.RegistryGate``).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC
from typing import Any

import orjson

from driftline.agents.decode import PayloadFormat
from driftline.errors import DriftlineError, RecordError

MAGIC = 0
#: The registry's ``schemaType`` of each input format (Avro is the registry's default: None).
SCHEMA_TYPES = {"avro": ("AVRO", None), "protobuf": ("PROTOBUF",), "json_schema": ("JSON",)}
#: Seconds a schema id the registry said it does not know stays unknown before it is asked
#: again (ids are assigned once; a schema registered later gets a new id, so this is rare).
UNKNOWN_TTL_S = 60.0

Reader = Callable[[bytes], Any]
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")


class RegistryUnavailable(DriftlineError):
    """The Schema Registry did not answer usefully (unreachable, timeout, 5xx, auth): transient,
    so the record waits; ``detail`` says what happened (no secrets: URLs carry none)."""


def wire_schema_id(raw: bytes | None) -> int:
    """The schema id of a Schema Registry framed value, or ``bad_wire_format``.

    >>> wire_schema_id(b"\\x00\\x00\\x00\\x01\\x02payload")
    258
    >>> wire_schema_id(b'{"user": 1}')
    Traceback (most recent call last):
    ...
    driftline.errors.RecordError: bad_wire_format: magic byte is 0x7b, expected 0x00 ...
    """
    if raw is None:
        raise RecordError(
            "bad_wire_format", "the record has no value (a tombstone); expected a framed value"
        )
    if len(raw) < 5:
        raise RecordError(
            "bad_wire_format",
            f"value is {len(raw)} bytes; a Schema Registry framed value has a magic byte and "
            "a 4-byte schema id before its payload",
        )
    if raw[0] != MAGIC:
        hint = ""
        if raw[:1] in (b"{", b"["):
            hint = '; it looks like plain JSON (input.format = "json")'
        elif raw[0] == 1:
            hint = "; 0x01 is the schema-GUID framing, which is not supported"
        raise RecordError(
            "bad_wire_format",
            f"magic byte is 0x{raw[0]:02x}, expected 0x00 (Schema Registry framing){hint}",
        )
    return int.from_bytes(raw[1:5], "big")


def schema_ids(values: Iterable[bytes | None]) -> set[int]:
    """The schema ids of the framed values among ``values``.

    >>> sorted(schema_ids([b"\\x00\\0\\0\\0\\x07x", None, b"{}", b"\\x00\\0\\0\\x01\\x00y"]))
    [7, 256]
    """
    heads = {v[:5] for v in values if v is not None}  # few distinct: convert those only
    return {int.from_bytes(h[1:], "big") for h in heads if len(h) == 5 and h[0] == MAGIC}


def registry_error(e: BaseException) -> tuple[int | None, str]:
    """(HTTP status or None, words) of a failed registry call."""
    status = getattr(e, "http_status_code", None)
    if status is not None:
        return int(status), f"HTTP {status}: {getattr(e, 'error_message', e)}"
    return None, f"{type(e).__name__}: {e}"


class SchemaReaders:
    """Schema id -> a reader of its payloads (whole framed values in, objects out).

    ``readers`` is a plain dict for the hot path; :meth:`get` resolves an id not seen yet;
    :meth:`prefetch_ids` resolves every new id of a batch before any of it is processed.
    """

    def __init__(self, client: Any, fmt: str, clock: Callable[[], float] = time.monotonic):
        if fmt not in SCHEMA_TYPES:
            raise ValueError(f"not a Schema Registry format: {fmt!r}")
        self.client = client
        self.format = fmt
        self.readers: dict[int, Reader] = {}
        #: id -> (when the registry said 404, its words)
        self.unknown: dict[int, tuple[float, str]] = {}
        self._clock = clock
        self._shared: Any = None  # the library deserializer shared by every id (not protobuf)

    def prefetch_ids(self, ids: Iterable[int]) -> None:
        """Resolve the schema ``ids`` not resolved yet (ids the registry did not know are asked
        again after ``UNKNOWN_TTL_S``). Raises :class:`RegistryUnavailable` if the registry
        cannot answer."""
        now = self._clock()
        for sid in sorted(set(ids) - self.readers.keys()):
            seen = self.unknown.get(sid)
            if seen is None or now - seen[0] >= UNKNOWN_TTL_S:
                self.unknown.pop(sid, None)
                try:
                    self._resolve(sid)
                except RecordError:
                    pass  # remembered in self.unknown: its records are dead-lettered

    def get(self, sid: int) -> Reader:
        """The reader of ``sid``, resolved now if new. ``unknown_schema_id`` if the registry
        said 404 (remembered until a :meth:`prefetch_ids` after ``UNKNOWN_TTL_S``);
        :class:`RegistryUnavailable` if it cannot answer."""
        reader = self.readers.get(sid)
        if reader is not None:
            return reader
        seen = self.unknown.get(sid)
        if seen is not None:
            raise RecordError("unknown_schema_id", seen[1])
        return self._resolve(sid)

    def _resolve(self, sid: int) -> Reader:
        try:
            # Protobuf: the serialized FileDescriptorProto (a real registry answers with .proto
            # text otherwise, and the client caches by id whichever was asked first)
            fmt = "serialized" if self.format == "protobuf" else None
            schema = self.client.get_schema(sid, fmt=fmt)
        except Exception as e:
            status, words = registry_error(e)
            if status == 404:
                detail = f"schema id {sid} is not in the registry ({words})"
                self.unknown[sid] = (self._clock(), detail)
                raise RecordError("unknown_schema_id", detail) from None
            raise RegistryUnavailable(
                f"cannot resolve schema id {sid}: {words}"
            ) from None  # the cause may quote the request (a URL with credentials)
        if schema.schema_type not in SCHEMA_TYPES[self.format]:
            reader = _wrong_type_reader(sid, schema.schema_type or "AVRO", self.format)
        else:
            reader = getattr(self, f"_{self.format}_reader")(sid, schema)
        self.readers[sid] = reader
        return reader

    # -- one reader per format ------------------------------------------------------------------
    def _avro_reader(self, sid: int, schema: Any) -> Reader:
        if schema.references or schema.rule_set is not None:
            if self._shared is None:
                from confluent_kafka.schema_registry.avro import AvroDeserializer

                self._shared = AvroDeserializer(self.client)
            return self._shared  # type: ignore[no-any-return]
        from fastavro import parse_schema, schemaless_reader

        parsed = parse_schema(orjson.loads(schema.schema_str))
        bytes_io = io.BytesIO

        def read(raw: bytes) -> Any:
            return schemaless_reader(bytes_io(raw[5:]), parsed, None)

        return read

    def _json_schema_reader(self, sid: int, schema: Any) -> Reader:
        if self._shared is None:
            from confluent_kafka.schema_registry.json_schema import JSONDeserializer

            # the writer schema of each value (no subject: no reader schema, no rules)
            self._shared = JSONDeserializer(
                None,
                schema_registry_client=self.client,
                conf={"subject.name.strategy": lambda ctx, record_name: None},
            )
        return self._shared  # type: ignore[no-any-return]

    def _protobuf_reader(self, sid: int, schema: Any) -> Reader:
        """A ``ProtobufDeserializer`` per message of the schema (the value's message indexes
        say which), built from the writer schema's descriptors; messages come out as dicts."""
        from confluent_kafka.schema_registry.common.serde import SchemaId
        from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
        from google.protobuf.empty_pb2 import Empty
        from google.protobuf.message_factory import GetMessageClass

        # the library's own schema parsing (references resolved through the registry)
        base = ProtobufDeserializer(Empty, {}, self.client)
        fd_proto, pool = base._get_parsed_schema(schema)
        fd = pool.FindFileByName(fd_proto.name)
        by_index: dict[tuple[int, ...], Any] = {}

        def read(raw: bytes) -> Any:
            sid_ = SchemaId("PROTOBUF")
            sid_.from_bytes(io.BytesIO(raw))
            idx = tuple(sid_.message_indexes or [0])
            deser = by_index.get(idx)
            if deser is None:
                desc = base._get_message_desc(pool, fd, list(idx))
                deser = by_index[idx] = ProtobufDeserializer(GetMessageClass(desc), {}, self.client)
            return message_dict(deser(raw, None))

        return read


def _wrong_type_reader(sid: int, found: str, fmt: str) -> Reader:
    def read(raw: bytes) -> Any:
        raise RecordError(
            "schema_decode_error",
            f"schema id {sid} is a {found} schema but input.format is {fmt!r}",
        )

    return read


def message_dict(msg: Any) -> dict[str, Any]:
    """A Protobuf message as plain values: nested messages as dicts (absent ones and unset
    fields with presence left out, so they read as missing), enums by name,
    ``google.protobuf.Timestamp`` as a UTC datetime, 64-bit integers as ints."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        name = f.name
        repeated = f.is_repeated
        if not repeated and f.has_presence and not msg.HasField(name):
            continue
        v = getattr(msg, name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out[name] = {k: _proto_value(f.message_type.fields_by_name["value"], x)
                         for k, x in v.items()}  # fmt: skip
        elif repeated:
            out[name] = [_proto_value(f, x) for x in v]
        else:
            out[name] = _proto_value(f, v)
    return out


def _proto_value(f: Any, v: Any) -> Any:
    if f.message_type is not None:
        if f.message_type.full_name == "google.protobuf.Timestamp":
            return v.ToDatetime(tzinfo=UTC)
        return message_dict(v)
    if f.enum_type is not None:
        ev = f.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else v
    return v


def registry_format(readers: SchemaReaders) -> PayloadFormat:
    """The :class:`PayloadFormat` of ``readers``' wire format."""
    table = readers.readers
    get = readers.get

    def loads(raw: bytes) -> Any:  # hot path: a resolved id, framing as expected
        if raw[0] != MAGIC:
            raise KeyError(raw[0])
        return table[int.from_bytes(raw[1:5], "big")](raw)

    def loads_checked(raw: bytes | None) -> Any:
        sid = wire_schema_id(raw)
        reader = get(sid)  # unknown_schema_id, or RegistryUnavailable (not the record's fault)
        assert raw is not None
        try:
            return reader(raw)
        except RecordError:
            raise
        except Exception as e:
            words = _OBJECT_REPR.sub("the payload", str(e))  # fastavro names its BytesIO
            raise RecordError(
                "schema_decode_error",
                f"the payload does not decode with schema id {sid}: {type(e).__name__}: {words}",
            ) from None

    name = {"avro": "Avro", "protobuf": "Protobuf", "json_schema": "JSON Schema"}[readers.format]
    return PayloadFormat(name, loads, Exception, loads_checked)
