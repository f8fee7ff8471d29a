"""The openai backend: a catalog entry's `[model.endpoint]` made into a served model.

- Managed (`server = ID`): the session's ServerManager starts the server (or finds it
  running) with every model of the catalog it serves; the load time is what `ensure`
  took, which is the server's cold start when this load started it (recorded beside:
  `server_started`, `server_cold_start_s`) and about nothing when it was running.
- External (`base_url`): one GET `{base_url}/models` with a short timeout, so that an
  unreachable endpoint is one line naming it at load, not a traceback per request.
- The key: read from `os.environ[api_key_env]` here, handed to the model alone; a
  missing variable is one line naming it.
- Cold: a server that swaps models (`swaps`) pays a load on the first request after a
  switch; the manager's `note_served` says whether this load is such a switch, and the
  model's `cold_pending` tells the runner to record that request as its own phase.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from pytest_vlmbench.backends import BackendError, LoadContext
from pytest_vlmbench.backends.openai_http.config import ClientConfig
from pytest_vlmbench.backends.openai_http.model import OpenAIModel
from pytest_vlmbench.models.catalog import ModelSpec, WeightSource
from pytest_vlmbench.models.devices import DeviceProfile

PROBE_TIMEOUT_S = 10.0


class OpenAIBackend:
    name = "openai"

    def check_device(self, device: DeviceProfile) -> str | None:
        """Always None: the work happens in the server, which this client cannot see
        (a managed server's build is the server manager's to check)."""
        return None

    def load(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> OpenAIModel:
        endpoint = getattr(spec, "endpoint", None)
        if endpoint is None:
            raise BackendError(f"model {spec.id!r} (backend openai) has no [model.endpoint] "
                               f"in {spec.catalog_path}")
        if precision not in spec.precisions:
            raise BackendError(f"model {spec.id!r} has no {precision!r} variant")
        config = ClientConfig(
            base_url=endpoint.base_url or "http://127.0.0.1/v1", model="?",
            dialect=endpoint.dialect, api=endpoint.api, chat_format=spec.chat_format,
            vision=spec.modality == "vision", max_images=spec.max_images,
            stream=endpoint.stream,
            timeout_s=endpoint.timeout_s, retries=endpoint.retries,
            headers=dict(endpoint.headers), api_key_env=endpoint.api_key_env,
            swaps=endpoint.swaps, label=spec.id,
        )
        problem = config.problem()
        if problem is not None:
            raise BackendError(f"model {spec.id!r}: {problem} ({spec.catalog_path})")
        key = api_key(endpoint.api_key_env, spec.id)
        if endpoint.managed:
            return _managed(spec, precision, ctx, config, key)
        return _external(spec, precision, ctx, config, key)


def api_key(variable: str | None, model_id: str) -> str | None:
    """The key in `variable` (None when the endpoint names none); one line when unset."""
    if variable is None:
        return None
    value = os.environ.get(variable, "")
    if not value:
        raise BackendError(f"model {model_id!r}: its [model.endpoint] api_key_env names "
                           f"{variable}, which is not set in the environment "
                           f"(export {variable}=...)")
    return value


def _served_name(spec: ModelSpec, precision: str) -> str:
    source = spec.precisions[precision]
    if source.kind == "remote":
        return source.value
    from pytest_vlmbench.models.endpoints import served_name

    return served_name(spec.id, precision)


def _external(spec: ModelSpec, precision: str, ctx: LoadContext, config: ClientConfig,
              key: str | None) -> OpenAIModel:
    config = dataclasses.replace(config, model=_served_name(spec, precision))
    cold = config.swaps and _switch(ctx, config)
    t0 = time.perf_counter_ns()
    model = OpenAIModel(config, api_key=key, servers=ctx.servers, cold_pending=cold)
    try:
        model.settings["models_listed"] = model.run_async(model.probe(PROBE_TIMEOUT_S))
    except BaseException:
        model.close()
        raise
    model.timings_ns = {"resolve": 0, "load": time.perf_counter_ns() - t0}
    return model


def _managed(spec: ModelSpec, precision: str, ctx: LoadContext, config: ClientConfig,
             key: str | None) -> OpenAIModel:
    from pytest_vlmbench.models.weights import WeightsError, resolve
    from pytest_vlmbench.servers import managed_models

    endpoint = spec.endpoint
    assert endpoint is not None
    assert endpoint.server_spec is not None
    server = endpoint.server_spec
    if ctx.servers is None:
        raise BackendError(f"model {spec.id!r}: its server {server.id!r} is managed, but this "
                           "session has no server manager")
    catalog_dir = spec.catalog_path.parent
    artifacts: list[dict[str, Any]] = []

    def files(source: WeightSource) -> Path:
        artifact = resolve(source, catalog_dir=catalog_dir, cache_dir=ctx.cache_dir,
                           directory=server.kind == "vllm")  # vLLM serves a model directory
        if source in (spec.precisions[precision], spec.projector) and all(
                a["path"] != str(artifact.path) for a in artifacts):
            artifacts.append(artifact.to_json())
        return artifact.path

    key_of = (spec.id, precision)
    t0 = time.perf_counter_ns()
    try:  # a swapping server holds every model of the catalog that names it
        models = managed_models(server, files, first=key_of,
                                only=None if server.kind == "llama-cpp-python" else {key_of})
    except (WeightsError, OSError, ValueError) as exc:
        raise BackendError(f"model {spec.id!r} ({precision}): {exc}") from None
    t1 = time.perf_counter_ns()
    running = ctx.servers.ensure(server, models)
    t2 = time.perf_counter_ns()
    config = dataclasses.replace(config, base_url=running.base_url,
                                 model=running.served_name(spec.id, precision))
    cold = config.swaps and _switch(ctx, config)
    started = running.spawned_ns >= t1
    settings = {
        "server_id": running.id, "server_kind": running.kind, "server_pid": running.pid,
        "server_started": started, "server_cold_start_s": running.cold_start_ns / 1e9,
        "server_log": str(running.log_path), "server_settings": dict(running.settings),
    }
    model = OpenAIModel(config, api_key=key, server=running, servers=ctx.servers,
                        timings_ns={"resolve": t1 - t0, "load": t2 - t1},
                        settings=settings, artifacts=artifacts, cold_pending=cold)
    if server.kind in ("llama-server", "vllm") or (server.kind == "command"
                                                    and _per_model(server)):
        model.on_close(lambda: ctx.servers.stop(server.id))  # one model: it goes with it
    return model


def _per_model(server: Any) -> bool:
    from pytest_vlmbench.servers.command import per_model

    return per_model(server)


def _switch(ctx: LoadContext, config: ClientConfig) -> bool:
    """Whether the server served another model before (or nothing we know of)."""
    note = getattr(ctx.servers, "note_served", None)
    return True if note is None else bool(note(config.base_url, config.model))
