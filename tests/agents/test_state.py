"""The state changelog's records, format driftline-state/4, without a broker: a partition restores
exactly (online model included) from its per-key feature records and its snapshot, formats 2 and
3 still restore, and any record a restore cannot use is a ChangelogError naming the topic,
partition and offset and what to do, never code execution and never a fresh start.

The same records through a real broker and a real worker: tests/agents/test_state_changelog.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import pickle
import tomllib
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.agents.demo import ks_adwin_spec_text, train_demo_model
from driftline.agents.pipeline import PartitionPipeline, RawRecord, RecordColumns
from driftline.agents.predictor import build_predictor
from driftline.agents.state import (
    STATE_FORMAT,
    ChangelogError,
    ChangelogRecords,
    decode_snapshot,
    encode_keyed_snapshot,
    encode_label_log,
    encode_snapshot,
    encode_snapshot_json,
    keyed_keys,
    restore_snapshot,
    snapshot_json,
)
from driftline.agents.synthetic import SyntheticStream, labels_for
from driftline.errors import DriftlineError
from driftline.spec import PipelineSpec, parse_spec

TOPIC = "driftline.state-test.state-changelog"
INPUT = "driftline.demo.events"
N, T0 = 4_000, 1_767_225_600_000
INPUTS = ["amount", "latency_ms", "amount_mean_1m"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("model") / "m.pkl"
    train_demo_model(p, INPUTS, n=3_000)
    return p


def make_spec(model_path: Path) -> PipelineSpec:
    """The demo pipeline with every river-wrapping detector and online learning."""
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(model_path)
    data["detectors"] = [
        {"name": "latency_adwin", "type": "adwin", "target": "latency_ms", "delta": 0.01},
        {"name": "amount_ph", "type": "page_hinkley", "target": "amount", "threshold": 500.0},
        {"name": "error_ddm", "type": "ddm", "target": "error", "cooldown": 100},
        {"name": "error_hddm_a", "type": "hddm_a", "target": "error", "cooldown": 100},
        {"name": "error_hddm_w", "type": "hddm_w", "target": "error", "cooldown": 100},
    ]
    data["labels"] = {"ttl_ms": 5_000, "count_window": 200, "time_window_ms": 10_000,
                      "learn": True}  # fmt: skip
    return parse_spec(data)


def batches() -> list[tuple[str, list[RawRecord]]]:
    """Events (the amount shifts half way) and their labels 0-2 s later, in arrival order."""
    s = SyntheticStream(n=N, shift_at=N // 2, seed=8, n_entities=40)
    events = [
        RawRecord(INPUT, 0, i, e["ts"], e["user_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(s.events())
    ]
    a = s.arrays()
    y = labels_for(a["amount"], a["latency_ms"], 4).astype(int)
    rng = np.random.default_rng(2)
    t = T0 + 10 * np.arange(N) + rng.integers(0, 2_000, N)
    order = np.argsort(t, kind="stable")
    labels = [
        RawRecord("driftline.labels", 0, k, int(t[i]), b"k",
                  orjson.dumps({"prediction_id": f"{INPUT}:0:{i}", "label": int(y[i])}))
        for k, i in enumerate(order.tolist())
    ]  # fmt: skip
    out: list[tuple[str, list[RawRecord]]] = []
    li = 0
    for s0 in range(0, N, 250):
        out.append(("events", events[s0 : s0 + 250]))
        horizon = T0 + 10 * (s0 + 250)
        lb = []
        while li < len(labels) and (labels[li].timestamp_ms or 0) <= horizon:
            lb.append(labels[li])
            li += 1
        if lb:
            out.append(("labels", lb))
    return out


def run(pipe: PartitionPipeline, bs: list[tuple[str, list[RawRecord]]]) -> list[Any]:
    """What the batches produce, without wall-clock fields."""
    out = []
    for kind, recs in bs:
        if kind == "events":
            oc = pipe.process(recs)
        else:
            oc = pipe.process_labels(RecordColumns.from_records(recs))
        for t, _, v in oc.all_messages():
            d = orjson.loads(v)
            for k in ("computed_at_ms", "detected_at_ms", "dead_lettered_at_ms", "freshness_ms",
                      "latency_ms"):  # fmt: skip
                d.pop(k, None)
            out.append((t, d))
    return out


class Changelog:
    """One changelog partition as the runner writes it: label-log records, then the snapshot;
    offsets count up as on the broker."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.epoch = 0

    def persist(self, pipe: PartitionPipeline) -> None:
        """As the runner does: the label log, the changed feature windows, the snapshot."""
        self.records += pipe.drain_log()
        self.epoch += 1
        small, changes = pipe.snapshot_keyed()
        raw = snapshot_json({**small, "offsets": {INPUT: 1}})
        self.records += encode_keyed_snapshot(0, self.epoch, raw, changes)

    def head_offset(self) -> int:
        return max(i for i, (k, _) in enumerate(self.records) if k == b"0/head")

    def keyed_keys(self) -> list[bytes]:
        """The per-key feature records' keys that hold a value now."""
        return keyed_keys(self.read(), 0)

    def add(self, key: bytes | None, value: bytes | None) -> int:
        """Append one record; its offset."""
        self.records.append((key, value))
        return len(self.records) - 1

    def add_snapshot(self, state: Any) -> int:
        """Append a well-formed snapshot of ``state`` (checksum and all); the head's offset."""
        self.epoch += 1
        for k, v in encode_snapshot(0, self.epoch, state):
            off = self.add(k, v)
        return off

    def read(self) -> ChangelogRecords:
        out = ChangelogRecords(TOPIC, 0)
        for off, (k, v) in enumerate(self.records):
            out.add(k, v, off)
        return out


@pytest.fixture(scope="module")
def persisted(
    model_path: Path,
) -> tuple[PipelineSpec, Changelog, list[Any], int, dict[str, Any]]:
    """A pipeline run over the first half, persisted after every batch; the reference outputs of
    an uninterrupted run over the second half."""
    spec = make_spec(model_path)
    bs = batches()
    cut = len(bs) // 2
    pred, version = build_predictor(spec)
    live = PartitionPipeline(spec, 0, pred, version)
    live.engine.track_changes()
    live.label_stage.labels.join.min_checkpoint_rows = 300  # checkpoints and tombstones
    log = Changelog()
    for b in bs[:cut]:
        run(live, [b])
        log.persist(live)
    expected = run(live, bs[cut:])
    return spec, log, expected, cut, live.snapshot()


def fresh(spec: PipelineSpec) -> PartitionPipeline:
    pred, version = build_predictor(spec)
    return PartitionPipeline(spec, 0, pred, version)


def test_a_partition_restores_exactly_online_model_included(persisted: Any) -> None:
    spec, log, expected, cut, end_state = persisted
    records = log.read()
    assert any(b"/labels/" in k for k in records) and not records.foreign
    pipe = fresh(spec)
    saved = restore_snapshot(records, 0, pipe.restore)
    assert saved is not None and saved[0] == log.epoch
    state = saved[1]
    assert orjson.loads(records[b"0/head"])["format"] == STATE_FORMAT == "driftline-state/4"
    # the feature windows are per-key records, not in the snapshot
    keyed = state["features"]["states"]
    assert [len(e["rows"]) for e in keyed] == [e["keyed"]["n"] for e in keyed]
    assert sum(e["keyed"]["n"] for e in keyed) == len(keyed_keys(records, 0)) >= 40
    assert all("entities" not in e for e in keyed)
    # plain data only: the river detectors' and the model's state are JSON objects
    assert all(isinstance(d["river"], dict) for d in state["detectors"].values() if "river" in d)
    assert {d["river"]["type"] for d in state["detectors"].values() if "river" in d} == {
        "ADWIN", "PageHinkley", "DDM", "HDDMA", "HDDMW",
    }  # fmt: skip
    assert state["labels"]["model"]["kind"] == "river_linear/1"
    assert state["labels"]["n_learned"] > 0
    got = run(pipe, batches()[cut:])
    preds = [d["score"] for t, d in got if t == "driftline.predictions"]
    assert len(preds) > 1_000
    assert preds == [d["score"] for t, d in expected if t == "driftline.predictions"]
    assert got == expected  # features, predictions (model version), alerts, metrics
    # and every detector, the online model and the join end where the uninterrupted run did
    after = pipe.snapshot()
    assert after["detectors"] == end_state["detectors"]
    assert after["labels"] == end_state["labels"]
    # the windows as well (restored per key: rows in another order)
    assert canonical(after) == canonical(end_state)


def canonical(snap: dict[str, Any]) -> dict[str, Any]:
    """A full snapshot with each window state's rows keyed (and sorted) by what they are of."""
    out = copy.deepcopy(snap)
    for entry in out["features"]["states"]:
        ents = entry.pop("entities")
        if "starts" in entry:  # tumbling/hopping: per (entity, start)
            cols = {k: v if isinstance(v, list) else list(zip(*v.values(), strict=True))
                    for k, v in entry.pop("columns").items()}  # fmt: skip
            dist = entry.pop("distinct", {})
            keys = list(zip(ents, entry.pop("starts"), strict=True))
        else:  # sliding/count: per member (entity, seq)
            cols = {"ts": entry.pop("ts"), **{f"v{k}": v for k, v in entry.pop("values").items()}}
            dist = entry.pop("distinct")
            keys = list(zip(ents, entry.pop("seq"), strict=True))
        rows = {k: [c[i] for c in cols.values()] + [sorted(map(str, d[i] or [])) if
                isinstance(d[i], list) else d[i] for d in dist.values()]
                for i, k in enumerate(keys)}  # fmt: skip
        entry["rows"] = dict(sorted(rows.items()))
    return out


def test_a_stop_between_a_snapshots_chunks_and_its_head_keeps_the_previous_one(
    persisted: Any,
) -> None:
    """Without a transaction (at_least_once) a worker can stop after the chunks of snapshot
    N+1 and before its head: head N must still find its own chunks, twice in a row."""
    spec, good = persisted[0], persisted[1]
    log = copy.deepcopy(good)
    before = _state(log)
    for _ in range(2):
        for k, v in encode_snapshot(0, log.epoch + 1, {**before, "offsets": {INPUT: 999}})[:-1]:
            log.add(k, v)  # the chunks, not the head
        saved = restore_snapshot(log.read(), 0, fresh(spec).restore)
        assert saved is not None and saved[0] == log.epoch and without_rows(saved[1]) == before


def _as_old_format(log: Changelog, spec: PipelineSpec, fmt: str) -> dict[str, Any]:
    """Rewrite ``log`` as a format 2 or 3 changelog of the same state (every entity inside
    the snapshot, no per-key records); that state."""
    pipe = fresh(spec)
    saved = restore_snapshot(log.read(), 0, pipe.restore)
    assert saved is not None
    state = orjson.loads(snapshot_json({**pipe.snapshot(), "offsets": saved[1]["offsets"]}))
    for k in log.keyed_keys():
        log.add(k, None)
    log.epoch += 1
    if fmt == "driftline-state/3":
        for k, v in encode_snapshot_json(0, log.epoch, snapshot_json(state)):
            log.add(k, v if k != b"0/head" else v.replace(STATE_FORMAT.encode(), fmt.encode()))
        return state
    blob = zlib.compress(orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY), 1)
    log.add(b"0/chunk/0", log.epoch.to_bytes(8, "big") + blob)
    log.add(b"0/head", orjson.dumps({"format": fmt, "epoch": log.epoch, "chunks": 1,
                                     "sha256": hashlib.sha256(blob).hexdigest()}))  # fmt: skip
    return state


@pytest.mark.parametrize("fmt", ["driftline-state/2", "driftline-state/3"])
def test_a_format_2_or_3_changelog_still_restores_then_goes_per_key(
    persisted: Any, fmt: str
) -> None:
    """Formats 2 and 3 held every entity inside the snapshot (format 2 under <p>/chunk/<i>):
    restored as they are, and the first snapshot after writes every key of them."""
    spec, good, expected, cut, _ = persisted
    log = copy.deepcopy(good)
    state = _as_old_format(log, spec, fmt)
    assert not log.keyed_keys()
    pipe = fresh(spec)
    saved = restore_snapshot(log.read(), 0, pipe.restore)
    assert saved is not None and saved[0] == log.epoch and saved[1] == state
    pipe.engine.track_changes()
    log.persist(pipe)  # format 4 from here on: every window as a record
    n = sum(e["keyed"]["n"] for e in _state(log)["features"]["states"])
    assert len(log.keyed_keys()) == n >= 40
    again = fresh(spec)
    assert restore_snapshot(log.read(), 0, again.restore) is not None
    assert run(again, batches()[cut:]) == expected


def test_an_empty_changelog_is_a_fresh_start(persisted: Any) -> None:
    spec = persisted[0]
    assert restore_snapshot(ChangelogRecords(TOPIC, 0), 0, fresh(spec).restore) is None


def evil_pickle(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when unpickled."""

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Evil())


def _state(log: Changelog) -> dict[str, Any]:
    """The newest snapshot as written (its per-key window states without their rows)."""
    saved = decode_snapshot(log.read(), 0)
    assert saved is not None
    return without_rows(saved[1])


def without_rows(state: dict[str, Any]) -> dict[str, Any]:
    """A decoded snapshot as written: its per-key window states without the rows restored."""
    state = copy.deepcopy(state)
    for entry in state["features"]["states"]:
        entry.pop("rows", None)
    return state


def _river_pickled(log: Changelog, evil: bytes) -> int:
    state = _state(log)
    for snap in state["detectors"].values():
        if "river" in snap:
            snap["river"] = base64.b64encode(evil).decode()  # what format 1 stored
    return log.add_snapshot(state)


def _model_pickled(log: Changelog, evil: bytes) -> int:
    state = _state(log)
    state["labels"]["model"] = base64.b64encode(evil).decode()
    return log.add_snapshot(state)


def _format_1(log: Changelog, evil: bytes) -> int:
    """A snapshot as driftline wrote it before format 2 (no version; pickles inside)."""
    state = _state(log)
    for snap in state["detectors"].values():
        if "river" in snap:
            snap["river"] = base64.b64encode(evil).decode()
    blob = zlib.compress(orjson.dumps(state), 1)
    log.add(b"0/chunk/0", (log.epoch + 1).to_bytes(8, "big") + blob)  # format 1's key
    head = {"epoch": log.epoch + 1, "chunks": 1, "sha256": hashlib.sha256(blob).hexdigest()}
    return log.add(b"0/head", orjson.dumps(head))


def _chunk_of_pickle(log: Changelog, evil: bytes) -> int:
    """A well-formed head whose checksum matches a chunk holding a compressed pickle."""
    blob = zlib.compress(evil)
    log.add(f"0/chunk/{(log.epoch + 1) % 2}/0".encode(), (log.epoch + 1).to_bytes(8, "big") + blob)
    head = {"format": STATE_FORMAT, "epoch": log.epoch + 1, "chunks": 1,
            "sha256": hashlib.sha256(blob).hexdigest()}  # fmt: skip
    return log.add(b"0/head", orjson.dumps(head))


def _head(log: Changelog, **fields: Any) -> int:
    head = orjson.loads(dict(log.records)[b"0/head"])
    return log.add(b"0/head", orjson.dumps({**head, **fields}))


def _label_entry(log: Changelog, data: Any, kind: str = "delta") -> int:
    """Replace the newest label-log entry the snapshot names by ``data`` (well-formed records)."""
    state = _state(log)
    seq = state["labels"]["log"]["seq"]
    if kind == "checkpoint":
        state["labels"]["log"]["checkpoint_seq"] = seq
        log.add_snapshot(state)
    recs = encode_label_log(0, seq, kind, data)
    for k, v in recs:
        off = log.add(k, v)
    return off


def _label_head(log: Changelog, value: bytes) -> int:
    """Overwrite the head of the newest label-log entry the snapshot names."""
    seq = _state(log)["labels"]["log"]["seq"]
    return log.add(f"0/labels/{seq}/head".encode(), value)


def _shape(log: Changelog, change: Callable[[dict[str, Any]], Any]) -> int:
    state = _state(log)
    return log.add_snapshot(change(state) or state)


def _forge_watermark(state: dict[str, Any]) -> None:
    state["features"]["watermark_ms"] = 2**62


RNG = np.random.default_rng(0)
GARBAGE = RNG.bytes(300)


def _a_row(log: Changelog) -> tuple[bytes, bytes]:
    """One per-key record now in ``log`` (the first by key): (key, value)."""
    key = sorted(log.keyed_keys())[0]
    return key, log.read()[key]


def _row_as(log: Changelog, key: bytes | None = None, epoch: int | None = None,
            row: bytes | None = None) -> int:  # fmt: skip
    """Append a per-key record: an existing one's, with another key, epoch or row."""
    k0, v0 = _a_row(log)
    value = (v0[:8] if epoch is None else epoch.to_bytes(8, "big")) + (v0[8:] if row is None
                                                                        else row)  # fmt: skip
    return log.add(k0 if key is None else key, value)


def _tombstone_a_row(log: Changelog) -> int:
    log.add(_a_row(log)[0], None)
    return log.head_offset()


def _first_keyed_offset(log: Changelog) -> int:
    records = log.read()
    return min(records.offsets[k] for k in log.keyed_keys())


def _old_head_beside_rows(log: Changelog) -> int:
    _head(log, format="driftline-state/3")
    return _first_keyed_offset(log)

#: (name, what to append to a good changelog -> offset of the record to blame, message part)
CASES: list[tuple[str, Callable[[Changelog, bytes], int], str]] = [
    ("random bytes as the head", lambda log, e: log.add(b"0/head", GARBAGE), "not JSON"),
    ("random bytes as a chunk",
     lambda log, e: log.add(f"0/chunk/{log.epoch % 2}/0".encode(), GARBAGE),
     "chunk 0 of epoch"),
    ("random bytes, random key", lambda log, e: log.add(GARBAGE[:20], GARBAGE),
     "not a driftline state record"),
    ("record without a key", lambda log, e: log.add(None, b"{}"), "not a driftline state record"),
    ("another partition's key", lambda log, e: log.add(b"1/head", b"{}"),
     "not a driftline state record of partition 0"),
    ("JSON list as the head", lambda log, e: log.add(b"0/head", b"[1, 2, 3]"),
     "not a JSON object"),
    ("head without a format", lambda log, e: log.add(b"0/head", b'{"epoch": 1}'),
     "not a driftline state head"),
    ("head of a bad epoch", lambda log, e: _head(log, epoch="7"), "bad epoch"),
    ("head of a bad chunk count", lambda log, e: _head(log, chunks=-1), "bad chunk count"),
    ("head of an unknown version", lambda log, e: _head(log, format="driftline-state/9"),
     "state format 'driftline-state/9' is unknown; this driftline reads only driftline-state/2 "
     "and driftline-state/3 and driftline-state/4"),
    ("head of another format", lambda log, e: _head(log, format="avro"),
     "not a driftline state head"),
    ("format-1 snapshot holding pickles", _format_1, "state format driftline-state/1"),
    ("pickle as the head", lambda log, e: log.add(b"0/head", e), "not JSON"),
    ("pickle in a well-formed chunk", _chunk_of_pickle, "unreadable"),
    ("pickled river detectors", _river_pickled, "not an ADWIN detector snapshot"),
    ("pickled online model", _model_pickled, "the saved online model cannot be read"),
    ("snapshot body a JSON list", lambda log, e: log.add_snapshot([1, 2]), "not a JSON object"),
    ("snapshot of the wrong shape",
     lambda log, e: _shape(log, lambda s: {**s, "features": "x"}), "cannot be restored"),
    ("snapshot with bad offsets",
     lambda log, e: _shape(log, lambda s: {**s, "offsets": {INPUT: "x"}}), "offsets"),
    ("detector state of the wrong type",
     lambda log, e: _shape(log, lambda s: [d["river"].update(buckets=7) for d in
                                           s["detectors"].values() if "river" in d] and None),
     "buckets"),
    ("model weights of the wrong type",
     lambda log, e: _shape(log, lambda s: s["labels"]["model"].update(weights={"a": 1}) or None),
     "model.weights"),
    ("label-log delta holding a pickle",
     lambda log, e: _label_entry(log, [["p", [base64.b64encode(e).decode()], [1], [e.hex()],
                                        None, None]]),
     "malformed label-join log delta"),
    ("label-log delta of the wrong shape",
     lambda log, e: _label_entry(log, {"ops": []}), "malformed label-join log delta"),
    ("label-log checkpoint of the wrong shape",
     lambda log, e: _label_entry(log, {"join": [], "last_expire_ms": None}, "checkpoint"),
     "malformed label-join log checkpoint"),
    ("label-log entry pickled", lambda log, e: _label_head(log, e), "not JSON"),
    ("the head tombstoned", lambda log, e: log.add(b"0/head", None),
     "the snapshot head was deleted (a tombstone written outside driftline)"),
    ("a forged watermark far in the future",
     lambda log, e: _shape(log, _forge_watermark), "hours ahead of this machine's clock"),
    # format 4's per-key feature records
    ("a per-key record of random bytes", lambda log, e: _row_as(log, row=GARBAGE),
     "not a driftline per-key feature record: not JSON"),
    ("a per-key record holding a pickle", lambda log, e: _row_as(log, row=e),
     "not a driftline per-key feature record: not JSON"),
    ("a per-key record too short", lambda log, e: log.add(_a_row(log)[0], b"\x00" * 8),
     "too short"),
    ("a per-key record compressed badly", lambda log, e: _row_as(log, row=b"z" + GARBAGE),
     "unreadable compressed row"),
    ("a per-key record of the wrong shape", lambda log, e: _row_as(log, row=b"[1, 2, 3]"),
     "not a row of this tumbling window's columns"),
    ("a per-key record with text for a count", lambda log, e: _row_as(log, row=b'["x", [1.0]]'),
     "a value of this record is malformed"),
    ("a per-key record newer than the head", lambda log, e: _row_as(log, epoch=log.epoch + 1),
     "after the head's snapshot"),
    ("a per-key record deleted", lambda log, e: _tombstone_a_row(log),
     "records were deleted or added outside driftline"),
    ("a per-key record added", lambda log, e: (_row_as(log, key=b"0/w/0/0/intruder"),
                                               log.head_offset())[1],
     "records were deleted or added outside driftline"),
    ("a per-key record of a window state the snapshot lacks",
     lambda log, e: _row_as(log, key=b"0/w/7/0/u1"), "has no window state 7"),
    ("a per-key record of another kind", lambda log, e: _row_as(log, key=b"0/m/0/u1"),
     "has no window state 0 kept per key as 'm'"),
    ("a per-key record with a malformed key", lambda log, e: _row_as(log, key=b"0/w/x/1/u"),
     "not a per-key feature record of partition 0"),
    ("another partition's per-key record", lambda log, e: _row_as(log, key=b"1/w/0/0/u1"),
     "not a driftline state record of partition 0"),
    ("per-key records beside a format 3 head", lambda log, e: _old_head_beside_rows(log),
     "a per-key feature record, but the snapshot head is of format driftline-state/3"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "spoil", "problem"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_record_is_named_with_what_to_do_never_run_never_a_reset(
    persisted: Any, tmp_path: Path, name: str, spoil: Callable[[Changelog, bytes], int],
    problem: str,
) -> None:  # fmt: skip
    spec, good = persisted[0], persisted[1]
    log = copy.deepcopy(good)
    marker = tmp_path / "pwned"
    evil = evil_pickle(marker)
    offset = spoil(log, evil)
    pipe = fresh(spec)
    with pytest.raises(ChangelogError) as e:
        restore_snapshot(log.read(), 0, pipe.restore)
    msg = str(e.value)
    assert isinstance(e.value, DriftlineError)
    assert f"topic {TOPIC}, partition 0, offset {offset} " in msg, msg
    assert (e.value.topic, e.value.partition, e.value.offset) == (TOPIC, 0, offset)
    assert problem in msg, msg
    assert "Restore the topic from a backup" in msg and "`driftline worker --reset-state 0" in msg
    assert not marker.exists()


def test_garbage_after_a_good_snapshot_under_an_unused_key_is_still_an_error(
    persisted: Any,
) -> None:
    """A foreign producer writing to the topic is reported even if it displaced nothing."""
    spec, good = persisted[0], persisted[1]
    log = copy.deepcopy(good)
    off = log.add(b"not-driftline", b"hello")
    with pytest.raises(ChangelogError, match=f"offset {off} "):
        restore_snapshot(log.read(), 0, fresh(spec).restore)
    # a tombstone for that key takes it away again (as compaction would)
    log.add(b"not-driftline", None)
    assert restore_snapshot(log.read(), 0, fresh(spec).restore) is not None


def test_a_plain_dict_of_records_still_decodes_and_errors_without_offsets(persisted: Any) -> None:
    spec, good = persisted[0], persisted[1]
    plain = dict(good.read())
    assert restore_snapshot(plain, 0, fresh(spec).restore) is not None
    plain[b"0/head"] = b"\x80\x04garbage"
    with pytest.raises(ChangelogError, match=r"partition 0, offset \? \(key '0/head'\)"):
        decode_snapshot(plain, 0)


def test_learning_online_with_a_model_that_has_no_plain_encoding_fails_before_any_record(
    tmp_path: Path,
) -> None:
    from river import tree

    from driftline.errors import SpecError
    from driftline.model_io import save_model

    path = tmp_path / "tree.pkl"
    save_model(tree.HoeffdingTreeClassifier(), path, version="tree-1")
    data = tomllib.loads(ks_adwin_spec_text())
    data["model"]["path"] = str(path)
    data["labels"] = {"learn": True}
    spec = parse_spec(data)
    refusal = r"labels.learn = true: .*HoeffdingTree.*supports river linear_model.LinearRegression"
    with pytest.raises(SpecError, match=refusal):
        build_predictor(spec)  # at start, before any partition is assigned
    frozen = parse_spec({**data, "labels": {"learn": False}})
    pred, version = build_predictor(frozen)  # frozen, the same model serves (it is never saved)
    assert version == "tree-1"
    with pytest.raises(SpecError, match=refusal):
        PartitionPipeline(spec, 0, pred, version)  # and the pipeline itself refuses it
    oc = PartitionPipeline(frozen, 0, pred, version).process(batches()[0][1][:10])
    assert oc.consumed == 10 and sum(oc.dead_letters.values()) == 0


#: (window-state kind, state index, key, its changelog key)
KEY_LAYOUT = [
    ("w", 0, ("u1", 1_767_225_600_000), b"0/w/0/1767225600000/u1"),
    ("w", 3, ("a/b/c", -60_000), b"0/w/3/-60000/a/b/c"),
    ("w", 0, ("", 0), b"0/w/0/0/"),
    ("m", 1, "ü\x00z", "0/m/1/ü\x00z".encode()),
    ("m", 12, "/", b"0/m/12//"),
    ("m", 0, "\ud800", b"0/m/0/\xed\xa0\x80"),  # a lone surrogate survives the round trip
]


@pytest.mark.parametrize(("kind", "state", "key", "raw"), KEY_LAYOUT)
def test_per_key_record_keys_round_trip(kind: str, state: int, key: Any, raw: bytes) -> None:
    from driftline.agents.state import keyed_record_key, parse_keyed_key

    assert keyed_record_key(0, kind, state, key) == raw
    assert parse_keyed_key(0, raw) == (kind, state, key)
    records = ChangelogRecords(TOPIC, 0)
    records.add(raw, b"v", 7)
    assert keyed_keys(records, 0) == [raw] and records.offsets[raw] == 7 and not records.foreign
    records.add(raw, None, 8)  # evicted: gone, and not counted among deleted heads
    assert not records and not records.tombstones


@pytest.mark.parametrize(
    "raw", [b"0/w/0/x/u", b"0/w/-1/0/u", b"0/w/0", b"0/m/a/u", b"0/m/0", b"1/m/0/u", b"0/q/0/u"]
)
def test_keys_that_are_not_per_key_records(raw: bytes) -> None:
    from driftline.agents.state import parse_keyed_key

    with pytest.raises(ValueError, match="not a per-key feature record of partition 0"):
        parse_keyed_key(0, raw)


def test_a_large_row_is_compressed_and_reads_back() -> None:
    from driftline.agents.state import COMPRESS_ABOVE, _keyed_row, encode_keyed_changes
    from driftline.streams.feature_state import KeyedChanges

    big = [list(range(20_000)), list(range(20_000)), [[0.5] * 20_000], []]
    small = [[1], [2], [[0.25]], []]
    ch = KeyedChanges("m", ["big", "small"], [big, small], ["gone"])
    (k0, v0), (_, v1), (_, v2) = encode_keyed_changes(4, 9, [ch])
    assert (k0, v0) == (b"4/m/0/gone", None)
    assert v1 is not None and v1[8:9] == b"z" and len(orjson.dumps(big)) > COMPRESS_ABOVE
    assert v2 is not None and v2 == (9).to_bytes(8, "big") + orjson.dumps(small)
    assert _keyed_row(v1, 9) == big and _keyed_row(v2, 10) == small
    with pytest.raises(ValueError, match="written by snapshot 9, after the head's snapshot 8"):
        _keyed_row(v2, 8)
