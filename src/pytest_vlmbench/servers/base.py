"""What every kind of managed server shares: the error, the models it is asked to serve,
and the launch plan each kind's module returns to the manager."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vlmbench.backends import BackendError

LOOPBACK = "127.0.0.1"


class ServerError(BackendError):
    """A managed server that cannot start, never became ready or died; one line that
    names the server, its address or log file, and what to do."""


@dataclass(frozen=True)
class ManagedModel:
    """One (model, precision) a managed server is asked to serve, with its files.

    Built by `manager.managed_models` from the catalog's ServerSpec.served, the weights
    resolved by the caller (models/weights.py); `weight_path` is None for a `remote:`
    model on a command server that holds its own weights.
    """

    model_id: str
    precision: str
    served_name: str
    weight_path: Path | None
    projector_path: Path | None
    chat_format: str
    modality: str
    max_images: int | None = None
    """The catalog's most images per request (a vllm serve gets it as its per-prompt limit)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_id, self.precision)


@dataclass
class Launch:
    """How to start one server: argv and environment, where to probe, what it serves."""

    argv: list[str]
    probe_path: str
    """GET http://127.0.0.1:PORT{probe_path} answers 200 once the server is ready."""
    models: list[ManagedModel]
    """What the started server serves, the one it loads first at index 0."""
    env: dict[str, str] = field(default_factory=dict)
    """Added to the environment (secrets travel here, never in argv)."""
    unset_env: tuple[str, ...] = ()
    """Inherited variables the server would read behind the catalog's back (a name, or a
    prefix ending in '*'), removed from its environment."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The settings in effect, defaults included (recorded)."""
    private_files: list[Path] = field(default_factory=list)
    """Files to delete once the server is ready (e.g. a config holding a key)."""
