"""``driftline alerts tail``: print the alerts topic, one readable line (or JSON) per alert."""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any, TextIO

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from driftline.agents.kafka_io import client_conf
from driftline.alert_format import format_alert
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka


def tail_alerts(
    bootstrap: Kafka,
    topic: str,
    *,
    from_beginning: bool = False,
    as_json: bool = False,
    max_alerts: int | None = None,
    timeout_s: float | None = None,
    out: TextIO = sys.stdout,
    readers: Any = None,
) -> int:
    """Print alerts until interrupted, ``max_alerts`` printed or ``timeout_s`` idle seconds.

    ``readers``: an Avro ``agents.formats.SchemaReaders``, for an alerts topic written with
    ``output.format = "avro"`` (values in the Schema Registry wire format)."""
    loads: Any = orjson.loads
    if readers is not None:
        from driftline.agents.formats import registry_format

        avro = registry_format(readers).loads_checked
        loads = lambda v: avro(v) if v[:1] == b"\x00" else orjson.loads(v)  # noqa: E731
    c = Consumer(
        client_conf(
            bootstrap,
            {
                "group.id": f"driftline-alerts-tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            },
        )
    )
    try:
        md = c.list_topics(timeout=10)
        if topic not in md.topics:
            raise DriftlineError(
                f"alerts topic {topic!r} does not exist on {bootstrap}; start a worker first or "
                "pass the topic your spec names in output.alerts_topic"
            )
        parts = list(md.topics[topic].partitions)
        if from_beginning:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        else:
            ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts]
            c.assign([TopicPartition(topic, p, hi) for p, hi in zip(parts, ends, strict=True)])
        printed = 0
        last = time.monotonic()
        while max_alerts is None or printed < max_alerts:
            if timeout_s is not None and time.monotonic() - last > timeout_s:
                break
            msg = c.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    print(f"# consumer error: {err}", file=sys.stderr)
                continue
            last = time.monotonic()
            try:
                doc = loads(msg.value())
                line = orjson.dumps(doc).decode() if as_json else format_alert(doc)
            except (orjson.JSONDecodeError, KeyError, TypeError, DriftlineError) as e:
                line = f"# not a driftline alert at {topic}[{msg.partition()}]@{msg.offset()}: {e}"
            print(line, file=out, flush=True)
            printed += 1
        return 0
    finally:
        c.close()
