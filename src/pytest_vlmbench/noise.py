"""Is a difference between two runs real or noise? The statistics behind `vlmbench compare`.

Pure functions, no I/O, deterministic: the bootstrap draws from a seeded numpy Generator,
so the same inputs give the same interval on every machine and in every CI retry.

- Mann-Whitney U (two-sided): distribution-free, so latencies with a long tail or a
  bimodal warm/cold mix need no normality assumption. Exact null distribution for small
  samples without ties (both sizes <= EXACT_MAX), where the normal approximation is poor;
  otherwise the normal approximation with tie correction and continuity correction (as
  scipy.stats.mannwhitneyu with method="asymptotic", use_continuity=True).
- Fisher's exact test for two proportions (parse rate, success rate): exact for any n,
  two-sided by summing every table no more probable than the observed one (integer
  arithmetic, so "no more probable" needs no floating-point tolerance).
- Percentile bootstrap confidence interval of an effect: ratio current/baseline of a
  statistic (median, percentiles as in stats.percentile, mean) or their difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from pytest_vlmbench.stats import mean, percentile

EXACT_MAX = 20
"""Largest sample size (each side) for the exact Mann-Whitney distribution."""

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95

Statistic = Literal["median", "mean", "p90", "p95", "p99"]
Effect = Literal["ratio", "difference"]
STATISTICS: tuple[Statistic, ...] = ("median", "mean", "p90", "p95", "p99")
_QUANTILE: dict[str, float] = {"median": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


@dataclass(frozen=True)
class MannWhitney:
    """U of the first sample (pairs x > y, ties counting one half) and the two-sided p."""

    u: float
    p_value: float
    method: Literal["exact", "normal"]


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, tied values sharing the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


@cache
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many of the C(n1+n2, n1) orderings give U = 0, 1, ..., n1*n2 (no ties).

    Recurrence on the largest value: it belongs to the first sample (adding n2 to U) or
    to the second: c(n1, n2; u) = c(n1 - 1, n2; u - n2) + c(n1, n2 - 1; u).
    """
    if n1 == 0 or n2 == 0:
        return (1,)
    with_first = _u_counts(n1 - 1, n2)
    without = _u_counts(n1, n2 - 1)
    counts = [0] * (n1 * n2 + 1)
    for u, c in enumerate(with_first):
        counts[u + n2] += c
    for u, c in enumerate(without):
        counts[u] += c
    return tuple(counts)


def _exact_p(u: float, n1: int, n2: int) -> float:
    counts = _u_counts(n1, n2)
    total = math.comb(n1 + n2, n1)
    k = round(u)  # integral without ties
    below = sum(counts[: k + 1])
    above = sum(counts[k:])
    return min(1.0, 2 * min(below, above) / total)


def mann_whitney_u(x: Sequence[float], y: Sequence[float], *,
                   method: Literal["auto", "exact", "normal"] = "auto") -> MannWhitney:
    """Two-sided Mann-Whitney U test of x against y.

    "auto" is exact when both samples have at most EXACT_MAX values and no value is tied
    (the exact distribution assumes distinct values), the normal approximation otherwise.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs values on both sides")
    combined = [*x, *y]
    ranks = _ranks(combined)
    u = math.fsum(ranks[:n1]) - n1 * (n1 + 1) / 2.0
    tied = len(set(combined)) < len(combined)
    if method == "exact" and tied:
        raise ValueError("the exact Mann-Whitney distribution assumes no ties")
    if method == "exact" or (method == "auto" and not tied and max(n1, n2) <= EXACT_MAX):
        return MannWhitney(u, _exact_p(u, n1, n2), "exact")
    n = n1 + n2
    ties = _tie_term(combined)
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:  # every value equal: no evidence of any difference
        return MannWhitney(u, 1.0, "normal")
    z = (abs(u - n1 * n2 / 2.0) - 0.5) / math.sqrt(variance)
    return MannWhitney(u, min(1.0, math.erfc(z / math.sqrt(2.0))), "normal")


def _tie_term(values: Sequence[float]) -> float:
    """sum(t^3 - t) over groups of t tied values."""
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return float(sum(t**3 - t for t in counts.values()))


def fisher_exact(successes1: int, n1: int, successes2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test that two proportions are equal.

    Conditioning on the total successes, the first group's count is hypergeometric; the
    p-value sums the probabilities of every count no more probable than the observed
    one. The probabilities share the denominator C(n1+n2, n1), so numerators compare as
    exact integers.
    """
    if not (0 <= successes1 <= n1 and 0 <= successes2 <= n2) or n1 == 0 or n2 == 0:
        raise ValueError(
            f"Fisher's exact test needs 0 <= successes <= n > 0 on both sides, got "
            f"{successes1}/{n1} and {successes2}/{n2}"
        )
    k = successes1 + successes2
    failures = n1 + n2 - k

    def weight(a: int) -> int:
        return math.comb(k, a) * math.comb(failures, n1 - a)

    observed = weight(successes1)
    lo, hi = max(0, n1 - failures), min(k, n1)
    extreme = sum(w for w in (weight(a) for a in range(lo, hi + 1)) if w <= observed)
    return min(1.0, extreme / math.comb(n1 + n2, n1))


def statistic(values: Sequence[float], name: Statistic) -> float:
    """The named statistic of values, exactly as stats.py computes it for the summary."""
    if name == "mean":
        return mean(values)
    return percentile(values, _QUANTILE[name])


def _statistic_rows(matrix: NDArray[np.float64], name: Statistic) -> NDArray[np.float64]:
    """The statistic of each row; numpy's "linear" method is stats.percentile's definition."""
    if name == "mean":
        return np.asarray(matrix.mean(axis=1), dtype=np.float64)
    return np.asarray(np.percentile(matrix, _QUANTILE[name], axis=1, method="linear"),
                      dtype=np.float64)


def effect(baseline: Sequence[float], current: Sequence[float], name: Statistic,
           kind: Effect) -> float | None:
    """current/baseline (None when the baseline statistic is not positive) or current-baseline."""
    b, c = statistic(baseline, name), statistic(current, name)
    if kind == "difference":
        return c - b
    return c / b if b > 0 else None


def bootstrap_ci(
    baseline: Sequence[float], current: Sequence[float], name: Statistic, kind: Effect, *,
    resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the effect, each side resampled independently.

    None when no resample gives a defined effect (a ratio over a zero baseline).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if not baseline or not current:
        raise ValueError("a bootstrap needs values on both sides")
    rng = np.random.default_rng(seed)
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    sb = _statistic_rows(b[rng.integers(0, len(b), size=(resamples, len(b)))], name)
    sc = _statistic_rows(c[rng.integers(0, len(c), size=(resamples, len(c)))], name)
    if kind == "difference":
        effects = sc - sb
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            effects = np.where(sb > 0, sc / np.where(sb > 0, sb, 1.0), np.nan)
    finite = [float(e) for e in effects if math.isfinite(e)]
    if not finite:
        return None
    tail = 100.0 * (1.0 - confidence) / 2.0
    return percentile(finite, tail), percentile(finite, 100.0 - tail)
