"""What machine and software produced a run, so numbers can be compared honestly.

Secrets never go in here: the command line is recorded with the values of options
that look like credentials replaced, token-shaped values masked wherever they appear
(redact_text), and no environment variables are recorded.
"""

from __future__ import annotations

import math
import platform
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from itertools import pairwise
from pathlib import Path
from typing import Any

from pytest_vlmbench.models.devices import cpu_threads
from pytest_vlmbench.run.memory import proc_kb

_PACKAGES = ("pytest-vlmbench", "pytest", "llama-cpp-python", "jsonschema", "pillow", "numpy",
             "gguf", "pytest-benchmark", "pytest-xdist")
# Option and key names that carry credentials: --api-key, --openai-api-key, --openai-key,
# --hf-token, --secret, --password, --auth...; not --max-tokens.
_SECRET_NAME = re.compile(r"(?i)(api[-_]?key|openai[-_]?key|token$|secret|password|passwd|auth)")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@")

MASK = "***"
# A token starts where no letter or digit precedes it ("task-..." is not "sk-...").
_START = r"(?<![A-Za-z0-9])"


def _mixed(body: str) -> bool:
    """Two of upper case, lower case and digits: what a generated secret's body has
    and a word or an id made of lower-case words does not."""
    return sum((any(c.isupper() for c in body), any(c.islower() for c in body),
                any(c.isdigit() for c in body))) >= 2


def _any(_body: str) -> bool:
    return True


# (pattern with groups `prefix` and `body`, check on the body). Specific prefixes come
# before the generic `sk-` so the mask keeps the most telling prefix (sk-ant-***).
_TOKEN_RULES: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = tuple(
    (re.compile(pattern), check) for pattern, check in (
        # Anthropic, OpenAI project / service-account / admin keys
        (_START + r"(?P<prefix>sk-(?:ant|proj|svcacct|admin)-)(?P<body>[A-Za-z0-9_-]{20,})",
         _mixed),
        # Stripe secret and restricted keys
        (_START + r"(?P<prefix>[sr]k_(?:live|test)_)(?P<body>[A-Za-z0-9]{16,})", _mixed),
        # OpenAI's older keys and anything else shaped like sk-<secret>
        (_START + r"(?P<prefix>sk-)(?P<body>[A-Za-z0-9_-]{20,})", _mixed),
        # Hugging Face
        (_START + r"(?P<prefix>hf_)(?P<body>[A-Za-z0-9]{30,})", _mixed),
        # GitHub: personal, OAuth, user-to-server, server-to-server, refresh; fine-grained
        (_START + r"(?P<prefix>gh[pousr]_)(?P<body>[A-Za-z0-9]{30,})", _mixed),
        (_START + r"(?P<prefix>github_pat_)(?P<body>[A-Za-z0-9_]{22,})", _mixed),
        # GitLab personal access tokens
        (_START + r"(?P<prefix>glpat-)(?P<body>[A-Za-z0-9_-]{20,})", _mixed),
        # Slack bot / app / user / refresh tokens, app-level tokens
        (_START + r"(?P<prefix>(?:xox[abprs]|xapp)-)(?P<body>[A-Za-z0-9-]{10,})", _mixed),
        # AWS access key ids (the fixed shape is the evidence)
        (_START + r"(?P<prefix>A(?:KIA|SIA))(?P<body>[A-Z0-9]{16})", _any),
        # Google API keys
        (_START + r"(?P<prefix>AIza)(?P<body>[A-Za-z0-9_-]{35})", _any),
        # JSON Web Tokens: header.payload[.signature], both base64url JSON objects
        (_START + r"(?P<prefix>eyJ)(?P<body>[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}"
         r"(?:\.[A-Za-z0-9_-]*)?)", _any),
    )
)
# Credentials in a URL's query (…?api_key=X&…) and HTTP authorisation values.
_QUERY = re.compile(r"(?i)(?P<prefix>[?&;](?:api[_-]?key|apikey|key|access[_-]?token|token|"
                    r"auth|secret|client[_-]?secret|password|passwd|sig|signature)=)"
                    r"(?P<body>[^&#\s]+)")
_KEYWORD_PASSWORD = re.compile(
    r"(?i)\b(?P<prefix>(?:password|passwd|pwd|sslpassword)\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&]+)")
"""libpq's keyword form (`host=db password=s3cret dbname=x`), as --vlm-history takes it."""
_AUTH = re.compile(r"(?i)\b(?P<prefix>(?:bearer|basic)\s+)(?P<body>[A-Za-z0-9._~+/=-]{8,})")

# Long high-entropy strings of base64 / base64url / base62 characters with no known
# prefix. The thresholds were chosen against uniformly random strings and ordinary
# names (model files such as ggml-org/SmolVLM2-500M-Video-Instruct-GGUF, CamelCase class
# names, paths, run ids): tests/test_results.py checks both sides.
_RUN = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")
ENTROPY_MIN_LENGTH = 32
ENTROPY_MIN = 0.8
"""Shannon entropy per character over log2(min(length, 64)): 1.0 is every character
different; random base62 strings of 32+ characters are nearly always above 0.8, long
CamelCase names (LlavaNextForConditionalGeneration: 0.75) below."""
CLASS_SWITCH_MIN = 0.3
"""Fraction of adjacent characters whose class (upper, lower, digit, other) differs:
about 0.6 on average for random base62, under 0.3 for most CamelCase names and words."""
SEPARATOR_MAX = 0.1
"""At most this fraction of `+/=_-`: random base64 has about 3%, paths and model file
names split into words have more. Together the four thresholds mask at least 96% of
uniformly random base62 / base64 strings of 32-80 characters (the test's bar)."""


def _class(c: str) -> int:
    return 0 if c.isupper() else 1 if c.islower() else 2 if c.isdigit() else 3


def looks_random(text: str) -> bool:
    """Whether a run of token characters looks generated rather than written: long,
    upper, lower and digits, high entropy, frequent class switches, few separators.

    Lower-case hex (sha256 digests, run ids, UUIDs) never qualifies: it has no upper case,
    and digests are in the records on purpose."""
    n = len(text)
    if n < ENTROPY_MIN_LENGTH or not (any(c.isupper() for c in text)
                                      and any(c.islower() for c in text)
                                      and any(c.isdigit() for c in text)):
        return False
    if sum(not c.isalnum() for c in text) > SEPARATOR_MAX * n:
        return False
    entropy = -sum(k / n * math.log2(k / n) for k in Counter(text).values())
    if entropy / math.log2(min(n, 64)) < ENTROPY_MIN:
        return False
    classes = [_class(c) for c in text]
    switches = sum(a != b for a, b in pairwise(classes))
    return switches / (n - 1) >= CLASS_SWITCH_MIN


def _masker(check: Callable[[str], bool]) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement: the prefix and MASK when the body passes `check`."""

    def mask(m: re.Match[str]) -> str:
        return m["prefix"] + MASK if check(m["body"]) else m[0]

    return mask


def redact_text(text: str) -> str:
    """`text` with token-shaped substrings masked, keeping what tells the user what was
    there: `sk-***`, `ghp_***`, `eyJ***`, `Bearer ***`, `?api_key=***`, `https://***@`;
    a long random-looking string without a known prefix becomes `***`.

    Masking by value, not only by option name, because a secret can reach a command line,
    an ini override or a test id through any option (`--junit-prefix=sk-...`). Idempotent;
    paths, node ids, run ids, model ids and sha256 digests are left alone."""
    for pattern, check in _TOKEN_RULES:
        text = pattern.sub(_masker(check), text)
    text = _QUERY.sub(lambda m: m["prefix"] + MASK, text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m["prefix"] + MASK, text)
    text = _AUTH.sub(_masker(_mixed), text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _RUN.sub(lambda m: MASK if looks_random(m[0]) else m[0], text)


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string,
    keys included, passed through redact_text."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_value(k) if isinstance(k, str) else k: redact_value(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with credentials replaced by '***'.

    Covers `--api-key=X`, `--api-key X`, `-o api_key=X` (ini overrides) by the option's
    name, and every other argument by value (redact_text): `--junit-prefix=sk-...`,
    `Bearer X`, `scheme://user:password@host`, `?token=X`.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            hide_next = False
            if not arg.startswith("-"):
                out.append(MASK)
                continue
        name, eq, _value = arg.partition("=")
        if arg.startswith("-") and _SECRET_NAME.search(name.lstrip("-")):
            if eq:
                out.append(f"{name}={MASK}")
            else:
                out.append(redact_text(arg))
                hide_next = True
            continue
        if not arg.startswith("-") and eq and _SECRET_NAME.search(name):
            out.append(f"{name}={MASK}")  # an ini override's key=value, e.g. after -o
            continue
        out.append(redact_text(arg))
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        "memory_bytes": proc_kb(Path("/proc/meminfo"), "MemTotal"),
        "python": sys.version.split()[0],
        "packages": packages(),
        "git": _git(rootdir),
    }
