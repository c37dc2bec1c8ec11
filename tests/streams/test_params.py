"""The shared hyperparameter validators: accepted values come back as plain Python values,
refused ones raise SpecError with one message format (name, value as written, allowed range)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.errors import DriftlineError, SpecError
from driftline.streams.fdr import bh_levels
from driftline.streams.importance import ImportanceMonitor, LabelledWindow, permutation_importance
from driftline.streams.model_metrics import CountWindowMetrics, TimeWindowMetrics
from driftline.streams.params import (
    bool_param,
    choice_param,
    float_param,
    int_param,
    optional_float_param,
    probability_param,
    show,
)
from driftline.streams.profile import Profile


def test_spec_error_is_a_driftline_error() -> None:
    with pytest.raises(DriftlineError):
        int_param("n", -1, 0)


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "expected"),
    [
        (0, 0, None, 0),
        (np.int64(7), 1, None, 7),
        (5, 1, 5, 5),
        (1, 1, 5, 1),
        (10**12, 1, None, 10**12),
    ],
)
def test_int_param_accepts_integers_in_range(value, minimum, maximum, expected) -> None:
    got = int_param("n", value, minimum, maximum)
    assert got == expected and type(got) is int


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "message"),
    [
        (0, 1, None, "n: got 0; expected an integer >= 1"),
        (-1, 0, None, "n: got -1; expected an integer >= 0"),
        (6, 1, 5, "n: got 6; expected an integer between 1 and 5"),
        (10.0, 1, None, "n: got 10.0; expected an integer >= 1"),
        (True, 0, None, "n: got True; expected an integer >= 0"),
        (np.bool_(True), 0, None, "n: got True; expected an integer >= 0"),
        ("3", 0, None, "n: got '3'; expected an integer >= 0"),
        (None, 0, None, "n: got None; expected an integer >= 0"),
        (math.nan, 0, None, "n: got nan; expected an integer >= 0"),
        (np.float64(2.5), 0, None, "n: got 2.5; expected an integer >= 0"),
    ],
)
def test_int_param_refuses_with_the_name_value_and_range(value, minimum, maximum, message) -> None:
    with pytest.raises(SpecError) as e:
        int_param("n", value, minimum, maximum)
    assert str(e.value) == message


def test_int_param_names_a_unit() -> None:
    with pytest.raises(SpecError) as e:
        int_param("window_ms", 0, 1, unit="milliseconds")
    assert str(e.value) == "window_ms: got 0; expected an integer number of milliseconds >= 1"


@pytest.mark.parametrize(
    ("kwargs", "good", "bad", "want"),
    [
        (
            {"low": 0.0, "high": 1.0},
            [1e-300, 0.5, 1 - 1e-16],
            [0, 1, -0.1, 1.5],
            "strictly between 0 and 1",
        ),
        ({"low": 0.0, "high": 1.0, "high_open": False}, [1, 1.0, 0.5], [0, 1.0000001], "in (0, 1]"),
        (
            {"low": 0.0, "high": 1.0, "low_open": False, "high_open": False},
            [0, 1],
            [-1e-9, 2],
            "in [0, 1]",
        ),
        ({"low": 0.0}, [1e-9, 3, 1e300], [0, -1], "> 0"),
        ({"low": 1.0}, [1.0000001, 2], [1, 0.5], "> 1"),
        ({"low": 0.0, "low_open": False}, [0, 5.0], [-1e-12], ">= 0"),
        ({"high": 10.0}, [-5, 9.99], [10, 11], "< 10"),
    ],
)
def test_float_param_bounds(kwargs, good, bad, want) -> None:
    for v in good:
        got = float_param("x", v, **kwargs)
        assert got == float(v) and type(got) is float
    for v in bad:
        with pytest.raises(SpecError) as e:
            float_param("x", v, **kwargs)
        assert str(e.value) == f"x: got {v!r}; expected a number {want}"


def test_float_param_refuses_non_numbers_and_non_finite() -> None:
    for v, shown in [("0.5", "'0.5'"), (True, "True"), (None, "None"), ([0.5], "[0.5]")]:
        with pytest.raises(SpecError) as e:
            float_param("x", v, low=0.0, high=1.0)
        assert str(e.value) == f"x: got {shown}; expected a number strictly between 0 and 1"
    with pytest.raises(SpecError) as e:
        float_param("x", math.inf, low=0.0)
    assert str(e.value) == "x: got inf; expected a finite number > 0"
    with pytest.raises(SpecError) as e:
        float_param("x", math.nan, low=0.0)
    assert str(e.value) == "x: got nan; expected a number > 0"
    with pytest.raises(SpecError) as e:
        float_param("x", -math.inf, low=0.0, high=1.0)
    assert str(e.value) == "x: got -inf; expected a number strictly between 0 and 1"
    assert float_param("x", np.float32(0.25), low=0.0) == 0.25


def test_probability_and_optional() -> None:
    assert probability_param("alpha", 1e-6) == 1e-6
    with pytest.raises(SpecError, match=r"^alpha: got 1\.0; expected a number strictly between"):
        probability_param("alpha", 1.0)
    assert optional_float_param("m", None, low=0.0) is None
    assert optional_float_param("m", 2, low=0.0) == 2.0
    with pytest.raises(SpecError) as e:
        optional_float_param("m", 0, low=0.0)
    assert str(e.value) == "m: got 0; expected a number > 0, or None (off)"


def test_choice_and_bool() -> None:
    assert choice_param("mode", "up", ("up", "down")) == "up"
    assert choice_param("mode", np.str_("down"), ("up", "down")) == "down"
    for bad in ("Up", 1, None, ["up"]):
        with pytest.raises(SpecError) as e:
            choice_param("mode", bad, ("up", "down"))
        assert str(e.value) == f"mode: got {bad!r}; expected one of up, down"
    assert choice_param("k", 2, (1, 2)) == 2
    with pytest.raises(SpecError, match=r"^k: got True; expected one of 1, 2$"):
        choice_param("k", True, (1, 2))  # True is not the option 1
    assert bool_param("b", False) is False and bool_param("b", np.bool_(True)) is True
    for bad in (0, 1, "true", None):
        with pytest.raises(SpecError) as e:
            bool_param("b", bad)
        assert str(e.value) == f"b: got {bad!r}; expected true or false"


def test_show_writes_values_as_a_user_would() -> None:
    assert show(np.float64(0.5)) == "0.5"
    assert show(np.int32(3)) == "3"
    assert show(np.zeros((2, 3))) == "an array of shape (2, 3)"
    assert show("x" * 200) == repr("x" * 200)[:77] + "..."
    assert show(None) == "None"


# The checks of other modules that use these validators: one message format everywhere.
def _refusals() -> list[tuple[object, str]]:
    def perm(**kw: object) -> None:
        permutation_importance(lambda a: a[:, 0], np.zeros((4, 2)), np.zeros(4), **kw)

    return [
        (
            lambda: bh_levels([0.1], 1.0),
            "alpha: got 1.0; expected a number strictly between 0 and 1",
        ),
        (lambda: perm(loss="hinge"), "loss: got 'hinge'; expected one of log_loss, squared_error"),
        (lambda: perm(n_repeats=0), "n_repeats: got 0; expected an integer >= 1"),
        (lambda: LabelledWindow(True), "size: got True; expected an integer >= 2"),
        (
            lambda: ImportanceMonitor(threshold=1.0),
            "threshold: got 1.0; expected a number strictly between 0 and 1",
        ),
        (
            lambda: ImportanceMonitor(min_examples=2.0),
            "min_examples: got 2.0; expected an integer >= 1",
        ),
        (
            lambda: CountWindowMetrics("ranking", 10),
            "task: got 'ranking'; expected one of classification, regression",
        ),
        (
            lambda: CountWindowMetrics("classification", 10, threshold=1.5),
            "threshold: got 1.5; expected a number in [0, 1]",
        ),
        (
            lambda: TimeWindowMetrics("regression", 10, clock="wall"),
            "clock: got 'wall'; expected one of label, event",
        ),
        (
            lambda: Profile.from_values(np.zeros(3), n_quantiles=1),
            "n_quantiles: got 1; expected an integer >= 2",
        ),
        (
            lambda: Profile.from_values(np.zeros(3), top_k=0),
            "top_k: got 0; expected an integer >= 1",
        ),
    ]


@pytest.mark.parametrize(("make", "message"), _refusals())
def test_other_hyperparameters_use_the_shared_validators(make, message: str) -> None:
    with pytest.raises(SpecError) as e:
        make()
    assert str(e.value) == message
