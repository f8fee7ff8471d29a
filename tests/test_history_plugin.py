"""--vlm-history, --vlm-compare=history:N and `vlmbench history`, on real inner sessions.

The store itself (both dialects, the kill test) is tests/test_history_store.py; here the
plugin appends real runs of the tiny models, the gate takes its baseline from them, and
the CLI reads them back. The gate is made to fire deterministically as in
test_plugin_interop.py: the history holds copies of a real run made uniformly faster
(sped_up), each under its own run id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench import cli
from pytest_vlmbench.compare import compare_runs, load_baseline, load_run
from pytest_vlmbench.history import History
from pytest_vlmbench.plugin import options
from pytest_vlmbench.results.document import load
from pytest_vlmbench.run.records import read_records
from tests.conftest import Project, interrupt_after
from tests.test_plugin_interop import TEXT_ONLY, baseline, records_file, sped_up, write_tests

ONE_CAPTION = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""

SECRET = "s3cr3t-pw"


def renamed(source: Path, dest: Path, run_id: str, started_at: str) -> Path:
    """A copy of a run under another run id and start time (document, entries, records):
    another run of the same benchmarks, as the history would have from another day."""
    doc: dict[str, Any] = json.loads(source.read_text())
    old = doc["run_id"]
    doc["run_id"] = run_id
    doc["started_at"] = started_at
    for entry in doc["benchmarks"]:
        if entry.get("run_id") == old:
            entry["run_id"] = run_id
        entry["started_at"] = started_at
    records = read_records(records_file(source))
    for record in records:
        record["run_id"] = run_id
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc))
    (dest.parent / doc["records_file"]).write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    load(dest)
    return dest


def history_of(project: Project, *sources: Path) -> Path:
    db = project.pytester.path / "history.sqlite"
    with History.open(str(db)) as history:
        for source in sources:
            result = history.import_file(source)
            assert result.skipped is None
    return db


def test_each_run_is_appended_once_and_read_back(project: Project) -> None:
    write_tests(project, ONE_CAPTION)
    db = project.pytester.path / "h.sqlite"
    first = project.run(*TEXT_ONLY, f"{options.HISTORY}={db}")
    first.run.assert_outcomes(passed=1)
    first_id = first.doc()["run_id"]
    kept = project.pytester.path / "first" / "results.json"  # the next run reuses out/
    renamed(first.out, kept, first_id, first.doc()["started_at"])
    first.run.stdout.fnmatch_lines([f"history: appended run * (1 benchmark, 7 records) to "
                                    f"sqlite://{db} in * s"])
    second = project.run(*TEXT_ONLY, f"{options.HISTORY}={db}")
    second.run.assert_outcomes(passed=1)
    with History.open(str(db)) as history:
        runs = history.runs()
        assert [r.run_id for r in runs] == [second.doc()["run_id"], first_id]
        assert all(r.complete and r.records == 7 and r.benchmarks == 1 for r in runs)
        points = history.trend("p50_latency")
        assert history.check() == []
    # the trend's value is the one compare computes from the same run's records
    comparison = compare_runs(load_baseline([str(kept)]), load_run(second.out))
    (pair,) = comparison.pairs
    p50 = next(m for m in pair.metrics if m.metric == "p50_latency")
    assert [p.run_id for p in points] == [first_id, second.doc()["run_id"]]
    assert points[0].value == pytest.approx(p50.baseline, rel=1e-12)
    assert points[1].value == pytest.approx(p50.current, rel=1e-12)


def test_history_gate_fires_against_faster_history_runs(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    real = baseline(project, ONE_CAPTION, *TEXT_ONLY)
    fast = sped_up(real, project.pytester.path / "fast" / "results.json")
    copies = [renamed(fast, project.pytester.path / f"h{i}" / "results.json",
                      f"20260101T00000{i}Z-aaaaa{i}", f"2026-01-01T00:00:0{i}+00:00")
              for i in range(4)]
    db = history_of(project, *copies)
    out = project.run(*TEXT_ONLY, f"{options.HISTORY}={db}", f"{options.COMPARE}=history:3",
                      f"{options.FAIL_ON}=none,p50_latency:+10%")
    assert out.run.ret == pytest.ExitCode.TESTS_FAILED
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines([
        "*regression against the baseline (history:3): p50_latency regressed*3 runs, drift CV*"
        "unchanged run *",
        f"compared with history:3 (sqlite://{db}): 1 regression / 1 benchmark*",
    ])
    # it used the newest 3 of the 4 history runs, and the run itself was appended after
    summary = out.out.with_name("results.compare.md").read_text()
    assert "20260101T000003Z-aaaaa3" in summary
    assert "20260101T000000Z-aaaaa0" not in summary
    with History.open(str(db)) as history:
        assert len(history.runs()) == 5


def test_history_gate_without_history_runs_is_new_not_a_failure(project: Project) -> None:
    write_tests(project, ONE_CAPTION)
    db = project.pytester.path / "empty.sqlite"
    out = project.run(*TEXT_ONLY, f"{options.HISTORY}={db}", f"{options.COMPARE}=history:5")
    out.run.assert_outcomes(passed=1)
    assert out.run.ret == pytest.ExitCode.OK
    out.run.stdout.fnmatch_lines(["compared with history:5 (*): 0 regressions / 0 benchmarks",
                                  "vlmbench compare: baseline no runs (history:5)",
                                  "*new (current only):*", "*test_caption*"])


@pytest.mark.parametrize(("args", "message"), [
    ((f"{options.COMPARE}=history:3",), "*history:3 needs a results history: give "
                                         "--vlm-history=URL*"),
    ((f"{options.COMPARE}=history:0", f"{options.HISTORY}=h.sqlite"),
     "*N in history:N must be a whole number of runs, at least 1*"),
])
def test_history_gate_usage_errors(project: Project, args: tuple[str, ...],
                                   message: str) -> None:
    write_tests(project, ONE_CAPTION)
    out = project.run(*TEXT_ONLY, *args)
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines([message])
    assert not out.out.exists()


@pytest.mark.parametrize("url", [
    f"postgresql://bench:{SECRET}@127.0.0.1:1/vlm?connect_timeout=2",
    f"host=127.0.0.1 port=1 user=bench password={SECRET} dbname=vlm connect_timeout=2",
])
def test_a_history_that_cannot_be_opened_is_a_usage_error_without_its_password(
    project: Project, url: str
) -> None:
    """Checked when the session starts, before any model loads; the password in its URL
    (or libpq keyword string) is in no output and no file."""
    write_tests(project, ONE_CAPTION)
    for extra in ((), (f"{options.COMPARE}=history:2",)):
        out = project.run(*TEXT_ONLY, f"{options.HISTORY}={url}", *extra)
        assert out.run.ret == pytest.ExitCode.USAGE_ERROR
        out.run.stderr.fnmatch_lines(["*--vlm-*: history postgresql* cannot *",
                                      ] if url.startswith("postgresql") else ["*--vlm-*"])
        assert SECRET not in out.run.stdout.str() + out.run.stderr.str()
        assert "***" in out.run.stderr.str()
        assert not out.out.exists()
    leftovers = [p for p in project.pytester.path.rglob("*") if p.is_file()
                 and SECRET in p.read_text(errors="replace")]
    assert [p.name for p in leftovers] == []


def test_an_interrupted_run_is_appended_marked_incomplete(project: Project) -> None:
    """Ctrl-C mid-benchmark: the run is in the history whole, marked incomplete, and is
    never a baseline."""
    project.pytester.makepyfile(test_bench=ONE_CAPTION)
    out = project.pytester.path / "out" / "results.json"
    db = project.pytester.path / "h.sqlite"
    returncode, output = interrupt_after(
        project, out, f"{options.SAMPLES}=100000", f"{options.WARMUP}=0",
        f"{options.MODELS}=tiny-text", f"{options.HISTORY}={db}", "-q")
    assert returncode == pytest.ExitCode.INTERRUPTED, output
    assert "history: appended run" in output
    n = len(read_records(records_file(out)))
    with History.open(str(db)) as history:
        (run,) = history.runs()
        assert run.status == "interrupted"
        assert not run.complete
        assert run.records == n
        base = history.baseline(load(out), 5)
        assert base.runs == []
        assert history.check() == []


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_history_command(project: Project, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path) -> None:
    real = baseline(project, ONE_CAPTION, *TEXT_ONLY)
    copies = [renamed(real, tmp_path / f"r{i}" / "results.json", f"20260102T00000{i}Z-bbbbb{i}",
                      f"2026-01-02T00:00:0{i}+00:00") for i in range(3)]
    db = tmp_path / "cli.sqlite"
    code, out, err = run_cli("history", "import", *map(str, reversed(copies)), "--history",
                             str(db), capsys=capsys)
    assert code == 0, err
    assert out.count("imported ") == 3
    assert out.index("bbbbb0") < out.index("bbbbb2")  # oldest first, whatever the order given
    code, out, _ = run_cli("history", "import", str(copies[0]), "--history", str(db),
                           capsys=capsys)
    assert code == 0
    assert "skipped" in out
    assert "already" in out

    code, out, _ = run_cli("history", "list", "--history", str(db), capsys=capsys)
    assert code == 0
    assert "3 runs" in out
    assert out.index("bbbbb2") < out.index("bbbbb0")  # newest first
    code, out, _ = run_cli("history", "list", "--last", "1", "--history", str(db), capsys=capsys)
    assert "1 runs" in out
    assert "bbbbb2" in out

    code, out, _ = run_cli("history", "trend", "p50_latency", "--history", str(db),
                           capsys=capsys)
    assert code == 0
    assert "3 runs: first" in out
    assert "(+0.0%)" in out

    code, out, _ = run_cli("history", "trend", "p50_latency", "--model", "nope", "--history",
                           str(db), capsys=capsys)
    assert "no runs of a matching benchmark" in out

    csv_path = tmp_path / "export.csv"
    code, out, _ = run_cli("history", "export", "--out", str(csv_path), "--history", str(db),
                           capsys=capsys)
    assert code == 0
    assert "exported 3 rows" in out
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"run_id", "p50_latency", "tokens_per_s"} <= set(header)

    code, out, _ = run_cli("history", "check", "--history", str(db), capsys=capsys)
    assert code == 0
    assert "consistent" in out

    current = renamed(real, tmp_path / "cur" / "results.json", "20260103T000000Z-cccccc",
                      "2026-01-03T00:00:00+00:00")
    code, out, err = run_cli("compare", "history:2", str(current), "--history", str(db),
                             "--format", "json", capsys=capsys)
    assert code == 0, err
    data = json.loads(out)
    (pair,) = data["pairs"]
    assert pair["baseline_runs"] == ["20260102T000002Z-bbbbb2", "20260102T000001Z-bbbbb1"]

    code, _, err = run_cli("history", "trend", "no_such_metric", "--history", str(db),
                           capsys=capsys)
    assert code == 2
    assert "unknown metric" in err


def test_the_history_command_without_a_history(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLMBENCH_HISTORY", raising=False)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    code, _, err = run_cli("history", "list", capsys=capsys)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "no results history" in err
    monkeypatch.setenv("VLMBENCH_HISTORY", f"postgresql://u:{SECRET}@127.0.0.1:1/x"
                                           "?connect_timeout=2")
    code, _, err = run_cli("history", "list", capsys=capsys)
    assert code == 2
    assert SECRET not in err
    assert "***" in err


def test_report_with_history_draws_trends(project: Project, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    real = baseline(project, ONE_CAPTION, *TEXT_ONLY)
    copies = [renamed(real, tmp_path / f"r{i}" / "results.json", f"20260104T00000{i}Z-ddddd{i}",
                      f"2026-01-04T00:00:0{i}+00:00") for i in range(3)]
    db = tmp_path / "rep.sqlite"
    with History.open(str(db)) as history:
        for c in copies:
            history.import_file(c)
    out_dir = tmp_path / "report"
    code, _out, err = run_cli("report", str(copies[-1]), "--out", str(out_dir), "--history",
                             str(db), "--baseline", "history:2", capsys=capsys)
    assert code == 0, err
    md = (out_dir / "report.md").read_text()
    assert "Trends in the history" in md
    assert "Against the baseline" in md
    assert (out_dir / "plots" / "trend_p50_latency.png").stat().st_size > 1000
    assert (out_dir / "plots" / "trend_tokens_per_s.svg").is_file()
