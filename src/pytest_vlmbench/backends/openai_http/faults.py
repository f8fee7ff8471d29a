"""What can go wrong talking to a server, said in one line, and what is worth retrying.

Policy (issue 12, item 6): a request is retried only before any content arrived (a
partial answer is never resent: its tokens were generated and timed already), for the
failures a second try can cure: a connection that was refused, reset or closed before the
answer (a kept-alive connection the server had closed is the common one), a 5xx, a 429,
and a timeout (as the OpenAI Python client does). A 429 waits what `Retry-After` says
(seconds or an HTTP date, capped at `RETRY_AFTER_CAP_S`); without it, and for the other
failures, the wait is exponential: 0.5 s, 1 s, 2 s... Every retry is counted in the
response (`retries`, `rate_limited`) and its time stays inside the latency.

Every message names the endpoint without credentials (`safe_url`) and never the API key
(`redact`): servers echo keys back in 401 answers ("Incorrect API key provided: sk-ab***
yz"), so any word that shares six characters with the key is masked too.
"""

from __future__ import annotations

import email.utils
import math
import re
import time

from pytest_vlmbench.backends import BackendError
from pytest_vlmbench.models.endpoints import redact_url
from pytest_vlmbench.tasks.structured import ConstraintError

RETRY_AFTER_CAP_S = 60.0
BACKOFF_BASE_S = 0.5
SERVER_TEXT_LIMIT = 300
_WORD = re.compile(r"[A-Za-z0-9_\-.*+/=]{6,}")


class RequestFailed(BackendError):
    """A request that failed for good; `retries` and `rate_limited` say what was tried
    before (the runner records them beside the error)."""

    def __init__(self, message: str, *, retries: int = 0, rate_limited: int = 0) -> None:
        super().__init__(message)
        self.retries = retries
        self.rate_limited = rate_limited


class ConstraintRejected(RequestFailed, ConstraintError):
    """The server answered 400/422 to a request carrying a constraint: the dialect in the
    catalog is not the server's. The runner records it and ends the benchmark with it,
    which fails the test with this one line (a ConstraintError)."""


class Retry(Exception):
    """A failure a second attempt may cure; raised by one attempt, handled by the loop."""

    def __init__(self, reason: str, *, wait_s: float | None = None,
                 rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason  # one line, for the message when the retries run out
        self.wait_s = wait_s  # what the server asked for (Retry-After), else None
        self.rate_limited = rate_limited  # a 429


def safe_url(url: str) -> str:
    """`url` without user, password, query or fragment: what messages and settings may
    show of an endpoint (a router's URL may carry a key as ?key=...)."""
    return redact_url(url)


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret` or any word sharing six characters in a row with it."""
    if not secret:
        return text
    text = text.replace(secret, "[redacted]")
    if len(secret) < 6:
        return text
    windows = {secret[i:i + 6] for i in range(len(secret) - 5)}

    def mask(match: re.Match[str]) -> str:
        word = match.group(0)
        leaks = any(word[i:i + 6] in windows for i in range(len(word) - 5))
        return "[redacted]" if leaks else word

    return _WORD.sub(mask, text)


def one_line(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    """Collapse whitespace and cut to `limit` characters (with an ellipsis)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def server_message(body: bytes) -> str:
    """The human part of an error body, in the shapes servers use: OpenAI's and
    llama-server's `{"error": {"message"}}`, vLLM's older `{"message"}`, FastAPI's
    `{"detail"}` (llama-cpp-python), `{"error": "..."}` (Ollama), else the raw text."""
    import orjson

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return one_line(body.decode("utf-8", "replace")) or "(empty body)"
    found: object = data
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            found = error.get("message", error)
        elif error is not None:
            found = error
        elif "message" in data:
            found = data["message"]
        elif "detail" in data:
            found = data["detail"]
    text = found if isinstance(found, str) else orjson.dumps(found).decode()
    return one_line(_without_trace(text)) or "(empty message)"


_TRACE = re.compile(r"\n\s*(?:Traceback \(most recent call last\)|File \")")


def _without_trace(text: str) -> str:
    """The message without the Python trace a server appends to it (llama-cpp-python's
    500 for a body it cannot validate ends with the `File "...app.py", line N` of its
    route): the user needs the server's words, not its source lines."""
    head = _TRACE.split(text, maxsplit=1)[0]
    return head if head.strip() else text


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date, RFC
    9110 10.2.3), between 0 and RETRY_AFTER_CAP_S; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def backoff_s(attempt: int) -> float:
    """The wait before retry number `attempt + 1` when the server named none."""
    return float(min(BACKOFF_BASE_S * 2.0 ** attempt, RETRY_AFTER_CAP_S))


def auth_failure(status: int, url: str, api_key_env: str | None, sent_key: bool,
                 said: str) -> str:
    """A 401/403 in one line that says which variable to fix, never the key."""
    if api_key_env is None:
        fix = ("the endpoint names no api_key_env, so no key was sent: add "
               "api_key_env = \"VARIABLE\" to [model.endpoint]")
    elif not sent_key:
        fix = f"${api_key_env} is empty"
    else:
        fix = f"check the key in ${api_key_env}"
    return f"server {url} refused the request ({status}): {fix} (server said: {said})"


def unreachable(exc: BaseException) -> str:
    """Why a connection could not be made, in words (aiohttp's own text names the host,
    the port and the SSL context, and wraps the OS error)."""
    import ssl

    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"name resolution failed ({_os_reason(exc)})"
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return f"TLS failed ({one_line(str(exc), 120)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({_os_reason(exc)})"
    return one_line(f"{type(exc).__name__}: {exc}", 160)


def _os_reason(exc: BaseException) -> str:
    error = getattr(exc, "os_error", None)
    text = getattr(error, "strerror", None) or str(error or exc)
    return one_line(str(text), 120)
