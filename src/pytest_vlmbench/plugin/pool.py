"""Loading models: each (model, precision) once, at most one held at a time.

Models are kept while consecutive tests use them (the plugin orders tests so they do),
then closed before the next one loads, so a session never holds two large models at
once. Imported at the first benchmark: it brings the backend registry and the
memory meters with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_vlmbench.backends import (
    BackendError,
    Capabilities,
    LoadContext,
    LoadedModel,
    PrecisionUnavailable,
    get_backend,
)
from pytest_vlmbench.backends.native_log import native_stderr_to
from pytest_vlmbench.models.catalog import ModelSpec
from pytest_vlmbench.models.devices import CPU_FALLBACK
from pytest_vlmbench.results.models import LoadEntry
from pytest_vlmbench.run import memory
from pytest_vlmbench.run.runner import ModelCase

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.session import VlmSession


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
        self._unavailable: dict[ModelCase, str] = {}  # precisions this install cannot run
        self.loads: dict[str, LoadEntry] = {}

    def get(self, case: ModelCase) -> LoadedHandle:
        if self._current is not None and self._current[0] == case:
            return self._current[1]
        self.release()
        if case in self._failed:
            raise BackendError(self._failed[case])
        if case in self._unavailable:
            raise PrecisionUnavailable(self._unavailable[case])
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
            servers=self.session.servers if spec.endpoint is not None else None,
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
            except PrecisionUnavailable as exc:  # skipped, with the backend's reason
                self._unavailable[case] = entry["skipped"] = str(exc)
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
        if not isinstance(getattr(model, "capabilities", None), Capabilities):
            model.close()  # written before capabilities were data: say so, once
            message = (f"backend {spec.backend!r}: its loaded model has no `capabilities` "
                       "(pytest_vlmbench.backends.Capabilities: what it can do and report, "
                       "which the runner and the roofline read)")
            self._failed[case] = entry["error"] = message
            raise BackendError(message)
        rss_after = memory.rss_bytes()
        accel_after = monitor.memory_now()
        entry.update({
            "count": entry["count"] + 1,
            "load_s": model.timings_ns["load"] / 1e9,
            "resolve_s": model.timings_ns["resolve"] / 1e9,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "rss_delta_bytes": None if rss_before is None or rss_after is None
            else rss_after - rss_before,
            "rss_peak_bytes": memory.hwm_since_reset() if hwm_reset else None,
            "accelerator_memory_delta_bytes": None if accel_before is None or accel_after is None
            else accel_after - accel_before,
            "artifacts": model.artifacts,
            "settings": model.settings,
        })
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
