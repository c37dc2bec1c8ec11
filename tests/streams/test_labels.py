"""LabelJoin equals a row-by-row dict reference, whatever the batching, and survives restarts."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftline.errors import DriftlineError, SpecError
from driftline.streams.labels import JoinedBatch, LabelJoin, float_array, floats_to_json

NF = 2  # feature columns in the random streams


# ---------------------------------------------------------------------------- reference
class RefJoin:
    """Row-by-row reference: dicts, the join rule of the module docstring, eviction per batch."""

    def __init__(self, ttl_ms: int, max_pending: int) -> None:
        self.ttl, self.cap = ttl_ms, max_pending
        self.preds: dict[str, tuple] = {}  # id -> (t, seq, score, pred, feats)
        self.labels: dict[str, tuple] = {}  # id -> (t, seq, y)
        self.joined: dict[str, tuple] = {}  # id -> (t, seq)
        self.seq = 0
        self.c = dict.fromkeys(
            [
                "n_joined",
                "n_unmatched_labels",
                "n_expired_predictions",
                "n_duplicate_labels",
                "n_duplicate_predictions",
            ],
            0,
        )

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _evict(self, store: dict, counter: str | None) -> None:
        while len(store) > self.cap:
            oldest = min(store, key=lambda k: store[k][:2])
            del store[oldest]
            if counter:
                self.c[counter] += 1

    def _join(self, i, tp, tl, score, pred, feats, y) -> tuple:
        self.c["n_joined"] += 1
        self.joined[i] = (max(tp, tl), self._next())
        return (i, tp, tl, tl - tp, score, pred, y, *feats)

    def predictions(self, ids, ts, scores, preds, feats) -> list[tuple]:
        out, done = [], set()
        for i, t, s, p, f in zip(ids, ts, scores, preds, feats, strict=True):
            if i in done or i in self.preds or i in self.joined:
                self.c["n_duplicate_predictions"] += 1
                continue
            done.add(i)
            if i in self.labels:
                tl, _, y = self.labels.pop(i)
                if abs(tl - t) <= self.ttl:
                    out.append(self._join(i, t, tl, s, p, f, y))
                    continue
                self.c["n_unmatched_labels"] += 1
            self.preds[i] = (t, self._next(), s, p, f)
        self._evict(self.preds, "n_expired_predictions")
        self._evict(self.joined, None)
        return out

    def labels_(self, ids, ys, ts) -> list[tuple]:
        out, done = [], set()
        for i, y, t in zip(ids, ys, ts, strict=True):
            if i in done or i in self.labels or i in self.joined:
                self.c["n_duplicate_labels"] += 1
                continue
            done.add(i)
            if i in self.preds:
                tp, _, s, p, f = self.preds.pop(i)
                if abs(t - tp) <= self.ttl:
                    out.append(self._join(i, tp, t, s, p, f, y))
                    continue
                self.c["n_expired_predictions"] += 1
            self.labels[i] = (t, self._next(), y)
        self._evict(self.labels, "n_unmatched_labels")
        self._evict(self.joined, None)
        return out

    def expire(self, now: int) -> int:
        cut = now - self.ttl
        n = 0
        for store, counter in (
            (self.preds, "n_expired_predictions"),
            (self.labels, "n_unmatched_labels"),
            (self.joined, None),
        ):
            for k in [k for k, v in store.items() if v[0] < cut]:
                del store[k]
                if counter:
                    self.c[counter] += 1
                    n += 1
        return n


def _rows(b: JoinedBatch) -> list[tuple]:
    return [
        (i, tp, tl, d, s, p, y, *f)
        for i, tp, tl, d, s, p, y, f in zip(
            b.ids.tolist(),
            b.event_time_ms.tolist(),
            b.label_time_ms.tolist(),
            b.delay_ms.tolist(),
            b.scores.tolist(),
            b.labels_pred.tolist(),
            b.labels.tolist(),
            b.features.tolist(),
            strict=True,
        )
    ]


def _counters(j: LabelJoin) -> dict[str, int]:
    return {
        k: getattr(j, k)
        for k in (
            "n_joined",
            "n_unmatched_labels",
            "n_expired_predictions",
            "n_duplicate_labels",
            "n_duplicate_predictions",
        )
    }


def _stream(seed: int, n: int = 3_000, ttl: int = 5_000, dups: bool = True) -> list[tuple]:
    """Operations ("p", ids, t, scores, preds, feats) / ("l", ids, y, t) / ("e", now).

    Predictions are timed 10 ms apart; labels follow with delays from -ttl/2 to 2*ttl (some too
    late), ~10% of ids repeat, some labels have no prediction. Batches are random sizes.
    """
    rng = np.random.default_rng(seed)
    t_pred = np.arange(n, dtype=np.int64) * 10
    ids = np.array([f"id{k}" for k in range(n)], dtype=object)
    rep = rng.random(n) < (0.1 if dups else 0.0)
    ids[rep] = ids[rng.integers(0, n, rep.sum())]
    scores = rng.random(n)
    preds = (scores >= 0.5).astype(float)
    feats = rng.normal(size=(n, NF))
    has_label = rng.random(n) < 0.8
    l_ids = np.concatenate([ids[has_label], [f"orphan{k}" for k in range(n // 20)]]).astype(object)
    l_t = np.concatenate(
        [
            t_pred[has_label] + rng.integers(-ttl // 2, 2 * ttl, has_label.sum()),
            rng.integers(0, n * 10, n // 20),
        ]
    )
    l_y = rng.integers(0, 2, l_ids.size).astype(float)
    lab_dup = rng.random(l_ids.size) < (0.05 if dups else 0.0)
    l_ids = np.concatenate([l_ids, l_ids[lab_dup]])
    l_t = np.concatenate([l_t, l_t[lab_dup] + 7])
    l_y = np.concatenate([l_y, l_y[lab_dup]])
    lo = np.argsort(l_t, kind="stable")
    l_ids, l_t, l_y = l_ids[lo], l_t[lo], l_y[lo]
    ops: list[tuple] = []
    i = k = 0
    while i < n or k < l_ids.size:
        if k >= l_ids.size or (i < n and rng.random() < 0.5):
            m = int(rng.integers(1, 200))
            s = slice(i, min(n, i + m))
            ops.append(("p", ids[s], t_pred[s], scores[s], preds[s], feats[s]))
            i = s.stop
        else:
            m = int(rng.integers(1, 200))
            s = slice(k, min(l_ids.size, k + m))
            ops.append(("l", l_ids[s], l_y[s], l_t[s]))
            k = s.stop
        if rng.random() < 0.2:
            ops.append(("e", int(min(t_pred[min(i, n - 1)], l_t[min(k, l_ids.size - 1)]))))
    return ops


def _run(j: LabelJoin, ops: list[tuple]) -> list[tuple]:
    out: list[tuple] = []
    for op in ops:
        if op[0] == "p":
            out += _rows(j.add_predictions(*op[1:3], op[3], labels_pred=op[4], features=op[5]))
        elif op[0] == "l":
            out += _rows(j.add_labels(*op[1:]))
        else:
            j.expire(op[1])
    return out


def _run_ref(r: RefJoin, ops: list[tuple]) -> list[tuple]:
    out: list[tuple] = []
    for op in ops:
        if op[0] == "p":
            out += r.predictions(
                op[1].tolist(), op[2].tolist(), op[3].tolist(), op[4].tolist(), op[5].tolist()
            )
        elif op[0] == "l":
            out += r.labels_(op[1].tolist(), op[2].tolist(), op[3].tolist())
        else:
            r.expire(op[1])
    return out


# ---------------------------------------------------------------------------- equivalences
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("ttl", "cap"), [(5_000, 1_000_000), (5_000, 40), (0, 1_000_000)])
def test_equals_row_by_row_reference(seed: int, ttl: int, cap: int) -> None:
    ops = _stream(seed, ttl=max(ttl, 2))
    j, r = LabelJoin(ttl, cap), RefJoin(ttl, cap)
    assert _run(j, ops) == _run_ref(r, ops)
    assert _counters(j) == r.c
    assert (j.n_pending, j.n_pending_labels) == (len(r.preds), len(r.labels))
    assert j.n_joined > 0
    if cap == 40:
        assert j.n_pending <= 40 and j.n_pending_labels <= 40


def _split(ops: list[tuple], size: int) -> list[tuple]:
    out = []
    for op in ops:
        if op[0] == "e":
            out.append(op)
            continue
        n = len(op[1])
        out += [(op[0], *(a[s : s + size] for a in op[1:])) for s in range(0, n, size)]
    return out


@pytest.mark.parametrize("size", [1, 7])
def test_batching_does_not_matter(size: int) -> None:
    ops = _stream(5)
    a, b = LabelJoin(5_000), LabelJoin(5_000)
    assert _run(a, ops) == _run(b, _split(ops, size))
    assert _counters(a) == _counters(b)


def test_expire_timing_does_not_change_joins() -> None:
    """With a watermark, expiring before every batch or only at the end gives the same result."""
    ops = [op for op in _stream(6, dups=False) if op[0] != "e"]
    marks, rest = [], 10**12  # watermark: the smallest time of anything still to come
    for op in reversed(ops):
        rest = min(rest, int(np.min(op[2] if op[0] == "p" else op[3])))
        marks.append(rest)
    often = [x for op, m in zip(ops, reversed(marks), strict=True) for x in (("e", m), op)]
    a, b = LabelJoin(5_000), LabelJoin(5_000)
    assert _run(a, often) == _run(b, ops)
    assert a.n_pending < b.n_pending
    a.expire(10**12)
    b.expire(10**12)
    assert _counters(a) == _counters(b)
    assert a.n_expired_predictions > 0 and a.n_unmatched_labels > 0


# ---------------------------------------------------------------------------- known answers
def _p(j: LabelJoin, ids, t, s, **kw) -> JoinedBatch:
    return j.add_predictions(np.array(ids, dtype=object), np.array(t), np.array(s, float), **kw)


def _l(j: LabelJoin, ids, y, t) -> JoinedBatch:
    return j.add_labels(np.array(ids, dtype=object), np.array(y, float), np.array(t))


def test_label_before_prediction_joins_on_arrival() -> None:
    j = LabelJoin(ttl_ms=100)
    assert len(_l(j, ["a"], [1.0], [150])) == 0
    out = _p(j, ["a"], [60], [0.3], labels_pred=np.array([True]))
    assert (out.ids.tolist(), out.delay_ms.tolist(), out.labels_pred.tolist()) == (
        ["a"],
        [90],
        [1.0],
    )
    assert (j.n_joined, j.n_pending, j.n_pending_labels) == (1, 0, 0)


@pytest.mark.parametrize(
    ("t_pred", "t_label", "joined", "expired", "unmatched"),
    [
        (0, 100, 1, 0, 0),  # delay == ttl joins
        (0, 101, 0, 1, 0),  # one ms too late: the waiting prediction is dropped
        (101, 0, 0, 1, 0),  # label timed 101 ms before the prediction, prediction first
        (100, 0, 1, 0, 0),  # label timed exactly ttl before: joins
    ],
)
def test_ttl_boundary(t_pred, t_label, joined, expired, unmatched) -> None:
    j = LabelJoin(ttl_ms=100)
    _p(j, ["a"], [t_pred], [0.5])
    _l(j, ["a"], [0.0], [t_label])
    assert (j.n_joined, j.n_expired_predictions, j.n_unmatched_labels) == (
        joined,
        expired,
        unmatched,
    )
    assert j.n_pending_labels == 1 - joined  # a too-late label waits for another prediction


def test_early_label_too_far_is_unmatched_and_prediction_waits() -> None:
    j = LabelJoin(ttl_ms=100)
    _l(j, ["a"], [0.0], [0])
    assert len(_p(j, ["a"], [500], [0.5])) == 0
    assert (j.n_unmatched_labels, j.n_pending, j.n_pending_labels) == (1, 1, 0)


def test_duplicates() -> None:
    j = LabelJoin(ttl_ms=1_000)
    _l(j, ["a", "a"], [1.0, 0.0], [10, 20])  # second early label for "a" is ignored
    assert j.n_duplicate_labels == 1
    out = _p(j, ["a", "a", "b"], [5, 6, 7], [0.1, 0.2, 0.3])
    assert (out.labels.tolist(), out.scores.tolist()) == ([1.0], [0.1])
    assert j.n_duplicate_predictions == 1
    _l(j, ["a", "b", "b"], [0.0, 1.0, 0.0], [30, 30, 31])  # "a" already joined
    assert (j.n_duplicate_labels, j.n_joined) == (3, 2)
    assert len(_p(j, ["b"], [8], [0.9])) == 0  # prediction for an already joined id
    assert j.n_duplicate_predictions == 2


def test_expire_boundary_and_return_value() -> None:
    j = LabelJoin(ttl_ms=100)
    _p(j, ["a", "b"], [0, 1], [0.5, 0.5])
    _l(j, ["x"], [1.0], [0])
    assert j.expire(100) == 0  # timed exactly now - ttl: kept
    assert j.expire(101) == 2  # "a" and "x"
    assert (j.n_expired_predictions, j.n_unmatched_labels, j.n_pending) == (1, 1, 1)


def test_eviction_oldest_time_then_arrival() -> None:
    j = LabelJoin(ttl_ms=10_000, max_pending=2)
    _p(j, ["a", "b", "c", "d"], [50, 10, 10, 60], [0.0, 0.1, 0.2, 0.3])
    assert j.n_expired_predictions == 2  # b then c (equal times: earliest arrival first)
    out = _l(j, ["a", "b", "c", "d"], [1, 1, 1, 1], [70] * 4)
    assert out.ids.tolist() == ["a", "d"]
    assert j.n_pending_labels == 2  # b and c wait as early labels


def test_features_fixed_by_first_batch_with_features() -> None:
    j = LabelJoin(ttl_ms=100)
    _p(j, ["a"], [0], [0.5])
    _p(j, ["b"], [0], [0.5], features=np.array([[1.0, 2.0]]))
    _p(j, ["c"], [0], [0.5])
    out = _l(j, ["a", "b", "c"], [1, 0, 1], [5, 5, 5])
    f = out.features
    assert f.shape == (3, 2)
    assert np.isnan(f[0]).all() and f[1].tolist() == [1.0, 2.0] and np.isnan(f[2]).all()
    with pytest.raises(DriftlineError, match="expected 2"):
        _p(j, ["d"], [0], [0.5], features=np.zeros((1, 3)))
    with pytest.raises(DriftlineError, match="shape"):
        _p(j, ["d", "e"], [0, 0], [0.5])


def test_empty_batches() -> None:
    j = LabelJoin(ttl_ms=100)
    assert len(_p(j, [], np.empty(0, np.int64), [])) == 0
    out = _l(j, [], [], np.empty(0, np.int64))
    assert len(out) == 0 and out.features.shape == (0, 0)
    assert j.expire(0) == 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ttl_ms": -1}, "ttl_ms"),
        ({"ttl_ms": 1.5}, "ttl_ms"),
        ({"ttl_ms": True}, "ttl_ms"),
        ({"ttl_ms": 1, "max_pending": 0}, "max_pending"),
    ],
)
def test_bad_hyperparameters(kw, match) -> None:
    with pytest.raises(SpecError, match=match):
        LabelJoin(**kw)


# ---------------------------------------------------------------------------- state
def _json(state):
    return orjson.loads(orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY))


@pytest.mark.parametrize("cap", [1_000_000, 30])
def test_snapshot_restore_mid_stream(cap: int) -> None:
    ops = _stream(7)
    half = len(ops) // 2
    a = LabelJoin(5_000, cap)
    _run(a, ops[:half])
    state = _json(a.snapshot())
    b = LabelJoin(5_000, cap)
    b.restore(state)
    assert _json(b.snapshot()) == state
    assert _run(a, ops[half:]) == _run(b, ops[half:])
    assert _counters(a) == _counters(b)
    assert a.snapshot() == b.snapshot()


def test_snapshot_keeps_nan_and_inf() -> None:
    a = LabelJoin(100)
    _p(a, ["a", "b"], [0, 0], [np.inf, np.nan], features=np.array([[np.nan, -np.inf], [1, 2]]))
    b = LabelJoin(100)
    b.restore(_json(a.snapshot()))
    out = _l(b, ["a"], [1.0], [0])
    assert out.scores.tolist() == [np.inf]
    assert np.isnan(out.features[0, 0]) and out.features[0, 1] == -np.inf


def test_restore_rejects_other_params_and_garbage() -> None:
    state = LabelJoin(100).snapshot()
    with pytest.raises(DriftlineError, match="hyperparameters"):
        LabelJoin(200).restore(state)
    with pytest.raises(DriftlineError, match="not a label_join"):
        LabelJoin(100).restore({"kind": "adwin"})
    with pytest.raises(DriftlineError, match="malformed"):
        LabelJoin(100).restore({**state, "predictions": {}})


def test_float_json_helpers_round_trip() -> None:
    x = np.array([[1.0, np.nan], [np.inf, -np.inf]])
    got = float_array(_json(floats_to_json(x)), (2, 2))
    np.testing.assert_array_equal(got, x)
