"""Statistics over records, computed in plain Python so a reader can recompute them.

Percentiles use linear interpolation between closest ranks (Hyndman & Fan type 7,
numpy's default `linear` method): for sorted x of n values and q in [0, 100],
h = (n - 1) * q / 100, result = x[floor(h)] + (h - floor(h)) * (x[floor(h)+1] - x[floor(h)]).
CV is the sample standard deviation (n - 1) divided by the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pytest_vlmbench.results.models import Distribution

PERCENTILE_METHOD = (
    "linear interpolation between closest ranks (Hyndman & Fan type 7, numpy 'linear'): "
    "h = (n-1)*q/100; x[floor(h)] + (h-floor(h))*(x[floor(h)+1]-x[floor(h)])"
)
STDEV_METHOD = "sample standard deviation (n-1 denominator); cv = stdev / mean"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of values by linear interpolation (numpy default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(values)
    h = (len(xs) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def stdev(values: Sequence[float]) -> float | None:
    """Sample standard deviation; None for fewer than two values (undefined, not zero)."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def distribution(values: Sequence[float]) -> Distribution:
    """n, mean, min, max, median, p90, p95, p99, stdev and CV of values (None when empty)."""
    if not values:
        return {
            "n": 0, "mean": None, "min": None, "max": None, "median": None,
            "p90": None, "p95": None, "p99": None, "stdev": None, "cv": None,
        }
    m = mean(values)
    sd = stdev(values)
    return {
        "n": len(values),
        "mean": m,
        "min": min(values),
        "max": max(values),
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "stdev": sd,
        "cv": (sd / m) if (sd is not None and m > 0) else None,
    }
