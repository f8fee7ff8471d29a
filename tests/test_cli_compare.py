"""Tests for `vlmbench compare`: exit statuses, bad input, formats and the step summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_vlmbench import cli, compare
from pytest_vlmbench.compare import (
    EXIT_NOTHING_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
)
from tests.test_compare import BASE16, REAL, Bench, latencies, write_run

SLOW = latencies(16, 1.6, 0.03, seed=2)  # beyond +10% plus the drift allowance of one run


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run inside GitHub Actions too: never append to the real step summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def pair(tmp_path: Path, base: Bench, cur: Bench) -> tuple[str, str]:
    b = write_run(tmp_path, "base", [base], started_at="2026-11-23T10:00:00+00:00")
    c = write_run(tmp_path, "cur", [cur], started_at="2026-11-23T11:00:00+00:00")
    return str(b), str(c)


def test_identical_runs_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(BASE16))
    assert cli.main(["compare", b, c]) == EXIT_OK
    out = capsys.readouterr().out
    assert "0 regressions / 1 benchmark compared" in out
    assert "REGRESSED" not in out


def test_regression_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(SLOW))
    assert cli.main(["compare", b, c]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert any(line.startswith("!!") and "p50_latency" in line for line in out.splitlines())


def test_fail_on_edits_the_default_rules(tmp_path: Path) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(SLOW))
    # a rule for another metric keeps the default p50 and tokens/s gates
    assert cli.main(["compare", b, c, "--fail-on", "parse_rate:-0.01"]) == EXIT_REGRESSION
    assert cli.main(["compare", b, c, "--fail-on", "none,parse_rate:-0.01"]) == EXIT_OK
    assert cli.main(["compare", b, c, "--fail-on", "none",
                     "--fail-on", "p95_latency:+20%"]) == EXIT_REGRESSION
    assert cli.main(["compare", b, c, "--fail-on", "p50_latency:+50%,tokens_per_s:-50%",
                     "--fail-on", "p95_latency:+50%"]) == EXIT_OK  # 60% < 50% + 25%
    assert cli.main(["compare", b, c, "--fail-on", "p50_latency:off",
                     "--fail-on", "tokens_per_s:off"]) == EXIT_OK


def test_drift_allowance_of_one_baseline_run(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(latencies(16, 1.3, 0.03, seed=2)))
    assert cli.main(["compare", b, c]) == EXIT_OK  # +30% < +10% + 25%
    out = capsys.readouterr().out
    assert "within the drift allowance of one baseline run (+25%)" in out
    assert "one baseline run: give several (--baseline-runs)" in out
    assert cli.main(["compare", b, c, "--drift-allowance", "0"]) == EXIT_REGRESSION
    assert cli.main(["compare", b, c, "--drift-allowance", "15%"]) == EXIT_REGRESSION
    assert cli.main(["compare", b, c, "--drift-allowance", "0.2"]) == EXIT_OK
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", b, c, "--drift-allowance=-5%"])
    assert info.value.code == EXIT_USAGE
    assert "expected a fraction >= 0" in capsys.readouterr().err


def _runs(tmp_path: Path, centers: list[float], current: float) -> list[str]:
    """Baseline runs whose medians sit at `centers` (the machine drifting between runs),
    then a current run; paths in that order."""
    paths = [write_run(tmp_path, f"b{i}", [Bench(latencies(16, m, 0.03, seed=10 + i))],
                       started_at=f"2026-11-23T1{i}:00:00+00:00")
             for i, m in enumerate(centers)]
    cur = write_run(tmp_path, "cur", [Bench(latencies(16, current, 0.03, seed=99))],
                    started_at="2026-11-24T00:00:00+00:00")
    return [str(p) for p in [*paths, cur]]


DRIFTING = [1.0, 1.18, 0.92, 1.1, 0.97]  # between-run CV ~10%, as measured on this machine


def test_several_baseline_files_judge_timing_run_by_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _runs(tmp_path, DRIFTING, 1.2)  # +17% over the runs' centre: within the drift
    assert cli.main(["compare", *runs[-2:]]) == EXIT_OK  # one run: within +10% + 25% too
    capsys.readouterr()
    assert cli.main(["compare", *runs, "--format", "json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in doc["baseline"]["runs"]] == ["b4", "b3", "b2", "b1", "b0"]
    p50 = next(m for m in doc["pairs"][0]["metrics"] if m["metric"] == "p50_latency")
    assert (p50["mode"], p50["test"], p50["baseline_runs"]) == ("runs", "run-level t", 5)
    assert p50["run_level"]["k"] == 5
    assert 0.05 < p50["run_level"]["cv"] < 0.15
    assert p50["request_p_value"] < 1e-6  # per request, the shift is "significant"...
    assert p50["verdict"] == "unchanged"  # ... but not beyond the machine's drift
    assert p50["mde"] > 0.2
    # with the drift allowance off, one run gates on the same +17%: what run level avoids
    assert cli.main(["compare", runs[0], runs[-1], "--drift-allowance", "0"]) == EXIT_REGRESSION


def test_several_baseline_runs_catch_a_slowdown_beyond_the_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _runs(tmp_path, DRIFTING, 2.0)
    assert cli.main(["compare", *runs]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert any(line.startswith("!!") and "p50_latency" in line and "5 runs, drift CV" in line
               for line in out.splitlines())
    assert cli.main(["compare", *runs, "--baseline-runs", "1"]) == EXIT_REGRESSION
    assert "one baseline run" in capsys.readouterr().out


def test_a_baseline_directory_gives_its_newest_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    runs = _runs(saved, DRIFTING, 1.0)
    assert cli.main(["compare", str(saved), runs[-1], "--baseline-runs", "3",
                     "--format", "json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in doc["baseline"]["runs"]] == ["b4", "b3", "b2"]
    p50 = next(m for m in doc["pairs"][0]["metrics"] if m["metric"] == "p50_latency")
    assert p50["run_level"]["k"] == 3
    # two degrees of freedom: t(0.995, 2) = 9.92, so only a change of ~2.7x is detectable
    assert p50["mde"] > 1.0
    assert any("3 newest finished runs in" in n and "2 older left out" in n
               for n in doc["notes"])


def test_compare_needs_a_baseline_and_a_current(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", str(REAL)]) == EXIT_USAGE
    assert "needs a BASELINE and a CURRENT" in capsys.readouterr().err


def test_alpha_and_min_samples(tmp_path: Path) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(SLOW))
    assert cli.main(["compare", b, c, "--min-samples", "17"]) == EXIT_OK  # all inconclusive
    assert cli.main(["compare", b, c, "--alpha", "1e-12"]) == EXIT_OK  # p ~ 1e-9 not enough
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", b, c, "--alpha", "2"])
    assert info.value.code == EXIT_USAGE


def test_only_pair_not_comparable_exits_3(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(BASE16, prompt_version="f" * 16))
    assert cli.main(["compare", b, c]) == EXIT_NOTHING_COMPARABLE
    assert "prompt_version changed" in capsys.readouterr().out


def test_json_and_markdown_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(SLOW))
    assert cli.main(["compare", b, c, "--format", "json"]) == EXIT_REGRESSION
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_status"] == EXIT_REGRESSION
    assert doc["baseline"]["run_id"] == "base"
    assert cli.main(["compare", b, c, "--format", "markdown"]) == EXIT_REGRESSION
    assert capsys.readouterr().out.startswith("### vlmbench compare: ")


def test_markdown_is_appended_to_the_github_step_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(SLOW))
    summary = tmp_path / "step_summary.md"
    summary.write_text("## earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ignored = tmp_path / "ignored.md"
    assert cli.main(["compare", b, c, "--summary-file", str(ignored)]) == EXIT_REGRESSION
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## earlier step\n### vlmbench compare: ")
    assert "regressions / 1 benchmark (FAILED)" in text
    assert "**:x: REGRESSED**" in text
    assert not ignored.exists()
    assert "### vlmbench" not in capsys.readouterr().out  # the terminal gets the table


def test_summary_file_without_github(tmp_path: Path) -> None:
    b, c = pair(tmp_path, Bench(BASE16), Bench(BASE16))
    out = tmp_path / "summary.md"
    assert cli.main(["compare", b, c, "--summary-file", str(out)]) == EXIT_OK
    assert out.read_text(encoding="utf-8").startswith(
        "### vlmbench compare: 0 regressions / 1 benchmark (passed)")


def test_directories_and_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / ".vlmbench"
    runs.mkdir()
    write_run(runs, "base", [Bench(BASE16)], started_at="2026-11-23T10:00:00+00:00")
    write_run(runs, "cur", [Bench(SLOW)], started_at="2026-11-23T11:00:00+00:00")
    monkeypatch.chdir(tmp_path)
    # the baseline directory holds the current run too: it is skipped there
    assert cli.main(["compare", ".vlmbench", "latest", "--format", "json"]) == EXIT_REGRESSION
    doc = json.loads(capsys.readouterr().out)
    assert (doc["baseline"]["run_id"], doc["current"]["run_id"]) == ("base", "cur")


def _corrupt(tmp_path: Path) -> list[str]:
    path = write_run(tmp_path, "x", [Bench(BASE16)])
    path.write_text('{"kind": "pytest-vlmbench-results", "schema_version": 1,,}')
    return [str(path)]


def _truncated(tmp_path: Path) -> list[str]:
    path = write_run(tmp_path, "x", [Bench(BASE16)])
    path.write_text(path.read_text()[:500])
    return [str(path)]


def _foreign(tmp_path: Path) -> list[str]:
    path = tmp_path / "package.json"
    path.write_text('{"name": "left-pad", "version": "1.3.0"}')
    return [str(path)]


def _schema_99(tmp_path: Path) -> list[str]:
    path = write_run(tmp_path, "x", [Bench(BASE16)])
    doc = json.loads(path.read_text())
    doc["schema_version"] = 99
    path.write_text(json.dumps(doc))
    return [str(path)]


def _empty_dir(tmp_path: Path) -> list[str]:
    empty = tmp_path / "empty"
    empty.mkdir()
    return [str(empty)]


def _no_records(tmp_path: Path) -> list[str]:
    path = write_run(tmp_path, "x", [Bench(BASE16)])
    (tmp_path / "results-x.records.jsonl").unlink()
    return [str(path)]


def _torn_records(tmp_path: Path) -> list[str]:
    path = write_run(tmp_path, "x", [Bench(BASE16)])
    records = tmp_path / "results-x.records.jsonl"
    records.write_text(records.read_text()[:-30])
    return [str(path)]


def _missing(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "results-nope.json")]


def _bad_rule(tmp_path: Path) -> list[str]:
    return [str(REAL), "--fail-on", "p50_latency:-10%"]


@pytest.mark.parametrize(("make", "message"), [
    (_corrupt, "not JSON (line 1"),
    (_truncated, "truncated or not a results file?"),
    (_foreign, "not a pytest-vlmbench results document (no kind="),
    (_schema_99, "schema_version 99, this pytest-vlmbench reads 1"),
    (_empty_dir, "no results-*.json in "),
    (_no_records, "records file "),
    (_torn_records, "not a JSON record"),
    (_missing, "no such results file"),
    (_bad_rule, "rule 'p50_latency:-10%': p50_latency gets worse as it rises"),
])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], list[str]], message: str,
) -> None:
    current, *rest = make(tmp_path)
    for argv in (["compare", str(REAL), current, *rest], ["compare", current, str(REAL), *rest]):
        assert cli.main(argv) == EXIT_USAGE
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("vlmbench: ")
        assert message in lines[0]
        assert captured.out == ""


def test_latest_is_the_output_directory_of_the_ini(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vlm_out = runs/nightly.json` in the ini: `latest` is runs/, from any folder below
    the ini, and its runs are found whatever their names."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nvlm_out = runs/nightly.json\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    base = write_run(runs, "base", [Bench(BASE16)], started_at="2026-11-23T10:00:00+00:00")
    cur = write_run(runs, "cur", [Bench(SLOW)], started_at="2026-11-23T11:00:00+00:00")
    base.rename(runs / "mine.json")
    cur.rename(runs / "nightly")  # not even a .json suffix
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert cli.main(["compare", "latest", "latest", "--format", "json"]) == EXIT_REGRESSION
    doc = json.loads(capsys.readouterr().out)
    assert (doc["baseline"]["run_id"], doc["current"]["run_id"]) == ("base", "cur")


def test_a_directory_finds_results_documents_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results under any name; records, power traces, logs, summaries, other JSON,
    atomic writes in progress (hidden) and xdist workers' partials (a subfolder) are not
    runs. A default-named file that is not a results document is reported, not fatal."""
    from pytest_vlmbench.compare import results_files
    from pytest_vlmbench.compare import runs as runs_module

    base = write_run(tmp_path, "base", [Bench(BASE16)], started_at="2026-11-23T10:00:00+00:00")
    base.rename(tmp_path / "a.json")
    write_run(tmp_path, "cur", [Bench(BASE16)], started_at="2026-11-23T11:00:00+00:00")
    (tmp_path / "results-cur.power.jsonl").write_text('{"kind": "meter"}\n')
    (tmp_path / "backend.log").write_text("llama_model_loader: ...\n")
    (tmp_path / "a.compare.md").write_text("### vlmbench compare\n")
    (tmp_path / "package.json").write_text('{"name": "left-pad", "kind": "npm"}')
    (tmp_path / ".a.json.x1y2.tmp").write_text('{"kind": "pytest-vlmbench-results", ')
    write_run(tmp_path / "workers-cur", "partial", [Bench(BASE16)])
    assert results_files(tmp_path) == [tmp_path / "a.json", tmp_path / "results-cur.json"]
    (tmp_path / "results-zzz.json").write_text("{}")  # the default name: reported
    run = compare.load_run(tmp_path)
    assert run.run_id == "cur"
    assert run.notes
    assert "skipped 1 unreadable results file" in run.notes[0]
    # `kind` beyond the head: found only under the default name (a full read)
    monkeypatch.setattr(runs_module, "HEAD_BYTES", 64)
    resorted = json.dumps(json.loads((tmp_path / "a.json").read_text()), sort_keys=True)
    (tmp_path / "a.json").write_text(resorted)
    (tmp_path / "results-base.json").write_text(resorted)
    assert tmp_path / "a.json" not in results_files(tmp_path)
    assert tmp_path / "results-base.json" in results_files(tmp_path)
