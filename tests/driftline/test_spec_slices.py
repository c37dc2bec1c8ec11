"""[[slices]] and [business] validation: one line naming the key, what was wrong, what to do."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.errors import SpecError
from driftline.spec import MAX_SLICE_VALUES, parse_spec

BASE: dict[str, Any] = {
    "pipeline": {"name": "d"},
    "input": {
        "topic": "events",
        "key_field": "user",
        "time_field": "ts",
        "fields": {
            "user": "string",
            "ts": "int",
            "amount": "float",
            "country": "string",
            "tier": "int",
        },
    },
    "model": {"builtin": "logistic_regression", "inputs": ["amount"]},
    "detectors": [
        {"name": "k", "type": "ks", "target": "amount"},
        {"name": "e", "type": "ddm", "target": "error"},
    ],
    "labels": {},
}


def _spec(slices: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    data = {**BASE, **extra}
    if slices is not None:
        data["slices"] = slices
    return parse_spec(data)


def test_defaults_and_names() -> None:
    s = _spec([{"field": "country"}, {"field": "tier", "name": "tiers", "values": [1, 2],
                                       "detectors": ["k"], "window": "count"}])  # fmt: skip
    a, b = s.slices
    assert (a.name, a.values, a.max_values, a.window, a.margin, a.min_samples, a.detectors) == (
        "country",
        None,
        20,
        "time",
        0.1,
        200,
        (),
    )
    assert a.n_values == 21 and a.metric_for("classification") == "accuracy"
    assert a.metric_for("regression") == "mae"
    assert (b.name, b.values, b.n_values, b.detectors, b.window) == ("tiers", (1, 2), 3, ("k",),
                                                                       "count")  # fmt: skip


@pytest.mark.parametrize(
    ("slices", "extra", "message"),
    [
        ([{"field": "amount"}], {}, "spec key slices[0].field: 'amount' is not a string, int"),
        ([{"field": "user"}], {}, "spec key slices[0].field: 'user' is not a string, int or bool"),
        ([{"field": "nope"}], {}, "spec key slices[0].field: 'nope' is not"),
        (
            [{"field": "country"}, {"field": "country"}],
            {},
            "spec key slices[1].name: 'country' is used twice",
        ),
        ([{"field": "tier", "values": ["1"]}], {}, "spec key slices[0].values: '1' is not a int"),
        ([{"field": "country", "values": []}], {}, "spec key slices[0].values"),
        (
            [{"field": "country", "detectors": ["x"]}],
            {},
            "spec key slices[0].detectors[0]: no [[detectors]] entry named 'x'",
        ),
        (
            [{"field": "country", "detectors": ["e"]}],
            {},
            "spec key slices[0].detectors[0]: 'e' reads the label stream",
        ),
        (
            [{"field": "country"}],
            {"labels": None},
            "spec key slices[0]: a slice computes model metrics from joined labels",
        ),
        ([{"field": "country", "max_values": 101}], {}, "slices[0].max_values"),
        ([{"field": "country", "margin": 0}], {}, "slices[0].margin"),
        (
            [{"field": "country", "max_values": 100}, {"field": "tier", "max_values": 100}],
            {},
            f"spec key slices: 202 slice values ('other' included) over all slices; at most "
            f"{MAX_SLICE_VALUES}",
        ),
        ([{"field": "country", "metric": "mae"}], {}, None),  # checked against the model at start
    ],
)
def test_bad_slices(
    slices: list[dict[str, Any]], extra: dict[str, Any], message: str | None
) -> None:
    if extra.get("labels", 0) is None:
        extra = {"detectors": BASE["detectors"][:1]}
        data = {k: v for k, v in BASE.items() if k != "labels"} | extra | {"slices": slices}
        with pytest.raises(SpecError) as e:
            parse_spec(data)
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
        return
    if message is None:
        s = _spec(slices)
        with pytest.raises(SpecError, match="'mae' is not a metric of a classifier"):
            s.slices[0].metric_for("classification")
        return
    with pytest.raises(SpecError) as e:
        _spec(slices, **extra)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_slice_metric_of_the_other_task_fails_at_start() -> None:
    from driftline.agents.predictor import build_predictor

    s = _spec([{"field": "country", "metric": "rmse"}])
    with pytest.raises(SpecError, match=r"^spec key slices.country.metric: 'rmse' is not a "
                                        r"metric of a classifier$"):  # fmt: skip
        build_predictor(s)


def test_business_defaults() -> None:
    b = _spec(business={"topic": "orders", "field": "revenue"}).business
    assert (b.name, b.topic, b.field, b.agg, b.window_ms, b.history_ms, b.buckets_per_window,
            b.time_field, b.bucket_ms) == ("business", "orders", "revenue", "mean", 3_600_000,
                                           86_400_000, 60, None, 60_000)  # fmt: skip


@pytest.mark.parametrize(
    ("business", "message"),
    [
        ({"topic": "orders"}, "business"),
        ({"topic": "events", "field": "x"}, "spec key business.topic: topic 'events' is also"),
        ({"topic": "orders", "field": "x", "agg": "max"}, "business.agg"),
        ({"topic": "orders", "field": "x", "window_ms": 1000}, "business.window_ms"),
        (
            {"topic": "orders", "field": "x", "window_ms": 7_200_000, "history_ms": 3_600_000},
            "spec key business.history_ms: 3600000 is shorter than business.window_ms (7200000)",
        ),
        (
            {
                "topic": "orders",
                "field": "x",
                "window_ms": 60_000,
                "buckets_per_window": 600,
                "history_ms": 315_360_000_000,
            },
            "spec key business.history_ms: ",
        ),
    ],
)
def test_bad_business(business: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as e:
        _spec(business=business)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_per_value_detector_instances_are_capped() -> None:
    from driftline.spec import MAX_SLICE_DETECTORS

    dets = [{"name": f"k{i}", "type": "ks", "target": "amount"} for i in range(4)]
    names = [d["name"] for d in dets]
    ok = _spec([{"field": "country", "max_values": 99, "detectors": names}], detectors=dets)
    assert ok.slices[0].n_values * 4 == MAX_SLICE_DETECTORS
    with pytest.raises(SpecError) as e:
        _spec([{"field": "country", "max_values": 100, "detectors": names}], detectors=dets)
    assert str(e.value) == (
        "spec key slices: 404 detector instances per partition (values times "
        "slices.detectors); at most 400: list fewer detectors or values"
    )
