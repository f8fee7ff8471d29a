"""The catalog's server-backed models: `[[server]]`, `[model.endpoint]`, `remote:` sources.

A valid catalog resolves every default; each rule has its error, and every error names
the file, the entry and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.models.catalog import CatalogError, WeightSource, load_catalog
from pytest_vlmbench.models.endpoints import (
    ServerSpec,
    SpecError,
    parse_endpoint,
    parse_server,
    redact_url,
)
from pytest_vlmbench.models.weights import WeightsError, resolve

SERVERS = """
[[server]]
id = "lcp"
kind = "llama-cpp-python"
settings = { n_ctx = 1024, n_threads = 2 }

[[server]]
id = "ls"
kind = "llama-server"
ready_timeout_s = 30
settings = { n_parallel = 8, flash_attn = false }

[[server]]
id = "vllm"
kind = "command"
command = ["vllm", "serve", "{model_path}", "--port", "{port}", "--served-model-name",
           "{served_model}"]
env = { VLLM_SECRET = "do-not-record" }
"""

MANAGED = """
[[model]]
id = "tiny-lcp"
backend = "openai"
modality = "text"
chat_format = "gemma"
precisions = { q4_k_m = "path:a.gguf", q8_0 = "path:b.gguf" }
[model.endpoint]
server = "lcp"
"""

EXTERNAL = """
[[model]]
id = "hosted"
backend = "openai"
modality = "vision"
precisions = { bf16 = "remote:Qwen/Qwen2.5-VL-7B-Instruct" }
[model.endpoint]
base_url = "https://router.example.com/v1/"
dialect = "openai"
api_key_env = "HF_TOKEN"
headers = { "X-Title" = "vlmbench", "X-Secret" = "s3cret-header-value" }
timeout_s = 60
retries = 0
stream = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_servers_and_endpoints_load_with_defaults_resolved(tmp_path: Path) -> None:
    path = write(tmp_path, SERVERS + MANAGED + EXTERNAL)
    catalog = load_catalog(path, backends=frozenset({"openai", "llama_cpp"}))

    assert set(catalog.servers) == {"lcp", "ls", "vllm"}
    lcp = catalog.servers["lcp"]
    assert lcp.kind == "llama-cpp-python"
    assert lcp.ready_timeout_s == 120.0  # the default
    assert lcp.settings == {"n_ctx": 1024, "n_threads": 2}
    assert [m.served_name for m in lcp.served] == ["tiny-lcp-q4_k_m", "tiny-lcp-q8_0"]
    assert lcp.served[0].source == WeightSource("path", "a.gguf")
    assert catalog.servers["ls"].ready_timeout_s == 30.0
    assert catalog.servers["vllm"].served == ()  # no model uses it

    managed = catalog.get("tiny-lcp").endpoint
    assert managed is not None
    assert managed.managed
    assert managed.server == "lcp"
    assert managed.base_url is None
    assert managed.dialect == "llama-cpp-python"  # from the server's kind
    assert managed.swaps is True  # a llama-cpp-python server swaps between its models
    assert managed.api == "chat"
    assert managed.stream is True
    assert managed.server_spec == lcp  # the linked server, with what it serves

    external = catalog.get("hosted").endpoint
    assert external is not None
    assert not external.managed
    assert external.base_url == "https://router.example.com/v1"  # trailing / dropped
    assert (external.dialect, external.api_key_env) == ("openai", "HF_TOKEN")
    assert (external.timeout_s, external.retries, external.stream) == (60.0, 0, False)
    assert external.swaps is False
    assert catalog.get("hosted").projector is None  # a remote model needs none


def test_to_json_records_names_never_secrets(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, SERVERS + MANAGED + EXTERNAL))
    hosted = catalog.get("hosted").to_json()
    assert hosted["endpoint"] == {
        "server": None, "server_kind": None, "base_url": "https://router.example.com/v1",
        "dialect": "openai", "api": "chat", "api_key_env": "HF_TOKEN",
        "headers": ["X-Secret", "X-Title"], "stream": False, "timeout_s": 60.0,
        "retries": 0, "swaps": False,
    }
    assert hosted["precisions"] == {"bf16": "remote:Qwen/Qwen2.5-VL-7B-Instruct"}
    assert "s3cret-header-value" not in repr(hosted)
    assert catalog.get("tiny-lcp").to_json()["endpoint"]["server_kind"] == "llama-cpp-python"
    server = catalog.servers["vllm"].to_json()
    assert server["env"] == ["VLLM_SECRET"]
    assert "do-not-record" not in repr(server)


def test_redact_url_drops_userinfo_and_query() -> None:
    assert redact_url("http://u:pw@h.example:8080/v1?key=abc") == "http://h.example:8080/v1"


def test_remote_source_is_never_resolved_as_a_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"remote:served-name: a 'remote:' model has no "
                                           r"weights here; its server serves it as "
                                           r"'served-name'"):
        resolve(WeightSource("remote", "served-name"), catalog_dir=tmp_path,
                cache_dir=tmp_path)


def test_command_server_may_serve_remote_models(tmp_path: Path) -> None:
    text = """
[[server]]
id = "swap"
kind = "command"
command = ["llama-swap", "--listen", "{host}:{port}"]

[[model]]
id = "a"
backend = "openai"
modality = "text"
precisions = { q4_k_m = "remote:qwen-a" }
[model.endpoint]
server = "swap"
dialect = "llama-server"
"""
    catalog = load_catalog(write(tmp_path, text))
    assert [m.served_name for m in catalog.servers["swap"].served] == ["qwen-a"]
    ep = catalog.get("a").endpoint
    assert ep is not None
    assert ep.swaps is False


OPENAI_TEXT = """
[[model]]
id = "m"
backend = "openai"
modality = "{modality}"
precisions = {{ {precisions} }}
{extra}
[model.endpoint]
{endpoint}
"""


def model(endpoint: str, precisions: str = 'q4_k_m = "path:m.gguf"', modality: str = "text",
          extra: str = "") -> str:
    return OPENAI_TEXT.format(endpoint=endpoint, precisions=precisions, modality=modality,
                              extra=extra)


CASES: dict[str, tuple[str, str]] = {
    "remote on llama_cpp": (
        '[[model]]\nid = "m"\nbackend = "llama_cpp"\nmodality = "text"\n'
        'precisions = { q4_k_m = "remote:x" }\n',
        r"model 'm': field 'precisions.q4_k_m': 'remote:' sources are for backend 'openai' "
        r"models only"),
    "quantized from remote": (
        '[[model]]\nid = "m"\nbackend = "openai"\nmodality = "text"\n'
        'precisions = { q8_0 = "quantized:q8_0:remote:x" }\n',
        r"model 'm': field 'precisions.q8_0': 'quantized:' source .* cannot derive from a "
        r"'remote:' model"),
    "openai without endpoint": (
        '[[model]]\nid = "m"\nbackend = "openai"\nmodality = "text"\n'
        'precisions = { q4_k_m = "remote:x" }\n',
        r"model 'm': a backend 'openai' model needs a \[model.endpoint\] table"),
    "endpoint on llama_cpp": (
        '[[model]]\nid = "m"\nbackend = "llama_cpp"\nmodality = "text"\n'
        'precisions = { q4_k_m = "path:m.gguf" }\n[model.endpoint]\nserver = "lcp"\n',
        r"model 'm': field 'endpoint' is for backend 'openai' models only \(this one runs "
        r"on 'llama_cpp'\)"),
    "both server and base_url": (
        model('server = "lcp"\nbase_url = "http://h:1/v1"'),
        r"model 'm': \[model.endpoint\]: give exactly one of field 'server' .* and field "
        r"'base_url'"),
    "neither server nor base_url": (
        model('dialect = "openai"'),
        r"model 'm': \[model.endpoint\]: give exactly one of field 'server'"),
    "unknown server id": (
        model('server = "lpc"'),
        r"model 'm': \[model.endpoint\]: field 'server' 'lpc' is no \[\[server\]\] id of "
        r"this catalog; known: 'lcp', 'cmd'"),
    "unknown dialect": (
        model('server = "lcp"\ndialect = "vllm-old"'),
        r"\[model.endpoint\]: field 'dialect' must be one of 'llama-server', "
        r"'llama-cpp-python', 'vllm', 'ollama', 'openai', got 'vllm-old'"),
    "command server needs a dialect": (
        model('server = "cmd"'),
        r"\[model.endpoint\]: field 'dialect' is required for a command server"),
    "external server needs a dialect": (
        model('base_url = "http://h:1/v1"', precisions='q4_k_m = "remote:x"'),
        r"\[model.endpoint\]: field 'dialect' is required for an external server"),
    "unknown api": (
        model('server = "lcp"\napi = "responses"'),
        r"\[model.endpoint\]: field 'api' must be one of 'chat', 'completions'"),
    "api key given instead of its variable": (
        model('server = "lcp"\napi_key_env = "sk-live-1234"'),
        r"\[model.endpoint\]: field 'api_key_env' must be the NAME of an environment "
        r"variable holding the key \(never the key itself\)"),
    "bad header name": (
        model('server = "lcp"\nheaders = { "X Title" = "a" }'),
        r"\[model.endpoint\]: field 'headers' has 'X Title', not an HTTP header name"),
    "retries negative": (
        model('server = "lcp"\nretries = -1'),
        r"\[model.endpoint\]: field 'retries' must be a whole number >= 0, got -1"),
    "timeout zero": (
        model('server = "lcp"\ntimeout_s = 0'),
        r"\[model.endpoint\]: field 'timeout_s' must be a number of seconds above 0"),
    "stream not a bool": (
        model('server = "lcp"\nstream = "yes"'),
        r"\[model.endpoint\]: field 'stream' must be true or false"),
    "unknown endpoint field": (
        model('server = "lcp"\nmodel_name = "x"'),
        r"\[model.endpoint\]: unknown field\(s\) 'model_name'; allowed: api, api_key_env"),
    "credentials in base_url": (
        model('base_url = "http://user:key@h:1/v1"\ndialect = "openai"',
              precisions='q4_k_m = "remote:x"'),
        r"\[model.endpoint\]: field 'base_url' must not carry credentials"),
    "base_url not http": (
        model('base_url = "ftp://h/v1"\ndialect = "openai"', precisions='q4_k_m = "remote:x"'),
        r"\[model.endpoint\]: field 'base_url' 'ftp://h/v1' must be an http:// or https:// "
        r"URL"),
    "external with local weights": (
        model('base_url = "http://h:1/v1"\ndialect = "vllm"'),
        r"model 'm': field 'precisions.q4_k_m': a server at base_url serves its own weights; "
        r"write precisions.q4_k_m = \"remote:SERVED-MODEL-NAME\""),
    "external with a projector": (
        model('base_url = "http://h:1/v1"\ndialect = "vllm"', precisions='q4_k_m = "remote:x"',
              modality="vision", extra='projector = "path:p.gguf"'),
        r"model 'm': field 'projector': a server at base_url holds its own projector"),
    "managed server with remote weights": (
        model('server = "lcp"', precisions='q4_k_m = "remote:x"'),
        r"model 'm': field 'precisions.q4_k_m': a llama-cpp-python server loads the weights "
        r"the catalog names"),
    "managed vision model without projector": (
        model('server = "lcp"', modality="vision"),
        r"model 'm': a vision model on llama-cpp-python server 'lcp' needs field 'projector'"),
    "command passing a projector the model lacks": (
        model('server = "cmdp"\ndialect = "vllm"'),
        r"model 'm': server 'cmdp''s command passes \{projector_path\}: the model needs field "
        r"'projector'"),
}

SERVER_TABLES = """
[[server]]
id = "lcp"
kind = "llama-cpp-python"

[[server]]
id = "cmd"
kind = "command"
command = ["serve", "--port", "{port}"]
"""


@pytest.mark.parametrize("case", sorted(CASES))
def test_endpoint_rules(tmp_path: Path, case: str) -> None:
    text, message = CASES[case]
    servers = SERVER_TABLES
    if "cmdp" in text:
        servers += ('\n[[server]]\nid = "cmdp"\nkind = "command"\n'
                    'command = ["s", "{model_path}", "{projector_path}", "{port}"]\n')
    path = write(tmp_path, servers + text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value).startswith(f"{path}: ")  # the file, then the entry and field
    assert_matches(str(info.value), message)


SERVER_CASES: dict[str, tuple[str, str]] = {
    "unknown kind": (
        'id = "s"\nkind = "ollama"',
        r"server 's': field 'kind' must be one of 'llama-cpp-python', 'llama-server', "
        r"'vllm', 'command', got 'ollama'"),
    "command without command": (
        'id = "s"\nkind = "command"',
        r"server 's': a kind = \"command\" server needs field 'command'"),
    "command without port": (
        'id = "s"\nkind = "command"\ncommand = ["serve", "{model_path}"]',
        r"server 's': field 'command' must pass \{port\} to the server"),
    "unknown placeholder": (
        'id = "s"\nkind = "command"\ncommand = ["serve", "--port={port}", "{model}"]',
        r"server 's': field 'command' has unknown placeholder \{model\} in '\{model\}'; "
        r"known: \{host\}, \{port\}"),
    "command on llama-server": (
        'id = "s"\nkind = "llama-server"\ncommand = ["x"]',
        r"server 's': field 'command' is for kind = \"command\" only"),
    "settings on a command server": (
        'id = "s"\nkind = "command"\ncommand = ["x", "{port}"]\nsettings = { n_ctx = 4 }',
        r"server 's': field 'settings' is not for kind = \"command\" servers"),
    "misspelt setting": (
        'id = "s"\nkind = "llama-cpp-python"\nsettings = { n_ctxx = 4 }',
        r"server 's': field 'settings' has unknown llama-cpp-python setting\(s\) 'n_ctxx' "
        r"\(did you mean 'n_ctx'\?\)"),
    "slots only on llama-server": (
        'id = "s"\nkind = "llama-cpp-python"\nsettings = { n_parallel = 4 }',
        r"server 's': field 'settings' has unknown llama-cpp-python setting\(s\) 'n_parallel'"),
    "bad setting value": (
        'id = "s"\nkind = "llama-server"\nsettings = { n_parallel = 0 }',
        r"server 's': field 'settings.n_parallel' must be at least 1"),
    "bad ready timeout": (
        'id = "s"\nkind = "llama-server"\nready_timeout_s = -1',
        r"server 's': field 'ready_timeout_s' must be a number of seconds above 0"),
    "bad env name": (
        'id = "s"\nkind = "llama-server"\nenv = { "1X" = "a" }',
        r"server 's': field 'env' has '1X', not an environment variable name"),
    "bad id": (
        'id = "S 1"\nkind = "llama-server"',
        r"server 'S 1': field 'id' must be lower-case letters"),
    "unknown field": (
        'id = "s"\nkind = "llama-server"\nport = 8080',
        r"server 's': unknown field\(s\) 'port'; allowed: command, description, env"),
}

ANY_MODEL = ('[[model]]\nid = "m"\nbackend = "llama_cpp"\nmodality = "text"\n'
             'precisions = { q4_k_m = "path:m.gguf" }\n')


@pytest.mark.parametrize("case", sorted(SERVER_CASES))
def test_server_rules(tmp_path: Path, case: str) -> None:
    table, message = SERVER_CASES[case]
    path = write(tmp_path, f"[[server]]\n{table}\n\n{ANY_MODEL}")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value).startswith(f"{path}: ")
    assert_matches(str(info.value), message)


def test_server_defined_twice(tmp_path: Path) -> None:
    table = '[[server]]\nid = "s"\nkind = "llama-server"\n'
    path = write(tmp_path, table + table + ANY_MODEL)
    with pytest.raises(CatalogError, match=r"server 's' is defined twice"):
        load_catalog(path)


def test_models_of_one_server_must_agree_on_the_key(tmp_path: Path) -> None:
    text = (SERVER_TABLES + model('server = "lcp"\napi_key_env = "KEY_A"')
            + model('server = "lcp"', precisions='q8_0 = "path:n.gguf"').replace('"m"', '"n"'))
    path = write(tmp_path, text)
    with pytest.raises(CatalogError, match=r"server 'lcp': its models disagree on "
                                           r"\[model.endpoint\] api_key_env \(KEY_A for model "
                                           r"'m', none for model 'n'\)"):
        load_catalog(path)


def test_a_server_takes_its_key_variable_from_its_models(tmp_path: Path) -> None:
    path = write(tmp_path, SERVER_TABLES + model('server = "lcp"\napi_key_env = "KEY_A"'))
    assert load_catalog(path).servers["lcp"].api_key_env == "KEY_A"


def test_unknown_top_level_key_mentions_servers(tmp_path: Path) -> None:
    path = write(tmp_path, '[[servers]]\nid = "s"\n' + ANY_MODEL)
    with pytest.raises(CatalogError, match=r"unknown top-level key\(s\) \['servers'\]; "
                                           r"expected \[\[model\]\] and \[\[server\]\] tables"):
        load_catalog(path)


def assert_matches(text: str, pattern: str) -> None:
    assert re.search(pattern, text), f"{pattern!r} not in {text!r}"


JUNK = st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(),
                 st.lists(st.text(max_size=10), max_size=4),
                 st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
                 st.dictionaries(st.text(max_size=10), st.integers(), max_size=3))
ENDPOINT_KEYS = ["server", "base_url", "dialect", "api", "api_key_env", "headers", "stream",
                 "timeout_s", "retries", "swaps", "junk"]
SERVER_KEYS = ["id", "kind", "command", "ready_timeout_s", "settings", "env", "junk"]


@settings(max_examples=300, deadline=None)
@given(raw=st.dictionaries(st.sampled_from(ENDPOINT_KEYS), JUNK, max_size=6))
def test_junk_endpoints_fail_with_a_spec_error(raw: dict[str, Any]) -> None:
    servers = {"lcp": ServerSpec(id="lcp", kind="llama-cpp-python", catalog_path=Path("c"))}
    message = "c: model 'm': [model.endpoint]"
    try:
        parse_endpoint(raw, "c: model 'm'", servers)
    except SpecError as exc:  # the only way it may fail
        message = str(exc)
    assert message.startswith("c: model 'm': [model.endpoint]")


@settings(max_examples=300, deadline=None)
@given(raw=st.dictionaries(st.sampled_from(SERVER_KEYS), JUNK, max_size=6),
       kind=st.sampled_from(["llama-cpp-python", "llama-server", "command"]))
def test_junk_servers_fail_with_a_spec_error(raw: dict[str, Any], kind: str) -> None:
    raw = {"kind": kind, **raw}
    message = "c: server "
    try:
        parse_server(raw, 0, Path("c"))
    except SpecError as exc:  # the only way it may fail
        message = str(exc)
    assert message.startswith("c: server ")
