"""Recommendations and Pareto fronts on hand-made results: copies of a real results
document's entries with their figures edited, written (schema-checked) and read back as
the report reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_vlmbench.report import figures
from pytest_vlmbench.report.model import Bullets, Paragraph, Table
from pytest_vlmbench.report.recommend import (
    Recommendation,
    Rule,
    dominates,
    front_indices,
    pareto,
    recommend,
    recommendations,
    rules,
    section,
)
from pytest_vlmbench.report.sources import Config
from tests.report_data import RAPL, build, entry


def rule(rule_id: str, slos: dict[str, float] | None = None) -> Rule:
    return next(r for r in rules(slos) if r.id == rule_id)


def labels(configs: list[Config]) -> list[str]:
    return [c.model for c in configs]


def reasons(rec: Recommendation) -> dict[str, str]:
    return {c.model: why for c, why in rec.not_ranked}


def energy(per_token: float) -> dict[str, Any]:
    return {"energy_j": per_token * 144, "energy_per_token_j": per_token,
            "energy_per_request_j": per_token * 48, "tokens_per_s_per_w": 1 / per_token,
            "warnings": []}


def test_values_equal_at_three_significant_figures_are_a_tie(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", latency_s__median=0.9061),
                    entry("b", latency_s__median=0.9058), entry("c", latency_s__median=1.2))
    rec = recommend(configs, rule("latency"))
    assert labels(rec.picks) == ["a", "b"]
    assert labels(rec.runner_up) == ["c"]
    assert rec.value == "0.906 s"
    assert rec.margin == "1.32x faster than next, c q4_k_m"
    table = next(b for b in section(configs).blocks if isinstance(b, Table))
    assert table.rows[0][1].text == "tie: a q4_k_m, b q4_k_m"


def test_margin_is_the_ratio_to_the_next(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", latency_s__median=1.0),
                    entry("b", latency_s__median=1.42), entry("c", latency_s__median=1.42))
    rec = recommend(configs, rule("latency"))
    assert labels(rec.picks) == ["a"]
    assert rec.margin == "1.42x faster than next, b q4_k_m, c q4_k_m"
    fast = recommend(configs, rule("throughput"))  # equal decode rates: a three-way tie
    assert labels(fast.picks) == ["a", "b", "c"]
    assert fast.note == "every ranked configuration is tied"


def test_a_missing_figure_excludes_the_configuration_with_the_reason(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", energy=energy(0.5)), entry("b"),
                    entry("c", energy=energy(0.25)))
    rec = recommend(configs, rule("energy"))
    assert labels(rec.picks) == ["c"]
    assert rec.value == "0.25 J/token"
    assert rec.margin == "2.00x lower J/token than next, a q4_k_m"
    assert reasons(rec) == {"b": f"no figure: no energy reading: {RAPL} (a virtual machine, "
                                 "or the intel_rapl_msr / rapl driver is not loaded)"}


def test_a_figure_no_configuration_has_gives_no_recommendation(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a"), entry("b"))
    rec = recommend(configs, rule("energy"))
    assert rec.picks == []
    assert rec.note is not None
    assert rec.note.startswith(f"no recommendation: no configuration has J/token "
                               f"(no energy reading: {RAPL}")
    table = next(b for b in section(configs).blocks if isinstance(b, Table))
    energy_notes = [n for n in table.notes if n.startswith("most energy-efficient")]
    assert energy_notes == [f"most energy-efficient: {rec.note}"]


def test_free_text_parse_rate_is_absent_with_why(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a"), entry("b"))
    fig = figures.by_name()["parse_rate"]
    rec = recommend(configs, Rule("parse", "parses", "highest parse rate", "parse_rate",
                                  "higher"))
    assert rec.picks == []
    assert rec.note == (f"no recommendation: no configuration has {fig.header} "
                        "(free-text task: its output is not parse-checked)")


def test_one_configuration_is_named_with_nothing_to_compare(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a"))
    rec = recommend(configs, rule("latency"))
    assert labels(rec.picks) == ["a"]
    assert rec.note == "only one configuration in this workload: nothing to compare against"
    assert rec.margin == "-"


def test_an_unreliable_configuration_is_not_the_fastest(tmp_path: Path) -> None:
    configs = build(
        tmp_path,
        entry("flaky", latency_s__median=0.2, requests=10, succeeded=8, failed=2,
              success_rate=0.8),
        entry("garbled", latency_s__median=0.3, parse_rate=0.5),
        entry("steady", latency_s__median=0.9))
    latency = rule("latency")
    assert "success rate >= 95%" in latency.statement
    assert "parse rate >= 95%" in latency.statement
    rec = recommend(configs, latency)
    assert labels(rec.picks) == ["steady"]
    assert reasons(rec) == {
        "flaky": "unreliable: success rate 80% is below 95% (failing fast is not fast)",
        "garbled": "unreliable: parse rate 50% is below 95% (failing fast is not fast)",
    }
    assert rec.note == "the only configuration ranked by this rule"


def test_consistency_needs_five_successful_requests(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("few", latency_s__cv=0.01),
                    entry("many", latency_s__cv=0.05, requests=5, succeeded=5))
    rec = recommend(configs, rule("consistency"))
    assert labels(rec.picks) == ["many"]
    assert reasons(rec) == {"few": "3 successful requests: a latency CV needs at least 5"}


def test_reliability_ties_broken_by_parse_then_p95(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", parse_rate=0.98), entry("b", parse_rate=1.0),
                    entry("c", parse_rate=0.9, latency_s__p95=0.1))
    rec = recommend(configs, rule("reliability"))
    assert labels(rec.picks) == ["b"]
    assert rec.margin == "same success; 2.0 points higher parse than next, a q4_k_m"
    free = build(tmp_path / "free", entry("a", latency_s__p95=1.5), entry("b"))
    rec = recommend(free, rule("reliability"))
    assert labels(rec.picks) == ["b"]  # free text: no parse rate, p95 decides
    assert rec.margin == "same success; 1.60x faster than next, a q4_k_m"


def test_an_incomplete_benchmark_does_not_compete(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", status="interrupted", latency_s__median=0.1),
                    entry("b"))
    rec = recommend(configs, rule("latency"))
    assert labels(rec.picks) == ["b"]
    assert reasons(rec) == {"a": "status interrupted: only complete benchmarks compete"}


def test_different_workloads_never_compete(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", latency_s__median=0.1, task="count"),
                    entry("b", latency_s__median=0.9),
                    entry("c", level="c4", latency_s__median=0.05, output_tokens_per_s=200.0),
                    entry("d", level="c4", output_tokens_per_s=300.0))
    by = recommendations(configs)
    assert list(by) == [("count", "synthetic", "seq"), ("caption_brief", "synthetic", "seq"),
                        ("caption_brief", "synthetic", "c4")]
    fastest = {w: labels(next(r for r in recs if r.rule.id == "latency").picks)
               for w, recs in by.items()}
    assert fastest == {("count", "synthetic", "seq"): ["a"],
                       ("caption_brief", "synthetic", "seq"): ["b"],
                       ("caption_brief", "synthetic", "c4"): ["c"]}
    throughput = next(r for r in by[("caption_brief", "synthetic", "c4")]
                      if r.rule.id == "throughput")
    assert throughput.figure is not None
    assert throughput.figure.name == "output_tokens_per_s"  # a load level's throughput
    assert labels(throughput.picks) == ["d"]
    with pytest.raises(ValueError, match="different workloads never compete"):
        recommend(configs, rule("latency"))
    sec = section(configs)
    tables = [b for b in sec.blocks
              if isinstance(b, Table) and b.id.startswith("recommendations-")]
    assert len(tables) == 1  # the two workloads of one configuration are one note
    notes = [i for b in sec.blocks if isinstance(b, Bullets) for i in b.items]
    assert any(n.startswith("only one configuration") and "count on synthetic" in n
               for n in notes)


def test_slo_rule_with_given_limits(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", latency_s__median=0.8, latency_s__p95=0.9),
                    entry("b", latency_s__median=0.5, latency_s__p95=1.1))
    slo = rule("slo", {"max_latency_p95_s": 1.0})
    assert "max_latency_p95_s <= 1" in slo.statement
    rec = recommend(configs, slo)
    assert labels(rec.picks) == ["a"]  # lowest p50 among those meeting it
    assert reasons(rec) == {"b": "misses the SLO: max_latency_p95_s = 1.1 > 1"}
    scored = build(tmp_path / "scored",
                   entry("a", latency_s__median=0.5, scores={"count_accuracy": 0.6}),
                   entry("b", latency_s__median=0.9, scores={"count_accuracy": 0.9}),
                   entry("c", latency_s__p95=2.0, scores={"count_accuracy": 1.0}))
    rec = recommend(scored, slo)
    assert labels(rec.picks) == ["b"]  # the best score among those meeting it
    assert rec.figure is not None
    assert rec.figure.name == "score_count_accuracy"
    assert rec.value == "90%"
    assert rec.margin == "30.0 points higher count_accuracy than next, a q4_k_m"


def test_slo_rule_without_limits_uses_the_recorded_verdicts(tmp_path: Path) -> None:
    verdict = {"metric": "max_latency_p95_s", "op": "<=", "limit": 0.5, "measured": 0.9,
               "passed": False}
    configs = build(tmp_path, entry("a", latency_s__median=0.5, slo=[verdict],
                                    slo_passed=False),
                    entry("b", slo=[{**verdict, "measured": 0.4, "passed": True}],
                          slo_passed=True),
                    entry("c", latency_s__median=0.1))
    rec = recommend(configs, rule("slo"))
    assert labels(rec.picks) == ["b"]
    assert reasons(rec) == {
        "a": "missed its recorded SLOs: max_latency_p95_s = 0.9 against <= 0.5",
        "c": "no SLO recorded"}
    none = build(tmp_path / "none", entry("a"), entry("b"))
    rec = recommend(none, rule("slo"))
    assert rec.picks == []
    assert rec.note is not None
    assert rec.note.startswith("no SLO given: not applied")


def test_an_unknown_slo_name_is_one_line_listing_the_valid_ones(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a"))
    with pytest.raises(ValueError, match="unknown SLO 'max_latency_s'") as info:
        section(configs, slos={"max_latency_s": 1.0})
    assert "\n" not in str(info.value)
    assert "max_latency_p95_s" in str(info.value)
    with pytest.raises(ValueError, match="needs a finite number"):
        rules({"max_latency_p95_s": float("nan")})


def test_pareto_front_of_latency_against_a_score(tmp_path: Path) -> None:
    configs = build(
        tmp_path,
        entry("fast", latency_s__median=0.5, scores={"count_accuracy": 0.6}),
        entry("good", latency_s__median=0.7, scores={"count_accuracy": 0.9}),
        entry("twin", latency_s__median=0.7, scores={"count_accuracy": 0.9}),
        entry("worse", latency_s__median=0.8, scores={"count_accuracy": 0.8}),
        entry("slow", latency_s__median=0.9, scores={"count_accuracy": 0.6}),
        entry("unscored", latency_s__median=0.1))
    by = figures.by_name()
    score = figures.score_figures([c.summary for c in configs])[0]
    front = pareto(configs, by["p50_s"], score)
    assert labels(front.front) == ["fast", "good", "twin"]  # identical points: both on it
    dominated = {c.model: labels(who) for c, who in front.dominated}
    assert dominated == {"worse": ["good", "twin"], "slow": ["fast", "good", "twin"]}
    assert [(c.model, why) for c, why in front.excluded] == [
        ("unscored", "not scored by count_accuracy")]
    tables = [b for b in section(configs).blocks
              if isinstance(b, Table) and b.id.startswith("pareto-")]
    assert [t.id.rsplit("-", 1)[-1] for t in tables] == ["accuracy"]  # no energy: no front
    status = {row[0].text: row[3].text for row in tables[0].rows}
    assert status["worse q4_k_m"] == "dominated by good q4_k_m, twin q4_k_m"
    assert status["unscored q4_k_m"] == "excluded: not scored by count_accuracy"


def test_pareto_of_energy_needs_energy(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", energy=energy(0.5), latency_s__median=0.5),
                    entry("b", energy=energy(0.4), latency_s__median=0.6),
                    entry("c", latency_s__median=0.1))
    front = pareto(configs, figures.by_name()["p50_s"], figures.by_name()["energy_per_token_j"])
    assert labels(front.front) == ["a", "b"]
    assert [c.model for c, _ in front.excluded] == ["c"]


DIRECTIONS = st.sampled_from(["lower", "higher"])
VALUES = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(
    lambda v: float(f"{v:.2g}"))  # coarse values: many ties and identical points


@given(st.lists(st.tuples(VALUES, VALUES), max_size=25), DIRECTIONS, DIRECTIONS)
def test_front_property(points: list[tuple[float, float]], bx: Any, by: Any) -> None:
    better = (bx, by)
    front, behind = front_indices(points, better)
    for i in front:  # nothing dominates a front point
        assert not any(dominates(q, points[i], better) for q in points)
    assert sorted(front + list(behind)) == list(range(len(points)))
    for i, who in behind.items():  # every other point is dominated by a front point
        assert who
        assert all(j in front and dominates(points[j], points[i], better) for j in who)


def test_dominance_is_at_three_significant_figures() -> None:
    assert not dominates((1.0001, 5.0), (1.0, 5.0), ("lower", "lower"))
    assert dominates((1.0, 4.0), (1.0004, 5.0), ("lower", "lower"))
    assert dominates((2.0, 5.0), (1.0, 5.0), ("higher", "lower"))


def test_section_states_every_rule(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a"), entry("b", latency_s__median=2.0))
    sec = section(configs)
    assert sec.id == "recommendations"
    text = " ".join(b.text if isinstance(b, Paragraph) else " ".join(b.items)
                    for b in sec.blocks if isinstance(b, Paragraph | Bullets))
    for r in rules():
        assert r.statement in text
    table = next(b for b in sec.blocks if isinstance(b, Table))
    assert table.headers == ["use case", "pick", "value", "margin"]
    assert [row[0].text for row in table.rows] == [r.use_case for r in rules()]
