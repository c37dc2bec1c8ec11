"""Column-wise encoding equals orjson.dumps of the documents, byte for byte."""

from __future__ import annotations

import tomllib

import numpy as np
import orjson
import pytest
from river import linear_model

from driftline.agents.demo import ks_adwin_spec_text
from driftline.agents.encode import json_items, json_strings, template, utf8_all
from driftline.agents.pipeline import BatchOutcome, PartitionPipeline, RawRecord, RecordColumns
from driftline.agents.stages.frame import Frame
from driftline.spec import parse_spec
from driftline.streams.model import BatchPredictor


@pytest.mark.parametrize(
    "values",
    [
        np.array([1.5, -0.0, np.nan, np.inf, 1e300, 5e-324, 37.0]),
        np.array([0, -5, 2**62], dtype=np.int64),
        [1, None, 3],
        ["a,b", 'q"uote', "ünï", "%s", ""],
        np.array([], dtype=np.float64),
    ],
)
def test_json_items_equal_orjson_per_item(values: object) -> None:
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    expected = [
        orjson.dumps(None if isinstance(v, float) and not np.isfinite(v) else v) for v in items
    ]
    assert json_items(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["u1", "u2", "u1"],
        ["a,b", "c"],
        [",", ",", ""],
        ['q"uote', "back\\slash\\", "ünï", "\u2028", "%s", "tab\t", "x\ny", "\n"],
        ["\\", '",', '\\",'],
        ["emoji \U0001f600", "\x00", "\x7f"],
    ],
)
def test_strings_as_json_and_utf8_equal_one_by_one(values: list[str]) -> None:
    assert json_strings(values) == [orjson.dumps(v) for v in values]
    assert json_items(values) == [orjson.dumps(v) for v in values]
    assert utf8_all(values) == [v.encode() for v in values]


def test_template_escapes_percent_and_strings_are_cached() -> None:
    t = template([b'{"a%":', None, b"}"])
    assert t % (b"1",) == b'{"a%":1}'
    assert json_strings(["x", "x", "y"]) == [b'"x"', b'"x"', b'"y"']


@pytest.mark.parametrize("classifier", [True, False])
def test_documents_are_what_orjson_would_write(classifier: bool) -> None:
    data = tomllib.loads(ks_adwin_spec_text())
    del data["model"]
    spec = parse_spec(data)
    model = linear_model.LogisticRegression() if classifier else linear_model.LinearRegression()
    model.learn_one({"amount": 1.0, "latency_ms": 2.0}, True if classifier else 3.0)
    pipe = PartitionPipeline(spec, 2, BatchPredictor(model, ["amount", "latency_ms"]), "v%1")
    n = 5
    good = [
        RawRecord('to"pic', 2, 100 + i, None if i == 3 else 1_000 + i, b"k", b"{}")
        for i in range(n)
    ]
    ents = np.array(["u1", 'q"u', "ü,ni", "%d", "u1"], dtype=object)
    ts = np.array([5, 6, 7, 8, -9], dtype=np.int64)
    cols = {
        "amount": np.array([1.0, 2.5, -3.0, 0.0, 1e10]),
        "latency_ms": np.array([0.5, 0.25, 7.0, 1.0, 2.0]),
    }
    feats = {
        "amount_count_1m": np.array([1.0, 1, 1, 1, 2]),
        "amount_mean_1m": np.array([1.0, 2.5, np.nan, 0.0, 1.0]),
    }
    scores = pipe.predictor.predict(np.column_stack([cols["amount"], cols["latency_ms"]]))
    out = BatchOutcome()
    vector = {**cols, **feats}
    frame = Frame(RecordColumns.from_records(good), ents, ts, vector, feats, vector, scores)
    pipe.encoder.encode(out, frame, pipe.predictor, pipe.model_version_now)
    fv = [v for t, _k, v in out.all_messages() if t == spec.output.features_topic]
    pr = [v for t, _k, v in out.all_messages() if t == spec.output.predictions_topic]
    assert len(fv) == len(pr) == n
    for i in range(n):
        doc = orjson.loads(fv[i])
        assert orjson.dumps(doc) == fv[i]  # byte for byte what orjson writes for the dict
        assert list(doc) == [
            "pipeline",
            "entity",
            "event_time_ms",
            "features",
            "source",
            "computed_at_ms",
            "freshness_ms",
        ]
        assert doc["entity"] == ents[i] and doc["event_time_ms"] == ts[i]
        mean = feats["amount_mean_1m"][i]
        assert doc["features"] == {
            "amount_count_1m": feats["amount_count_1m"][i],
            "amount_mean_1m": None if np.isnan(mean) else mean,
        }
        assert doc["source"] == {
            "topic": 'to"pic',
            "partition": 2,
            "offset": 100 + i,
            "timestamp_ms": good[i].timestamp_ms,
        }
        assert doc["freshness_ms"] == doc["computed_at_ms"] - ts[i]
        p = orjson.loads(pr[i])
        assert orjson.dumps(p) == pr[i]
        assert p["prediction_id"] == f'to"pic:2:{100 + i}'
        assert p["model_version"] == "v%1" and p["entity"] == ents[i]
        assert p["score"] == scores[i]
        assert p["label"] == (int(scores[i] >= 0.5) if classifier else None)
        assert p["inputs"] == {"amount": cols["amount"][i], "latency_ms": cols["latency_ms"][i]}
        assert p["source"]["offset"] == 100 + i
        if good[i].timestamp_ms is None:  # no broker append time: no latency (was now - 0)
            assert "latency_ms" not in p
        else:
            assert p["latency_ms"] >= 0
