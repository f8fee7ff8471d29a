"""Kendall's tau-b and top-k overlap against hand-computed values, and agreement between
benchmarks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.scoring.agreement import agreement, kendall_tau_b, top_k_overlap


def test_tau_b_without_ties() -> None:
    # x 1 2 3 4, y 1 3 2 4: of the 6 pairs only (2nd, 3rd) is discordant: C=5, D=1,
    # no ties: (5 - 1) / sqrt(6 * 6) = 2/3.
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_tau_b_with_ties() -> None:
    # x 1 1 2 3, y 1 2 2 3. Pairs: (0,1) tied in x; (0,2) C; (0,3) C; (1,2) tied in y;
    # (1,3) C; (2,3) C. C=4, D=0, n0=6, n1=1, n2=1: 4 / sqrt(5 * 5) = 0.8.
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    # x 7 7 8 9 9, y 3 5 5 4 6: pairs (i,j), dx, dy:
    # (0,1) 0,+ tx; (0,2) +,+ C; (0,3) +,+ C; (0,4) +,+ C; (1,2) +,0 ty; (1,3) +,- D;
    # (1,4) +,+ C; (2,3) +,- D; (2,4) +,+ C; (3,4) 0,+ tx.
    # C=5, D=2, n0=10, n1=2, n2=1: 3 / sqrt(8 * 9) = 0.3536...
    assert kendall_tau_b([7, 7, 8, 9, 9], [3, 5, 5, 4, 6]) == pytest.approx(3 / 72**0.5)


def test_tau_b_undefined() -> None:
    assert kendall_tau_b([5, 5, 5], [1, 2, 3]) is None  # a constant side
    assert kendall_tau_b([1], [1]) is None
    assert kendall_tau_b([], []) is None
    with pytest.raises(ValueError, match="3 and 2"):
        kendall_tau_b([1, 2, 3], [1, 2])


def test_top_k_by_hand() -> None:
    a = {"p1": 9, "p2": 8, "p3": 8, "p4": 1}
    b = {"p1": 2, "p2": 9, "p3": 7, "p4": 9}
    # top 1: a p1 (P 1); b p2, p4 tied at 9 for 1 slot (P 1/2 each): no sample is in
    # both with P > 0: 0.
    assert top_k_overlap(a, b, 1) == 0.0
    # top 2: a p1 above the cut (8), p2, p3 tied for 1 slot: 1/2 each; b p2, p4 both in
    # (2 tied at 9, 2 slots). Sum of P(a) x P(b): p1 1 x 0 + p2 1/2 x 1 + p3 1/2 x 0 +
    # p4 0 x 1 = 1/2; / 2 = 1/4.
    assert top_k_overlap(a, b, 2) == pytest.approx(1 / 4)
    # top 3: a {p1, p2, p3} (the two 8s fill the 2 slots left); b {p2, p4, p3}: 2 of 3.
    assert top_k_overlap(a, b, 3) == pytest.approx(2 / 3)
    # Only samples both scored count: p5 is a's best but b never saw it.
    assert top_k_overlap(a | {"p5": 10}, b, 1) == 0.0


def test_constant_raters_overlap_as_chance() -> None:
    # Both rate the 5 photos 7: each photo in the top 1 with P 1/5 on each side, drawn
    # independently: sum 5 x 1/5 x 1/5 = 1/5; / 1 = 0.2 (was 1.0 with ties by id).
    same = dict.fromkeys(["p1", "p2", "p3", "p4", "p5"], 7)
    assert top_k_overlap(same, same, 1) == pytest.approx(0.2)
    # Top 3 of 5: P 3/5 each: 5 x 9/25 = 9/5; / 3 = 3/5 = k/n.
    assert top_k_overlap(same, same, 3) == pytest.approx(3 / 5)


def test_top_k_with_ties_on_both_sides() -> None:
    a = {"p1": 5, "p2": 5, "p3": 5, "p4": 1}
    b = {"p1": 5, "p2": 5, "p3": 1, "p4": 1}
    # top 1: a p1..p3 tied for 1 slot (1/3 each); b p1, p2 tied (1/2 each):
    # p1 1/3 x 1/2 + p2 1/3 x 1/2 + p3 1/3 x 0 = 1/3; / 1 = 1/3.
    assert top_k_overlap(a, b, 1) == pytest.approx(1 / 3)
    # top 3: a p1..p3 in (3 tied, 3 slots); b p1, p2 in, p3 and p4 tied at 1 for the
    # last slot (1/2 each): 1 + 1 + 1 x 1/2 + 0 = 5/2; / 3 = 5/6.
    assert top_k_overlap(a, b, 3) == pytest.approx(5 / 6)
    # A side that ranks with no ties agrees fully with itself.
    ranked = {"p1": 4, "p2": 3, "p3": 2, "p4": 1}
    assert top_k_overlap(ranked, ranked, 2) == 1.0


ratings = st.lists(st.integers(1, 10), min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_tau_b_properties(data: st.DataObject) -> None:
    xs = data.draw(ratings)
    ys = data.draw(st.lists(st.integers(1, 10), min_size=len(xs), max_size=len(xs)))
    tau = kendall_tau_b(xs, ys)
    assert tau == kendall_tau_b(ys, xs)
    if tau is not None:
        assert -1.0 <= tau <= 1.0
    if len(set(xs)) > 1:
        assert kendall_tau_b(xs, xs) == pytest.approx(1.0)
        assert kendall_tau_b(xs, [-x for x in xs]) == pytest.approx(-1.0)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefghij"), st.integers(1, 10)),
       st.dictionaries(st.sampled_from("abcdefghij"), st.integers(1, 10)),
       st.integers(1, 10))
def test_top_k_overlap_properties(a: dict[str, int], b: dict[str, int], k: int) -> None:
    overlap = top_k_overlap(a, b, k)
    assert 0.0 <= overlap <= 1.0
    assert overlap == top_k_overlap(b, a, k)
    common = set(a) & set(b)
    if len(common) >= k and len(set(a.values())) == len(a):
        assert top_k_overlap(a, a, k) == pytest.approx(1.0)
    if len(set(a.values())) == 1 and len(a) > k:
        assert top_k_overlap(a, a, k) == pytest.approx(k / len(a))  # constant: k/n


def _entry(bid: str, model: str, precision: str = "q4", task: str = "photo_score",
           dataset: str = "h1") -> dict[str, Any]:
    return {"id": bid, "model": model, "precision": precision, "task": task,
            "dataset": {"name": "folder", "hash": dataset}, "load": {"label": "sequential"},
            "summary": {"quality": {"histograms": {"instagram": {}, "aesthetic": {}}}}}


def _records(ratings_by_sample: dict[str, list[float]]) -> list[dict[str, Any]]:
    out = []
    for sample, values in ratings_by_sample.items():
        for value in values:
            out.append({"sample_id": sample, "phase": "measure", "error": None,
                        "scores": {"instagram": value, "aesthetic": None}})
    out.append({"sample_id": "p1", "phase": "warmup", "error": None,
                "scores": {"instagram": 1.0}})
    return out


def test_agreement_between_benchmarks() -> None:
    a = _records({"p1": [1], "p2": [2, 4], "p3": [3], "p4": [4], "p5": [9]})  # p2: mean 3
    b = _records({"p1": [1], "p2": [3], "p3": [2], "p4": [4]})
    c = _records({"p1": [4], "p2": [3], "p3": [2], "p4": [1]})
    found = agreement([
        (_entry("b1", "m1"), a), (_entry("b2", "m2"), b),
        (_entry("b3", "m1"), c),  # the same model and precision as b1: not compared
        (_entry("b4", "m3", dataset="other"), b),  # another dataset: its own group
    ])
    pairs = {(f["a"]["benchmark"], f["b"]["benchmark"], f["score"]): f for f in found}
    assert set(pairs) == {("b1", "b2", "aesthetic"), ("b1", "b2", "instagram"),
                          ("b2", "b3", "aesthetic"), ("b2", "b3", "instagram")}
    one = pairs[("b1", "b2", "instagram")]
    # Common p1..p4: a 1 3 3 4, b 1 3 2 4. Pairs: (1,2) C, (1,3) C, (1,4) C, (2,3) tied
    # in a, (2,4) C, (3,4) C: C=5, D=0, n1=1, n2=0: 5 / sqrt(5 * 6).
    assert one["n"] == 4
    assert one["kendall_tau_b"] == pytest.approx(5 / 30**0.5)
    # top 1: p4 both; top 3: a p4, then p2, p3 (both 3s fill the 2 slots left), b p4, p2,
    # p3: 1.
    assert one["top_k"] == {"1": 1.0, "3": 1.0}
    assert (one["task"], one["dataset"], one["a"]["model"], one["b"]["precision"]) == (
        "photo_score", "h1", "m1", "q4")
    # b 1 3 2 4, c 4 3 2 1 on p1..p4: only (p2, p3) is concordant: C=1, D=5: -4/6.
    assert pairs[("b2", "b3", "instagram")]["kendall_tau_b"] == pytest.approx(-2 / 3)
    assert pairs[("b1", "b2", "aesthetic")]["n"] == 0
    assert pairs[("b1", "b2", "aesthetic")]["kendall_tau_b"] is None
    assert pairs[("b1", "b2", "aesthetic")]["top_k"] == {}
    assert pairs[("b1", "b2", "aesthetic")]["kendall_absent_reason"] == (
        "0 sample(s) rated by both; tau needs at least 2")
    assert one["kendall_absent_reason"] is None


def test_a_constant_rater_has_no_tau_and_says_why() -> None:
    a = _records({"p1": [7], "p2": [7], "p3": [7]})
    b = _records({"p1": [1], "p2": [5], "p3": [9], "p9": [10]})  # p9: b only, never ranked
    [found, _] = sorted(agreement([(_entry("b1", "m1"), a), (_entry("b2", "m2"), b)]),
                        key=lambda f: f["score"] != "instagram")
    assert found["n"] == 3
    assert found["kendall_tau_b"] is None
    assert found["kendall_absent_reason"] == (
        "a rated every sample 7: no ranking to correlate")
    # top 1 of b among the common samples is p3 (p9 is not common); a's 3 tied 7s each
    # take the one slot with chance 1/3: expected overlap 1/3.
    assert found["top_k"]["1"] == pytest.approx(1 / 3)


def test_benchmarks_pair_within_one_test_function_only() -> None:
    ratings = _records({"p1": [1], "p2": [2], "p3": [3]})
    entries = [
        {**_entry("t1[m1]", "m1"), "test": "bench.py::test_rate[m1]"},
        {**_entry("t1[m2]", "m2"), "test": "bench.py::test_rate[m2]"},
        {**_entry("t2[m3]", "m3"), "test": "bench.py::test_other[m3]"},  # same task, data
    ]
    found = agreement([(entry, ratings) for entry in entries])
    assert {(f["a"]["model"], f["b"]["model"]) for f in found} == {("m1", "m2")}


def test_the_terminal_shows_a_few_agreements_and_counts_the_rest() -> None:
    from pytest_vlmbench.report.quality import AGREEMENT_LINES, agreement_lines

    ratings = _records({"p1": [1], "p2": [2], "p3": [3]})
    found = agreement([(_entry(f"b{i}", f"m{i}"), ratings) for i in range(5)])
    assert len(found) == 2 * 10  # 10 pairs of 5 models, two ratings each
    lines = agreement_lines(found)
    assert len(lines) == AGREEMENT_LINES + 1
    assert lines[-1] == f"agreement: {20 - AGREEMENT_LINES} more pairs in the results file " \
                        "(agreement)"
    assert "agreement: photo_score instagram: m0 q4 vs m1 q4: Kendall's tau-b 1, top-1 1 " \
           "(n=3)" in lines
