"""Decode and validate raw input records against the spec's declared fields.

Every failure is a :class:`~driftline.errors.RecordError` with a stable ``reason`` code that
becomes the dead letter's ``reason`` and the ``reason`` label of the dead-letter counter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from driftline.errors import RecordError

_BIG = 2**1023  # integers beyond this do not fit a float64
_INT64 = 2**63  # epoch ms and entity ids beyond this do not fit an int64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_BOM = b"\xef\xbb\xbf"
#: How deep orjson nests arrays and objects before it refuses a document.
MAX_JSON_DEPTH = 1024


def _wrong_type(name: str, v: Any, expected: str) -> RecordError:
    return RecordError("wrong_type", f"field {name!r} is {type(v).__name__}, expected {expected}")


def _out_of_range(name: str, v: float | int, what: str) -> RecordError:
    text = f"{v:.6g}" if type(v) is float else f"an integer of {len(str(abs(v)))} digits"
    return RecordError("number_out_of_range", f"field {name!r} is {text}, {what}")


def _int_as_float(name: str, v: int) -> float:
    if not -_BIG < v < _BIG:
        raise _out_of_range(name, v, "too large for a float64")
    return float(v)


def _huge_integral(v: Any) -> bool:
    """A float that JSON wrote as an integer beyond 64 bits (orjson reads those as floats)."""
    return type(v) is float and math.isfinite(v) and abs(v) >= _INT64 and v.is_integer()


def _check_float(name: str, v: Any) -> float:
    if type(v) is float:
        if not math.isfinite(v):
            raise RecordError("non_finite", f"field {name!r} is {v}, expected a finite number")
        return v
    if type(v) is int:
        return _int_as_float(name, v)
    raise _wrong_type(name, v, "a number")


def _check_int(name: str, v: Any) -> float:
    if type(v) is int:
        return _int_as_float(name, v)
    if _huge_integral(v):
        raise _out_of_range(name, v, "beyond the 64-bit integer range")
    raise _wrong_type(name, v, "an integer")


def _check_bool(name: str, v: Any) -> float:
    if type(v) is bool:
        return float(v)
    raise _wrong_type(name, v, "true/false")


def _check_string(name: str, v: Any) -> str:
    if type(v) is str:
        return v
    raise _wrong_type(name, v, "a string")


def parse_timestamp_ms(name: str, v: Any) -> int:
    """Epoch milliseconds from an integer, an ISO-8601 string that carries a zone, or a
    zone-aware ``datetime`` (what Avro's ``timestamp-millis`` logical type decodes to).

    ISO times are floored to the millisecond with integer arithmetic on the offset from the
    epoch: ``dt.timestamp() * 1000`` is a float product that lands just below the integer for
    some instants (e.g. ``2004-04-08T05:56:40.031Z`` gave ...030).

    >>> parse_timestamp_ms("ts", "2004-04-08T05:56:40.031Z")
    1081403800031
    >>> parse_timestamp_ms("ts", "2004-04-08T11:26:40.031+05:30")
    1081403800031
    """
    if type(v) is int:
        return v
    if type(v) is str:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise RecordError("bad_timestamp", f"field {name!r}={v!r} is not ISO-8601") from None
        if dt.tzinfo is None:
            raise RecordError(
                "bad_timestamp", f"field {name!r}={v!r} has no time zone; add Z or +hh:mm"
            )
        return (dt - _EPOCH) // _MS
    if isinstance(v, datetime) and v.tzinfo is not None:
        return (v - _EPOCH) // _MS
    if _huge_integral(v):
        raise _out_of_range(name, v, "beyond the 64-bit range of epoch milliseconds")
    raise RecordError(
        "bad_timestamp", f"field {name!r} is {type(v).__name__}, expected epoch ms or ISO-8601 text"
    )


def _reject_constant(token: str) -> float:
    raise RecordError(
        "non_finite", f"value contains {token}, which JSON does not allow; send a finite number"
    )


def _finite_number(text: str) -> float:
    # float() of the text, not int(): a 5,000-digit integer is over int()'s digit limit
    if math.isinf(float(text)):
        digits = len(text.lstrip("-").split(".")[0].split("e")[0].split("E")[0])
        what = f"a number of {digits} digits" if len(text) > 20 else text
        raise RecordError(
            "number_out_of_range",
            f"value contains {what}, beyond the range of a float64 (~1.8e308)",
        )
    return 0.0


def classify_bad_json(raw: bytes, err: Exception) -> RecordError:
    """Why orjson refused ``raw`` (its error ``err``), as a precise :class:`RecordError`.

    Only refused records come here, so it may be slow, bounded by the value's size: a record
    nested deeper than orjson reads never reaches the stdlib parse, and a `RecursionError` of
    that parse is caught.

    >>> [classify_bad_json(v, ValueError("?")).reason for v in
    ...  (b"\\xef\\xbb\\xbf{}", b'{"a": "\\xff"}', b'{"a": NaN}', b"1" * 400, b"{")]
    ['byte_order_mark', 'invalid_utf8', 'non_finite', 'number_out_of_range', 'invalid_json']
    """
    if raw.startswith(_BOM):
        return RecordError(
            "byte_order_mark",
            "value starts with a UTF-8 byte order mark (EF BB BF), which JSON text must not "
            "carry; send the JSON without it",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RecordError(
            "invalid_utf8",
            f"value is not valid UTF-8: byte {e.start} ({raw[e.start : e.start + 1]!r}) is "
            f"{e.reason}",
        )
    msg = str(err)
    if "depth limit" in msg:
        return RecordError(
            "too_deep",
            f"value nests arrays/objects more than {MAX_JSON_DEPTH} deep ({msg})",
        )
    if "surrogate" in msg:
        return RecordError(
            "invalid_utf8",
            f"a \\u escape is half of a UTF-16 surrogate pair, not a character ({msg})",
        )
    try:
        json.loads(text, parse_constant=_reject_constant, parse_float=_finite_number,
                   parse_int=_finite_number)  # fmt: skip
    except RecordError as e:
        return e
    except RecursionError:
        return RecordError("too_deep", f"value nests arrays/objects too deep to read ({msg})")
    except ValueError:
        pass
    return RecordError("invalid_json", f"not valid JSON: {msg}")


def _json_checked(raw: bytes | None) -> Any:
    if raw is None:
        raise RecordError(
            "invalid_json", "the record has no value (a tombstone); send a JSON object"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise classify_bad_json(raw, e) from None


def json_object(raw: bytes | None, max_bytes: int, what: str) -> dict[str, Any]:
    """A side topic's record (a label, a business event) as a JSON object, or the precise
    `RecordError`: no value, over ``max_bytes``, not JSON, not an object (``what`` it should be).

    >>> json_object(b'{"a": 1}', 100, "a label")
    {'a': 1}
    >>> json_object(b"[1]", 100, "a label")
    Traceback (most recent call last):
    ...
    driftline.errors.RecordError: not_an_object: a label must be a JSON object
    """
    if raw is None:
        raise RecordError("invalid_json", "the record has no value (a tombstone?)")
    if len(raw) > max_bytes:
        raise RecordError("oversized", f"{len(raw)} bytes; input.max_message_bytes is {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise classify_bad_json(raw, e) from None
    if not isinstance(doc, dict):
        raise RecordError("not_an_object", f"{what} must be a JSON object")
    return doc


@dataclass(frozen=True)
class PayloadFormat:
    """How a record's value becomes an object, for :class:`RecordDecoder`.

    ``loads`` is the hot path: the value's object, or one of ``errors`` (then ``loads_checked``
    says why with a :class:`RecordError`). ``loads_checked`` also handles a missing value.
    ``name`` words the ``not_an_object`` error (``value is a JSON list``).
    """

    name: str
    loads: Callable[[bytes], Any]
    errors: type[BaseException] | tuple[type[BaseException], ...]
    loads_checked: Callable[[bytes | None], Any]


#: Plain JSON values (``[input] format = "json"``).
JSON_FORMAT = PayloadFormat("JSON", orjson.loads, orjson.JSONDecodeError, _json_checked)


def field_path(obj: Mapping[str, Any], name: str) -> Any:
    """The value of field ``name`` in ``obj``: a dotted name is a path into nested objects
    (``user.country``), else (or if the path is not there) the key itself. KeyError if absent.

    >>> field_path({"user": {"country": "de"}}, "user.country")
    'de'
    >>> field_path({"user.country": "fr"}, "user.country")
    'fr'
    """
    if "." in name:
        node: Any = obj
        for part in name.split("."):
            if type(node) is not dict or part not in node:
                break
            node = node[part]
        else:
            return node
    return obj[name]


CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "float": _check_float,
    "int": _check_int,
    "bool": _check_bool,
    "string": _check_string,
    "timestamp": parse_timestamp_ms,
}


class DecodedBatch(NamedTuple):
    """:meth:`RecordDecoder.decode_many` of a batch of values."""

    #: indexes (into the values) of the values that decoded, increasing
    good: list[int]
    entities: list[str]
    times: list[int]
    #: one list per numeric field (floats), row ``j`` the value ``good[j]``
    numeric: tuple[list[float], ...]
    #: one list per extra field
    extra: tuple[list[Any], ...]
    #: (index, error) of each value that did not decode, increasing
    rejected: list[tuple[int, Exception]]


class RecordDecoder:
    """Turns one raw value into ``(entity, event_time_ms, numeric values, extra values)``.

    Numeric values are the float/int/bool fields (as floats, in spec order); extra values are
    the fields named in ``extra`` as they are (e.g. strings for filters and distinct counts).
    Anything unusable raises :class:`RecordError`.

    Examples
    --------
    >>> d = RecordDecoder({"user": "string", "ts": "timestamp", "x": "float"}, "user", "ts", 1024)
    >>> d.decode(b'{"user": "u1", "ts": "2026-01-01T00:00:00Z", "x": 2}')
    ('u1', 1767225600000, (2.0,), ())
    >>> d.decode(b'{"user": "u1", "ts": 5, "x": "2"}')
    Traceback (most recent call last):
    ...
    driftline.errors.RecordError: wrong_type: field 'x' is str, expected a number
    """

    def __init__(
        self,
        fields: Mapping[str, str],
        key_field: str,
        time_field: str,
        max_bytes: int,
        extra: tuple[str, ...] = (),
        payload: PayloadFormat = JSON_FORMAT,
    ) -> None:
        self.payload = payload
        self.key_field = key_field
        self.time_field = time_field
        self.max_bytes = max_bytes
        self.numeric = tuple(
            n for n, t in fields.items() if t in ("float", "int", "bool") and n != key_field
        )
        self._checks = [(n, CHECKS[t]) for n, t in fields.items()]
        self._numeric_set = set(self.numeric)
        unknown = [n for n in extra if n not in fields]
        if unknown:
            raise ValueError(f"extra fields {unknown} are not declared fields")
        self.extra = tuple(extra)
        self.decode = self._compile_fast_path(fields)  # type: ignore[method-assign]

    def _compile_fast_path(self, fields: Mapping[str, str]) -> Callable[[bytes | None], Any]:
        """A decoder specialised to the spec's fields, for the hot path (and
        :meth:`decode_many`, the same checks over a whole batch in one loop).

        It accepts exactly what :meth:`decode_checked` accepts and returns the same values;
        on anything unusual it hands the record to :meth:`decode_checked`, which raises the
        precise :class:`RecordError`.
        """
        names = list(fields)
        k = names.index(self.key_field)
        tpos = names.index(self.time_field)
        key_expr = f"v{k}" if fields[self.key_field] == "string" else f"str(v{k})"
        nums = [f"v{names.index(n)}" for n in self.numeric]
        ext = [f"v{names.index(n)}" for n in self.extra]

        def tup(items: list[str]) -> str:
            return f"({', '.join(items)}{',' if items else ''})"

        one = ["def decode(raw):", *self._check_lines(fields, "return slow(raw)", "    ")]
        one.append(f"    return ({key_expr}, v{tpos}, {tup(nums)}, {tup(ext)})")
        # the batch: one loop; a record the checks do not pass goes to ``bad`` (then to
        # decode_checked, which says why, or decodes what the fast checks leave to it)
        cols = [f"n{j}" for j in range(len(nums))] + [f"x{j}" for j in range(len(ext))]
        many = [
            "def decode_many(values):",
            "    good = []; bad = []; ents = []; times = []",
            *[f"    {c} = []" for c in cols],
            "    for i, raw in enumerate(values):",
            *self._check_lines(fields, "bad.append(i); continue", "        "),
            "        good.append(i)",
            f"        ents.append({key_expr})",
            f"        times.append(v{tpos})",
            *[f"        n{j}.append({v})" for j, v in enumerate(nums)],
            *[f"        x{j}.append({v})" for j, v in enumerate(ext)],
            f"    return good, bad, ents, times, {tup(cols[: len(nums)])}, "
            f"{tup(cols[len(nums) :])}",
        ]
        env: dict[str, Any] = {
            "MAX": self.max_bytes,
            "loads": self.payload.loads,
            "JSONDecodeError": self.payload.errors,
            "slow": self.decode_checked,
            "ts": parse_timestamp_ms,
            "RecordError": RecordError,
            "BIG": _BIG,
        }
        code = "\n".join(one) + "\n\n" + "\n".join(many)
        exec(compile(code, f"<driftline decoder {self.key_field}>", "exec"), env)
        self._decode_many = env["decode_many"]
        return env["decode"]

    def _check_lines(self, fields: Mapping[str, str], fail: str, ind: str) -> list[str]:
        """The fast path's checks of ``raw`` into ``v0, v1, ...`` (one per field, converted),
        indented by ``ind``; ``fail`` is the statement for a record they do not pass."""
        lines = [
            "if raw is None or len(raw) > MAX:",
            f"    {fail}",
            "try:",
            "    o = loads(raw)",
            "except JSONDecodeError:",
            f"    {fail}",
            "if type(o) is not dict:",
            f"    {fail}",
            "try:",
        ]
        names = list(fields)
        for i, n in enumerate(names):
            path = "".join(f"[{part!r}]" for part in n.split("."))  # user.country: nested
            lines.append(f"    v{i} = o{path}")
        lines += ["except (KeyError, TypeError):", f"    {fail}"]
        for i, n in enumerate(names):
            t = fields[n]
            if t == "float":
                lines += [
                    f"t = type(v{i})",
                    "if t is float:",
                    f"    if v{i} - v{i} != 0.0:",
                    f"        {fail}",
                    f"elif t is int and -BIG < v{i} < BIG:",
                    f"    v{i} = float(v{i})",
                    "else:",
                    f"    {fail}",
                ]
            elif t in ("int", "bool"):
                py = "int" if t == "int" else "bool"
                lines += [f"if type(v{i}) is not {py}:", f"    {fail}"]
                if t == "int":
                    lines += [f"if not -BIG < v{i} < BIG:", f"    {fail}"]
                if n != self.key_field:
                    lines.append(f"v{i} = float(v{i})")
            elif t == "string":
                lines += [f"if type(v{i}) is not str:", f"    {fail}"]
            elif t == "timestamp":
                lines += [
                    f"if type(v{i}) is not int:",
                    f"    if type(v{i}) is not str:",
                    f"        {fail}",
                    "    try:",
                    f"        v{i} = ts({n!r}, v{i})",
                    "    except RecordError:",
                    f"        {fail}",
                ]
        return [ind + line for line in lines]

    def decode_many(
        self, values: Sequence[bytes | None], passthrough: tuple[type[BaseException], ...] = ()
    ) -> DecodedBatch:
        """:meth:`decode` of every value, column-wise: the decoded values' indexes, their
        entities, event times, numeric columns (``numeric`` order) and extra columns
        (``extra`` order), and ``(index, error)`` of each value that does not decode.

        One generated loop runs the fast path's checks over the batch; a value they do not
        pass goes to :meth:`decode_checked`, which raises its precise error (or decodes it:
        e.g. an integer key, a dotted field name that is a key itself). Errors of the
        ``passthrough`` types are not the record's: they propagate.

        >>> d = RecordDecoder({"u": "string", "ts": "timestamp", "x.y": "float"}, "u", "ts", 64)
        >>> b = d.decode_many([b'{"u": "a", "ts": 1, "x": {"y": 2}}', b"{",
        ...                    b'{"u": "b", "ts": 3, "x.y": 4}'])  # the last: decode_checked
        >>> b.good, b.entities, b.times, b.numeric, [(i, e.reason) for i, e in b.rejected]
        ([0, 2], ['a', 'b'], [1, 3], ([2.0, 4.0],), [(1, 'invalid_json')])
        """
        try:
            good, bad, ents, times, nums, ext = self._decode_many(values)
        except passthrough:
            raise
        except Exception:  # a payload reader failing otherwise than it says: record by record
            return self._decode_each(values, passthrough)
        if not bad:
            return DecodedBatch(good, ents, times, nums, ext, [])
        rejected: list[tuple[int, Exception]] = []
        rescued: dict[int, tuple[str, int, tuple[float, ...], tuple[Any, ...]]] = {}
        for i in bad:
            try:
                rescued[i] = self.decode_checked(values[i])
            except passthrough:
                raise
            except Exception as e:  # every other failure is the record's
                rejected.append((i, e))
        if rescued:  # rare: rebuild the columns in record order
            rows = {i: (ents[j], times[j], tuple(c[j] for c in nums), tuple(c[j] for c in ext))
                    for j, i in enumerate(good)}  # fmt: skip
            rows.update(rescued)
            good = sorted(rows)
            ents = [rows[i][0] for i in good]
            times = [rows[i][1] for i in good]
            nums = tuple([rows[i][2][j] for i in good] for j in range(len(self.numeric)))
            ext = tuple([rows[i][3][j] for i in good] for j in range(len(self.extra)))
        return DecodedBatch(good, ents, times, nums, ext, rejected)

    def _decode_each(
        self, values: Sequence[bytes | None], passthrough: tuple[type[BaseException], ...]
    ) -> DecodedBatch:
        """`decode_many` one :meth:`decode` call at a time."""
        good: list[int] = []
        ents: list[str] = []
        times: list[int] = []
        rows: list[tuple[float, ...]] = []
        extras: list[tuple[Any, ...]] = []
        rejected: list[tuple[int, Exception]] = []
        for i, raw in enumerate(values):
            try:
                ent, t, nums, ext = self.decode(raw)
            except passthrough:
                raise
            except Exception as e:  # every other failure is the record's
                rejected.append((i, e))
                continue
            good.append(i)
            ents.append(ent)
            times.append(t)
            rows.append(nums)
            extras.append(ext)
        return DecodedBatch(
            good, ents, times,
            tuple([r[j] for r in rows] for j in range(len(self.numeric))),
            tuple([x[j] for x in extras] for j in range(len(self.extra))),
            rejected,
        )  # fmt: skip

    def decode_checked(
        self, raw: bytes | None
    ) -> tuple[str, int, tuple[float, ...], tuple[Any, ...]]:
        """The reference decoder: every check in order, with a precise error."""
        if raw is not None and len(raw) > self.max_bytes:
            raise RecordError(
                "oversized",
                f"value is {len(raw)} bytes, over input.max_message_bytes={self.max_bytes}",
            )
        obj = self.payload.loads_checked(raw)
        if type(obj) is not dict:
            raise RecordError(
                "not_an_object",
                f"value is a {self.payload.name} {type(obj).__name__}, expected an object",
            )
        return self.check_object(obj)

    def check_object(
        self, obj: dict[str, Any]
    ) -> tuple[str, int, tuple[float, ...], tuple[Any, ...]]:
        """The checks of :meth:`decode_checked` on a decoded object."""
        out: dict[str, Any] = {}
        for name, check in self._checks:
            try:
                v = field_path(obj, name)
            except KeyError:
                raise RecordError("missing_field", f"field {name!r} is missing") from None
            if v is None:
                raise RecordError("missing_field", f"field {name!r} is null")
            out[name] = check(name, v)
        key = field_path(obj, self.key_field)
        if type(key) is not str and type(key) is not int:
            raise RecordError(
                "wrong_type", f"key field {self.key_field!r} must be a string or integer"
            )
        return (
            str(key),
            out[self.time_field],
            tuple(out[n] for n in self.numeric),
            tuple(out[n] for n in self.extra),
        )
