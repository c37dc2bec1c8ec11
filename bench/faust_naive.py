"""The naive faust baseline of ``pipeline_bench.py``: one agent, one event at a time.

It iterates the input topic event by event (``async for event in stream``) and keeps a per-entity
tumbling 60 s count + mean of ``amount`` in a windowed faust Table, keyed on the event's own
``ts`` field (event time, like driftline's features): one table write, hence one changelog
message, per event. Every ``BENCH_EVERY`` events (and at event ``BENCH_TARGET``) it appends
``<count> <monotonic>`` to the file ``BENCH_PROGRESS`` (faust redirects ``print`` into its log).

Run by ``pipeline_bench.py`` as a subprocess (configured through the environment)::

    BENCH_APP_ID=... BENCH_BOOTSTRAP=127.0.0.1:9092 BENCH_TOPIC=... BENCH_PROGRESS=/tmp/p \\
        python bench/faust_naive.py worker --loglevel warn
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from datetime import timedelta
from typing import Any

import faust

from driftline.agents.worker import faust_broker
from driftline.kafka_config import load_kafka_config


def _die_with_parent() -> None:
    """Linux: get SIGTERM if the bench process dies, so no faust worker is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit(1)


_die_with_parent()

APP_ID = os.environ.get("BENCH_APP_ID", "driftline-bench-faust")
BOOTSTRAP = os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ.get("BENCH_TOPIC", "driftline-bench.events")
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "2"))
EVERY = int(os.environ.get("BENCH_EVERY", "1000"))
TARGET = int(os.environ.get("BENCH_TARGET", "0"))
PROGRESS = os.environ.get("BENCH_PROGRESS", os.devnull)

# the Kafka settings driftline's commands take (DRIFTLINE_KAFKA_* from pipeline_bench), as the
# worker's faust host gets them: broker URLs and SASL/SSL credentials
KAFKA = load_kafka_config(bootstrap=BOOTSTRAP)

app = faust.App(
    APP_ID,
    **faust_broker(KAFKA),
    store="memory://",
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
)

events_topic = app.topic(TOPIC, key_type=bytes, key_serializer="raw", value_serializer="json")


def _event_time_s(event: Any) -> float:
    return float(event.value["ts"]) / 1000.0


stats = (
    app.Table("amount_1m", default=lambda: (0, 0.0), partitions=PARTITIONS)
    .tumbling(60.0, expires=timedelta(minutes=5))
    .relative_to(_event_time_s)
)


@app.agent(events_topic)
async def count_and_mean(stream: Any) -> None:
    n = 0
    progress = open(PROGRESS, "a")  # lives as long as the agent
    async for event in stream:
        user = event["user_id"]
        count, total = stats[user].current()
        count, total = count + 1, total + event["amount"]
        stats[user] = (count, total)
        _mean = total / count
        n += 1
        if n % EVERY == 0 or n == TARGET:
            progress.write(f"{n} {time.monotonic():.6f}\n")
            progress.flush()


if __name__ == "__main__":
    app.main()
