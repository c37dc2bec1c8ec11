"""``idle_ttl_ms`` on sliding windows: events older than it do not count, idle entities are
dropped early, and the outputs still do not depend on how the stream is cut into batches."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from driftline.errors import SpecError
from driftline.streams.features import FeatureDef, FeatureEngine

WINDOW, TTL = 10_000, 3_000


def _feats(ttl: int | None) -> list[FeatureDef]:
    kw = {"window": "sliding", "idle_ttl_ms": ttl}
    return [
        FeatureDef("n", None, "count", WINDOW, **kw),
        FeatureDef("s", "x", "sum", WINDOW, **kw),
        FeatureDef("hi", "x", "max", WINDOW, **kw),
        FeatureDef("r", None, "rate", WINDOW, **kw),
    ]


def _brute(ents: list[str], ts: list[int], xs: list[float], reach: int) -> dict[str, list]:
    """Per event: the entity's events so far with time in (t - reach, t] (nothing is late)."""
    out: dict[str, list] = {"n": [], "s": [], "hi": [], "r": []}
    for i in range(len(ts)):
        mem = [j for j in range(i + 1) if ents[j] == ents[i] and ts[i] - reach < ts[j] <= ts[i]]
        out["n"].append(float(len(mem)))
        out["s"].append(float(sum(xs[j] for j in mem)))
        out["hi"].append(max(xs[j] for j in mem))
        out["r"].append(len(mem) * 1000.0 / WINDOW)  # the rate stays per window length
    return out


def _run(ttl: int | None, ents, ts, xs, cuts) -> dict[str, np.ndarray]:
    eng = FeatureEngine(_feats(ttl), grace_ms=10**9)
    parts = []
    for a, b in pairwise([0, *cuts, len(ts)]):
        e = np.array(ents[a:b], dtype=object)
        parts.append(eng.update(e, np.array(ts[a:b], dtype=np.int64), {"x": np.array(xs[a:b])}))
    return {k: np.concatenate([p.values[k] for p in parts]) for k in parts[0].values}


@pytest.mark.parametrize("seed", range(5))
def test_idle_ttl_bounds_what_counts_whatever_the_batches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    ents = [f"e{k}" for k in rng.integers(0, 6, n)]
    ts = (np.cumsum(rng.integers(0, 400, n)) - rng.integers(0, 2_000, n)).tolist()
    xs = rng.normal(0, 1, n).round(3).tolist()
    want = _brute(ents, ts, xs, TTL)
    for cuts in ([], sorted(rng.choice(np.arange(1, n), 12, replace=False).tolist())):
        got = _run(TTL, ents, ts, xs, cuts)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=1e-12, atol=1e-12, err_msg=k)
    # without idle_ttl_ms the window alone bounds a sliding window, as before
    plain = _run(None, ents, ts, xs, [])
    np.testing.assert_allclose(plain["n"], _brute(ents, ts, xs, WINDOW)["n"])
    # a ttl longer than the window changes nothing
    np.testing.assert_array_equal(_run(WINDOW * 5, ents, ts, xs, [])["n"], plain["n"])


def test_an_idle_entity_is_dropped_after_the_ttl_not_the_window() -> None:
    eng = FeatureEngine(_feats(TTL))
    plain = FeatureEngine(_feats(None))
    for e in (eng, plain):
        e.update(np.array(["a", "b"], dtype=object), np.array([0, 0]), {"x": np.ones(2)})
        e.update(np.array(["b"], dtype=object), np.array([TTL + 1]), {"x": np.ones(1)})
    assert eng.n_windows == 1  # "a" (idle for the ttl) is gone; "b" keeps its last event
    assert plain.n_windows == 2  # within the window "a" stays
    out = eng.update(np.array(["a"], dtype=object), np.array([TTL + 2]), {"x": np.full(1, 5.0)})
    assert out.values["n"].tolist() == [1.0] and out.values["s"].tolist() == [5.0]


def test_snapshot_restore_keeps_the_ttl() -> None:
    eng = FeatureEngine(_feats(TTL))
    eng.update(np.array(["a", "a"], dtype=object), np.array([0, 2_000]), {"x": np.ones(2)})
    again = FeatureEngine.restore(eng.features, eng.grace_ms, eng.snapshot())
    out = again.update(np.array(["a"], dtype=object), np.array([4_000]), {"x": np.ones(1)})
    assert out.values["n"].tolist() == [2.0]  # 0 is older than the ttl, 2_000 counts


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"window": "tumbling"}, "idle_ttl_ms 5 is only for window='sliding' or 'count'"),
        ({"window": "hopping", "step_ms": 1_000}, "is only for window='sliding' or 'count'"),
        ({"window": "sliding", "idle_ttl_ms": 0}, "idle_ttl_ms: got 0"),
    ],
)
def test_idle_ttl_is_checked(kw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        FeatureDef("f", None, "count", 10_000, **{"idle_ttl_ms": 5, **kw})
