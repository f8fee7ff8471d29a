"""A request as the JSON body the server gets, built (and serialised) before the clock
starts: the image's base64 and the JSON encoding stay outside the latency, as the image
preparation does.

Prompts, compared with the in-process llama.cpp backend (backends/llama_cpp/request.py):
- chat_format "completion": `/v1/completions` with `system + "\\n\\n" + user` (or the user
  text alone), byte for byte what the in-process backend evaluates.
- chat_format "gemma" on `/v1/completions`: the client renders the same Gemma turn
  template the in-process backend renders (models/chat_template.py), so the prompt is the
  same text; on `/v1/chat/completions` the system text is folded into the user turn
  before sending (Gemma has no system role: llama-cpp-python's "gemma" format drops a
  system message, llama-server's merges it into the first user turn), and the server
  applies its own Gemma template, which gives the same text.
- chat_format "model": `/v1/chat/completions`; the server applies the model's template
  (which may differ from llama-cpp-python's rendering in the in-process backend).
Images go first in the user turn, as the in-process backend sends them, each as a
`data:image/jpeg;base64,` URL of the prepared JPEG (the exact bytes, hashed).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from typing import Any

import orjson

from pytest_vlmbench.backends import Request
from pytest_vlmbench.backends.openai_http.config import ClientConfig
from pytest_vlmbench.backends.openai_http.dialects import Constraint, sampling_fields
from pytest_vlmbench.datasets import PreparedImage


def gemma_prompt(system: str, user: str) -> str:
    """models/chat_template.GEMMA_CHAT_TEMPLATE rendered for one (system, user) turn
    with the generation prompt: the system text leads the user turn."""
    lead = system + "\n\n" if system else ""
    return f"<start_of_turn>user\n{lead}{user.strip()}<end_of_turn>\n<start_of_turn>model\n"


def completion_prompt(chat_format: str, system: str, user: str) -> str:
    """The raw prompt for /v1/completions."""
    if chat_format == "gemma":
        return gemma_prompt(system, user)
    return f"{system}\n\n{user}" if system else user


class ImageURLs:
    """Data URLs of prepared images, kept per sha256: a benchmark sends the same photos
    at every repetition and level, and base64 of a 200 kB JPEG costs about 0.3 ms."""

    def __init__(self, limit: int = 256) -> None:
        self._urls: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def url(self, image: PreparedImage) -> str:
        found = self._urls.get(image.sha256)
        if found is not None:
            self._urls.move_to_end(image.sha256)
            return found
        made = "data:image/jpeg;base64," + base64.b64encode(image.jpeg).decode("ascii")
        self._urls[image.sha256] = made
        if len(self._urls) > self._limit:
            self._urls.popitem(last=False)
        return made


def _messages(config: ClientConfig, request: Request, urls: ImageURLs) -> list[dict[str, Any]]:
    system, user = request.system, request.user
    messages: list[dict[str, Any]] = []
    if config.chat_format == "gemma":
        user = (system + "\n\n" + user.strip()) if system else user
    elif system:
        messages.append({"role": "system", "content": system})
    if request.images:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": urls.url(image)}}
            for image in request.images
        ]
        content.append({"type": "text", "text": user})
        messages.append({"role": "user", "content": content})
    else:
        messages.append({"role": "user", "content": user})
    return messages


def build(config: ClientConfig, request: Request, urls: ImageURLs) -> bytes:
    """The JSON body for `request`, serialised."""
    body: dict[str, Any] = {"model": config.model}
    if config.effective_api == "completions":
        body["prompt"] = completion_prompt(config.chat_format, request.system, request.user)
    else:
        body["messages"] = _messages(config, request, urls)
    body.update(sampling_fields(config.dialect, request.params, request.seed))
    if config.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    constraint = request.constraint
    if isinstance(constraint, Constraint):
        body.update(constraint.fields)
    return orjson.dumps(body)


def constraint_was_sent(request: Request) -> bool:
    """Whether `request` carried a constraint (the runner judges an output that fails its
    check after finish_reason "stop" as the server ignoring it)."""
    return isinstance(request.constraint, Constraint)
