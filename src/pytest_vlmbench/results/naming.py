"""Every file name a run writes or looks for, in one place.

A session writes `results-<run id>.json` (or the `--vlm-out` name, `{run_id}`
substituted) and, beside it and named after it, its records, its power trace, its
backend log and the gate's comparison summary. pytest-xdist workers write
`results-<run id>.<gw>.json` into `workers-<run id>/` below the output directory.
`vlmbench compare` and the merge of the workers find runs with `RESULTS_GLOB`, so a
name made here is a name found there (tests/test_naming.py checks both directions).

Standard library only: the plugin imports this at pytest start-up.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_OUT_DIR = ".vlmbench"
"""The output directory under pytest's rootdir when neither --vlm-out nor vlm_out is set."""

RESULTS_PREFIX = "results-"
RESULTS_SUFFIX = ".json"
RESULTS_GLOB = f"{RESULTS_PREFIX}*{RESULTS_SUFFIX}"
"""What `vlmbench compare DIR`/`latest` and the worker merge look for in a directory."""

RUN_ID_FIELD = "{run_id}"
"""Written in --vlm-out's file name, replaced by the run id: every run is kept."""

RECORDS_SUFFIX = ".records.jsonl"
POWER_TRACE_SUFFIX = ".power.jsonl"
BACKEND_LOG_SUFFIX = ".backend.log"
COMPARE_SUMMARY_SUFFIX = ".compare.md"
POWER_TRACE_GLOB = f"*{POWER_TRACE_SUFFIX}"
"""A worker's power traces, moved beside the merged results (runs[].power_trace_file)."""

WORKERS_PREFIX = "workers-"


def new_run_id(now: datetime | None = None, prefix: str = "") -> str:
    """`20250101T120000Z-1a2b3c`: sorts by start time, and two runs started in the same
    second still differ. A merge's own id says so with `prefix="merged-"`."""
    now = now or datetime.now(UTC)
    return f"{prefix}{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def results_name(run_id: str) -> str:
    """The default results file name of a run."""
    return f"{RESULTS_PREFIX}{run_id}{RESULTS_SUFFIX}"


def default_results(root: Path, run_id: str) -> Path:
    """Where a session writes its results when no --vlm-out/vlm_out names a file."""
    return root / DEFAULT_OUT_DIR / results_name(run_id)


def with_run_id(path: Path, run_id: str) -> Path:
    """--vlm-out with `{run_id}` in its file name replaced (a fixed name is overwritten
    by the next run). Only the file name: a directory is taken as written."""
    return path.with_name(path.name.replace(RUN_ID_FIELD, run_id))


def _beside(results: Path, suffix: str) -> Path:
    return results.with_name(results.name.removesuffix(RESULTS_SUFFIX) + suffix)


def records_file(results: Path) -> Path:
    """The run's records (the ground truth), beside its results file."""
    return _beside(results, RECORDS_SUFFIX)


def records_name(results: Path) -> str:
    """What a results document stores as `records_file`: relative to the document."""
    return records_file(results).name


def power_trace_file(results: Path) -> Path:
    """The meter's raw readings of the run (`power_trace_file` in the document)."""
    return _beside(results, POWER_TRACE_SUFFIX)


def run_stem(results: Path) -> str:
    """The results file's name without its suffix: what the run's other files start with
    (the managed servers' logs: `<stem>.server-<id>.log`)."""
    return results.name.removesuffix(RESULTS_SUFFIX)


def backend_log_file(results: Path) -> Path:
    """The backends' native output of the run: one log per run (a shared one grew
    across runs)."""
    return _beside(results, BACKEND_LOG_SUFFIX)


def compare_summary_file(results: Path) -> Path:
    """The gate's markdown summary when $GITHUB_STEP_SUMMARY is not set."""
    return _beside(results, COMPARE_SUMMARY_SUFFIX)


def worker_dir(results: Path, run_id: str) -> Path:
    """Where the pytest-xdist workers of a run write their partial results. A folder of
    its own below the output directory, so `compare latest` never takes a worker's
    partial document for a run."""
    return results.parent / f"{WORKERS_PREFIX}{run_id}"


def worker_results(directory: Path, run_id: str, workerid: str) -> Path:
    """A worker's partial results: `results-<run id>.<gw>.json`, found by RESULTS_GLOB."""
    return directory / results_name(f"{run_id}.{workerid}")
