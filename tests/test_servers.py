"""Managed servers for real, on loopback, with tiny random GGUF models: start, readiness,
serving, swapping, keys, faults (never ready, exits early, dies), process usage and
cleanup (close, Ctrl-C, a killed session).

llama-server tests need the binary tools/build_llama_tool.sh builds (CI builds it); they
skip, saying so, where it is absent.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import PIL.Image
import pytest

import pytest_vlmbench
from pytest_vlmbench.models.catalog import WeightSource
from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE
from pytest_vlmbench.models.endpoints import ServedModel, ServerSpec
from pytest_vlmbench.models.weights import resolve
from pytest_vlmbench.results import document as results_document
from pytest_vlmbench.servers import (
    ManagedModel,
    RunningServer,
    ServerError,
    ServerManager,
    free_port,
    managed_models,
)
from pytest_vlmbench.servers import llama_server as llama_server_mod
from pytest_vlmbench.servers.procs import tree_pids

REPO = Path(__file__).resolve().parent.parent
NULL_SERVER = REPO / "tools" / "null_server.py"
SRC = Path(pytest_vlmbench.__file__).resolve().parent.parent


def _has_llama_server() -> bool:
    try:
        llama_server_mod.binary()
    except ServerError:
        return False
    return True


needs_llama_server = pytest.mark.skipif(
    not _has_llama_server(),
    reason="llama-server not built: tools/build_llama_tool.sh llama-server (CI builds it)")


@pytest.fixture(scope="module")
def tiny(model_cache: Path) -> dict[str, Path]:
    """Two tiny text models (two seeds) and an mlp projector matching them."""
    def get(value: str) -> Path:
        return resolve(WeightSource("generated", value), catalog_dir=model_cache,
                       cache_dir=model_cache).path

    return {"a": get("llama-tiny"), "b": get("llama-tiny@1"), "proj": get("mlp-tiny")}


@pytest.fixture
def manager(tmp_path: Path, model_cache: Path) -> Iterator[ServerManager]:
    servers = ServerManager(tmp_path / "logs", model_cache)
    yield servers
    servers.close()


def spec(tmp_path: Path, kind: str, server_id: str = "s", **fields: Any) -> ServerSpec:
    return ServerSpec(id=server_id, kind=kind, catalog_path=tmp_path / "models.toml",
                      **fields)


def text_model(path: Path, model_id: str = "tiny", precision: str = "fp32",
               chat_format: str = "model") -> ManagedModel:
    return ManagedModel(model_id, precision, f"{model_id}-{precision}", path, None,
                        chat_format, "text")


def request(server: RunningServer, path: str, body: dict[str, Any] | None = None,
            key: str | None = None) -> tuple[int, dict[str, Any]]:
    """A plain HTTP request to the server (http.client: no proxy variables apply)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        conn.request("POST" if body is not None else "GET", f"/v1{path}", data, headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.startswith(b"{") else {}
    finally:
        conn.close()


def chat(model: str, content: Any = "Say hi.") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": 4, "temperature": 0.0}


def gone(pid: int, wait_s: float = 5.0) -> bool:
    """True once `pid` no longer runs (a zombie nobody reaped yet counts as gone)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def jpeg_data_url() -> str:
    buf = io.BytesIO()
    PIL.Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# -- llama-cpp-python's server ----------------------------------------------------------


def test_llama_cpp_python_server_serves_every_alias_and_swaps(
        tmp_path: Path, manager: ServerManager, tiny: dict[str, Path]) -> None:
    server = spec(tmp_path, "llama-cpp-python", settings={"n_ctx": 256})
    models = [text_model(tiny["a"], precision="fp32"), text_model(tiny["b"], precision="f16")]
    before = time.perf_counter_ns()
    running = manager.ensure(server, models)
    assert running.spawned_ns >= before  # this call started it
    assert 0 < running.cold_start_ns < 60e9
    assert running.base_url == f"http://127.0.0.1:{running.port}/v1"
    assert running.alive()
    assert running.exit_reason() is None
    config = json.loads((tmp_path / "logs" / "server-s.config.json").read_text())
    assert config["interrupt_requests"] is False  # else concurrency truncates responses
    assert [m["model_alias"] for m in config["models"]] == ["tiny-fp32", "tiny-f16"]

    status, listing = request(running, "/models")
    assert status == 200
    assert {m["id"] for m in listing["data"]} >= {"tiny-fp32"}
    for name in ("tiny-fp32", "tiny-f16", "tiny-fp32"):  # each alias, swapping between them
        status, body = request(running, "/chat/completions", chat(name))
        assert status == 200
        assert body["model"] == name
        assert body["usage"]["completion_tokens"] > 0
    assert running.served_name("tiny", "f16") == "tiny-f16"
    with pytest.raises(ServerError, match=r"server 's' does not serve 'tiny' at 'q8_0'"):
        running.served_name("tiny", "q8_0")

    # the same request set again: the running server is reused
    assert manager.ensure(server, models[::-1]) is running
    used = running.usage()
    assert used.rss_bytes > 0
    assert used.rss_peak_bytes >= used.rss_bytes
    assert used.cpu_s > 0
    assert used.processes == 1

    pid = running.pid
    manager.close()
    assert gone(pid)
    assert not running.alive()
    assert "was stopped" in (running.exit_reason() or "")
    log = running.log_path.read_text()
    assert running.log_path == tmp_path / "logs" / "server-s.log"
    assert "Uvicorn running on http://127.0.0.1" in log
    assert "ready after" in log
    assert "POST /v1/chat/completions" in log


def test_llama_cpp_python_vision_gets_a_gemma_template(
        tmp_path: Path, manager: ServerManager, tiny: dict[str, Path],
        model_cache: Path) -> None:
    """The server's `mtmd` handler reads the template from the GGUF only: a base model
    with chat_format gemma is served from a copy carrying the Gemma template."""
    import gguf

    server = spec(tmp_path, "llama-cpp-python", settings={"n_ctx": 512})
    model = ManagedModel("vis", "fp32", "vis-fp32", tiny["a"], tiny["proj"], "gemma",
                         "vision")
    text = text_model(tiny["a"], "txt", chat_format="gemma")
    running = manager.ensure(server, [model, text])
    vision_entry, text_entry = json.loads(
        (tmp_path / "logs" / "server-s.config.json").read_text())["models"]
    assert vision_entry["chat_format"] == "mtmd"
    assert vision_entry["clip_model_path"] == str(tiny["proj"])
    assert "chat_format" not in text_entry  # the template in the file, as for vision
    copy = Path(vision_entry["model"])
    assert text_entry["model"] == str(copy)
    assert copy.parent == model_cache / "templated"
    copied, original = gguf.GGUFReader(copy), gguf.GGUFReader(tiny["a"])
    assert copied.fields["tokenizer.chat_template"].contents() == GEMMA_CHAT_TEMPLATE
    assert set(copied.fields) == set(original.fields) | {"tokenizer.chat_template"}
    for mine, theirs in zip(copied.tensors, original.tensors, strict=True):
        assert mine.name == theirs.name
        assert bytes(mine.data) == bytes(theirs.data)

    content = [{"type": "text", "text": "Describe."},
               {"type": "image_url", "image_url": {"url": jpeg_data_url()}}]
    status, with_image = request(running, "/chat/completions", chat("vis-fp32", content))
    assert status == 200, with_image
    status, text_only = request(running, "/chat/completions", chat("vis-fp32", "Describe."))
    assert status == 200
    assert with_image["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"]
    assert request(running, "/chat/completions", chat("txt-fp32"))[0] == 200


def test_api_key_is_required_and_written_nowhere(
        tmp_path: Path, manager: ServerManager, tiny: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-key-7f3a9c"
    monkeypatch.setenv("VLMBENCH_TEST_KEY", canary)
    server = spec(tmp_path, "llama-cpp-python", settings={"n_ctx": 256},
                  api_key_env="VLMBENCH_TEST_KEY")
    running = manager.ensure(server, [text_model(tiny["a"])])
    assert request(running, "/chat/completions", chat("tiny-fp32"))[0] == 401
    assert request(running, "/chat/completions", chat("tiny-fp32"), key=canary)[0] == 200
    manager.close()
    written = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert written  # the log at least
    for path in written:
        assert canary not in path.read_text(errors="replace"), path
    assert canary not in json.dumps(running.to_json())
    assert canary not in " ".join(running.argv)
    config = Path(running.settings["config_file"])
    assert not config.exists()  # the key's config is deleted once the server is ready


def test_missing_key_variable_is_one_line(tmp_path: Path, manager: ServerManager,
                                          tiny: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLMBENCH_NO_SUCH_KEY", raising=False)
    server = spec(tmp_path, "llama-cpp-python", api_key_env="VLMBENCH_NO_SUCH_KEY")
    with pytest.raises(ServerError, match=r"^server 's': its models' \[model.endpoint\] "
                                          r"api_key_env names VLMBENCH_NO_SUCH_KEY, which is "
                                          r"not set$"):
        manager.ensure(server, [text_model(tiny["a"])])


# -- llama-server -----------------------------------------------------------------------


@needs_llama_server
def test_llama_server_serves_one_model_and_restarts_for_another(
        tmp_path: Path, manager: ServerManager, tiny: dict[str, Path]) -> None:
    server = spec(tmp_path, "llama-server", settings={"n_ctx": 256, "n_parallel": 2})
    first = manager.ensure(server, [text_model(tiny["a"], precision="fp32", chat_format="gemma")])
    assert first.cold_start_ns > 0
    # the in-process backend's Gemma template, not `--chat-template gemma` (under jinja
    # that makes every prompt the word "gemma")
    template = Path(first.argv[first.argv.index("--chat-template-file") + 1])
    assert template.read_text() == GEMMA_CHAT_TEMPLATE
    conn = http.client.HTTPConnection(first.host, first.port, timeout=30)
    conn.request("POST", "/apply-template", json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]}))
    applied = json.loads(conn.getresponse().read())
    conn.close()
    assert applied["prompt"] == ("<start_of_turn>user\nBe brief.\n\nHi.<end_of_turn>\n"
                                 "<start_of_turn>model\n")
    assert first.argv[first.argv.index("--ctx-size") + 1] == "512"  # n_ctx per slot x 2
    assert first.settings["n_parallel"] == 2
    status, body = request(first, "/chat/completions", chat("tiny-fp32"))
    assert status == 200, body
    assert body["usage"]["completion_tokens"] > 0
    assert first.usage().rss_bytes > 0

    second = manager.ensure(server, [text_model(tiny["b"], precision="f16")])
    assert second is not first
    assert second.pid != first.pid
    assert gone(first.pid)
    assert "was stopped" in (first.exit_reason() or "")
    assert request(second, "/chat/completions", chat("tiny-f16"))[0] == 200
    assert "stopping: asked for tiny-f16" in second.log_path.read_text()
    pid = second.pid
    manager.close()
    assert gone(pid)


@needs_llama_server
def test_llama_server_vision_and_key(tmp_path: Path, manager: ServerManager,
                                     tiny: dict[str, Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-key-51bd0e"
    monkeypatch.setenv("VLMBENCH_TEST_KEY", canary)
    monkeypatch.setenv("LLAMA_ARG_CTX_SIZE", "7")  # inherited flags never reach the server
    server = spec(tmp_path, "llama-server", settings={"n_ctx": 512},
                  api_key_env="VLMBENCH_TEST_KEY")
    model = ManagedModel("vis", "fp32", "vis-fp32", tiny["a"], tiny["proj"], "gemma", "vision")
    running = manager.ensure(server, [model])
    assert running.argv[running.argv.index("--mmproj") + 1] == str(tiny["proj"])
    content = [{"type": "text", "text": "Describe."},
               {"type": "image_url", "image_url": {"url": jpeg_data_url()}}]
    assert request(running, "/chat/completions", chat("vis-fp32", content))[0] == 401
    status, body = request(running, "/chat/completions", chat("vis-fp32", content), key=canary)
    assert status == 200, body
    manager.close()
    assert canary not in running.log_path.read_text(errors="replace")
    assert canary not in json.dumps(running.to_json())


def test_missing_llama_server_says_how_to_build_it(tmp_path: Path, manager: ServerManager,
                                                   tiny: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMBENCH_LLAMA_SERVER", str(tmp_path / "nope" / "llama-server"))
    with pytest.raises(ServerError, match=r"llama-server not found at \$VLMBENCH_LLAMA_SERVER="
                                          r".*nope/llama-server: build it with "
                                          r"tools/build_llama_tool.sh llama-server"):
        manager.ensure(spec(tmp_path, "llama-server"), [text_model(tiny["a"])])


# -- command servers and faults -----------------------------------------------------------


def null_server(tmp_path: Path, server_id: str = "null", **fields: Any) -> ServerSpec:
    return spec(tmp_path, "command", server_id,
                command=(sys.executable, str(NULL_SERVER), "--port", "{port}"), **fields)


REMOTE = ManagedModel("r", "fp16", "served-r", None, None, "model", "text")


def test_command_server_is_shared_unless_its_command_names_a_model(
        tmp_path: Path, manager: ServerManager, tiny: dict[str, Path]) -> None:
    shared = null_server(tmp_path)
    running = manager.ensure(shared, [REMOTE])
    assert request(running, "/models")[0] == 200
    other = ManagedModel("r2", "fp16", "served-r2", None, None, "model", "text")
    assert manager.ensure(shared, [other]) is running  # `command` names no model

    per_model = spec(tmp_path, "command", "pm", command=(
        sys.executable, str(NULL_SERVER), "--port", "{port}", "--chunks", "2",
        "--", "{model_path}"))
    with pytest.raises(ServerError, match=r"its command passes \{model_path\} but model 'r'"):
        manager.ensure(per_model, [REMOTE])


def test_never_ready_is_killed_and_names_its_log(tmp_path: Path,
                                                 manager: ServerManager) -> None:
    marker = f"never-ready-{os.getpid()}"
    server = spec(tmp_path, "command", "slow", ready_timeout_s=2.0, command=(
        sys.executable, "-c",
        "import sys, time; print('listening nowhere', sys.argv[1], flush=True); "
        "time.sleep(60)", "{port}", marker))
    with pytest.raises(ServerError) as info:
        manager.ensure(server, [REMOTE])
    message = str(info.value)
    log = tmp_path / "logs" / "server-slow.log"
    assert_matches(message, rf"^server slow \(command\) not ready after 2 s on "
                            rf"http://127\.0\.0\.1:\d+ \(GET /v1/models: no answer\); its log: "
                            rf"{log}; last lines: .*listening nowhere \d+$")
    assert "\n" not in message
    assert not [pid for pid in _pids_with(marker) if not gone(pid, 0.5)]


def test_exit_before_ready_gives_code_and_log_tail(tmp_path: Path,
                                                   manager: ServerManager) -> None:
    server = spec(tmp_path, "command", "boom", command=(
        sys.executable, "-c", "import sys; print('boom: no such model', flush=True); "
        "sys.exit(3)", "{port}"))
    with pytest.raises(ServerError) as info:
        manager.ensure(server, [REMOTE])
    assert_matches(str(info.value), r"^server boom \(command\) exited with code 3 \d+\.\d s "
                                    r"after start, before it was ready; its log: .*server-boom"
                                    r"\.log; last lines: .*boom: no such model$")


def test_a_dead_server_says_why_and_is_restarted(tmp_path: Path,
                                                 manager: ServerManager) -> None:
    server = null_server(tmp_path)
    running = manager.ensure(server, [REMOTE])
    os.kill(running.pid, signal.SIGKILL)
    assert gone(running.pid)
    assert not running.alive()
    assert_matches(running.exit_reason() or "",
                   rf"^server null \(pid {running.pid}\) exited with code -9 \(SIGKILL\); "
                   rf"log: {running.log_path}; last lines: ")
    assert running.usage().processes == 0
    reason = running.exit_reason()
    again = manager.ensure(server, [REMOTE])
    assert running.exit_reason() == reason  # still the real cause, not "stopped"
    assert again.pid != running.pid
    assert again.alive()
    assert "restarting: server null" in again.log_path.read_text()
    manager.stop("null")
    history = manager.history()  # the results' `servers`, in start order
    assert [h["pid"] for h in history] == [running.pid, again.pid]
    assert history[0]["exit_reason"] == reason  # it died on its own
    assert history[1]["exit_reason"] is None  # the session stopped it
    assert history[1]["usage"]["rss_bytes"] > 0  # read just before the stop
    assert history[1]["cold_start_s"] > 0
    item_schema = results_document.schema()["properties"]["servers"]["items"]
    for entry in history:
        jsonschema.validate(json.loads(json.dumps(entry)), item_schema)


def test_usage_covers_the_process_tree(tmp_path: Path, manager: ServerManager) -> None:
    server = spec(tmp_path, "command", "tree", command=(
        "sh", "-c", f'"{sys.executable}" "{NULL_SERVER}" --port "$0" & wait', "{port}"))
    running = manager.ensure(server, [REMOTE])
    pids = tree_pids(running.pid)
    assert len(pids) == 2  # sh and its python child
    used = running.usage()
    assert used.processes == 2
    assert used.rss_bytes > 0
    assert used.rss_peak_bytes >= used.rss_bytes
    child = next(pid for pid in pids if pid != running.pid)
    manager.close()
    assert gone(running.pid)
    assert gone(child)  # the whole process group is stopped


def test_logs_are_named_after_the_results_file(tmp_path: Path, model_cache: Path) -> None:
    servers = ServerManager(tmp_path, model_cache, prefix="results-20250101T000000Z-abc")
    try:
        running = servers.ensure(null_server(tmp_path), [REMOTE])
        assert running.log_path == tmp_path / "results-20250101T000000Z-abc.server-null.log"
        assert running.log_path.read_text().startswith("--- ")
    finally:
        servers.close()


def test_note_served_tells_a_switch(tmp_path: Path, manager: ServerManager) -> None:
    running = manager.ensure(null_server(tmp_path), [REMOTE])
    assert manager.note_served(running.base_url, "served-r") is False  # loaded at start
    assert manager.note_served(running.base_url, "served-r2") is True
    assert manager.note_served(running.base_url, "served-r2") is False
    external = "http://10.0.0.5:8080/v1"
    assert manager.note_served(external, "m") is True  # unknown state: count it cold
    assert manager.note_served(external, "m") is False


def test_managed_models_puts_the_asked_model_first(tmp_path: Path) -> None:
    served = tuple(
        ServedModel("m", p, WeightSource("path", f"{p}.gguf"), None, "model", "text", f"m-{p}")
        for p in ("q4_k_m", "q8_0"))
    server = spec(tmp_path, "llama-cpp-python", served=served)
    models = managed_models(server, lambda s: tmp_path / s.value, first=("m", "q8_0"))
    assert [m.served_name for m in models] == ["m-q8_0", "m-q4_k_m"]
    assert models[0].weight_path == tmp_path / "q8_0.gguf"
    only = managed_models(server, lambda s: tmp_path / s.value, only=[("m", "q4_k_m")])
    assert [m.served_name for m in only] == ["m-q4_k_m"]
    with pytest.raises(ServerError, match=r"server 's' serves no model 'm' at precision 'f16'"):
        managed_models(server, lambda s: tmp_path / s.value, first=("m", "f16"))


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port < 65536


# -- a session that is interrupted or killed leaves nothing running --------------------

SESSION = """
import os, signal, sys, time
from pathlib import Path
from pytest_vlmbench.models.endpoints import ServerSpec
from pytest_vlmbench.servers import ManagedModel, ServerManager
manager = ServerManager(Path(sys.argv[1]), Path(sys.argv[1]))
server = ServerSpec(id="n", kind="command", catalog_path=Path("x"),
                    command=(sys.executable, sys.argv[2], "--port", "{port}"))
running = manager.ensure(server, [ManagedModel("r", "p", "r-p", None, None, "model", "text")])
print(running.pid, flush=True)
if sys.argv[3] == "interrupt":
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: KeyboardInterrupt, then atexit
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["interrupt", "kill"])
def test_an_ended_session_leaves_no_server(tmp_path: Path, how: str) -> None:
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent(SESSION))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with subprocess.Popen([sys.executable, str(script), str(tmp_path), str(NULL_SERVER), how],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else ""
        server_pid = int(line)
        if how == "kill":  # no atexit, no finally: the kernel's parent-death signal
            proc.kill()
        proc.communicate(timeout=30)
    assert gone(server_pid)


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_matches(text: str, pattern: str) -> None:
    assert re.search(pattern, text), f"{pattern!r} not in {text!r}"
