"""Loading models: each (model, precision) once, at most one held at a time.

Models are kept while consecutive tests use them (the plugin orders tests so they do),
then closed before the next one loads, so a session never holds two large models at
once, except where a two-stage pipeline asks for both of its models together
(`together`, plugin/pipeline.py); `events` says what was loaded and closed, in order.
Imported at the first benchmark: it brings the backend registry and the
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
        self._also: list[tuple[ModelCase, LoadedHandle]] = []  # held with it (together())
        self.events: list[tuple[str, str]] = []  # ("load" | "close", case id), in order
        self._failed: dict[ModelCase, str] = {}
        self._unavailable: dict[ModelCase, str] = {}  # precisions this install cannot run
        self.loads: dict[str, LoadEntry] = {}

    def get(self, case: ModelCase) -> LoadedHandle:
        held = self.held()
        for held_case, handle in held:
            if held_case == case:  # kept; any model held with it (together()) is closed
                self._current, self._also = (case, handle), []
                self._close_all([(o, h) for o, h in held if o != case])
                return handle
        self.release()
        handle = self._load(case)
        self._current = (case, handle)
        return handle

    def together(self, cases: list[ModelCase]) -> list[LoadedHandle]:
        """Several models held at once (a pipeline's together mode), in the order given
        (a case given twice is one model): those held now and wanted are kept, any other
        is closed first; each load is recorded in `loads` as `get`'s is. A load that
        fails closes every model held. `release` (or the next `get`) closes them all."""
        wanted = list(dict.fromkeys(cases))
        held = dict(self.held())
        drop = [(case, handle) for case, handle in held.items() if case not in wanted]
        held = {case: handle for case, handle in held.items() if case in wanted}
        kept = list(held.items())  # tracked while the others close, should one raise
        self._current, self._also = (kept[0] if kept else None), kept[1:]
        self._close_all(drop)
        self._current, self._also = None, []
        handles: dict[ModelCase, LoadedHandle] = {}
        try:
            for case in wanted:
                handles[case] = held.get(case) or self._load(case)
                pair = (case, handles[case])
                if self._current is None:
                    self._current = pair
                else:
                    self._also.append(pair)
        except BaseException:
            self.release()
            raise
        return [handles[case] for case in cases]

    def held(self) -> list[tuple[ModelCase, LoadedHandle]]:
        """The models loaded now: one, or a pipeline's together() set."""
        return ([] if self._current is None else [self._current]) + list(self._also)

    def _load(self, case: ModelCase) -> LoadedHandle:
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
        self.events.append(("load", case.id))
        return LoadedHandle(case, spec, model)

    def current_case(self) -> ModelCase | None:
        """The matrix cell of the model loaded now, if any."""
        return None if self._current is None else self._current[0]

    def release(self) -> None:
        """Close every model held; one whose close raises does not keep the others open
        (the first error is raised after all were tried)."""
        held, self._current, self._also = self.held(), None, []
        self._close_all(held)

    def _close_all(self, held: list[tuple[ModelCase, LoadedHandle]]) -> None:
        first: BaseException | None = None
        for case, handle in held:
            try:
                self._close(case, handle)
            except BaseException as exc:  # Ctrl-C too: close the rest, then raise it
                first = first or exc
        if first is not None:
            raise first

    def _close(self, case: ModelCase, handle: LoadedHandle) -> None:
        self.events.append(("close", case.id))
        with native_stderr_to(self.session.log_path, "close"):
            handle.model.close()
