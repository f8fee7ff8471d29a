"""Is a difference between two runs real or noise? The statistics behind `vlmbench compare`.

Pure functions, no I/O, deterministic: the bootstrap draws from a seeded numpy Generator,
so the same inputs give the same interval on every machine and in every CI retry. Every
function takes lists or numpy arrays and stays fast at 100,000 values a side.

- Mann-Whitney U (two-sided): distribution-free, so latencies with a long tail or a
  bimodal warm/cold mix need no normality assumption. Exact null distribution for small
  samples without ties (both sizes <= EXACT_MAX), where the normal approximation is poor;
  otherwise the normal approximation with tie correction and continuity correction (as
  scipy.stats.mannwhitneyu with method="asymptotic", use_continuity=True). U comes
  from binary searches in numpy sorts, exact (a sum of half-integers) at any size.
- Fisher's exact test for two proportions (parse rate, success rate): two-sided, summing
  every table no more probable than the observed one. Up to FISHER_EXACT_MAX requests in
  all in integer arithmetic ("no more probable" needs no tolerance); above, in log space
  with scipy's relative tolerance of 1e-7, since exact binomials of 50,000 requests are
  numbers of 15,000 digits.
- Percentile bootstrap confidence interval of an effect: ratio current/baseline of a
  statistic (median, percentiles as in stats.percentile, mean) or their difference. Up to
  BOOTSTRAP_DIRECT_MAX draws a side it resamples index arrays; above, it draws each
  resample's statistic directly (see _bootstrap_statistics), so memory and time do not
  grow with the number of requests.
- The run-level test (run_level): a current run's statistic against the statistics of k
  baseline runs, on a log scale, with a Student t prediction interval for one new run.
  This is what judges timing metrics when the baseline has several runs: between runs
  the machine drifts more than requests vary within a run (docs/compare.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from pytest_vlmbench.metrics.registry import Statistic
from pytest_vlmbench.metrics.stats import percentile

EXACT_MAX = 20
"""Largest sample size (each side) for the exact Mann-Whitney distribution."""
FISHER_EXACT_MAX = 2000
"""Largest total number of requests for Fisher's test in exact integer arithmetic."""
FISHER_RTOL = 1e-7
"""Relative tolerance of "no more probable than the observed table" in log space (scipy's)."""
LARGE = 1000
"""Above this many values, sums are numpy's (pairwise, not exactly rounded) and callers
may hand over sorted values (every statistic here but the small-sample bootstrap's
draws ignores their order)."""
BOOTSTRAP_DIRECT_MAX = 200_000
"""Most index draws (resamples x values) a side for the direct bootstrap; above, the
statistic of each resample is drawn without materialising the resample."""

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95

Effect = Literal["ratio", "difference"]
_QUANTILE: dict[str, float] = {"median": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}

Values = Sequence[float] | NDArray[np.float64]


def _array(values: Values) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class MannWhitney:
    """U of the first sample (pairs x > y, ties counting one half) and the two-sided p."""

    u: float
    p_value: float
    method: Literal["exact", "normal"]


def _u_and_ties(x: NDArray[np.float64],
                y: NDArray[np.float64]) -> tuple[float, NDArray[np.int64]]:
    """U of x (pairs x > y, ties counting one half) and the sizes of the groups of tied
    values in x and y together. From sorted copies: U = sum over x of #(y < x) +
    #(y == x) / 2 by binary search, an integer or a half-integer, so exact in float64."""
    xs, ys = np.sort(x, kind="stable"), np.sort(y, kind="stable")
    below = np.searchsorted(ys, xs, side="left")
    equal = np.searchsorted(ys, xs, side="right") - below
    u = float(below.sum()) + 0.5 * float(equal.sum())
    combined = np.sort(np.concatenate((xs, ys)), kind="stable")
    starts = np.flatnonzero(np.concatenate(([True], combined[1:] != combined[:-1])))
    return u, np.diff(np.append(starts, len(combined)))


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


def mann_whitney_u(x: Values, y: Values, *,
                   method: Literal["auto", "exact", "normal"] = "auto") -> MannWhitney:
    """Two-sided Mann-Whitney U test of x against y.

    "auto" is exact when both samples have at most EXACT_MAX values and no value is tied
    (the exact distribution assumes distinct values), the normal approximation otherwise.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs values on both sides")
    u, ties = _u_and_ties(_array(x), _array(y))
    tied = len(ties) < n1 + n2
    if method == "exact" and tied:
        raise ValueError("the exact Mann-Whitney distribution assumes no ties")
    if method == "exact" or (method == "auto" and not tied and max(n1, n2) <= EXACT_MAX):
        return MannWhitney(u, _exact_p(u, n1, n2), "exact")
    n = n1 + n2
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties))  # sum(t^3 - t)
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:  # every value equal: no evidence of any difference
        return MannWhitney(u, 1.0, "normal")
    z = (abs(u - n1 * n2 / 2.0) - 0.5) / math.sqrt(variance)
    return MannWhitney(u, min(1.0, math.erfc(z / math.sqrt(2.0))), "normal")


def fisher_exact(successes1: int, n1: int, successes2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test that two proportions are equal.

    Conditioning on the total successes, the first group's count is hypergeometric; the
    p-value sums the probabilities of every count no more probable than the observed
    one. The probabilities share the denominator C(n1+n2, n1), so numerators compare as
    exact integers (up to FISHER_EXACT_MAX requests; in log space above).
    """
    if not (0 <= successes1 <= n1 and 0 <= successes2 <= n2) or n1 == 0 or n2 == 0:
        raise ValueError(
            f"Fisher's exact test needs 0 <= successes <= n > 0 on both sides, got "
            f"{successes1}/{n1} and {successes2}/{n2}"
        )
    k = successes1 + successes2
    failures = n1 + n2 - k
    lo, hi = max(0, n1 - failures), min(k, n1)
    if n1 + n2 > FISHER_EXACT_MAX:
        return _fisher_log(successes1, n1, k, failures, lo, hi)

    def weight(a: int) -> int:
        return math.comb(k, a) * math.comb(failures, n1 - a)

    observed = weight(successes1)
    extreme = sum(w for w in (weight(a) for a in range(lo, hi + 1)) if w <= observed)
    return min(1.0, extreme / math.comb(n1 + n2, n1))


def _fisher_log(a_obs: int, n1: int, k: int, failures: int, lo: int, hi: int) -> float:
    """Fisher's two-sided p from log weights built by the ratio of neighbouring terms:
    w(a+1)/w(a) = (k-a)(n1-a) / ((a+1)(failures-n1+a+1)). Self-normalising: the weights
    over the support sum to C(n1+n2, n1)."""
    a = np.arange(lo, hi, dtype=np.float64)
    steps = np.log((k - a) * (n1 - a)) - np.log((a + 1) * (failures - n1 + a + 1))
    logw = np.concatenate(([0.0], np.cumsum(steps)))
    logw -= logw.max()
    weights = np.exp(logw)
    observed = logw[a_obs - lo]
    extreme = weights[logw <= observed + math.log1p(FISHER_RTOL)].sum()
    return float(min(1.0, extreme / weights.sum()))


def fisher_detectable_drop(successes1: int, n1: int, n2: int, alpha: float) -> float | None:
    """The smallest fall of a rate from successes1/n1 that n2 new requests can show at
    p < alpha with Fisher's test (None when even zero successes would not). Found by
    bisection on the new count of successes, p being (nearly) monotone in it."""
    p1 = successes1 / n1
    top = math.floor(p1 * n2)  # the new count that shows no fall
    if top < 0 or fisher_exact(successes1, n1, 0, n2) >= alpha:
        return None
    lo, hi = 0, top  # p(lo) < alpha, p(hi) >= alpha (or hi == top)
    if fisher_exact(successes1, n1, hi, n2) < alpha:
        return max(0.0, p1 - hi / n2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fisher_exact(successes1, n1, mid, n2) < alpha:
            lo = mid
        else:
            hi = mid
    return p1 - lo / n2


def statistic(values: Values, name: Statistic) -> float:
    """The named statistic of values, exactly as stats.py computes it for the summary."""
    if name == "mean":
        if len(values) == 0:
            raise ValueError("mean of no values")
        if len(values) > LARGE:  # fsum iterates in Python: 1.5 ms a 25,000 values
            return float(np.sum(values)) / len(values)
        return math.fsum(values) / len(values)  # as stats.mean
    if isinstance(values, np.ndarray) and len(values) > 64:
        # the formula of stats.percentile on a numpy sort; "stable" is fast on sorted input
        xs = np.sort(values, kind="stable")
        h = (len(xs) - 1) * _QUANTILE[name] / 100.0
        lo = math.floor(h)
        hi = min(lo + 1, len(xs) - 1)
        return float(xs[lo] + (h - lo) * (xs[hi] - xs[lo]))
    return percentile(list(values), _QUANTILE[name])


def _statistic_rows(matrix: NDArray[np.float64], name: Statistic) -> NDArray[np.float64]:
    """The statistic of each row; numpy's "linear" method is stats.percentile's definition."""
    if name == "mean":
        return np.asarray(matrix.mean(axis=1), dtype=np.float64)
    return np.asarray(np.percentile(matrix, _QUANTILE[name], axis=1, method="linear"),
                      dtype=np.float64)


def effect(baseline: Values, current: Values, name: Statistic,
           kind: Effect) -> float | None:
    """current/baseline (None when the baseline statistic is not positive) or current-baseline."""
    b, c = statistic(baseline, name), statistic(current, name)
    if kind == "difference":
        return c - b
    return c / b if b > 0 else None


def _bootstrap_statistics(values: NDArray[np.float64], name: Statistic, resamples: int,
                          rng: np.random.Generator) -> NDArray[np.float64]:
    """The statistic of `resamples` bootstrap resamples of values.

    Small samples: resample index arrays (resamples x n). Large ones, in O(resamples):
    - a percentile interpolates between the i-th and (i+1)-th smallest of the resample.
      The resample's sorted indices into the sorted values are floor(n U_(j)) for the
      order statistics U_(j) of n uniforms; U_(i+1) ~ Beta(i+1, n-i) and, given it,
      U_(i+2) = U_(i+1) + (1 - U_(i+1)) Beta(1, n-i-1). So both are drawn exactly.
    - a mean of 0/1 values (a rate): the resample's count is Binomial(n, rate), exactly.
    - any other mean: normal with the plug-in standard error (the bootstrap
      distribution of a mean of thousands of values is normal to well within the
      interval's own sampling error).
    """
    n = len(values)
    if n * resamples <= BOOTSTRAP_DIRECT_MAX:
        return _statistic_rows(values[rng.integers(0, n, size=(resamples, n))], name)
    if name == "mean":
        m = float(values.mean())
        if bool(np.all((values == 0.0) | (values == 1.0))):
            return rng.binomial(n, m, size=resamples).astype(np.float64) / n
        sd = float(values.std())  # the resampled population's: divisor n
        return rng.normal(m, sd / math.sqrt(n), size=resamples)
    xs = np.sort(values, kind="stable")
    h = (n - 1) * _QUANTILE[name] / 100.0
    i = math.floor(h)
    frac = h - i
    u = rng.beta(i + 1, n - i, size=resamples)
    first = np.minimum((n * u).astype(np.int64), n - 1)
    if frac == 0.0:
        drawn: NDArray[np.float64] = xs[first]  # typed: numpy 2.3's stubs say Any here
        return drawn
    u2 = u + (1.0 - u) * rng.beta(1, n - i - 1, size=resamples)
    second = np.minimum((n * u2).astype(np.int64), n - 1)
    return np.asarray(xs[first] + frac * (xs[second] - xs[first]), dtype=np.float64)


def bootstrap_ci(
    baseline: Values, current: Values, name: Statistic, kind: Effect, *,
    resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the effect, each side resampled independently.

    None when no resample gives a defined effect (a ratio over a zero baseline).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if len(baseline) == 0 or len(current) == 0:
        raise ValueError("a bootstrap needs values on both sides")
    rng = np.random.default_rng(seed)
    sb = _bootstrap_statistics(_array(baseline), name, resamples, rng)
    sc = _bootstrap_statistics(_array(current), name, resamples, rng)
    if kind == "difference":
        effects = sc - sb
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            effects = np.where(sb > 0, sc / np.where(sb > 0, sb, 1.0), np.nan)
    finite = sorted(effects[np.isfinite(effects)].tolist())
    if not finite:
        return None
    tail = 100.0 * (1.0 - confidence) / 2.0
    return _percentile_sorted(finite, tail), _percentile_sorted(finite, 100.0 - tail)


def _percentile_sorted(xs: list[float], q: float) -> float:
    """stats.percentile of values already sorted (its formula, without its sort)."""
    h = (len(xs) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


# ------------------------------------------------------------------ Student t, run level


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for t >= 0, T Student's t with integer df: the finite series of
    Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term = total = 1.0
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        for j in range(1, (df - 3) // 2 + 1):
            term *= 2 * j / (2 * j + 1) * c2
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for j in range(1, (df - 2) // 2 + 1):
        term *= (2 * j - 1) / (2 * j) * c2
        total += term
    return math.sin(theta) * total


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with df >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    return min(1.0, max(0.0, 1.0 - _t_abs_cdf(abs(t), df)))


@cache
def t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile (0.5 < probability < 1) of Student's t, by bisection."""
    if not 0.5 < probability < 1.0:
        raise ValueError(f"t_quantile takes a probability in (0.5, 1), got {probability}")
    target = 2.0 * probability - 1.0
    lo, hi = 0.0, 1.0
    while _t_abs_cdf(hi, df) < target:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if _t_abs_cdf(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class RunLevel:
    """A current run's statistic against the same statistic of k baseline runs.

    On a log scale (drift is multiplicative: a slower machine stretches every request),
    y_i = log(baseline run i), y = log(current): the baseline runs' mean m and sample
    standard deviation s (k-1 degrees of freedom) estimate where an unchanged run lands
    and how far the machine drifts between runs. One new run from that distribution
    differs from m by a Student t (k-1 df) times s*sqrt(1 + 1/k).
    """

    values: tuple[float, ...]
    """The baseline runs' values."""
    center: float
    """exp(m): their geometric mean."""
    log_sd: float
    """s: the between-run standard deviation of log values."""
    ratio: float
    """current / center."""
    t: float
    p_value: float
    half_width: float
    """q s sqrt(1+1/k), q the t quantile of the confidence level: the log half-width of
    the prediction interval for one new run of an unchanged build."""
    detectable: float
    """t_{1-alpha/2, k-1} s sqrt(1+1/k): the smallest |log ratio| with p < alpha."""

    @property
    def k(self) -> int:
        return len(self.values)

    @property
    def df(self) -> int:
        return self.k - 1

    @property
    def interval(self) -> tuple[float, float]:
        """The ratio's interval: ratio / exp(+-half_width). It excludes 1 exactly when
        the current run lies outside the prediction interval of an unchanged run."""
        return (self.ratio * math.exp(-self.half_width), self.ratio * math.exp(self.half_width))

    @property
    def cv(self) -> float:
        """The between-run coefficient of variation, sqrt(exp(s^2) - 1) (log-normal)."""
        return math.sqrt(math.expm1(self.log_sd**2))


def run_level(baseline: Values, current: float, *, alpha: float,
              confidence: float = DEFAULT_CONFIDENCE) -> RunLevel:
    """Where does `current` lie against k >= 2 baseline runs' values (all > 0)?"""
    xs = _array(baseline)
    k = len(xs)
    if k < 2:
        raise ValueError(f"a run-level test needs at least 2 baseline runs, got {k}")
    if not (current > 0 and math.isfinite(current) and np.all(xs > 0) and np.all(np.isfinite(xs))):
        raise ValueError("a run-level test needs positive, finite values")
    ys = np.log(xs)
    m = math.fsum(ys.tolist()) / k
    s = math.sqrt(math.fsum(((ys - m) ** 2).tolist()) / (k - 1))
    d = math.log(current) - m
    se = s * math.sqrt(1.0 + 1.0 / k)
    if se > 0:
        t = d / se
        p = t_two_sided_p(t, k - 1)
    else:  # every baseline run gave the same value: any difference is outside
        t = math.copysign(math.inf, d) if d else 0.0
        p = 0.0 if d else 1.0
    half = t_quantile(0.5 + confidence / 2.0, k - 1) * se
    # Both must hold to gate (p < alpha and the interval on the worse side): the smallest
    # detectable shift is the larger of the two bars.
    detectable = max(t_quantile(1.0 - alpha / 2.0, k - 1), t_quantile(0.5 + confidence / 2.0,
                                                                        k - 1)) * se
    return RunLevel(tuple(float(v) for v in baseline), math.exp(m), s, math.exp(d), t, p,
                    half, detectable)
