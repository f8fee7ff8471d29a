"""Reports of real runs: an inner pytest session on the tiny llama.cpp models writes its
report (--vlm-report), and every figure checked here is recomputed from the records the
report wrote to records.csv, or found in the summary the report names as its source.

What is checked: the files exist and load without options; each headline figure of the
markdown is the summary's value, formatted; the summary CSV's latency percentiles,
success rate and mean output tokens are what the tidy records give; the report names
its source file and run id; `vlmbench report` reads the same results (and a directory of
them), and a bad input is one line and exit status 2.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench import cli
from pytest_vlmbench.metrics.stats import percentile
from pytest_vlmbench.report import figures
from tests.conftest import Outcome, Project

BENCH = """
import pytest
from tiny_tasks import CAPTION, YES_NO

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, warmup=1)

def test_yes_no(vlm_bench):
    vlm_bench.run(YES_NO, warmup=0)
"""


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _run(project: Project) -> tuple[Outcome, Path]:
    project.pytester.makepyfile(test_bench=BENCH)
    report = project.pytester.path / "report"
    outcome = project.run("--vlm-samples=5", f"--vlm-report={report}", "-p", "no:randomly")
    outcome.run.assert_outcomes(passed=4)
    return outcome, report


def _num(text: str) -> float | None:
    return None if text == "" else float(text)


def test_report_of_a_real_run_recomputes_from_its_records(project: Project) -> None:
    outcome, report = _run(project)
    out = "\n".join(outcome.run.outlines)
    assert f"report: {report / 'report.html'}" in out
    for name in ("report.md", "report.html", "summary.csv", "records.csv"):
        assert (report / name).stat().st_size > 0, name
    doc = outcome.doc()
    summary_rows = _rows(report / "summary.csv")
    record_rows = _rows(report / "records.csv")
    assert len(summary_rows) == len(doc["benchmarks"]) == 4
    assert len(record_rows) == len(outcome.records())
    entries = {e["id"]: e for e in doc["benchmarks"]}
    for row in summary_rows:
        entry = entries[row["benchmark"]]
        mine = [r for r in record_rows if r["row"] == row["row"] and r["phase"] == "measure"]
        assert len(mine) == entry["summary"]["requests"] == 5
        ok = [r for r in mine if r["ok"] == "true"]
        latencies = sorted(float(r["latency_s"]) for r in ok)
        assert float(row["p50_s"]) == pytest.approx(percentile(latencies, 50), rel=1e-12)
        assert float(row["p95_s"]) == pytest.approx(percentile(latencies, 95), rel=1e-12)
        assert float(row["success_rate"]) == pytest.approx(len(ok) / len(mine))
        tokens = [int(r["completion_tokens"]) for r in ok]
        assert float(row["output_tokens_mean"]) == pytest.approx(statistics.fmean(tokens))
        # the CSV's figure is the summary value the report names as its source
        p50 = figures.by_name()["p50_s"]
        assert _num(row["p50_s"]) == p50.value(entry["summary"])
        assert row["run_id"] == doc["run_id"]
    markdown = (report / "report.md").read_text(encoding="utf-8")
    assert str(outcome.out) in markdown
    assert doc["run_id"] in markdown
    # every headline p50 printed is the summary's value as the figure formats it
    p50 = figures.by_name()["p50_s"]
    for entry in doc["benchmarks"]:
        assert p50.cell(p50.value(entry["summary"])) in markdown


def test_cli_report_reads_files_and_directories(project: Project, capsys: Any) -> None:
    outcome, _report = _run(project)
    target = project.pytester.path / "cli-report"
    code = cli.main(["report", str(outcome.out.parent), "--out", str(target), "--no-plots",
                     "--api-price", "example=1/2", "--electricity-price", "0.25"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "report:" in captured.out
    markdown = (target / "report.md").read_text(encoding="utf-8")
    assert "example" in markdown
    assert not (target / "plots").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["missing.json"], "missing.json: no such results file or directory"),
    (["ok", "--api-price", "x=1"], "x=1"),
    (["ok", "--slo", "max_nonsense_s=1"], "max_nonsense_s"),
])
def test_cli_report_bad_input_is_one_line(tmp_path: Path, capsys: Any, args: list[str],
                                          message: str) -> None:
    real = next((Path(__file__).parent / "data").glob("results-*[0-9a-f].json"))
    argv = [str(real) if a == "ok" else str(tmp_path / a) if a.endswith(".json") else a
            for a in args]
    code = cli.main(["report", *argv, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_report_that_cannot_be_written_is_one_line_and_the_run_passes(
        project: Project) -> None:
    project.pytester.makepyfile(test_bench=BENCH)
    blocker = project.pytester.path / "taken"
    blocker.write_text("a file where the report's directory would go")
    outcome = project.run("--vlm-samples=2", f"--vlm-report={blocker}", "-k", "caption")
    outcome.run.assert_outcomes(passed=2)
    assert outcome.run.ret == 0
    lines = [line for line in outcome.run.outlines if "report not written" in line]
    assert len(lines) == 1
    assert str(blocker) in lines[0]
    assert "Traceback" not in "\n".join(outcome.run.outlines)
