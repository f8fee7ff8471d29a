"""A server started from the catalog's own argv (`kind = "command"`): vLLM, Ollama,
llama-swap, anything that speaks the OpenAI API on the port it is given.

Placeholders in the argv: {host} {port} {model_path} {projector_path} {served_model}
(the first model's; catalog.py checks the names and that {port} is there). Readiness:
GET {base_url}/models, which vLLM, Ollama, llama-swap and both llama.cpp servers answer.
"""

from __future__ import annotations

from pytest_vlmbench.models.endpoints import ServerSpec
from pytest_vlmbench.servers.base import Launch, ManagedModel, ServerError

MODEL_PLACEHOLDERS = ("{model_path}", "{projector_path}", "{served_model}")


def per_model(server: ServerSpec) -> bool:
    """Whether the command names one model (then another model needs a restart)."""
    return any(p in arg for arg in server.command for p in MODEL_PLACEHOLDERS)


def plan(server: ServerSpec, models: list[ManagedModel], *, host: str, port: int) -> Launch:
    """The argv with its placeholders filled in for the first of `models`."""
    first = models[0]
    values = {
        "host": host,
        "port": str(port),
        "model_path": str(first.weight_path) if first.weight_path else None,
        "projector_path": str(first.projector_path) if first.projector_path else None,
        "served_model": first.served_name,
    }
    argv = []
    for arg in server.command:
        for name, value in values.items():
            token = "{" + name + "}"
            if token not in arg:
                continue
            if value is None:
                raise ServerError(f"server {server.id!r}: its command passes {token} but model "
                                  f"{first.model_id!r} ({first.precision}) has none")
            arg = arg.replace(token, value)
        argv.append(arg)
    return Launch(argv=argv, probe_path="/v1/models",
                  models=[first] if per_model(server) else list(models))
