"""Typed keys for the plugin's state in `config.stash` (no globals, no private attrs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the session's module is imported where a session is made
    from pytest_vlmbench.plugin.session import VlmSession

SESSION_KEY: pytest.StashKey[VlmSession] = pytest.StashKey()
