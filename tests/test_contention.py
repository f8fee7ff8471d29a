"""A busy machine is said where the user looks, measured for real: another process
spins on one of our CPUs while a real inner session loads and runs a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.bad_input import Case, check_case

# Long enough (well over the 2 s a busy verdict needs) on any machine: 400 requests.
LONG = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=400, warmup=0)
"""


def test_threads_beyond_the_free_cpus_are_said_on_the_terminal(
    tmp_path: Path, model_cache: Path
) -> None:
    cpus = len(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = check_case(tmp_path, model_cache, Case(
            "busy", args=("--vlm-models=tiny-text",), exit=0, files={"test_bench.py": LONG}))
    finally:
        spinner.kill()
        spinner.wait()
    output = done.stdout + done.stderr
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    # The spinner took about one CPU of those this process may use: at most cpus - 1 free,
    # and every core asked for by default.
    assert doc["settings"]["thread_advice"] is not None, output
    assert f"llama.cpp with {cpus} threads on" in output
    assert "--vlm-threads=fit" in output
    (bench,) = doc["benchmarks"]
    if cpus <= 8:  # one busy CPU of 8 or fewer is above the 10% busy threshold
        assert bench["machine"]["busy"] is True, bench["machine"]
        assert "the machine was busy during this benchmark: other processes took" in output
    shown = subprocess.run([sys.executable, "-m", "pytest_vlmbench.cli", "show",
                            str(tmp_path / "out" / "results.json")],
                           capture_output=True, text=True, check=True).stdout
    if cpus <= 8:
        assert "warning: machine busy during test_bench.py::test_caption" in shown


def test_fit_uses_the_free_cpus(tmp_path: Path, model_cache: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        check_case(tmp_path, model_cache, Case(
            "fit", args=("--vlm-models=tiny-text", "--vlm-threads=fit"), exit=0))
    finally:
        spinner.kill()
        spinner.wait()
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    fit = doc["settings"]["threads_fit"]
    assert doc["settings"]["threads"] == "fit"
    assert 1 <= fit["threads"] <= max(1, cpus - 1), fit
    assert doc["benchmarks"][0]["settings"]["n_threads"] == fit["threads"]
