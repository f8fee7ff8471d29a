"""Faults, not fiction (issue 12, item 6): each one injected by a proxy in front of a real
llama-cpp-python server, or done to a real server (killed, given a key), and what the
client makes of it: a retry counted in the response, or one line naming the endpoint.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.backends.openai_http import OpenAIModel, RequestFailed
from pytest_vlmbench.backends.openai_http.dialects import constraint_for
from pytest_vlmbench.backends.openai_http.faults import (
    RETRY_AFTER_CAP_S,
    redact,
    retry_after_s,
    safe_url,
    server_message,
)
from pytest_vlmbench.backends.openai_http.sse import SSEError, SSEParser
from pytest_vlmbench.tasks import GenerationParams, Task
from tests.fault_proxy import (
    CONSTRAINT_FIELDS,
    Fault,
    FaultProxy,
    LcpServer,
    ask,
    catalog_with,
    check_timing,
    client,
    free_port,
    load_context,
    tiny_lcp_models,
    tiny_weights,
)

CANARY = "sk-canary-0123456789abcdefABCDEF0123456789"
KEY_VAR = "VLMBENCH_TEST_CANARY_KEY"


def generate(model: OpenAIModel, **request: Any) -> Any:
    try:
        return model.generate(ask(**request))
    finally:
        model.close()


def one_line(exc: BaseException, url: str) -> str:
    message = str(exc)
    assert "\n" not in message
    assert url in message
    return message


# -- rate limits and retries ------------------------------------------------------------
def test_429_waits_what_retry_after_says_and_is_counted(proxy: FaultProxy) -> None:
    proxy.arm(Fault("status", times=2, status=429, retry_after="1"))
    response = generate(client(proxy.base_url, retries=2), max_tokens=4)
    assert (response.rate_limited, response.retries) == (2, 2)
    # both waits are inside the latency, which starts before the first attempt
    assert response.t_first_token_ns - response.t_start_ns >= 2_000_000_000
    assert len(proxy.received) == 3
    check_timing(response)


def test_retry_after_as_an_http_date(proxy: FaultProxy) -> None:
    # whole seconds: the date is 3-4 s ahead now, so 2-4 s ahead when the proxy answers
    # (setup takes well under a second); only a lower bound: a slow machine waits longer
    when = email.utils.formatdate(time.time() + 4, usegmt=True)
    proxy.arm(Fault("status", status=429, retry_after=when))
    response = generate(client(proxy.base_url), max_tokens=2)
    assert response.rate_limited == 1
    assert response.t_first_token_ns - response.t_start_ns >= 1_000_000_000


def test_rate_limited_past_the_retries_is_one_line(proxy: FaultProxy) -> None:
    proxy.arm(Fault("status", times=3, status=429, retry_after="0"))
    with pytest.raises(RequestFailed) as caught:
        generate(client(proxy.base_url, retries=2), max_tokens=2)
    message = one_line(caught.value, f"{proxy.base_url}/chat/completions")
    assert "failed after 3 attempts (429 rate limited: injected 429" in message
    assert (caught.value.retries, caught.value.rate_limited) == (2, 3)


def test_a_500_is_retried_after_a_backoff(proxy: FaultProxy) -> None:
    proxy.arm(Fault("status", status=500))
    response = generate(client(proxy.base_url), max_tokens=3)
    assert (response.retries, response.rate_limited) == (1, 0)
    assert response.t_first_token_ns - response.t_start_ns >= 500_000_000  # 0.5 s backoff


def test_an_unreachable_endpoint_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(RequestFailed) as caught:
        generate(client(url, retries=1), max_tokens=2)
    message = one_line(caught.value, f"{url}/chat/completions")
    assert "failed after 2 attempts (ClientConnectorError" in message
    assert time.perf_counter() - t0 >= 0.5  # the backoff before the second attempt


# -- broken streams ----------------------------------------------------------------------
def test_a_connection_dropped_mid_stream_is_not_retried(proxy: FaultProxy) -> None:
    proxy.arm(Fault("drop", after=4))  # the role chunk and three tokens pass
    with pytest.raises(RequestFailed) as caught:
        generate(client(proxy.base_url), max_tokens=20)
    message = one_line(caught.value, f"{proxy.base_url}/chat/completions")
    assert "connection to" in message
    assert "dropped after 3 chunks" in message
    assert len(proxy.received) == 1  # partial content: never sent again


def test_a_connection_dropped_before_content_is_retried(proxy: FaultProxy) -> None:
    proxy.arm(Fault("drop", after=1))  # only the role chunk passed: no token yet
    response = generate(client(proxy.base_url), max_tokens=5)
    assert response.retries == 1
    assert response.completion_tokens == 5
    assert len(proxy.received) == 2


def test_a_malformed_chunk_is_one_line(proxy: FaultProxy) -> None:
    proxy.arm(Fault("corrupt", after=3))
    with pytest.raises(RequestFailed) as caught:
        generate(client(proxy.base_url), max_tokens=10)
    message = one_line(caught.value, f"{proxy.base_url}/chat/completions")
    url = f"{proxy.base_url}/chat/completions"
    assert message.startswith(f"malformed SSE chunk from {url}: '{{#id#")
    assert len(proxy.received) == 1


def test_a_hang_past_the_timeout_is_retried(proxy: FaultProxy) -> None:
    proxy.arm(Fault("hang", seconds=1.5))
    response = generate(client(proxy.base_url, timeout_s=0.5), max_tokens=3)
    assert response.retries == 1
    assert response.t_first_token_ns - response.t_start_ns >= 500_000_000


def test_a_hang_without_retries_left_is_one_line(proxy: FaultProxy) -> None:
    proxy.arm(Fault("hang", seconds=1.5))
    with pytest.raises(RequestFailed) as caught:
        generate(client(proxy.base_url, timeout_s=0.4, retries=0), max_tokens=3)
    message = one_line(caught.value, f"{proxy.base_url}/chat/completions")
    assert "failed after 1 attempt (no answer within 0.4 s (timeout_s)" in message


def test_a_stripped_constraint_is_answered_unconstrained_and_marked(proxy: FaultProxy) -> None:
    """The proxy drops the constraint: the server answers 200 with free text. The response
    still says the request carried a constraint (what the runner needs to call the
    failed check "constraint ignored", not the model's parse failure)."""
    task = Task(name="yes_no", prompt="Is it a dog?", expects_json=True,
                schema={"type": "object", "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"]},
                params=GenerationParams(max_tokens=8))
    proxy.arm(Fault("strip"))
    constraint = constraint_for(task, "llama-cpp-python", "chat")
    response = generate(client(proxy.base_url), max_tokens=8, constraint=constraint)
    assert "response_format" in proxy.received[0]
    assert not set(CONSTRAINT_FIELDS) & set(proxy.forwarded[0])
    assert response.counts == {"constrained": 1}
    assert not task.checker().check(response.text, response.finish_reason).parsed_ok


# -- a managed server that dies -----------------------------------------------------------
@pytest.fixture
def doomed(model_cache: Path, tmp_path: Path) -> Iterator[LcpServer]:
    """A server of its own, to be killed."""
    server = LcpServer(tiny_lcp_models(tiny_weights(model_cache))[:1], tmp_path)
    yield server
    server.stop()


def test_a_dead_server_is_named_with_its_exit_reason(doomed: LcpServer) -> None:
    model = client(doomed.base_url, server=doomed, retries=2)
    try:
        assert model.generate(ask(max_tokens=2)).completion_tokens == 2
        doomed.kill()
        for _ in range(3):  # every remaining request: at once, no retries, the cause
            with pytest.raises(RequestFailed) as caught:
                model.generate(ask(max_tokens=2))
            assert str(caught.value) == doomed.exit_reason()
            assert "exited with code -9" in str(caught.value)
            assert caught.value.retries == 0
    finally:
        model.close()


def test_a_server_dying_mid_stream_is_named(doomed: LcpServer) -> None:
    model = client(doomed.base_url, server=doomed)
    killer = threading.Timer(0.5, doomed.kill)
    killer.start()
    try:
        with pytest.raises(RequestFailed) as caught:
            model.generate(ask(max_tokens=900))  # about 3.5 s on one core
    finally:
        killer.join()
        model.close()
    assert str(caught.value) == doomed.exit_reason()


# -- the API key --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LcpServer]:
    server = LcpServer(tiny_lcp_models(tiny_weights(model_cache))[:1],
                       tmp_path_factory.mktemp("keyed"), api_key=CANARY)
    yield server
    server.stop()


def test_the_key_is_sent_and_never_shown(keyed: LcpServer, caplog: pytest.LogCaptureFixture,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{keyed.base_url}/chat/completions"
    seen: list[str] = []
    with_key = client(keyed.base_url, api_key=CANARY, api_key_env=KEY_VAR)
    seen.append(json.dumps(with_key.settings))
    response = generate(with_key, max_tokens=3)
    assert response.completion_tokens == 3
    for key, fix in ((None, f"${KEY_VAR} is empty"), ("sk-wrong-key", f"check the key in "
                                                      f"${KEY_VAR}")):
        model = client(keyed.base_url, api_key=key, api_key_env=KEY_VAR)
        seen.append(json.dumps(model.settings))
        with pytest.raises(RequestFailed) as caught:
            generate(model, max_tokens=3)
        message = one_line(caught.value, url)
        assert f"refused the request (401): {fix}" in message
        seen.append(message)
    out, err = capsys.readouterr()
    seen += [out, err, caplog.text, keyed.log_path.read_text()]
    for text in seen:
        assert CANARY not in text
        assert CANARY[:12] not in text
        assert CANARY[-12:] not in text


def test_a_key_echoed_by_the_server_is_masked() -> None:
    said = f"Incorrect API key provided: {CANARY[:8]}*****{CANARY[-6:]}. See the docs."
    masked = redact(said, CANARY)
    assert CANARY[:8] not in masked
    assert CANARY[-6:] not in masked
    assert masked.startswith("Incorrect API key provided: [redacted]")
    assert redact(f"key={CANARY}", CANARY) == "key=[redacted]"


def test_an_unset_key_variable_is_one_line(model_cache: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_vlmbench.backends import BackendError
    from pytest_vlmbench.backends.openai_http import OpenAIBackend

    monkeypatch.delenv("VLMBENCH_TEST_LOAD_KEY", raising=False)
    with pytest.raises(BackendError) as caught:
        OpenAIBackend().load(catalog_with(tmp_path).get("tiny-a"), "fp32",
                             load_context(model_cache, None))
    assert str(caught.value) == (
        "model 'tiny-a': its [model.endpoint] api_key_env names VLMBENCH_TEST_LOAD_KEY, "
        "which is not set in the environment (export VLMBENCH_TEST_LOAD_KEY=...)")


def test_an_external_endpoint_that_cannot_be_reached_is_one_line(model_cache: Path,
                                                                 tmp_path: Path) -> None:
    from pytest_vlmbench.backends import BackendError
    from pytest_vlmbench.backends.openai_http import OpenAIBackend
    for url, why in (("http://no-such-host.invalid:8080/v1", "name resolution failed"),
                     (f"http://127.0.0.1:{free_port()}/v1", "connection failed")):
        with pytest.raises(BackendError) as caught:
            OpenAIBackend().load(catalog_with(tmp_path, url).get("elsewhere"), "bf16",
                                 load_context(model_cache, None))
        assert str(caught.value).startswith(f"cannot reach {url}: {why} (")
        assert "\n" not in str(caught.value)


# -- the SSE parser: a corrupted stream is caught, a split one is not ---------------
def test_sse_events_lines_comments_and_fields() -> None:
    p = SSEParser()
    assert p.feed(b": ping - 2024\r\n\r\nevent: message\r\nid: 3\r\ndata: {\"a\"") == []
    assert p.feed(b": 1}\r") == []
    assert p.feed(b"\n\r\n") == [b'{"a": 1}']
    assert p.feed(b"data:x\ndata: y\n\n") == [b"x\ny"]
    assert p.feed(b"data: [DONE]") == []
    assert p.close() == [b"[DONE]"]


def test_sse_refuses_a_line_that_is_no_field() -> None:
    with pytest.raises(SSEError, match="dXta"):
        SSEParser().feed(b'data: {"a": 1}\n\ndXta: {"b": 2}\n\n')


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), max_size=12),
       st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_sse_gives_the_same_events_however_the_bytes_are_split(cuts: list[int],
                                                               newline: bytes) -> None:
    events = [b'{"choices":[{"delta":{"content":"w%d"}}]}' % i for i in range(6)]
    stream = b"".join(b": keep-alive" + newline + b"data: " + e + newline + newline
                      for e in events) + b"data: [DONE]" + newline + newline
    p, out, at = SSEParser(), [], 0
    for cut in sorted(set(cuts)):
        out += p.feed(stream[at:cut])
        at = max(at, cut)
    out += p.feed(stream[at:]) + p.close()
    assert out == [*events, b"[DONE]"]


# -- the pieces -----------------------------------------------------------------------
def test_retry_after_values() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_s(date, now=now) == pytest.approx(7, abs=1)
    assert retry_after_s("3") == 3.0
    assert retry_after_s("100000") == RETRY_AFTER_CAP_S
    assert retry_after_s("-5") == 0.0
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert retry_after_s(past, now=now) == 0.0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


def test_server_messages_in_their_shapes() -> None:
    assert server_message(b'{"error": {"message": "bad  schema", "code": 400}}') == "bad schema"
    assert server_message(b'{"object": "error", "message": "vllm says"}') == "vllm says"
    assert server_message(b'{"detail": [{"msg": "x"}]}') == '[{"msg":"x"}]'
    assert server_message(b'{"error": "model not found"}') == "model not found"
    assert server_message(b"<html>502 Bad Gateway</html>") == "<html>502 Bad Gateway</html>"
    assert len(server_message(b"x" * 1000)) == 300


def test_urls_are_shown_without_credentials() -> None:
    assert safe_url("https://user:pw@router.example.com:8443/v1?key=abc#f") == \
        "https://router.example.com:8443/v1"
