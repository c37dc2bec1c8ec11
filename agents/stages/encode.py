"""Encode stage: one feature vector and one prediction per event, built column-wise, on
``BatchOutcome.bulk`` (ready for ``Producer.produce_batch``).

Each column is serialised once and each document is one ``bytes % tuple`` of a per-batch
template (see :mod:`driftline.agents.encode`): byte for byte what ``orjson.dumps`` of the
documents would give.
"""

from __future__ import annotations

import time

import numpy as np
import orjson

from driftline.agents.encode import json_items, json_strings, key_json, template, utf8_all
from driftline.agents.stages.frame import Frame
from driftline.agents.stages.outcome import BatchOutcome
from driftline.spec import PipelineSpec
from driftline.streams.model import BatchPredictor


class OutputEncoder:
    """Feature vectors (``feature_vector.schema.json``) and predictions
    (``prediction.schema.json``) of one partition."""

    def __init__(self, spec: PipelineSpec, partition: int) -> None:
        self.spec = spec
        self.partition = partition

    def encode(
        self,
        out: BatchOutcome,
        frame: Frame,
        predictor: BatchPredictor | None,
        model_version: str,
    ) -> None:
        """Append the frame's feature vectors, and with ``frame.scores`` its predictions."""
        spec, o = self.spec, self.spec.output
        good, ts_arr, feats, scores = frame.records, frame.times, frame.features, frame.scores
        if not o.emit_features and (scores is None or predictor is None):
            return  # nothing to write per event
        n = len(good)
        ents = frame.entities.tolist()
        keys = utf8_all(ents)
        ent_j = json_strings(ents)
        ts_j = json_items(ts_arr)
        off_j = json_items(good.offsets)  # Python ints: one orjson call, no array first
        stamps = good.stamps
        no_stamp = None in stamps
        stamp_j = json_items(stamps)
        src_topic, part = good.topic, self.partition
        source_head = (
            b',"source":{"topic":'
            + orjson.dumps(src_topic)
            + b',"partition":'
            + str(part).encode()
            + b',"offset":'
        )
        computed_ms = int(time.time() * 1000)
        names = list(feats)
        parts: list[bytes | None] = [
            b'{"pipeline":' + orjson.dumps(spec.name) + b',"entity":',
            None,
            b',"event_time_ms":',
            None,
            b',"features":{',
        ]
        for i, name in enumerate(names):
            parts += [(b"," if i else b"") + key_json(name) + b":", None]
        parts += [b"}", source_head, None, b',"timestamp_ms":', None,
                  b'},"computed_at_ms":' + str(computed_ms).encode() + b',"freshness_ms":', None,
                  b"}"]  # fmt: skip
        if o.emit_features:
            fresh_j = json_items(computed_ms - ts_arr)
            cols = [json_items(np.asarray(feats[k], dtype=np.float64)) for k in names]
            tmpl = template(parts)
            rows = zip(ent_j, ts_j, *cols, off_j, stamp_j, fresh_j, strict=True)
            docs = [tmpl % row for row in rows]
            _bulk(out, o.features_topic, keys, docs)
            out.feature_vectors = n
        if scores is None or predictor is None:
            return
        vector = frame.vector  # the full model-input vector: fields, features, batch features
        in_names = predictor.inputs
        if predictor.is_classifier:
            label_j = json_items((scores >= 0.5).astype(np.int64))
            for i in np.flatnonzero(np.isnan(scores)).tolist():
                label_j[i] = b"null"  # an input was missing: no score, no label
        else:
            label_j = [b"null"] * n
        ingest = np.array(
            [0 if t is None else t for t in stamps] if no_stamp else stamps, dtype=np.float64
        )
        latency = np.maximum(time.time() * 1000 - ingest, 0.0)
        pid_head = orjson.dumps(f"{src_topic}:{part}:")[:-1]  # open string, offset follows
        parts = [
            b'{"prediction_id":' + pid_head, None,
            b'","pipeline":' + orjson.dumps(spec.name) + b',"entity":', None,
            b',"model_version":' + orjson.dumps(model_version) + b',"score":', None,
            b',"label":', None, b',"inputs":{',
        ]  # fmt: skip
        for i, name in enumerate(in_names):
            parts += [(b"," if i else b"") + key_json(name) + b":", None]
        parts += [b'},"event_time_ms":', None, b',"latency_ms":', None, source_head, None,
                  b',"timestamp_ms":', None, b"}}"]  # fmt: skip
        in_cols = [json_items(np.asarray(vector[c], dtype=np.float64)) for c in in_names]
        tmpl = template(parts)
        rows = zip(off_j, ent_j, json_items(scores), label_j, *in_cols, ts_j,
                   json_items(latency), off_j, stamp_j, strict=True)  # fmt: skip
        docs = [tmpl % row for row in rows]
        for i, t in enumerate(stamps) if no_stamp else ():
            if t is None:  # no broker append time: no latency to report (as replay does)
                doc = orjson.loads(docs[i])
                del doc["latency_ms"]
                docs[i] = orjson.dumps(doc)
        _bulk(out, o.predictions_topic, keys, docs)
        out.predictions = n


def _bulk(out: BatchOutcome, topic: str, keys: list[bytes], docs: list[bytes]) -> None:
    """The documents as ``Producer.produce_batch`` takes them, on ``out.bulk``: built here in
    one comprehension, not message by message in the runner."""
    batch = [{"key": k, "value": v} for k, v in zip(keys, docs, strict=True)]
    if topic in out.bulk:
        out.bulk[topic].extend(batch)
    else:
        out.bulk[topic] = batch
