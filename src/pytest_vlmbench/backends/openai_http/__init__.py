"""OpenAI-compatible servers (llama-server, llama-cpp-python's server, vLLM, Ollama,
hosted APIs), through aiohttp, streaming.

The modules follow a request:
- backend.py: `OpenAIBackend.load`: the catalog's endpoint, a managed server started (or
  an external one reached), the API key read from its variable.
- config.py: `ClientConfig`, the resolved endpoint of one served model.
- dialects.py: each server's own fields for a JSON schema or a GBNF grammar, and for the
  sampling parameters.
- body.py: the JSON body (prompt or messages, images as data URLs), built before the clock.
- model.py: `OpenAIModel`: its event loop and session, `agenerate`, retries and faults.
- exchange.py: one attempt: POST, then the stream read and timed chunk by chunk.
- sse.py: server-sent events, parsed incrementally.
- faults.py: errors, Retry-After, backoff, and the key kept out of every message.
"""

from __future__ import annotations

from pytest_vlmbench.backends.openai_http.backend import OpenAIBackend
from pytest_vlmbench.backends.openai_http.body import constraint_was_sent
from pytest_vlmbench.backends.openai_http.config import ClientConfig
from pytest_vlmbench.backends.openai_http.dialects import Constraint
from pytest_vlmbench.backends.openai_http.faults import ConstraintRejected, RequestFailed
from pytest_vlmbench.backends.openai_http.model import OpenAIModel

__all__ = ["ClientConfig", "Constraint", "ConstraintRejected", "OpenAIBackend", "OpenAIModel",
           "RequestFailed", "constraint_was_sent"]
