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

from driftline.streams.detectors._ksexact import MAX_AUTO_N, critical_h, ks_pvalue
from driftline.streams.detectors._scipy_ks import (
    _sweep_columns,
    _sweep_diagonals,
    exact_two_sided_pvalue,
    prob_outside_band,
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
    """prob_outside_band picks the column or the anti-diagonal sweep by cost only."""
    rng = np.random.default_rng(11)
    for _ in range(600):
        n1, n2 = (int(x) for x in rng.integers(1, 120, size=2))
        if n1 == n2:
            continue
        m, n, g = max(n1, n2), min(n1, n2), math.gcd(n1, n2)
        h = int(rng.integers(1, math.lcm(n1, n2) + 1))
        cols, diags = _sweep_columns(m, n, g, h), _sweep_diagonals(m, n, g, h)
        assert cols == diags == prob_outside_band(n1, n2, g, h), (n1, n2, h)
        assert prob_outside_band(n2, n1, g, h) == cols  # symmetric in the sizes


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
