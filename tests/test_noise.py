"""Tests for noise.py against textbook values, exhaustive enumeration and hand computation."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.metrics import noise, registry
from pytest_vlmbench.metrics.noise import (
    EXACT_MAX,
    bootstrap_ci,
    effect,
    fisher_exact,
    mann_whitney_u,
    statistic,
)
from pytest_vlmbench.metrics.stats import percentile

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
    for name in registry.STATISTICS:
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


# ------------------------------------------------------------------ large samples


def _rank_u(x: np.ndarray, y: np.ndarray) -> float:
    """U from average ranks (the textbook route), as a reference for the binary search."""
    combined = np.concatenate((x, y))
    order = np.argsort(combined, kind="stable")
    ranks = np.empty(len(combined))
    ranks[order] = np.arange(1, len(combined) + 1)
    for value in np.unique(combined):  # average the ranks of ties
        tied = combined == value
        ranks[tied] = ranks[tied].mean()
    return float(ranks[: len(x)].sum()) - len(x) * (len(x) + 1) / 2.0


@FAST
@given(data=st.data(), n1=st.integers(1, 60), n2=st.integers(1, 60))
def test_u_matches_average_ranks(data: st.DataObject, n1: int, n2: int) -> None:
    value = st.integers(0, 12).map(float)  # few distinct values: many ties
    x = np.array(data.draw(st.lists(value, min_size=n1, max_size=n1)))
    y = np.array(data.draw(st.lists(value, min_size=n2, max_size=n2)))
    assert mann_whitney_u(x, y, method="normal").u == _rank_u(x, y)


def test_mann_whitney_at_scale_is_exact_in_u() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.lognormal(0, 0.1, 30_000), rng.lognormal(0.002, 0.1, 25_000)
    result = mann_whitney_u(x, y)
    assert result.u == _rank_u(x, y)
    z = (abs(result.u - 30_000 * 25_000 / 2) - 0.5) / math.sqrt(30_000 * 25_000 * 55_001 / 12)
    assert result.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)


@pytest.mark.parametrize(("a", "n1", "c", "n2"), [
    (1480, 1500, 1450, 1500), (700, 1500, 760, 1400), (1500, 1500, 1490, 1500),
    (3, 1200, 0, 1000), (600, 1200, 500, 1000),
])
def test_fisher_in_log_space_matches_exact_integers(
    monkeypatch: pytest.MonkeyPatch, a: int, n1: int, c: int, n2: int
) -> None:
    exact = fisher_exact(a, n1, c, n2)  # n1 + n2 <= 3000: integer arithmetic...
    monkeypatch.setattr(noise, "FISHER_EXACT_MAX", 10)  # ... and now in log space
    assert fisher_exact(a, n1, c, n2) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_fisher_at_scale_is_fast_and_sane() -> None:
    assert fisher_exact(49_500, 50_000, 49_500, 50_000) == pytest.approx(1.0)
    assert fisher_exact(49_500, 50_000, 49_000, 50_000) < 1e-6


@pytest.mark.parametrize(("successes", "n1", "n2"), [(16, 16, 16), (80, 80, 16),
                                                     (95, 100, 100), (24_750, 25_000, 25_000)])
def test_fisher_detectable_drop_is_the_edge_of_significance(successes: int, n1: int,
                                                            n2: int) -> None:
    drop = noise.fisher_detectable_drop(successes, n1, n2, 0.01)
    assert drop is not None
    s2 = round((successes / n1 - drop) * n2)
    assert fisher_exact(successes, n1, s2, n2) < 0.01
    assert fisher_exact(successes, n1, s2 + 1, n2) >= 0.01


def test_fisher_detectable_drop_none_when_unreachable() -> None:
    assert noise.fisher_detectable_drop(3, 3, 3, 0.01) is None  # 3/3 vs 0/3: p = 0.1


@pytest.mark.parametrize("name", ["median", "p95", "p99", "mean"])
def test_large_bootstrap_matches_the_direct_one(monkeypatch: pytest.MonkeyPatch,
                                                name: registry.Statistic) -> None:
    """Drawing each resample's order statistics (or its mean) directly gives the same
    interval as resampling index arrays, within the bootstrap's own Monte Carlo error."""
    rng = np.random.default_rng(5)
    base, cur = rng.lognormal(0, 0.2, 3000), 1.05 * rng.lognormal(0, 0.2, 3000)
    fast = bootstrap_ci(base, cur, name, "ratio", resamples=4000)
    monkeypatch.setattr(noise, "BOOTSTRAP_DIRECT_MAX", 10**9)
    direct = bootstrap_ci(base, cur, name, "ratio", resamples=4000)
    assert fast is not None
    assert direct is not None
    width = direct[1] - direct[0]
    assert fast[0] == pytest.approx(direct[0], abs=0.1 * width)
    assert fast[1] == pytest.approx(direct[1], abs=0.1 * width)


def test_large_bootstrap_of_a_rate_is_binomial() -> None:
    base = np.array([1.0] * 9900 + [0.0] * 100)
    cur = np.array([1.0] * 9800 + [0.0] * 200)
    ci = bootstrap_ci(base, cur, "mean", "difference")
    assert ci is not None
    se = math.sqrt(0.99 * 0.01 / 10_000 + 0.98 * 0.02 / 10_000)
    assert ci[0] == pytest.approx(-0.01 - 1.96 * se, abs=0.25 * se)
    assert ci[1] == pytest.approx(-0.01 + 1.96 * se, abs=0.25 * se)


def test_statistic_of_large_arrays_is_stats_percentile() -> None:
    values = np.random.default_rng(9).lognormal(0, 1, 5001)
    for name in ("median", "p90", "p95", "p99"):
        assert statistic(values, name) == percentile(values.tolist(),
                                                     noise._QUANTILE[name])
    assert statistic(values, "mean") == pytest.approx(math.fsum(values) / 5001, rel=1e-14)


# ------------------------------------------------------------------ Student t, run level


@pytest.mark.parametrize(("probability", "df", "quantile"), [
    # tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2), to the digits printed there
    (0.975, 1, 12.706204736), (0.995, 1, 63.656741163), (0.975, 2, 4.302652730),
    (0.975, 3, 3.182446305), (0.975, 4, 2.776445105), (0.995, 4, 4.604094871),
    (0.995, 9, 3.249835541), (0.975, 10, 2.228138852), (0.975, 30, 2.042272456),
    (0.95, 7, 1.894578605),
])
def test_t_quantiles_against_tables(probability: float, df: int, quantile: float) -> None:
    assert noise.t_quantile(probability, df) == pytest.approx(quantile, rel=1e-9)
    assert noise.t_two_sided_p(quantile, df) == pytest.approx(2 * (1 - probability), rel=1e-7)
    assert noise.t_two_sided_p(-quantile, df) == noise.t_two_sided_p(quantile, df)


def test_t_tends_to_the_normal() -> None:
    assert noise.t_quantile(0.975, 2000) == pytest.approx(1.959963985, rel=1e-3)
    assert noise.t_two_sided_p(0.0, 5) == 1.0
    assert noise.t_two_sided_p(math.inf, 5) == 0.0
    with pytest.raises(ValueError, match="df >= 1"):
        noise.t_two_sided_p(1.0, 0)
    with pytest.raises(ValueError, match=r"probability in \(0.5, 1\)"):
        noise.t_quantile(0.4, 3)


def test_run_level_by_hand() -> None:
    baseline = [1.0, 1.1, 0.9, 1.05, 0.95]
    rl = noise.run_level(baseline, 1.5, alpha=0.01, confidence=0.95)
    logs = np.log(baseline)
    s = float(logs.std(ddof=1))
    se = s * math.sqrt(1 + 1 / 5)
    assert (rl.k, rl.df) == (5, 4)
    assert rl.center == pytest.approx(math.exp(logs.mean()))
    assert rl.log_sd == pytest.approx(s)
    assert rl.cv == pytest.approx(math.sqrt(math.expm1(s * s)))
    assert rl.ratio == pytest.approx(1.5 / rl.center)
    assert rl.t == pytest.approx(math.log(rl.ratio) / se)
    assert rl.p_value == pytest.approx(noise.t_two_sided_p(rl.t, 4))
    assert rl.half_width == pytest.approx(2.776445105 * se)
    assert rl.interval == pytest.approx((rl.ratio * math.exp(-2.776445105 * se),
                                         rl.ratio * math.exp(2.776445105 * se)))
    assert rl.detectable == pytest.approx(4.604094871 * se)
    assert rl.p_value < 0.01  # +50% over a 8% spread: beyond the drift


def test_run_level_is_scale_free_and_symmetric() -> None:
    a = noise.run_level([1.0, 1.2, 0.9], 1.3, alpha=0.01)
    b = noise.run_level([10.0, 12.0, 9.0], 13.0, alpha=0.01)
    assert (a.t, a.p_value, a.ratio) == pytest.approx((b.t, b.p_value, b.ratio))
    faster = noise.run_level([1.0, 1.2, 0.9], a.center ** 2 / 1.3, alpha=0.01)
    assert faster.t == pytest.approx(-a.t)
    assert faster.p_value == pytest.approx(a.p_value)


def test_run_level_degenerate_cases() -> None:
    same = noise.run_level([2.0, 2.0, 2.0], 2.0, alpha=0.01)
    assert (same.p_value, same.t, same.interval) == (1.0, 0.0, (1.0, 1.0))
    moved = noise.run_level([2.0, 2.0], 2.2, alpha=0.01)
    assert moved.p_value == 0.0
    assert moved.t == math.inf
    with pytest.raises(ValueError, match="at least 2 baseline runs"):
        noise.run_level([1.0], 1.0, alpha=0.01)
    with pytest.raises(ValueError, match="positive"):
        noise.run_level([1.0, 0.0], 1.0, alpha=0.01)
    with pytest.raises(ValueError, match="positive"):
        noise.run_level([1.0, 2.0], 0.0, alpha=0.01)
