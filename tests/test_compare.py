"""Tests for compare.py: loading runs, matching benchmarks, rules, verdicts and rendering.

Runs are synthetic but valid documents: the header and entry shape of a real run
(tests/data, the default suite on a CPU), with records of known latency distributions,
summaries computed by summary.summarize, and every document validated on write.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_vlmbench import compare
from pytest_vlmbench.compare import (
    DEFAULT_RULES,
    EXIT_NOTHING_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    Comparison,
    RuleError,
    compare_runs,
    load_run,
    parse_rule,
    parse_rules,
    render_markdown,
    render_table,
    to_json,
)
from pytest_vlmbench.metrics import noise
from pytest_vlmbench.metrics.summary import summarize
from pytest_vlmbench.results import document as results
from pytest_vlmbench.results.document import ResultsError

DATA = Path(__file__).parent / "data"
REAL = DATA / "results-20261123T102147Z-ba1e6b.json"
TEST_ID = "benchmarks/test_default_suite.py::test_photo_score[tiny-vlm-q4_k_m-cpu]"
OTHER_ID = "benchmarks/test_default_suite.py::test_caption_brief[gemma3-270m-q4_k_m-cpu]"


def latencies(n: int, center: float, spread: float, seed: int) -> list[float]:
    """n latencies uniform within center * (1 +- spread), from a seeded generator."""
    rng = np.random.default_rng(seed)
    return [float(v) for v in center * (1.0 + rng.uniform(-spread, spread, n))]


@dataclass
class Bench:
    """One benchmark of a synthetic run: its measured latencies and what else differs."""

    latency: Sequence[float]
    id: str = TEST_ID
    model: str = "tiny-vlm"
    run_id: str | None = None
    parse: Sequence[str] | None = None
    errors: Sequence[bool] | None = None
    prompt_version: str = "0123456789abcdef"
    dataset_hash: str = "d" * 64
    status: str = "complete"
    fail_on: list[str] | None = None
    energy_j: Sequence[float] | None = None
    started_at: str | None = None
    """The entry's start; None: the document's."""
    engine: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def make_records(run_id: str, b: Bench) -> list[dict[str, Any]]:
    """A warm-up record then one measured record per latency (TTFT 15% of it)."""
    out: list[dict[str, Any]] = []
    template = json.loads(REAL.with_suffix(".records.jsonl").read_text().splitlines()[0])
    for seq, lat in enumerate([b.latency[0], *b.latency]):
        start = 10**9 * 10 * (seq + 1)
        first = start + int(0.15 * lat * 1e9)
        end = start + int(lat * 1e9)
        i = seq - 1
        failed = b.errors is not None and i >= 0 and b.errors[i]
        parse = b.parse[i] if b.parse is not None and i >= 0 else "valid"
        r = copy.deepcopy(template)
        r.update(
            run_id=run_id, benchmark=b.id, seq=seq, phase="warmup" if seq == 0 else "measure",
            model=b.model, task="photo_score", t_start_ns=start,
            t_first_token_ns=None if failed else first, t_end_ns=end,
            completion_tokens=None if failed else 48, output=None if failed else "{}",
            parse="no_output" if failed else parse,
            stages_ns={"prefill": first - start, "decode": end - first} if b.engine else {},
            counts={"prefill_tokens": 62, "decode_evals": 47, "decode_tokens": 47}
            if b.engine else {},
            error={"stage": "request", "type": "RuntimeError", "message": "boom"}
            if failed else None,
        )
        out.append(r)
    return out


def make_entry(template: dict[str, Any], run_id: str, b: Bench,
               records: list[dict[str, Any]], started_at: str) -> dict[str, Any]:
    entry = copy.deepcopy(template)
    measured = [r for r in records if r["phase"] == "measure"]
    summary = summarize(records, checks_output=True, load_s=0.5, peak_rss=10**8)
    if b.energy_j is not None:
        summary["energy"] = {
            "energy_j": float(sum(b.energy_j)),
            "per_request": [{"seq": r["seq"], "energy_j": e, "tokens": 48}
                            for r, e in zip(measured, b.energy_j, strict=True)],
        }
    entry.update(
        id=b.id, test=b.id, run_id=b.run_id or run_id, model=b.model, task="photo_score",
        prompt_version=b.prompt_version,
        dataset={"name": "synthetic", "hash": b.dataset_hash},
        samples=len(measured), status=b.status,
        error="backend crashed" if b.status == "error" else None, summary=summary,
        records={"file": f"results-{run_id}.records.jsonl", "measured": len(measured),
                 "warmup": 1},
        started_at=b.started_at or started_at, **b.extra,
    )
    if b.fail_on is not None:
        entry["fail_on"] = b.fail_on
    return entry


COMMIT = "d6d94d61f33541a3993a6fb257478697b437d8f3"  # the real run's environment.git


def write_run(directory: Path, run_id: str, benches: Sequence[Bench], *,
              started_at: str = "2026-11-23T10:00:00+00:00", status: str = "complete",
              commit: str | None = COMMIT) -> Path:
    """A valid results document and its records file; returns the document's path."""
    real = json.loads(REAL.read_text())
    records: list[dict[str, Any]] = []
    entries = []
    for b in benches:
        recs = make_records(b.run_id or run_id, b)
        records.extend(recs)
        entries.append(make_entry(real["benchmarks"][0], run_id, b, recs, started_at))
    environment = {k: v for k, v in real["environment"].items() if k != "git"}
    if commit is not None:
        environment["git"] = {"commit": commit, "dirty": False}
    doc = {**real, "run_id": run_id, "started_at": started_at, "finished_at": started_at,
           "status": status, "benchmarks": entries, "environment": environment,
           "records_file": f"results-{run_id}.records.jsonl"}
    path = directory / f"results-{run_id}.json"
    results.write_atomic(path, doc)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (directory / doc["records_file"]).write_text(lines, encoding="utf-8")
    return path


def run_pair(tmp_path: Path, base: Sequence[Bench], cur: Sequence[Bench],
             rules: Sequence[str] | None = None, **kwargs: Any) -> Comparison:
    """One baseline run against a current run. The per-request mechanics are tested
    without the drift allowance of one baseline run (drift_allowance=0) unless given."""
    b = write_run(tmp_path, "base", base)
    c = write_run(tmp_path, "cur", cur, started_at="2026-11-23T11:00:00+00:00")
    parsed = parse_rules(rules) if rules is not None else None
    kwargs.setdefault("drift_allowance", 0.0)
    return compare_runs(load_run(b), load_run(c), parsed, **kwargs)


def verdicts(comparison: Comparison, index: int = 0) -> dict[str, str]:
    return {m.metric: m.verdict for m in comparison.pairs[index].metrics}


def result(comparison: Comparison, metric: str, index: int = 0) -> compare.MetricResult:
    return next(m for m in comparison.pairs[index].metrics if m.metric == metric)


BASE16 = latencies(16, 1.0, 0.03, seed=1)


# ----------------------------------------------------------------------------- verdicts


def test_identical_runs_are_unchanged_everywhere(tmp_path: Path) -> None:
    energy = [0.1 * v for v in BASE16]
    bench = Bench(BASE16, energy_j=energy)
    comparison = run_pair(tmp_path, [bench], [bench])
    assert set(verdicts(comparison).values()) == {"unchanged"}
    assert comparison.exit_status == EXIT_OK
    assert comparison.gated == []
    m = result(comparison, "p50_latency")
    assert m.effect == pytest.approx(1.0)
    assert m.p_value == pytest.approx(1.0)
    assert m.ci is not None
    assert m.ci[0] <= 1.0 <= m.ci[1]


def test_thirty_percent_slower_is_a_gated_regression(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)])
    m = result(comparison, "p50_latency")
    assert m.verdict == "regressed"
    assert m.gated
    assert m.effect is not None
    assert 1.25 < m.effect < 1.35
    assert m.ci is not None
    assert m.ci[0] > 1.0
    assert m.p_value is not None
    assert m.p_value < 1e-6
    assert result(comparison, "tokens_per_s").verdict == "regressed"  # lower is worse
    assert comparison.exit_status == EXIT_REGRESSION
    assert {(p.key.id, m.metric) for p, m in comparison.gated} >= {(TEST_ID, "p50_latency")}


def test_three_percent_slower_is_within_the_limit(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16)],
                          [Bench(latencies(16, 1.03, 0.03, seed=2))])
    m = result(comparison, "p50_latency")
    assert m.verdict == "unchanged"
    assert m.note is None
    assert comparison.exit_status == EXIT_OK


def test_twelve_percent_slower_in_huge_noise_is_not_a_regression(tmp_path: Path) -> None:
    base = latencies(8, 1.0, 0.6, seed=3)
    cur = latencies(8, 1.12, 0.6, seed=4)
    comparison = run_pair(tmp_path, [Bench(base)], [Bench(cur)])
    m = result(comparison, "p50_latency")
    assert m.effect is not None
    assert m.effect > 1.10
    assert m.verdict == "unchanged"  # ... but not credible
    assert m.note is not None
    assert m.note.startswith("beyond threshold but within noise, p=")
    assert comparison.exit_status == EXIT_OK


def test_thirty_percent_faster_is_improved(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16)],
                          [Bench(latencies(16, 0.7, 0.03, seed=2))])
    assert result(comparison, "p50_latency").verdict == "improved"
    assert result(comparison, "tokens_per_s").verdict == "improved"
    assert comparison.exit_status == EXIT_OK


def test_too_few_samples_is_inconclusive(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16[:3])],
                          [Bench(latencies(3, 2.0, 0.01, seed=2))])
    m = result(comparison, "p50_latency")
    assert m.verdict == "inconclusive"
    assert m.note == "too few samples (n=3 vs 3, need 5 on each side)"
    assert m.baseline is not None
    assert m.current is not None
    assert comparison.exit_status == EXIT_OK
    lowered = run_pair(tmp_path, [Bench(BASE16[:3])],
                       [Bench(latencies(3, 2.0, 0.01, seed=2))], min_samples=3)
    assert result(lowered, "p50_latency").verdict != "inconclusive"


def test_parse_rate_drop_is_a_regression(tmp_path: Path) -> None:
    half = ["valid", "invalid_json"] * 8
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16, parse=half)])
    m = result(comparison, "parse_rate")
    assert (m.baseline, m.current) == (1.0, 0.5)
    assert m.effect == pytest.approx(-0.5)
    assert m.effect_kind == "difference"
    assert m.test == "fisher"
    assert m.p_value is not None
    assert m.p_value < 0.01
    assert m.verdict == "regressed"
    assert m.gated
    assert comparison.exit_status == EXIT_REGRESSION


def test_failures_lower_success_rate_and_leave_latency_alone(tmp_path: Path) -> None:
    errors = [i % 2 == 1 for i in range(16)]
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16, errors=errors)])
    success = result(comparison, "success_rate")
    assert (success.baseline, success.current, success.n_current) == (1.0, 0.5, 16)
    assert success.verdict == "regressed"
    latency = result(comparison, "p50_latency")
    assert latency.n_current == 8  # failed requests excluded
    parse = result(comparison, "parse_rate")
    assert parse.current == 1.0
    assert parse.verdict == "unchanged"


def test_a_regression_without_a_rule_does_not_gate(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)],
                          rules=["none,parse_rate:-0.01"])
    m = result(comparison, "p50_latency")
    assert m.verdict == "regressed"
    assert not m.gated
    assert comparison.gated == []
    assert comparison.exit_status == EXIT_OK
    assert any("regressed (not gated)" in line for line in render_table(comparison))


def test_rules_override_only_the_defaults_they_name(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)], rules=["p95_latency:+50%"])
    gated = {m.metric for m in comparison.pairs[0].metrics if m.gated}
    assert gated == {"p95_latency", *DEFAULT_RULES}
    assert result(comparison, "p95_latency").verdict == "unchanged"  # +30% < +50%
    assert comparison.exit_status == EXIT_REGRESSION  # the default p50 gate is still there


def test_none_clears_the_defaults_and_off_drops_one(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    only_p95 = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)],
                        rules=["none,p95_latency:+50%"])
    assert {m.metric for m in only_p95.pairs[0].metrics if m.gated} == {"p95_latency"}
    assert only_p95.exit_status == EXIT_OK
    no_timing = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)],
                         rules=["p50_latency:off", "tokens_per_s:off"])
    gated = {m.metric for m in no_timing.pairs[0].metrics if m.gated}
    assert gated == {"parse_rate", "success_rate", "energy_per_token"}
    assert no_timing.exit_status == EXIT_OK
    nothing = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)], rules=["none"])
    assert not any(m.gated for m in nothing.pairs[0].metrics)
    assert result(nothing, "p50_latency").verdict == "regressed"  # still judged, not gated


def test_benchmark_fail_on_overrides_the_rules_it_names(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    lenient = Bench(slow, fail_on=["p50_latency:+50%", "tokens_per_s:-50%"])
    comparison = run_pair(tmp_path, [Bench(BASE16)], [lenient])
    p50 = result(comparison, "p50_latency")
    assert p50.gated
    assert p50.rule.threshold == 0.5
    assert p50.verdict == "unchanged"
    assert result(comparison, "success_rate").rule == DEFAULT_RULES["success_rate"]
    assert comparison.exit_status == EXIT_OK


def test_a_bad_fail_on_in_the_document_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"benchmark .*test_photo_score.*fail_on.*bogus"):
        run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16, fail_on=["bogus:+1%"])])


def test_prompt_version_change_is_not_comparable(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16)],
                          [Bench(latencies(16, 2.0, 0.03, seed=2), prompt_version="f" * 16)])
    assert comparison.pairs == []
    [pair] = comparison.not_comparable
    assert pair.reason == f"prompt_version changed (0123456789abcdef -> {'f' * 16})"
    assert comparison.exit_status == EXIT_NOTHING_COMPARABLE
    assert "not comparable" in render_markdown(comparison).lower()


def test_dataset_change_is_not_comparable_but_others_still_gate(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    comparison = run_pair(
        tmp_path, [Bench(BASE16), Bench(BASE16, id=OTHER_ID)],
        [Bench(slow, dataset_hash="e" * 64), Bench(slow, id=OTHER_ID)],
    )
    [pair] = comparison.not_comparable
    assert pair.reason is not None
    assert pair.reason.startswith("dataset changed (synthetic ddd")
    assert [p.key.id for p in comparison.pairs] == [OTHER_ID]
    assert comparison.exit_status == EXIT_REGRESSION


def test_new_and_vanished_benchmarks_are_listed(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16), Bench(BASE16, id=OTHER_ID)],
                          [Bench(BASE16), Bench(BASE16, model="other")])
    assert [k.id for k in comparison.vanished] == [OTHER_ID]
    assert [(k.id, k.model) for k in comparison.new] == [(TEST_ID, "other")]
    assert len(comparison.pairs) == 1
    md = render_markdown(comparison)
    assert "**New (current only)** (1):" in md
    assert "**Vanished (baseline only)** (1):" in md
    doc = to_json(comparison)
    assert doc["vanished"][0]["id"] == OTHER_ID
    assert doc["new"][0]["model"] == "other"


def test_only_new_and_vanished_is_nothing_comparable(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16, id=OTHER_ID)])
    assert comparison.exit_status == EXIT_NOTHING_COMPARABLE


def test_merged_document_compares_the_latest_run_of_a_benchmark(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    merged = [
        Bench(BASE16, run_id="r1", started_at="2026-11-23T10:00:00+00:00"),
        Bench(slow, run_id="r2", started_at="2026-11-23T10:30:00+00:00"),
    ]
    comparison = run_pair(tmp_path, [Bench(BASE16)], merged)
    assert result(comparison, "p50_latency").verdict == "regressed"
    assert any("2 runs of" in n and "run r2" in n for n in comparison.notes)


def test_errored_benchmark_is_compared_and_flagged(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16, status="error")])
    assert comparison.pairs[0].flags == ["current benchmark error: backend crashed"]
    assert result(comparison, "p50_latency").verdict == "unchanged"
    assert "flagged" in "\n".join(render_table(comparison))


def test_energy_missing_on_one_side_is_inconclusive(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16, energy_j=[0.1] * 16)], [Bench(BASE16)])
    m = result(comparison, "energy_per_token")
    assert m.verdict == "inconclusive"
    assert m.note == "no per-request energy"


def test_energy_per_token_regression(tmp_path: Path) -> None:
    base = [0.1 * v for v in BASE16]
    more = [0.13 * v for v in latencies(16, 1.0, 0.03, seed=5)]
    comparison = run_pair(tmp_path, [Bench(BASE16, energy_j=base)],
                          [Bench(BASE16, energy_j=more)])
    m = result(comparison, "energy_per_token")
    assert m.verdict == "regressed"
    assert m.gated
    assert m.baseline == pytest.approx(0.1 * float(np.median(BASE16)) / 48)


def test_decode_rate_from_different_sources_is_inconclusive(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16, engine=False)])
    m = result(comparison, "tokens_per_s")
    assert m.verdict == "inconclusive"
    assert m.note == "decode rate measured differently (engine vs stream)"


def test_stream_decode_rate_per_request(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16, engine=False)],
                          [Bench(BASE16, engine=False)])
    m = result(comparison, "tokens_per_s")
    decode_s = [lat - int(0.15 * lat * 1e9) / 1e9 for lat in BASE16]
    assert m.baseline == pytest.approx(float(np.median([47 / d for d in decode_s])), rel=1e-6)


def test_the_real_run_against_itself(tmp_path: Path) -> None:
    run = load_run(REAL)
    comparison = compare_runs(run, run)
    assert len(comparison.pairs) == 2
    assert comparison.exit_status == EXIT_OK
    assert {m.verdict for p in comparison.pairs for m in p.metrics} == {"inconclusive"}  # n=3
    assert "baseline and current are the same results file" in comparison.notes
    relaxed = compare_runs(run, run, min_samples=3)
    verdict_set = {m.verdict for p in relaxed.pairs for m in p.metrics}
    assert verdict_set == {"unchanged", "inconclusive"}  # energy: none on this machine
    assert "parse_rate" not in verdicts(relaxed)  # captions are not checked


# ----------------------------------------------------------------------------- rules


@pytest.mark.parametrize(("spec", "threshold", "relative"), [
    ("p50_latency:+10%", 0.10, True),
    ("p50_latency:10%", 0.10, True),
    ("tokens_per_s:-5%", 0.05, True),
    ("tokens_per_s:5%", 0.05, True),
    ("parse_rate:-0.01", 0.01, False),
    ("parse_rate:0.01", 0.01, False),
    ("p95_latency:+0.05", 0.05, False),
    (" p95_ttft:+1e-2 ", 0.01, False),
])
def test_parse_rule(spec: str, threshold: float, relative: bool) -> None:
    rule = parse_rule(spec)
    assert rule.threshold == pytest.approx(threshold)
    assert rule.relative is relative


def test_rule_limits_render_with_the_worse_sign() -> None:
    assert parse_rule("tokens_per_s:5%").limit == "-5%"
    assert parse_rule("p50_latency:0.05").limit == "+0.05"


@pytest.mark.parametrize(("spec", "message"), [
    ("p50_latency", "rule 'p50_latency': expected METRIC:LIMIT"),
    ("latency:+10%", "rule 'latency:+10%': unknown metric 'latency'; one of p50_latency"),
    ("p50_latency:fast", "rule 'p50_latency:fast': limit 'fast' is not a number"),
    ("p50_latency:-10%", "rule 'p50_latency:-10%': p50_latency gets worse as it rises, "
                         "so its limit is +10%"),
    ("tokens_per_s:+10%", "rule 'tokens_per_s:+10%': tokens_per_s gets worse as it falls"),
    ("parse_rate:-5%", "rule 'parse_rate:-5%': parse_rate is a rate; give its limit as a "
                       "difference, e.g. parse_rate:-0.05"),
    ("", "rule '': empty"),
])
def test_rule_errors_name_the_rule(spec: str, message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules([spec])
    assert str(info.value).startswith(message)


def test_parse_rules_splits_commas_and_later_rules_win() -> None:
    rules = parse_rules(["p50_latency:+10%,parse_rate:-0.01", "p50_latency:+20%"])
    assert set(rules) == set(DEFAULT_RULES)
    assert rules["p50_latency"].threshold == pytest.approx(0.2)
    assert rules["parse_rate"].threshold == pytest.approx(0.01)
    assert rules["success_rate"] == DEFAULT_RULES["success_rate"]


@pytest.mark.parametrize(("specs", "expected"), [
    ([], set(DEFAULT_RULES)),
    (["p95_latency:+10%"], {*DEFAULT_RULES, "p95_latency"}),
    (["none"], set()),
    (["NONE", "p95_latency:+10%"], {"p95_latency"}),
    (["p95_latency:+10%,none"], set()),
    (["none,p95_latency:+10%", "parse_rate:-0.01"], {"p95_latency", "parse_rate"}),
    (["p50_latency:off", "energy_per_token:OFF"], set(DEFAULT_RULES) - {
        "p50_latency", "energy_per_token"}),
    (["p95_latency:off"], set(DEFAULT_RULES)),  # dropping an absent rule: nothing to do
    (["p50_latency:off", "p50_latency:+5%"], set(DEFAULT_RULES)),
])
def test_parse_rules_edits_the_defaults(specs: list[str], expected: set[str]) -> None:
    assert set(parse_rules(specs)) == expected


def test_parse_rules_on_another_base() -> None:
    base = parse_rules(["none,p95_latency:+10%"])
    assert set(parse_rules(["tokens_per_s:-5%"], base=base)) == {"p95_latency", "tokens_per_s"}
    assert parse_rules(["p95_latency:off"], base=base) == {}
    with pytest.raises(RuleError, match=r"^rule 'latency:off': unknown metric 'latency'"):
        parse_rules(["latency:off"])


def test_default_rules() -> None:
    assert "prompt_tokens_per_s" in compare.METRICS  # displayed, never gated by default
    assert {r.text for r in DEFAULT_RULES.values()} == {
        "p50_latency:+10%", "tokens_per_s:-10%", "parse_rate:-0.05", "success_rate:-0.01",
        "energy_per_token:+10%",
    }


# ----------------------------------------------------------------------------- loading


def test_load_run_groups_records_by_run_and_benchmark() -> None:
    run = load_run(REAL)
    assert set(run.columns) == {(run.run_id, b["id"]) for b in run.doc["benchmarks"]}
    assert sum(c.records for c in run.columns.values()) == 8  # 2 x (1 warm-up + 3 measured)
    assert sum(c.measured for c in run.columns.values()) == 6


def test_a_directory_gives_its_newest_finished_run(tmp_path: Path) -> None:
    write_run(tmp_path, "old", [Bench(BASE16)], started_at="2026-11-23T09:00:00+00:00")
    write_run(tmp_path, "new", [Bench(BASE16)], started_at="2026-11-23T10:00:00+00:00")
    write_run(tmp_path, "now", [Bench(BASE16)], started_at="2026-11-23T11:00:00+00:00",
              status="running")
    (tmp_path / "results-zzz.json").write_text("{", encoding="utf-8")
    run = load_run(tmp_path)
    assert run.run_id == "new"
    assert len(run.notes) == 1
    assert "skipped 1 unreadable results file" in run.notes[0]
    assert load_run(tmp_path, exclude_run_id="new").run_id == "old"
    assert load_run("latest", tmp_path).run_id == "new"
    assert load_run("latest", tmp_path, exclude_run_id="new").run_id == "old"


def test_an_empty_directory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"^no results-\*\.json in "):
        load_run(tmp_path)
    with pytest.raises(ResultsError, match="no such directory"):
        load_run("latest", tmp_path / "absent")


def test_a_directory_of_only_running_runs_is_bad_input(tmp_path: Path) -> None:
    write_run(tmp_path, "now", [Bench(BASE16)], status="running")
    with pytest.raises(ResultsError, match="no finished results document in"):
        load_run(tmp_path)


def test_missing_records_file_is_bad_input(tmp_path: Path) -> None:
    path = write_run(tmp_path, "r", [Bench(BASE16)])
    (tmp_path / "results-r.records.jsonl").unlink()
    with pytest.raises(ResultsError, match=r"records file .*results-r\.records\.jsonl is missing"):
        load_run(path)


def test_torn_records_line_is_bad_input(tmp_path: Path) -> None:
    path = write_run(tmp_path, "r", [Bench(BASE16)])
    rpath = tmp_path / "results-r.records.jsonl"
    rpath.write_text(rpath.read_text()[:-40], encoding="utf-8")
    with pytest.raises(ResultsError, match=r"records\.jsonl:17: not a JSON record .*torn"):
        load_run(path)


def test_invalid_record_is_bad_input(tmp_path: Path) -> None:
    path = write_run(tmp_path, "r", [Bench(BASE16)])
    rpath = tmp_path / "results-r.records.jsonl"
    rpath.write_text(rpath.read_text() + '{"run_id": "r"}\n', encoding="utf-8")
    with pytest.raises(ResultsError, match=r"records\.jsonl:18: not a valid record"):
        load_run(path)


# ----------------------------------------------------------------------------- rendering


def test_renderers_mark_gated_regressions(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)])
    lines = render_table(comparison)
    marked = [line for line in lines if line.startswith("!!")]
    assert any("p50_latency" in line and "REGRESSED" in line for line in marked)
    assert lines[-1].startswith(f"{len(comparison.gated)} regressions / 1 benchmark compared")
    md = render_markdown(comparison)
    assert md.startswith(f"### vlmbench compare: {len(comparison.gated)} regressions / "
                         "1 benchmark (FAILED)")
    assert "| `test_photo_score[tiny-vlm-q4_k_m-cpu]` | p50_latency |" in md
    assert "**:x: REGRESSED**" in md
    doc = json.loads(json.dumps(to_json(comparison), allow_nan=False))
    assert doc["exit_status"] == EXIT_REGRESSION
    assert {"benchmark": TEST_ID, "metric": "p50_latency"} in doc["gated"]
    p50 = next(m for m in doc["pairs"][0]["metrics"] if m["metric"] == "p50_latency")
    assert p50["verdict"] == "regressed"
    assert p50["test"] == "mann-whitney"
    assert p50["rule"]["limit"] == "+10%"
    assert len(p50["ci"]) == 2


def test_comparison_is_deterministic(tmp_path: Path) -> None:
    cur = [Bench(latencies(8, 1.12, 0.6, seed=4))]
    first = to_json(run_pair(tmp_path, [Bench(latencies(8, 1.0, 0.6, seed=3))], cur))
    second = to_json(run_pair(tmp_path, [Bench(latencies(8, 1.0, 0.6, seed=3))], cur))
    assert first == second


# ----------------------------------------------------------------------------- several runs


DRIFT = [1.0, 1.18, 0.92, 1.1, 0.97]  # five baseline runs' centres: this machine's drift


def baseline_dir(directory: Path, centers: Sequence[float], *, n: int = 16,
                 **bench: Any) -> Path:
    """Baseline runs b0, b1, ... (b0 the oldest) whose latencies centre on `centers`."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, center in enumerate(centers):
        write_run(directory, f"b{i}", [Bench(latencies(n, center, 0.03, seed=20 + i), **bench)],
                  started_at=f"2026-11-23T1{i}:00:00+00:00")
    return directory


def current_run(directory: Path, center: float, **bench: Any) -> compare.Run:
    path = write_run(directory, "cur", [Bench(latencies(16, center, 0.03, seed=99), **bench)],
                     started_at="2026-11-24T00:00:00+00:00")
    return load_run(path)


def test_run_level_judges_timing_against_the_between_run_drift(tmp_path: Path) -> None:
    base = compare.load_baseline(baseline_dir(tmp_path / "base", DRIFT))
    assert [r.run_id for r in base.runs] == ["b4", "b3", "b2", "b1", "b0"]
    cur = current_run(tmp_path, 1.2)
    comparison = compare_runs(base, cur)
    m = result(comparison, "p50_latency")
    assert (m.mode, m.k, m.test, m.n_baseline, m.n_current) == ("runs", 5, "run-level t", 80, 16)
    rl = m.runs
    assert rl is not None
    medians = [float(np.median(latencies(16, c, 0.03, seed=20 + i)))
               for i, c in enumerate(DRIFT)][::-1]
    logs = np.log(medians)
    assert rl.values == pytest.approx(medians)
    assert m.baseline == pytest.approx(float(np.exp(logs.mean())))  # the geometric mean
    se = float(logs.std(ddof=1)) * np.sqrt(1 + 1 / 5)
    current = float(np.median(latencies(16, 1.2, 0.03, seed=99)))
    assert rl.t == pytest.approx((np.log(current) - logs.mean()) / se)
    assert m.p_value == pytest.approx(noise.t_two_sided_p(rl.t, 4))
    assert m.effect == pytest.approx(current / m.baseline)
    assert m.ci == pytest.approx((m.effect * np.exp(-2.776445105 * se),
                                  m.effect * np.exp(2.776445105 * se)), rel=1e-6)
    assert m.mde == pytest.approx(max(0.10, float(np.expm1(4.604094871 * se))), rel=1e-6)
    assert m.request_p_value is not None
    assert m.request_p_value < 1e-3  # the requests alone would call +17% real...
    assert m.verdict == "unchanged"  # ... but it is within what the machine drifts
    assert m.note is not None
    assert m.note.startswith("beyond threshold but within the between-run drift, p=")
    tokens = result(comparison, "tokens_per_s")  # lower is worse: MDE below 1
    assert tokens.mde == pytest.approx(max(0.10, -float(np.expm1(-tokens.runs.detectable))))
    assert not any("one baseline run" in n for n in comparison.notes)
    assert "5 runs, drift CV" in compare.evidence(m)


def test_run_level_gates_a_slowdown_beyond_the_drift(tmp_path: Path) -> None:
    base = compare.load_baseline(baseline_dir(tmp_path / "base", DRIFT))
    comparison = compare_runs(base, current_run(tmp_path, 2.0))
    m = result(comparison, "p50_latency")
    assert (m.mode, m.verdict, m.gated) == ("runs", "regressed", True)
    assert m.ci is not None
    assert m.ci[0] > 1.0
    assert comparison.exit_status == EXIT_REGRESSION
    faster = compare_runs(base, current_run(tmp_path, 0.5))
    assert result(faster, "p50_latency").verdict == "improved"


def test_rates_pool_the_requests_of_every_baseline_run(tmp_path: Path) -> None:
    base = compare.load_baseline(baseline_dir(tmp_path / "base", DRIFT))
    errors = [i % 2 == 1 for i in range(16)]
    comparison = compare_runs(base, current_run(tmp_path, 1.0, errors=errors))
    m = result(comparison, "success_rate")
    assert (m.mode, m.k, m.test, m.n_baseline, m.n_current) == ("requests", 5, "fisher", 80, 16)
    assert m.p_value == pytest.approx(noise.fisher_exact(80, 80, 8, 16))
    assert m.verdict == "regressed"
    drop = noise.fisher_detectable_drop(80, 80, 16, 0.01)
    assert drop is not None
    assert m.mde == pytest.approx(max(0.01, drop))
    assert compare.evidence(m) == "per request, 5 runs pooled"


def test_one_baseline_run_gates_timing_beyond_limit_plus_allowance(tmp_path: Path) -> None:
    slow = [Bench(latencies(16, 1.3, 0.03, seed=2))]
    comparison = run_pair(tmp_path, [Bench(BASE16)], slow, drift_allowance=0.25)
    m = result(comparison, "p50_latency")
    assert (m.mode, m.k, m.allowance) == ("one-run", 1, 0.25)
    assert m.p_value is not None
    assert m.p_value < 1e-6
    assert m.verdict == "unchanged"
    assert m.note == "beyond threshold but within the drift allowance of one baseline run (+25%)"
    assert m.mde == pytest.approx(0.35)
    assert any(n.startswith("one baseline run: give several (--baseline-runs) to gate on "
                            "measured drift") for n in comparison.notes)
    assert result(comparison, "success_rate").allowance == 0.0  # rates: no allowance
    much_slower = run_pair(tmp_path, [Bench(BASE16)], [Bench(latencies(16, 1.5, 0.03, seed=2))],
                           drift_allowance=0.25)
    assert result(much_slower, "p50_latency").verdict == "regressed"
    absolute = run_pair(tmp_path, [Bench(BASE16)], slow, rules=["p50_latency:+0.1"],
                        drift_allowance=0.25)
    p50 = result(absolute, "p50_latency")
    assert p50.mde == pytest.approx(0.1 + 0.25 * p50.baseline)
    assert p50.verdict == "unchanged"  # +0.3 s < 0.1 s + 25% of 1 s


def test_a_merged_baseline_counts_each_run_and_the_cap_keeps_the_newest(tmp_path: Path) -> None:
    merged = [Bench(latencies(16, c, 0.03, seed=30 + i), run_id=f"r{i}",
                    started_at=f"2026-11-23T1{i}:00:00+00:00") for i, c in enumerate(DRIFT)]
    path = write_run(tmp_path, "merged", merged)
    cur = current_run(tmp_path, 1.0)
    every = compare_runs(compare.load_baseline(path), cur)
    assert every.pairs[0].k == 5
    assert result(every, "p50_latency").mode == "runs"
    capped = compare_runs(compare.load_baseline(path, runs=3), cur)
    assert [i.run_id for i in capped.pairs[0].baselines] == ["r4", "r3", "r2"]
    assert any("5 runs of" in n and "compared the newest 3" in n for n in capped.notes)
    one = compare_runs(compare.load_baseline(path, runs=1), cur)
    assert result(one, "p50_latency").mode == "one-run"


def test_a_directory_baseline_keeps_the_newest_runs_of_one_commit(tmp_path: Path) -> None:
    saved = baseline_dir(tmp_path / "saved", DRIFT[:3])
    write_run(saved, "other", [Bench(BASE16)], started_at="2026-11-23T09:00:00+00:00",
              commit="0" * 40)
    write_run(saved, "unknown", [Bench(BASE16)], started_at="2026-11-23T08:00:00+00:00",
              commit=None)
    base = compare.load_baseline(saved)
    assert [r.run_id for r in base.runs] == ["b2", "b1", "b0"]
    [note] = base.notes
    assert note.startswith(f"baseline: the 3 newest finished runs in {saved}, of commit "
                           f"{COMMIT[:12]} (the newest run's); 2 of other or unknown commits "
                           "left out")
    newest = write_run(saved, "newest", [Bench(BASE16)], started_at="2026-11-23T23:00:00+00:00",
                       commit="1" * 40)
    assert [r.run_id for r in compare.load_baseline(saved).runs] == ["newest"]
    current = load_run(newest)
    assert [r.run_id for r in compare.load_baseline(
        saved, exclude_run_id=current.run_id).runs] == ["b2", "b1", "b0"]
    files = compare.load_baseline([saved / "results-b0.json", saved / "results-other.json"])
    assert any("baseline runs of 2 commits" in n for n in files.notes)


def test_baseline_runs_of_another_prompt_are_left_out(tmp_path: Path) -> None:
    saved = baseline_dir(tmp_path / "saved", DRIFT[:3])
    write_run(saved, "b9", [Bench(BASE16, prompt_version="f" * 16)],
              started_at="2026-11-23T19:00:00+00:00")
    comparison = compare_runs(compare.load_baseline(saved), current_run(tmp_path, 1.0))
    assert comparison.pairs[0].k == 3
    assert any("1 of 4 runs of" in n and "another prompt or dataset" in n
               for n in comparison.notes)
    changed = compare_runs(compare.load_baseline(saved),
                           current_run(tmp_path, 1.0, prompt_version="e" * 16))
    assert changed.pairs == []
    assert changed.not_comparable[0].reason is not None
    assert changed.not_comparable[0].reason.startswith("prompt_version changed (ffff")


def test_baseline_runs_with_too_few_samples_are_left_out(tmp_path: Path) -> None:
    saved = baseline_dir(tmp_path / "saved", DRIFT[:3])
    write_run(saved, "short", [Bench(latencies(3, 1.0, 0.03, seed=5))],
              started_at="2026-11-23T19:00:00+00:00")
    comparison = compare_runs(compare.load_baseline(saved), current_run(tmp_path, 1.0))
    m = result(comparison, "p50_latency")
    assert (m.mode, m.k) == ("runs", 3)
    assert m.note is not None
    assert "1 baseline run with fewer than 5 samples left out" in m.note
    two_short = baseline_dir(tmp_path / "two", [1.0, 1.1], n=3)
    write_run(two_short, "long", [Bench(BASE16)], started_at="2026-11-23T19:00:00+00:00")
    single = result(compare_runs(compare.load_baseline(two_short), current_run(tmp_path, 1.0),
                                 drift_allowance=0.25), "p50_latency")
    assert (single.mode, single.k, single.allowance) == ("one-run", 1, 0.25)


def test_energy_left_out_of_runs_without_it(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    for i, c in enumerate(DRIFT[:3]):
        lat = latencies(16, c, 0.03, seed=20 + i)
        write_run(saved, f"b{i}", [Bench(lat, energy_j=[0.1 * v for v in lat])],
                  started_at=f"2026-11-23T1{i}:00:00+00:00")
    write_run(saved, "b9", [Bench(BASE16)], started_at="2026-11-23T19:00:00+00:00")
    cur = current_run(tmp_path, 1.0, energy_j=[0.1] * 16)
    m = result(compare_runs(compare.load_baseline(saved), cur), "energy_per_token")
    assert (m.mode, m.k) == ("runs", 3)
    assert m.note is not None
    assert "1 of 4 baseline runs left out: no per-request energy" in m.note


def test_busy_machines_are_flagged(tmp_path: Path) -> None:
    busy = {"machine": {"busy": True, "note": "another pytest ran", "loadavg_1m": 3.2,
                        "other_cpu_fraction": 0.45, "steal_fraction": None}}
    quiet = {"machine": {"busy": False, "note": None, "loadavg_1m": 0.1,
                         "other_cpu_fraction": 0.01, "steal_fraction": 0.0}}
    saved = tmp_path / "saved"
    saved.mkdir()
    for i, extra in enumerate([busy, quiet, {}]):  # {}: an older document, unknown
        write_run(saved, f"b{i}", [Bench(BASE16, extra=extra)],
                  started_at=f"2026-11-23T1{i}:00:00+00:00")
    comparison = compare_runs(compare.load_baseline(saved),
                              current_run(tmp_path, 1.0, extra={"machine": {"busy": True}}))
    assert comparison.pairs[0].flags == [
        "baseline run b0: machine busy (other processes took 45% of the CPUs, load 3.20)",
        "current: machine busy",
    ]
    assert "machine busy" in render_markdown(comparison)
    busy["machine"]["cpus"] = 2  # a document that knows its CPUs: the amount, said once
    flags = _busy_flag(busy)
    assert flags == ("machine busy (other processes took 45% of 2 CPUs (0.9 CPU), "
                     "load 3.20)")


def _busy_flag(extra: dict[str, Any]) -> str | None:
    from pytest_vlmbench.compare.core import _busy

    flag = _busy("x", extra)
    return None if flag is None else flag.removeprefix("x: ")


BUSY = {"machine": {"busy": True, "note": "the machine was busy", "other_cpu_fraction": 0.4}}


def test_a_busy_current_run_is_not_judged_on_timing(tmp_path: Path) -> None:
    """Twice as slow while others used the CPUs: the timings describe the machine, so
    timing verdicts are inconclusive (not gated); rates are still judged."""
    base = compare.load_baseline(baseline_dir(tmp_path / "base", DRIFT))
    comparison = compare_runs(base, current_run(tmp_path, 2.0, extra=BUSY))
    for name in ("p50_latency", "tokens_per_s"):
        m = result(comparison, name)
        assert m.verdict == "inconclusive"
        assert "busy during the current run" in (m.note or "")
    assert result(comparison, "success_rate").verdict == "unchanged"
    assert comparison.exit_status == compare.EXIT_OK
    quiet = compare_runs(base, current_run(tmp_path / "q", 2.0))
    assert result(quiet, "p50_latency").verdict == "regressed"  # the same data, quiet


def test_busy_baseline_runs_are_left_out_of_the_drift(tmp_path: Path) -> None:
    """A busy baseline run (here 3x slower) would widen the measured drift until nothing
    is detectable; it is left out of timing verdicts while quiet runs remain."""
    saved = baseline_dir(tmp_path / "base", DRIFT)
    write_run(saved, "b9", [Bench(latencies(16, 3.0, 0.03, seed=7), extra=BUSY)],
              started_at="2026-11-23T19:30:00+00:00")
    base = compare.load_baseline(saved, runs=6)
    comparison = compare_runs(base, current_run(tmp_path, 2.0))
    m = result(comparison, "p50_latency")
    assert m.k == 5
    assert m.verdict == "regressed"
    assert "1 busy baseline run left out" in (m.note or "")


def test_prompt_rate_is_compared_but_not_gated(tmp_path: Path) -> None:
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16)])
    m = result(comparison, "prompt_tokens_per_s")
    prefill_s = [int(0.15 * lat * 1e9) / 1e9 for lat in BASE16]
    assert m.baseline == pytest.approx(float(np.median([62 / p for p in prefill_s])), rel=1e-9)
    assert not m.gated
    assert m.verdict == "unchanged"
    stream = run_pair(tmp_path, [Bench(BASE16, engine=False)], [Bench(BASE16, engine=False)])
    assert "prompt_tokens_per_s" not in verdicts(stream)  # no prefill counts: not shown


def test_failed_requests_are_timed_but_only_count_in_success_rate(tmp_path: Path) -> None:
    errors = [i % 4 == 0 for i in range(16)]
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(BASE16, errors=errors)])
    for metric in ("p50_latency", "p50_ttft", "tokens_per_s", "prompt_tokens_per_s"):
        assert result(comparison, metric).n_current == 12, metric
    assert result(comparison, "success_rate").n_current == 16


# ----------------------------------------------------------------------------- at scale


def test_a_large_comparison_is_correct(tmp_path: Path) -> None:
    """20,000 records a side: the large-sample paths (sorted columns, order-statistic
    bootstrap, log-space Fisher, searchsorted U) agree with direct computations."""
    n = 20_000
    rng = np.random.default_rng(11)
    base_lat = [float(v) for v in rng.lognormal(0.0, 0.1, n)]
    cur_lat = [float(v) for v in 1.05 * rng.lognormal(0.0, 0.1, n)]
    errors = [bool(e) for e in rng.random(n) < 0.02]
    comparison = run_pair(tmp_path, [Bench(base_lat)], [Bench(cur_lat, errors=errors)])
    base_s = [int(v * 1e9) / 1e9 for v in base_lat]  # as make_records times them
    cur_s = [int(v * 1e9) / 1e9 for v, e in zip(cur_lat, errors, strict=True) if not e]
    for metric, q in (("p50_latency", 50), ("p95_latency", 95), ("p99_latency", 99)):
        m = result(comparison, metric)
        assert (m.n_baseline, m.n_current) == (n, len(cur_s))
        assert m.baseline == pytest.approx(float(np.percentile(base_s, q)), rel=1e-12)
        assert m.current == pytest.approx(float(np.percentile(cur_s, q)), rel=1e-12)
        assert m.ci is not None
        assert m.effect is not None
        assert m.ci[0] < m.effect < m.ci[1]
        assert m.ci[1] - m.ci[0] < 0.05  # 20,000 requests: a narrow interval
    mean = result(comparison, "mean_latency")
    assert mean.baseline == pytest.approx(float(np.mean(base_s)), rel=1e-12)
    p50 = result(comparison, "p50_latency")
    ranks = np.argsort(np.argsort(np.concatenate((base_s, cur_s)), kind="stable"))
    u = float(ranks[:n].sum() + n) - n * (n + 1) / 2.0  # no ties in these latencies
    sd = np.sqrt(n * len(cur_s) * (n + len(cur_s) + 1) / 12.0)
    z = (abs(u - n * len(cur_s) / 2.0) - 0.5) / sd
    assert p50.p_value == pytest.approx(math.erfc(z / math.sqrt(2.0)), rel=1e-9)
    assert p50.p_value < 1e-100
    assert p50.effect == pytest.approx(1.05, abs=0.01)
    assert p50.verdict == "unchanged"  # +5% is inside the +10% limit, however significant
    success = result(comparison, "success_rate")
    assert success.current == pytest.approx(1 - sum(errors) / n)
    assert success.p_value is not None
    assert success.p_value < 1e-6
    assert success.verdict == "regressed"
    assert success.mde == pytest.approx(0.01)  # the limit: the test alone sees far less
    drop = noise.fisher_detectable_drop(n, n, n, 0.01)
    assert drop is not None
    assert drop < 0.002


# ----------------------------------------------------------------------------- bad records


def _spoil(tmp_path: Path, lineno: int, change: dict[str, Any],
           drop: str | None = None) -> Path:
    """A run of 40 records whose line `lineno` is changed: past the fully validated head
    (results.SAMPLE_HEAD), so only the fast checks see it."""
    path = write_run(tmp_path, "r", [Bench(latencies(39, 1.0, 0.03, seed=1))])
    rpath = tmp_path / "results-r.records.jsonl"
    lines = rpath.read_text().splitlines()
    record = {**json.loads(lines[lineno - 1]), **change}
    if drop:
        del record[drop]
    lines[lineno - 1] = json.dumps(record)
    rpath.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("change", "drop", "message"), [
    ({"t_end_ns": "late"}, None, r"records\.jsonl:30: not a valid record at t_end_ns: 'late'"),
    ({}, "counts", r"records\.jsonl:30: not a valid record at \(root\): 'counts' is a required"),
    ({"extra": 1}, None, r"records\.jsonl:30: not a valid record at \(root\): Additional"),
    ({"phase": "measured"}, None, r"records\.jsonl:30: not a valid record at phase: 'measured'"),
    ({"stages_ns": {"decode": "x"}}, None, r"records\.jsonl:30: not a valid record at "
                                           r"stages_ns/decode"),
    ({"error": "boom"}, None, r"records\.jsonl:30: not a valid record at error"),
])
def test_a_bad_record_past_the_sample_is_one_clear_error(
    tmp_path: Path, change: dict[str, Any], drop: str | None, message: str
) -> None:
    assert results.SAMPLE_HEAD < 30 < results.SAMPLE_EVERY
    path = _spoil(tmp_path, 30, change, drop)
    with pytest.raises(ResultsError, match=message):
        load_run(path)


def test_an_unknown_parse_outcome_is_one_clear_error(tmp_path: Path) -> None:
    path = _spoil(tmp_path, 31, {"parse": "validish"})
    with pytest.raises(ResultsError, match=r"records\.jsonl:31: not a valid record at parse"):
        load_run(path)


def test_a_directory_skips_a_chosen_run_that_fails_to_load(tmp_path: Path) -> None:
    saved = baseline_dir(tmp_path / "saved", DRIFT[:3])
    bad = write_run(saved, "bad", [Bench(BASE16)], started_at="2026-11-23T23:00:00+00:00")
    doc = json.loads(bad.read_text())
    del doc["tool"]  # still looks like a results document, but fails the schema
    bad.write_text(json.dumps(doc))
    base = compare.load_baseline(saved, runs=2)
    assert [r.run_id for r in base.runs] == ["b2", "b1"]
    assert base.notes[0].startswith(f"skipped 1 unreadable results file in {saved}; the first: "
                                    f"{bad}: not a valid pytest-vlmbench results document")
    assert load_run(saved).run_id == "b2"
