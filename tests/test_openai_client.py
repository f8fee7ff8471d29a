"""The OpenAI-compatible client against real servers on loopback: what it sends, how it
times and counts what comes back, and how it loads from the catalog.

Servers: llama-cpp-python's own server (`python -m llama_cpp.server`) with the tiny random
GGUF, started once per test process (tests/fault_proxy.py); llama.cpp's llama-server when
tools/build_llama_tool.sh has built it (skipped otherwise, with the reason).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends.openai_http import ClientConfig, OpenAIModel
from pytest_vlmbench.backends.openai_http.body import ImageURLs, completion_prompt, gemma_prompt
from pytest_vlmbench.datasets import PreparedImage
from tests.fault_proxy import (
    LOAD_KEY,
    FaultProxy,
    LcpServer,
    LlamaServer,
    ReplayServer,
    ask,
    catalog_with,
    check_timing,
    client,
    load_context,
    needs_llama_server,
)


# -- streaming against llama-cpp-python's server -------------------------------------
def test_streamed_chat_is_timed_chunk_by_chunk(lcp: LcpServer) -> None:
    model = client(lcp.base_url)
    try:
        request = ask(max_tokens=24)
        response = model.generate(request)
    finally:
        model.close()
    check_timing(response)
    assert response.finish_reason == "length"
    # llama-cpp-python's server sends no usage in a stream: one chunk per token, counted.
    assert response.tokens_source == "counted"
    assert response.completion_tokens == len(response.chunk_ns) == 24
    assert request.progress.tokens == 24
    assert response.retries == response.rate_limited == 0
    assert response.counts == {}  # no constraint sent


def test_counted_tokens_agree_with_the_servers_usage(lcp: LcpServer) -> None:
    """The same greedy request streamed (chunks counted) and not streamed (usage): the
    count is the server's own, and the text is the same."""
    streamed, plain = client(lcp.base_url), client(lcp.base_url, stream=False)
    try:
        a = streamed.generate(ask(max_tokens=20))
        b = plain.generate(ask(max_tokens=20))
    finally:
        streamed.close()
        plain.close()
    assert b.tokens_source == "usage"
    assert b.completion_tokens == a.completion_tokens == 20
    assert a.text == b.text
    assert b.chunk_ns == []
    assert b.t_first_token_ns is None
    assert b.prompt_tokens is not None
    assert b.prompt_tokens > 0
    assert b.t_start_ns < b.t_end_ns


def test_completion_format_uses_the_completions_api(proxy: FaultProxy) -> None:
    model = client(proxy.base_url, chat_format="completion")
    try:
        response = model.generate(ask("Describe it.", system="Be brief.", max_tokens=8))
    finally:
        model.close()
    check_timing(response)
    sent = proxy.forwarded[-1]
    assert sent["prompt"] == "Be brief.\n\nDescribe it."
    assert "messages" not in sent
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (8, 0.0, 7)
    assert response.completion_tokens == 8


def test_connections_are_kept_alive(proxy: FaultProxy) -> None:
    """After [DONE] the client reads the stream to its end, so the connection goes back
    to the pool (aiohttp closes one whose response was not read to the end)."""
    model = client(proxy.base_url)
    try:
        for _ in range(3):
            model.generate(ask(max_tokens=3))
    finally:
        model.close()
    assert len(set(proxy.peers)) == 1


def test_gemma_chat_folds_the_system_text_into_the_user_turn(proxy: FaultProxy) -> None:
    model = client(proxy.base_url, chat_format="gemma")
    try:
        model.generate(ask("Describe it.", system="Be brief.", max_tokens=2))
    finally:
        model.close()
    assert proxy.forwarded[-1]["messages"] == [
        {"role": "user", "content": "Be brief.\n\nDescribe it."}]


def test_gemma_prompt_is_the_in_process_template() -> None:
    """/v1/completions with chat_format gemma sends the text the in-process backend
    renders from models/chat_template.py."""
    import jinja2.sandbox

    from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(GEMMA_CHAT_TEMPLATE)
    for system, user in (("", "Hi there. "), ("Be brief.", "Describe\nit.")):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        assert gemma_prompt(system, user) == template.render(
            messages=messages, add_generation_prompt=True)
    assert completion_prompt("completion", "", "x") == "x"


def test_concurrent_requests_share_one_loop(lcp: LcpServer) -> None:
    model = client(lcp.base_url)

    async def four() -> list[Any]:
        return list(await asyncio.gather(*(model.agenerate(ask(max_tokens=6 + i))
                                           for i in range(4))))

    try:
        responses = model.run_async(four())
    finally:
        model.close()
    assert [r.completion_tokens for r in responses] == [6, 7, 8, 9]
    for response in responses:
        check_timing(response)
    assert model.capabilities.asynchronous
    assert model.capabilities.concurrency > 1


def test_a_swap_between_served_models_is_a_cold_request(lcp: LcpServer) -> None:
    """Two names on one llama-cpp-python server: the manager says a switch happened."""

    class Manager:
        def __init__(self) -> None:
            self.last: dict[str, str] = {}

        def note_served(self, base_url: str, name: str) -> bool:
            switched = self.last.get(base_url, name) != name
            self.last[base_url] = name
            return switched

    manager = Manager()
    a = OpenAIModel(ClientConfig(base_url=lcp.base_url, model="tiny",
                                 dialect="llama-cpp-python", swaps=True), servers=manager)
    b = OpenAIModel(ClientConfig(base_url=lcp.base_url, model="tiny-b",
                                 dialect="llama-cpp-python", swaps=True), servers=manager)
    fixed = OpenAIModel(ClientConfig(base_url=lcp.base_url, model="tiny",
                                     dialect="llama-cpp-python"), servers=manager)
    try:
        a.generate(ask(max_tokens=2))
        assert not a.cold_pending
        b.generate(ask(max_tokens=2))
        assert b.cold_pending
        fixed.generate(ask(max_tokens=2))  # a switch, on an endpoint that does not swap
        assert not fixed.cold_pending
    finally:
        a.close()
        b.close()
        fixed.close()


def test_ctrl_c_cancels_the_request_and_the_model_stays_usable(lcp: LcpServer) -> None:
    import os
    import signal
    import threading

    model = client(lcp.base_url)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            model.generate(ask(max_tokens=900))  # about 3.5 s on one core
        assert model.generate(ask(max_tokens=3)).completion_tokens == 3
    finally:
        timer.join()
        model.close()


# -- images -------------------------------------------------------------------------
def _image(colour: tuple[int, int, int]) -> PreparedImage:
    import hashlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, "JPEG")
    data = buf.getvalue()
    return PreparedImage(jpeg=data, sha256=hashlib.sha256(data).hexdigest(), width=32,
                         height=24, source="test.png")


def test_images_go_first_as_data_urls_of_the_prepared_jpeg() -> None:
    case = {"request": {"has": {"messages": None}},
            "response": {"sse": ['data: {"choices":[{"index":0,"delta":{"content":"ok"},'
                                 '"finish_reason":"stop"}]}', "data: [DONE]"]}}
    server = ReplayServer(case)
    model = client(server.base_url, vision=True, dialect="vllm")
    image = _image((200, 30, 30))
    try:
        response = model.generate(ask("What is it?", images=[image]))
    finally:
        model.close()
        server.close()
    content = server.received[0]["messages"][0]["content"]
    assert content[0] == {"type": "image_url", "image_url": {"url": image.data_url()}}
    assert content[1] == {"type": "text", "text": "What is it?"}
    assert response.text == "ok"
    assert response.tokens_source == "counted"


def test_image_urls_are_encoded_once_per_image() -> None:
    urls = ImageURLs(limit=2)
    a, b, c = _image((1, 2, 3)), _image((9, 9, 9)), _image((50, 60, 70))
    first = urls.url(a)
    assert urls.url(a) is first
    urls.url(b)
    urls.url(c)  # a falls out (limit 2)
    assert urls.url(a) is not first
    assert urls.url(a) == first


def test_a_text_model_refuses_images(lcp: LcpServer) -> None:
    from pytest_vlmbench.backends import BackendError

    model = client(lcp.base_url)
    try:
        with pytest.raises(BackendError, match="text model"):
            model.generate(ask(images=[_image((0, 0, 0))]))
    finally:
        model.close()


# -- llama.cpp's llama-server ----------------------------------------------------------
@needs_llama_server
def test_llama_server_usage_timings_and_chunks(llama_server: LlamaServer) -> None:
    model = client(llama_server.base_url, dialect="llama-server")
    try:
        response = model.generate(ask(max_tokens=20))
    finally:
        model.close()
    check_timing(response)
    assert response.tokens_source == "usage"
    assert response.prompt_tokens
    # llama-server sends one chunk per token; stopped by the length limit, every sampled
    # token is a chunk (an end-of-generation token, when it stops itself, is not).
    assert response.finish_reason == "length"
    assert response.completion_tokens == len(response.chunk_ns) == 20
    assert set(response.stages_ns) <= {"server_prefill", "server_decode"}
    assert response.counts.get("server_predicted_tokens") == 20
    latency = response.t_end_ns - response.t_start_ns
    assert sum(response.stages_ns.values()) <= latency


@needs_llama_server
def test_llama_server_chat_renders_the_gemma_prompt(llama_server: LlamaServer) -> None:
    """The chat API (the server's Gemma template, system folded in by the client) and the
    completions API (the client's rendering of the in-process template) evaluate the same
    prompt: same prompt tokens, same greedy text."""
    chat = client(llama_server.base_url, dialect="llama-server", chat_format="gemma")
    raw = client(llama_server.base_url, dialect="llama-server", chat_format="gemma",
                 api="completions")
    try:
        a = chat.generate(ask("Is it a dog?", system="Be brief.", max_tokens=8))
        b = raw.generate(ask("Is it a dog?", system="Be brief.", max_tokens=8))
    finally:
        chat.close()
        raw.close()
    assert a.prompt_tokens == b.prompt_tokens
    assert a.prompt_tokens is not None
    assert a.prompt_tokens > 20  # the turn markers are there, not a bare word
    assert a.text == b.text


# -- loading from the catalog ---------------------------------------------------------
def test_load_a_managed_server_model_and_swap(model_cache: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog's managed llama-cpp-python server serves both models: the first load
    starts it (the load time is its cold start), the second finds it running and is a
    swap, so its first request is cold."""
    import json

    from pytest_vlmbench.backends.openai_http import OpenAIBackend
    from pytest_vlmbench.servers import ServerManager

    monkeypatch.setenv("VLMBENCH_TEST_LOAD_KEY", LOAD_KEY)
    catalog, manager = catalog_with(tmp_path), ServerManager(tmp_path / "logs", model_cache)
    ctx, backend = load_context(model_cache, manager), OpenAIBackend()
    try:
        a = backend.load(catalog.get("tiny-a"), "fp32", ctx)
        try:
            assert a.settings["server_started"]
            assert not a.cold_pending
            assert a.timings_ns["load"] >= a.settings["server_cold_start_s"] * 1e9
            assert a.settings["served_model"] == "tiny-a-fp32"
            check_timing(a.generate(ask(max_tokens=4)))
            texts = [json.dumps(a.settings), json.dumps(a.artifacts)]
        finally:
            a.close()
        b = backend.load(catalog.get("tiny-b"), "fp32", ctx)
        try:
            assert not b.settings["server_started"]
            assert b.cold_pending
            assert b.settings["api"] == "completions"  # chat_format "completion"
            assert b.timings_ns["load"] < 1e9
            check_timing(b.generate(ask(max_tokens=4)))
            texts.append(json.dumps(b.settings))
        finally:
            b.close()
        assert manager.get("lcp") is not None  # a swapping server outlives its models
    finally:
        manager.close()
    texts += [p.read_text() for p in (tmp_path / "logs").iterdir()]
    assert all(LOAD_KEY not in text for text in texts)


def test_an_external_endpoint_is_probed_and_recorded_without_secrets(
        model_cache: Path, tmp_path: Path) -> None:
    import json

    from pytest_vlmbench.backends.openai_http import OpenAIBackend

    case: dict[str, Any] = {"request": {"has": {}}, "response": {"json": {}}}
    server = ReplayServer(case)  # answers POSTs; GET /models is a 404: no list, no error
    try:
        model = OpenAIBackend().load(catalog_with(tmp_path, server.base_url).get("elsewhere"),
                                     "bf16", load_context(model_cache, None))
        model.close()
    finally:
        server.close()
    settings = json.dumps(model.settings)
    assert model.settings["served_model"] == "served-elsewhere"
    assert model.settings["header_names"] == ["X-Secret-Header"]
    assert "do-not-record" not in settings
    assert model.settings["models_listed"] is None
    assert not model.cold_pending  # an external server that does not swap


@needs_llama_server
def test_a_managed_llama_server_goes_with_its_model(model_cache: Path, tmp_path: Path) -> None:
    """llama-server holds one model: closing the model stops it (it would keep the
    model's memory while the next test's model loads)."""
    from pytest_vlmbench.backends.openai_http import OpenAIBackend
    from pytest_vlmbench.models.catalog import load_catalog
    from pytest_vlmbench.servers import ServerManager

    path = tmp_path / "models.toml"
    path.write_text("""
[[server]]
id = "ls"
kind = "llama-server"
settings = { n_ctx = 512, n_threads = 1 }

[[model]]
id = "tiny-ls"
backend = "openai"
modality = "text"
chat_format = "completion"
precisions = { fp32 = "generated:llama-tiny" }
[model.endpoint]
server = "ls"
""")
    manager = ServerManager(tmp_path / "logs", model_cache)
    try:
        model = OpenAIBackend().load(load_catalog(path).get("tiny-ls"), "fp32",
                                     load_context(model_cache, manager))
        try:
            assert model.settings["server_kind"] == "llama-server"
            assert model.capabilities.grammar
            assert model.capabilities.stages == ("server_prefill", "server_decode")
            response = model.generate(ask(max_tokens=6))
            check_timing(response)
            assert response.tokens_source == "usage"
            assert response.completion_tokens == 6
        finally:
            model.close()
        assert manager.get("ls") is None
    finally:
        manager.close()
