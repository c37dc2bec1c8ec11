"""FeatureEngine against a per-event brute force, batch-split invariance, snapshot/restore."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Sequence
from dataclasses import asdict
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.errors import DriftlineError, SpecError
from driftline.streams.features import FeatureBatch, FeatureDef, FeatureEngine

MIN = 60_000
COUNT = FeatureDef("n_1m", None, "count", MIN)
SUM = FeatureDef("amount_sum_1m", "amount", "sum", MIN)
MEAN = FeatureDef("amount_mean_1m", "amount", "mean", MIN)
FEATURES = (
    COUNT,
    SUM,
    MEAN,
    FeatureDef("lat_mean_1m", "lat", "mean", MIN),
    FeatureDef("n_10s", None, "count", 10_000),
    FeatureDef("amount_sum_10s", "amount", "sum", 10_000),
    FeatureDef("n_1m_with_field", "lat", "count", MIN),  # a count ignores its field
)


def brute_force(
    features: Sequence[FeatureDef],
    grace_ms: int,
    entities: Sequence[str],
    ts: Sequence[int],
    columns: dict[str, Sequence[float]],
) -> tuple[dict[str, list[float]], list[bool]]:
    """Per-event reference: the spec, written as naively as possible (no eviction)."""
    watermark: int | None = None
    state: dict[tuple[str, int, int], list] = {}
    values: dict[str, list[float]] = {f.name: [] for f in features}
    late: list[bool] = []
    for i, (e, t) in enumerate(zip(entities, ts, strict=True)):
        if watermark is not None and t < watermark - grace_ms:
            late.append(True)
            for f in features:
                values[f.name].append(math.nan)
            continue
        late.append(False)
        watermark = t if watermark is None else max(watermark, t)
        touched: dict[int, dict] = {}
        for size in sorted({f.window_ms for f in features}):
            key = (e, size, (t // size) * size)
            agg = state.setdefault(key, [0, {}])
            agg[0] += 1
            for f in features:
                if f.window_ms == size and f.agg != "count":
                    agg[1].setdefault(f.field, None)
            for field in agg[1]:
                prev = agg[1][field]
                agg[1][field] = (0.0 if prev is None else prev) + columns[field][i]
            touched[size] = agg
        for f in features:
            count, sums = touched[f.window_ms]
            if f.agg == "count":
                values[f.name].append(float(count))
            elif f.agg == "sum":
                values[f.name].append(sums[f.field])
            else:
                values[f.name].append(sums[f.field] / count)
    return values, late


def run_batches(
    engine: FeatureEngine,
    entities: np.ndarray,
    ts: np.ndarray,
    columns: dict[str, np.ndarray],
    cuts: Sequence[int],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    bounds = [0, *sorted(cuts), len(ts)]
    outs: list[FeatureBatch] = []
    for a, b in pairwise(bounds):
        outs.append(engine.update(entities[a:b], ts[a:b], {k: v[a:b] for k, v in columns.items()}))
    values = {k: np.concatenate([o.values[k] for o in outs]) for k in outs[0].values}
    late = np.concatenate([o.late for o in outs])
    return values, late


def make_stream(seed: int, n: int, n_entities: int, disorder_ms: int, span_ms: int):
    rng = np.random.default_rng(seed)
    entities = np.array([f"e{i}" for i in rng.integers(0, n_entities, n)], dtype=object)
    ts = np.sort(rng.integers(-span_ms // 2, span_ms // 2, n)) - rng.integers(0, disorder_ms + 1, n)
    columns = {
        "amount": rng.lognormal(3.0, 2.0, n) * rng.choice([-1.0, 1.0], n),
        "lat": rng.normal(100.0, 10.0, n),
    }
    return entities, ts.astype(np.int64), columns


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


def one(engine: FeatureEngine, ents, ts, amounts=None) -> FeatureBatch:
    n = len(ts)
    amount = np.asarray(amounts if amounts is not None else np.ones(n), dtype=np.float64)
    cols = {"amount": amount, "lat": -amount}
    return engine.update(np.array(ents, dtype=object), np.array(ts, dtype=np.int64), cols)


# ---------------------------------------------------------------------------- edge-case tables
@pytest.mark.parametrize(
    ("name", "grace", "ents", "ts", "amounts", "counts", "sums", "late"),
    [
        (
            "window boundaries are half-open",
            0,
            ["a"] * 5,
            [0, 59_999, 60_000, 119_999, 120_000],
            [1, 2, 3, 4, 5],
            [1, 2, 1, 2, 1],
            [1, 3, 3, 7, 5],
            [False] * 5,
        ),
        (
            "equal timestamps accumulate in arrival order",
            0,
            ["a", "a", "b", "a"],
            [5, 5, 5, 5],
            [1, 2, 10, 4],
            [1, 2, 1, 3],
            [1, 3, 10, 7],
            [False] * 4,
        ),
        (
            "negative and zero timestamps floor to their window",
            10**9,
            ["a", "a", "a", "a", "a"],
            [-1, 0, -60_000, -60_001, -59_999],
            [1, 2, 4, 8, 16],
            [1, 1, 2, 1, 3],
            [1, 2, 5, 8, 21],
            [False] * 5,
        ),
        (
            "late exactly at grace is on time, one ms more is late",
            1_000,
            ["a", "a", "a", "a"],
            [10_000, 9_000, 8_999, 9_500],
            [1, 2, 4, 8],
            [1, 2, None, 3],
            [1, 3, None, 11],
            [False, False, True, False],
        ),
        (
            "grace 0: equal to the watermark is on time, below is late",
            0,
            ["a", "b", "a", "b"],
            [100, 100, 99, 101],
            [1, 2, 4, 8],
            [1, 1, None, 2],
            [1, 2, None, 10],
            [False, False, True, False],
        ),
        (
            "the watermark includes earlier events of the same batch",
            10,
            ["a", "b", "a"],
            [1_000, 5_000, 1_000],
            [1, 2, 4],
            [1, 1, None],
            [1, 2, None],
            [False, False, True],
        ),
        (
            "entities do not mix",
            0,
            ["a", "b", "c", "b", "a"],
            [1, 2, 3, 4, 5],
            [1, 2, 4, 8, 16],
            [1, 1, 1, 2, 2],
            [1, 2, 4, 10, 17],
            [False] * 5,
        ),
    ],
)
def test_edge_cases(name, grace, ents, ts, amounts, counts, sums, late) -> None:
    eng = FeatureEngine([COUNT, SUM, MEAN], grace_ms=grace)
    out = one(eng, ents, ts, amounts)
    nan = math.nan
    exp_counts = [nan if c is None else float(c) for c in counts]
    exp_sums = [nan if s is None else float(s) for s in sums]
    np.testing.assert_array_equal(out.late, np.array(late), err_msg=name)
    np.testing.assert_array_equal(out.values["n_1m"], exp_counts, err_msg=name)
    np.testing.assert_array_equal(out.values["amount_sum_1m"], exp_sums, err_msg=name)
    np.testing.assert_array_equal(
        out.values["amount_mean_1m"], np.array(exp_sums) / np.array(exp_counts), err_msg=name
    )
    np.testing.assert_array_equal(out.window_start_ms[MIN], (np.array(ts) // MIN) * MIN)
    # same answer event by event
    eng2 = FeatureEngine([COUNT, SUM, MEAN], grace_ms=grace)
    per_event = [one(eng2, [e], [t], [x]) for e, t, x in zip(ents, ts, amounts, strict=True)]
    np.testing.assert_array_equal(
        np.concatenate([o.values["amount_sum_1m"] for o in per_event]), exp_sums
    )


def test_empty_batch_first_and_mid_stream() -> None:
    eng = FeatureEngine(FEATURES, grace_ms=5)
    empty = {"amount": np.array([]), "lat": np.array([])}
    out = eng.update(np.array([], dtype=object), np.array([], dtype=np.int64), empty)
    assert out.late.shape == (0,) and out.late.dtype == bool
    assert set(out.values) == {f.name for f in FEATURES}
    assert all(v.shape == (0,) and v.dtype == np.float64 for v in out.values.values())
    assert set(out.window_start_ms) == {MIN, 10_000}
    assert eng.watermark_ms is None and eng.n_windows == 0
    one(eng, ["a"], [1_000])
    before = eng.snapshot()
    eng.update(np.array([], dtype=object), np.array([], dtype=np.int64), empty)
    assert eng.snapshot() == before
    assert eng.watermark_ms == 1_000


def test_many_entities_one_event_each() -> None:
    n = 5_000
    eng = FeatureEngine([COUNT, SUM, MEAN])
    ents = [f"user-{i}" for i in range(n)]
    amounts = np.arange(n, dtype=np.float64)
    out = one(eng, ents, [30_000] * n, amounts)
    np.testing.assert_array_equal(out.values["n_1m"], np.ones(n))
    np.testing.assert_array_equal(out.values["amount_sum_1m"], amounts)
    np.testing.assert_array_equal(out.values["amount_mean_1m"], amounts)
    assert eng.n_windows == n
    out = one(eng, ents[::-1], [30_001] * n, amounts)
    np.testing.assert_array_equal(out.values["n_1m"], np.full(n, 2.0))
    np.testing.assert_array_equal(out.values["amount_sum_1m"], amounts + amounts[::-1])


def test_long_runs_of_one_key_in_a_batch() -> None:
    """Groups longer than the vectorised levels take the cumsum path; still exact."""
    rng = np.random.default_rng(1)
    n = 2_000
    ents = np.where(rng.random(n) < 0.8, "hot", np.array([f"c{i % 7}" for i in range(n)]))
    ents = ents.astype(object)
    ts = np.sort(rng.integers(0, 3 * MIN, n)).astype(np.int64)
    cols = {"amount": rng.normal(0, 1e6, n), "lat": rng.normal(0, 1e-3, n)}
    eng = FeatureEngine(FEATURES)
    out = eng.update(ents, ts, cols)
    exp, late = brute_force(FEATURES, 0, ents.tolist(), ts.tolist(), cols)
    assert not any(late)
    assert_same(out.values, {k: np.array(v) for k, v in exp.items()})


def test_eviction_keeps_state_bounded_and_evicted_windows_reject_events() -> None:
    eng = FeatureEngine([COUNT, SUM], grace_ms=1_000)
    for k in range(100):
        one(eng, ["a", "b", "c"], [k * MIN, k * MIN + 1, k * MIN + 2])
        # the previous minute ends at k*MIN > watermark - grace: kept; older ones are gone
        assert eng.n_windows == (3 if k == 0 else 6)
    one(eng, ["a"], [100 * MIN + 1_000])
    assert eng.n_windows == 1  # minute 99 ends at 100 min <= watermark - grace: evicted
    out = one(eng, ["a"], [99 * MIN + 5])  # would belong to the evicted window: late
    assert out.late.tolist() == [True]
    out = one(eng, ["a"], [100 * MIN])  # exactly at watermark - grace: on time, new window
    assert out.late.tolist() == [False]
    assert out.values["n_1m"].tolist() == [2.0]


def test_window_not_evicted_while_it_can_still_get_events() -> None:
    eng = FeatureEngine([COUNT], grace_ms=5_000)
    one(eng, ["a"], [59_000])
    one(eng, ["b"], [64_999])  # cutoff 59_999 < 60_000: a's window stays
    assert eng.n_windows == 2
    out = one(eng, ["a"], [59_999])
    assert out.values["n_1m"].tolist() == [2.0]
    one(eng, ["b"], [65_000])  # cutoff 60_000: evicted
    assert eng.n_windows == 1


def test_count_with_field_ignores_missing_column_and_values() -> None:
    eng = FeatureEngine([FeatureDef("n", "lat", "count", MIN)])
    out = eng.update(np.array(["a", "a"], dtype=object), np.array([1, 2]), {})
    assert out.values["n"].tolist() == [1.0, 2.0]
    assert eng.required_fields == ()


# ---------------------------------------------------------------------------- brute force
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("grace", [0, 700, 30_000])
def test_matches_brute_force_on_random_streams(seed: int, grace: int) -> None:
    ents, ts, cols = make_stream(seed, 3_000, 40, disorder_ms=2_000, span_ms=20 * MIN)
    exp, exp_late = brute_force(FEATURES, grace, ents.tolist(), ts.tolist(), cols)
    rng = np.random.default_rng(seed + 100)
    cuts = rng.choice(np.arange(1, len(ts)), size=25, replace=False).tolist()
    values, late = run_batches(FeatureEngine(FEATURES, grace), ents, ts, cols, cuts)
    assert late.tolist() == exp_late
    assert 0 < late.sum() < len(ts) or grace == 30_000
    assert_same(values, {k: np.array(v) for k, v in exp.items()})


@st.composite
def streams_and_cuts(draw):
    n = draw(st.integers(0, 120))
    ents = draw(st.lists(st.sampled_from(["a", "b", "c", "dd", ""]), min_size=n, max_size=n))
    base = draw(st.integers(-(10**12), 10**12))
    steps = draw(st.lists(st.integers(-25_000, 25_000), min_size=n, max_size=n))
    ts = (base + np.cumsum(np.array(steps, dtype=np.int64))).tolist() if n else []
    finite = st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False)
    amount = draw(st.lists(finite, min_size=n, max_size=n))
    lat = draw(st.lists(finite, min_size=n, max_size=n))
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    cuts2 = draw(st.lists(st.integers(0, n), max_size=8))
    grace = draw(st.sampled_from([0, 1, 10_000, 40_000]))
    return ents, ts, {"amount": amount, "lat": lat}, cuts, cuts2, grace


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams_and_cuts())
def test_property_any_batching_gives_identical_output(data) -> None:
    ents, ts, cols, cuts, cuts2, grace = data
    exp, exp_late = brute_force(FEATURES, grace, ents, ts, cols)
    arr_e = np.array(ents, dtype=object)
    arr_t = np.array(ts, dtype=np.int64)
    arr_c = {k: np.array(v, dtype=np.float64) for k, v in cols.items()}
    v1, l1 = run_batches(FeatureEngine(FEATURES, grace), arr_e, arr_t, arr_c, cuts)
    v2, l2 = run_batches(FeatureEngine(FEATURES, grace), arr_e, arr_t, arr_c, cuts2)
    assert l1.tolist() == exp_late == l2.tolist()
    expected = {k: np.array(v, dtype=np.float64) for k, v in exp.items()}
    assert_same(v1, expected)
    assert_same(v2, expected)


# ---------------------------------------------------------------------------- snapshot/restore
@pytest.mark.parametrize("roundtrip", ["json", "pickle", "none"])
@pytest.mark.parametrize("cut", [0, 1, 1_234, 3_999, 4_000])
def test_snapshot_restore_mid_stream_is_seamless(roundtrip: str, cut: int) -> None:
    ents, ts, cols = make_stream(42, 4_000, 25, disorder_ms=3_000, span_ms=30 * MIN)
    grace = 1_500
    ref_vals, ref_late = run_batches(FeatureEngine(FEATURES, grace), ents, ts, cols, [500, 2_500])

    first = FeatureEngine(FEATURES, grace)
    v1, l1 = run_batches(first, ents[:cut], ts[:cut], {k: v[:cut] for k, v in cols.items()}, [])
    state = first.snapshot()
    if roundtrip == "json":
        state = json.loads(json.dumps(state, allow_nan=False))
    elif roundtrip == "pickle":
        state = pickle.loads(pickle.dumps(state))
    second = FeatureEngine.restore(FEATURES, grace, state)
    assert second.watermark_ms == first.watermark_ms
    assert second.n_windows == first.n_windows
    assert second.snapshot() == first.snapshot()
    v2, l2 = run_batches(second, ents[cut:], ts[cut:], {k: v[cut:] for k, v in cols.items()}, [])
    assert np.concatenate([l1, l2]).tolist() == ref_late.tolist()
    assert_same({k: np.concatenate([v1[k], v2[k]]) for k in v1}, ref_vals)


def test_snapshot_is_plain_data() -> None:
    eng = FeatureEngine(FEATURES, 10)
    eng.update(
        np.array(["a", "b"], dtype=object),
        np.array([1, 2]),
        {"amount": np.array([1.5, 2.5]), "lat": np.array([3.0, 4.0])},
    )
    snap = eng.snapshot()
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap

    def plain(x) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or type(x) in (int, float, str, bool)

    assert plain(snap)
    assert snap["watermark_ms"] == 2
    w1m = next(w for w in snap["states"] if "n_1m" in w["features"])
    cols = w1m["columns"]
    assert sorted(zip(w1m["entities"], cols["count"], cols["sum"]["amount"], strict=True)) == [
        ("a", 1, 1.5),
        ("b", 1, 2.5),
    ]


def test_restore_rejects_a_different_spec() -> None:
    eng = FeatureEngine(FEATURES, 10)
    snap = eng.snapshot()
    with pytest.raises(SpecError, match="snapshot was taken with features"):
        FeatureEngine.restore(FEATURES[:2], 10, snap)
    with pytest.raises(SpecError, match="grace_ms"):
        FeatureEngine.restore(FEATURES, 11, snap)
    with pytest.raises(DriftlineError, match="not a FeatureEngine snapshot"):
        FeatureEngine.restore(FEATURES, 10, {"version": 1})
    with pytest.raises(DriftlineError, match="version"):
        FeatureEngine.restore(FEATURES, 10, {**snap, "version": 99})


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "", "field": None, "agg": "count", "window_ms": 1}, "non-empty string"),
        (
            {"name": "x", "field": "a", "agg": "median", "window_ms": 1},
            "agg 'median' is not supported",
        ),
        ({"name": "x", "field": None, "agg": "mean", "window_ms": 1}, "needs a numeric source"),
        ({"name": "x", "field": "", "agg": "sum", "window_ms": 1}, "non-empty column name"),
        ({"name": "x", "field": "a", "agg": "sum", "window_ms": 0}, "window_ms: got 0"),
        ({"name": "x", "field": "a", "agg": "sum", "window_ms": -5}, "window_ms: got -5"),
        ({"name": "x", "field": "a", "agg": "sum", "window_ms": 1.5}, "window_ms: got 1.5"),
        ({"name": "x", "field": "a", "agg": "sum", "window_ms": True}, "window_ms: got True"),
    ],
)
def test_feature_def_validation(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        FeatureDef(**kwargs)


def test_engine_validation() -> None:
    with pytest.raises(SpecError, match="at least one FeatureDef"):
        FeatureEngine([])
    with pytest.raises(SpecError, match=r"names \['n_1m'\] are used more than once"):
        FeatureEngine([COUNT, COUNT])
    for bad in (-1, 1.0, True, None):
        with pytest.raises(SpecError, match="grace_ms: got"):
            FeatureEngine([COUNT], grace_ms=bad)  # type: ignore[arg-type]
    eng = FeatureEngine([COUNT, MEAN])
    with pytest.raises(SpecError, match=r"'amount' is missing; features \['amount_mean_1m'\]"):
        eng.update(np.array(["a"], dtype=object), np.array([1]), {})
    with pytest.raises(DriftlineError, match="expected a 1-D integer array"):
        eng.update(np.array(["a"], dtype=object), np.array([1.0]), {"amount": np.ones(1)})
    with pytest.raises(DriftlineError, match=r"entities: got shape \(2,\)"):
        eng.update(np.array(["a", "b"], dtype=object), np.array([1]), {"amount": np.ones(1)})
    with pytest.raises(DriftlineError, match=r"columns\['amount'\]: got shape \(2,\)"):
        eng.update(np.array(["a"], dtype=object), np.array([1]), {"amount": np.ones(2)})
    assert eng.watermark_ms is None and eng.n_windows == 0  # failed calls changed nothing


# ============================================================================ all window kinds
from driftline.streams.aggregators import AGGREGATIONS, DISTINCT_CAP  # noqa: E402

KINDS = {
    "tumbling": {"window_ms": 10_000},
    "hopping": {"window_ms": 10_000, "window": "hopping", "step_ms": 2_500},
    "sliding": {"window_ms": 7_000, "window": "sliding"},
    "count": {"window_ms": None, "window": "count", "count": 3, "idle_ttl_ms": 20_000},
}
BUY = {"where_field": "type", "where_equals": "buy"}


def _field(agg: str) -> str | None:
    return {"distinct": "kind", "count": None, "rate": None, "since_prev": None}.get(agg, "amount")


def all_features(kinds=tuple(KINDS), filtered: bool = True) -> tuple[FeatureDef, ...]:
    out = []
    for k in kinds:
        for agg in AGGREGATIONS:
            out.append(FeatureDef(f"{k}_{agg}", _field(agg), agg, **KINDS[k]))
            if filtered:
                out.append(FeatureDef(f"{k}_{agg}_buy", _field(agg), agg, **KINDS[k], **BUY))
        out.append(FeatureDef(f"{k}_distinct_amount", "amount", "distinct", **KINDS[k]))
    return tuple(out)


ALL = all_features()


def window_members(f: FeatureDef, i: int, accepted: list[int], ents, ts, cols) -> list[int]:
    """Indices of the events in event ``i``'s window, in arrival order (the spec, naively)."""
    e, t = ents[i], ts[i]

    def ok(j: int) -> bool:
        return ents[j] == e and (f.where_field is None or cols[f.where_field][j] == f.where_equals)

    cand = [j for j in accepted if ok(j)]
    if f.window == "tumbling":
        return [j for j in cand if ts[j] // f.window_ms == t // f.window_ms]
    if f.window == "hopping":
        start = (t // f.step_ms) * f.step_ms
        return [j for j in cand if start <= ts[j] < start + f.window_ms]
    if f.window == "sliding":
        return [j for j in cand if t - f.window_ms < ts[j] <= t]
    return [j for j in cand[-f.count :] if ts[j] > t - f.idle_ttl_ms]


def aggregate(f: FeatureDef, i: int, mem: list[int], ts, cols) -> float:
    nan = math.nan
    if f.agg == "distinct":
        return float(min(len({cols[f.field][j] for j in mem}), DISTINCT_CAP))
    x = [float(cols[f.field][j]) for j in mem] if f.source else []
    n = len(mem)
    if f.agg == "count":
        return float(n)
    if f.agg == "sum" or f.agg == "mean":
        s = 0.0
        for v in x:
            s += v
        return s if f.agg == "sum" else (s / n if n else nan)
    if f.agg in ("var", "std"):
        if n < 2:
            return nan
        v = float(np.var(np.array(x), ddof=1))
        return v if f.agg == "var" else math.sqrt(v)
    if f.agg in ("min", "max"):
        return (min if f.agg == "min" else max)(x) if n else nan
    if f.agg in ("first", "last"):
        if not n:
            return nan
        keyed = sorted(zip([ts[j] for j in mem], mem, x, strict=True))
        return keyed[0][2] if f.agg == "first" else keyed[-1][2]
    if f.agg == "rate":
        if f.window != "count":
            return n * 1000.0 / f.window_ms
        span = max(ts[j] for j in mem) - min(ts[j] for j in mem) if n else 0
        return (n - 1) * 1000.0 / span if n >= 2 and span > 0 else nan
    assert f.agg == "since_prev"
    others = [ts[j] for j in mem if j != i]
    return float(ts[i] - max(others)) if others else nan


def oracle(features, grace, ents, ts, cols):
    """Per-event brute force over every window kind and aggregation."""
    watermark = None
    accepted: list[int] = []
    values = {f.name: [] for f in features}
    late = []
    for i, t in enumerate(ts):
        if watermark is not None and t < watermark - grace:
            late.append(True)
            for f in features:
                values[f.name].append(math.nan)
            continue
        late.append(False)
        watermark = t if watermark is None else max(watermark, t)
        accepted.append(i)
        for f in features:
            mem = window_members(f, i, accepted, ents, ts, cols)
            values[f.name].append(aggregate(f, i, mem, ts, cols))
    return {k: np.array(v, dtype=np.float64) for k, v in values.items()}, late


def assert_matches_oracle(got: dict[str, np.ndarray], exp: dict[str, np.ndarray]) -> None:
    assert got.keys() == exp.keys()
    for k in exp:
        if k.split("_")[1] in ("var", "std"):
            np.testing.assert_array_equal(np.isnan(got[k]), np.isnan(exp[k]), err_msg=k)
            np.testing.assert_allclose(got[k], exp[k], rtol=1e-6, atol=1e-3, err_msg=k)
        else:
            np.testing.assert_array_equal(got[k], exp[k], err_msg=k, strict=True)


def make_mixed_stream(seed: int, n: int, n_entities: int = 4, span_ms: int = 120_000):
    rng = np.random.default_rng(seed)
    ents = np.array([f"e{i}" for i in rng.integers(0, n_entities, n)], dtype=object)
    ts = np.sort(rng.integers(0, span_ms, n)) - rng.integers(0, 4_000, n)
    ts[rng.random(n) < 0.05] -= 30_000  # some very late
    amount = rng.choice([1.0, 2.5, -3.0, 1e9 + 0.25, 7.0], n) + rng.integers(0, 3, n)
    cols = {
        "amount": amount,
        "type": rng.choice(np.array(["buy", "view"], dtype=object), n),
        "kind": rng.choice(np.array(["x", "y", "z", "w"], dtype=object), n),
    }
    return ents, ts.astype(np.int64), cols


def run_cut(features, grace, ents, ts, cols, cuts, snap_at=None):
    """Run in batches cut at ``cuts``; optionally snapshot, JSON round-trip and restore."""
    eng = FeatureEngine(features, grace)
    bounds = [0, *sorted(set(cuts)), len(ts)]
    outs, lates = [], []
    for a, b in pairwise(bounds):
        if snap_at is not None and a == snap_at:
            state = json.loads(json.dumps(eng.snapshot(), allow_nan=False))
            eng = FeatureEngine.restore(features, grace, state)
        o = eng.update(ents[a:b], ts[a:b], {k: v[a:b] for k, v in cols.items()})
        outs.append(o.values)
        lates.append(o.late)
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}, np.concatenate(lates), eng


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grace", [0, 2_500])
def test_every_kind_and_aggregation_matches_brute_force(seed: int, grace: int) -> None:
    ents, ts, cols = make_mixed_stream(seed, 400)
    exp, exp_late = oracle(ALL, grace, ents.tolist(), ts.tolist(), cols)
    rng = np.random.default_rng(seed)
    cuts = rng.choice(np.arange(1, len(ts)), size=20, replace=False).tolist()
    got, late, _ = run_cut(ALL, grace, ents, ts, cols, cuts, snap_at=cuts[3])
    assert late.tolist() == exp_late and 0 < sum(exp_late)
    assert_matches_oracle(got, exp)
    one_batch, _, _ = run_cut(ALL, grace, ents, ts, cols, [])
    assert_same(got, one_batch)


@st.composite
def mixed_streams(draw):
    n = draw(st.integers(0, 60))
    ents = draw(st.lists(st.sampled_from(["a", "b", ""]), min_size=n, max_size=n))
    base = draw(st.integers(-(10**12), 10**12))
    steps = draw(st.lists(st.integers(-6_000, 6_000), min_size=n, max_size=n))
    ts = (base + np.cumsum(np.array(steps, dtype=np.int64))).tolist() if n else []
    vals = st.one_of(st.sampled_from([0.0, -0.0, 1.0, 2.0, 1e9 + 1.0]), st.floats(-1e6, 1e6))
    amount = draw(st.lists(vals, min_size=n, max_size=n))
    typ = draw(st.lists(st.sampled_from(["buy", "view"]), min_size=n, max_size=n))
    kind = draw(st.lists(st.sampled_from(["x", "y"]), min_size=n, max_size=n))
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    snap_at = draw(st.sampled_from([None, *sorted(set(cuts))]))
    grace = draw(st.sampled_from([0, 1, 3_000, 20_000]))
    cols = {
        "amount": np.array(amount, dtype=np.float64),
        "type": np.array(typ, dtype=object),
        "kind": np.array(kind, dtype=object),
    }
    return np.array(ents, dtype=object), np.array(ts, dtype=np.int64), cols, cuts, snap_at, grace


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_streams())
def test_property_every_kind_any_batching_and_restore(data) -> None:
    ents, ts, cols, cuts, snap_at, grace = data
    exp, exp_late = oracle(ALL, grace, ents.tolist(), ts.tolist(), cols)
    got, late, _ = run_cut(ALL, grace, ents, ts, cols, cuts, snap_at)
    assert late.tolist() == exp_late
    assert_matches_oracle(got, exp)
    per_event, _, _ = run_cut(ALL, grace, ents, ts, cols, list(range(1, len(ts))))
    assert_same(got, per_event)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_stays_bounded_on_a_long_stream(kind: str) -> None:
    feats = [FeatureDef(f"{kind}_{a}", _field(a), a, **KINDS[kind]) for a in AGGREGATIONS]
    eng = FeatureEngine(feats, grace_ms=1_000)
    rng = np.random.default_rng(0)
    peak = 0
    for b in range(60):
        n = 200
        ents = np.array([f"u{b * 50 + i}" for i in rng.integers(0, 50, n)], dtype=object)
        ts = b * 10_000 + np.sort(rng.integers(0, 10_000, n))
        cols = {"amount": rng.normal(0, 1, n), "kind": rng.choice(np.array(["x", "y"]), n)}
        eng.update(ents, ts.astype(np.int64), cols)
        peak = max(peak, eng.n_windows)
    # entities churn every batch: only the recent ones may hold state
    assert peak <= 200
    assert len(eng._registry.ids) <= 5_000 + 200


def test_idle_count_window_entity_starts_afresh() -> None:
    f = FeatureDef("n3", None, "count", None, window="count", count=3, idle_ttl_ms=1_000)
    eng = FeatureEngine([f])
    out = one(eng, ["a", "a", "a", "a"], [0, 10, 20, 30])
    assert out.values["n3"].tolist() == [1.0, 2.0, 3.0, 3.0]
    one(eng, ["b"], [5_000])  # a's events are now all older than watermark - ttl: dropped
    assert eng.n_windows == 1
    assert one(eng, ["a"], [5_001]).values["n3"].tolist() == [1.0]


@pytest.mark.parametrize(
    ("kind", "ts", "expected"),
    [
        # tumbling [0, 10s): 9_999 in, 10_000 starts the next window
        ("tumbling", [0, 9_999, 10_000], [1, 2, 1]),
        # hopping 10s/2.5s: the most recent window of 9_999 is [7_500, 17_500) (0 is not in
        # it), of 10_000 and 12_499 [10_000, 20_000), of 12_500 [12_500, 22_500)
        ("hopping", [0, 9_999, 10_000, 12_499, 12_500], [1, 1, 1, 2, 1]),
        # sliding 7s: (ts - 7000, ts]; 7_000 excludes 0, 6_999 includes it
        ("sliding", [0, 6_999, 7_000, 13_998, 13_999], [1, 2, 2, 3, 3]),
        # count 3 with idle ttl 20s: last three, and only those within 20s
        ("count", [0, 1, 2, 3, 20_002], [1, 2, 3, 3, 2]),
    ],
)
def test_window_boundaries_per_kind(kind: str, ts: list[int], expected: list[int]) -> None:
    eng = FeatureEngine([FeatureDef("n", None, "count", **KINDS[kind])])
    got = one(eng, ["a"] * len(ts), ts).values["n"]
    assert got.tolist() == [float(e) for e in expected]


def test_filtered_out_events_get_the_value_but_do_not_count() -> None:
    feats = [FeatureDef(f"{k}_n_buy", None, "count", **KINDS[k], **BUY) for k in KINDS]
    feats += [FeatureDef(f"{k}_mean_buy", "amount", "mean", **KINDS[k], **BUY) for k in KINDS]
    eng = FeatureEngine(feats)
    cols = {"amount": np.array([1.0, 100.0, 3.0]), "type": np.array(["view", "buy", "view"])}
    out = eng.update(np.array(["a"] * 3, dtype=object), np.array([0, 1, 2]), cols)
    for k in KINDS:
        assert out.values[f"{k}_n_buy"].tolist() == [0.0, 1.0, 1.0], k
        np.testing.assert_array_equal(out.values[f"{k}_mean_buy"], [np.nan, 100.0, 100.0])
    # the filtered-out first event created no state: 1 tumbling + 4 hopping windows + 2 entities
    assert eng.n_windows == 7


def test_out_of_order_event_counts_only_in_later_sliding_outputs() -> None:
    f = FeatureDef("s", "amount", "sum", 10_000, window="sliding")
    eng = FeatureEngine([f], grace_ms=10_000)
    out = one(eng, ["a", "a", "a"], [5_000, 1_000, 6_000], [1.0, 10.0, 100.0])
    # 1_000's window (-9_000, 1_000] does not reach 5_000; 6_000's holds all three
    assert out.values["s"].tolist() == [1.0, 10.0, 111.0]


def test_variance_is_stable_on_large_offsets() -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    x = 1e9 + rng.normal(0.0, 1e-2, n)
    feats = [
        FeatureDef(f"{k}_var", "amount", "var", **KINDS[k]) for k in ("tumbling", "hopping")
    ] + [FeatureDef("sl_var", "amount", "var", 10**9, window="sliding")]
    eng = FeatureEngine(feats)
    out = eng.update(np.array(["a"] * n, dtype=object), np.zeros(n, dtype=np.int64), {"amount": x})
    for k in out.values:
        assert out.values[k][-1] == pytest.approx(np.var(x, ddof=1), rel=1e-6), k
        np.testing.assert_allclose(
            out.values[k][1:100], [np.var(x[: i + 1], ddof=1) for i in range(1, 100)], rtol=1e-5
        )


def test_new_feature_def_validation() -> None:
    cases = [
        ({"window": "session"}, "window 'session'"),
        ({"window": "hopping"}, "step_ms: got None"),
        ({"window": "hopping", "step_ms": 3_000}, "expected a divisor"),
        ({"step_ms": 1_000}, "only for window='hopping'"),
        ({"window": "count", "count": 3}, "count windows take count=N and window_ms=None"),
        ({"window_ms": None, "window": "count"}, "count: got None"),
        (
            {"window_ms": None, "window": "count", "count": 2, "idle_ttl_ms": 0},
            "idle_ttl_ms: got 0",
        ),
        ({"count": 3}, "count 3 is only for window='count'"),
        ({"where_field": "type"}, "where_equals None"),
        ({"where_equals": "buy"}, "expected where_field"),
    ]
    for extra, match in cases:
        kwargs = {"name": "x", "field": "amount", "agg": "sum", "window_ms": 10_000, **extra}
        with pytest.raises(SpecError, match=match):
            FeatureDef(**kwargs)
    with pytest.raises(SpecError, match="'distinct' needs a source field"):
        FeatureDef("x", None, "distinct", 1_000)
    assert FeatureDef("r", None, "rate", 1_000).source is None


def test_filter_and_distinct_columns_are_required_and_may_be_strings() -> None:
    eng = FeatureEngine([FeatureDef("d", "kind", "distinct", 1_000, **BUY)])
    assert eng.required_fields == ("kind", "type")
    with pytest.raises(SpecError, match=r"'type' is missing; features \['d'\] need it as a column"):
        eng.update(np.array(["a"], dtype=object), np.array([1]), {"kind": np.array(["x"])})
    out = eng.update(
        np.array(["a", "a", "a"], dtype=object),
        np.array([1, 2, 3]),
        {"kind": np.array(["x", "y", "x"], dtype=object), "type": np.array(["buy"] * 3)},
    )
    assert out.values["d"].tolist() == [1.0, 2.0, 2.0]


def test_snapshot_format_is_stable() -> None:
    """The snapshot is the changelog's format: the states of one window kind each, written by
    the engine before its split into modules, restore and continue as they did."""
    feats = [
        FeatureDef("n", None, "count", MIN),
        FeatureDef("var", "x", "var", MIN),
        FeatureDef("first", "x", "first", MIN, window="hopping", step_ms=30_000),
        FeatureDef("kinds", "k", "distinct", MIN),
        FeatureDef("max_10s", "x", "max", 10_000, window="sliding"),
        FeatureDef("last2", "x", "sum", None, window="count", count=2),
    ]
    eng = FeatureEngine(feats, grace_ms=1_000)
    eng.update(
        np.array(["a", "b", "a"], dtype=object),
        np.array([0, 5_000, 61_000]),
        {"x": np.array([1.5, 2.0, -3.0]), "k": np.array(["u", "v", "u"], dtype=object)},
    )
    states = [
        {"features": ["n", "var", "kinds"], "entities": ["a"], "starts": [60000],
         "columns": {"count": [1], "K": {"x": [-3.0]}, "S1": {"x": [0.0]}, "S2": {"x": [0.0]},
                     "dcount": {"k": [1]}},
         "distinct": {"k": [["u"]]}},
        {"features": ["first"], "entities": ["a", "a"], "starts": [30000, 60000],
         "columns": {"count": [1, 1], "first": {"x": [-3.0, -3.0]}, "first_ts": [61000, 61000]}},
        {"features": ["max_10s"], "entities": ["a"], "ts": [61000], "seq": [2],
         "values": {"x": [-3.0]}, "distinct": {}},
        {"features": ["last2"], "entities": ["a", "a", "b"], "ts": [0, 61000, 5000],
         "seq": [0, 2, 1], "values": {"x": [1.5, -3.0, 2.0]}, "distinct": {}},
    ]  # fmt: skip
    snap = eng.snapshot()
    assert {k: v for k, v in snap.items() if k != "features"} == {
        "version": 2, "grace_ms": 1_000, "watermark_ms": 61_000, "seq": 3, "states": states
    }  # fmt: skip
    assert snap["features"] == [asdict(f) for f in feats]
    restored = FeatureEngine.restore(feats, 1_000, json.loads(json.dumps(snap)))
    nxt = (np.array(["a", "b"], dtype=object), np.array([65_000, 66_000]))
    cols = {"x": np.array([4.0, 1.0]), "k": np.array(["w", "v"], dtype=object)}
    got, want = restored.update(*nxt, cols).values, eng.update(*nxt, cols).values
    assert_same(got, want)
    assert got["n"].tolist() == [2.0, 1.0] and got["kinds"].tolist() == [2.0, 1.0]
    assert got["var"].tolist()[0] == 24.5 and got["last2"].tolist() == [1.0, 3.0]
    assert got["first"].tolist() == [-3.0, 1.0] and got["max_10s"].tolist() == [4.0, 1.0]
