"""Categorical model inputs: ``{field = "country", one_hot = [...]}`` in ``[model] inputs``.

End to end with the real commands: ``driftline train`` fits a model whose label depends only on
the country, ``driftline replay`` scores a file with it; the predictions carry the one-hot
columns and the scores follow the country.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.cli import main
from driftline.errors import SpecError
from driftline.spec import OneHotSpec, parse_spec

COUNTRIES = ("de", "fr", "us")

SPEC = """
[pipeline]
name = "onehot"

[input]
topic = "events"
key_field = "user"
time_field = "ts"

[input.fields]
user = "string"
ts = "int"
amount = "float"
country = "string"
plan = "int"

[[features]]
name = "n_1m"
agg = "count"
window_ms = 60000

[model]
{source}
inputs = ["amount", {{field = "country", one_hot = ["de", "fr", "us"]}}, "n_1m"]
label_field = "fraud"
"""


def _data() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(SPEC.format(source='builtin = "logistic_regression"'))


def test_one_hot_inputs_expand_to_model_columns() -> None:
    spec = parse_spec(_data())
    m = spec.model
    assert m is not None
    assert m.inputs == ("amount", "country=de", "country=fr", "country=us", "n_1m")
    assert m.one_hot == (OneHotSpec("country", COUNTRIES),)
    assert m.categorical_fields == ("country",)
    cols = m.encode({"country": np.array(["fr", "xx", "de"], dtype=object)})
    assert {k: v.tolist() for k, v in cols.items()} == {
        "country=de": [0.0, 0.0, 1.0],
        "country=fr": [1.0, 0.0, 0.0],
        "country=us": [0.0, 0.0, 0.0],  # "xx" is no listed category: all zeros
    }


def test_int_fields_take_integer_categories() -> None:
    data = _data()
    data["model"]["inputs"] = [{"field": "plan", "one_hot": [1, 2]}]
    m = parse_spec(data).model
    assert m is not None and m.inputs == ("plan=1", "plan=2")
    # the worker decodes int fields as floats
    got = m.encode({"plan": np.array([2.0, 1.0, 3.0])})
    assert {k: v.tolist() for k, v in got.items()} == {
        "plan=1": [0.0, 1.0, 0.0],
        "plan=2": [1.0, 0.0, 0.0],
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            "country",
            "spec key model.inputs[0]: 'country' is not a numeric field or feature "
            "(['amount', 'plan', 'n_1m']); 'country' is a string field: give it as "
            "{field = 'country', one_hot = [\"<category>\", ...]}",
        ),
        (
            {"field": "amount", "one_hot": ["a"]},
            "spec key model.inputs[0].field: 'amount' is a float field; one_hot encodes a "
            "string or int field of input.fields (give numeric fields by name)",
        ),
        (
            {"field": "user", "one_hot": ["a"]},
            "spec key model.inputs[0].field: 'user' is the entity key; one_hot encodes",
        ),
        (
            {"field": "ts", "one_hot": [1]},
            "spec key model.inputs[0].field: 'ts' is the event time; one_hot encodes",
        ),
        (
            {"field": "nope", "one_hot": ["a"]},
            "spec key model.inputs[0].field: 'nope' is not in input.fields; one_hot encodes",
        ),
        (
            {"field": "country", "one_hot": ["de", 1]},
            "spec key model.inputs[0].one_hot[1]: 'country' is a string field; list its "
            "categories as strings (got 1)",
        ),
        (
            {"field": "plan", "one_hot": ["1"]},
            "spec key model.inputs[0].one_hot[0]: 'plan' is a int field; list its categories "
            "as integers (got '1')",
        ),
        ({"field": "country"}, "spec key model.inputs[0]: 'one_hot' is a required property"),
        ({"field": "country", "one_hot": []}, "spec key model.inputs[0].one_hot: [] should be"),
        (
            {"field": "country", "one_hot": ["de", "de"]},
            "spec key model.inputs[0].one_hot: ['de', 'de'] has non-unique elements",
        ),
        (3, "spec key model.inputs[0]: 3 is not valid under any of the given schemas. Expected:"),
    ],
)
def test_one_hot_errors_say_what_to_do(item: Any, message: str) -> None:
    data = _data()
    data["model"]["inputs"] = [item]
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    assert str(e.value).startswith(message)


def test_one_hot_columns_are_unique_model_inputs() -> None:
    data = _data()
    data["model"]["inputs"] = ["amount", "amount"]
    with pytest.raises(SpecError, match=r"inputs\[1\]: 'amount' is already a model input"):
        parse_spec(copy.deepcopy(data))
    data["input"]["fields"]["country=fr"] = "float"
    data["model"]["inputs"] = [{"field": "country", "one_hot": ["de", "fr"]}]
    with pytest.raises(SpecError, match=r"one-hot columns \['country=fr'\] have the names of"):
        parse_spec(data)


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        country = str(rng.choice(COUNTRIES))
        out.append(
            {
                "user": f"u{rng.integers(0, 30)}",
                "ts": 1_000 * i,
                "amount": float(rng.normal(10.0, 1.0)),
                "country": country,
                "plan": int(rng.integers(1, 3)),
                "fraud": int(country == "fr"),  # the label is the country alone
            }
        )
    return out


def _write_jsonl(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    return path


def test_train_and_replay_score_with_one_hot_inputs(tmp_path: Path) -> None:
    train_spec = tmp_path / "train.toml"
    train_spec.write_text(SPEC.format(source='builtin = "logistic_regression"'))
    serve_spec = tmp_path / "serve.toml"
    serve_spec.write_text(SPEC.format(source='path = "model.pkl"'))
    labelled = _write_jsonl(tmp_path / "train.jsonl", _events(3000, seed=1))
    assert main(["train", "-c", str(train_spec), "--input", str(labelled),
                 "--output", str(tmp_path / "model.pkl"), "--no-progress"]) == 0  # fmt: skip

    events = _events(300, seed=2)
    events.append({**events[-1], "ts": events[-1]["ts"] + 1, "country": "it"})  # unknown
    src = _write_jsonl(tmp_path / "events.jsonl", events)
    preds_path = tmp_path / "preds.jsonl"
    assert main(["replay", "-c", str(serve_spec), "--input", str(src),
                 "--output", str(tmp_path / "features.jsonl"),
                 "--predictions", str(preds_path), "--no-progress"]) == 0  # fmt: skip
    preds = [orjson.loads(line) for line in preds_path.read_bytes().splitlines()]
    assert len(preds) == len(events)
    by_offset = {int(p["prediction_id"].rsplit(":", 1)[1]): p for p in preds}
    for off, ev in enumerate(events):
        p = by_offset[off]
        assert list(p["inputs"]) == ["amount", "country=de", "country=fr", "country=us", "n_1m"]
        onehot = [p["inputs"][f"country={c}"] for c in COUNTRIES]
        assert onehot == [float(ev["country"] == c) for c in COUNTRIES]
        # the model learnt the country: fraud exactly for France
        assert (p["score"] > 0.5) == (ev["country"] == "fr"), (ev, p["score"])
    assert by_offset[len(events) - 1]["label"] == 0  # an unknown country scores as not "fr"
