"""Managed servers: start an OpenAI-compatible server on a free loopback port, wait until
it is ready, keep its log beside the results, read its process tree's memory and CPU,
and stop it at session end (manager.py; one module per server kind)."""

from pytest_vlmbench.servers.base import ManagedModel, ServerError
from pytest_vlmbench.servers.manager import (
    RunningServer,
    ServerManager,
    free_port,
    managed_models,
)
from pytest_vlmbench.servers.procs import ServerUsage

__all__ = ["ManagedModel", "RunningServer", "ServerError", "ServerManager", "ServerUsage",
           "free_port", "managed_models"]
