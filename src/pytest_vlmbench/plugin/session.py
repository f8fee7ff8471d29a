"""Per-session state: the run, its files, its threads, its power monitor, its results.

One `VlmSession` lives in `config.stash`, made in pytest_configure for every session,
so it costs nothing until a benchmark asks for something: the model pool, the records
writer and the power monitor are made on first use, and their modules (the backends,
the meters, the results schema) are imported then. The matrix it runs is `Matrix`
(matrix.py), the models it loads are the `ModelPool`'s (pool.py). The results document
is rewritten after every benchmark and every `vlm_power` window (power_fixture.py).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_vlmbench.models import devices
from pytest_vlmbench.models.devices import CPU_FALLBACK, Detection, DeviceProfile
from pytest_vlmbench.plugin.matrix import Matrix
from pytest_vlmbench.results import naming
from pytest_vlmbench.results.models import (
    Agreement,
    BenchmarkEntry,
    DeviceInfo,
    LoadEntry,
    Pipeline,
    ResultsDocument,
    RunStatus,
    ServerInfo,
    Window,
)

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.gate import Gate
    from pytest_vlmbench.plugin.options import Options
    from pytest_vlmbench.plugin.parallel import Fleet
    from pytest_vlmbench.plugin.pool import ModelPool
    from pytest_vlmbench.power.monitor import PowerMonitor
    from pytest_vlmbench.run.machine_load import CpuShare
    from pytest_vlmbench.run.records import RecordWriter
    from pytest_vlmbench.servers import ServerManager


class VlmSession(Matrix):
    """Everything one pytest session knows about its benchmarks: its matrix (Matrix),
    where its files go, and what ran."""

    def __init__(
        self, config: pytest.Config, options: Options,
        resolved: tuple[DeviceProfile, Detection] | None, taken_aliases: list[str],
        *, run_id: str | None = None, results_path: Path | None = None,
    ) -> None:
        self.config = config
        self.taken_aliases = taken_aliases
        now = datetime.now(UTC)
        self.started_at = now.isoformat(timespec="seconds")
        self.run_id = run_id or naming.new_run_id(now)
        named = None if options.out is None else naming.with_run_id(options.out, self.run_id)
        self.results_path = (results_path or named
                             or naming.default_results(config.rootpath, self.run_id))
        self.records_path = naming.records_file(self.results_path)
        self.power_trace_path = naming.power_trace_file(self.results_path)
        super().__init__(options, resolved, None if options.backend_logs
                         else naming.backend_log_file(self.results_path))
        self._monitor: PowerMonitor | None = None
        self._writer: RecordWriter | None = None
        self._pool: ModelPool | None = None
        self._servers: ServerManager | None = None
        self.benchmarks: list[BenchmarkEntry] = []
        self.pipelines: list[Pipeline] = []  # vlm_pipeline runs (plugin/pipeline.py)
        self.windows: list[Window] = []  # vlm_power windows, in the order they were asked for
        self._window_seq = 0
        self._windows_lock = threading.Lock()  # windows may close on several threads
        self.merged: dict[str, Any] | None = None
        self.gate: Gate | None = None  # --vlm-compare
        self.report_line: tuple[str, bool] | None = None
        self.history_line: tuple[str, bool] | None = None  # --vlm-history's append
        """--vlm-report: what the terminal says about the report (True: it failed)."""
        self.merge_error: str | None = None
        self.merge_warnings: list[str] = []  # the xdist controller's merged document
        self.fleet: Fleet | None = None  # the xdist controller's workers (parallel.py)
        self._environment: dict[str, Any] | None = None
        # Mistakes known before any request (errors.UsageMistake) seen in collection or in
        # a test: each was reported as one line; the session then exits with status 4.
        self.usage_mistakes: list[str] = []
        self.collection_mistake = False  # one of them stopped collection (pytest says 2)
        self._cpu_share: CpuShare | None = None
        self.fit_threads: int | None = None  # what --vlm-threads=fit chose
        self.thread_advice: str | None = None  # more threads than free CPUs, said once

    @property
    def pool(self) -> ModelPool:
        """The models of this session (made, and the backends imported, on first use)."""
        if self._pool is None:
            from pytest_vlmbench.plugin.pool import ModelPool

            self._pool = ModelPool(self)
        return self._pool

    @property
    def servers(self) -> ServerManager:
        """The servers this session starts (made at the first server-backed model); their
        logs go beside the results file."""
        if self._servers is None:
            from pytest_vlmbench.servers import ServerManager

            self._servers = ServerManager(self.results_path.parent, self.options.cache_dir,
                                          prefix=naming.run_stem(self.results_path))
        return self._servers

    def servers_started(self) -> list[ServerInfo]:
        """The managed servers this session started (results' `servers`): each one's
        id, kind, address, cold start, log, and why it exited if it died on its own."""
        if self._servers is None:
            return []
        return cast("list[ServerInfo]", self._servers.history())

    @property
    def writer(self) -> RecordWriter:
        """The records file's writer (it opens the file at the first record)."""
        if self._writer is None:
            from pytest_vlmbench.run.records import RecordWriter

            self._writer = RecordWriter(self.records_path)
        return self._writer

    def loads(self) -> list[LoadEntry]:
        """The results document's `loads`: one entry per (model, precision) tried."""
        return [] if self._pool is None else list(self._pool.loads.values())

    # -- threads and the CPUs other processes leave us ---------------------------------
    def cpu_share(self) -> CpuShare:
        """How many CPUs other processes left us, measured once (0.5 s) at the first load
        of a model on the CPU."""
        if self._cpu_share is None:
            from pytest_vlmbench.run import machine_load

            self._cpu_share = machine_load.free_cpus()
        return self._cpu_share

    def threads_for(self, device: DeviceProfile) -> int | None:
        """The threads a CPU model loads with: --vlm-threads, or with `fit` the whole CPUs
        that are free now; None leaves it to the backend (every usable core)."""
        if not self.options.threads_fit:
            return self.options.threads
        if self.fit_threads is None:
            from pytest_vlmbench.run import machine_load

            self.fit_threads = machine_load.fit_threads(self.cpu_share())
        return self.fit_threads

    def check_threads(self, device: DeviceProfile, threads: object) -> None:
        """Say once when a CPU model got more threads than CPUs are free: llama.cpp's
        threads wait for each other at every step, so one without a CPU holds all back."""
        if self.thread_advice is not None or device.accelerator != "cpu" \
                or not isinstance(threads, int) or self.options.threads_fit:
            return
        from pytest_vlmbench.run import machine_load

        advice = machine_load.thread_advice(threads, self.cpu_share())
        if advice is not None:
            self.thread_advice = advice
            self.say(f"warning: {advice}", yellow=True)

    def say(self, line: str, **markup: bool) -> None:
        """A line on the terminal now, outside pytest's capture (markup: yellow=True...)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture is not None \
                else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(line, **markup)

    def output_problem(self) -> str | None:
        """Why the results file cannot be written, found before the first request (a
        directory given as --vlm-out, a read-only place); None when it can. Creates the
        output directory and a probe file in it, which is removed."""
        path = self.results_path
        name = "results file"
        if self.options.out is not None:
            from_ini = self.config.getoption("vlm_out") is None
            ini = self.config.inipath.name if self.config.inipath else "ini"
            name = f"vlm_out ({ini})" if from_ini else "--vlm-out"
        if path.is_dir():
            return (f"{name}={path} is a directory; name a file in it, e.g. "
                    f"{path / 'results.json'}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".vlmbench-probe-"):
                pass
        except OSError as exc:
            where = exc.filename or path.parent
            return f"{name}={path}: cannot write there ({where}: {exc.strerror or exc})"
        # A fixed name reused: this run's backend log starts afresh (records and power
        # readings do too, when their files are first opened), not after the last run's.
        if self.log_path is not None and self.log_path.is_file():
            self.log_path.write_bytes(b"")
        return None

    def power(self) -> PowerMonitor:
        """The session's power/memory monitor (created, not started, on first use)."""
        if self._monitor is None:
            from pytest_vlmbench.power.monitor import PowerMonitor

            o = self.options
            self._monitor = PowerMonitor(
                o.power_meter, self.device.power_meter, o.power_interval_s, o.idle_s,
                self.power_trace_path, self.device.name,
            )
            worker = getattr(self.config, "workerinput", None)
            per_gpu = o.gpu_per_worker and self.device.accelerator == "cuda"
            if worker is not None and int(worker.get("workercount", 1)) > 1 and not per_gpu:
                self._monitor.shared_note = (
                    f"{worker['workercount']} pytest-xdist workers ran at once and this meter "
                    "sees the whole board, package or GPU: energy includes the other workers' "
                    "load (use --vlm-gpu-per-worker with NVML, or run without -n)"
                )
        return self._monitor

    def document_power(self) -> dict[str, Any]:
        if self._monitor is not None:
            return self._monitor.to_json()
        return {"requested": self.options.power_meter, "meter": None,
                "absent_reason": "no benchmark ran, so no meter was opened"}

    def bandwidth(self) -> tuple[float | None, str]:
        """Peak memory bandwidth for the roofline, and where it came from."""
        if self.options.bandwidth_gbs is not None:
            return self.options.bandwidth_gbs, "--vlm-bandwidth-gbs"
        case = self.pool.current_case()  # the benchmark's model: it may have fallen back
        device = self.device if case is None else self.profile_for(case)
        return device.bandwidth_gbs, f"device profile {device.name} ({device.bandwidth_source})"

    # -- results -------------------------------------------------------------------
    def add_benchmark(self, entry: BenchmarkEntry) -> None:
        if entry.get("device") == CPU_FALLBACK:
            entry["warnings"].append(self._fallback_warning(str(entry.get("backend"))))
        self.benchmarks.append(entry)
        self.write_results("running")

    def next_window_seq(self) -> int:
        """The next `vlm_power.measure()` call's number in this session (from 1)."""
        with self._windows_lock:
            self._window_seq += 1
            return self._window_seq

    def add_window(self, window: Window) -> None:
        """Keep a closed window (in call order) and rewrite the document."""
        with self._windows_lock:
            self.windows.append(window)
            self.windows.sort(key=lambda w: w["seq"])
            self.write_results("running")

    def _fallback_warning(self, backend: str) -> str:
        note = (f"ran on the CPU, not on {self.device.name}'s GPU (--vlm-cpu-fallback): "
                f"{self.fallbacks.get(backend, 'the backend cannot use the GPU')}")
        meter = self._monitor.meter_name if self._monitor is not None else None
        if meter == "nvml":
            note += "; energy figures are the GPU's (NVML), not the CPU's that did the work"
        return note

    def document_device(self) -> DeviceInfo:
        """The results document's `device`: the session's profile, what was detected and
        why, NVML's readings of that GPU, and which backends fell back to the CPU."""
        detection = self.detection
        device: DeviceInfo = {
            **self.device.to_json(), "detected": detection.profile,
            "evidence": detection.evidence,
            "nvml": None if detection.gpu is None else detection.gpu.to_json(),
            "cpu_fallback": None if not self.fallbacks else {
                "profile": devices.cpu_fallback(self.device).to_json(),
                "backends": dict(self.fallbacks),
            },
        }
        return device

    def document(self, status: RunStatus) -> ResultsDocument:
        from pytest_vlmbench import __version__
        from pytest_vlmbench.metrics.summary import METHODS
        from pytest_vlmbench.power.energy import METHODS as ENERGY_METHODS
        from pytest_vlmbench.power.windows import METHODS as WINDOW_METHODS
        from pytest_vlmbench.results.document import KIND, SCHEMA_VERSION
        from pytest_vlmbench.run import environment

        if self._environment is None:
            self._environment = environment.capture(self.config.rootpath)
            workerinput = getattr(self.config, "workerinput", None)
            if workerinput is not None:  # which worker, where: survives the merge in runs[]
                from pytest_vlmbench.plugin.parallel import identity

                self._environment["xdist_worker"] = identity(workerinput)
        o = self.options
        doc: ResultsDocument = {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "pytest-vlmbench", "version": __version__},
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": None if status == "running"
            else datetime.now(UTC).isoformat(timespec="seconds"),
            "status": status,
            "command": environment.redact_argv(list(sys.argv)),
            "settings": {
                "device": o.device, "models": o.models, "precisions": o.precisions,
                "samples": o.samples, "warmup": o.warmup, "seed": o.seed,
                "threads": "fit" if o.threads_fit else o.threads,
                "threads_fit": None if not o.threads_fit or self._cpu_share is None
                else {"threads": self.fit_threads, **self._cpu_share.to_json()},
                "thread_advice": self.thread_advice,
                "image_size": o.image_size, "catalog": environment.redact_text(str(o.catalog)),
                "power_meter": o.power_meter, "power_interval_s": o.power_interval_s,
                "idle_s": o.idle_s, "bandwidth_gbs": o.bandwidth_gbs,
                "cpu_fallback": o.cpu_fallback,
            },
            "environment": self._environment,
            "device": self.document_device(),
            "methods": {**METHODS, **ENERGY_METHODS, **WINDOW_METHODS},
            "power": self.document_power(),
            "power_trace_file": self.power_trace_path.name
            if self._monitor is not None and self._monitor.meter_name else None,
            "loads": self.loads(),
            "benchmarks": self.benchmarks,
            "records_file": self.records_path.name,
        }
        if self.windows:
            doc["windows"] = list(self.windows)
        if self.pipelines:
            doc["pipelines"] = list(self.pipelines)
        servers = self.servers_started()
        if servers:
            doc["servers"] = servers
        if status != "running":  # read from the records once, at the end
            agreement = self.agreement()
            if agreement:
                doc["agreement"] = agreement
        return doc

    def agreement(self) -> list[Agreement]:
        """How the models' ratings agree (scoring/agreement.py), for the benchmarks
        whose task gave ratings (a `value` score's histogram): from the records file,
        read only when there are such benchmarks, and once for a given set of benchmarks
        (the document at the end and the terminal summary both ask)."""
        rated = {e["id"] for e in self.benchmarks
                 if "quality" in e["summary"] and e["summary"]["quality"]["histograms"]}
        if not rated or not self.records_path.is_file():
            return []
        key = frozenset(rated)
        if self._agreement is None or self._agreement[0] != key:
            self._agreement = (key, self._agreement_of(rated))
        return self._agreement[1]

    _agreement: tuple[frozenset[str], list[Agreement]] | None = None

    def _agreement_of(self, rated: set[str]) -> list[Agreement]:
        from pytest_vlmbench.run.records import read_records
        from pytest_vlmbench.scoring.agreement import agreement

        try:
            records = read_records(self.records_path)
        except (OSError, ValueError):  # the run's figures stand without it
            return []
        by_id: dict[str, list[Any]] = {benchmark: [] for benchmark in rated}
        for record in records:
            if record["benchmark"] in by_id and record["run_id"] == self.run_id:
                by_id[record["benchmark"]].append(record)
        pairs = [(e, by_id[e["id"]]) for e in self.benchmarks if e["id"] in by_id]
        return agreement(pairs)

    def has_results(self) -> bool:
        """Whether anything benchmark-related happened: a benchmark, a load attempt or a
        `vlm_power` window."""
        return bool(self.benchmarks or self.windows or self.loads() or self.merged)

    def write_results(self, status: RunStatus) -> None:
        if self.has_results():
            from pytest_vlmbench.results.document import write_atomic

            write_atomic(self.results_path, self.document(status))

    def merge_workers(self, interrupted: bool) -> None:
        """pytest-xdist controller: merge the workers' partial documents into ours (the
        controller's run id is the merged document's), with the `workers` list."""
        from pytest_vlmbench.plugin.parallel import merge_partials, redact_xspecs
        from pytest_vlmbench.results.document import ResultsError
        from pytest_vlmbench.run import environment

        directory = naming.worker_dir(self.results_path, self.run_id)
        try:
            self._close()  # the controller loads nothing, but close what it holds
            result = merge_partials(directory, self.results_path,
                                    redact_xspecs(environment.redact_argv(list(sys.argv))),
                                    run_id=self.run_id, fleet=self.fleet)
        except ResultsError as exc:  # MergeError too: keep the partials, say why
            self.merge_error = f"{exc} (the workers' results are kept in {directory})"
            return
        if result is None:
            return
        merged, self.merge_warnings = result
        self.benchmarks = merged["benchmarks"]
        self.windows = list(merged.get("windows", []))  # once merge.py carries them over
        self.merged = merged

    def lost_workers(self) -> list[str]:
        """The pytest-xdist workers whose results are missing from the run (the run is
        incomplete): died, or their results never arrived."""
        return [] if self.fleet is None else [w.id for w in self.fleet.lost()]

    def _close(self) -> None:
        """Close the model held, stop the meter, close the records file; each only if it
        was ever made."""
        try:
            if self._pool is not None:
                self._pool.release()
        finally:
            if self._servers is not None:  # stopped at the end, on Ctrl-C and on failure
                self._servers.close()
            if self._monitor is not None:
                self._monitor.stop()
            if self._writer is not None:
                self._writer.close()

    def finish(self, interrupted: bool) -> None:
        try:
            self._close()
        finally:
            self.write_results("interrupted" if interrupted else "complete")
