"""The vendored exact KS distribution (streams/detectors/_scipy_ks.py) against SciPy's public
``ks_2samp(method="exact")``, against a brute-force count, and the critical value search."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from driftline.streams.detectors import _ksexact, _scipy_ks
from driftline.streams.detectors._ksexact import MAX_AUTO_N, critical_h, ks_pvalue, ks_pvalues
from driftline.streams.detectors._scipy_ks import (
    _prob_outside_square_loop,
    _sweep_diagonals,
    _sweep_rings,
    _sweep_rows,
    exact_two_sided_pvalue,
    exact_two_sided_pvalues,
    prob_outside_band,
    prob_outside_band_many,
    prob_outside_square,
)

ROOT = Path(__file__).resolve().parents[3]


def _h(a: np.ndarray, b: np.ndarray, statistic: float) -> int:
    return round(statistic * math.lcm(a.size, b.size))


def _cases(seed: int, count: int, max_n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Samples of random sizes, some with ties, some shifted."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n1, n2 = (int(x) for x in rng.integers(1, max_n + 1, size=2))
        shift = float(rng.choice([0.0, 0.2, 0.5, 1.5]))
        a, b = rng.normal(0, 1, n1), rng.normal(shift, 1, n2)
        if rng.random() < 0.3:  # ties within and across the samples
            a, b = np.round(a, 1), np.round(b, 1)
        out.append((a, b))
    return out


@pytest.mark.parametrize(("seed", "count", "max_n"), [(1, 400, 30), (2, 300, 250), (3, 40, 1500)])
def test_pvalues_equal_scipy_exact(seed: int, count: int, max_n: int) -> None:
    for a, b in _cases(seed, count, max_n):
        exp = ks_2samp(a, b, method="exact")
        h = _h(a, b, float(exp.statistic))
        got = exact_two_sided_pvalue(a.size, b.size, h)
        assert got is not None
        assert math.isclose(got, float(exp.pvalue), rel_tol=1e-12, abs_tol=0.0), (a.size, b.size, h)
        # the detectors' entry point (method "auto": exact up to MAX_AUTO_N)
        assert ks_pvalue(a.size, b.size, h) == got


def test_pvalues_equal_scipy_in_the_far_tail_and_at_the_ends() -> None:
    """Fully separated samples (D = 1), identical ones (D = 0), equal and coprime sizes."""
    for n1, n2 in [(1, 1), (1, 7), (5, 5), (40, 41), (300, 200), (64, 48)]:
        lo, hi = np.arange(n1, dtype=float), np.arange(n2, dtype=float) + n1
        for a, b in [(lo, hi), (hi, lo), (lo, lo.copy())]:
            exp = ks_2samp(a, b, method="exact")
            got = exact_two_sided_pvalue(a.size, b.size, _h(a, b, float(exp.statistic)))
            assert got is not None
            assert math.isclose(got, float(exp.pvalue), rel_tol=1e-12), (a.size, b.size)


def _brute_force_pvalue(n1: int, n2: int, h: int) -> float:
    """P(D >= h / lcm) by listing every way to interleave the two samples."""
    lcm = math.lcm(n1, n2)
    hits = total = 0
    for first in itertools.combinations(range(n1 + n2), n1):
        chosen = set(first)
        i = j = big = 0
        for k in range(n1 + n2):
            if k in chosen:
                i += 1
            else:
                j += 1
            big = max(big, abs(i * (lcm // n1) - j * (lcm // n2)))
        hits += big >= h
        total += 1
    return hits / total


@pytest.mark.parametrize(("n1", "n2"), [(1, 1), (2, 3), (3, 3), (4, 6), (5, 3), (7, 2), (6, 6)])
def test_pvalues_equal_a_brute_force_count(n1: int, n2: int) -> None:
    lcm = math.lcm(n1, n2)
    for h in range(lcm + 1):
        got = exact_two_sided_pvalue(n1, n2, h)
        assert got is not None
        assert math.isclose(got, _brute_force_pvalue(n1, n2, h), rel_tol=1e-12), (n1, n2, h)


def test_the_two_sweeps_give_the_same_bits() -> None:
    """prob_outside_band picks the row or the anti-diagonal sweep by cost only."""
    rng = np.random.default_rng(11)
    for _ in range(600):
        n1, n2 = (int(x) for x in rng.integers(1, 120, size=2))
        if n1 == n2:
            continue
        m, n, g = max(n1, n2), min(n1, n2), math.gcd(n1, n2)
        h = int(rng.integers(1, math.lcm(n1, n2) + 1))
        rows, diags = _sweep_rows(m, n, g, h), _sweep_diagonals(m, n, g, h)
        assert rows == diags == prob_outside_band(n1, n2, g, h), (n1, n2, h)
        assert prob_outside_band(n2, n1, g, h) == rows  # symmetric in the sizes


def test_every_sweep_on_every_small_band() -> None:
    """All h (beyond lcm too) for small sizes: rows, diagonals and the batch agree bit for bit,
    with the bands that break into pieces (no path inside them: p = 1) among them."""
    for m in range(2, 16):
        for n in range(1, m):
            g = math.gcd(m, n)
            hs = np.arange(1, m * n // g + 3)
            rows = [_sweep_rows(m, n, g, int(h)) for h in hs]
            assert rows == [_sweep_diagonals(m, n, g, int(h)) for h in hs], (m, n)
            size = np.full(hs.size, 1)
            assert _sweep_rings(size * m, size * n, size * g, hs).tolist() == rows, (m, n)


def _mixed_batch(seed: int, count: int, max_n: int) -> tuple[np.ndarray, ...]:
    """Sizes of all kinds (equal, coprime, far apart), h from 0 past lcm, mostly mid-range."""
    rng = np.random.default_rng(seed)
    n1 = rng.integers(1, max_n + 1, count)
    n2 = np.where(rng.random(count) < 0.15, n1, rng.integers(1, max_n + 1, count))
    lcm = np.lcm(n1, n2)
    h = np.round(lcm * rng.uniform(0.0, 0.4, count) ** 2).astype(np.int64)
    h[rng.random(count) < 0.1] = 0
    wild = rng.random(count) < 0.15
    h[wild] = rng.integers(0, lcm[wild] + 2)
    return n1, n2, h


@pytest.mark.parametrize(
    ("seed", "count", "max_n"), [(21, 300, 40), (22, 200, 700), (23, 40, 3000)]
)
def test_batch_equals_one_by_one(seed: int, count: int, max_n: int) -> None:
    n1, n2, h = _mixed_batch(seed, count, max_n)
    got = exact_two_sided_pvalues(n1, n2, h)
    single = [
        exact_two_sided_pvalue(int(a), int(b), int(c)) for a, b, c in zip(n1, n2, h, strict=True)
    ]
    assert [None if math.isnan(p) else p for p in got.tolist()] == single
    band = (n1 != n2) & (h > 0)
    exp = [prob_outside_band(int(a), int(b), math.gcd(int(a), int(b)), int(c))
           for a, b, c in zip(n1[band], n2[band], h[band], strict=True)]  # fmt: skip
    assert prob_outside_band_many(n1[band], n2[band], h[band]).tolist() == exp


def test_batch_equals_scipy_exact_bit_for_bit() -> None:
    """ks_2samp(method="exact") of real samples, all p-values of the batch at once."""
    cases = _cases(24, 150, 400) + _cases(25, 12, 2500)
    hs, exp = [], []
    for a, b in cases:
        res = ks_2samp(a, b, method="exact")
        hs.append(_h(a, b, float(res.statistic)))
        exp.append(float(res.pvalue))
    n1 = np.array([a.size for a, _ in cases])
    n2 = np.array([b.size for _, b in cases])
    assert exact_two_sided_pvalues(n1, n2, np.array(hs)).tolist() == exp


def test_batch_of_many_sizes_and_few_bands() -> None:
    """Bands of very different lengths and widths finish at different diagonals; below
    _MIN_BATCH bands, and for bands narrower than a diagonal's step, one by one."""
    n1 = np.array([3000, 17, 1000, 999, 64, 500, 2, 4999])
    n2 = np.array([1, 3001, 1500, 1000, 48, 20, 3, 3000])
    lcm = np.lcm(n1, n2)
    for frac in (0.02, 0.1, 0.3, 0.7, 1.0):
        h = np.maximum(1, np.round(lcm * frac).astype(np.int64))
        exp = [prob_outside_band(int(a), int(b), math.gcd(int(a), int(b)), int(c))
               for a, b, c in zip(n1, n2, h, strict=True)]  # fmt: skip
        assert prob_outside_band_many(n1, n2, h).tolist() == exp, frac
        assert prob_outside_band_many(n1[:3], n2[:3], h[:3]).tolist() == exp[:3]
    assert exact_two_sided_pvalues(n1[:0], n2[:0], n1[:0]).size == 0
    with pytest.raises(ValueError, match="same length"):
        exact_two_sided_pvalues(n1, n2, n1[:2])


def test_ks_pvalues_equal_ks_pvalue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch, the memo and the asymptotic branch give ks_pvalue's values."""
    n1, n2, h = _mixed_batch(26, 120, 600)
    n1[:5], n2[:5] = MAX_AUTO_N + 7, 300  # asymptotic
    n1, n2, h = (
        np.concatenate([n1, n1[:30]]),
        np.concatenate([n2, n2[:30]]),
        np.concatenate([h, h[:30]]),
    )
    monkeypatch.setattr(_ksexact, "_cache", type(_ksexact._cache)())
    got = ks_pvalues(n1, n2, h).tolist()  # all computed in one batch (30 repeats)
    assert len(_ksexact._cache) == len(set(zip(n1.tolist(), n2.tolist(), h.tolist(), strict=True)))
    monkeypatch.setattr(_ksexact, "_cache", type(_ksexact._cache)())
    assert got == [ks_pvalue(int(a), int(b), int(c)) for a, b, c in zip(n1, n2, h, strict=True)]
    assert ks_pvalues(n1, n2, h).tolist() == got  # now from the memo
    monkeypatch.setattr(_ksexact, "_CACHE_SIZE", 10)
    ks_pvalues(n1[:40], n2[:40], h[:40] + 1)
    assert len(_ksexact._cache) == 10


def test_equal_sizes_numpy_terms_equal_the_loop() -> None:
    for n in (1, 7, 50, 499, 1000, 3001):
        for h in sorted({1, 2, 3, n // 40 + 1, n // 15 + 1, n // 14 + 1, n // 3 + 1, n}):
            h = min(h, n)
            assert prob_outside_square(n, h) == _prob_outside_square_loop(n, h), (n, h)
    assert (1000 // 40 + 1) * _scipy_ks._SQUARE_TERMS < 1000  # that case took the numpy branch


def test_equal_sizes_closed_form() -> None:
    # P(D_{n,n} >= 1) = 2 / binom(2n, n): one sample wholly below the other
    for n in (1, 2, 5, 30):
        assert math.isclose(prob_outside_square(n, n), 2 / math.comb(2 * n, n), rel_tol=1e-12)
    assert exact_two_sided_pvalue(9, 9, 0) == exact_two_sided_pvalue(9, 12, 0) == 1.0


def _bisect_critical_h(n1: int, n2: int, alpha: float) -> int:
    lcm = math.lcm(n1, n2)
    if ks_pvalue(n1, n2, lcm) >= alpha:
        return lcm + 1
    lo, hi = 0, lcm
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ks_pvalue(n1, n2, mid) < alpha:
            hi = mid
        else:
            lo = mid
    return hi


def test_critical_h_equals_a_plain_bisection() -> None:
    rng = np.random.default_rng(12)
    cases = [(1, 1, 0.5), (2, 3, 0.2), (3, 3, 0.1), (3, 3, 0.09), (10, 10, 1e-5), (40, 7, 0.05),
             (500, 499, 1e-4), (500, 333, 1e-6), (12_000, 300, 1e-3)]  # fmt: skip
    cases += [
        (int(rng.integers(1, 300)), int(rng.integers(1, 300)), float(10 ** rng.uniform(-9, -0.5)))
        for _ in range(60)
    ]
    for n1, n2, alpha in cases:
        h = critical_h(n1, n2, alpha)
        assert h == _bisect_critical_h(n1, n2, alpha), (n1, n2, alpha)
        if h <= math.lcm(n1, n2):
            assert ks_pvalue(n1, n2, h) < alpha <= ks_pvalue(n1, n2, h - 1)
    assert max(12_000, 300) > MAX_AUTO_N  # the asymptotic branch was among the cases


def _private_scipy_uses(tree: ast.AST) -> list[str]:
    """Imports of private SciPy modules or names, and attribute chains through them."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scipy"):
            parts = (node.module or "").split(".")
            names = [a.name for a in node.names]
            if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                found.append(f"from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("scipy") and any(
                    p.startswith("_") for p in alias.name.split(".")
                ):
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            chain = node.value
            while isinstance(chain, ast.Attribute):
                chain = chain.value
            if isinstance(chain, ast.Name) and chain.id in {"scipy", "stats", "special"}:
                found.append(ast.unparse(node))
    return found


def test_no_private_scipy_import_is_left() -> None:
    sources = [p for d in ("streams", "agents", "driftline") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 20
    uses = {
        str(p.relative_to(ROOT)): u
        for p in sources
        if (u := _private_scipy_uses(ast.parse(p.read_text(), filename=str(p))))
    }
    assert uses == {}
    sample = "from scipy.stats._stats_py import _attempt_exact_2kssamp\nscipy.stats._x.y\n"
    assert len(_private_scipy_uses(ast.parse(sample))) == 2  # the check sees them
