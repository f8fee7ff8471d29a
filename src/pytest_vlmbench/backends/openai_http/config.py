"""What the client needs to know about one served model, resolved from the catalog (or
written by hand in tests): where, which model name, which dialect and API, how patient.

Secrets are not part of it: the API key is read from the environment at load and handed
to the model alone; header values are sent but only their names are recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pytest_vlmbench.backends.openai_http.dialects import APIS, DIALECTS
from pytest_vlmbench.backends.openai_http.faults import safe_url


@dataclass(frozen=True)
class ClientConfig:
    """One model behind one OpenAI-compatible endpoint."""

    base_url: str  # ".../v1": the API paths are appended to it
    model: str  # the name the server serves the model under (the body's "model")
    dialect: str = "openai"  # how constraints are written (dialects.py)
    api: str = "chat"  # "chat": /chat/completions, "completions": /completions
    chat_format: str = "model"  # the catalog's: "completion" -> /completions, plain text
    vision: bool = False  # the model takes images
    max_images: int | None = None  # at most this many per request (the catalog's); None: any
    stream: bool = True
    timeout_s: float = 300.0  # per attempt
    retries: int = 2  # retryable failures (faults.py), before any content only
    headers: Mapping[str, str] = field(default_factory=dict)  # values may be secret
    api_key_env: str | None = None  # the NAME of the variable holding the key
    swaps: bool = False  # the server loads models on demand: a switch costs a load
    label: str = ""  # the catalog's model id, for messages

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect {self.dialect!r}: must be one of {', '.join(DIALECTS)}")
        if self.api not in APIS:
            raise ValueError(f"api {self.api!r}: must be one of {', '.join(APIS)}")
        if self.timeout_s <= 0 or self.retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images {self.max_images}: must be at least 1 (or None)")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def effective_api(self) -> str:
        """The API requests go to: a text model written as plain completion text
        (chat_format "completion") always uses /completions."""
        return "completions" if self.chat_format == "completion" else self.api

    @cached_property
    def url(self) -> str:
        """The endpoint requests are posted to."""
        return self.at("/completions" if self.effective_api == "completions"
                       else "/chat/completions")

    def at(self, path: str) -> str:
        """`path` under the base URL, before any query it carries (?api-version=...)."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))

    @cached_property
    def shown_url(self) -> str:
        """`url` as messages and settings show it: no credentials, no query."""
        return safe_url(self.url)

    def problem(self) -> str | None:
        """Why this combination cannot work, known before any request."""
        if self.effective_api == "completions" and self.vision:
            return ("a vision model needs api = \"chat\" (/v1/completions takes no images); "
                    "chat_format \"completion\" is for text models")
        if self.effective_api == "completions" and self.chat_format == "model":
            return ("api = \"completions\" sends a raw prompt, so the client must render "
                    "it: use chat_format \"completion\" (plain text) or \"gemma\", or "
                    "api = \"chat\" (the server applies the model's template)")
        return None

    def to_settings(self) -> dict[str, Any]:
        """What the results record about the endpoint: names, never secrets."""
        return {
            "base_url": safe_url(self.base_url),
            "endpoint": self.shown_url,
            "served_model": self.model,
            "dialect": self.dialect,
            "api": self.effective_api,
            "stream": self.stream,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "header_names": sorted(self.headers),
            "api_key_env": self.api_key_env,
            "swaps": self.swaps,
        }
