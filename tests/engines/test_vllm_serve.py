"""`vllm serve` as a managed server, for real: vLLM's OpenAI server on loopback serving the
tiny random Llama directory (`generated:hf-tiny-llama`), started once for the module
through the ServerManager (a cold start costs ~40-90 s on two busy cores).

What is checked: start and readiness (/health, then /v1/models listing the served name
with the key), the argv and recorded settings, a streamed chat request timed from its
chunks with the server's usage, the "vllm" dialect's JSON schema and grammar on both APIs
(tight constraints: a random-weight model emits whitespace forever where JSON allows it),
the key (required on /v1, absent from argv and log), one-line errors for bad settings,
precisions and directories, a server that cannot start (its log's root cause, said
within the timeout), the stop (nothing of the process tree left), and one plugin session
through the catalog entry.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends import Request, Response
from pytest_vlmbench.backends.openai_http.config import ClientConfig
from pytest_vlmbench.backends.openai_http.model import OpenAIModel
from pytest_vlmbench.models.catalog import CatalogError, WeightSource, load_catalog
from pytest_vlmbench.models.endpoints import ServerSpec
from pytest_vlmbench.models.weights import resolve
from pytest_vlmbench.servers import (
    ManagedModel,
    RunningServer,
    ServerError,
    ServerManager,
    vllm_serve,
)
from pytest_vlmbench.servers.procs import tree_pids
from pytest_vlmbench.tasks import GenerationParams, Task

if vllm_serve.installed() is None:  # the directory's conftest checks the import too
    pytest.skip("needs vLLM in this Python: make test-engines", allow_module_level=True)

KEY_VAR = "VLMBENCH_TEST_VLLM_KEY"
KEY = "canary-vllm-key-5e1d"
SETTINGS = {"enforce_eager": True, "max_model_len": 512, "max_num_seqs": 4}
"""Eager: torch.compile would add ~15-40 s to the start on this CPU."""
YES_NO = {"enum": ["yes", "no"]}
"""A JSON schema with no room for whitespace: the tiny model fills any with it."""


@pytest.fixture(scope="module")
def model_dir(model_cache: Path) -> Path:
    return resolve(WeightSource("generated", "hf-tiny-llama"), catalog_dir=model_cache,
                   cache_dir=model_cache, directory=True).path


def tiny(path: Path, precision: str = "fp32") -> ManagedModel:
    return ManagedModel("tiny-llama", precision, f"tiny-llama-{precision}", path, None,
                        "model", "text")


def vllm_spec(tmp_path: Path, server_id: str = "vllm-test", **fields: Any) -> ServerSpec:
    return ServerSpec(id=server_id, kind="vllm", catalog_path=tmp_path / "models.toml",
                      **fields)


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory, model_cache: Path
            ) -> Iterator[ServerManager]:
    servers = ServerManager(tmp_path_factory.mktemp("vllm-logs"), model_cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_VAR, KEY)
        mp.setenv("VLLM_PLANTED_BY_TEST", "1")  # inherited VLLM_*: not the server's
        yield servers
        servers.close()


@pytest.fixture(scope="module")
def server_spec(tmp_path_factory: pytest.TempPathFactory) -> ServerSpec:
    return vllm_spec(tmp_path_factory.mktemp("vllm-catalog"), settings=SETTINGS,
                     api_key_env=KEY_VAR)


@pytest.fixture
def running(manager: ServerManager, server_spec: ServerSpec, model_dir: Path) -> RunningServer:
    """The module's server: started by the first test that asks, reused after."""
    return manager.ensure(server_spec, [tiny(model_dir)])


def get(server: RunningServer, path: str, key: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def client(server: RunningServer, **fields: Any) -> OpenAIModel:
    config = ClientConfig(base_url=server.base_url, model="tiny-llama-fp32", dialect="vllm",
                          api_key_env=KEY_VAR, label="tiny-llama", **fields)
    return OpenAIModel(config, api_key=KEY)


def ask(model: OpenAIModel, task: Task) -> Response:
    request = Request(system="", user=task.prompt, images=[], params=task.params, seed=0,
                      constraint=model.prepare(task))
    return model.generate(request)


# -- start, readiness, what is recorded -------------------------------------------------


def test_the_server_starts_and_is_ready(running: RunningServer, model_dir: Path) -> None:
    assert running.alive()
    assert running.kind == "vllm"
    assert 0 < running.cold_start_ns < 300e9  # the kind's default ready timeout
    argv = running.argv
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str(model_dir)
    assert argv[argv.index("--served-model-name") + 1] == "tiny-llama-fp32"
    assert argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--max-model-len") + 1] == "512"
    assert argv[argv.index("--max-num-seqs") + 1] == "4"
    assert "--enforce-eager" in argv
    assert "--disable-uvicorn-access-log" in argv
    assert KEY not in " ".join(argv)
    settings = running.settings
    assert settings["dtype"] == "float32"
    assert settings["kv_cache_space_gib"] == vllm_serve.DEFAULT_CPU_KVCACHE_GIB
    assert settings["env"]["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert settings["vllm"].startswith("0.")

    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{running.pid}/environ").read_text().split("\0") if item)
    assert "VLLM_PLANTED_BY_TEST" not in environ
    assert environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert environ["VLLM_CPU_KVCACHE_SPACE"] == str(vllm_serve.DEFAULT_CPU_KVCACHE_GIB)
    assert environ["HF_HUB_OFFLINE"] == "1"
    assert environ["VLLM_API_KEY"] == KEY  # the key travels here, not in argv
    assert KEY not in json.dumps(settings)

    assert get(running, "/health")[0] == 200  # open, as vLLM has it
    assert get(running, "/v1/models")[0] == 401  # the key is required on /v1
    status, listing = get(running, "/v1/models", KEY)
    assert status == 200
    assert [m["id"] for m in json.loads(listing)["data"]] == ["tiny-llama-fp32"]
    used = running.usage()
    assert used.processes >= 3  # API server, engine core, worker
    assert used.rss_bytes > 0
    log = running.log_path.read_text()
    assert "ready after" in log
    assert "Starting vLLM server on http://127.0.0.1" in log
    assert KEY not in log


# -- requests through the client, in the "vllm" dialect -----------------------------------


def test_a_streamed_chat_request_is_timed_from_its_chunks(running: RunningServer) -> None:
    model = client(running)
    try:
        task = Task(name="caption", prompt="Say hi.", params=GenerationParams(max_tokens=8))
        response = ask(model, task)
    finally:
        model.close()
    assert response.tokens_source == "usage"  # stream_options.include_usage answered
    assert response.completion_tokens is not None
    assert 1 <= response.completion_tokens <= 8
    assert response.prompt_tokens is not None
    assert response.prompt_tokens > 0
    assert response.finish_reason in ("length", "stop")
    # the role-only opening chunk carries no token: the first content chunk is the TTFT
    assert response.chunk_ns
    assert response.t_first_token_ns == response.chunk_ns[0]
    assert response.t_start_ns < response.t_first_token_ns <= response.t_end_ns
    assert response.chunk_ns == sorted(response.chunk_ns)
    # vLLM merges the tokens a slow reader has not taken yet into one chunk (its
    # RequestOutputCollector): chunks are at most the tokens, not always as many
    assert len(response.chunk_ns) <= response.completion_tokens
    if response.finish_reason == "length":
        assert response.completion_tokens == 8


@pytest.mark.parametrize("chat_format", ["model", "completion"])
def test_a_json_schema_constrains_the_output(running: RunningServer, chat_format: str
                                             ) -> None:
    """response_format json_schema on /v1/chat/completions, structured_outputs.json on
    /v1/completions: both are obeyed (the output parses and fits the schema)."""
    model = client(running, chat_format=chat_format)
    try:
        task = Task(name="yes_no", prompt="Answer as JSON.", schema=YES_NO,
                    expects_json=True, params=GenerationParams(max_tokens=16))
        constraint = model.prepare(task)
        assert constraint is not None
        assert set(constraint.fields) == ({"response_format"} if chat_format == "model"
                                          else {"structured_outputs"})
        response = ask(model, task)
    finally:
        model.close()
    assert response.finish_reason == "stop", response.text
    assert json.loads(response.text) in ("yes", "no")
    assert response.counts.get("constrained") == 1


def test_a_grammar_constrains_the_output(running: RunningServer, tmp_path: Path) -> None:
    grammar = tmp_path / "yes_no.gbnf"
    grammar.write_text('root ::= "yes" | "no"\n')
    model = client(running)
    try:
        task = Task(name="yes_no_gbnf", prompt="Yes or no?", grammar_file=grammar,
                    params=GenerationParams(max_tokens=8))
        constraint = model.prepare(task)
        assert constraint is not None
        assert set(constraint.fields) == {"structured_outputs"}
        response = ask(model, task)
    finally:
        model.close()
    assert response.text in ("yes", "no")
    assert response.finish_reason == "stop"


# -- one-line errors, before anything starts -------------------------------------------

SERVER_TABLE = """
[[server]]
id = "v"
kind = "vllm"
settings = {{ {settings} }}

[[model]]
id = "m"
backend = "openai"
modality = "text"
precisions = {{ fp32 = "generated:hf-tiny-llama" }}
[model.endpoint]
server = "v"
"""


@pytest.mark.parametrize(("settings", "said"), [
    ("gpu_memory_utilization = 1.5",
     "field 'settings.gpu_memory_utilization' must be a number above 0 and at most 1, "
     "got 1.5"),
    ("gpu_memory_utilization = true", "must be a number above 0 and at most 1, got true"),
    ("max_model_length = 512",
     "unknown vllm setting(s) 'max_model_length' (did you mean 'max_model_len'?)"),
    ("enforce_eager = \"yes\"", "field 'settings.enforce_eager' must be true or false"),
    ("kv_cache_space_gib = 0", "field 'settings.kv_cache_space_gib' must be at least 1"),
    ("max_num_seqs = 2.5", "field 'settings.max_num_seqs' must be a whole number"),
])
def test_a_bad_setting_is_one_line(tmp_path: Path, settings: str, said: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(SERVER_TABLE.format(settings=settings))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: server 'v': ")
    assert said in message


def test_a_good_catalog_gets_the_kinds_defaults(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(SERVER_TABLE.format(settings="gpu_memory_utilization = 0.5"))
    catalog = load_catalog(path)
    server = catalog.servers["v"]
    assert server.ready_timeout_s == 300.0
    endpoint = catalog.get("m").endpoint
    assert endpoint is not None
    assert endpoint.dialect == "vllm"
    assert endpoint.swaps is False


@pytest.mark.parametrize(("model", "said"), [
    (lambda d: tiny(d, "int8"), "precision 'int8' cannot be served by vllm serve, which "
                                "takes fp32, bf16, fp16 as --dtype"),
    (lambda d: tiny(d.parent / "nowhere"), "is missing"),
    (lambda d: tiny(d / "config.json"), "is a file"),
    (lambda d: tiny(d.parent), "has no config.json"),
])
def test_a_model_vllm_cannot_serve_is_one_line(tmp_path: Path, model_dir: Path, model: Any,
                                               said: str) -> None:
    servers = ServerManager(tmp_path / "logs", tmp_path)
    try:
        with pytest.raises(ServerError) as info:
            servers.ensure(vllm_spec(tmp_path), [model(model_dir)])
    finally:
        servers.close()
    assert "\n" not in str(info.value)
    assert said in str(info.value)
    assert not (tmp_path / "logs" / "server-vllm-test.log").exists()  # nothing started


def test_the_plan_for_a_gemma_model_and_explicit_settings(tmp_path: Path,
                                                          model_dir: Path) -> None:
    """No server started: the argv and environment `plan` makes."""
    from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE

    model = ManagedModel("g", "bf16", "g-bf16", model_dir, None, "gemma", "text")
    server = vllm_spec(tmp_path, settings={"gpu_memory_utilization": 0.5,
                                           "enforce_eager": False,
                                           "enable_prefix_caching": False,
                                           "kv_cache_space_gib": 2},
                       env={"HF_HUB_OFFLINE": "0"})
    launch = vllm_serve.plan(server, [model], host="127.0.0.1", port=1234,
                             cache_dir=tmp_path, api_key=None)
    argv = launch.argv
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"
    assert argv[argv.index("--max-model-len") + 1] == "2048"  # the default
    assert {"--no-enforce-eager", "--no-enable-prefix-caching"} <= set(argv)
    template = Path(argv[argv.index("--chat-template") + 1])
    assert template.read_text() == GEMMA_CHAT_TEMPLATE
    assert launch.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert "HF_HUB_OFFLINE" not in launch.env  # the catalog's env wins over our default
    assert "VLLM_API_KEY" not in launch.env
    assert launch.unset_env == ("VLLM_*",)
    assert launch.probe_path == "/health"
    twice = vllm_spec(tmp_path, settings={"kv_cache_space_gib": 2},
                      env={"VLLM_CPU_KVCACHE_SPACE": "4"})
    with pytest.raises(ServerError, match=r"give the CPU KV cache size once, as "
                       r"settings.kv_cache_space_gib or as env.VLLM_CPU_KVCACHE_SPACE"):
        vllm_serve.plan(twice, [model], host="127.0.0.1", port=1234, cache_dir=tmp_path,
                        api_key=None)


def test_the_catalog_max_images_is_the_servers_per_prompt_limit(tmp_path: Path,
                                                                  model_dir: Path) -> None:
    """A vision model's catalog max_images reaches vllm serve as --limit-mm-per-prompt (in
    the JSON form vLLM 0.32 parses), as the in-process engine's limit; none: vLLM's own."""
    server = vllm_spec(tmp_path)
    limited = ManagedModel("v", "fp32", "v-fp32", model_dir, None, "auto", "vision", 3)
    argv = vllm_serve.plan(server, [limited], host="127.0.0.1", port=1234,
                           cache_dir=tmp_path, api_key=None).argv
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == {"image": 3}
    free = ManagedModel("v", "fp32", "v-fp32", model_dir, None, "auto", "vision")
    assert "--limit-mm-per-prompt" not in vllm_serve.plan(
        server, [free], host="127.0.0.1", port=1234, cache_dir=tmp_path, api_key=None).argv


def test_the_root_cause_is_found_in_the_log(tmp_path: Path) -> None:
    """vLLM's last lines name no cause; the first exception that is not a wrapper does."""
    log = tmp_path / "server.log"
    log.write_text(
        "--- 2025 server v (vllm) on port 1: python -m vllm...\n"
        "(APIServer pid=1) WARNING 12-02 07:33:21 [system_utils.py:255] Found ulimit of "
        "20000 and failed: `OSError: [Errno 24] Too many open files`\n"
        "(Worker pid=3) ERROR 12-02 07:34:24 [multiproc_executor.py:953]     raise "
        "RuntimeError(\n"
        "(Worker pid=3) ERROR 12-02 07:34:24 [multiproc_executor.py:953] RuntimeError: "
        "Cannot find any model weights with `/m`\n"
        "(EngineCore pid=2) ERROR 12-02 07:34:29 [core.py:1510] Exception: WorkerProc "
        "initialization failed due to an exception in a background process. See stack "
        "trace for root cause.\n"
        "RuntimeError: Engine core initialization failed. See root cause above. Failed "
        "core proc(s): {}\n")
    assert vllm_serve.failure_reason(log, 0) == \
        "RuntimeError: Cannot find any model weights with `/m`"
    log.write_text("pydantic_core._pydantic_core.ValidationError: 1 validation error for "
                   "ModelConfig\n  Value error, Model architectures ['X'] are not "
                   "supported for now. Supported architectures: " + "'A', " * 200 + "\n")
    reason = vllm_serve.failure_reason(log, 0)
    assert reason is not None
    assert reason.startswith("pydantic_core._pydantic_core.ValidationError: 1 validation "
                             "error for ModelConfig - Value error, Model architectures "
                             "['X'] are not supported for now.")
    assert len(reason) == 400
    log.write_text("INFO nothing failed\n")
    assert vllm_serve.failure_reason(log, 0) is None


# -- a server that cannot start ----------------------------------------------------------


def test_a_server_that_cannot_start_says_why(tmp_path: Path, model_dir: Path) -> None:
    """A model directory without its weights: vLLM's worker fails, the engine core and
    the API server say only that it did; the message names the worker's reason."""
    broken = tmp_path / "no-weights"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").unlink()
    servers = ServerManager(tmp_path / "logs", tmp_path)
    server = vllm_spec(tmp_path, "broken", settings=SETTINGS)
    started = time.monotonic()
    try:
        with pytest.raises(ServerError) as info:
            servers.ensure(server, [tiny(broken)])
        elapsed = time.monotonic() - started
        (history,) = servers.history()
    finally:
        servers.close()
    message = str(info.value)
    assert elapsed < server.ready_timeout_s  # it exited: no waiting for the timeout
    assert "\n" not in message
    assert message.startswith("server broken (vllm) exited with code 1 ")
    assert f"cause: RuntimeError: Cannot find any model weights with `{broken}`" in message
    assert str(tmp_path / "logs" / "server-broken.log") in message
    assert history["start_error"] == message
    assert gone_tree(history["pid"])


# -- the stop --------------------------------------------------------------------------


def gone_tree(pid: int, wait_s: float = 5.0) -> bool:
    """Nothing left of `pid`'s process tree or its session (zombies count as gone)."""
    deadline = time.monotonic() + wait_s
    while tree_pids(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_it_stops_with_no_leftover_processes(manager: ServerManager, running: RunningServer
                                             ) -> None:
    pids = tree_pids(running.pid)
    assert len(pids) >= 3
    started = time.monotonic()
    manager.stop(running.id)
    stopped_s = time.monotonic() - started
    assert not running.alive()
    assert gone_tree(running.pid)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _state(pid) == "Z"
    assert stopped_s < 10.0 + 1.0  # SIGTERM was enough: no SIGKILL after the grace
    assert "was stopped" in (running.exit_reason() or "")
    assert manager.get(running.id) is None


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


# -- through the plugin -------------------------------------------------------------------

PLUGIN_TESTS = '''
from pytest_vlmbench.tasks import GenerationParams, Task

CAPTION = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=8))
YES_NO = Task(name="yes_no", prompt="Yes or no, as JSON.", schema={"enum": ["yes", "no"]},
              expects_json=True, params=GenerationParams(max_tokens=16))

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=2, warmup=1)

def test_yes_no(vlm_bench):
    vlm_bench.run(YES_NO, samples=2, warmup=0)
'''


def test_the_catalog_entry_runs_through_the_plugin(pytester: pytest.Pytester,
                                                   model_cache: Path) -> None:
    """The embedded catalog's `tiny-llama-vllm-serve` (server `vllm-serve`), one session:
    the server starts, both tasks are measured, the server is stopped at the end."""
    pytester.makeini(f"""
        [pytest]
        vlm_cache_dir = {model_cache}
        vlm_device = cpu
        vlm_idle_s = 0
        """)
    pytester.makepyfile(test_bench=PLUGIN_TESTS)
    out = pytester.path / "out" / "results.json"
    run = pytester.runpytest("-p", "no:cacheprovider", f"--vlm-out={out}",
                             "--vlm-models=tiny-llama-vllm-serve", "--vlm-precisions=fp32")
    run.assert_outcomes(passed=2)
    from pytest_vlmbench.results import document

    doc = document.load(out)
    (server,) = doc["servers"]
    assert server["kind"] == "vllm"
    assert server["served"] == ["tiny-llama-vllm-serve-fp32"]
    assert server["cold_start_s"] > 0
    assert server["exit_reason"] is None  # stopped by the session, not died
    assert gone_tree(server["pid"])
    entries = {b["id"].split("[")[0]: b for b in doc["benchmarks"]}
    caption = entries["test_bench.py::test_caption"]
    yes_no = entries["test_bench.py::test_yes_no"]
    assert caption["summary"]["succeeded"] == 2
    assert caption["summary"]["ttft_s"]["n"] == 2
    assert yes_no["summary"]["succeeded"] == 2
    assert Path(server["log"]).stat().st_size > 0
