"""The pipeline spec: defaults, cross-references, and errors that name the offending key."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from driftline.agents.demo import demo_spec_text, ks_adwin_spec_text
from driftline.errors import SpecError
from driftline.spec import build_spec_detector, load_spec, parse_spec, to_feature_def


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    data = tomllib.loads(ks_adwin_spec_text())
    (tmp_path / "demo-model.pkl").write_bytes(b"x")
    return data


def _parse(data: dict[str, Any], tmp_path: Path):
    return parse_spec(data, base_dir=tmp_path)


def test_demo_spec_parses_with_defaults(base: dict[str, Any], tmp_path: Path) -> None:
    del base["output"]
    del base["worker"]["web_port"]
    spec = _parse(base, tmp_path)
    assert spec.name == "demo"
    assert spec.group_id == "driftline.demo"
    assert spec.output.features_topic == "driftline.features"
    assert spec.output.predictions_topic == "driftline.predictions"
    assert spec.output.alerts_topic == "driftline.alerts"
    assert spec.output.dlq_topic == "driftline.dlq"
    assert spec.worker.web_port == 6066
    assert spec.grace_ms == 5000
    assert spec.numeric_fields == ("amount", "latency_ms")
    assert spec.vector_names == ("amount", "latency_ms", "amount_count_1m", "amount_mean_1m")
    assert [d.params for d in spec.detectors] == [
        {"reference_size": 2000, "window_size": 2000, "alpha": 1e-6, "stride": 500},
        {"delta": 1e-5, "cooldown": 20000},
    ]
    assert spec.model is not None and spec.model.path == tmp_path / "demo-model.pkl"


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if k.isdigit() else d.setdefault(k, {})
    last = keys[-1]
    if value is _DEL:
        del d[last]
    elif last.isdigit():
        d[int(last)] = value
    else:
        d[last] = value


_DEL = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("pipeline.name", "has space", "spec key pipeline.name"),
        ("input.topic", _DEL, "'topic' is a required property"),
        ("input.fields.amount", "decimal", "spec key input.fields.amount"),
        ("input.key_field", "nope", "spec key input.key_field: 'nope' is not declared"),
        ("input.time_field", "amount", "spec key input.fields.amount: the time field"),
        ("input.max_message_bytes", 10, "spec key input.max_message_bytes"),
        ("features.1.agg", "median", "spec key features[1].agg"),
        ("features.1.window_ms", 0, "spec key features[1].window_ms"),
        ("features.1.field", "country", "spec key features[1].field: 'country' is not a numeric"),
        ("features.1.field", _DEL, "spec key features[1].field: agg 'mean' needs"),
        ("features.1.name", "amount", "spec key features[1].name: 'amount' is already used"),
        ("model.inputs", ["nope"], "spec key model.inputs[0]: 'nope'"),
        ("model.path", "missing.pkl", "spec key model.path: no model file"),
        ("detectors.0.alpha", 2, "spec key detectors[0].alpha"),
        ("detectors.0.target", "country", "spec key detectors[0].target: 'country'"),
        ("detectors.1.delta", 0, "spec key detectors[1].delta"),
        (
            "detectors.1.alpha",
            0.1,
            "spec key detectors[1].alpha: the adwin detector has no parameter 'alpha'",
        ),
        ("detectors.1.name", "amount_ks", "spec key detectors[1].name: 'amount_ks' is used twice"),
        ("output.alerts_topic", "bad topic!", "spec key output.alerts_topic"),
        ("worker.batch_max_records", 0, "spec key worker.batch_max_records"),
        ("worker.typo", 1, "spec key worker: Additional properties are not allowed ('typo'"),
        ("worker.commit_interval_ms", 500, "spec key worker.commit_interval_ms: only with"),
        ("worker.processing_guarantee", "maybe_once", "spec key worker.processing_guarantee"),
        ("drift.correction", "holm", "spec key drift.correction"),
        ("windows.max_entities", 0, "spec key windows.max_entities"),
        ("windows.max_entities", 2.5, "spec key windows.max_entities"),
        ("windows.max_entities", "many", "spec key windows.max_entities"),
    ],
)
def test_errors_name_the_offending_key(
    base: dict[str, Any], tmp_path: Path, path: str, value: Any, message: str
) -> None:
    data = copy.deepcopy(base)
    _set(data, path, value)
    with pytest.raises(SpecError) as e:
        _parse(data, tmp_path)
    assert message in str(e.value)


@pytest.mark.parametrize(("value", "expected"), [(_DEL, None), (1, 1), (100_000, 100_000)])
def test_windows_max_entities(
    base: dict[str, Any], tmp_path: Path, value: Any, expected: int | None
) -> None:
    if value is not _DEL:
        _set(base, "windows.max_entities", value)
    spec = _parse(base, tmp_path)
    assert spec.max_entities == expected


def test_model_needs_exactly_one_source(base: dict[str, Any], tmp_path: Path) -> None:
    base["model"]["builtin"] = "logistic_regression"
    with pytest.raises(SpecError, match=r"exactly one of model\.path or model\.builtin"):
        _parse(base, tmp_path)


def test_prediction_is_a_target_only_with_a_model(base: dict[str, Any], tmp_path: Path) -> None:
    base["detectors"][0]["target"] = "prediction"
    assert _parse(copy.deepcopy(base), tmp_path).detectors[0].target == "prediction"
    del base["model"]
    with pytest.raises(SpecError, match=r"detectors\[0\]\.target"):
        _parse(base, tmp_path)


def test_load_spec_reports_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline\nname = 1")
    with pytest.raises(SpecError, match="is not valid TOML"):
        load_spec(bad)


def test_load_spec_resolves_model_path_next_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "demo-model.pkl").write_bytes(b"x")
    p = tmp_path / "p.toml"
    p.write_text(ks_adwin_spec_text())
    spec = load_spec(p)
    assert spec.source_path == p.resolve()
    assert spec.model is not None and spec.model.path == tmp_path / "demo-model.pkl"


def test_every_window_kind_filter_and_aggregator_parses(
    base: dict[str, Any], tmp_path: Path
) -> None:
    base["features"] = [
        {"name": "n_1m", "agg": "count", "window_ms": 60_000},
        {
            "name": "amt_std_hop",
            "agg": "std",
            "field": "amount",
            "window": "hopping",
            "window_ms": 60_000,
            "step_ms": 15_000,
        },
        {
            "name": "amt_max_slide",
            "agg": "max",
            "field": "amount",
            "window": "sliding",
            "window_ms": 30_000,
        },
        {"name": "amt_last10", "agg": "mean", "field": "amount", "window": "count", "count": 10},
        {"name": "countries", "agg": "distinct", "field": "country", "window_ms": 60_000},
        {
            "name": "de_rate",
            "agg": "rate",
            "window_ms": 60_000,
            "where": {"field": "country", "equals": "de"},
        },
        {"name": "gap", "agg": "since_prev", "window": "count", "count": 2},
    ]
    base["model"]["inputs"] = ["amount", "n_1m"]
    spec = _parse(base, tmp_path)
    f = {x.name: x for x in spec.features}
    assert f["amt_std_hop"].window == "hopping" and f["amt_std_hop"].step_ms == 15_000
    assert f["amt_last10"].count == 10 and f["amt_last10"].window_ms is None
    assert (f["de_rate"].where_field, f["de_rate"].where_equals) == ("country", "de")
    assert f["countries"].field == "country"


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (
            {"agg": "mean", "field": "country", "window_ms": 1},
            "features[0].field: 'country' is not a numeric",
        ),
        (
            {"agg": "rate", "field": "amount", "window_ms": 1},
            "features[0].field: agg 'rate' takes no field",
        ),
        (
            {"agg": "count", "window": "hopping", "window_ms": 60_000, "step_ms": 7_000},
            "spec key features[0]",
        ),
        ({"agg": "count", "window": "count"}, "spec key features[0]"),
        (
            {"agg": "count", "window_ms": 1, "where": {"field": "nope", "equals": 1}},
            "features[0].where.field: 'nope' is not in input.fields",
        ),
    ],
)
def test_feature_errors(base: dict[str, Any], tmp_path: Path, feature: dict, message: str) -> None:
    base["features"] = [{"name": "f", **feature}]
    del base["model"]
    base["detectors"] = []
    with pytest.raises(SpecError) as e:
        _parse(base, tmp_path)
    assert message in str(e.value)


def test_detectors_of_every_type_and_bonferroni(base: dict[str, Any], tmp_path: Path) -> None:
    base["detectors"] = [
        {
            "name": "ks_amount",
            "type": "ks",
            "target": "amount",
            "alpha": 1e-4,
            "reference_mode": "sliding",
        },
        {"name": "chi_country", "type": "chi2", "target": "country", "alpha": 1e-4},
        {"name": "psi_country", "type": "psi", "target": "country"},
        {"name": "jsd_country", "type": "jsd", "target": "country"},
        {"name": "summary_amount", "type": "summary", "target": "amount"},
        {"name": "ph_latency", "type": "page_hinkley", "target": "latency_ms"},
        {"name": "ks_pred", "type": "ks", "target": "prediction"},
    ]
    spec = _parse(copy.deepcopy(base), tmp_path)
    alphas = {d.name: d.params.get("alpha") for d in spec.detectors}
    # three test-based detectors (ks, chi2, ks): each tests at alpha / 3
    assert alphas["ks_amount"] == pytest.approx(1e-4 / 3)
    assert alphas["chi_country"] == pytest.approx(1e-4 / 3)
    assert alphas["ks_pred"] == pytest.approx(1e-6 / 3)
    base["drift"] = {"correction": "none"}
    spec = _parse(base, tmp_path)
    assert {d.name: d.params.get("alpha") for d in spec.detectors}["ks_amount"] == 1e-4


def test_numeric_detectors_refuse_string_targets(base: dict[str, Any], tmp_path: Path) -> None:
    base["detectors"] = [{"name": "k", "type": "ks", "target": "country"}]
    with pytest.raises(SpecError, match=r"detectors\[0\]\.target: 'country'"):
        _parse(base, tmp_path)


# -- issue 10: window keys, detector targets --------------------------------------------------
def _one_feature(base: dict[str, Any], **feature: Any) -> dict[str, Any]:
    base["features"] = [{"name": "f", "agg": "count", **feature}]
    del base["model"]
    base["detectors"] = []
    return base


def test_sliding_windows_take_idle_ttl_ms(base: dict[str, Any], tmp_path: Path) -> None:
    data = _one_feature(base, window="sliding", window_ms=600_000, idle_ttl_ms=60_000)
    spec = _parse(data, tmp_path)
    assert spec.features[0].idle_ttl_ms == 60_000
    assert to_feature_def(spec.features[0]).idle_ttl_ms == 60_000


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (
            {"window_ms": 60_000, "idle_ttl_ms": 1_000},
            "spec key features[0].idle_ttl_ms: a tumbling window has no idle_ttl_ms (forget an "
            "entity idle this long: sliding and count windows only); remove it or change "
            "features[0].window",
        ),
        (
            {"window_ms": 60_000, "step_ms": 1_000},
            "spec key features[0].step_ms: a tumbling window has no step_ms (the hop in ms, "
            "dividing window_ms: hopping windows only); remove it",
        ),
        (
            {"window": "count", "count": 5, "window_ms": 1_000},
            "spec key features[0].window_ms: a count window has no window_ms",
        ),
        (
            {"window": "hopping", "window_ms": 60_000},
            "spec key features[0].step_ms: a hopping window needs step_ms (the hop in ms, "
            "dividing window_ms)",
        ),
        ({"window": "sliding"}, "spec key features[0].window_ms: a sliding window needs window_ms"),
    ],
)
def test_window_keys_say_what_to_change(
    base: dict[str, Any], tmp_path: Path, feature: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as e:
        _parse(_one_feature(base, **feature), tmp_path)
    assert str(e.value).startswith(message)
    assert "None" not in str(e.value)


def _detector(base: dict[str, Any], dtype: str, target: str) -> dict[str, Any]:
    base["input"]["fields"]["plan"] = "int"
    base["input"]["fields"]["vip"] = "bool"
    base["detectors"] = [{"name": "d", "type": dtype, "target": target}]
    return base


@pytest.mark.parametrize(
    ("dtype", "target", "message"),
    [
        (
            "chi2",
            "amount",
            "spec key detectors[0].target: 'amount' is a float field, but chi2 needs a "
            "categorical (string/int) field; use ks or np_focus for numeric fields",
        ),
        (
            "focus_categorical",
            "amount",
            "spec key detectors[0].target: 'amount' is a float field, but focus_categorical "
            "needs a categorical (string/int) field; use ks or np_focus for numeric fields",
        ),
        ("chi2", "amount_mean_1m", "'amount_mean_1m' is a feature (a float), but chi2 needs a"),
        ("chi2", "prediction", "'prediction' is the score (a float), but chi2 needs a categ"),
        (
            "ks",
            "country",
            "spec key detectors[0].target: 'country' is a string field and ks compares "
            "numbers; use chi2 (or psi, jsd) for categorical fields",
        ),
        ("adwin", "country", "'country' is a string field and adwin compares numbers; use chi2"),
        (
            "ddm",
            "error",
            "spec key detectors[0].target: 'error' is the model's error stream: the targets "
            "'error'/'label' (with [labels]) come from delayed labels joined to the "
            "predictions; add a [labels] section",
        ),
        ("chi2", "label", "'label' is the observed labels: the targets 'error'/'label'"),
        ("ks", "nope", "spec key detectors[0].target: 'nope' is not a field, feature or stream"),
    ],
)
def test_detector_targets_say_what_to_use(
    base: dict[str, Any], tmp_path: Path, dtype: str, target: str, message: str
) -> None:
    with pytest.raises(SpecError) as e:
        _parse(_detector(base, dtype, target), tmp_path)
    assert str(e.value).startswith(f"spec key detectors[0].target: {target!r} ")
    assert message in str(e.value)


def test_prediction_target_without_a_model_says_add_one(
    base: dict[str, Any], tmp_path: Path
) -> None:
    del base["model"]
    with pytest.raises(SpecError) as e:
        _parse(_detector(base, "ks", "prediction"), tmp_path)
    assert str(e.value) == (
        "spec key detectors[0].target: 'prediction' is the model's score: add a [model] section"
    )


@pytest.mark.parametrize("target", ["country", "plan", "vip"])
def test_chi2_takes_categorical_fields(base: dict[str, Any], tmp_path: Path, target: str) -> None:
    spec = _parse(_detector(base, "chi2", target), tmp_path)
    assert spec.detectors[0].target == target


def test_nested_fields_by_dotted_names_in_toml() -> None:
    """``user.id = "string"`` (a TOML dotted key, a nested table) and ``"geo.lat" = "float"``
    (a quoted key) both name a nested field by its path."""
    text = """
[pipeline]
name = "nested"
[input]
topic = "events"
key_field = "user.id"
time_field = "ts"
[input.fields]
user.id = "string"
user.address.country = "string"
"geo.lat" = "float"
ts = "timestamp"
[[features]]
name = "lat_sum"
field = "geo.lat"
agg = "sum"
window_ms = 60000
"""
    spec = parse_spec(tomllib.loads(text))
    assert dict(spec.input.fields) == {"user.id": "string", "user.address.country": "string",
                                       "geo.lat": "float", "ts": "timestamp"}  # fmt: skip
    assert spec.input.key_field == "user.id" and spec.numeric_fields == ("geo.lat",)


@pytest.mark.parametrize(
    ("drift", "entry", "key", "expected"),
    [
        ({}, {"type": "adwin"}, "direction", "up"),
        ({}, {"type": "page_hinkley"}, "mode", "up"),
        ({}, {"type": "adwin", "direction": "both"}, "direction", "both"),
        ({}, {"type": "page_hinkley", "mode": "down"}, "mode", "down"),
        ({"error_direction": "both"}, {"type": "adwin"}, "direction", "both"),
        ({"error_direction": "both"}, {"type": "page_hinkley"}, "mode", "both"),
    ],
)
def test_error_stream_detectors_are_one_sided_by_default(
    base: dict[str, Any], tmp_path: Path, drift: dict, entry: dict, key: str, expected: str
) -> None:
    base["labels"] = {"topic": "driftline.labels"}
    base["drift"] = drift
    base["detectors"] = [
        {"name": "err", "target": "error", **entry},
        {"name": "lat", "target": "latency_ms", "type": entry["type"]},
    ]
    spec = _parse(base, tmp_path)
    err, lat = spec.detectors
    assert err.params[key] == expected
    assert key not in lat.params  # other targets keep the detector's two-sided default
    det = build_spec_detector(err)
    assert getattr(det, key) == expected


@pytest.mark.parametrize(
    ("correction", "ks_alpha", "focus_rate"),
    [
        ("bonferroni", 1e-6 / 3, 2.0 / 3),  # the family: ks, focus, focus_scale
        ("benjamini_hochberg", 1e-6, 2.0 / 3),  # BH over the one p-value test; the rest split
        ("none", 1e-6, 2.0),
    ],
)
def test_the_correction_splits_every_calibrated_budget(
    base: dict[str, Any], tmp_path: Path, correction: str, ks_alpha: float, focus_rate: float
) -> None:
    base["drift"] = {"correction": correction}
    base["detectors"] = [
        {"name": "ks", "type": "ks", "target": "amount"},
        {"name": "f", "type": "focus", "target": "amount", "false_alarms_per_million": 2.0},
        {"name": "s", "type": "focus_scale", "target": "latency_ms", "false_alarms_per_million": 2},
        {"name": "a", "type": "adwin", "target": "amount"},  # not calibrated: not in the family
    ]
    spec = _parse(base, tmp_path)
    ks, f, s, a = spec.detectors
    assert ks.params["alpha"] == pytest.approx(ks_alpha) and ks.family_alpha == 1e-6
    assert f.params["false_alarms_per_million"] == pytest.approx(focus_rate)
    assert s.params["false_alarms_per_million"] == pytest.approx(focus_rate)
    assert f.family_alpha is None and "delta" not in a.params
    assert build_spec_detector(f).level == pytest.approx(focus_rate)


def test_a_split_below_the_calibrated_range_says_so(base: dict[str, Any], tmp_path: Path) -> None:
    base["detectors"] = [
        {"name": f"f{i}", "type": "focus", "target": "amount", "false_alarms_per_million": 0.002}
        for i in range(3)
    ]
    with pytest.raises(SpecError) as e:
        _parse(base, tmp_path)
    msg = str(e.value)
    assert msg.startswith("spec key detectors[0].false_alarms_per_million: got 0.000666")
    assert "false_alarms_per_million = 0.002 split over the 3 calibrated detectors" in msg
    assert 'correction = "none"' in msg
    base["detectors"][0]["false_alarms_per_million"] = 0.0001
    with pytest.raises(SpecError, match=r"detectors\[0\].false_alarms_per_million: got 0.0001;"):
        _parse(base, tmp_path)


def test_the_demo_runs_the_default_detector_set(tmp_path: Path) -> None:
    """`driftline demo`'s spec has no [[detectors]]: [drift] watch gives every field the default
    set of its type, 7 calibrated detectors sharing 1 false alarm per 10^6 events."""
    data = tomllib.loads(demo_spec_text())
    (tmp_path / "demo-model.pkl").write_bytes(b"x")
    assert "detectors" not in data
    spec = _parse(data, tmp_path)
    fa = {"false_alarms_per_million": pytest.approx(1 / 7)}
    assert [(d.name, d.type, d.target, d.params) for d in spec.detectors] == [
        *[(f"{t}_{k}", k, t, fa) for t in ("amount", "latency_ms")
          for k in ("focus", "focus_scale", "np_focus")],
        ("country_focus_categorical", "focus_categorical", "country", fa),
    ]  # fmt: skip
    ks_adwin = tomllib.loads(ks_adwin_spec_text())
    assert [d["name"] for d in ks_adwin["detectors"]] == ["amount_ks", "latency_adwin"]
    # the same pipeline otherwise
    assert {k: v for k, v in ks_adwin.items() if k != "detectors"} == {
        k: v for k, v in data.items() if k != "drift"
    }


def test_watched_targets_get_the_default_set_of_their_type(
    base: dict[str, Any], tmp_path: Path
) -> None:
    base["labels"] = {"topic": "driftline.labels"}
    base["detectors"] = []
    base["drift"] = {"watch": ["amount", "country", "error"]}
    spec = _parse(base, tmp_path)
    got = [(d.name, d.type, d.target, d.params) for d in spec.detectors]
    # four calibrated detectors (adwin is not): Bonferroni gives each 1/4 of 1 per 10^6
    fa = {"false_alarms_per_million": 0.25}
    assert got == [
        ("amount_focus", "focus", "amount", fa),
        ("amount_focus_scale", "focus_scale", "amount", fa),
        ("amount_np_focus", "np_focus", "amount", fa),
        ("country_focus_categorical", "focus_categorical", "country", fa),
        ("error_adwin", "adwin", "error", {"direction": "up"}),
    ]
    for d in spec.detectors:
        build_spec_detector(d)
    base["drift"] = {"watch": ["amount"], "default_detectors": {"numeric": [{"type": "ks"}]}}
    assert [(d.name, d.params["alpha"]) for d in _parse(base, tmp_path).detectors] == [
        ("amount_ks", 1e-6)
    ]
    base["drift"] = {"watch": ["nope"]}
    with pytest.raises(SpecError, match=r"^spec key drift.watch\[0\]: 'nope' is not a field"):
        _parse(base, tmp_path)
