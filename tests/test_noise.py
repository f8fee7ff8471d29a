"""Tests for noise.py against textbook values, exhaustive enumeration and hand computation."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench import noise
from pytest_vlmbench.noise import (
    EXACT_MAX,
    bootstrap_ci,
    effect,
    fisher_exact,
    mann_whitney_u,
    statistic,
)
from pytest_vlmbench.stats import percentile

FAST = settings(max_examples=60, deadline=None)

# scipy.stats.mannwhitneyu's documented example (Conover, Practical Nonparametric
# Statistics): ages of males and females; U1 = 17, exact p = 0.1111, asymptotic with
# continuity correction 0.11134688653314041.
MALES = [19, 22, 16, 29, 24]
FEMALES = [20, 11, 17, 12]


def test_mann_whitney_textbook_example() -> None:
    exact = mann_whitney_u(MALES, FEMALES)
    assert (exact.u, exact.method) == (17.0, "exact")
    assert exact.p_value == pytest.approx(1 / 9, rel=1e-12)  # 14 of 126 orderings as extreme
    normal = mann_whitney_u(MALES, FEMALES, method="normal")
    assert normal.p_value == pytest.approx(0.11134688653314041, rel=1e-9)


def test_mann_whitney_complete_separation() -> None:
    # Exactly: 2 of the C(10, 5) = 252 orderings are as extreme as complete separation.
    assert mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]).p_value == pytest.approx(2 / 252)
    # Normal: mu = 12.5, sigma^2 = 5*5*11/12, z = (12.5 - 0.5) / sigma.
    z = 12.0 / math.sqrt(25 * 11 / 12)
    normal = mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], method="normal")
    assert normal.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert normal.p_value == pytest.approx(0.012185780355344818, rel=1e-9)


def test_mann_whitney_ties_use_the_tie_corrected_normal_approximation() -> None:
    # x = 1, 1, 2 and y = 2, 3, 3: average ranks 1.5, 1.5, 3.5 | 3.5, 5.5, 5.5;
    # U1 = 6.5 - 3*4/2 = 0.5; ties: three pairs, sum(t^3 - t) = 18;
    # sigma^2 = 3*3/12 * (7 - 18 / (6*5)) = 4.8; z = (|0.5 - 4.5| - 0.5) / sqrt(4.8).
    result = mann_whitney_u([1, 1, 2], [2, 3, 3])
    assert (result.u, result.method) == (0.5, "normal")
    z = 3.5 / math.sqrt(4.8)
    assert result.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    with pytest.raises(ValueError, match="no ties"):
        mann_whitney_u([1, 1, 2], [2, 3, 3], method="exact")


def test_mann_whitney_all_equal_is_no_evidence() -> None:
    assert mann_whitney_u([1.0] * 6, [1.0] * 7).p_value == 1.0


def test_mann_whitney_switches_to_normal_above_exact_max() -> None:
    small = mann_whitney_u(list(range(EXACT_MAX)), [v + 0.5 for v in range(EXACT_MAX)])
    large = mann_whitney_u(list(range(EXACT_MAX + 1)), [v + 0.5 for v in range(EXACT_MAX + 1)])
    assert (small.method, large.method) == ("exact", "normal")
    with pytest.raises(ValueError, match="both sides"):
        mann_whitney_u([], [1.0])


def _enumerated_p(x: list[float], y: list[float]) -> Fraction:
    """Two-sided p by listing every assignment of the pooled values to the two groups."""
    pooled = [*x, *y]

    def u_of(first: tuple[int, ...]) -> int:
        chosen = set(first)
        a = [pooled[i] for i in chosen]
        b = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        return sum(1 for p in a for q in b if p > q)

    observed = u_of(tuple(range(len(x))))
    us = [u_of(c) for c in itertools.combinations(range(len(pooled)), len(x))]
    low = Fraction(sum(1 for u in us if u <= observed), len(us))
    high = Fraction(sum(1 for u in us if u >= observed), len(us))
    return min(Fraction(1), 2 * min(low, high))


@FAST
@given(data=st.data(), n1=st.integers(1, 5), n2=st.integers(1, 5))
def test_exact_p_matches_enumeration(data: st.DataObject, n1: int, n2: int) -> None:
    values = data.draw(st.lists(st.integers(0, 1000), min_size=n1 + n2, max_size=n1 + n2,
                                unique=True))
    x, y = [float(v) for v in values[:n1]], [float(v) for v in values[n1:]]
    result = mann_whitney_u(x, y)
    assert result.method == "exact"
    assert result.p_value == pytest.approx(float(_enumerated_p(x, y)), rel=1e-12)


@pytest.mark.parametrize(("n1", "n2"), [(1, 1), (3, 4), (8, 8), (20, 20)])
def test_u_distribution_counts_every_ordering_and_is_symmetric(n1: int, n2: int) -> None:
    counts = noise._u_counts(n1, n2)
    assert sum(counts) == math.comb(n1 + n2, n1)
    assert counts == counts[::-1]
    assert counts == noise._u_counts(n2, n1)


def test_fisher_textbook_values() -> None:
    # Fisher's lady tasting tea: 3 of 4 cups right each way; two-sided p = 34/70.
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70, rel=1e-12)
    # Wikipedia's example (men/women studying, [[1, 9], [11, 3]]): p = 0.002759.
    assert fisher_exact(1, 10, 11, 14) == pytest.approx(0.0027594561852200836, rel=1e-9)
    # 16/16 against 8/16: the two extreme tables, each C(24,16) C(8,0) / C(32,16).
    assert fisher_exact(16, 16, 8, 16) == pytest.approx(
        2 * math.comb(24, 16) / math.comb(32, 16), rel=1e-12)
    assert fisher_exact(5, 10, 5, 10) == 1.0


@FAST
@given(data=st.data(), n1=st.integers(1, 12), n2=st.integers(1, 12))
def test_fisher_matches_hypergeometric_enumeration(data: st.DataObject, n1: int,
                                                   n2: int) -> None:
    a = data.draw(st.integers(0, n1))
    c = data.draw(st.integers(0, n2))
    k, n = a + c, n1 + n2
    probs = {x: Fraction(math.comb(k, x) * math.comb(n - k, n1 - x), math.comb(n, n1))
             for x in range(max(0, n1 - (n - k)), min(k, n1) + 1)}
    expected = sum(p for p in probs.values() if p <= probs[a])
    assert fisher_exact(a, n1, c, n2) == pytest.approx(float(expected), rel=1e-12)
    assert fisher_exact(a, n1, c, n2) == pytest.approx(fisher_exact(c, n2, a, n1), rel=1e-12)


def test_fisher_rejects_impossible_tables() -> None:
    with pytest.raises(ValueError, match="Fisher"):
        fisher_exact(5, 4, 1, 4)
    with pytest.raises(ValueError, match="Fisher"):
        fisher_exact(0, 0, 1, 4)


@FAST
@given(values=st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=30))
def test_vectorised_statistics_match_stats_percentile(values: list[float]) -> None:
    matrix = np.array([values, values[::-1]])
    for name in noise.STATISTICS:
        rows = noise._statistic_rows(matrix, name)
        assert rows[0] == pytest.approx(statistic(values, name), rel=1e-9, abs=1e-9)
        assert rows[1] == pytest.approx(rows[0], rel=1e-9, abs=1e-9)


def test_statistic_names() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert statistic(values, "median") == 3.0
    assert statistic(values, "mean") == 4.0
    assert statistic(values, "p90") == percentile(values, 90)
    assert effect([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], "median", "ratio") == 2.0
    assert effect([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], "mean", "difference") == 2.0
    assert effect([0.0, 0.0], [1.0, 1.0], "median", "ratio") is None


def test_bootstrap_is_deterministic_and_brackets_a_clear_shift() -> None:
    rng = np.random.default_rng(7)
    base = list(1.0 + rng.uniform(-0.05, 0.05, 20))
    cur = list(1.3 * (1.0 + rng.uniform(-0.05, 0.05, 20)))
    ci = bootstrap_ci(base, cur, "median", "ratio")
    assert ci == bootstrap_ci(base, cur, "median", "ratio")
    assert ci != bootstrap_ci(base, cur, "median", "ratio", seed=1)
    assert ci is not None
    point = effect(base, cur, "median", "ratio")
    assert point is not None
    assert ci[0] < point < ci[1]
    assert ci[0] > 1.2
    assert ci[1] < 1.4


def test_bootstrap_width_grows_with_confidence() -> None:
    rng = np.random.default_rng(8)
    base, cur = list(rng.normal(10, 1, 30)), list(rng.normal(10, 1, 30))
    narrow = bootstrap_ci(base, cur, "mean", "difference", confidence=0.8)
    wide = bootstrap_ci(base, cur, "mean", "difference", confidence=0.99)
    assert narrow is not None
    assert wide is not None
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_degenerate_cases() -> None:
    assert bootstrap_ci([2.0] * 5, [2.0] * 5, "p95", "ratio") == (1.0, 1.0)
    diff = bootstrap_ci([1.0] * 16, [1.0, 0.0] * 8, "mean", "difference")
    assert diff is not None
    assert diff[1] < 0 < 1 + diff[0]
    assert bootstrap_ci([0.0] * 5, [1.0] * 5, "median", "ratio") is None
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([1.0], [1.0], "median", "ratio", resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], [1.0], "median", "ratio", confidence=1.0)
    with pytest.raises(ValueError, match="both sides"):
        bootstrap_ci([], [1.0], "median", "ratio")
