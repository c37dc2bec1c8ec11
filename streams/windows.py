"""Integer arithmetic for tumbling event-time windows.

Windows are half-open, ``[start_ms, start_ms + size_ms)``, aligned on the epoch: the window
containing ``ts_ms`` starts at ``floor(ts_ms / size_ms) * size_ms``. Flooring (not truncation
towards zero) keeps the alignment correct for negative timestamps, e.g. events before 1970.

Everything is exact integer arithmetic on Python ints or ``int64`` numpy arrays.
"""

from __future__ import annotations

from typing import overload

import numpy as np

from driftline.errors import DriftlineError, SpecError

__all__ = ["check_size_ms", "tumbling_start_ms", "window_end_ms"]


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
    driftline.errors.SpecError: size_ms: got 0; expected an integer number of milliseconds > 0
    """
    if isinstance(size_ms, bool) or not isinstance(size_ms, int | np.integer) or size_ms <= 0:
        raise SpecError(f"{what}: got {size_ms!r}; expected an integer number of milliseconds > 0")
    return int(size_ms)


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
