"""Output topics as Avro: ``[output] format = "avro"`` (with ``[schema_registry]``).

Each output document type has a JSON Schema in ``schemas/`` (the contract of the JSON outputs);
:func:`avro_schema` derives its Avro record from it (objects -> records, optional or nullable
-> ``["null", T]`` with default null, ``additionalProperties`` -> maps, integers -> long, numbers
-> double, enums -> strings, so a new enum value is not a breaking change). At start the worker
registers each output topic's schema under ``<topic>-value`` (the TopicNameStrategy), and
:class:`AvroOutputs` re-encodes the batch's JSON documents in the Schema Registry wire format
(magic byte 0, the 4-byte id, fastavro's binary encoding), so downstream consumers read them with
any Schema Registry deserializer.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import orjson

from driftline.agents.formats import registry_error
from driftline.agents.stages.outcome import BatchOutcome
from driftline.errors import DriftlineError
from driftline.schemas import load_schema
from driftline.spec import PipelineSpec

#: output topic key of ``[output]`` -> the JSON Schema its documents follow
DOCUMENTS = {
    "features_topic": "feature_vector",
    "predictions_topic": "prediction",
    "alerts_topic": "alert",
    "dlq_topic": "dead_letter",
    "late_topic": "dead_letter",
    "model_metrics_topic": "model_metrics",
}
_PRIMITIVES = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean"}


def _name(path: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in path.replace("-", "_").split("_") if p)


def _type(node: Mapping[str, Any], path: str, named: dict[str, Any]) -> Any:
    """The Avro type of a JSON Schema ``node`` (``path``: where, for record names)."""
    if "$ref" in node:
        ref = node["$ref"].removesuffix(".schema.json")
        if ref not in named:
            named[ref] = _record(load_schema(ref), ref, named)
            return named[ref]
        return f"driftline.{_name(ref)}"
    if "enum" in node:
        return "string"
    kind = node.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        if len(rest) != 1:
            raise ValueError(f"{path}: cannot map the JSON types {kind} to Avro")
        inner = _type({**node, "type": rest[0]}, path, named)
        return ["null", inner] if "null" in kind else inner
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "array":
        return {"type": "array", "items": _type(node["items"], f"{path}_item", named)}
    if kind == "object":
        props, extra = node.get("properties"), node.get("additionalProperties")
        if isinstance(extra, dict) and not props:
            return {"type": "map", "values": _type(extra, f"{path}_value", named)}
        if props:
            return _record(node, path, named)
    raise ValueError(f"{path}: no Avro type for the JSON Schema {dict(node)}")


def _record(node: Mapping[str, Any], path: str, named: dict[str, Any]) -> dict[str, Any]:
    required = set(node.get("required", ()))
    fields = []
    for name, sub in node["properties"].items():
        t = _type(sub, f"{path}_{name}", named)
        field: dict[str, Any] = {"name": name, "type": t}
        if name not in required or (isinstance(t, list) and t[0] == "null"):
            field["type"] = t if isinstance(t, list) and t[0] == "null" else ["null", t]
            field["default"] = None
        if "description" in sub:
            field["doc"] = sub["description"]
        fields.append(field)
    rec: dict[str, Any] = {"type": "record", "name": _name(path), "namespace": "driftline",
                           "fields": fields}  # fmt: skip
    if "title" in node:
        rec["doc"] = node["title"]
    return rec


def avro_schema(document: str) -> dict[str, Any]:
    """The Avro record of the documents ``schemas/<document>.schema.json`` describes.

    >>> s = avro_schema("dead_letter")
    >>> s["name"], [f["name"] for f in s["fields"]][:3], s["fields"][1]["type"]
    ('DeadLetter', ['pipeline', 'reason', 'error'], 'string')
    """
    return _record(load_schema(document), document, {})


class AvroOutputs:
    """The output topics' registered schemas, and the re-encoding of a batch's messages."""

    def __init__(self, spec: PipelineSpec, client: Any) -> None:
        from confluent_kafka.schema_registry import Schema
        from fastavro import parse_schema

        self.writers: dict[str, tuple[bytes, Any]] = {}
        for key, document in DOCUMENTS.items():
            topic = getattr(spec.output, key)
            schema = avro_schema(document)
            subject = f"{topic}-value"
            try:
                sid = client.register_schema(subject, Schema(orjson.dumps(schema).decode(), "AVRO"))
            except Exception as e:
                words = registry_error(e)[1]
                raise DriftlineError(
                    f"cannot register the Avro schema of output topic {topic} (subject "
                    f"{subject}) in the schema registry: {words}; check [schema_registry] and "
                    "that the subject's compatibility allows it (or use output.format = json)"
                ) from None
            self.writers[topic] = (b"\x00" + sid.to_bytes(4, "big"), parse_schema(schema))

    def encode(self, topic: str, value: bytes) -> bytes:
        """The JSON document ``value`` of ``topic`` in the wire format of its Avro schema."""
        from fastavro import schemaless_writer

        header, schema = self.writers[topic]
        buf = io.BytesIO()
        buf.write(header)
        schemaless_writer(buf, schema, orjson.loads(value))
        return buf.getvalue()

    def transcode(self, out: BatchOutcome) -> None:
        """Re-encode the output documents of ``out`` (in place) as Avro."""
        w, enc = self.writers, self.encode
        out.messages = [(t, k, enc(t, v) if t in w else v) for t, k, v in out.messages]
        for topic, batch in out.bulk.items():
            if topic in w:
                for m in batch:
                    m["value"] = enc(topic, m["value"])
