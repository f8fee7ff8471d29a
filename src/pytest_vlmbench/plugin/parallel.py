"""pytest-xdist: workers run benchmarks, the controller merges their results.

The controller hands every worker the run id and a directory for its partial
results (`pytest_configure_node`). Each worker is an ordinary session that loads only
the models of the tests it is given and writes `results-<run>.<gw>.json` plus its
records there. At the end the controller merges the workers' documents into the one
results document of the run (refusing duplicated entries or records) and removes the
partials. `--vlm-gpu-per-worker` gives worker gwN the N-th visible GPU by setting
CUDA_VISIBLE_DEVICES before anything imports CUDA.

Concurrent workers on one accelerator (or one CPU) share it, so each distorts the
others' latencies: use -n only with one device per worker, or to spread models over
machines-worth of devices, never to make a single-device run faster.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pytest_vlmbench.results import naming

RUN_ID_KEY = "vlmbench_run_id"
WORKER_DIR_KEY = "vlmbench_worker_dir"
GPU_PER_WORKER_KEY = "vlmbench_gpu_per_worker"


def worker_number(workerid: str) -> int:
    """gw3 -> 3."""
    digits = workerid.removeprefix("gw")
    if not digits.isdigit():
        raise ValueError(f"unexpected pytest-xdist worker id {workerid!r}")
    return int(digits)


def assign_gpu(workerid: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """The CUDA_VISIBLE_DEVICES value for this worker: the N-th of those already visible
    (when the variable is set), else GPU index N (modulo the NVML count when known)."""
    n = worker_number(workerid)
    visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible:
        return visible[n % len(visible)]
    count = _nvml_count()
    return str(n % count if count else n)


def _nvml_count() -> int | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def worker_inputs(run_id: str, results_path: Path, gpu_per_worker: bool) -> dict[str, Any]:
    return {
        RUN_ID_KEY: run_id,
        WORKER_DIR_KEY: str(naming.worker_dir(results_path, run_id)),
        GPU_PER_WORKER_KEY: gpu_per_worker,
    }


def worker_results(workerinput: dict[str, Any]) -> Path:
    """Where this worker writes its partial results document."""
    return naming.worker_results(Path(workerinput[WORKER_DIR_KEY]), workerinput[RUN_ID_KEY],
                                 workerinput["workerid"])


def partial_documents(directory: Path) -> list[Path]:
    return sorted(directory.glob(naming.RESULTS_GLOB)) if directory.is_dir() else []


def merge_partials(directory: Path, out: Path,
                   command: list[str] | None = None) -> tuple[dict[str, Any], list[str]] | None:
    """Merge the workers' documents into `out` and remove them; returns the merged
    document and its warnings, or None when no worker wrote one. A failed merge
    (MergeError) leaves the partial files where they are."""
    from pytest_vlmbench.results.merge import merge_files

    partials = partial_documents(directory)
    result = None
    if partials:
        merged = merge_files(partials, out, shared_run_id=True, force=True, command=command)
        result = merged.document, list(merged.warnings)
    if directory.is_dir():
        for trace in directory.glob(naming.POWER_TRACE_GLOB):  # runs[].power_trace_file names them
            trace.replace(out.parent / trace.name)
        shutil.rmtree(directory, ignore_errors=True)
    return result
