"""Tests for compare.py: loading runs, matching benchmarks, rules, verdicts and rendering.

Runs are synthetic but valid documents: the header and entry shape of a real run
(tests/data, the default suite on a CPU), with records of known latency distributions,
summaries computed by summary.summarize, and every document validated on write.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_vlmbench import compare, results
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
from pytest_vlmbench.results import ResultsError
from pytest_vlmbench.summary import summarize

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
    started_at: str = "2026-11-23T10:00:00+00:00"
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
            counts={"decode_evals": 47, "decode_tokens": 47} if b.engine else {},
            error={"stage": "request", "type": "RuntimeError", "message": "boom"}
            if failed else None,
        )
        out.append(r)
    return out


def make_entry(template: dict[str, Any], run_id: str, b: Bench,
               records: list[dict[str, Any]]) -> dict[str, Any]:
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
        started_at=b.started_at, **b.extra,
    )
    if b.fail_on is not None:
        entry["fail_on"] = b.fail_on
    return entry


def write_run(directory: Path, run_id: str, benches: Sequence[Bench], *,
              started_at: str = "2026-11-23T10:00:00+00:00", status: str = "complete") -> Path:
    """A valid results document and its records file; returns the document's path."""
    real = json.loads(REAL.read_text())
    records: list[dict[str, Any]] = []
    entries = []
    for b in benches:
        recs = make_records(b.run_id or run_id, b)
        records.extend(recs)
        entries.append(make_entry(real["benchmarks"][0], run_id, b, recs))
    doc = {**real, "run_id": run_id, "started_at": started_at, "finished_at": started_at,
           "status": status, "benchmarks": entries,
           "records_file": f"results-{run_id}.records.jsonl"}
    path = directory / f"results-{run_id}.json"
    results.write_atomic(path, doc)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (directory / doc["records_file"]).write_text(lines, encoding="utf-8")
    return path


def run_pair(tmp_path: Path, base: Sequence[Bench], cur: Sequence[Bench],
             rules: Sequence[str] | None = None, **kwargs: Any) -> Comparison:
    b = write_run(tmp_path, "base", base)
    c = write_run(tmp_path, "cur", cur, started_at="2026-11-23T11:00:00+00:00")
    parsed = parse_rules(rules) if rules is not None else None
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
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)], rules=["parse_rate:-0.01"])
    m = result(comparison, "p50_latency")
    assert m.verdict == "regressed"
    assert not m.gated
    assert comparison.gated == []
    assert comparison.exit_status == EXIT_OK
    assert any("regressed (not gated)" in line for line in render_table(comparison))


def test_rules_replace_the_defaults(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    comparison = run_pair(tmp_path, [Bench(BASE16)], [Bench(slow)], rules=["p95_latency:+50%"])
    gated = {m.metric for m in comparison.pairs[0].metrics if m.gated}
    assert gated == {"p95_latency"}
    assert comparison.exit_status == EXIT_OK


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
    assert set(rules) == {"p50_latency", "parse_rate"}
    assert rules["p50_latency"].threshold == pytest.approx(0.2)


def test_default_rules() -> None:
    assert {r.text for r in DEFAULT_RULES.values()} == {
        "p50_latency:+10%", "tokens_per_s:-10%", "parse_rate:-0.05", "success_rate:-0.01",
        "energy_per_token:+10%",
    }


# ----------------------------------------------------------------------------- loading


def test_load_run_groups_records_by_run_and_benchmark() -> None:
    run = load_run(REAL)
    assert set(run.records) == {(run.run_id, b["id"]) for b in run.doc["benchmarks"]}
    assert sum(len(v) for v in run.records.values()) == 8  # 2 x (1 warm-up + 3 measured)


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
