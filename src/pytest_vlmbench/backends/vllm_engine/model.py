"""A model served by vLLM's offline engine (`vllm.LLM`) from inside this process: the
weights directory, the speed-deciding settings, the engine's start and stop, and what
the model as loaded can do (`capabilities`). Requests run in request.py.

The engine is not in this process. `LLM` starts an engine-core process, which starts one
worker per device; the weights and every forward pass live in the worker (engine.py sees
them from here; settings.py holds what may be set). Hence:

- Start method: spawn (`VLLM_WORKER_MULTIPROC_METHOD=spawn`). vLLM forks by default, and
  a fork of a pytest process that already runs threads (our ticker, the power sampler,
  vLLM's own output thread) may copy a lock held by one of them and hang.
- Logs: vLLM logs through Python's logging in each process, to stdout by default: a
  terminal flooded by three processes' INFO lines. With a session log, a dictConfig
  file given by `VLLM_LOGGING_CONFIG_PATH` points the `vllm` logger of every process
  (ours, the engine core's, the worker's: they read it when they start) at the log, and
  the children's file descriptor 2 is the log as well (they inherit it while the load
  redirects it), for what they print outside logging. A load failure quotes the engine
  core's own reason from there: this process only gets "Engine core initialization
  failed. See root cause above".
- Threads (CPU): the worker's OpenMP threads are bound to CPUs by vLLM
  (`VLLM_CPU_OMP_THREADS_BIND`, "auto": every core of the first NUMA node but one, kept
  for the engine core's busy loop); --vlm-threads N binds them to this process's first N
  CPUs instead. What the worker really got is read back from its affinity and recorded.
- Stop: `close()` shuts the engine core down through its client
  (`llm.llm_engine.engine_core.shutdown`): SIGTERM, then the engine core stops its
  worker; processes still alive after the grace time are killed, so no process outlives
  the model.
"""

from __future__ import annotations

import gc
import json
import os
import re
import struct
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_vlmbench.backends import (
    BackendError,
    Capabilities,
    LoadContext,
    Request,
    Response,
    model_directory,
)
from pytest_vlmbench.backends.native_log import native_stderr_to
from pytest_vlmbench.backends.vllm_engine.engine import (
    affinity,
    descendants,
    engine_processes,
    engine_reason,
    environment,
    logging_config,
    stop_processes,
    warnings_to_log,
)
from pytest_vlmbench.backends.vllm_engine.request import (
    IMAGE_COUNTS,
    REQUEST_SEED_ON_CPU,
    TEXT_COUNTS,
    TEXT_STAGES,
    EngineClock,
    Prompting,
    Served,
    compile_constraint,
    serve,
    serve_batch,
)
from pytest_vlmbench.backends.vllm_engine.settings import (
    DTYPES,
    engine_arguments,
    engine_settings,
)
from pytest_vlmbench.models.catalog import ModelSpec
from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE
from pytest_vlmbench.models.weights import Artifact
from pytest_vlmbench.tasks import Task

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SHUTDOWN_GRACE_S = 30.0  # the engine core and worker exit in 5-10 s on 2 busy cores
DECODE_BYTES_SOURCE = (
    "safetensors headers: every text-model weight tensor (vision tower and projector "
    "left out) at the loaded dtype; tied embeddings counted once; KV cache not counted"
)


def weight_bytes(path: Path, dtype_bytes: int) -> int | None:
    """Bytes of the text model's weights at the loaded dtype, from the safetensors
    headers (shapes only, no tensor read); None when there is no safetensors file."""
    total = 0
    files = sorted(path.glob("*.safetensors"))
    for file in files:
        with file.open("rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name == "__metadata__" or re.search(r"vision|visual|multi_modal_projector", name):
                continue
            count = 1
            for dim in info.get("shape", []):
                count *= int(dim)
            total += count * dtype_bytes
    return total if files else None


# -- the model ----------------------------------------------------------------------
class VllmModel:
    """A Hugging Face model directory served by vLLM's engine processes."""

    def __init__(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> None:
        self.spec = spec
        self.precision = precision
        self._dtype = DTYPES[precision]
        self._llm: Any = None
        self._served: Served | None = None
        self._processes: dict[int, str] = {}
        self._on_cpu = False
        with warnings_to_log():  # vLLM imports its modules lazily: torch warns on the way
            self._load(ctx)

    def _load(self, ctx: LoadContext) -> None:
        from vllm.platforms import current_platform

        on_cpu = self._on_cpu = bool(current_platform.is_cpu())
        settings = engine_settings(self.spec, ctx, on_cpu)
        t0 = time.perf_counter_ns()
        self._weights = self._resolve_weights(ctx)
        self.artifacts = [self._weights.to_json()]
        resolve_ns = time.perf_counter_ns() - t0
        bind = self._threads_bind(ctx.threads) if on_cpu else None
        t1 = time.perf_counter_ns()
        self._llm = self._start(settings, bind, ctx)
        self.timings_ns = {"resolve": resolve_ns, "load": time.perf_counter_ns() - t1}
        try:
            self._clock = EngineClock.measure()
            self._image_limit = self._images_per_prompt()
            self.settings = self._recorded(settings, bind, on_cpu, ctx)
            self.warnings = self._device_warnings(on_cpu, ctx)
            self._served = self._serving()
            self.capabilities = self._capabilities()
        except BaseException:
            self.close()
            raise

    # -- load -------------------------------------------------------------------------
    def _resolve_weights(self, ctx: LoadContext) -> Artifact:
        """The model directory (config.json, tokenizer, weights), found or generated."""
        artifact: Artifact = model_directory(self.spec, self.precision, ctx)
        return artifact

    def _threads_bind(self, threads: int | None) -> str | None:
        """VLLM_CPU_OMP_THREADS_BIND for --vlm-threads: this process's first N CPUs;
        None leaves vLLM's binding (its "auto", or the user's variable)."""
        if threads is None:
            return None
        allowed = affinity(0) or list(range(os.cpu_count() or 1))
        if threads > len(allowed):
            raise BackendError(
                f"model {self.spec.id!r} ({self.precision}): {threads} threads asked, but "
                f"this process may use {len(allowed)} CPUs ({allowed}); vLLM binds one "
                "thread per CPU")
        return ",".join(str(cpu) for cpu in allowed[:threads])

    def _start(self, settings: dict[str, Any], bind: str | None, ctx: LoadContext) -> Any:
        """Start the engine (its processes load the weights); a failure is one line."""
        from vllm import LLM

        env: dict[str, str | None] = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
        if bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
        if settings["kv_cache_space_gib"] is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = None  # vLLM's legacy variable would win over ours
        config_file: Path | None = None
        if ctx.log_path is not None:
            ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="vlmbench-vllm-logging-", suffix=".json")
            config_file = Path(name)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(logging_config(ctx.log_path), fh)
            env |= {"VLLM_CONFIGURE_LOGGING": "1", "VLLM_LOGGING_CONFIG_PATH": str(config_file)}
        max_images = self.spec.max_images if self.spec.modality == "vision" else None
        kwargs = engine_arguments(self._weights.path, self._dtype, settings, ctx.seed,
                                  max_images)
        before = set(descendants(os.getpid()))
        llm: Any = None
        failure: str | None = None
        try:
            with (environment(env),
                  native_stderr_to(ctx.log_path, f"vllm engine {self.spec.id} "
                                                 f"({self.precision})") as capture):
                try:
                    llm = LLM(**kwargs)
                except KeyboardInterrupt:  # the engine core got the Ctrl-C too; be sure
                    stop_processes(engine_processes(before), grace_s=10)
                    raise
                except Exception as exc:
                    failure = (f"model {self.spec.id!r} ({self.precision}): vLLM could not load "
                               f"{self._weights.source} ({self._weights.path}) as "
                               f"{self._dtype}: {engine_reason(exc, capture.text(max_lines=400))}")
        finally:
            if config_file is not None:
                config_file.unlink(missing_ok=True)
        if failure is not None:
            # Outside the except block, so the half-built client (its traceback's frames
            # held it) is collected here, its warnings logged (zmq: "Unclosed context"),
            # and what vLLM did not stop of its processes is stopped.
            gc.collect()
            stop_processes(engine_processes(before), grace_s=10)
            raise BackendError(failure)
        self._processes = engine_processes(before)
        return llm

    def _recorded(self, settings: dict[str, Any], bind: str | None, on_cpu: bool,
                  ctx: LoadContext) -> dict[str, Any]:
        """The settings as the engine took them (vLLM fills what we left to it), and
        what the engine's processes really run with."""
        import importlib.metadata

        import torch
        import vllm
        from vllm.platforms import current_platform

        config = self._llm.llm_engine.vllm_config
        model, cache, scheduler = config.model_config, config.cache_config, \
            config.scheduler_config
        structured = config.structured_outputs_config
        processes = {title: affinity(pid) for pid, title in self._processes.items()}
        worker = next((cpus for title, cpus in processes.items() if "Worker" in title), None)
        try:
            distribution = f"vllm-cpu {importlib.metadata.version('vllm-cpu')}"
        except importlib.metadata.PackageNotFoundError:
            distribution = f"vllm {vllm.__version__}"
        return {
            "dtype": str(model.dtype).removeprefix("torch."),
            "quantization": model.quantization,
            "max_model_len": model.max_model_len,
            "max_num_seqs": scheduler.max_num_seqs,
            "max_num_batched_tokens": scheduler.max_num_batched_tokens,
            "gpu_memory_utilization": cache.gpu_memory_utilization,
            "kv_cache_space_gib": settings["kv_cache_space_gib"],
            "kv_cache_memory_bytes": cache.kv_cache_memory_bytes,
            "num_kv_blocks": getattr(cache, "num_gpu_blocks", None),
            "block_size": cache.block_size,
            "enforce_eager": model.enforce_eager,
            "enable_prefix_caching": cache.enable_prefix_caching,
            "structured_outputs_backend": structured.backend,
            "images_per_prompt": self._image_limit,
            "disable_any_whitespace": structured.disable_any_whitespace,
            "n_threads": len(worker) if on_cpu and worker else None,
            "cpu_threads_bind": bind or os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
            "engine_processes": processes,
            "worker_multiproc_method": "spawn",
            "disable_log_stats": False,
            "seed": ctx.seed,
            "request_seed": REQUEST_SEED_ON_CPU if on_cpu else "passed when temperature > 0",
            "chat_format": self.spec.chat_format,
            "engine_clock": self._clock.how,
            "platform": f"{current_platform.device_name} ({type(current_platform).__name__})",
            "vllm": distribution,
            "torch": torch.__version__,
        }

    def _device_warnings(self, on_cpu: bool, ctx: LoadContext) -> list[str]:
        """Said in every benchmark of this model: figures under the wrong label, or at a
        dtype other than the precision's."""
        said: list[str] = []
        if not on_cpu and ctx.device.accelerator == "cpu":
            said.append(f"vLLM runs {self.spec.id} on its GPU although device {ctx.device.name} "
                        "is the CPU: its figures are GPU figures under a CPU label")
        if self.settings["dtype"] != self._dtype:
            said.append(f"vLLM loaded {self.spec.id} ({self.precision}) as "
                        f"{self.settings['dtype']}, not {self._dtype}")
        return said

    def _images_per_prompt(self) -> int | None:
        """The most images vLLM takes in one prompt of this model (its image limit per
        prompt, the catalog's max_images or vLLM's default, capped by what the model
        supports), read from the engine's own processor; None for a text model, or
        when this vLLM keeps it elsewhere."""
        engine = self._llm.llm_engine
        if not engine.model_config.is_multimodal_model:
            return None
        try:
            limits = engine.input_processor.renderer.get_mm_processor().info.allowed_mm_limits
        except (AttributeError, ValueError):  # another vLLM: its configured limit, then
            config = engine.model_config.multimodal_config
            limit = config.get_limit_per_prompt("image") if config is not None else None
        else:
            limit = limits.get("image")
        return int(limit) if isinstance(limit, int) else self.spec.max_images

    def _serving(self) -> Served:
        """The engine, its clock, and how this model's prompts are made."""
        hf_config = self._llm.llm_engine.model_config.hf_config
        image_id = getattr(hf_config, "image_token_index", None)
        if image_id is None:
            image_id = getattr(hf_config, "image_token_id", None)
        prompting = Prompting(
            tokenizer=self._llm.get_tokenizer(), chat_format=self.spec.chat_format,
            chat_template=GEMMA_CHAT_TEMPLATE if self.spec.chat_format == "gemma" else None,
            max_model_len=int(self.settings["max_model_len"]), model_id=self.spec.id,
            image_token_id=image_id if isinstance(image_id, int) else None,
            max_images=self._image_limit,
            image_limit_from="its catalog entry's max_images"
            if self.spec.max_images is not None and self._image_limit == self.spec.max_images
            else "vLLM's image limit per prompt for this model")
        return Served(self._llm, self._clock, prompting, seeded=not self._on_cpu)

    def _capabilities(self) -> Capabilities:
        """Images with a multimodal model; constraints through vLLM's structured outputs;
        batches (offline throughput); no stream: TTFT is the engine's own stamp."""
        vision = bool(self._llm.llm_engine.model_config.is_multimodal_model)
        decode_bytes = weight_bytes(self._weights.path, _DTYPE_BYTES[self._dtype])
        return Capabilities(
            streaming=False, images=vision, max_images=self._image_limit if vision else None,
            grammar=True, json_schema=True, batch=True,
            concurrency=1, stages=TEXT_STAGES,
            counts=TEXT_COUNTS + (IMAGE_COUNTS if vision else ()),
            decode_bytes_per_token=decode_bytes,
            decode_bytes_source=DECODE_BYTES_SOURCE if decode_bytes is not None else None,
        )

    # -- per task and per request ---------------------------------------------------------
    def prepare(self, task: Task) -> Any:
        """The task's constraint, checked by vLLM's own validation once."""
        with warnings_to_log():
            return compile_constraint(task, self._serving_now().llm)

    def _refuse_images(self, request: Request) -> None:
        if request.images and not self.capabilities.images:
            raise BackendError(f"model {self.spec.id!r} is a text model; it cannot take images")

    def _serving_now(self) -> Served:
        if self._served is None:
            raise BackendError(f"model {self.spec.id!r} ({self.precision}) is closed")
        return self._served

    def generate(self, request: Request) -> Response:
        self._refuse_images(request)
        with warnings_to_log():
            return serve(self._serving_now(), request)

    def generate_batch(self, requests: Sequence[Request]) -> list[Response | Exception]:
        """All `requests` in one engine call (offline throughput); see request.py."""
        for request in requests:
            self._refuse_images(request)
        with warnings_to_log():
            return serve_batch(self._serving_now(), requests)

    # -- stop -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the engine core and its worker, and wait until they are gone."""
        llm, self._llm, self._served = self._llm, None, None
        if llm is None:
            return
        try:
            with warnings_to_log():
                client = llm.llm_engine.engine_core
                client.shutdown(timeout=SHUTDOWN_GRACE_S)
                # vLLM leaves its zmq context to the garbage collector, which warns
                # "Unclosed context": end it once the thread that owns the output socket
                # has closed it.
                thread = getattr(client, "output_queue_thread", None)
                if thread is not None:
                    thread.join(timeout=SHUTDOWN_GRACE_S)
                context = getattr(client, "ctx", None)
                if context is not None:
                    context.destroy(linger=0)
                del client, context, thread
        finally:
            del llm
            with warnings_to_log():  # the client's finalizer and the last sockets go now
                gc.collect()
            stop_processes(self._processes, grace_s=SHUTDOWN_GRACE_S)
