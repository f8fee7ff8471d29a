"""Where the results history lives: a SQLite file or a PostgreSQL database, named by a URL.

A PostgreSQL URL may hold a password, and the history is named on command lines, in ini
files and in CI logs: everything we print says `HistoryURL.display`, the URL with its
password replaced by ***, and every database error passes through `redact` (and the
store's own scrub, which also removes the password's literal text) before a user sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

Dialect = Literal["sqlite", "postgresql"]

MASK = "***"

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+):")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>\S*)")
_CONNINFO = re.compile(r"^(?:host|hostaddr|port|dbname|user|password|passfile|service|"
                       r"sslmode|connect_timeout|application_name|options)\s*=")
"""libpq's keyword form, `host=db user=ci dbname=bench`: PostgreSQL, not a file name."""
_KEYWORD = re.compile(r"(?i)\b(?P<key>password|passwd|pwd|sslpassword)(?P<eq>\s*=\s*)"
                      r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&]+)")
_POSTGRES = ("postgresql", "postgres")


class HistoryError(Exception):
    """A history that cannot be opened, read or written: one line a user can act on,
    never holding a password."""


@dataclass(frozen=True)
class HistoryURL:
    """A parsed history location. `target` is what the driver connects to (a file path,
    or the PostgreSQL URL as given, password included): never print it."""

    dialect: Dialect
    target: str = field(repr=False)
    display: str

    def scrub(self, text: str) -> str:
        """`text` with any URL password, and this URL's own password wherever it occurs
        (a driver may quote it outside a URL), replaced by ***; one line."""
        out = redact(text)
        for secret in _passwords(self.target) if self.dialect == "postgresql" else ():
            out = out.replace(secret, MASK)
        return " ".join(line.strip() for line in out.splitlines() if line.strip())


def _passwords(url: str) -> list[str]:
    """The password of a URL (as written and percent-decoded) and of its query string;
    short ones too (the caller replaces them only in error text)."""
    found: list[str] = []
    match = _URL.search(url)
    if match:
        rest = match["rest"]
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            found.append(rest[:at].split(":", 1)[1])
    found += [m["value"].strip("'\"") for m in _KEYWORD.finditer(url)]
    found += [unquote(p) for p in found]
    return sorted({p for p in found if p and p != MASK}, key=len, reverse=True)


def _redact_url(match: re.Match[str]) -> str:
    rest = match["rest"]
    at = rest.rfind("@")  # the last: an unencoded @ in a password must not end it early
    if at >= 0 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:{MASK}{rest[at:]}"
    return match["scheme"] + rest


def redact(text: str) -> str:
    """`text` with every URL-ish password (user:PASSWORD@host, password=PASSWORD in a
    query string or a libpq keyword string) replaced by ***."""
    text = _URL.sub(_redact_url, text)
    return _KEYWORD.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)


def parse_url(text: str, base_dir: Path | None = None) -> HistoryURL:
    """A history location: "postgresql://..." or "postgres://..." or libpq's keyword
    form "host=db dbname=bench" (PostgreSQL),
    "sqlite:///abs/path.db" (absolute), "sqlite:relative.db" or a plain file path
    (relative to base_dir, default the working directory).

    >>> parse_url("postgresql://ci:s3cret@db/bench").display
    'postgresql://ci:***@db/bench'
    """
    given = text.strip()
    if not given:
        raise HistoryError("history URL is empty: give a file path, sqlite:///path.db or "
                           "postgresql://user@host/db")
    match = _SCHEME.match(given)
    scheme = match["scheme"].lower() if match else None
    if match is None and _CONNINFO.match(given):
        return HistoryURL("postgresql", given, redact(given))
    if scheme in _POSTGRES:
        if not given[len(scheme) + 1:].startswith("//"):
            raise HistoryError(f"history URL {redact(given)}: write postgresql://user@host/db")
        return HistoryURL("postgresql", given, redact(given))
    base = base_dir if base_dir is not None else Path.cwd()
    if scheme == "sqlite":
        rest = given[len("sqlite:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise HistoryError(f"history URL {redact(given)}: sqlite:///absolute/path.db "
                                   "(three slashes) or sqlite:relative/path.db")
        path_text = rest
    elif match and "://" in given:
        raise HistoryError(f"history URL {redact(given)}: unknown scheme {scheme!r}; use a "
                           "file path, sqlite:///path.db or postgresql://user@host/db")
    else:
        path_text = given
    if not path_text:
        raise HistoryError(f"history URL {redact(given)}: no file named")
    path = Path(path_text).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    return HistoryURL("sqlite", str(path), redact(f"sqlite://{path.as_posix()}"))
