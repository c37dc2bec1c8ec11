"""Column-wise JSON encoding of the per-event output documents.

Each number column is serialised once with orjson (numpy arrays, C speed) and split into its
items; each document is then one ``bytes % tuple`` of a template built per batch. The output is
byte-for-byte what ``orjson.dumps`` of the equivalent dict gives (tests/agents/test_encode.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def json_items(values: np.ndarray | Sequence[object]) -> list[bytes]:
    """The JSON text of each item of a column (floats: NaN/inf become ``null``, like orjson)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu" and values.ndim == 1:
        if values.size == 0:
            return []
        text = orjson.dumps(np.ascontiguousarray(values), option=_NUMPY)
    else:
        vals = list(values)
        if not vals:
            return []
        text = orjson.dumps(vals)
        # strings may hold commas: then one by one (a comma more than the separators)
        if text.count(b",") != len(vals) - 1:
            return [orjson.dumps(v) for v in vals]
    return text[1:-1].split(b",")


def json_strings(values: Sequence[str]) -> list[bytes]:
    """JSON text of each string (the whole list in one orjson call when no string holds a
    comma, else each distinct string once).

    >>> json_strings(["a", "b", "a,b", "a"])
    [b'"a"', b'"b"', b'"a,b"', b'"a"']
    """
    text = orjson.dumps(values if isinstance(values, list) else list(values))
    if text.count(b",") == len(values) - 1:
        return text[1:-1].split(b",")
    cache: dict[str, bytes] = {}
    out = []
    for v in values:
        b = cache.get(v)
        if b is None:
            b = cache[v] = orjson.dumps(v)
        out.append(b)
    return out


def utf8_all(values: Sequence[str]) -> list[bytes]:
    r"""``[v.encode() for v in values]``, in one encode of the joined text when no value holds
    a newline (UTF-8 never has a 0x0A byte inside a character).

    >>> utf8_all(["a", "é", ""])
    [b'a', b'\xc3\xa9', b'']
    >>> utf8_all([chr(10), "a"])  # a newline: one by one
    [b'\n', b'a']
    """
    if not values:
        return []
    text = "\n".join(values)
    if text.count("\n") == len(values) - 1:
        return text.encode().split(b"\n")
    return [v.encode() for v in values]


def template(parts: Sequence[bytes | None]) -> bytes:
    """A ``bytes %`` template: constant JSON pieces, with ``None`` marking a value slot."""
    return b"".join(b"%s" if p is None else p.replace(b"%", b"%%") for p in parts)


def key_json(name: str) -> bytes:
    return orjson.dumps(name)
