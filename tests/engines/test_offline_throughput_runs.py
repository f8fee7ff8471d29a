"""Offline throughput through the plugin, on real engines: `--vlm-load=batch:N` on
transformers (and the marker on vLLM in test_vllm_backend.py). Each batch is one
`generate_batch` call; the entry is its own compare key; compare judges it per batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pytest_vlmbench.results import document
from tests.conftest import Project

ENGINES_CATALOG = """
[[model]]
id = "hf-text"
backend = "transformers"
modality = "text"
precisions = { fp32 = "generated:hf-tiny-llama" }
default = true
"""

BENCH = '''
import pytest
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=5)
'''


def _engines_project(project: Project) -> Project:
    (project.pytester.path / "models.toml").write_text(ENGINES_CATALOG)
    project.pytester.makepyfile(test_bench=BENCH)
    return project


def test_a_batch_level_measures_each_batch_and_keeps_every_record(project: Project) -> None:
    outcome = _engines_project(project).run("--vlm-load=batch:2", "--vlm-warmup=1")
    outcome.run.assert_outcomes(passed=1)
    doc = outcome.doc()
    document.validate(doc)
    (entry,) = doc["benchmarks"]
    assert entry["id"].endswith("@b2")
    assert entry["load"]["pattern"] == "batch"
    assert entry["load"]["batch_size"] == 2
    assert any("5 samples rounded up to 6 measured requests" in w for w in entry["warnings"])
    measured = [r for r in outcome.records() if r["phase"] == "measure"]
    assert len(measured) == 6
    assert [r["batch"] for r in measured] == [0, 0, 1, 1, 2, 2]
    for record in measured:
        document.validate_record(record)
        start, end = record["batch_ns"]
        assert record["error"] is None
        # Submitted together: every request of a batch starts at the same instant (the
        # engine's own reading, inside the runner's call).
        first = next(r for r in measured if r["batch"] == record["batch"])
        assert record["t_start_ns"] == first["t_start_ns"]
        assert start <= record["t_start_ns"] <= record["t_end_ns"] <= end
        assert record["t_first_token_ns"] is not None
        assert start < record["t_first_token_ns"] <= record["t_end_ns"]
    block: dict[str, Any] = entry["summary"]["throughput"]
    assert block["batches"] == 3
    assert block["partial_batches"] == 0
    for figure, batch in zip(block["per_batch"], (0, 1, 2), strict=True):
        rows = [r for r in measured if r["batch"] == batch]
        wall = (rows[0]["batch_ns"][1] - rows[0]["batch_ns"][0]) / 1e9
        assert figure["wall_s"] == wall
        assert figure["requests_per_s"] == 2 / wall
        assert figure["output_tokens_per_s"] == sum(r["completion_tokens"] for r in rows) / wall


def test_compare_judges_batches_apart_from_single_requests(project: Project,
                                                           tmp_path: Path) -> None:
    _engines_project(project)
    base = project.run("--vlm-load=batch:2", "--vlm-warmup=0")
    base.run.assert_outcomes(passed=1)
    baseline = tmp_path / "baseline"
    base.out.parent.rename(baseline)  # the results and their records, side by side
    sequential = project.run("--vlm-warmup=0")  # the same test, one request at a time
    sequential.run.assert_outcomes(passed=1)
    (plain,) = sequential.doc()["benchmarks"]
    assert "@" not in plain["id"]
    assert "throughput" not in plain["summary"]
    current = project.run("--vlm-load=batch:2", "--vlm-warmup=0")
    current.run.assert_outcomes(passed=1)
    out = subprocess.run(
        [sys.executable, "-m", "pytest_vlmbench.cli", "compare",
         str(baseline / "results.json"), str(current.out), "--format=json"],
        capture_output=True, text=True, check=False)
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout)
    (pair,) = report["pairs"]
    assert pair["benchmark"]["id"].endswith("@b2")  # never paired with the plain entry
    names = {m["metric"] for m in pair["metrics"]}
    assert {"batch_requests_per_s", "batch_output_tokens_per_s"} <= names
    batch = next(m for m in pair["metrics"] if m["metric"] == "batch_requests_per_s")
    assert batch["n_current"] == 3
    assert batch["n_baseline"] == 3
