"""Integer arithmetic for event-time windows.

Tumbling windows are half-open, ``[start_ms, start_ms + size_ms)``, aligned on the epoch: the
window containing ``ts_ms`` starts at ``floor(ts_ms / size_ms) * size_ms``. Flooring (not
truncation towards zero) keeps the alignment correct for negative timestamps, e.g. events before
1970.

Hopping windows of ``size_ms`` advance by ``step_ms`` (``size_ms`` a multiple of ``step_ms``):
windows ``[k * step_ms, k * step_ms + size_ms)`` for every integer ``k``, so each event lies in
exactly ``size_ms // step_ms`` of them (`hopping_starts_ms`).

A sliding window looks back ``size_ms`` from an event at ``ts_ms``: it holds the times ``t`` with
``ts_ms - size_ms < t <= ts_ms``, i.e. the half-open range ``[ts_ms - size_ms + 1, ts_ms + 1)``
(`sliding_range_ms`).

Count windows (the last N events of an entity) have no time arithmetic; see
`streams.features`.

Everything is exact integer arithmetic on Python ints or ``int64`` numpy arrays.
"""

from __future__ import annotations

from typing import overload

import numpy as np

from driftline.errors import DriftlineError, SpecError
from driftline.streams.params import int_param

__all__ = [
    "WINDOW_KINDS",
    "check_size_ms",
    "check_step_ms",
    "hopping_starts_ms",
    "sliding_range_ms",
    "tumbling_start_ms",
    "window_end_ms",
]

WINDOW_KINDS = ("tumbling", "hopping", "sliding", "count")
"""Supported window kinds."""

MAX_HOPS = 1000
"""Most hopping windows one event lies in (``size_ms // step_ms``): each event is added to
every one of them, so a one-hour window hopping by 1 ms would make 3.6 million rows per event."""


def check_size_ms(size_ms: object, what: str = "size_ms") -> int:
    """Return ``size_ms`` as an int, or raise `SpecError` unless it is an integer > 0.

    Parameters
    ----------
    size_ms
        Candidate window size in milliseconds.
    what
        Name used in the error message.

    Returns
    -------
    int
        The validated size.

    Examples
    --------
    >>> check_size_ms(60_000)
    60000
    >>> check_size_ms(0)
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: size_ms: got 0; expected an integer number of milliseconds >= 1
    """
    return int_param(what, size_ms, 1, unit="milliseconds")


@overload
def tumbling_start_ms(ts_ms: int, size_ms: int) -> int: ...
@overload
def tumbling_start_ms(ts_ms: np.ndarray, size_ms: int) -> np.ndarray: ...
def tumbling_start_ms(ts_ms: np.ndarray | int, size_ms: int) -> np.ndarray | int:
    """Start of the tumbling window of size ``size_ms`` that contains each ``ts_ms``.

    Parameters
    ----------
    ts_ms
        Event time(s) in integer milliseconds: a Python/numpy integer or an integer array.
    size_ms
        Window size in milliseconds, > 0.

    Returns
    -------
    int or numpy.ndarray
        ``floor(ts_ms / size_ms) * size_ms``: an int for scalar input, else an ``int64`` array
        of the same shape.

    Raises
    ------
    SpecError
        If ``size_ms`` is not an integer > 0.
    DriftlineError
        If ``ts_ms`` is not integer-valued (e.g. a float array).

    Examples
    --------
    >>> tumbling_start_ms(125_000, 60_000)
    120000
    >>> tumbling_start_ms(-1, 60_000)
    -60000
    >>> tumbling_start_ms(np.array([-60_001, -60_000, 0, 59_999, 60_000]), 60_000).tolist()
    [-120000, -60000, 0, 0, 60000]
    """
    size = check_size_ms(size_ms)
    if isinstance(ts_ms, bool):
        raise DriftlineError(f"ts_ms: got {ts_ms!r}; expected integer milliseconds")
    if isinstance(ts_ms, int | np.integer):
        return (int(ts_ms) // size) * size
    ts = np.asarray(ts_ms)
    if ts.dtype.kind not in "iu":
        raise DriftlineError(
            f"ts_ms: got an array of dtype {ts.dtype}; expected integer milliseconds (int64)"
        )
    ts = ts.astype(np.int64, copy=False)
    return np.floor_divide(ts, size) * size


@overload
def window_end_ms(start_ms: int, size_ms: int) -> int: ...
@overload
def window_end_ms(start_ms: np.ndarray, size_ms: int) -> np.ndarray: ...
def window_end_ms(start_ms: np.ndarray | int, size_ms: int) -> np.ndarray | int:
    """Exclusive end of the window(s) starting at ``start_ms``: ``start_ms + size_ms``.

    Parameters
    ----------
    start_ms
        Window start(s) as returned by `tumbling_start_ms`.
    size_ms
        Window size in milliseconds, > 0.

    Returns
    -------
    int or numpy.ndarray
        The exclusive end; an event at exactly this time belongs to the next window.

    Examples
    --------
    >>> window_end_ms(120_000, 60_000)
    180000
    >>> window_end_ms(np.array([-60_000, 0]), 60_000).tolist()
    [0, 60000]
    """
    size = check_size_ms(size_ms)
    if isinstance(start_ms, int | np.integer) and not isinstance(start_ms, bool):
        return int(start_ms) + size
    start = np.asarray(start_ms)
    if start.dtype.kind not in "iu":
        raise DriftlineError(
            f"start_ms: got an array of dtype {start.dtype}; expected integer milliseconds (int64)"
        )
    return start.astype(np.int64, copy=False) + size


def check_step_ms(size_ms: int, step_ms: object, what: str = "step_ms") -> int:
    """Return ``step_ms`` as an int, or raise `SpecError` unless it divides ``size_ms``.

    Parameters
    ----------
    size_ms
        The (validated) hopping window size.
    step_ms
        Candidate hop in milliseconds: an integer > 0, <= ``size_ms``, dividing ``size_ms``,
        and at least ``size_ms / MAX_HOPS``.
    what
        Name used in the error message.

    Returns
    -------
    int
        The validated step.

    Examples
    --------
    >>> check_step_ms(60_000, 15_000)
    15000
    >>> check_step_ms(60_000, 7_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: step_ms: got 7000; expected a divisor of the window size 60000 ...
    >>> check_step_ms(3_600_000, 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.errors.SpecError: step_ms: got 1; expected at least the window size / 1000 (3600): ...
    """
    step = check_size_ms(step_ms, what)
    if step > size_ms or size_ms % step:
        raise SpecError(
            f"{what}: got {step}; expected a divisor of the window size {size_ms} "
            "(so every event lies in size/step windows)"
        )
    if size_ms // step > MAX_HOPS:
        raise SpecError(
            f"{what}: got {step}; expected at least the window size / {MAX_HOPS} "
            f"({-(-size_ms // MAX_HOPS)}): every event is added to each of the size/step "
            f"windows it lies in ({size_ms // step} here); for a window that moves with each "
            "event use a sliding window"
        )
    return step


def hopping_starts_ms(ts_ms: np.ndarray, size_ms: int, step_ms: int) -> np.ndarray:
    """Starts of the ``size_ms // step_ms`` hopping windows containing each event, latest first.

    Parameters
    ----------
    ts_ms
        Event times, integer array of shape ``(n,)``.
    size_ms, step_ms
        Window size and hop; ``step_ms`` divides ``size_ms``.

    Returns
    -------
    numpy.ndarray
        ``int64`` of shape ``(n, size_ms // step_ms)``; column 0 is the most recent window (the
        largest start ``<= ts_ms``), column ``j`` starts ``j * step_ms`` earlier. Every window
        ``[s, s + size_ms)`` contains its event.

    Examples
    --------
    >>> hopping_starts_ms(np.array([0, 25, -1]), 30, 10).tolist()
    [[0, -10, -20], [20, 10, 0], [-10, -20, -30]]
    """
    step = check_step_ms(check_size_ms(size_ms), step_ms)
    last = tumbling_start_ms(np.asarray(ts_ms), step)
    k = np.arange(size_ms // step, dtype=np.int64) * step
    return last[:, None] - k[None, :]


@overload
def sliding_range_ms(ts_ms: int, size_ms: int) -> tuple[int, int]: ...
@overload
def sliding_range_ms(ts_ms: np.ndarray, size_ms: int) -> tuple[np.ndarray, np.ndarray]: ...
def sliding_range_ms(ts_ms: np.ndarray | int, size_ms: int) -> tuple[np.ndarray | int, ...]:
    """Half-open ``[lo, hi)`` of the sliding window that ends at each event (inclusive).

    Parameters
    ----------
    ts_ms
        Event time(s) in integer milliseconds.
    size_ms
        Look-back in milliseconds, > 0.

    Returns
    -------
    tuple
        ``(ts_ms - size_ms + 1, ts_ms + 1)``: times ``t`` with ``ts_ms - size_ms < t <= ts_ms``.

    Examples
    --------
    >>> sliding_range_ms(60_000, 60_000)
    (1, 60001)
    >>> [a.tolist() for a in sliding_range_ms(np.array([0, 5]), 5)]
    [[-4, 1], [1, 6]]
    """
    size = check_size_ms(size_ms)
    if isinstance(ts_ms, int | np.integer) and not isinstance(ts_ms, bool):
        return int(ts_ms) - size + 1, int(ts_ms) + 1
    ts = np.asarray(ts_ms)
    if ts.dtype.kind not in "iu":
        raise DriftlineError(
            f"ts_ms: got an array of dtype {ts.dtype}; expected integer milliseconds (int64)"
        )
    ts = ts.astype(np.int64, copy=False)
    return ts - size + 1, ts + 1
