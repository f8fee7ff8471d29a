"""Tests for stats.py: percentiles, mean, stdev and CV against numpy and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pytest_vlmbench.metrics.stats import distribution, mean, percentile, stdev
from pytest_vlmbench.results import document as results

# Bounded so that differences of two values cannot overflow to inf (numpy and we would
# then both return inf or nan and the comparison would say nothing).
finite = st.floats(min_value=-1e100, max_value=1e100, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
qs = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
FAST = settings(max_examples=150, deadline=None)


def _close(ours: float, theirs: float, values: list[float], rel: float = 1e-9) -> bool:
    """Equal up to rounding: relative, or absolute on the scale of the data."""
    scale = max(abs(v) for v in values)
    return math.isclose(ours, float(theirs), rel_tol=rel, abs_tol=1e-12 * scale)


@FAST
@given(values=st.lists(finite, min_size=1, max_size=50), q=qs)
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    ours = percentile(values, q)
    theirs = np.percentile(np.array(values), q, method="linear")
    assert _close(ours, theirs, values), (ours, float(theirs))


@FAST
@given(values=st.lists(finite, min_size=1, max_size=50), q1=qs, q2=qs)
def test_percentile_is_monotone_and_within_range(values: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    assert min(values) <= percentile(values, lo) <= percentile(values, hi) <= max(values)


@FAST
@given(values=st.lists(finite, min_size=1, max_size=50))
def test_percentile_ends_are_min_and_max_and_order_does_not_matter(values: list[float]) -> None:
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)
    assert percentile(list(reversed(values)), 37.5) == percentile(values, 37.5)


def test_percentile_by_hand() -> None:
    # h = (n-1) q / 100: for [1, 2, 3, 4] and q=25, h = 0.75 -> 1 + 0.75 * (2 - 1).
    assert percentile([4.0, 1.0, 3.0, 2.0], 25) == pytest.approx(1.75)
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([10.0, 20.0], 90) == pytest.approx(19.0)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-0.001, 100.001, -50, 1000])
def test_percentile_rejects_q_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0, 2.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_mean_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        mean([])


@FAST
@given(values=st.lists(finite, min_size=1, max_size=50))
def test_mean_matches_numpy(values: list[float]) -> None:
    assert _close(mean(values), np.mean(np.array(values)), values)


@FAST
@given(values=st.lists(finite, min_size=2, max_size=50))
def test_stdev_matches_numpy_ddof1(values: list[float]) -> None:
    ours = stdev(values)
    assert ours is not None
    theirs = np.std(np.array(values), ddof=1)
    scale = max(abs(v) for v in values)
    assert math.isclose(ours, float(theirs), rel_tol=1e-7, abs_tol=1e-9 * scale), (ours, theirs)


@pytest.mark.parametrize("values", [[], [3.5]])
def test_stdev_undefined_below_two_values(values: list[float]) -> None:
    assert stdev(values) is None


def test_stdev_by_hand() -> None:
    # mean 5, squared deviations 9+1+1+9 = 20, / (4-1) -> sqrt(20/3)
    assert stdev([2.0, 4.0, 6.0, 8.0]) == pytest.approx(math.sqrt(20 / 3))
    assert stdev([5.0, 5.0, 5.0]) == 0.0


@FAST
@given(values=st.lists(positive, min_size=1, max_size=50))
def test_distribution_matches_numpy(values: list[float]) -> None:
    d = distribution(values)
    arr = np.array(values)
    assert d["n"] == len(values)
    assert d["min"] == arr.min()
    assert d["max"] == arr.max()
    for key, value in (("mean", arr.mean()), ("median", np.median(arr))):
        assert _close(d[key], value, values), key
    for key, q in (("p90", 90), ("p95", 95), ("p99", 99)):
        assert _close(d[key], np.percentile(arr, q, method="linear"), values), key
    if len(values) == 1:
        assert d["stdev"] is None
        assert d["cv"] is None
    else:
        sd = float(np.std(arr, ddof=1))
        assert d["stdev"] is not None
        assert d["cv"] is not None
        assert math.isclose(d["stdev"], sd, rel_tol=1e-7, abs_tol=1e-9 * arr.max())
        assert math.isclose(d["cv"], sd / float(arr.mean()), rel_tol=1e-7,
                            abs_tol=1e-9 * arr.max() / arr.mean())
        assert d["cv"] == pytest.approx(d["stdev"] / d["mean"], rel=1e-12)


def test_distribution_by_hand() -> None:
    d = distribution([1.0, 2.0, 3.0, 4.0, 10.0])
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(4.0)
    assert d["min"] == 1.0
    assert d["max"] == 10.0
    assert d["median"] == pytest.approx(3.0)
    # h = 4 * 0.9 = 3.6 -> 4 + 0.6 * (10 - 4)
    assert d["p90"] == pytest.approx(7.6)
    assert d["p95"] == pytest.approx(8.8)
    assert d["p99"] == pytest.approx(9.76)
    # deviations -3, -2, -1, 0, 6 -> 9+4+1+0+36 = 50, / 4 -> sqrt(12.5)
    assert d["stdev"] == pytest.approx(math.sqrt(12.5))
    assert d["cv"] == pytest.approx(math.sqrt(12.5) / 4.0)


def test_distribution_of_nothing_has_none_fields() -> None:
    d = distribution([])
    assert d["n"] == 0
    assert {k for k, v in d.items() if v is not None} == {"n"}


def test_distribution_of_one_value() -> None:
    d = distribution([0.25])
    assert d["n"] == 1
    for key in ("mean", "min", "max", "median", "p90", "p95", "p99"):
        assert d[key] == 0.25
    assert d["stdev"] is None
    assert d["cv"] is None


@pytest.mark.parametrize("values", [[-1.0, -3.0], [0.0, 0.0], [-1.0, 1.0]])
def test_cv_undefined_without_positive_mean(values: list[float]) -> None:
    d = distribution(values)
    assert d["stdev"] is not None
    assert d["cv"] is None


@pytest.mark.parametrize("values", [[], [1.0], [1.0, 2.5, 9.0]])
def test_distribution_matches_the_results_schema(values: list[float]) -> None:
    sub = {"$defs": results.schema()["$defs"], "$ref": "#/$defs/distribution"}
    Draft202012Validator(sub).validate(distribution(values))
