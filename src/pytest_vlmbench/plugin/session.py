"""Per-session state: the matrix, the model pool, the records file, the results document.

One `VlmSession` lives in `config.stash`. Models are loaded once per
(model, precision) and kept while consecutive tests use them (the plugin orders
tests so they do), then closed before the next one loads, so a session never holds
two large models at once. The results document is rewritten after every benchmark.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vlmbench import __version__
from pytest_vlmbench.backends import (
    BackendError,
    LoadContext,
    LoadedModel,
    available,
    device_problem,
    get_backend,
)
from pytest_vlmbench.backends.native_log import native_stderr_to
from pytest_vlmbench.metrics.summary import METHODS
from pytest_vlmbench.models import devices
from pytest_vlmbench.models.catalog import (
    Catalog,
    CatalogError,
    ModelSpec,
    did_you_mean,
    load_catalog,
)
from pytest_vlmbench.models.devices import CPU_FALLBACK, Detection, DeviceProfile
from pytest_vlmbench.plugin.options import DEFAULT_OUT_DIR, Options
from pytest_vlmbench.power.energy import METHODS as ENERGY_METHODS
from pytest_vlmbench.power.monitor import PowerMonitor
from pytest_vlmbench.results.document import KIND, SCHEMA_VERSION, ResultsError, write_atomic
from pytest_vlmbench.run import environment, machine_load, memory
from pytest_vlmbench.run.records import RecordWriter
from pytest_vlmbench.run.runner import ModelCase

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.gate import Gate


@dataclass
class MatrixCell:
    case: ModelCase
    skip: str | None  # why this combination cannot run here, or None


@dataclass
class LoadedHandle:
    """What the `vlm_model` fixture gives a test: the case, its spec, the live model."""

    case: ModelCase
    spec: ModelSpec
    model: LoadedModel


class ModelPool:
    """Loads each (model, precision) once and keeps at most one loaded at a time."""

    def __init__(self, session: VlmSession) -> None:
        self.session = session
        self._current: tuple[ModelCase, LoadedHandle] | None = None
        self._failed: dict[ModelCase, str] = {}
        self.loads: dict[str, dict[str, Any]] = {}

    def get(self, case: ModelCase) -> LoadedHandle:
        if self._current is not None and self._current[0] == case:
            return self._current[1]
        self.release()
        if case in self._failed:
            raise BackendError(self._failed[case])
        spec = self.session.catalog().get(case.model)
        opts = self.session.options
        device = self.session.profile_for(case)
        entry = self.loads.setdefault(case.id, {
            "model": case.model, "precision": case.precision, "backend": case.backend,
            "device": case.device, "count": 0, "error": None,
        })
        # A backend that cannot use the device's GPU would run on the CPU under the GPU's
        # label (and roofline): refused here, before anything loads, unless
        # --vlm-cpu-fallback relabelled this case (then `device` is the CPU fallback).
        problem = self.session.device_problem(spec.backend, device)
        if problem is not None:
            message = (f"{problem}; or pass --vlm-cpu-fallback to run on the CPU, labelled "
                       f"{CPU_FALLBACK}")
            self._failed[case] = entry["error"] = message
            raise BackendError(message)
        if case.device == CPU_FALLBACK:
            entry["cpu_fallback"] = {"from": self.session.device.name,
                                     "reason": self.session.fallbacks.get(spec.backend)}
        threads = self.session.threads_for(device)
        ctx = LoadContext(
            device=device, cache_dir=opts.cache_dir, threads=threads,
            seed=opts.seed, log_path=self.session.log_path,
        )
        monitor = self.session.power()
        monitor.start()
        accel_before = monitor.memory_now()
        hwm_reset = memory.reset_peak()
        rss_before = memory.rss_bytes()
        with native_stderr_to(self.session.log_path, f"load {case.id}") as capture:
            try:
                model = get_backend(spec.backend).load(spec, case.precision, ctx)
            except KeyboardInterrupt:
                entry["interrupted"] = True  # Ctrl-C during the load (native_log defers it)
                raise
            except Exception as exc:  # any load failure: one message, remembered
                said = capture.text()
                message = str(exc) if isinstance(exc, BackendError) else (
                    f"model {case.model!r} ({case.precision}): {type(exc).__name__}: {exc}"
                )
                message += f"\n{spec.backend} said:\n{said}" if said else ""
                self._failed[case] = message
                entry["error"] = message
                raise BackendError(message) from None
        rss_after = memory.rss_bytes()
        accel_after = monitor.memory_now()
        entry.update(
            count=entry["count"] + 1,
            load_s=model.timings_ns["load"] / 1e9,
            resolve_s=model.timings_ns["resolve"] / 1e9,
            rss_before_bytes=rss_before,
            rss_after_bytes=rss_after,
            rss_delta_bytes=None if rss_before is None or rss_after is None
            else rss_after - rss_before,
            rss_peak_bytes=memory.hwm_since_reset() if hwm_reset else None,
            accelerator_memory_delta_bytes=None if accel_before is None or accel_after is None
            else accel_after - accel_before,
            artifacts=model.artifacts,
            settings=model.settings,
        )
        self.session.check_threads(device, model.settings.get("n_threads"))
        handle = LoadedHandle(case, spec, model)
        self._current = (case, handle)
        return handle

    def current_case(self) -> ModelCase | None:
        """The matrix cell of the model loaded now, if any."""
        return None if self._current is None else self._current[0]

    def release(self) -> None:
        if self._current is not None:
            _case, handle = self._current
            self._current = None
            with native_stderr_to(self.session.log_path, "close"):
                handle.model.close()


class VlmSession:
    """Everything one pytest session knows about its benchmarks."""

    def __init__(
        self, config: pytest.Config, options: Options,
        resolved: tuple[DeviceProfile, Detection] | None, taken_aliases: list[str],
        *, run_id: str | None = None, results_path: Path | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self._resolved = resolved
        self.taken_aliases = taken_aliases
        now = datetime.now(UTC)
        self.started_at = now.isoformat(timespec="seconds")
        self.run_id = run_id or f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        out_dir = config.rootpath / DEFAULT_OUT_DIR
        # `{run_id}` in --vlm-out keeps every run (a fixed name is overwritten by the next).
        named = (None if options.out is None
                 else options.out.with_name(options.out.name.replace("{run_id}", self.run_id)))
        self.results_path = results_path or named or out_dir / f"results-{self.run_id}.json"
        self.records_path = self.results_path.with_name(
            self.results_path.name.removesuffix(".json") + ".records.jsonl"
        )
        # One log per run, named like its results (a shared backend.log grew across runs).
        self.log_path: Path | None = None if options.backend_logs else self.results_path.with_name(
            self.results_path.name.removesuffix(".json") + ".backend.log"
        )
        self.power_trace_path = self.results_path.with_name(
            self.results_path.name.removesuffix(".json") + ".power.jsonl"
        )
        self._monitor: PowerMonitor | None = None
        self.writer = RecordWriter(self.records_path)
        self.pool = ModelPool(self)
        self.benchmarks: list[dict[str, Any]] = []
        self.merged: dict[str, Any] | None = None
        self.gate: Gate | None = None  # --vlm-compare
        self.merge_error: str | None = None
        self.merge_warnings: list[str] = []  # the xdist controller's merged document
        self._catalog: Catalog | None = None
        self._environment: dict[str, Any] | None = None
        self._device_problems: dict[tuple[str, str], str | None] = {}
        self.fallbacks: dict[str, str] = {}  # backend -> why --vlm-cpu-fallback moved it
        # Mistakes known before any request (errors.UsageMistake) seen in collection or in
        # a test: each was reported as one line; the session then exits with status 4.
        self.usage_mistakes: list[str] = []
        self.collection_mistake = False  # one of them stopped collection (pytest says 2)
        self._cpu_share: machine_load.CpuShare | None = None
        self.fit_threads: int | None = None  # what --vlm-threads=fit chose
        self.thread_advice: str | None = None  # more threads than free CPUs, said once

    # -- threads and the CPUs other processes leave us ---------------------------------
    def cpu_share(self) -> machine_load.CpuShare:
        """How many CPUs other processes left us, measured once (0.5 s) at the first load
        of a model on the CPU."""
        if self._cpu_share is None:
            self._cpu_share = machine_load.free_cpus()
        return self._cpu_share

    def threads_for(self, device: DeviceProfile) -> int | None:
        """The threads a CPU model loads with: --vlm-threads, or with `fit` the whole CPUs
        that are free now; None leaves it to the backend (every usable core)."""
        if not self.options.threads_fit:
            return self.options.threads
        if self.fit_threads is None:
            self.fit_threads = machine_load.fit_threads(self.cpu_share())
        return self.fit_threads

    def check_threads(self, device: DeviceProfile, threads: object) -> None:
        """Say once when a CPU model got more threads than CPUs are free: llama.cpp's
        threads wait for each other at every step, so one without a CPU holds all back."""
        if self.thread_advice is not None or device.accelerator != "cpu" \
                or not isinstance(threads, int) or self.options.threads_fit:
            return
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

    # -- the device (detected lazily: a session that runs no benchmark never looks) --
    def _device(self) -> tuple[DeviceProfile, Detection]:
        if self._resolved is None:
            self._resolved = devices.resolve(self.options.device)
        return self._resolved

    @property
    def device(self) -> DeviceProfile:
        return self._device()[0]

    @property
    def detection(self) -> Detection:
        return self._device()[1]

    def device_problem(self, backend: str, device: DeviceProfile | None = None) -> str | None:
        """Why `backend`, as installed, cannot use `device`'s accelerator (the session's
        device by default); None when it can, when the device has none, or when the
        backend cannot even be imported (its load then says why). Asked once per backend;
        importing the backend happens here, so only for a device with an accelerator."""
        device = device or self.device
        if device.accelerator == "cpu":
            return None
        key = (backend, device.name)
        if key not in self._device_problems:
            try:
                instance = get_backend(backend)
            except BackendError:
                return None
            with native_stderr_to(self.log_path, f"device check {backend} on {device.name}"):
                try:
                    problem = device_problem(instance, device)
                except Exception as exc:  # a broken check is a load failure, said once
                    problem = (f"backend {backend!r} could not check whether it can use "
                               f"device {device.name}: {type(exc).__name__}: {exc}")
            self._device_problems[key] = problem
        return self._device_problems[key]

    def device_for(self, backend: str) -> DeviceProfile:
        """The profile `backend`'s models run on: the session's device, or, with
        --vlm-cpu-fallback, the CPU fallback when the backend cannot use its GPU."""
        if not self.options.cpu_fallback:
            return self.device
        problem = self.device_problem(backend)
        if problem is None:
            return self.device
        self.fallbacks[backend] = problem
        return devices.cpu_fallback(self.device)

    def profile_for(self, case: ModelCase) -> DeviceProfile:
        """The profile a matrix cell was labelled with."""
        return devices.cpu_fallback(self.device) if case.device == CPU_FALLBACK else self.device

    def power(self) -> PowerMonitor:
        """The session's power/memory monitor (created, not started, on first use)."""
        if self._monitor is None:
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

    # -- the matrix ----------------------------------------------------------------
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.options.catalog, backends=frozenset(available()))
        return self._catalog

    def check_matrix(self) -> None:
        """Refuse a matrix that names a precision no device knows, or that runs nothing.

        Both are mistakes, not results: a typo (`q4_kk`, `--vlm-precisions=fp64`) would
        otherwise skip every cell it touches and exit 0 with nothing benchmarked.
        CatalogError (a usage error) with one line naming the entry or the option. The
        device is not looked at here (a plain test session never detects it); the
        "selects nothing" half is `check_runs_something`, once benchmarks are collected.
        """
        self.catalog()  # validated on load, its precision names included (catalog.py)
        known = devices.known_precisions()
        for precision in self.options.precisions or ():
            if precision not in known:
                raise CatalogError(
                    f"--vlm-precisions: {precision!r} is not a precision any device profile "
                    f"knows{did_you_mean(precision, known)}"
                )
        self.matrix(check_backends=False, with_device=False)  # model ids, defaults

    def check_runs_something(self) -> None:
        """With benchmarks collected: refuse a matrix in which every cell is skipped."""
        cells = self.matrix(check_backends=False)
        if cells and all(cell.skip is not None for cell in cells):
            reasons = "; ".join(dict.fromkeys(str(cell.skip) for cell in cells))
            raise CatalogError(f"the model matrix selects nothing to run here: {reasons}")

    def matrix(self, *, check_backends: bool = True,
               with_device: bool = True) -> list[MatrixCell]:
        """The (model, precision) cells for this device; CatalogError if it cannot be built.

        With --vlm-cpu-fallback a cell whose backend cannot use the device's GPU is
        labelled cpu-fallback (its test id too); that asks the backend, so imports it:
        `check_backends=False` (validating the catalog) leaves that out;
        `with_device=False` only checks the model ids and returns no cells.
        """
        catalog = self.catalog()
        ids = self.options.models or catalog.defaults()
        if not ids:
            raise CatalogError(
                f"{catalog.path}: no model has default = true; choose with --vlm-models"
            )
        cells = []
        for model_id in ids:
            try:
                spec = catalog.get(model_id)
            except CatalogError as exc:
                raise CatalogError(f"--vlm-models: {exc}") from None
            if not with_device:
                continue
            for precision in self.options.precisions or spec.run_precisions():
                device = self.device_for(spec.backend) if check_backends else self.device
                case = ModelCase(model_id, precision, device.name, spec.backend, spec.modality)
                skip = None
                if precision not in spec.precisions:
                    skip = (
                        f"{model_id} has no {precision} variant in {catalog.path.name} "
                        f"(it has {', '.join(spec.precisions)})"
                    )
                elif not device.supports(precision):
                    skip = f"device {device.name} does not support {precision}"
                cells.append(MatrixCell(case, skip))
        return cells

    # -- results -------------------------------------------------------------------
    def add_benchmark(self, entry: dict[str, Any]) -> None:
        if entry.get("device") == CPU_FALLBACK:
            entry["warnings"].append(self._fallback_warning(str(entry.get("backend"))))
        self.benchmarks.append(entry)
        self.write_results("running")

    def _fallback_warning(self, backend: str) -> str:
        note = (f"ran on the CPU, not on {self.device.name}'s GPU (--vlm-cpu-fallback): "
                f"{self.fallbacks.get(backend, 'the backend cannot use the GPU')}")
        meter = self._monitor.meter_name if self._monitor is not None else None
        if meter == "nvml":
            note += "; energy figures are the GPU's (NVML), not the CPU's that did the work"
        return note

    def document_device(self) -> dict[str, Any]:
        """The results document's `device`: the session's profile, what was detected and
        why, NVML's readings of that GPU, and which backends fell back to the CPU."""
        detection = self.detection
        return {
            **self.device.to_json(), "detected": detection.profile,
            "evidence": detection.evidence,
            "nvml": None if detection.gpu is None else detection.gpu.to_json(),
            "cpu_fallback": None if not self.fallbacks else {
                "profile": devices.cpu_fallback(self.device).to_json(),
                "backends": dict(self.fallbacks),
            },
        }

    def document(self, status: str) -> dict[str, Any]:
        if self._environment is None:
            self._environment = environment.capture(self.config.rootpath)
        o = self.options
        return {
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
            "methods": {**METHODS, **ENERGY_METHODS},
            "power": self.document_power(),
            "power_trace_file": self.power_trace_path.name
            if self._monitor is not None and self._monitor.meter_name else None,
            "loads": list(self.pool.loads.values()),
            "benchmarks": self.benchmarks,
            "records_file": self.records_path.name,
        }

    def has_results(self) -> bool:
        """Whether anything benchmark-related happened: a benchmark or a load attempt."""
        return bool(self.benchmarks or self.pool.loads or self.merged)

    def write_results(self, status: str) -> None:
        if self.has_results():
            write_atomic(self.results_path, self.document(status))

    def merge_workers(self, interrupted: bool) -> None:
        """pytest-xdist controller: merge the workers' partial documents into ours."""
        from pytest_vlmbench.plugin.parallel import merge_partials, worker_dir

        directory = worker_dir(self.results_path, self.run_id)
        try:
            self.pool.release()  # the controller loads nothing, but close what it holds
            if self._monitor is not None:
                self._monitor.stop()
            self.writer.close()
            result = merge_partials(directory, self.results_path,
                                    environment.redact_argv(list(sys.argv)))
        except ResultsError as exc:  # MergeError too: keep the partials, say why
            self.merge_error = f"{exc} (the workers' results are kept in {directory})"
            return
        if result is None:
            return
        merged, self.merge_warnings = result
        self.benchmarks = merged["benchmarks"]
        self.records_path = self.results_path.with_name(
            self.results_path.name.removesuffix(".json") + ".records.jsonl"
        )
        self.merged = merged

    def finish(self, interrupted: bool) -> None:
        try:
            self.pool.release()
        finally:
            if self._monitor is not None:
                self._monitor.stop()
            self.writer.close()
            self.write_results("interrupted" if interrupted else "complete")
