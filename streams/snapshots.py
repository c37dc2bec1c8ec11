"""The checks every ``restore`` makes before it loads a snapshot, with one set of messages.

A snapshot is a plain dict naming what took it (under ``"kind"``, or ``"detector"`` for drift
detectors) and the hyperparameters it was taken with (under ``"params"``). `check_snapshot`
refuses one of another kind or taken with other hyperparameters; `reading_snapshot` turns the
``KeyError`` / ``TypeError`` / ``ValueError`` of reading a damaged one into a `DriftlineError`.
Every message starts ``state:``.

Examples
--------
>>> snap = {"kind": "label_join", "params": {"ttl_ms": 10}}
>>> check_snapshot(snap, "label_join", {"ttl_ms": 10})
>>> check_snapshot(snap, "importance_monitor", {})
Traceback (most recent call last):
...
driftline.errors.DriftlineError: state: not an importance_monitor snapshot (got 'label_join')
>>> check_snapshot(snap, "label_join", {"ttl_ms": 20})  # doctest: +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
driftline.errors.DriftlineError: state: snapshot hyperparameters {'ttl_ms': 10} differ from this
label_join's {'ttl_ms': 20}; restore into a label_join built with the same ones
>>> with reading_snapshot("label_join"):
...     snap["counters"]
Traceback (most recent call last):
...
driftline.errors.DriftlineError: state: malformed label_join snapshot (KeyError('counters'))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from driftline.errors import DriftlineError

__all__ = ["check_snapshot", "reading_snapshot"]

#: What reading a damaged snapshot raises (a missing key, a wrong type, a bad value).
MALFORMED: tuple[type[Exception], ...] = (KeyError, TypeError, ValueError)


def _a(what: str) -> str:
    return f"an {what}" if what[:1].lower() in "aeiou" else f"a {what}"


def check_snapshot(
    state: object, kind: str, params: dict[str, Any], *, key: str = "kind", what: str = ""
) -> None:
    """Raise `DriftlineError` unless ``state[key] == kind`` and ``state["params"] == params``.

    ``what`` names the snapshot in the messages (default ``kind``).
    """
    what = what or kind
    if not isinstance(state, dict) or state.get(key) != kind:
        got = state.get(key) if isinstance(state, dict) else type(state).__name__
        raise DriftlineError(f"state: not {_a(what)} snapshot (got {got!r})")
    if state.get("params") != params:
        raise DriftlineError(
            f"state: snapshot hyperparameters {state.get('params')} differ from this {what}'s "
            f"{params}; restore into {_a(what)} built with the same ones"
        )


@contextmanager
def reading_snapshot(what: str, *also: type[Exception]) -> Iterator[None]:
    """Turn `MALFORMED` errors (and ``also``) raised inside into ``state: malformed <what>
    snapshot (<the error>)``."""
    try:
        yield
    except (*MALFORMED, *also) as exc:
        raise DriftlineError(f"state: malformed {what} snapshot ({exc!r})") from exc
