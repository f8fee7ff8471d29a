"""Plug-in registries (backends, power meters): built-ins plus entry points.

A registry maps a name to a "module:attribute" target, imported only when used, so a
session never imports a backend or meter it does not need.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib import metadata
from importlib.metadata import EntryPoint, entry_points
from typing import Any


def names(builtin: Mapping[str, str], group: str) -> dict[str, str]:
    """Name -> target, built-ins first, then the entry points of `group` (a third-party
    entry point never replaces a built-in of the same name)."""
    table = dict(builtin)
    for ep in entry_points(group=group):
        table.setdefault(ep.name, ep.value)
    return table


def advertised(group: str) -> dict[str, EntryPoint]:
    """The entry points of `group` by name, the first of each name (registries that
    hold objects, datasets and scorers, load them only when a name is looked up)."""
    found: dict[str, EntryPoint] = {}
    for ep in metadata.entry_points(group=group):  # looked up now: tests replace it
        found.setdefault(ep.name, ep)
    return found


def load(target: str) -> Any:
    """Import "module:attribute" and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
