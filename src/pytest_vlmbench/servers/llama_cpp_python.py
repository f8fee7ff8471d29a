"""llama-cpp-python's OpenAI server (`python -m llama_cpp.server --config_file CFG`).

The generated config holds every (model, precision) of the catalog that names the
server, each under its served name (`model_alias`); the server loads the first at start
and swaps to another on the first request that names it, one model in memory at a time:
the llama-swap pattern, inside one process. Field names are those of
llama_cpp.server.settings (ConfigFileSettings, ModelSettings) in 0.3.36.

- `logits_all` and `use_mlock` are off, as in llama_cpp.Llama (LIBRARY_DEFAULTS).
- `interrupt_requests` is off: its default (on) ends a streaming response with [DONE]
  as soon as another request waits, which would silently truncate every response under
  concurrency (llama_cpp/server/app.py, `interrupt_requests and llama_outer_lock.locked()`).
- Templates: the server's vision handler (`mtmd`, the generic one: every vision handler
  runs on mtmd) takes the chat template from the model's GGUF metadata only
  (MTMDChatHandler._get_chat_template), and no config field can supply one
  (`chat_template_kwargs` are arguments *to* the template; `kv_overrides` strings hold
  127 bytes, are split on "=" and ":", and do not reach the metadata the handler reads).
  gemma3-270m, a base model, has none. So a model with chat_format "gemma" is served
  from a cached copy of its GGUF that carries the Gemma template of the in-process
  backend (gguf_template.py); a text model then gets no `chat_format`, so that the
  server formats with the file's template too: the prompt is the in-process backend's,
  where the server's own "gemma" format would drop a system prompt.
- A key (the endpoint's api_key_env) can only be given in the config file (the server
  reads no environment when a config file is used): the file is private (0600, in a
  private directory) and deleted once the server is ready.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from pytest_vlmbench.models.endpoints import ServerSpec
from pytest_vlmbench.servers.base import Launch, ManagedModel, ServerError
from pytest_vlmbench.servers.gguf_template import templated_copy

UNSET_ENV = ("CONFIG_FILE", "HOST", "PORT")
"""llama_cpp.server's __main__ prefers these variables to its --config_file and to the
config's host and port: a PORT set for something else would make it listen elsewhere."""
_NEEDS = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
          "pydantic_settings")


def default_settings() -> dict[str, Any]:
    """The in-process backend's speed defaults (backends/llama_cpp/model.py), so the two
    compare like for like: every core, flash attention on, a 2048-token context."""
    from pytest_vlmbench.models.devices import cpu_threads

    threads = cpu_threads()
    return {"n_ctx": 2048, "n_threads": threads, "n_threads_batch": threads,
            "flash_attn": True}


LIBRARY_DEFAULTS = {"logits_all": False, "use_mlock": False}
"""Where the server's ModelSettings defaults differ from llama_cpp.Llama's, the library's
(what the in-process backend runs with): the server defaults `logits_all` to true, which
computes and copies the logits of every prompt token (for gemma3-270m's 262,144-word
vocabulary, an output-layer product per prompt token and a scores array of n_ctx x
vocab floats) where only the last is needed, and `use_mlock` to whether the system
supports it, which pins the whole model in RAM at load."""


def chat_format(model: ManagedModel) -> str | None:
    """The server's `chat_format` (None: the template in the model file)."""
    return "mtmd" if model.modality == "vision" else None


def _template_note(model: ManagedModel) -> str:
    if model.chat_format == "gemma":
        return "gemma (models/chat_template.py, written into a copy of the GGUF)"
    return "the model's own"


def _model_entry(model: ManagedModel, settings: dict[str, Any],
                 cache_dir: Path) -> dict[str, Any]:
    if model.weight_path is None:  # the catalog refuses remote: sources on this kind
        raise ServerError(f"model {model.model_id!r} ({model.precision}) has no weight file "
                          "for a llama-cpp-python server")
    weights = model.weight_path
    entry: dict[str, Any] = {"model_alias": model.served_name, **LIBRARY_DEFAULTS, **settings,
                             "verbose": False}
    fmt = chat_format(model)
    if fmt is not None:
        entry["chat_format"] = fmt
    if model.modality == "vision":
        if model.projector_path is None:
            raise ServerError(f"vision model {model.model_id!r} has no projector for its "
                              "llama-cpp-python server")
        entry["clip_model_path"] = str(model.projector_path)
    if model.chat_format == "gemma":
        weights = templated_copy(weights, cache_dir)
    entry["model"] = str(weights)
    return entry


def plan(server: ServerSpec, models: list[ManagedModel], *, host: str, port: int,
         config_path: Path, cache_dir: Path, api_key: str | None) -> Launch:
    """The config file (written to `config_path`) and command line for `models` (the
    first is loaded at start)."""
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ServerError(
            f"server {server.id!r} (llama-cpp-python) needs the server extra of "
            f"llama-cpp-python ({', '.join(missing)} not installed): "
            "pip install 'llama-cpp-python[server]'")
    settings = {**default_settings(), **server.settings}
    if "n_threads" in server.settings and "n_threads_batch" not in server.settings:
        settings["n_threads_batch"] = settings["n_threads"]  # as the in-process backend does
    config: dict[str, Any] = {
        "host": host,
        "port": port,
        "interrupt_requests": False,
        "models": [_model_entry(m, settings, cache_dir) for m in models],
    }
    if api_key is not None:
        config["api_key"] = api_key
    path = config_path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=1)
    return Launch(
        argv=[sys.executable, "-m", "llama_cpp.server", "--config_file", str(path)],
        probe_path="/v1/models",
        models=list(models),
        settings={**LIBRARY_DEFAULTS, **settings, "interrupt_requests": False,
                  "config_file": str(path),
                  "chat_formats": {m.served_name: chat_format(m) for m in models},
                  "chat_templates": {m.served_name: _template_note(m) for m in models}},
        private_files=[path] if api_key is not None else [],
        unset_env=UNSET_ENV,
    )
