"""Tests for the pytest gate (gate.py) with a baseline of several runs, and its options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pytest_vlmbench import compare
from pytest_vlmbench.plugin import options
from pytest_vlmbench.plugin.gate import Gate, GateError
from pytest_vlmbench.plugin.options import Options
from pytest_vlmbench.run.records import read_records
from tests.test_compare import DRIFT, Bench, baseline_dir, latencies, write_run


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def _current(directory: Path, center: float) -> tuple[Path, dict, dict, list[dict]]:
    """A current run as the plugin holds it: document, entry and records in memory."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_run(directory, "cur", [Bench(latencies(16, center, 0.03, seed=99))],
                     started_at="2026-11-24T00:00:00+00:00")
    doc = json.loads(path.read_text())
    records = read_records(path.with_name("results-cur.records.jsonl"))
    return path, doc, doc["benchmarks"][0], records


def test_the_gate_judges_each_benchmark_against_several_runs(tmp_path: Path) -> None:
    saved = baseline_dir(tmp_path / ".vlmbench", DRIFT)
    gate = Gate("latest", saved, [], "cur")
    assert [r.run_id for r in gate.baseline.runs] == ["b4", "b3", "b2", "b1", "b0"]
    path, doc, entry, records = _current(tmp_path / "out", 1.2)  # within the drift
    props, failure = gate.check(doc, path, entry, records)
    assert failure is None
    p50 = dict(props)["vlm_compare_p50_latency"]
    assert p50.startswith("p50_latency unchanged +")
    assert "5 runs, drift CV" in p50
    assert "MDE +" in p50
    path, doc, entry, records = _current(tmp_path / "slow", 2.0)
    _props, failure = gate.check(doc, path, entry, records)
    assert failure is not None
    assert failure.startswith("regression against the baseline (.vlmbench): p50_latency "
                              "regressed")
    comparison = gate.finish(path)
    assert comparison is not None
    assert comparison.exit_status == compare.EXIT_REGRESSION
    assert gate.summary_path == path.with_name("results-cur.compare.md")
    assert "5 runs, drift CV" in gate.summary_path.read_text()


def test_the_gate_with_one_baseline_run_uses_the_drift_allowance(tmp_path: Path) -> None:
    saved = baseline_dir(tmp_path / ".vlmbench", DRIFT)
    path, doc, entry, records = _current(tmp_path / "out", 1.25)
    one = Gate("latest", saved, [], "cur", baseline_runs=1)
    props, failure = one.check(doc, path, entry, records)
    assert failure is None  # about +29% over the newest run (0.97): within +10% + 25%
    assert "1 run, +25% drift allowance" in dict(props)["vlm_compare_p50_latency"]
    strict = Gate("latest", saved, [], "cur", baseline_runs=1, drift_allowance=0.0)
    _props, failure = strict.check(doc, path, entry, records)
    assert failure is not None


def test_gate_rules_edit_the_defaults(tmp_path: Path) -> None:
    saved = baseline_dir(tmp_path / ".vlmbench", DRIFT[:2])
    gate = Gate("latest", saved, ["p95_latency:+20%"], "cur")
    assert gate.rules is not None
    assert set(gate.rules) == {*compare.DEFAULT_RULES, "p95_latency"}
    with pytest.raises(GateError, match=r"^--vlm-fail-on: rule 'p95_latency:-1%'"):
        Gate("latest", saved, ["p95_latency:-1%"], "cur")
    with pytest.raises(GateError, match=r"^--vlm-compare=latest: .*no such directory"):
        Gate("latest", tmp_path / "nothing-here", [], "cur")


def test_options_for_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makeini("""
        [pytest]
        vlm_fail_on =
            none
            p95_latency:+20%
        vlm_baseline_runs = 7
        vlm_drift_allowance = 30%
    """)
    config = pytester.parseconfig()
    opts = Options.from_config(config)
    assert (opts.fail_on, opts.baseline_runs, opts.drift_allowance) == (
        ("none", "p95_latency:+20%"), 7, 0.3)
    config = pytester.parseconfig(f"{options.FAIL_ON}=p50_latency:off,tokens_per_s:-5%",
                                  f"{options.BASELINE_RUNS}=3",
                                  f"{options.DRIFT_ALLOWANCE}=0")
    opts = Options.from_config(config)
    assert opts.fail_on == ("none", "p95_latency:+20%", "p50_latency:off", "tokens_per_s:-5%")
    assert set(compare.parse_rules(opts.fail_on)) == {"p95_latency", "tokens_per_s"}
    assert (opts.baseline_runs, opts.drift_allowance) == (3, 0.0)


def test_option_defaults_match_compare() -> None:
    assert options.DEFAULT_BASELINE_RUNS == compare.DEFAULT_BASELINE_RUNS
    assert options.DEFAULT_DRIFT_ALLOWANCE == compare.DEFAULT_DRIFT_ALLOWANCE


@pytest.mark.parametrize(("text", "value"), [("0.25", 0.25), ("25%", 0.25), (" 0 ", 0.0),
                                             ("1.5", 1.5)])
def test_allowance_parses_fractions_and_percentages(text: str, value: float) -> None:
    assert options.allowance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["-0.1", "lots", "nan", "inf", "%"])
def test_allowance_rejects_junk(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a fraction"):
        options.allowance(text)


def test_latest_finds_runs_under_any_results_file_name(tmp_path: Path) -> None:
    """`--vlm-out=out/b2.json` or `vlm_out = out/mine.json`: the output directory's runs
    are found by content, and its other files (notes, logs, summaries) are left alone."""
    saved = baseline_dir(tmp_path / "out", DRIFT[:3])
    for path in saved.glob("results-b*.json"):  # b0.json, b1.json, b2.json
        path.rename(path.with_name(path.name.removeprefix("results-")))
    (saved / "notes.json").write_text('{"kind": "notes"}')
    (saved / "b2.compare.md").write_text("### vlmbench compare\n")
    gate = Gate("latest", saved, [], "cur")
    assert [r.run_id for r in gate.baseline.runs] == ["b2", "b1", "b0"]
    assert not [n for n in gate.baseline.notes if "unreadable" in n]


def test_latest_without_runs_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(GateError, match=r"^--vlm-compare=latest: no results-\*\.json in .*out, "
                       r"nor another results document .*\(latest: the output directory, "
                       r"where this run's results file goes \(--vlm-out\)\)$"):
        Gate("latest", tmp_path / "out", [], "cur")
    with pytest.raises(GateError) as info:  # a named directory is not `latest`
        Gate(str(tmp_path / "out"), tmp_path / "elsewhere", [], "cur")
    assert "(latest: " not in str(info.value)
