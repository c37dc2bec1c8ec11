"""Batch features: loading a table onto a compacted topic, and every worker's cache of it.

One record per entity: key = entity, value = ``{"entity", "features", "as_of_ms", "version"}``;
a null value (tombstone) deletes the entity. Each worker reads ALL partitions of the topic (not
only its input partitions: events of any entity may need any row) and follows updates.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from tqdm import tqdm

from driftline.agents.kafka_io import (
    client_conf,
    cluster_size,
    ensure_topics,
    make_producer,
    produce_all,
    wait_for_broker,
)
from driftline.errors import DriftlineError
from driftline.io_files import count_records, read_records
from driftline.kafka_config import Kafka
from driftline.spec import BatchFeaturesSpec, TopicsSpec

log = logging.getLogger("driftline.batch_features")

TOPIC_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}


@dataclass
class LoadStats:
    loaded: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def row_values(bf: BatchFeaturesSpec, row: dict[str, Any]) -> dict[str, float] | str:
    """The row's batch features as floats, or the reason the row is unusable."""
    out: dict[str, float] = {}
    for name in bf.fields:
        v = row.get(name)
        if v is None:
            return f"missing_field:{name}"
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, int | float):
            return f"wrong_type:{name}"
        v = float(v)
        if not math.isfinite(v):
            return f"non_finite:{name}"
        out[name] = v
    return out


def load_batch_features(
    bf: BatchFeaturesSpec,
    bootstrap: Kafka,
    path: str | Path,
    *,
    as_of_ms: int | None = None,
    version: str | None = None,
    partitions: int = 3,
    progress: bool = True,
    topics: TopicsSpec | None = None,
) -> LoadStats:
    """Publish one record per entity of ``path`` (CSV, Parquet, JSON Lines) to the topic,
    creating it if it is missing (with ``topics``: the spec's ``[topics]`` replication)."""
    wait_for_broker(bootstrap)
    config, replicas = dict(TOPIC_CONFIG), None
    if topics is not None:  # the spec's [topics] replication, as `topics create` makes it
        replicas, isr = topics.replication(None, cluster_size(bootstrap))
        config["min.insync.replicas"] = str(isr)
    ensure_topics(bootstrap, [bf.topic], partitions, config=config, replication_factor=replicas)
    as_of = int(time.time() * 1000) if as_of_ms is None else as_of_ms
    version = version or f"load-{as_of}"
    types = {**dict(bf.fields), bf.key_field: "string"}
    producer = make_producer(bootstrap, log_level=3)
    stats = LoadStats()
    bar = tqdm(total=count_records(path), unit="row", desc="batch features",
               disable=not progress, file=sys.stderr)  # fmt: skip
    batch: list[tuple[str, bytes | None, bytes]] = []
    try:
        for row in read_records(path, types):
            bar.update(1)
            key = row.get(bf.key_field)
            if key is None:
                stats.rejected[f"missing_field:{bf.key_field}"] += 1
                continue
            vals = row_values(bf, row)
            if isinstance(vals, str):
                stats.rejected[vals] += 1
                continue
            entity = str(key)
            doc = {"entity": entity, "features": vals, "as_of_ms": as_of, "version": version}
            batch.append((bf.topic, entity.encode(), orjson.dumps(doc)))
            if len(batch) >= 10_000:
                produce_all(producer, batch)
                stats.loaded += len(batch)
                batch = []
        produce_all(producer, batch)
        stats.loaded += len(batch)
        if producer.flush(60):
            raise DriftlineError(f"batch features were not all delivered to {bf.topic}")
    finally:
        bar.close()
    return stats


def delete_batch_features(bf: BatchFeaturesSpec, bootstrap: Kafka, entities: list[str]) -> int:
    """Tombstones: the cache forgets these entities, compaction removes them."""
    wait_for_broker(bootstrap)
    ensure_topics(bootstrap, [bf.topic], 3, config=TOPIC_CONFIG)
    producer = make_producer(bootstrap, log_level=3)
    for e in entities:
        producer.produce(bf.topic, None, e.encode())
    if producer.flush(60):
        raise DriftlineError(f"tombstones were not all delivered to {bf.topic}")
    return len(entities)


class BatchFeatureCache:
    """All rows of the batch-features topic, kept up to date by a background thread."""

    def __init__(self, bf: BatchFeaturesSpec, bootstrap: Kafka | None = None) -> None:
        self.spec = bf
        self.bootstrap = bootstrap
        self.names = bf.names
        self.defaults = np.array([bf.defaults.get(n, np.nan) for n in self.names])
        # entity -> row of one contiguous table (lookups are numpy gathers); deleted rows are
        # reused; the lock keeps the follower thread's writes and the lookups apart
        self._index: dict[str, int] = {}
        self._vals = np.empty((16, len(self.names)))
        self._as_of = np.zeros(16, dtype=np.int64)
        self._free: list[int] = []
        self._n_rows = 0
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.updates = 0

    # -- filling ----------------------------------------------------------------------------
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic (a tombstone deletes)."""
        if key is None:
            return
        entity = key.decode("utf-8", errors="replace")
        if value is None:
            with self._lock:
                i = self._index.pop(entity, None)
                if i is not None:
                    self._free.append(i)
            return
        try:
            doc = orjson.loads(value)
            vals = np.array([float(doc["features"][n]) for n in self.names])
            as_of = int(doc.get("as_of_ms", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            log.warning("batch features for %r unusable (%s); keeping the previous row", entity, e)
            return
        with self._lock:
            i = self._index.get(entity)
            if i is None:
                i = self._free.pop() if self._free else self._grow()
                self._index[entity] = i
            self._vals[i] = vals
            self._as_of[i] = as_of
        self.updates += 1

    def _grow(self) -> int:
        """A new row at the end of the table (doubling it when full)."""
        if self._n_rows == len(self._as_of):
            self._vals = np.concatenate([self._vals, np.empty_like(self._vals)])
            self._as_of = np.concatenate([self._as_of, np.zeros_like(self._as_of)])
        self._n_rows += 1
        return self._n_rows - 1

    @classmethod
    def from_file(cls, bf: BatchFeaturesSpec, path: str | Path) -> BatchFeatureCache:
        """A static cache of a file (offline replay and ``predict-batch``)."""
        cache = cls(bf)
        types = {**dict(bf.fields), bf.key_field: "string"}
        for row in read_records(path, types):
            key = row.get(bf.key_field)
            vals = row_values(bf, row)
            if key is None or isinstance(vals, str):
                continue
            doc = {"features": vals, "as_of_ms": int(row.get("as_of_ms") or 0)}
            cache.apply(str(key).encode(), orjson.dumps(doc))
        cache._loaded.set()
        return cache

    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="driftline-batch-cache",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def wait_loaded(self, timeout_s: float) -> None:
        if not self._loaded.wait(timeout_s):
            raise DriftlineError(
                f"the batch features topic {self.spec.topic} was not read to its end within "
                f"{timeout_s:.0f}s (batch_features.load_timeout_ms); is the broker reachable?"
            )
        if self.error is not None:
            raise DriftlineError(f"batch features cache failed: {self.error}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _follow(self) -> None:
        assert self.bootstrap is not None
        c = Consumer(client_conf(self.bootstrap, {
            "group.id": f"driftline-batch-cache-{uuid.uuid4().hex[:8]}",  # assign() only
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }))  # fmt: skip
        try:
            md = c.list_topics(timeout=30)
            topic = md.topics.get(self.spec.topic)
            if topic is None:
                log.warning(
                    "batch features topic %s does not exist yet; every lookup misses "
                    "until `driftline batch-features load` runs",
                    self.spec.topic,
                )
                ensure_topics(self.bootstrap, [self.spec.topic], 3, config=TOPIC_CONFIG)
                md = c.list_topics(timeout=30)
                topic = md.topics[self.spec.topic]
            parts = list(topic.partitions)
            c.assign([TopicPartition(self.spec.topic, p, OFFSET_BEGINNING) for p in parts])
            pending = set(parts)
            while not self._stop.is_set():
                for m in c.consume(10_000, timeout=0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(m.partition())
                            if not pending and not self._loaded.is_set():
                                log.info("batch features loaded: %d entities", len(self))
                                self._loaded.set()
                        continue
                    self.apply(m.key(), m.value())
        except BaseException as e:
            self.error = e
            self._loaded.set()
            raise
        finally:
            c.close()

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def entities(self) -> list[str]:
        """The entities that have a row."""
        with self._lock:
            return list(self._index)

    def items(self) -> list[tuple[str, np.ndarray]]:
        """(entity, feature values in ``names`` order) for every row."""
        with self._lock:
            return [(e, self._vals[i].copy()) for e, i in self._index.items()]

    def lookup(self, entities: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values (n, k), hit mask (n,), as_of_ms (n,), -1 on a miss) for each entity.

        Misses get the spec's defaults (NaN where none is given).
        """
        n = len(entities)
        with self._lock:
            idx = np.fromiter(map(self._index.get, entities, repeat(-1)), np.int64, count=n)
            hit = idx >= 0
            vals = self._vals[idx]  # misses read the last row; replaced below
            as_of = self._as_of[idx]
        if not hit.all():
            vals[~hit] = self.defaults
            as_of[~hit] = -1
        return vals, hit, as_of
