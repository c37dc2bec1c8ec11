"""Per-partition state on a compacted changelog topic, written inside the batch's transaction.

Every committed transaction holds, for each input partition it touched: the outputs, the
partition's state snapshot, and the consumer offsets. So after a crash the committed offsets
and the last committed snapshot always describe the same point of the stream: a restarted
worker neither loses nor double-counts what it had.

Layout on the changelog (partition = input partition, cleanup.policy=compact), format
``driftline-state/4`` (`STATE_FORMAT`):

- the feature windows, one record per key, written only when the key changed (a tombstone when
  it is evicted): ``<p>/w/<state>/<window start>/<entity>`` (tumbling/hopping) and
  ``<p>/m/<state>/<entity>`` (an entity's sliding/count members); see `encode_keyed_changes`;
- the rest of the snapshot: ``<p>/chunk/<epoch % 2>/<i>`` → epoch (8 bytes, big endian) +
  zlib-compressed slice of the snapshot (JSON), and ``<p>/head`` → ``{"format", "epoch",
  "chunks", "sha256"}`` written last. The snapshot says how many keys each window state holds.

A restore reads the partition to its end, keeps the newest value of every key, the newest head
and the chunks of that epoch, and hands each window state its per-key rows. Consecutive
snapshots write their chunks under alternate keys, so a worker stopped between a snapshot's
chunks and its head leaves the previous snapshot whole (both guarantees now write a snapshot in
one transaction; the alternation stays harmless). Formats ``driftline-state/2`` (every snapshot's
chunks under ``<p>/chunk/<i>``) and ``/3`` (every entity inside the snapshot) are still read.

The snapshot is plain JSON: river detectors and the online model are stored as numbers and
lists (`driftline.streams.plain_state`), never pickled, so a record on this topic can make a
restore fail but never run code. Any record a restore cannot use (not written by driftline, of
another format version, or not matching its checksum or expected shape) stops it with a
`ChangelogError` naming the topic, partition and offset, instead of starting the state over.
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections.abc import Callable
from itertools import compress, count, repeat
from operator import is_not, itemgetter, not_
from typing import Any, Literal

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from driftline.agents.kafka_io import client_conf
from driftline.errors import DriftlineError
from driftline.kafka_config import Kafka
from driftline.streams.feature_state import KeyedChanges, KeyedRowError, KeyedRows, gc_paused
from driftline.streams.label_log import check_log_entry

CHUNK_BYTES = 512 * 1024
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
    "max.message.bytes": str(2 * CHUNK_BYTES),
}
#: The format version every head on the changelog carries.
STATE_FORMAT = "driftline-state/4"
#: The formats a restore reads: format 2 kept every snapshot's chunks under the same keys;
#: formats 2 and 3 held every entity inside the snapshot (restored, then written per key).
READ_FORMATS = ("driftline-state/2", "driftline-state/3", STATE_FORMAT)
#: The formats whose snapshots keep the feature windows per key, apart from the head.
KEYED_FORMATS = (STATE_FORMAT,)
_MAX_CHUNKS = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(
    rb"(\d+)/(?:head|chunk/\d+(?:/\d+)?|labels/\d+/(?:head|chunk/\d+)|[wm]/.*)", re.DOTALL
)
#: A per-key record's value above this many bytes of JSON is stored zlib-compressed.
COMPRESS_ABOVE = 64 * 1024


#: Input partitions whose saved state a worker ignores on purpose (``--reset-state``).
StateReset = frozenset[int] | Literal["all"]


def parse_reset_state(text: str) -> StateReset:
    """``"all"`` or comma-separated partition numbers, as ``--reset-state`` takes them.

    Examples
    --------
    >>> sorted(parse_reset_state("2, 0"))
    [0, 2]
    >>> parse_reset_state("all")
    'all'
    >>> parse_reset_state("x")
    Traceback (most recent call last):
    ...
    driftline.errors.DriftlineError: --reset-state: got 'x'; expected all, or partition \
numbers such as 0,2
    """
    if text.strip() == "all":
        return "all"
    try:
        parts = frozenset(int(x) for x in text.split(","))
    except ValueError:
        parts = frozenset({-1})
    if not parts or min(parts) < 0:
        raise DriftlineError(
            f"--reset-state: got {text!r}; expected all, or partition numbers such as 0,2"
        )
    return parts


class ChangelogError(DriftlineError):
    """A state changelog record a restore cannot use, with where it is and what to do."""

    def __init__(
        self, topic: str | None, partition: int, offset: int | None, key: bytes | None, problem: str
    ) -> None:
        self.topic, self.partition, self.offset, self.key = topic, partition, offset, key
        where = "state changelog" + (f" topic {topic}" if topic else "")
        where += f", partition {partition}, offset {'?' if offset is None else offset}"
        where += " (no key)" if key is None else f" (key {key.decode('utf-8', 'replace')[:80]!r})"
        super().__init__(
            f"{where}: {problem}. Nothing was restored; the worker will not start this "
            f"partition with empty state on its own. Restore the topic from a backup, or start "
            f"this partition's state over on purpose: `driftline worker --reset-state "
            f"{partition} ...` (windows and detectors start empty at the group's committed "
            "offsets; reset the group's offsets too to rebuild them from the input)"
        )


class ChangelogRecords(dict[bytes, bytes]):
    """The latest value per key of one changelog partition, and where each was read.

    A plain ``dict`` works wherever this is expected; this one also lets errors name offsets.
    """

    def __init__(self, topic: str | None = None, partition: int | None = None) -> None:
        super().__init__()
        self.topic = topic
        self.partition = partition
        self.offsets: dict[bytes, int] = {}
        #: records whose key is not a driftline state key of this partition: (offset, key)
        self.foreign: dict[bytes | None, int] = {}
        #: keys whose latest record is a tombstone: key -> its offset
        self.tombstones: dict[bytes, int] = {}
        self._keyed_prefixes = () if partition is None else keyed_prefixes(partition)

    def add(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        """Apply one record read at ``offset`` (a None value is a tombstone)."""
        if key is not None and key.startswith(self._keyed_prefixes):  # per-key: most records
            if value is None:  # evicted (not kept in `tombstones`: there are many)
                self.pop(key, None)
                self.offsets.pop(key, None)
            else:
                self[key] = value
                self.offsets[key] = offset
            return
        m = None if key is None else _KEY.fullmatch(key)
        if key is None or m is None or int(m.group(1)) != self.partition:
            if value is None:
                self.foreign.pop(key, None)
            else:
                self.foreign[key] = offset
        elif value is None:
            self.pop(key, None)
            self.offsets.pop(key, None)
            self.tombstones[key] = offset
        else:
            self[key] = value
            self.offsets[key] = offset
            self.tombstones.pop(key, None)


    def add_many(
        self, keys: list[bytes | None], values: list[bytes | None], offsets: list[int]
    ) -> None:
        """`add` of many records in order: the per-key values (most of a restore) in two
        C-level dict updates, the other records one by one. (Per-key keys and the others are
        apart, so only each part's own order matters.)"""
        if None in keys:
            for key, value, offset in zip(keys, values, offsets, strict=True):
                self.add(key, value, offset)
            return
        keyed = list(map(bytes.startswith, keys, repeat(self._keyed_prefixes)))  # type: ignore[arg-type]
        if not all(keyed):
            other = list(map(not_, keyed))
            for key, value, offset in zip(compress(keys, other), compress(values, other),
                                          compress(offsets, other), strict=True):  # fmt: skip
                self.add(key, value, offset)
            keys, values, offsets = (list(compress(x, keyed)) for x in (keys, values, offsets))
        if None in values:  # tombstones among them: in order
            for key, value, offset in zip(keys, values, offsets, strict=True):
                self.add(key, value, offset)
            return
        self.update(zip(keys, values, strict=True))  # type: ignore[arg-type]
        self.offsets.update(zip(keys, offsets, strict=True))  # type: ignore[arg-type]


def _error(records: dict[bytes, bytes], partition: int, key: bytes, problem: str) -> ChangelogError:
    topic = getattr(records, "topic", None)
    offset = getattr(records, "offsets", {}).get(key)
    return ChangelogError(topic, partition, offset, key, problem)


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None


def _head(records: dict[bytes, bytes], partition: int, key: bytes, fields: set[str]) -> Any:
    """The JSON object of a head record, its format version and ``fields`` checked."""
    try:
        head = _loads(records[key])
    except ValueError as e:
        raise _error(records, partition, key, f"not a driftline state head: {e}") from None
    if not isinstance(head, dict):
        raise _error(records, partition, key, "not a driftline state head (not a JSON object)")
    fmt = head.get("format")
    if fmt is None and set(head) == fields:
        raise _error(
            records,
            partition,
            key,
            "written by an older driftline in state format driftline-state/1 (which pickled "
            f"river objects); this driftline reads only {STATE_FORMAT}",
        )
    if fmt not in READ_FORMATS:
        if isinstance(fmt, str) and fmt.startswith("driftline-state/"):
            problem = (f"state format {fmt!r} is unknown; this driftline reads only "
                       f"{' and '.join(READ_FORMATS)}")  # fmt: skip
        else:
            problem = f"not a driftline state head (format {str(fmt)[:40]!r}, not {STATE_FORMAT})"
        raise _error(records, partition, key, problem)
    if set(head) != fields | {"format"}:
        raise _error(
            records, partition, key, f"head fields {sorted(head)} are not {STATE_FORMAT}'s"
        )
    chunks, sha = head.get("chunks"), head.get("sha256")
    if type(chunks) is not int or not 1 <= chunks <= _MAX_CHUNKS:
        raise _error(records, partition, key, f"bad chunk count {chunks!r}")
    if type(sha) is not str or not _SHA256.fullmatch(sha):
        raise _error(records, partition, key, "bad sha256")
    return head


def _blob(
    records: dict[bytes, bytes], partition: int, head_key: bytes, keys: list[bytes], sha: str,
    epoch: int | None = None,
) -> Any:  # fmt: skip
    """The JSON document stored in the chunks ``keys`` (checked against the head's sha256)."""
    parts = []
    for i, k in enumerate(keys):
        v = records.get(k)
        if v is None:
            raise _error(
                records, partition, head_key,
                f"chunk {i} is missing; the changelog was altered outside driftline",
            )  # fmt: skip
        if epoch is not None:
            if len(v) < 8 or int.from_bytes(v[:8], "big") != epoch:
                raise _error(
                    records, partition, k,
                    f"chunk {i} of epoch {epoch} is missing (this record is not of that epoch); "
                    "the changelog was altered outside driftline",
                )  # fmt: skip
            v = v[8:]
        parts.append(v)
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != sha:
        raise _error(records, partition, head_key, "checksum mismatch with its chunks")
    try:
        return _loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as e:
        raise _error(records, partition, head_key, f"the stored document is unreadable: {e}") from e


def snapshot_json(state: dict[str, Any]) -> bytes:
    return orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_snapshot(partition: int, epoch: int, state: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The (key, value) records that store ``state`` for ``partition``; the head comes last."""
    return encode_snapshot_json(partition, epoch, snapshot_json(state))


def snapshot_chunk_keys(
    partition: int, epoch: int, chunks: int, fmt: str = STATE_FORMAT
) -> list[bytes]:
    """The changelog keys of the ``chunks`` chunks of ``partition``'s snapshot ``epoch``.

    Examples
    --------
    >>> snapshot_chunk_keys(2, 7, 2), snapshot_chunk_keys(2, 8, 1)
    ([b'2/chunk/1/0', b'2/chunk/1/1'], [b'2/chunk/0/0'])
    >>> snapshot_chunk_keys(2, 7, 1, "driftline-state/2")
    [b'2/chunk/0']
    """
    if fmt == "driftline-state/2":
        return [f"{partition}/chunk/{i}".encode() for i in range(chunks)]
    return [f"{partition}/chunk/{epoch % 2}/{i}".encode() for i in range(chunks)]


def encode_snapshot_json(partition: int, epoch: int, raw: bytes) -> list[tuple[bytes, bytes]]:
    """`encode_snapshot` of a state already serialised by `snapshot_json`."""
    blob = zlib.compress(raw, 1)
    chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    keys = snapshot_chunk_keys(partition, epoch, len(chunks))
    records = [(k, epoch.to_bytes(8, "big") + c) for k, c in zip(keys, chunks, strict=True)]
    head = {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "chunks": len(chunks),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    records.append((f"{partition}/head".encode(), orjson.dumps(head)))
    return records


# ------------------------------------------------------------------------ per-key feature state
# Format 4 keeps the feature windows apart from the head, one record per key, written only when
# the key changed: ``<p>/w/<state>/<window start>/<entity>`` (a tumbling/hopping window) and
# ``<p>/m/<state>/<entity>`` (an entity's sliding/count members); a tombstone when evicted. The
# value is the epoch of the snapshot that wrote it (8 bytes, big endian), then the row as JSON
# (``[``...), or ``z`` and that JSON zlib-compressed when it is over `COMPRESS_ABOVE` bytes. The
# head's snapshot says how many keys each window state holds, so a deleted record is noticed.


def _entity_bytes(entity: str) -> bytes:
    return entity.encode("utf-8", "surrogatepass")


def keyed_record_key(partition: int, kind: str, state: int, key: Any) -> bytes:
    """The changelog key of one window-state key (see `KeyedChanges`).

    Examples
    --------
    >>> keyed_record_key(3, "w", 0, ("user/1", -60_000)), keyed_record_key(3, "m", 2, "ü")
    (b'3/w/0/-60000/user/1', b'3/m/2/\\xc3\\xbc')
    """
    if kind == "w":
        entity, start = key
        return f"{partition}/w/{state}/{start}/".encode() + _entity_bytes(entity)
    return f"{partition}/m/{state}/".encode() + _entity_bytes(key)


def parse_keyed_key(partition: int, key: bytes) -> tuple[str, int, Any]:
    """(kind, window state, key) of a `keyed_record_key`; ValueError if it is not one.

    Examples
    --------
    >>> parse_keyed_key(3, b"3/w/0/-60000/user/1"), parse_keyed_key(3, b"3/m/12/a")
    (('w', 0, ('user/1', -60000)), ('m', 12, 'a'))
    >>> parse_keyed_key(3, b"3/w/x/1/a")
    Traceback (most recent call last):
    ...
    ValueError: not a per-key feature record of partition 3
    """
    parts = key.split(b"/", 4 if key[len(str(partition)) + 1 :].startswith(b"w/") else 3)
    try:
        if parts[0] != str(partition).encode() or not parts[2].isdigit():
            raise ValueError
        state = int(parts[2])
        if parts[1] == b"w" and len(parts) == 5 and parts[3].lstrip(b"-").isdigit():
            return "w", state, (parts[4].decode("utf-8", "surrogatepass"), int(parts[3]))
        if parts[1] == b"m" and len(parts) == 4:
            return "m", state, parts[3].decode("utf-8", "surrogatepass")
    except (ValueError, IndexError, UnicodeDecodeError):
        pass
    raise ValueError(f"not a per-key feature record of partition {partition}")


def encode_keyed_changes(
    partition: int, epoch: int, changes: list[KeyedChanges]
) -> list[tuple[bytes, bytes | None]]:
    """The changelog records of ``changes`` (one per window state, in the engine's order):
    tombstones for the keys gone, then the changed keys' rows.

    Raises
    ------
    DriftlineError
        If one key's row is too large for one record even compressed.
    """
    prefix = epoch.to_bytes(8, "big")
    out: list[tuple[bytes, bytes | None]] = []
    for g, ch in enumerate(changes):
        out += [(keyed_record_key(partition, ch.kind, g, k), None) for k in ch.gone]
        for k, row in zip(ch.keys, ch.rows, strict=True):
            raw = orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)
            if len(raw) > COMPRESS_ABOVE:
                raw = b"z" + zlib.compress(raw, 1)
                if len(raw) > 2 * CHUNK_BYTES - 4096:
                    raise DriftlineError(
                        f"partition {partition}: the window state of {k!r} is "
                        f"{len(raw):,} bytes compressed, over one changelog record's limit; "
                        "shorten its window (window_ms, count or idle_ttl_ms)"
                    )
            out.append((keyed_record_key(partition, ch.kind, g, k), prefix + raw))
    return out


def encode_keyed_snapshot(
    partition: int, epoch: int, raw: bytes, changes: list[KeyedChanges]
) -> list[tuple[bytes, bytes | None]]:
    """All the records of one format 4 snapshot: the changed feature windows' records, then
    the snapshot without them (``raw``, from `snapshot_json`), chunked, and its head last."""
    head = encode_snapshot_json(partition, epoch, raw)
    return [*encode_keyed_changes(partition, epoch, changes), *head]


def keyed_prefixes(partition: int) -> tuple[bytes, bytes]:
    """The key prefixes of ``partition``'s per-key feature records."""
    return f"{partition}/w/".encode(), f"{partition}/m/".encode()


def keyed_keys(records: dict[bytes, bytes], partition: int) -> list[bytes]:
    """The keys of ``partition``'s per-key feature records among ``records``."""
    prefixes = keyed_prefixes(partition)
    return [k for k in records if k.startswith(prefixes)]


def _keyed_items(
    records: dict[bytes, bytes], partition: int
) -> list[tuple[bytes, int | None, bytes]]:
    """(key, offset, value) of the per-key feature records of ``partition``."""
    offsets = getattr(records, "offsets", {})
    return [(k, offsets.get(k), records[k]) for k in keyed_keys(records, partition)]


def _keyed_row(value: bytes, epoch: int) -> Any:
    """The row stored in one per-key record written by a snapshot of at most ``epoch``."""
    if len(value) < 9:
        raise ValueError("too short for an epoch and a row")
    written = int.from_bytes(value[:8], "big")
    if written > epoch:
        raise ValueError(
            f"written by snapshot {written}, after the head's snapshot {epoch}: the changelog "
            "was altered outside driftline"
        )
    raw = value[8:]
    if raw[:1] == b"z":
        try:
            raw = zlib.decompress(raw[1:])
        except zlib.error as e:
            raise ValueError(f"unreadable compressed row ({e})") from None
    return _loads(raw)


def _decode_keyed_values(values: list[bytes], epoch: int) -> list[Any]:
    """The rows of per-key record ``values`` (epoch, then JSON) written by a snapshot of at
    most ``epoch``, decoded in bulk; ValueError (or zlib.error) if one is not well-formed.

    The epochs are compared in one numpy pass over the joined values; the JSON rows are read
    by one ``orjson.loads`` of them all, joined into one array, once the joined text is known
    to split exactly at the records (each row one bracketed list, balanced, no string in any:
    so no record can end inside another's row). Rows with strings (distinct values, sliding
    windows' members) are read one by one.

    Examples
    --------
    >>> e = (3).to_bytes(8, "big")
    >>> _decode_keyed_values([e + b"[1,[2.5]]", e + b'[2,["a]"]]'], 3)
    [[1, [2.5]], [2, ['a]']]]
    >>> _decode_keyed_values([e + b"[1,[2.5]],[1", e + b"[2]]"], 3)
    Traceback (most recent call last):
    ...
    ValueError: a row that is not one JSON list
    """
    n = len(values)
    if not n:
        return []
    lens = np.fromiter(map(len, values), np.int64, n)
    if int(lens.min()) < 9:
        raise ValueError("a record too short for an epoch and a row")
    buf = np.frombuffer(b"".join(values), np.uint8).copy()
    ends = np.cumsum(lens)
    starts = ends - lens
    prefix = (starts[:, None] + np.arange(8)).ravel()
    written = np.ascontiguousarray(buf[prefix]).view(">u8")
    if int(written.max()) > epoch:  # (an epoch is below 2**63: no overflow)
        raise ValueError("a record newer than the head")
    first = buf[starts + 8]
    big = np.flatnonzero(first == ord("z"))
    if big.size:  # the rare rows stored compressed: decompress them, then as the others
        values = list(values)
        for i in big.tolist():
            values[i] = values[i][:8] + zlib.decompress(values[i][9:])
            if values[i][8:9] in (b"z", b""):
                raise ValueError("a compressed row that is not JSON")
        return _decode_keyed_values(values, epoch)
    buf[prefix] = ord(" ")
    at = np.flatnonzero((buf == ord("[")) | (buf == ord("]")))  # the brackets only
    shut = buf[at] == ord("]")
    depth = np.cumsum(1 - 2 * shut.view(np.int8), dtype=np.int32)
    closing = at[shut & (depth == 0)]
    if (buf == ord('"')).any():  # strings may hold brackets: one record at a time
        return [_loads(v[8:]) for v in values]
    if (
        not (first == ord("[")).all() or int(depth.min(initial=0)) < 0
        or closing.size != n or not np.array_equal(closing, ends - 1)
    ):  # fmt: skip
        raise ValueError("a row that is not one JSON list")
    buf[starts[1:]] = ord(",")
    rows = _loads(b"[" + buf.tobytes() + b"]")
    if len(rows) != n:
        raise ValueError("a row that is not one JSON list")
    return rows


def _keyed_rows_fast(
    records: dict[bytes, bytes], partition: int, epoch: int, kinds: list[str | None]
) -> list[KeyedRows]:
    """`attach_keyed_rows`'s rows per window state when every record is well-formed, with as
    little Python per record as can be (C-level ``map`` calls, numpy and one JSON parse: a
    million records restore in seconds); ValueError or IndexError otherwise (the caller then
    finds the record at fault)."""
    wpre = keyed_prefixes(partition)[0]
    rows = [KeyedRows() for _ in kinds]
    keys = keyed_keys(records, partition)
    if not keys:
        return rows
    values = _decode_keyed_values(list(map(records.__getitem__, keys)), epoch)
    is_w = list(map(bytes.startswith, keys, repeat(wpre)))
    n_w = sum(is_w)
    for kind, pick, parts in (("w", is_w, 4), ("m", list(map(not_, is_w)), 3)):
        if not (n_w if kind == "w" else len(keys) - n_w):
            continue
        ks = keys if n_w in (0, len(keys)) else list(compress(keys, pick))
        vs = values if ks is keys else list(compress(values, pick))
        split = list(map(bytes.split, ks, repeat(b"/"), repeat(parts)))
        names = list(map(bytes.decode, map(itemgetter(parts), split), repeat("utf-8"),
                         repeat("surrogatepass")))  # fmt: skip
        if kind == "w":
            texts = list(map(itemgetter(3), split))
            if not all(map(bytes.isdigit, map(bytes.lstrip, texts, repeat(b"-")))):
                raise ValueError("a window start that is not a number")
            idents: list[Any] = list(zip(names, map(int, texts), strict=True))
        else:
            idents = names
        states = list(map(itemgetter(2), split))
        ids = set(states)
        if not all(map(bytes.isdigit, ids)):
            raise ValueError("a window state that is not a number")
        for s in ids:
            g = int(s)
            if kinds[g] != kind:  # (IndexError past the snapshot's states)
                raise ValueError("a window state the snapshot does not keep so")
            if len(ids) == 1:
                rows[g].extend(ks, idents, vs)
                continue
            mine = [x == s for x in states]
            rows[g].extend(list(compress(ks, mine)), list(compress(idents, mine)),
                           list(compress(vs, mine)))  # fmt: skip
    return rows


def attach_keyed_rows(
    records: dict[bytes, bytes], partition: int, epoch: int, state: dict[str, Any]
) -> None:
    """Hand each per-key window state of ``state`` (a format 4 snapshot) its rows from
    ``records``, under ``"rows"`` (`FeatureEngine.restore` loads them).

    Raises
    ------
    ChangelogError
        Naming the record that is not a well-formed row of a state the snapshot has, or the
        head when a state holds another number of keys than the snapshot says.
    """
    topic = getattr(records, "topic", None)
    head = f"{partition}/head".encode()
    try:
        entries = state["features"]["states"]
        keyed = [e.get("keyed") for e in entries]  # None: a state held inline
        kinds = [None if k is None else k["kind"] for k in keyed]
        counts = [0 if k is None else k["n"] for k in keyed]
    except (KeyError, TypeError, AttributeError) as e:
        raise _error(
            records, partition, head,
            f"the snapshot of epoch {epoch} cannot be restored (its window states are "
            f"malformed: {e!r})",
        ) from None
    try:
        with gc_paused():
            rows: list[Any] = _keyed_rows_fast(records, partition, epoch, kinds)
    except (ValueError, IndexError, zlib.error):  # find the record, and say what is wrong with it
        rows = [[] for _ in entries]
        for key, offset, value in _keyed_items(records, partition):
            try:
                kind, g, ident = parse_keyed_key(partition, key)
                if g >= len(entries) or kinds[g] != kind:
                    raise ValueError(
                        f"the snapshot has no window state {g} kept per key as {kind!r}"
                    )
                row = _keyed_row(value, epoch)
            except ValueError as e:
                raise ChangelogError(
                    topic, partition, offset, key, f"not a driftline per-key feature record: {e}"
                ) from None
            rows[g].append((key, ident, row))
    for g, (entry, got, n) in enumerate(zip(entries, rows, counts, strict=True)):
        if got.__len__() != n:
            raise _error(
                records, partition, head,
                f"window state {g} holds {n} keys in the snapshot of epoch {epoch} but the "
                f"changelog has {len(got)} records of it: records were deleted or added outside "
                "driftline",
            )  # fmt: skip
        if keyed[g] is not None:
            entry["rows"] = got


def _check_foreign(records: dict[bytes, bytes], partition: int) -> None:
    foreign = getattr(records, "foreign", {})
    if foreign:
        key, offset = min(foreign.items(), key=lambda kv: kv[1])
        raise ChangelogError(
            getattr(records, "topic", None), partition, offset, key,
            f"not a driftline state record of partition {partition} (its key is not one "
            "driftline writes)",
        )  # fmt: skip


def decode_snapshot(
    records: dict[bytes, bytes], partition: int
) -> tuple[int, dict[str, Any]] | None:
    """The newest complete snapshot among the latest value of each key, or None if there is none.

    Raises
    ------
    ChangelogError
        If a record is not one driftline wrote in `STATE_FORMAT`, or does not match the others.
    """
    _check_foreign(records, partition)
    key = f"{partition}/head".encode()
    if key not in records:
        tombstone = getattr(records, "tombstones", {}).get(key)
        if tombstone is not None:  # driftline never deletes a head
            raise ChangelogError(
                getattr(records, "topic", None), partition, tombstone, key,
                "the snapshot head was deleted (a tombstone written outside driftline)",
            )  # fmt: skip
        _refuse_keyed(records, partition, "there is no snapshot head")
        return None
    head = _head(records, partition, key, {"epoch", "chunks", "sha256"})
    epoch = head["epoch"]
    if type(epoch) is not int or not 0 <= epoch < 1 << 63:
        raise _error(records, partition, key, f"bad epoch {epoch!r}")
    chunk_keys = snapshot_chunk_keys(partition, epoch, head["chunks"], head["format"])
    state = _blob(records, partition, key, chunk_keys, head["sha256"], epoch)
    if not isinstance(state, dict):
        raise _error(records, partition, key, "the snapshot is not a JSON object")
    offsets = state.get("offsets", {})
    if not isinstance(offsets, dict) or not all(
        type(o) is int and o >= 0 for o in offsets.values()
    ):
        raise _error(records, partition, key, "the snapshot's offsets are not topic -> offset")
    if head["format"] in KEYED_FORMATS:
        attach_keyed_rows(records, partition, epoch, state)
    else:
        _refuse_keyed(records, partition, f"the snapshot head is of format {head['format']}")
    return epoch, state


def _refuse_keyed(records: dict[bytes, bytes], partition: int, why: str) -> None:
    """Per-key feature records next to a head that cannot have written them: an error."""
    items = _keyed_items(records, partition)
    if items:
        key, offset, _ = min(items, key=lambda kov: kov[1] or 0)
        raise ChangelogError(
            getattr(records, "topic", None), partition, offset, key,
            f"a per-key feature record, but {why}: the changelog was altered outside driftline",
        )  # fmt: skip


def restore_snapshot(
    records: dict[bytes, bytes],
    partition: int,
    restore: Callable[[dict[str, Any], dict[bytes, bytes]], None],
) -> tuple[int, dict[str, Any]] | None:
    """Decode the partition's snapshot and hand it to ``restore`` (with ``records``, for the
    label-join log); (epoch, state), or None when the changelog holds no snapshot.

    Raises
    ------
    ChangelogError
        If a record cannot be decoded, or ``restore`` rejects what it holds (the error then
        names the snapshot's head record and says why).
    """
    saved = decode_snapshot(records, partition)
    if saved is None:
        return None
    epoch, state = saved
    try:
        restore(state, records)
    except ChangelogError:
        raise
    except KeyedRowError as e:
        raise _error(
            records, partition, e.key,
            f"the snapshot of epoch {epoch} cannot be restored ({e.problem})",
        ) from e  # fmt: skip
    except Exception as e:
        why = str(e) if isinstance(e, DriftlineError) else f"{type(e).__name__}: {e}"
        raise _error(
            records, partition, f"{partition}/head".encode(),
            f"the snapshot of epoch {epoch} cannot be restored ({why})",
        ) from e  # fmt: skip
    return saved


def check_state_present(
    records: dict[bytes, bytes], partition: int, input_topic: str, committed: int | None
) -> None:
    """Raise `ChangelogError` when the changelog holds no snapshot of ``partition`` although the
    consumer group has ``committed`` an offset on it: the state was there and is gone (topic
    deleted or recreated, head removed), and starting with empty windows would be a silent reset.

    Examples
    --------
    >>> check_state_present({}, 0, "events", None)  # a new pipeline: nothing committed yet
    >>> check_state_present({}, 0, "events", 5_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftline.agents.state.ChangelogError: state changelog, partition 0, offset ? (key '0/head'): \
no snapshot, but the consumer group has committed offset 5000 on events[0]: ...
    """
    if committed is None or committed < 0:
        return
    raise ChangelogError(
        getattr(records, "topic", None), partition, None, f"{partition}/head".encode(),
        f"no snapshot, but the consumer group has committed offset {committed} on "
        f"{input_topic}[{partition}]: the state that went with it is gone (the changelog topic "
        "was deleted or recreated, or its records removed)",
    )  # fmt: skip


def read_changelog_partition(
    bootstrap: Kafka, topic: str, partition: int, timeout_s: float = 120.0
) -> ChangelogRecords:
    """Latest committed value per key of one changelog partition (read_committed, to its end),
    with the offset each was read at."""
    c = Consumer(
        client_conf(
            bootstrap,
            {
                "group.id": "driftline-restore",  # never subscribes or commits; assign() only
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "fetch.max.bytes": 64 * 1024 * 1024,
                # one partition read as fast as it comes: librdkafka's defaults fetch 1 MiB
                # per request and, once 100,000 records wait locally, back off 1 s
                # (fetch.queue.backoff.ms) before fetching again
                "max.partition.fetch.bytes": 32 * 1024 * 1024,
                "queued.min.messages": 1_000_000,
                "fetch.queue.backoff.ms": 10,
            },
        )
    )
    latest = ChangelogRecords(topic, partition)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        if hi <= lo:
            return latest
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise DriftlineError(
                    f"restoring state from {topic}[{partition}] took over {timeout_s:.0f}s; "
                    "is another transaction holding it open? (see transaction.timeout.ms)"
                )
            # a short wait: consume() returns only once it has 10,000 messages or its timeout
            # passed, so 1 s cost every restore of a small changelog a whole second
            msgs = c.consume(10_000, timeout=0.05)
            errors = list(map(Message.error, msgs))
            # (KafkaError compares its code with ==: find the first error by identity)
            end = next(compress(count(), map(is_not, errors, repeat(None))), len(msgs))
            good = msgs[:end]  # the messages before the first error (EOF), all at once
            latest.add_many(list(map(Message.key, good)), list(map(Message.value, good)),
                            list(map(Message.offset, good)))  # fmt: skip
            if end < len(msgs):
                err = errors[end]
                if err.code() == KafkaError._PARTITION_EOF:
                    return latest
                raise DriftlineError(f"reading {topic}[{partition}]: {err}")
    finally:
        c.close()


# ---------------------------------------------------------------------------- label-join log
# The label join logs deltas and rare checkpoints (streams.label_log) on the same changelog
# partition: ``<p>/labels/<seq>/chunk/<i>`` and ``<p>/labels/<seq>/head`` (``{"format", "kind",
# "chunks", "sha256"}``). The partition's snapshot names the last seq and the checkpoint's; older
# entries are deleted with tombstones when a checkpoint supersedes them.


def label_log_keys(partition: int, seq: int, chunks: int) -> list[bytes]:
    base = f"{partition}/labels/{seq}"
    return [f"{base}/chunk/{i}".encode() for i in range(chunks)] + [f"{base}/head".encode()]


def encode_label_log(partition: int, seq: int, kind: str, data: Any) -> list[tuple[bytes, bytes]]:
    """Records storing one delta or checkpoint of the label-join log; the head comes last."""
    blob = zlib.compress(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), 1)
    chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    keys = label_log_keys(partition, seq, len(chunks))
    head = {
        "format": STATE_FORMAT,
        "kind": kind,
        "chunks": len(chunks),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    return [*zip(keys[:-1], chunks, strict=True), (keys[-1], orjson.dumps(head))]


def decode_label_log(records: dict[bytes, bytes], partition: int, seq: int) -> tuple[str, Any, int]:
    """(kind, data, chunk count) of log entry ``seq``, its shape checked; `ChangelogError` if it
    is missing or malformed."""
    key = f"{partition}/labels/{seq}/head".encode()
    if key not in records:
        snapshot_key = f"{partition}/head".encode()
        raise _error(
            records, partition, snapshot_key,
            f"the snapshot names label-join log entry {seq}, which is missing; the changelog "
            "was altered outside driftline",
        )  # fmt: skip
    head = _head(records, partition, key, {"kind", "chunks", "sha256"})
    kind = head["kind"]
    if kind not in ("delta", "checkpoint"):
        raise _error(records, partition, key, f"unknown label-join log entry kind {kind!r}")
    keys = label_log_keys(partition, seq, head["chunks"])[:-1]
    data = _blob(records, partition, key, keys, head["sha256"])
    try:
        check_log_entry(kind, data)
    except DriftlineError as e:
        raise _error(records, partition, key, f"malformed label-join log {kind}: {e}") from None
    return kind, data, head["chunks"]
