"""Loopback servers for the openai backend's tests: real servers, and what stands between.

- `LcpServer`: a real `python -m llama_cpp.server --config_file CFG` (the tiny random
  GGUF or gemma3-270m), with `alive()`/`exit_reason()` as the server manager's
  RunningServer has them, so a killed server can be asked why.
- `LlamaServer`: llama.cpp's own `llama-server`, when tools/build_llama_tool.sh built it.
- `FaultProxy`: an aiohttp.web proxy in front of a real server that injects, on command,
  the faults of issue 12 item 6: N answers with a status (429 with Retry-After, 500),
  a connection dropped after K events, event K corrupted, a hang of T seconds, and the
  constraint stripped from the body (the server then answers 200 unconstrained).
- `ReplayServer`: answers a recorded exchange (tests/data/replay/*.json) after checking
  that the request body carries the dialect's fields, for servers we cannot run here.

Every web app runs on its own event loop in a daemon thread; the client under test runs
on its own loop in the test's thread, as it does in a benchmark. Also shared by the three
test modules: `shared` (one server per test process), `ask` (a Request as the runner
builds one), `check_timing` (the invariants of a streamed response), and a catalog of
server-backed models (`catalog_with`, `load_context`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from pytest_vlmbench.backends.openai_http import ClientConfig, OpenAIModel

T = TypeVar("T")
CONSTRAINT_FIELDS = ("json_schema", "grammar", "response_format", "structured_outputs",
                     "format", "guided_json", "guided_grammar")
LLAMA_SERVER = Path(os.environ.get(
    "VLMBENCH_LLAMA_SERVER",
    Path.home() / ".cache/pytest-vlmbench/llama-cpp-0.3.36/build/bin/llama-server"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- real servers -------------------------------------------------------------------
class _Process:
    """A server process in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], log_path: Path, probe: str,
                 headers: dict[str, str] | None = None, ready_s: float = 60.0) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + ready_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                   f"{log_path.read_text()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if _get(probe, headers) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready in {ready_s} s: {log_path}")
            time.sleep(0.1)

    port = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_reason(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        return f"server (pid {self.pid}) exited with code {code}; log: {self.log_path}"

    def kill(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def _get(url: str, headers: dict[str, str] | None) -> int:
    import urllib.request

    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=2) as answer:
            status: int = answer.status
            return status
    except Exception:
        return 0


class LcpServer(_Process):
    """`python -m llama_cpp.server` with `models` (ModelSettings dicts) in its config."""

    def __init__(self, models: list[dict[str, Any]], work: Path,
                 api_key: str | None = None) -> None:
        self.port = free_port()
        config: dict[str, Any] = {"host": "127.0.0.1", "port": self.port,
                                  "interrupt_requests": False, "models": models}
        if api_key is not None:
            config["api_key"] = api_key
        work.mkdir(parents=True, exist_ok=True)
        cfg = work / f"lcp-{self.port}.json"
        cfg.write_text(json.dumps(config))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            super().__init__([sys.executable, "-m", "llama_cpp.server", "--config_file",
                              str(cfg)], work / f"lcp-{self.port}.log",
                             f"http://127.0.0.1:{self.port}/v1/models", headers)
        finally:
            cfg.unlink()  # it may hold the key: gone once the server has read it
        self.base_url = f"http://127.0.0.1:{self.port}/v1"


class LlamaServer(_Process):
    """llama.cpp's `llama-server` serving one GGUF under its built-in Gemma template.

    `--no-jinja` first: Jinja is on by default in this build, and with it `--chat-template
    gemma` is the template *text* "gemma" (every chat prompt would be that word)."""

    def __init__(self, model: Path, work: Path, parallel: int = 1) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        argv = [str(LLAMA_SERVER), "-m", str(model), "--host", "127.0.0.1", "--port",
                str(self.port), "--no-jinja", "--chat-template", "gemma",
                "-c", str(1024 * parallel),
                "-np", str(parallel), "-t", "1", "--no-webui"]
        super().__init__(argv, work / f"llama-server-{self.port}.log",
                         f"http://127.0.0.1:{self.port}/health", ready_s=120)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"


# -- web apps on a loop of their own ---------------------------------------------------
class _WebApp:
    """An aiohttp.web app served on 127.0.0.1 from a daemon thread's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._runner: web.AppRunner | None = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _serve(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def close(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self.call(self._closing())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _closing(self) -> None:
        """Subclasses close their own resources here."""


@dataclass
class Fault:
    """One injected fault, for the next `times` requests."""

    kind: str  # "status" | "drop" | "corrupt" | "hang" | "strip"
    times: int = 1
    status: int = 500
    retry_after: str | None = None
    after: int = 0  # events passed through before a drop or the corrupted one
    seconds: float = 0.0


class FaultProxy(_WebApp):
    """Forwards /v1/* to `upstream` (a server's root URL), injecting armed faults."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.received: list[dict[str, Any]] = []  # bodies as the client sent them
        self.forwarded: list[dict[str, Any]] = []  # bodies as the server got them
        self.header_names: list[set[str]] = []
        self.peers: list[Any] = []  # the client's (host, port) per request: its connection
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.call(self._start(app))

    async def _start(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        await self._serve(app)

    async def _closing(self) -> None:
        if self._session is not None:
            await self._session.close()

    def arm(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def _take(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.pop(0)
            return fault

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        if request.method == "POST":
            self.received.append(body)
            self.header_names.append(set(request.headers))
            transport = request.transport
            self.peers.append(transport.get_extra_info("peername") if transport else None)
        fault = self._take() if request.method == "POST" else None
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return web.json_response({"error": {"message": f"injected {fault.status}"}},
                                     status=fault.status, headers=headers)
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)
        if fault is not None and fault.kind == "strip":
            body = {k: v for k, v in body.items() if k not in CONSTRAINT_FIELDS}
            raw = json.dumps(body).encode()
        if request.method == "POST":
            self.forwarded.append(body)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type")}
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         data=raw or None, headers=headers) as up:
            if up.content_type != "text/event-stream":
                return web.Response(status=up.status, body=await up.read(),
                                    content_type=up.content_type)
            return await self._relay(request, up, fault)

    async def _relay(self, request: web.Request, up: aiohttp.ClientResponse,
                     fault: Fault | None) -> web.StreamResponse:
        response = web.StreamResponse(status=up.status,
                                      headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events, buf = 0, b""
        async for data in up.content.iter_any():
            buf += data.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if fault is not None and fault.kind == "drop" and events == fault.after:
                    assert request.transport is not None
                    request.transport.close()  # mid-stream, without the chunked terminator
                    return response
                if fault is not None and fault.kind == "corrupt" and events == fault.after:
                    event = event.replace(b'"', b"#")  # still `data: ...`, no longer JSON
                try:
                    await response.write(event + b"\n\n")
                except ConnectionResetError:  # the client gave up (a malformed chunk)
                    return response
                events += 1
        await response.write_eof()
        return response


class ReplayServer(_WebApp):
    """Answers every POST with a recorded exchange, after checking its body."""

    def __init__(self, case: dict[str, Any], gap_s: float = 0.002) -> None:
        super().__init__()
        self.case = case
        self.gap_s = gap_s
        self.received: list[dict[str, Any]] = []
        app = web.Application()
        app.router.add_post("/v1/{tail:.*}", self._handle)
        self.call(self._serve(app))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        problem = body_problem(body, self.case)
        if problem is not None:  # the test reads it from the client's error
            return web.json_response({"error": {"message": f"replay: {problem}"}},
                                     status=418)
        answer = self.case["response"]
        if "json" in answer:
            return web.json_response(answer["json"], status=answer.get("status", 200))
        response = web.StreamResponse(status=answer.get("status", 200),
                                      headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in answer["sse"]:
            await response.write(event.encode() + b"\n\n")
            await asyncio.sleep(self.gap_s)
        await response.write_eof()
        return response


def body_problem(body: dict[str, Any], case: dict[str, Any]) -> str | None:
    """Why `body` is not what the recorded exchange expects (None when it is)."""
    request = case["request"]
    for path, expected in request.get("has", {}).items():
        value: Any = body
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return f"the body has no {path}"
            value = value[key]
        if expected is not None and value != expected:
            return f"{path} is {value!r}, expected {expected!r}"
    for key in request.get("lacks", []):
        if key in body:
            return f"the body has {key}, which this dialect does not take"
    return None


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


# -- one server per test process, shared by the test modules -------------------------
_SHARED: dict[str, _Process] = {}


def shared(name: str, start: Any) -> Any:
    """The server called `name`, started once per test process by `start()` and stopped
    when the process ends (the three test modules share it)."""
    server = _SHARED.get(name)
    if server is None or not server.alive():
        server = start()
        _SHARED[name] = server
        import atexit

        atexit.register(server.stop)
    return server


def tiny_lcp_models(weights: Path) -> list[dict[str, Any]]:
    """The tiny random llama served twice: "tiny" with the Gemma chat format (the chat
    API) and "tiny-b" (the same file, another name: a second model to swap to)."""
    common = {"model": str(weights), "n_ctx": 1024, "n_threads": 1, "n_threads_batch": 1,
              "verbose": False, "chat_format": "gemma"}
    return [{**common, "model_alias": "tiny"}, {**common, "model_alias": "tiny-b"}]


def tiny_weights(cache_dir: Path) -> Path:
    """The tiny random llama GGUF (generated, about 0.4 MB) in the test cache."""
    from pytest_vlmbench.models.catalog import WeightSource
    from pytest_vlmbench.models.weights import resolve

    source = WeightSource.parse("generated:llama-tiny", "tests")
    return resolve(source, catalog_dir=cache_dir, cache_dir=cache_dir).path


def ask(user: str = "Tell me about the picture.", *, system: str = "",
        max_tokens: int = 16, constraint: Any = None, images: Any = (),
        stop: tuple[str, ...] = ()) -> Any:
    """A Request as the runner builds one (greedy, seeded, with a progress counter)."""
    from pytest_vlmbench.backends import Progress, Request
    from pytest_vlmbench.tasks import GenerationParams

    return Request(system=system, user=user, images=list(images),
                   params=GenerationParams(max_tokens=max_tokens, stop=stop), seed=7,
                   constraint=constraint, progress=Progress())


def check_timing(response: Any) -> None:
    """The timing invariants every streamed response must hold."""
    chunks = response.chunk_ns
    assert chunks, "a streamed response with no token chunk"
    assert response.t_start_ns <= chunks[0] == response.t_first_token_ns
    assert all(a <= b for a, b in itertools.pairwise(chunks))
    assert chunks[-1] <= response.t_end_ns


# -- a catalog of server-backed models -------------------------------------------------
CATALOG = """
[[server]]
id = "lcp"
kind = "llama-cpp-python"
settings = { n_ctx = 1024, n_threads = 1 }

[[model]]
id = "tiny-a"
backend = "openai"
modality = "text"
chat_format = "gemma"
precisions = { fp32 = "generated:llama-tiny" }
[model.endpoint]
server = "lcp"
api_key_env = "VLMBENCH_TEST_LOAD_KEY"

[[model]]
id = "tiny-b"
backend = "openai"
modality = "text"
chat_format = "completion"
precisions = { fp32 = "generated:llama-tiny@1" }
[model.endpoint]
server = "lcp"
api_key_env = "VLMBENCH_TEST_LOAD_KEY"

[[model]]
id = "elsewhere"
backend = "openai"
modality = "text"
precisions = { bf16 = "remote:served-elsewhere" }
[model.endpoint]
base_url = "BASE_URL"
dialect = "vllm"
headers = { "X-Secret-Header" = "do-not-record" }
"""
LOAD_KEY = "sk-load-canary-9876543210zyxwvuZYXWVU"


def catalog_with(tmp_path: Path, base_url: str = "http://no-such-host.invalid:8080/v1") -> Any:
    """CATALOG in `tmp_path`, loaded; the external entry pointed at `base_url`."""
    from pytest_vlmbench.models.catalog import load_catalog

    path = tmp_path / "models.toml"
    path.write_text(CATALOG.replace("BASE_URL", base_url))
    return load_catalog(path)


def load_context(model_cache: Path, servers: Any) -> Any:
    """A LoadContext on the cpu profile with the session's servers (or None)."""
    from pytest_vlmbench.backends import LoadContext
    from pytest_vlmbench.models.devices import PROFILES

    return LoadContext(device=PROFILES["cpu"], cache_dir=model_cache, servers=servers)


needs_llama_server = pytest.mark.skipif(
    not LLAMA_SERVER.exists(),
    reason=f"llama-server not built at {LLAMA_SERVER} (tools/build_llama_tool.sh llama-server)")
"""For tests that start the real llama-server (tools/install.sh builds it)."""


# -- a client for the test modules (the `lcp` and `proxy` fixtures are in conftest.py)
def client(base_url: str, **fields: Any) -> OpenAIModel:
    fields.setdefault("model", "tiny")
    fields.setdefault("dialect", "llama-cpp-python")
    key = fields.pop("api_key", None)
    server = fields.pop("server", None)
    return OpenAIModel(ClientConfig(base_url=base_url, **fields), api_key=key, server=server)
