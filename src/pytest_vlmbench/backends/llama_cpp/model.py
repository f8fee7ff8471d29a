"""A GGUF model (and projector) loaded in this process: weights, settings, load, and what
it can do (`capabilities`); its requests run in request.py.

- llama-cpp-python defaults to half the cores and flash attention off; that alone halved
  gemma3-270m decode (27 vs 45-50 tokens/s). We set threads to every core this process
  may use and flash attention on, and record both.
- Each request pays its full prompt (no prefix reuse across requests) unless the model's
  settings say `prompt_cache = true`, so per-request prefill is comparable.
- The context is the catalog's `n_ctx`, enforced by `CountingLlama` (counting.py).
"""

from __future__ import annotations

import time
from typing import Any

from pytest_vlmbench.backends import (
    BackendError,
    Capabilities,
    LoadContext,
    Request,
    Response,
    refuse_images,
)
from pytest_vlmbench.backends.llama_cpp.constraint import compile_constraint
from pytest_vlmbench.backends.llama_cpp.counting import (
    IMAGE_COUNTS,
    IMAGE_STAGES,
    TEXT_COUNTS,
    TEXT_STAGES,
    CountingLlama,
)
from pytest_vlmbench.backends.llama_cpp.request import Prompting, serve
from pytest_vlmbench.backends.llama_cpp.vision import VisionHandler
from pytest_vlmbench.backends.native_log import (
    error_mark,
    errors_since,
    raise_if_interrupted,
    sigint_deferred,
)
from pytest_vlmbench.models.catalog import CatalogError, ModelSpec, check_llama_cpp_settings
from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE
from pytest_vlmbench.models.weights import (
    Artifact,
    WeightsError,
    gguf_header_problem,
    gguf_magic_problem,
    resolve,
)
from pytest_vlmbench.tasks import Task

import llama_cpp  # isort: skip  # the backend's modules are imported only when used

# For the roofline: llama.cpp's own count of the text model's weight bytes. A decode step
# reads all of them when the output layer is tied to the token embeddings (Gemma), one
# embedding row otherwise (then the bound is conservative).
DECODE_BYTES_SOURCE = (
    "llama_model_size: every weight tensor of the text model (exact for tied "
    "embeddings; counts the whole token embedding otherwise); KV cache not counted"
)


def speed_settings(spec: ModelSpec, ctx: LoadContext) -> dict[str, Any]:
    """Our defaults, then the catalog's settings, the overrides and --vlm-threads."""
    settings: dict[str, Any] = {
        "n_ctx": 2048,
        "n_batch": 512,
        "n_ubatch": 512,
        "n_threads": None,
        "n_threads_batch": None,
        "flash_attn": True,
        "n_gpu_layers": 0 if ctx.device.accelerator == "cpu" else -1,
        "use_mmap": True,
        "prompt_cache": False,
    }
    for source, where in ((spec.settings, f"{spec.catalog_path}: model {spec.id!r}"),
                          (ctx.overrides, f"model {spec.id!r} (setting overrides)")):
        try:  # the catalog checked its own already; a ModelSpec may come from code
            check_llama_cpp_settings(dict(source), where)
        except CatalogError as exc:
            raise BackendError(str(exc)) from None
        settings.update(source)
    if ctx.threads is not None:  # the command line wins over the catalog
        settings["n_threads"] = settings["n_threads_batch"] = ctx.threads
    if settings["n_threads"] is None:
        from pytest_vlmbench.models.devices import cpu_threads

        settings["n_threads"] = settings["n_threads_batch"] = cpu_threads()
    return settings


def _compile(template: str) -> Any:
    """Compile a chat template once per model: compiling costs ~12 ms, rendering ~0.07 ms,
    and a per-request compile would sit inside the measured latency and TTFT."""
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template)


class LlamaCppModel:
    """A loaded GGUF model (and projector) serving requests in this process."""

    def __init__(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> None:
        self.spec = spec
        self.precision = precision
        self._log_path = ctx.log_path
        t0 = time.perf_counter_ns()
        self._weights, self._projector = self._resolve_weights(ctx)
        self.artifacts = [a.to_json() for a in (self._weights, self._projector) if a]
        resolve_ns = time.perf_counter_ns() - t0

        settings = speed_settings(spec, ctx)
        prompt_cache = bool(settings.pop("prompt_cache"))
        for artifact in (self._weights, self._projector):
            self._check_gguf(artifact)
        template = GEMMA_CHAT_TEMPLATE if spec.chat_format == "gemma" else None
        self._prompting = Prompting(spec.chat_format,
                                    _compile(template) if template is not None else None,
                                    prompt_cache)
        t1 = time.perf_counter_ns()
        self._llm, self._handler = self._load(settings, template, ctx.seed)
        self.timings_ns = {"resolve": resolve_ns, "load": time.perf_counter_ns() - t1}
        self.capabilities = self._capabilities()
        self.warnings = self._device_warnings(settings, ctx)
        self.settings = {
            **settings,
            "prompt_cache": prompt_cache,
            "chat_format": spec.chat_format,
            "llama_cpp_python": llama_cpp.__version__,
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "gpu_offload_supported": bool(llama_cpp.llama_supports_gpu_offload()),
        }

    # -- load ---------------------------------------------------------------------
    def _resolve_weights(self, ctx: LoadContext) -> tuple[Artifact, Artifact | None]:
        """The weights file and, for a vision model, its projector (found, fetched or
        generated into the cache)."""
        spec = self.spec
        try:
            weights = resolve(spec.precisions[self.precision],
                              catalog_dir=spec.catalog_path.parent, cache_dir=ctx.cache_dir)
            if spec.modality != "vision" or spec.projector is None:
                return weights, None
            return weights, resolve(spec.projector, catalog_dir=spec.catalog_path.parent,
                                    cache_dir=ctx.cache_dir)
        except (WeightsError, OSError, ValueError) as exc:
            raise BackendError(f"model {spec.id!r} ({self.precision}): {exc}") from None

    def _load(self, settings: dict[str, Any], template: str | None,
              seed: int) -> tuple[CountingLlama, VisionHandler | None]:
        """llama.cpp loads the weights (and mtmd the projector); a failure is one line."""
        handler: VisionHandler | None = None
        mark = error_mark()
        llm: CountingLlama | None = None
        try:
            with sigint_deferred():  # Ctrl-C aborts the load (progress callbacks), then raises
                try:
                    if self._projector is not None:
                        handler = VisionHandler(str(self._projector.path), template,
                                                use_gpu=settings["n_gpu_layers"] != 0)
                    llm = CountingLlama(model_path=str(self._weights.path), seed=seed,
                                        verbose=False, chat_handler=handler, **settings)
                    if handler is not None:
                        # Otherwise the projector loads inside the first request.
                        handler._init_mtmd_context(llm)
                except Exception as exc:  # ValueError, RuntimeError, TypeError...
                    raise_if_interrupted()  # an aborted load: the Ctrl-C, not its failure
                    raise BackendError(self._load_failure(exc, mark)) from None
        except BaseException:  # Ctrl-C or a failure: free what was loaded already
            if llm is not None:
                llm.close()
            raise
        llm.context_owner = f"model {self.spec.id!r}"
        llm.context_hint = f"raise settings.n_ctx in {self.spec.catalog_path.name}"
        if handler is not None:
            handler.timed.check_prompt = llm.check_prompt
        return llm, handler

    def _capabilities(self) -> Capabilities:
        """What this model, as loaded, does: images only with its projector, as many per
        request as the catalog allows (mtmd itself takes any number: one chunk each)."""
        vision = self._handler is not None
        return Capabilities(
            streaming=True, images=vision, max_images=self.spec.max_images if vision else None,
            grammar=True, json_schema=True,
            batch=False, concurrency=1,  # one llama context: one request at a time
            stages=TEXT_STAGES + (IMAGE_STAGES if vision else ()),
            counts=TEXT_COUNTS + (IMAGE_COUNTS if vision else ()),
            decode_bytes_per_token=int(llama_cpp.llama_model_size(self._llm.model)),
            decode_bytes_source=DECODE_BYTES_SOURCE,
        )

    def _device_warnings(self, settings: dict[str, Any], ctx: LoadContext) -> list[str]:
        """Said in every benchmark of this model: a GPU device's label and roofline on a
        run the settings keep on the CPU would mislead (use --device=cpu for that)."""
        if ctx.device.accelerator == "cpu" or settings["n_gpu_layers"] != 0:
            return []
        return [f"n_gpu_layers = 0 keeps {self.spec.id} on the CPU although device "
                f"{ctx.device.name} has a GPU: its figures are CPU figures under a GPU label "
                "(run with --device=cpu to label them so)"]

    def _check_gguf(self, artifact: Artifact | None) -> None:
        """Refuse a file that is not a GGUF before llama.cpp sees it: its answer reached
        users as "Failed to load model from file" and nothing else."""
        if artifact is None:
            return
        try:
            problem = gguf_magic_problem(artifact.path)
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror})"
        if problem is not None:
            raise BackendError(f"model {self.spec.id!r} ({self.precision}): {artifact.source}: "
                               f"{artifact.path} {problem}")

    def _load_failure(self, exc: Exception, mark: int) -> str:
        """One line: the files, llama.cpp's own first reason (it logs why, then the
        binding raises "Failed to load model from file"), and what is wrong with the
        file if its header can tell."""
        weights = self._weights
        files = f"{weights.source} ({weights.path})"
        if self._projector is not None:
            files += f" with projector {self._projector.source} ({self._projector.path})"
        said = errors_since(mark)
        reason = said[0] if said else str(exc)
        for artifact in (self._weights, self._projector):
            problem = gguf_header_problem(artifact.path) if artifact is not None else None
            if artifact is not None and problem is not None:
                reason += f" ({artifact.path.name} {problem})"
                break
        return (f"model {self.spec.id!r} ({self.precision}): llama.cpp could not load "
                f"{files}: {reason}")

    # -- per task and per request -------------------------------------------------
    def prepare(self, task: Task) -> Any:
        """Compile and check the task's grammar or schema once; a bad one fails the test."""
        return compile_constraint(task, self._llm._model.vocab, self._log_path)

    def generate(self, request: Request) -> Response:
        refuse_images(self.spec.id, len(request.images), self.capabilities)
        return serve(self._llm, self._handler, self._prompting, request)

    def close(self) -> None:
        self._llm.close()
