"""Typed keys for the plugin's state in `config.stash` (no globals, no private attrs)."""

from __future__ import annotations

import pytest

from pytest_vlmbench.plugin.session import VlmSession

SESSION_KEY = pytest.StashKey[VlmSession]()
