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

Fleets (docs/fleet.md): under `--dist each` every worker runs the whole suite, so each
gets a run id of its own, `<run id>-<gw>`, and the merge keeps one run per worker (a
`runs[]` header each) under the controller's run id. A worker on another machine
(`--tx ssh=...`: its gateway is not popen) cannot write into the controller's
directory: it writes below its own rootdir's `.vlmbench/` and sends its document,
records and power traces back in `config.workeroutput` (xdist's channel for what a
worker reports at its end, xdist/remote.py); the controller writes them into the
workers directory in `pytest_testnodedown`, records first and the document last. Every
worker the controller started is accounted for (`Fleet`): the merged document's
`workers` list and one terminal line each, a worker that died or whose results never
arrived included, as `lost`.
"""

from __future__ import annotations

import os
import shutil
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_vlmbench.results import naming

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.session import VlmSession
    from pytest_vlmbench.results.merge import LoadedInput
    from pytest_vlmbench.results.models import FleetWorker, WorkerStatus

RUN_ID_KEY = "vlmbench_run_id"
WORKER_DIR_KEY = "vlmbench_worker_dir"
GPU_PER_WORKER_KEY = "vlmbench_gpu_per_worker"
BASE_RUN_ID_KEY = "vlmbench_base_run_id"
"""The controller's run id: the partial file's name, whatever the worker's run id."""
SEND_BACK_KEY = "vlmbench_send_back"
"""True for a worker on another machine: it sends its files back (workeroutput)."""
GATEWAY_KEY = "vlmbench_gateway"
OUTPUT_KEY = "vlmbench"
"""The worker's report in `config.workeroutput` (node.workeroutput on the controller)."""
SKIPPED_PROPERTY = "vlm_skipped_benchmark"
"""A skipped benchmark's report property: the controller counts them per worker."""
_ERROR_CHARS = 400


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


def gateway_text(spec: object) -> str:
    """The gateway's xspec as given (`ssh=orin//python=...`), with the values of
    `env:NAME=value` keys left out (an environment variable may hold a secret) and the
    `execmodel=` that pytest-xdist adds to every spec."""
    parts = []
    for part in str(spec).split("//"):
        key, sep, _ = part.partition("=")
        if key != "execmodel":
            parts.append(f"{key}=***" if sep and key.startswith("env:") else part)
    return "//".join(parts)


def redact_xspecs(argv: list[str]) -> list[str]:
    """The command line with the values of every `--tx` spec's `env:NAME=value` keys
    left out (run/environment.redact_argv knows secrets by name only)."""
    return ["//".join(f"{k}=***" if k.startswith("env:") and sep else part
                      for part in arg.split("//")
                      for k, sep, _ in [part.partition("=")])
            if "env:" in arg else arg for arg in argv]


def worker_inputs(run_id: str, results_path: Path, gpu_per_worker: bool, *,
                  workerid: str | None = None, each: bool = False,
                  gateway: str = "popen", popen: bool = True) -> dict[str, Any]:
    """What the controller tells a worker. Under `--dist each` the worker's run id is
    `<run id>-<workerid>`; a worker that is not popen sends its files back."""
    return {
        RUN_ID_KEY: f"{run_id}-{workerid}" if each and workerid else run_id,
        BASE_RUN_ID_KEY: run_id,
        WORKER_DIR_KEY: str(naming.worker_dir(results_path, run_id)),
        GPU_PER_WORKER_KEY: gpu_per_worker,
        SEND_BACK_KEY: not popen,
        GATEWAY_KEY: gateway,
    }


def worker_results(workerinput: dict[str, Any], rootpath: Path | None = None) -> Path:
    """Where this worker writes its partial results document: the controller's workers
    directory, or, for a worker that sends its files back, the same names below its own
    rootdir's `.vlmbench/` (the controller's path does not exist on its machine)."""
    base = str(workerinput.get(BASE_RUN_ID_KEY, workerinput[RUN_ID_KEY]))
    directory = Path(workerinput[WORKER_DIR_KEY])
    if workerinput.get(SEND_BACK_KEY) and rootpath is not None:
        directory = naming.worker_dir(naming.default_results(rootpath, base), base)
    return naming.worker_results(directory, base, workerinput["workerid"])


def identity(workerinput: dict[str, Any]) -> dict[str, Any]:
    """The worker as its document's environment records it (`xdist_worker`)."""
    return {"id": workerinput.get("workerid"), "gateway": workerinput.get(GATEWAY_KEY),
            "host": socket.gethostname()}


class WorkerTags:
    """Registered on a worker: marks a skipped benchmark's report, so the controller
    counts each worker's skipped benchmarks (a model its device cannot run)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Any:
        report = yield
        callspec = getattr(item, "callspec", None)
        if report.skipped and callspec is not None and "vlm_model" in callspec.params:
            report.user_properties.append((SKIPPED_PROPERTY, item.nodeid))
        return report


# -- the worker's end: tell the controller how it went ------------------------------
def _compress(path: Path) -> bytes:
    return zlib.compress(path.read_bytes(), 6)


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def report_to_controller(config: pytest.Config, vlm: VlmSession, interrupted: bool,
                         error: str | None) -> None:
    """Put this worker's outcome (and, when it sends its files back, its document, records
    and power traces, zlib-compressed) into `config.workeroutput`."""
    workeroutput = getattr(config, "workeroutput", None)
    workerinput = getattr(config, "workerinput", None)
    if workeroutput is None or workerinput is None:
        return
    wrote = vlm.results_path.is_file()
    device: str | None = None
    try:
        device = vlm.device.name
    except Exception:  # a device that cannot be resolved: the controller says unknown
        device = None
    status = "failed" if error else "interrupted" if interrupted else "complete"
    out: dict[str, Any] = {
        "host": socket.gethostname(), "device": device, "status": status, "error": error,
        "run_id": vlm.run_id if wrote else None,
        "benchmarks": len(vlm.benchmarks), "records": _count_lines(vlm.records_path),
        "dir": str(vlm.results_path.parent),
    }
    if wrote and workerinput.get(SEND_BACK_KEY):
        try:
            files = {p.name: _compress(p) for p in sorted(vlm.results_path.parent.glob(
                naming.run_stem(vlm.results_path) + "*")) if p.is_file()
                and (p.name.endswith(naming.RECORDS_SUFFIX)
                     or p.name.endswith(naming.POWER_TRACE_SUFFIX))}
            files[vlm.results_path.name] = _compress(vlm.results_path)
        except OSError as exc:
            out["status"], out["error"] = "failed", f"cannot read its results to send: {exc}"
        else:
            out["document"] = vlm.results_path.name
            out["files"] = files
    workeroutput[OUTPUT_KEY] = out


# -- the controller: every worker it started, and what came of it ------------------
@dataclass
class WorkerState:
    """One worker the controller started, as the controller knows it."""

    id: str
    gateway: str
    popen: bool
    host: str | None = None
    device: str | None = None
    run_id: str | None = None
    status: WorkerStatus = "lost"
    error: str | None = None
    benchmarks: int = 0
    records: int = 0
    skipped: int = 0
    cwd: str | None = None  # its working directory, from its `workerready`
    dir: str | None = None  # where it wrote its files, on its machine
    reported: bool = False  # its workeroutput arrived
    down: bool = False

    def to_json(self) -> FleetWorker:
        return {"id": self.id, "gateway": self.gateway, "host": self.host,
                "device": self.device, "run_id": self.run_id, "status": self.status,
                "benchmarks": self.benchmarks, "records": self.records,
                "skipped": self.skipped, "error": self.error}


def _error_text(error: object) -> str:
    """xdist's reason for a node going down (a string or an execnet RemoteError) in a
    few hundred characters: its last non-empty lines, where the cause is."""
    text = str(error).strip() or type(error).__name__
    if text == "Not properly terminated":  # xdist's word for a channel closed early
        return "it died or its connection dropped (pytest-xdist: Not properly terminated)"
    lines = [line for line in text.splitlines() if line.strip()]
    text = " | ".join(lines[-3:])
    return text if len(text) <= _ERROR_CHARS else "..." + text[-_ERROR_CHARS:]


@dataclass
class Fleet:
    """The controller's account of its workers: made at the first `configure_node`,
    registered as a plugin to count skipped benchmarks per worker from the reports."""

    directory: Path  # the workers directory the merge reads
    each: bool
    workers: dict[str, WorkerState] = field(default_factory=dict)

    @classmethod
    def of(cls, results_path: Path, run_id: str, each: bool) -> Fleet:
        return cls(naming.worker_dir(results_path, run_id), each)

    def add(self, node: Any) -> None:
        spec = node.gateway.spec
        workerid = str(node.gateway.id)
        self.workers[workerid] = WorkerState(workerid, gateway_text(spec), bool(spec.popen))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)  # xdist sets it on a worker's report
        state = self.workers.get(str(getattr(getattr(node, "gateway", None), "id", "")))
        if state is not None and any(k == SKIPPED_PROPERTY for k, _ in report.user_properties):
            state.skipped += 1

    def pytest_testnodeready(self, node: Any) -> None:
        state = self.workers.get(str(node.gateway.id))
        if state is not None:
            state.cwd = str(getattr(node, "workerinfo", {}).get("cwd") or "") or None

    def node_down(self, node: Any, error: object | None) -> None:
        """pytest_testnodedown: note the worker's report; write the files a remote worker
        sent (records and traces first, the document last, each atomically)."""
        state = self.workers.get(str(node.gateway.id))
        if state is None:
            return
        out = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
        if isinstance(out, dict) and not state.reported:
            state.reported = True
            state.host, state.device = out.get("host"), out.get("device")
            state.run_id, state.dir = out.get("run_id"), out.get("dir")
            state.benchmarks, state.records = int(out["benchmarks"]), int(out["records"])
            state.status, state.error = cast("WorkerStatus", out["status"]), out.get("error")
            if "files" in out:
                try:
                    self._write_sent(out["files"], str(out["document"]))
                except (OSError, zlib.error) as exc:
                    state.status = "lost"
                    state.error = f"its results arrived but could not be written here: {exc}"
        if error is not None:
            if state.reported and str(error) == "keyboard-interrupt":
                state.status = "interrupted"
            else:
                state.status, state.error = "lost", _error_text(error)
        elif not state.reported:
            state.status = "lost"
            state.error = "it finished without sending its results (no pytest-vlmbench there?)"
        state.down = True

    def _write_sent(self, files: dict[str, bytes], document: str) -> None:
        from pytest_vlmbench.results.document import write_text_atomic

        self.directory.mkdir(parents=True, exist_ok=True)
        for name in [*sorted(n for n in files if n != document), document]:
            if Path(name).name != name:  # a name, never a path
                raise OSError(f"refusing the file name {name!r}")
            text = zlib.decompress(files[name]).decode("utf-8")
            write_text_atomic(self.directory / name, text)

    def lost(self) -> list[WorkerState]:
        """The workers whose results are missing from the run: died, never sent them, or
        could not (failed): the run is incomplete."""
        return [w for w in self.workers.values() if w.status in ("lost", "failed")]

    def to_json(self) -> list[FleetWorker]:
        return [w.to_json() for w in self.workers.values()]


def partial_documents(directory: Path) -> list[Path]:
    return sorted(directory.glob(naming.RESULTS_GLOB)) if directory.is_dir() else []


def _worker_of(path: Path) -> str:
    """results-<run>.<gw>.json -> gw."""
    return naming.run_stem(path).rpartition(".")[2]


def merge_partials(directory: Path, out: Path, command: list[str] | None = None,
                   *, run_id: str | None = None,
                   fleet: Fleet | None = None) -> tuple[dict[str, Any], list[str]] | None:
    """Merge the workers' documents into `out` and remove them; returns the merged
    document and its warnings, or None when no worker wrote one. A failed merge
    (MergeError) leaves the partial files where they are. With a `fleet`, a lost
    worker's partial (same filesystem: it wrote up to its death) is merged, marked
    interrupted when it says running, or left in `directory` when it cannot be read;
    the merged document gets the `workers` list."""
    from pytest_vlmbench.results.document import ResultsError, records_path
    from pytest_vlmbench.results.merge import (
        merge_loaded,
        read_input,
        write_merged,
    )

    partials = partial_documents(directory)
    states = fleet.workers if fleet is not None else {}
    loaded: list[LoadedInput] = []
    kept = False  # a lost worker's unreadable partial stays for a look
    for path in partials:
        state = states.get(_worker_of(path))
        try:
            item = read_input(path)
        except ResultsError as exc:
            if state is None or state.status != "lost":
                raise
            state.error = f"{state.error}; its partial results are unreadable ({exc})"
            kept = True
            continue
        if state is not None:
            doc = item[1]
            state.run_id, state.device = str(doc["run_id"]), str(doc["device"].get("name"))
            state.benchmarks, state.records = len(doc["benchmarks"]), len(item[2])
            host = doc["environment"].get("xdist_worker", {}).get("host")
            state.host = state.host or host
            if state.status == "lost" and doc["status"] == "running":
                doc["status"] = "interrupted"  # it died: its run ends where it stopped
        loaded.append(item)
    if fleet is not None:
        for state in fleet.workers.values():
            if state.run_id is not None and state.status != "lost" and not any(
                    _worker_of(p) == state.id for p, _, _ in loaded):
                state.status = "lost"
                state.error = "it wrote results, but they never reached the controller"
    result = None
    if loaded:
        rout = naming.records_file(out)
        merged = merge_loaded(loaded, records_file=rout.name, shared_run_id=True,
                              run_id=run_id, command=command)
        merged.document["environment"].pop("xdist_worker", None)  # runs[] say whose
        if fleet is not None:
            merged.document["workers"] = fleet.to_json()
            if fleet.lost() and merged.document["status"] == "complete":
                # a worker's run is missing: the run is incomplete, never a baseline
                merged.document["status"] = "interrupted"
        write_merged(merged, out)  # validated there
        result = merged.document, list(merged.warnings)
    if directory.is_dir():
        for trace in directory.glob(naming.POWER_TRACE_GLOB):  # runs[].power_trace_file names them
            trace.replace(out.parent / trace.name)
        if not kept:
            shutil.rmtree(directory, ignore_errors=True)
        for path, doc, _ in loaded if kept else ():  # merged: never merged again
            records_path(path, doc).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
    return result
