"""A model behind an OpenAI-compatible endpoint, served through aiohttp on a private loop.

The model owns an `asyncio.Runner` (its event loop) and one `aiohttp.ClientSession`
created on it (kept-alive connections, no pool limit: the load patterns decide the
concurrency). `agenerate` is the request; `generate` and `run_async` run coroutines on
the model's loop, so a load driver can await many `agenerate` calls at once on it.
Ctrl-C while a request runs cancels it (the Runner's SIGINT handling) and raises
KeyboardInterrupt in the caller.

Faults (faults.py): retries before any content only; a 429 waits Retry-After; a managed
server that died is said with its exit reason, not retried; a 400/422 on a constrained
request is `ConstraintRejected`; 401/403 name the key's variable, never the key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from pytest_vlmbench.backends import (
    BackendError,
    Capabilities,
    Request,
    Response,
    refuse_images,
)
from pytest_vlmbench.backends.openai_http import body as bodies
from pytest_vlmbench.backends.openai_http.config import ClientConfig
from pytest_vlmbench.backends.openai_http.dialects import (
    Constraint,
    constraint_for,
    ignored_params,
    params_not_sent,
    supports_grammar,
    supports_schema,
)
from pytest_vlmbench.backends.openai_http.exchange import HTTPStatus, Reply, attempt
from pytest_vlmbench.backends.openai_http.faults import (
    ConstraintRejected,
    RequestFailed,
    Retry,
    auth_failure,
    backoff_s,
    one_line,
    redact,
    safe_url,
    server_message,
    unreachable,
)
from pytest_vlmbench.tasks import Task

T = TypeVar("T")

# Connection failures a new attempt may cure when nothing arrived yet.
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
MAX_RECONNECTS = 2  # stale kept-alive connections resent at once, per request
# A 400/422 to a constrained request is the constraint's fault only when the server's
# words are about it (an oversized image or prompt is not the dialect's fault).
_CONSTRAINT_WORDS = ("schema", "grammar", "format", "structured", "guided", "json")


def _stale(exc: BaseException, reply: Reply) -> bool:
    """A pooled connection the server had closed: the write failed or the server hung up
    before any answer. A refused connection is not one (nothing listens: a retry's job)."""
    if reply.status is not None or reply.chunk_ns:
        return False
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    return isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
# llama-server's per-request `timings`, as stages and counts of the response: the
# server's own clock (its prompt evaluation and its generation loop, sampling included).
SERVER_STAGES = ("server_prefill", "server_decode")
SERVER_COUNTS = ("server_prompt_tokens", "server_predicted_tokens", "server_cached_tokens")


class OpenAIModel:
    """A served model: `generate`/`agenerate` send requests, `close` ends the session."""

    def __init__(self, config: ClientConfig, *, api_key: str | None = None,
                 server: Any = None, servers: Any = None,
                 timings_ns: dict[str, int] | None = None,
                 settings: dict[str, Any] | None = None,
                 artifacts: list[dict[str, Any]] | None = None,
                 cold_pending: bool = False) -> None:
        problem = config.problem()
        if problem is not None:
            raise RequestFailed(f"model {config.label or config.model!r}: {problem}")
        self.config = config
        self._key = api_key or None
        self._server = server  # a managed RunningServer: asked why, when it is gone
        self._servers = servers  # the session's ServerManager: which model it served last
        self._urls = bodies.ImageURLs()
        self._headers = {"Content-Type": "application/json", **config.headers}
        if self._key is not None:
            self._headers["Authorization"] = f"Bearer {self._key}"
        self.cold_pending = cold_pending
        self.timings_ns = timings_ns or {"resolve": 0, "load": 0}
        self.artifacts = artifacts or []
        self.capabilities = Capabilities(
            streaming=config.stream, images=config.vision,
            max_images=config.max_images if config.vision else None,
            grammar=supports_grammar(config.dialect),
            json_schema=supports_schema(config.dialect, config.effective_api),
            batch=False, concurrency=1024, asynchronous=True,
            stages=SERVER_STAGES if config.dialect == "llama-server" else (),
            counts=("constrained", "reconnects") + (
                SERVER_COUNTS if config.dialect == "llama-server" else ()),
        )
        self.settings: dict[str, Any] = {
            **config.to_settings(),
            "params_not_sent": params_not_sent(config.dialect),
            **(settings or {}),
        }
        self.warnings: list[str] = []
        self._on_close: list[Callable[[], None]] = []
        self._runner = asyncio.Runner()
        self._session: aiohttp.ClientSession | None = None
        self._runner.run(self._open())

    async def _open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent",), headers={"User-Agent": "pytest-vlmbench"},
        )

    # -- the LoadedModel protocol --------------------------------------------------
    def prepare(self, task: Task) -> Constraint | None:
        """The task's constraint in this server's dialect (ConstraintError when it has
        none for it); a not-applied sampling parameter becomes a warning."""
        ignored = ignored_params(self.config.dialect, task.params)
        if ignored:
            self.warnings.append(
                f"task {task.name!r}: {', '.join(ignored)} not sent to the "
                f"{self.config.dialect} server (it has no such field); its default applies")
        return constraint_for(task, self.config.dialect, self.config.effective_api)

    def generate(self, request: Request) -> Response:
        return self.run_async(self.agenerate(request))

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the model's loop (where its connections live) until it ends."""
        return self._runner.run(coro)

    def server_usage(self) -> dict[str, Any] | None:
        """The managed server's process tree now (RSS, its peak, CPU seconds), which the
        runner reads around the measured requests: the client's own RSS says nothing of
        the server's. None for a server elsewhere: its memory is not ours to read."""
        if self._server is None or not self._alive():
            return None  # gone: its counters are absent, not zero
        return dict(self._server.usage().to_json())

    def server_died(self) -> str | None:
        """Why the managed server exited on its own (its exit reason), None while it runs,
        for a server elsewhere, or for one the session stopped: a benchmark whose server
        died says so instead of passing on the requests sent before."""
        died = getattr(self._server, "died_reason", None)  # a RunningServer's
        reason = died() if died is not None else None
        return None if reason is None else str(reason)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` after the session closes (the backend stops a single-model
        managed server with the model: it would hold its memory after the test)."""
        self._on_close.append(callback)

    def close(self) -> None:
        """Close the connections and the loop, then what `on_close` registered."""
        try:
            if self._session is not None and not self._session.closed:
                self._runner.run(self._session.close())
            self._runner.close()
        finally:
            callbacks, self._on_close = self._on_close, []
            for callback in callbacks:
                callback()

    async def probe(self, timeout_s: float) -> list[str] | None:
        """GET {base_url}/models once: an endpoint that cannot be reached is one line
        now. Returns the model names it lists (None when it lists none: not every
        server has the route)."""
        config, url = self.config, safe_url(self.config.base_url)
        assert self._session is not None
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.get(config.at("/models"),
                                             headers=headers) as answer:
                    status, raw = answer.status, await answer.read()
        except TimeoutError:
            raise BackendError(f"cannot reach {url}: no answer within {timeout_s:g} s") \
                from None
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendError(f"cannot reach {url}: {unreachable(exc)}") from None
        if status in (401, 403):
            said = redact(server_message(raw), self._key)
            raise BackendError(auth_failure(status, url + "/models", config.api_key_env,
                                            self._key is not None, said))
        names = _model_names(raw) if status == 200 else None
        if names and config.model not in names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            self.warnings.append(f"{url} does not list model {config.model!r} among its "
                                 f"{len(names)} models ({shown})")
        return names

    # -- one request ---------------------------------------------------------------
    async def agenerate(self, request: Request) -> Response:
        """Send `request`; its body (images included) is built before the clock starts."""
        config = self.config
        try:
            refuse_images(config.label or config.model, len(request.images), self.capabilities)
        except BackendError as exc:  # before anything is sent: no retry, no record of one
            raise RequestFailed(str(exc)) from None
        payload = bodies.build(config, request, self._urls)
        constrained = isinstance(request.constraint, Constraint)
        self._note_served()
        t_start = time.perf_counter_ns()
        reply, retries, rate_limited = await self._attempts(payload, request)
        return self._response(reply, t_start, retries, rate_limited, constrained)

    def _note_served(self) -> None:
        """Tell the server manager which model this server now serves (the cold/warm
        split: on a server that swaps, a switch makes the next request pay a load). A
        server that does not swap is never cold: its first request noted here (nothing
        was known of an external server yet) is no switch."""
        note = getattr(self._servers, "note_served", None)
        if note is not None and note(self.config.base_url, self.config.model) \
                and self.config.swaps:
            self.cold_pending = True

    async def _attempts(self, payload: bytes, request: Request) -> tuple[Reply, int, int]:
        config, retries, rate_limited = self.config, 0, 0
        reasons: list[str] = []  # why each retry was made, kept in the record
        reconnects = 0
        constraint = request.constraint
        fields = tuple(constraint.fields) if isinstance(constraint, Constraint) else ()
        assert self._session is not None
        while True:
            reply = Reply()
            if request.progress is not None:
                request.progress.tokens = 0
            try:
                async with asyncio.timeout(config.timeout_s):
                    await attempt(self._session, config.url, config.shown_url, payload,
                                  self._headers, reply, request.progress, retries, fields)
                reply.retry_reasons, reply.reconnects = reasons, reconnects
                return reply, retries, rate_limited
            except Retry as retry:
                rate_limited += retry.rate_limited
                reason, wait = retry.reason, retry.wait_s
            except HTTPStatus as exc:
                raise self._status_error(exc, fields, retries, rate_limited) from None
            except RequestFailed as exc:  # malformed chunk, an error event mid-stream
                raise self._failed(str(exc), retries, rate_limited) from None
            except TimeoutError:
                if reply.chunk_ns:
                    raise self._failed(
                        f"no end from {config.shown_url} within {config.timeout_s:g} s "
                        f"(timeout_s) after {len(reply.chunk_ns)} chunks", retries,
                        rate_limited) from None
                reason, wait = f"no answer within {config.timeout_s:g} s (timeout_s)", None
            except _CONNECTION_ERRORS as exc:
                if _stale(exc, reply) and reconnects < MAX_RECONNECTS and self._alive():
                    # A kept-alive connection the server had closed (llama-server does
                    # so after a stream): nothing was sent to the model, so the request
                    # is resent at once on a new connection, counted apart from retries
                    # (a dead server then refuses the connection, judged below).
                    reconnects += 1
                    continue
                dead = await self._server_gone()
                if dead is not None:
                    raise self._failed(dead, retries, rate_limited) from None
                what = one_line(f"{type(exc).__name__}: {exc}" if str(exc)
                                else type(exc).__name__, 160)
                if reply.chunk_ns:
                    raise self._failed(
                        f"connection to {config.shown_url} dropped after "
                        f"{len(reply.chunk_ns)} chunks ({what})", retries, rate_limited
                    ) from None
                reason, wait = what, None
            if retries >= config.retries:
                tries = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
                raise self._failed(f"{config.shown_url} failed after {tries} ({reason}; "
                                   "retries in [model.endpoint])", retries, rate_limited)
            reasons.append(redact(reason, self._key))  # server text may echo the key
            await asyncio.sleep(wait if wait is not None else backoff_s(retries))
            retries += 1

    def _alive(self) -> bool:
        """The managed server still runs (an external one is taken to)."""
        server = self._server
        return server is None or not hasattr(server, "alive") or bool(server.alive())

    async def _server_gone(self) -> str | None:
        """The managed server's exit reason when it is no longer running (it gets up to
        a second to be reaped: a refused connection can come before the exit status)."""
        server = self._server
        if server is None or not hasattr(server, "alive"):
            return None
        for _ in range(20):
            if not server.alive():
                reason = server.exit_reason() if hasattr(server, "exit_reason") else None
                return str(reason or f"the managed server behind {self.config.shown_url} "
                           "is not running")
            await asyncio.sleep(0.05)
        return None

    def _failed(self, message: str, retries: int, rate_limited: int) -> RequestFailed:
        return RequestFailed(redact(message, self._key), retries=retries,
                             rate_limited=rate_limited)

    def _status_error(self, exc: HTTPStatus, fields: tuple[str, ...], retries: int,
                      rate_limited: int) -> RequestFailed:
        config, said = self.config, redact(exc.said, self._key)
        if exc.status in (401, 403):
            return self._failed(auth_failure(exc.status, config.shown_url, config.api_key_env,
                                             self._key is not None, said),
                                retries, rate_limited)
        about_constraint = any(f in said for f in fields) or any(
            word in said.lower() for word in _CONSTRAINT_WORDS)
        if fields and (exc.status >= 500 or (exc.status in (400, 422) and about_constraint
                                              and "context" not in said.lower())):
            return ConstraintRejected(
                f"server {config.shown_url} (dialect {config.dialect}) rejected the "
                f"constraint ({exc.status}): {said}; check [model.endpoint] dialect",
                retries=retries, rate_limited=rate_limited)
        return self._failed(f"server {config.shown_url} answered {exc.status}: {said}",
                            retries, rate_limited)

    def _response(self, reply: Reply, t_start: int, retries: int, rate_limited: int,
                  constrained: bool) -> Response:
        usage = reply.usage or {}
        completion = usage.get("completion_tokens")
        if isinstance(completion, int):
            tokens: int | None = completion
            source: str | None = "usage"
        elif reply.streamed:
            tokens, source = len(reply.chunk_ns), "counted"
        else:
            tokens, source = None, None
        prompt = usage.get("prompt_tokens")
        counts = {"constrained": 1} if constrained else {}
        if reply.reconnects:
            counts["reconnects"] = reply.reconnects
        stages: dict[str, int] = {}
        timings = reply.timings
        if timings and self.config.dialect == "llama-server":
            stages, server_counts = _server_timings(timings)
            counts.update(server_counts)
        return Response(
            text="".join(reply.parts), finish_reason=reply.finish_reason,
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            completion_tokens=tokens, t_start_ns=t_start,
            t_first_token_ns=reply.chunk_ns[0] if reply.chunk_ns else None,
            t_end_ns=reply.t_end_ns, stages_ns=stages, counts=counts,
            chunk_ns=reply.chunk_ns, tokens_source=source, retries=retries,
            ttft_source="stream" if reply.chunk_ns else None,
            rate_limited=rate_limited, retry_reasons=reply.retry_reasons,
        )


def _server_timings(timings: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """llama-server's `timings` (prompt_ms, predicted_ms, prompt_n, predicted_n,
    cache_n) as stages (ns) and counts; absent fields are left out."""
    stages, counts = {}, {}
    for key, name in (("prompt_ms", "server_prefill"), ("predicted_ms", "server_decode")):
        value = timings.get(key)
        if isinstance(value, (int, float)) and value >= 0:
            stages[name] = int(value * 1e6)
    for key, name in (("prompt_n", "server_prompt_tokens"),
                      ("predicted_n", "server_predicted_tokens"),
                      ("cache_n", "server_cached_tokens")):
        value = timings.get(key)
        if isinstance(value, int) and value >= 0:
            counts[name] = value
    return stages, counts


def _model_names(raw: bytes) -> list[str] | None:
    """The ids of an OpenAI `/models` answer ({"data": [{"id": ...}]})."""
    import orjson

    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    listed = data.get("data") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return None
    return [str(m["id"]) for m in listed if isinstance(m, dict) and "id" in m]
