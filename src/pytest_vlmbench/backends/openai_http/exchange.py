"""One attempt: POST the body, read the answer (a stream of chunks or one JSON), time it.

Timing follows `vllm bench serve` (vllm/benchmarks/lib/endpoint_request_func.py), with
the differences written in README "OpenAI-compatible servers":
- the clock starts before the POST (`t_start_ns`, set by the caller, retries inside);
- each chunk that carries a token is timed when its bytes were read (one clock read per
  network read, shared by the events in it), not after parsing; `chunk_ns` holds them;
- a chunk carries a token when it has content (or reasoning) text, or an empty text
  with no finish_reason and no role (llama-cpp-python sends one chunk per token, an
  empty one for a token that ends inside a UTF-8 character); the role-only opening
  chunk, the closing finish_reason chunk and the usage chunk carry none (vLLM counts
  every chunk with choices, role chunk included);
- `t_first_token_ns` = the first token chunk (TTFT); the end is when `[DONE]` (or the end
  of the stream) was read.
Output tokens: `usage.completion_tokens` when the server sends usage (we ask with
`stream_options.include_usage`), else the token chunks counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from pytest_vlmbench.backends import Progress
from pytest_vlmbench.backends.openai_http.faults import (
    RequestFailed,
    Retry,
    backoff_s,
    one_line,
    retry_after_s,
    server_message,
)
from pytest_vlmbench.backends.openai_http.sse import SSEError, SSEParser

_DONE = b"[DONE]"
_DRAIN_S = 1.0


class StreamCut(ConnectionError):
    """The stream ended (cleanly, at the HTTP level) with neither `[DONE]` nor a
    finish_reason: the answer was cut short."""


class HTTPStatus(Exception):
    """A non-2xx answer the caller turns into a message (it knows the constraint and
    the key variable)."""

    def __init__(self, status: int, said: str) -> None:
        super().__init__(f"{status}: {said}")
        self.status = status
        self.said = said


@dataclass
class Reply:
    """What one attempt read; filled as the chunks come, so a failure knows how far it got."""

    parts: list[str] = field(default_factory=list)
    chunk_ns: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None  # llama-server's own per-request timings
    done: bool = False  # [DONE] read
    streamed: bool = False  # the answer was an event stream
    t_end_ns: int = 0
    retry_reasons: list[str] = field(default_factory=list)  # of the attempts before it
    status: int | None = None  # the HTTP status, once the answer's headers arrived
    reconnects: int = 0  # stale kept-alive connections resent at once (model._attempts)


def _chunk_into(data: dict[str, Any], reply: Reply, now: int, progress: Progress | None,
                url: str) -> None:
    """One parsed chunk of a stream into `reply`."""
    error = data.get("error")
    if error is not None:  # vLLM and llama-server report a failure mid-stream this way
        said = error.get("message", error) if isinstance(error, dict) else error
        raise RequestFailed(f"server {url} failed mid-stream after {len(reply.chunk_ns)} "
                            f"chunks: {one_line(str(said))}")
    usage = data.get("usage")
    if usage:
        reply.usage = usage
    timings = data.get("timings")
    if timings:
        reply.timings = timings
    choices = data.get("choices")
    if not choices:
        return
    choice = choices[0]
    finish = choice.get("finish_reason")
    if finish:
        reply.finish_reason = finish
    delta = choice.get("delta")
    if delta is None:  # /v1/completions
        piece, role = choice.get("text"), None
    else:
        piece, role = delta.get("content"), delta.get("role")
        if not piece:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:  # a thinking model's token: timed, not part of the answer
                reply.chunk_ns.append(now)
                if progress is not None:
                    progress.tokens = len(reply.chunk_ns)
                return
    if piece:
        reply.parts.append(piece)
    elif piece is None or finish or role:
        return
    reply.chunk_ns.append(now)
    if progress is not None:
        progress.tokens = len(reply.chunk_ns)


async def _read_stream(response: aiohttp.ClientResponse, reply: Reply,
                       progress: Progress | None, url: str) -> None:
    parser = SSEParser()
    content = response.content
    reply.streamed = True
    while True:
        raw = await content.readany()
        now = time.perf_counter_ns()
        try:
            events = parser.feed(raw) if raw else parser.close()
        except SSEError as exc:
            raise RequestFailed(f"malformed SSE chunk from {url}: {str(exc)!r}") from None
        for event in events:
            if event == _DONE:
                reply.done = True
                reply.t_end_ns = now
                await _drain(content)
                return
            try:
                data = orjson.loads(event)
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                text = event[:80].decode("utf-8", "replace")
                raise RequestFailed(f"malformed SSE chunk from {url}: {text!r}")
            _chunk_into(data, reply, now, progress, url)
        if not raw:
            reply.t_end_ns = now
            if reply.finish_reason is None:
                raise StreamCut("the stream ended without [DONE] or a finish_reason")
            return


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read what follows `[DONE]` (the chunked terminator, usually a separate write), so
    the connection goes back to the pool instead of being closed: aiohttp closes a
    connection whose response was not read to its end."""
    if content.at_eof():
        return
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with asyncio.timeout(_DRAIN_S):
            await content.read()


def _read_json(body: bytes, reply: Reply, url: str) -> None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not data.get("choices"):
        raise RequestFailed(f"malformed answer from {url}: "
                            f"{body[:80].decode('utf-8', 'replace')!r}")
    choice = data["choices"][0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    if text:
        reply.parts.append(text)
    reply.finish_reason = choice.get("finish_reason")
    reply.usage = data.get("usage") or None
    reply.timings = data.get("timings") or None


async def attempt(session: aiohttp.ClientSession, url: str, shown_url: str, body: bytes,
                  headers: dict[str, str], reply: Reply, progress: Progress | None,
                  attempt_no: int, constraint_fields: tuple[str, ...] = ()) -> None:
    """POST once and read the answer into `reply`. Raises `Retry` (nothing arrived yet
    and another attempt may cure it), `HTTPStatus` (a 4xx the caller words, or a 5xx
    that names one of `constraint_fields`: llama-cpp-python answers a body it cannot
    validate with 500, which no retry cures), or `RequestFailed`; a dropped connection or
    timeout propagates for the caller to judge by how many chunks arrived."""
    async with session.post(url, data=body, headers=headers) as response:
        status = reply.status = response.status
        if status >= 400:
            said = server_message(await response.read())
            if status == 429:
                wait = retry_after_s(response.headers.get("Retry-After"))
                raise Retry(f"429 rate limited: {said}", wait_s=wait, rate_limited=True)
            if status >= 500 and not any(f in said for f in constraint_fields):
                wait = retry_after_s(response.headers.get("Retry-After"))
                raise Retry(f"{status}: {said}",
                            wait_s=wait if wait is not None else backoff_s(attempt_no))
            raise HTTPStatus(status, said)
        if response.content_type == "text/event-stream":
            await _read_stream(response, reply, progress, shown_url)
        else:  # not streamed (stream = false, or a server that ignored it)
            raw = await response.read()
            reply.t_end_ns = time.perf_counter_ns()
            _read_json(raw, reply, shown_url)
