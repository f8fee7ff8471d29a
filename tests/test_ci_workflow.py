"""docs/ci-matrix.yml: the fleet's GitHub Actions workflow, its final job run for real.

The `bench` job needs self-hosted runners; what it leaves behind is one results file per
device. Three real runs of the tiny models stand in for three devices' files, and the
`merge` job's steps with an `id` run exactly as the workflow writes them (bash, in a
directory laid out as the job's: results/*.json downloaded), against a SQLite history
that already holds an earlier round of the same three runs. So the commands a user
copies are the commands tested: a renamed option or a changed output path fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.history import History
from pytest_vlmbench.plugin import options
from pytest_vlmbench.results.document import load
from tests.conftest import Project

yaml = pytest.importorskip("yaml")

WORKFLOW = Path(__file__).resolve().parent.parent / "docs" / "ci-matrix.yml"
FAST = (f"{options.SAMPLES}=6", f"{options.WARMUP}=1", f"{options.THREADS}=1",
        f"{options.MODELS}=tiny-text")
DEVICES = ("orin", "thor", "gb10")
STEPS = ("merge", "compare", "append", "report", "gate")

ONE_TEST = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return data


def merge_steps() -> dict[str, dict[str, Any]]:
    steps = workflow()["jobs"]["merge"]["steps"]
    return {s["id"]: s for s in steps if "id" in s}


def test_the_workflow_runs_every_device_and_merges_after_them() -> None:
    jobs = workflow()["jobs"]
    bench = jobs["bench"]
    assert bench["strategy"]["matrix"]["device"] == list(DEVICES)
    assert bench["strategy"]["fail-fast"] is False
    assert bench["runs-on"] == ["self-hosted", "${{ matrix.device }}"]
    run = " ".join(s.get("run", "") for s in bench["steps"])
    assert "--device=${{ matrix.device }}" in run
    assert "--vlm-out=results/${{ matrix.device }}.json" in run
    upload = next(s for s in bench["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "results/"
    merge = jobs["merge"]
    assert merge["needs"] == "bench"
    assert merge["if"] == "always()"
    assert set(STEPS) <= set(merge_steps())
    # the password reaches libpq through the environment, never through a URL or argument
    assert merge["env"]["PGPASSWORD"].startswith("${{ secrets.")
    assert all("PGPASSWORD" not in s.get("run", "") for s in merge["steps"])


def _bash(step: dict[str, Any], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A step's `run:` as GitHub runs it (bash -e -o pipefail), with a fresh
    $GITHUB_OUTPUT file whose key=value lines land in the result's `outputs`."""
    script = step["run"]
    assert "${{" not in script, f"step {step['id']} uses an expression the test cannot run"
    output = cwd / f".github-output-{step['id']}"
    output.write_text("")
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd,
                          env={**env, "GITHUB_OUTPUT": str(output)}, capture_output=True,
                          text=True, timeout=300)
    outputs.clear()
    outputs.update(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return done


outputs: dict[str, str] = {}
"""The last step's $GITHUB_OUTPUT."""


def _gate_runs() -> bool:
    """The gate step's `if:`, evaluated on the compare step's outputs."""
    condition = merge_steps()["gate"]["if"]
    assert condition == "steps.compare.outputs.status == '1'"
    return outputs.get("status") == "1"


def _round(project: Project, job: Path, round_no: int) -> None:
    """One result file per device, as the bench job's artifacts land in the merge job."""
    results = job / f"round{round_no}"
    results.mkdir(parents=True)
    for device in DEVICES:
        out = results / f"{device}.json"
        outcome = project.pytester.runpytest("-p", "no:cacheprovider", f"--vlm-out={out}",
                                             *FAST)
        assert outcome.ret == pytest.ExitCode.OK, outcome.stdout.str()


def test_the_merge_job_steps_on_three_results_files(project: Project, tmp_path: Path) -> None:
    project.pytester.makepyfile(test_bench=ONE_TEST)
    job = tmp_path / "job"
    _round(project, job, 1)
    _round(project, job, 2)
    history = tmp_path / "history.sqlite"
    History.open(str(history)).close()  # there and empty, as the workflow's database is
    env = {**os.environ, "VLMBENCH_HISTORY": str(history),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    steps = merge_steps()

    # the workflow's first run: an empty history, nothing comparable (compare exits 3),
    # which passes and seeds the history
    (job / "results").symlink_to(job / "round1")
    for name in ("merge", "compare"):
        done = _bash(steps[name], job, env)
        assert done.returncode == 0, done.stderr
    assert outputs == {"status": "3"}
    assert not _gate_runs()
    done = _bash(steps["append"], job, env)
    assert done.returncode == 0, done.stderr
    earlier = load(job / "merged" / "results.json")["run_id"]
    shutil.rmtree(job / "merged")
    (job / "results").unlink()
    shutil.copytree(job / "round2", job / "results")

    merged = _bash(steps["merge"], job, env)
    assert merged.returncode == 0, merged.stderr
    assert "merged 3 runs" in merged.stdout
    doc = load(job / "merged" / "results.json")
    assert len(doc["runs"]) == 3
    assert len(doc["benchmarks"]) == 3

    compared = _bash(steps["compare"], job, env)
    assert compared.returncode == 0, compared.stderr  # a regression is the gate step's
    status = outputs["status"]
    assert status in ("0", "1")
    summary = (job / "merged" / "compare.md").read_text(encoding="utf-8")
    assert "### vlmbench compare" in summary
    assert f"Baseline `{earlier}`" in summary  # the history's run, found by history:10

    appended = _bash(steps["append"], job, env)
    assert appended.returncode == 0, appended.stderr
    assert f"run {doc['run_id']}" in appended.stdout

    reported = _bash(steps["report"], job, env)
    assert reported.returncode == 0, reported.stderr
    report = (job / "report" / "report.md").read_text(encoding="utf-8")
    assert "Against the baseline" in report
    assert "Trends in the history" in report
    assert (job / "report" / "plots" / "trend_p50_latency.png").is_file()

    if status == "1":  # the gate step runs only on a gated regression, and fails the job
        assert _gate_runs()
        assert _bash(steps["gate"], job, env).returncode == 1
    else:
        assert not _gate_runs()

    listed = subprocess.run([sys.executable, "-m", "pytest_vlmbench.cli", "history", "list"],
                            cwd=job, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "2 runs" in listed.stdout
