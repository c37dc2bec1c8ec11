"""Validation of constructor hyperparameters, shared by every detector, aggregator and window.

Each validator returns the value as a plain Python ``int`` / ``float`` / ``str`` / ``bool`` or
raises `driftline.errors.SpecError` with one message format::

    <name>: got <value>; expected <what is allowed>

where ``<what is allowed>`` is written for the person who set the value (a spec key or a
constructor argument): ``an integer >= 1``, ``a number strictly between 0 and 1``, ``one of up,
down, both``, ... The spec loader prefixes the key it came from (``spec key
detectors[1].alpha: got 2.0; ...``). Booleans are never accepted as numbers (``True`` is not
1), numbers are never accepted as strings, and ``NaN`` / infinities are refused wherever a
finite number is expected.

Examples
--------
>>> int_param("window_size", 500, minimum=1)
500
>>> int_param("window_size", 0, minimum=1)
Traceback (most recent call last):
...
driftline.errors.SpecError: window_size: got 0; expected an integer >= 1
>>> float_param("alpha", 1.5, low=0.0, high=1.0)
Traceback (most recent call last):
...
driftline.errors.SpecError: alpha: got 1.5; expected a number strictly between 0 and 1
>>> float_param("threshold", float("inf"), low=0.0)
Traceback (most recent call last):
...
driftline.errors.SpecError: threshold: got inf; expected a finite number > 0
>>> choice_param("mode", "sideways", ("up", "down", "both"))
Traceback (most recent call last):
...
driftline.errors.SpecError: mode: got 'sideways'; expected one of up, down, both
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from driftline.errors import SpecError

__all__ = [
    "MAX_DURATION_MS",
    "MAX_VALUES",
    "bool_param",
    "choice_param",
    "float_param",
    "int_param",
    "optional_float_param",
    "probability_param",
    "show",
]

T = TypeVar("T")

#: Most values a detector keeps in one sample or window (window_size, reference_size, stride).
MAX_VALUES = 10_000_000
#: Longest duration a setting may name: 10 years in milliseconds (spec windows, TTLs, grace).
MAX_DURATION_MS = 315_360_000_000


def show(value: object) -> str:
    """``value`` as a user would have written it: numpy scalars as plain numbers.

    Examples
    --------
    >>> show(np.float64(0.5)), show(np.int64(3)), show("3"), show(None), show(True)
    ('0.5', '3', "'3'", 'None', 'True')
    """
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _num(x: float) -> str:
    """A bound in a message: ``0``, ``1``, ``0.5``, ``1e-06``."""
    return f"{x:g}"


def _is_number(value: object) -> bool:
    return not isinstance(value, bool | np.bool_) and isinstance(
        value, int | float | np.integer | np.floating
    )


def int_param(
    name: str, value: object, minimum: int, maximum: int | None = None, *, unit: str = ""
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``, else `SpecError` naming ``name``.

    Integral floats (``10.0``) are refused: a count or a size is written as an integer.
    ``unit`` (e.g. ``"milliseconds"``) is named in the message.

    Examples
    --------
    >>> n = int_param("cooldown", np.int64(5), minimum=0)
    >>> n, type(n).__name__
    (5, 'int')
    >>> int_param("n", 10.0, minimum=1)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: n: got 10.0; expected an integer >= 1
    >>> int_param("k", 7, minimum=1, maximum=5)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: k: got 7; expected an integer between 1 and 5
    """
    ok = (
        not isinstance(value, bool | np.bool_)
        and isinstance(value, int | np.integer)
        and value >= minimum
        and (maximum is None or value <= maximum)
    )
    if not ok:
        what = f"an integer number of {unit}" if unit else "an integer"
        want = (
            f"{what} >= {minimum}" if maximum is None else f"{what} between {minimum} and {maximum}"
        )
        raise SpecError(f"{name}: got {show(value)}; expected {want}")
    return int(value)  # type: ignore[arg-type]


def _describe(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        if low_open and high_open:
            return f"a number strictly between {_num(low)} and {_num(high)}"
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        return f"a number in {left}{_num(low)}, {_num(high)}{right}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f"a number {'<' if high_open else '<='} {_num(high)}"
    return "a number"


def float_param(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = True,
) -> float:
    """``value`` as a finite ``float`` within the bounds, else `SpecError` naming ``name``.

    Bounds are exclusive unless ``low_open`` / ``high_open`` is False. Integers are accepted
    (``threshold = 1`` in TOML is ``1.0``).

    Examples
    --------
    >>> float_param("lambda_val", 0.05, low=0.0, high=1.0)
    0.05
    >>> float_param("alpha", 1, low=0.0, high=1.0, high_open=False)
    1.0
    >>> float_param("threshold", -1, low=0.0, high=1.0, low_open=False, high_open=False)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: threshold: got -1; expected a number in [0, 1]
    >>> float_param("delta", "0.1", low=0.0)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: delta: got '0.1'; expected a number > 0
    """
    want = _describe(low, high, low_open, high_open)
    if not _is_number(value):
        raise SpecError(f"{name}: got {show(value)}; expected {want}")
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x):
        if high is None and not math.isnan(x):
            want = f"a finite {want.removeprefix('a ')}"
        raise SpecError(f"{name}: got {show(value)}; expected {want}")
    if low is not None and (x <= low if low_open else x < low):
        raise SpecError(f"{name}: got {show(value)}; expected {want}")
    if high is not None and (x >= high if high_open else x > high):
        raise SpecError(f"{name}: got {show(value)}; expected {want}")
    return x


def optional_float_param(
    name: str, value: object, *, low: float | None = None, low_open: bool = True
) -> float | None:
    """Like `float_param` with a lower bound, but ``None`` (the check is off) is allowed too.

    Examples
    --------
    >>> optional_float_param("range_margin", None, low=0.0) is None
    True
    >>> optional_float_param("std_ratio", 0.5, low=1.0)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: std_ratio: got 0.5; expected a number > 1, or None (off)
    """
    if value is None:
        return None
    try:
        return float_param(name, value, low=low, low_open=low_open)
    except SpecError as exc:
        raise SpecError(f"{exc}, or None (off)") from None


def probability_param(name: str, value: object) -> float:
    """A level or confidence strictly between 0 and 1 (``alpha``, ``delta``, ...).

    Examples
    --------
    >>> probability_param("alpha", 1e-6)
    1e-06
    >>> probability_param("alpha", float("nan"))
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: alpha: got nan; expected a number strictly between 0 and 1
    """
    return float_param(name, value, low=0.0, high=1.0)


def choice_param(name: str, value: object, options: Sequence[T]) -> T:
    """``value`` if it is one of ``options``, else `SpecError` listing them.

    Examples
    --------
    >>> choice_param("reference_mode", "sliding", ("fixed", "sliding"))
    'sliding'
    >>> choice_param("clock", 1, ("label", "event"))
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: clock: got 1; expected one of label, event
    """
    for option in options:
        same_kind = isinstance(value, type(option)) and (
            isinstance(value, bool) == isinstance(option, bool)
        )
        if same_kind and value == option:
            return option
    raise SpecError(
        f"{name}: got {show(value)}; expected one of {', '.join(str(o) for o in options)}"
    )


def bool_param(name: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0/1, not a string).

    Examples
    --------
    >>> bool_param("two_sided_test", np.bool_(True))
    True
    >>> bool_param("two_sided_test", "yes")
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: two_sided_test: got 'yes'; expected true or false
    """
    if not isinstance(value, bool | np.bool_):
        raise SpecError(f"{name}: got {show(value)}; expected true or false")
    return bool(value)
