"""Server-backed models in the catalog: `[[server]]` tables and `[model.endpoint]`.

A model whose backend is `openai` talks to an OpenAI-compatible server. Either the plugin
starts that server itself (`server = ID`, a `[[server]]` of the catalog: llama.cpp's
llama-server, llama-cpp-python's server, `vllm serve` or any command) on a free loopback
port, or the server runs elsewhere (`base_url`). Parsed here into frozen dataclasses with
their defaults resolved, so that the backend and the server manager never guess.

The parsers raise `SpecError` with the whole message (file, entry and field); catalog.py
turns it into its CatalogError. They live apart from catalog.py because it imports them.

Secrets: an endpoint names the environment variable that holds its key (`api_key_env`),
never the key; header values may be secrets, so `to_json()` records header names only,
and a server's `env` values are recorded by name too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from pytest_vlmbench.models.catalog import ModelSpec, WeightSource

SERVER_KINDS = ("llama-cpp-python", "llama-server", "vllm", "command")
DIALECTS = ("llama-server", "llama-cpp-python", "vllm", "ollama", "openai")
APIS = ("chat", "completions")
PLACEHOLDERS = ("host", "port", "model_path", "projector_path", "served_model")
"""What a `kind = "command"` argv may contain, as `{name}`."""
KIND_DIALECT = {"llama-server": "llama-server", "llama-cpp-python": "llama-cpp-python",
                "vllm": "vllm"}
"""The dialect a managed server of each kind speaks (command servers must say theirs)."""
OPENAI_BACKEND = "openai"
"""The backend that talks to OpenAI-compatible servers: the only one with an endpoint."""
DEFAULT_READY_TIMEOUT_S = 120.0
KIND_READY_TIMEOUT_S = {"vllm": 300.0}
"""Kinds whose cold start needs longer: `vllm serve` imports torch and vLLM in three
processes (API server, engine core, worker) before it loads anything, 60-100 s for a tiny
model on a 2-core CPU (servers/vllm_serve.py)."""
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_RETRIES = 2

_SERVER_KEYS = {"id", "kind", "command", "ready_timeout_s", "settings", "env", "description"}
_ENDPOINT_KEYS = {"server", "base_url", "dialect", "api", "api_key_env", "headers", "stream",
                  "timeout_s", "retries", "swaps"}
_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


class SpecError(ValueError):
    """A `[[server]]` or `[model.endpoint]` that does not validate; the message is whole."""


@dataclass(frozen=True)
class ServedModel:
    """One (model, precision) a managed server serves, as the catalog says it.

    The server manager resolves these into files (servers.manager.ManagedModel); kept on
    the ServerSpec so that a server's whole set is known from any one of its models (a
    llama-cpp-python server's config holds them all and swaps between them on demand).
    """

    model_id: str
    precision: str
    source: WeightSource
    projector: WeightSource | None
    chat_format: str
    modality: str
    served_name: str
    max_images: int | None = None  # the catalog's: a vllm serve's --limit-mm-per-prompt


@dataclass(frozen=True)
class ServerSpec:
    """A `[[server]]` table: a server process the plugin starts and stops."""

    id: str
    kind: str
    catalog_path: Path
    command: tuple[str, ...] = ()
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    settings: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    api_key_env: str | None = None
    """From the endpoints that use the server (they must agree): the server is started
    with that key and the readiness probe sends it."""
    served: tuple[ServedModel, ...] = ()
    """Every (model, precision) of the catalog whose endpoint names this server."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "command": list(self.command) or None,
            "ready_timeout_s": self.ready_timeout_s,
            "settings": dict(self.settings),
            "env": sorted(self.env),  # names only: values may be secrets
            "api_key_env": self.api_key_env,
            "served": [m.served_name for m in self.served],
        }


@dataclass(frozen=True)
class Endpoint:
    """A model's `[model.endpoint]`: where its requests go and how they are spoken."""

    dialect: str
    server: str | None = None
    """A managed server's id (then base_url is None until the server runs) ..."""
    base_url: str | None = None
    """... or an external server's OpenAI base URL, e.g. http://10.0.0.5:8080/v1."""
    api: str = "chat"
    api_key_env: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    swaps: bool = False
    server_spec: ServerSpec | None = None
    """The managed server itself (its kind, settings and everything it serves)."""

    @property
    def managed(self) -> bool:
        return self.server is not None

    def to_json(self) -> dict[str, Any]:
        """What a results document records: no key, no header value, no URL userinfo."""
        return {
            "server": self.server,
            "server_kind": self.server_spec.kind if self.server_spec else None,
            "base_url": redact_url(self.base_url) if self.base_url else None,
            "dialect": self.dialect,
            "api": self.api,
            "api_key_env": self.api_key_env,
            "headers": sorted(self.headers),
            "stream": self.stream,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "swaps": self.swaps,
        }


def redact_url(url: str) -> str:
    """`url` without user:password@ and without its query (where tokens travel)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def served_name(model_id: str, precision: str) -> str:
    """The model name a managed server serves a local (model, precision) under."""
    return f"{model_id}-{precision}"


def _number(raw: dict[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            or not math.isfinite(value)):  # TOML has nan and inf
        raise SpecError(f"{where}: field {key!r} must be a number of seconds above 0, "
                        f"got {value!r}")
    return float(value)


def _str_table(raw: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SpecError(f"{where}: field {key!r} must be a table of strings")
    return dict(value)


def _unknown(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                        f"allowed: {', '.join(sorted(allowed))}")


def _choice(value: Any, choices: tuple[str, ...], key: str, where: str) -> str:
    if value not in choices:
        raise SpecError(f"{where}: field {key!r} must be one of "
                        f"{', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def parse_server(raw: Any, index: int, path: Path) -> ServerSpec:
    """One `[[server]]` table; its `settings` are checked by catalog.py (kind-specific)."""
    where = f"{path}: server #{index + 1}"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: each [[server]] must be a table")
    if isinstance(raw.get("id"), str):
        where = f"{path}: server {raw['id']!r}"
    _unknown(raw, _SERVER_KEYS, where)
    server_id = raw.get("id")
    if not isinstance(server_id, str) or not _ID.fullmatch(server_id):
        raise SpecError(f"{where}: field 'id' must be lower-case letters, digits, '.', '_', "
                        f"'-', got {server_id!r}")
    kind = _choice(raw.get("kind"), SERVER_KINDS, "kind", where)
    command: tuple[str, ...] = ()
    if kind == "command":
        argv = raw.get("command")
        if (not isinstance(argv, list) or not argv
                or not all(isinstance(a, str) and a for a in argv)):
            raise SpecError(f"{where}: a kind = \"command\" server needs field 'command', a "
                            "list of non-empty strings (the argv, with placeholders "
                            f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
        for arg in argv:
            for name in _PLACEHOLDER.findall(arg):
                if name not in PLACEHOLDERS:
                    raise SpecError(
                        f"{where}: field 'command' has unknown placeholder {{{name}}} in "
                        f"{arg!r}; known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if not any("{port}" in a for a in argv):
            raise SpecError(f"{where}: field 'command' must pass {{port}} to the server (the "
                            "plugin picks a free loopback port and probes it)")
        command = tuple(argv)
    elif "command" in raw:
        raise SpecError(f"{where}: field 'command' is for kind = \"command\" only; a {kind} "
                        "server's command line is built by the plugin from its settings")
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise SpecError(f"{where}: field 'settings' must be a table")
    if kind == "command" and settings:
        raise SpecError(f"{where}: field 'settings' is not for kind = \"command\" servers: "
                        "write their options into 'command'")
    env = _str_table(raw, "env", where)
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise SpecError(f"{where}: field 'env' has {name!r}, not an environment "
                            "variable name")
    return ServerSpec(
        id=server_id,
        kind=kind,
        catalog_path=path,
        command=command,
        ready_timeout_s=_number(raw, "ready_timeout_s",
                                KIND_READY_TIMEOUT_S.get(kind, DEFAULT_READY_TIMEOUT_S), where),
        settings=dict(settings),
        env=env,
        description=str(raw.get("description", "")),
    )


def parse_endpoint(raw: Any, where: str, servers: dict[str, ServerSpec]) -> Endpoint:
    """A model's `[model.endpoint]` table (`where` names the model), defaults resolved."""
    where = f"{where}: [model.endpoint]"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a table")
    _unknown(raw, _ENDPOINT_KEYS, where)
    server_id, base_url = raw.get("server"), raw.get("base_url")
    if (server_id is None) == (base_url is None):
        raise SpecError(f"{where}: give exactly one of field 'server' (a [[server]] the plugin "
                        "starts) and field 'base_url' (a server running elsewhere)")
    server: ServerSpec | None = None
    if server_id is not None:
        if not isinstance(server_id, str) or server_id not in servers:
            known = ", ".join(map(repr, servers)) or "none: add a [[server]] table"
            raise SpecError(f"{where}: field 'server' {server_id!r} is no [[server]] id of "
                            f"this catalog; known: {known}")
        server = servers[server_id]
    else:
        base_url = _base_url(base_url, where)
    if "dialect" in raw:
        dialect = _choice(raw["dialect"], DIALECTS, "dialect", where)
    elif server is not None and server.kind in KIND_DIALECT:
        dialect = KIND_DIALECT[server.kind]
    else:
        what = "a command server" if server is not None else "an external server"
        raise SpecError(f"{where}: field 'dialect' is required for {what} (one of "
                        f"{', '.join(map(repr, DIALECTS))}): it decides how constraints "
                        "are sent")
    api = _choice(raw.get("api", "chat"), APIS, "api", where)
    key_env = raw.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.fullmatch(key_env)):
        raise SpecError(f"{where}: field 'api_key_env' must be the NAME of an environment "
                        "variable holding the key (never the key itself)")
    headers = _str_table(raw, "headers", where)
    for name in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise SpecError(f"{where}: field 'headers' has {name!r}, not an HTTP header name")
    flags: dict[str, bool] = {}
    for key, default in (("stream", True),
                         ("swaps", server is not None and server.kind == "llama-cpp-python")):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise SpecError(f"{where}: field {key!r} must be true or false, got {value!r}")
        flags[key] = value
    retries = raw.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise SpecError(f"{where}: field 'retries' must be a whole number >= 0, "
                        f"got {retries!r}")
    return Endpoint(
        dialect=dialect,
        server=server_id,
        base_url=base_url,
        api=api,
        api_key_env=key_env,
        headers=headers,
        stream=flags["stream"],
        timeout_s=_number(raw, "timeout_s", DEFAULT_TIMEOUT_S, where),
        retries=retries,
        swaps=flags["swaps"],
        server_spec=server,
    )


def model_endpoint(raw: dict[str, Any], backend: str, modality: str,
                   precisions: dict[str, WeightSource], projector: WeightSource | None, where: str,
                   servers: dict[str, ServerSpec]) -> Endpoint | None:
    """The entry's endpoint, and the rules that tie it to the weight sources."""
    remote = [name for name, src in precisions.items() if src.kind == "remote"]
    if backend != OPENAI_BACKEND:
        if "endpoint" in raw:
            raise SpecError(f"{where}: field 'endpoint' is for backend {OPENAI_BACKEND!r} "
                            f"models only (this one runs on {backend!r})")
        if remote or (projector and projector.kind == "remote"):
            field_name = f"precisions.{remote[0]}" if remote else "projector"
            raise SpecError(f"{where}: field {field_name!r}: 'remote:' sources are for "
                            f"backend {OPENAI_BACKEND!r} models only (the weights live on "
                            "a server)")
        return None
    if "endpoint" not in raw:
        raise SpecError(f"{where}: a backend {OPENAI_BACKEND!r} model needs a "
                        "[model.endpoint] table (server = ID of a [[server]], or "
                        "base_url = URL of a running server)")
    endpoint = parse_endpoint(raw["endpoint"], where, servers)
    server = endpoint.server_spec
    if projector is not None and projector.kind == "remote":
        raise SpecError(f"{where}: field 'projector': a server holds a remote model's "
                        "projector itself; leave 'projector' out")
    if server is None:  # external: the server has the weights and names them
        local = [name for name in precisions if name not in remote]
        if local:
            raise SpecError(
                f"{where}: field 'precisions.{local[0]}': a server at base_url serves its own "
                f"weights; write precisions.{local[0]} = \"remote:SERVED-MODEL-NAME\"")
        if projector is not None:
            raise SpecError(f"{where}: field 'projector': a server at base_url holds its "
                            "own projector; leave 'projector' out")
        return endpoint
    argv = " ".join(server.command)
    needs_files = server.kind != "command" or "{model_path}" in argv
    if remote and needs_files:
        what = (f"a {server.kind} server" if server.kind != "command"
                else f"server {server.id!r}'s command ({{model_path}})")
        raise SpecError(f"{where}: field 'precisions.{remote[0]}': {what} loads the "
                        "weights the catalog names; 'remote:' is for servers that hold "
                        "their own (base_url, or a command without {model_path})")
    if projector is None and server.kind not in ("command", "vllm") and modality == "vision":
        raise SpecError(f"{where}: a vision model on {server.kind} server {server.id!r} "
                        "needs field 'projector'")
    if projector is None and "{projector_path}" in argv:
        raise SpecError(f"{where}: server {server.id!r}'s command passes {{projector_path}}: "
                        "the model needs field 'projector'")
    return endpoint


def link_servers(
    path: Path, models: dict[str, ModelSpec], servers: dict[str, ServerSpec]
) -> tuple[dict[str, ModelSpec], dict[str, ServerSpec]]:
    """Give each server what it serves and its key variable; give each endpoint its server."""
    served: dict[str, list[ServedModel]] = {sid: [] for sid in servers}
    keys: dict[str, dict[str | None, str]] = {sid: {} for sid in servers}
    for spec in models.values():
        ep = spec.endpoint
        if ep is None or ep.server is None:
            continue
        keys[ep.server].setdefault(ep.api_key_env, spec.id)
        for precision, source in spec.precisions.items():
            name = source.value if source.kind == "remote" else served_name(spec.id, precision)
            served[ep.server].append(ServedModel(spec.id, precision, source, spec.projector,
                                                 spec.chat_format, spec.modality, name,
                                                 spec.max_images))
    linked: dict[str, ServerSpec] = {}
    for sid, server in servers.items():
        if len(keys[sid]) > 1:
            (a, ma), (b, mb) = list(keys[sid].items())[:2]
            raise SpecError(
                f"{path}: server {sid!r}: its models disagree on [model.endpoint] api_key_env "
                f"({a or 'none'} for model {ma!r}, {b or 'none'} for model {mb!r}); one "
                "managed server has one key")
        key = next(iter(keys[sid]), None)
        linked[sid] = replace(server, served=tuple(served[sid]), api_key_env=key)
    out = {}
    for model_id, spec in models.items():
        ep = spec.endpoint
        if ep is not None and ep.server is not None:
            spec = replace(spec, endpoint=replace(ep, server_spec=linked[ep.server]))
        out[model_id] = spec
    return out, linked


def _base_url(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{where}: field 'base_url' must be a URL string")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise SpecError(f"{where}: field 'base_url' is not a valid URL ({exc})") from None
    if parts.username or parts.password:
        raise SpecError(f"{where}: field 'base_url' must not carry credentials (user:key@): "
                        "put the key in an environment variable and name it in api_key_env")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"{where}: field 'base_url' {redact_url(value)!r} must be an "
                        "http:// or https:// URL with a host, e.g. http://10.0.0.5:8080/v1")
    return value.rstrip("/")
