"""What machine and software produced a run, so numbers can be compared honestly.

Secrets never go in here: the command line is recorded with the values of options
that look like credentials replaced, and no environment variables are recorded.
"""

from __future__ import annotations

import platform
import re
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pytest_vlmbench.devices import cpu_threads

_PACKAGES = ("pytest-vlmbench", "pytest", "llama-cpp-python", "jsonschema", "pillow", "numpy",
             "gguf", "pytest-benchmark", "pytest-xdist")
# Option and key names that carry credentials: --api-key, --openai-api-key, --openai-key,
# --hf-token, --secret, --password, --auth...; not --max-tokens.
_SECRET_NAME = re.compile(r"(?i)(api[-_]?key|openai[-_]?key|token$|secret|password|passwd|auth)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+\S+")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@")


def _redact_value(text: str) -> str:
    """Hide bearer/basic credentials and user:password@ in URLs anywhere in a value."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} ***", text)
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}***@", text)


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with credentials replaced by '***'.

    Covers `--api-key=X`, `--api-key X`, `-o api_key=X` (ini overrides), `Bearer X`
    anywhere, and `scheme://user:password@host`.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            hide_next = False
            if not arg.startswith("-"):
                out.append("***")
                continue
        name, eq, _value = arg.partition("=")
        if arg.startswith("-") and _SECRET_NAME.search(name.lstrip("-")):
            if eq:
                out.append(f"{name}=***")
            else:
                out.append(arg)
                hide_next = True
            continue
        if not arg.startswith("-") and eq and _SECRET_NAME.search(name):
            out.append(f"{name}=***")  # an ini override's key=value, e.g. after -o
            continue
        out.append(_redact_value(arg))
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _git(rootdir: Path) -> dict[str, Any] | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=rootdir, capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=rootdir,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def packages() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def capture(rootdir: Path) -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_threads_available": cpu_threads(),
        "memory_bytes": _memory_bytes(),
        "python": sys.version.split()[0],
        "packages": packages(),
        "git": _git(rootdir),
    }
