"""llama.cpp's own `llama-server`, built from the sources vendored in the llama-cpp-python
sdist we pin (tools/build_llama_tool.sh llama-server), so that its figures come from the
same llama.cpp code as the in-process backend's.

It holds one model: the manager restarts it for another. Flags are those of its
`--help` (common/arg.cpp in the vendored sources):
- the settings map to --ctx-size, --threads, --threads-batch, --batch-size,
  --ubatch-size, --flash-attn on|off, --n-gpu-layers, --load-mode, --parallel and --fit
  (on unless the catalog says `fit = false`: llama-server first loads the model once
  without allocating, to fit unset parameters such as GPU layers into device memory,
  which costs a second vocabulary load in its cold start even on a CPU);
- `n_ctx` is per request, as in the in-process backend: llama-server splits --ctx-size
  between its --parallel slots, so it is given n_ctx x n_parallel (4 slots unless the
  catalog says otherwise: what its own "auto" picks, without the unified KV cache that
  would let one request take the others' room);
- a model with chat_format "gemma" gets `--jinja --chat-template-file` with the Gemma
  template of the in-process backend (models/chat_template.py), so that both build the
  same prompt. Not `--chat-template gemma`: with jinja on (this build's default) the
  name is taken as the template's text and every prompt becomes the word "gemma"
  (seen: POST /apply-template answered {"prompt":"gemma"});
- the key (the endpoint's api_key_env) travels in LLAMA_API_KEY, the variable
  llama-server reads for --api-key, never in argv (which is logged); /health stays open.
  Inherited LLAMA_ARG_* variables are removed (see UNSET_ENV).
Readiness: GET /health answers 503 while the model loads and 200 once it is ready.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_vlmbench.models.endpoints import ServerSpec
from pytest_vlmbench.servers.base import Launch, ManagedModel, ServerError
from pytest_vlmbench.servers.gguf_template import template_file

LLAMA_CPP_VERSION = "0.3.36"
ENV_BINARY = "VLMBENCH_LLAMA_SERVER"
DEFAULT_SLOTS = 4
UNSET_ENV = ("LLAMA_ARG_*", "LLAMA_API_KEY")
"""llama-server reads every flag from a LLAMA_ARG_ variable too: one left in the user's
environment would change the server unrecorded, so the catalog's settings are the only
ones it gets."""


def default_binary() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pytest-vlmbench" / f"llama-cpp-{LLAMA_CPP_VERSION}" / "build" / "bin" \
        / "llama-server"


def binary() -> Path:
    """$VLMBENCH_LLAMA_SERVER, else the build tools/build_llama_tool.sh makes."""
    configured = os.environ.get(ENV_BINARY)
    path = Path(configured).expanduser() if configured else default_binary()
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = f"${ENV_BINARY}={configured}" if configured else str(path)
        raise ServerError(f"llama-server not found at {where}: build it with "
                          "tools/build_llama_tool.sh llama-server (about 25 minutes on 2 "
                          f"cores) or set {ENV_BINARY} to a llama-server binary")
    return path


def default_settings() -> dict[str, Any]:
    """The in-process backend's speed defaults, and llama-server's own slot count."""
    from pytest_vlmbench.models.devices import cpu_threads

    threads = cpu_threads()
    return {"n_ctx": 2048, "n_threads": threads, "n_threads_batch": threads,
            "flash_attn": True, "n_parallel": DEFAULT_SLOTS}


_FLAGS = {"n_threads": "--threads", "n_threads_batch": "--threads-batch",
          "n_batch": "--batch-size", "n_ubatch": "--ubatch-size",
          "n_gpu_layers": "--n-gpu-layers", "n_parallel": "--parallel"}


def flags(settings: dict[str, Any]) -> list[str]:
    """Command-line flags for the catalog's settings (catalog.SERVER_SETTINGS)."""
    out = ["--ctx-size", str(settings["n_ctx"] * settings["n_parallel"])]
    for name, flag in _FLAGS.items():
        if name in settings:
            out += [flag, str(settings[name])]
    if "flash_attn" in settings:
        out += ["--flash-attn", "on" if settings["flash_attn"] else "off"]
    if "fit" in settings:  # on by default: a dry-run load first, to size unset params
        out += ["--fit", "on" if settings["fit"] else "off"]
    if "use_mmap" in settings:
        out += ["--load-mode", "mmap" if settings["use_mmap"] else "none"]
    return out


def plan(server: ServerSpec, models: list[ManagedModel], *, host: str, port: int,
         cache_dir: Path, api_key: str | None) -> Launch:
    """The command line that serves the first of `models` (llama-server holds one)."""
    model = models[0]
    if model.weight_path is None:  # the catalog refuses remote: sources on this kind
        raise ServerError(f"model {model.model_id!r} ({model.precision}) has no weight file "
                          "for llama-server")
    settings = {**default_settings(), **server.settings}
    if "n_threads" in server.settings and "n_threads_batch" not in server.settings:
        settings["n_threads_batch"] = settings["n_threads"]  # as the in-process backend does
    argv = [str(binary()), "--host", host, "--port", str(port),
            "--model", str(model.weight_path), "--alias", model.served_name,
            *flags(settings), "--no-webui"]
    if model.modality == "vision":
        if model.projector_path is None:
            raise ServerError(f"vision model {model.model_id!r} has no projector for "
                              "llama-server")
        argv += ["--mmproj", str(model.projector_path)]
    template = None
    if model.chat_format == "gemma":
        template = template_file(cache_dir)
        argv += ["--jinja", "--chat-template-file", str(template)]
    return Launch(argv=argv, probe_path="/health", models=[model],
                  env={"LLAMA_API_KEY": api_key} if api_key is not None else {},
                  unset_env=UNSET_ENV,
                  settings={**settings, "ctx_size": settings["n_ctx"] * settings["n_parallel"],
                            "chat_template": (f"gemma (models/chat_template.py: {template})"
                                              if template else "the model's own")})
