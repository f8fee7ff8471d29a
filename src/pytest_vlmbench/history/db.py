"""One connection to the history, SQLite (standard library) or PostgreSQL (psycopg 3).

The store writes its SQL once, with `?` placeholders; for psycopg they become `%s`.
Both connections run in autocommit mode and the store opens every transaction itself
(`begin`), so a write is exactly one BEGIN ... COMMIT on either database. psycopg is
imported only when a PostgreSQL history is opened: it is an optional dependency.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from pytest_vlmbench.history.urls import Dialect, HistoryError, HistoryURL

Row = tuple[Any, ...]

BUSY_TIMEOUT_MS = 60_000
"""How long a SQLite writer waits for another's transaction (an append takes well
under a second; a CI fleet may append several runs at once)."""
CONNECT_TIMEOUT_S = 15
MIGRATION_LOCK = 0x766C6D62  # "vlmb": pg_advisory_xact_lock's key for migrations
INSTALL = "PostgreSQL history needs psycopg: pip install 'pytest-vlmbench[history]'"


@cache
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _regexp(pattern: str, text: str | None) -> bool:
    """SQLite's REGEXP (it has none of its own); a bad pattern matches nothing (the
    store checks patterns before it sends them)."""
    try:
        return text is not None and re.search(pattern, text) is not None
    except re.error:
        return False


class Database:
    """A connection and what differs between the dialects."""

    def __init__(self, url: HistoryURL, conn: Any, errors: tuple[type[Exception], ...],
                 unique: tuple[type[Exception], ...]) -> None:
        self.url = url
        self.dialect: Dialect = url.dialect
        self._conn = conn
        self.errors = errors
        """The driver's exceptions: the store turns them into HistoryError."""
        self.unique = unique
        """A unique constraint broken (a run appended by another writer meanwhile)."""

    @classmethod
    def connect(cls, url: HistoryURL) -> Database:
        if url.dialect == "sqlite":
            return cls._sqlite(url)
        return cls._postgresql(url)

    @classmethod
    def _sqlite(cls, url: HistoryURL) -> Database:
        path = Path(url.target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"history {url.display}: cannot open: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA foreign_keys = ON")
            conn.create_function("regexp", 2, _regexp, deterministic=True)
        except sqlite3.Error as exc:
            conn.close()
            raise HistoryError(f"history {url.display}: cannot open: {exc} "
                               "(not a SQLite database?)") from None
        if mode is None or str(mode[0]).lower() != "wal":
            conn.close()
            raise HistoryError(f"history {url.display}: cannot switch to WAL journaling "
                               f"(got {mode[0] if mode else None!r}): a network file system?")
        return cls(url, conn, (sqlite3.Error,), (sqlite3.IntegrityError,))

    @classmethod
    def _postgresql(cls, url: HistoryURL) -> Database:
        try:
            import psycopg
        except ImportError:
            raise HistoryError(INSTALL) from None
        extra: dict[str, Any] = {"autocommit": True, "application_name": "pytest-vlmbench"}
        if "connect_timeout" not in url.target:
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        try:
            conn = psycopg.connect(url.target, **extra)
        except psycopg.Error as exc:
            raise HistoryError(f"history {url.display}: cannot connect: "
                               f"{url.scrub(str(exc))}") from None
        except Exception as exc:  # a malformed URL: psycopg's ProgrammingError et al.
            raise HistoryError(f"history {url.display}: cannot connect: "
                               f"{url.scrub(str(exc))}") from None
        return cls(url, conn, (psycopg.Error,), (psycopg.errors.UniqueViolation,))

    # ------------------------------------------------------------------ statements

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else _pg_sql(sql)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self._conn.execute(self._sql(sql), tuple(params)).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(self._sql(sql), tuple(params)).fetchone()
        return row

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(self._sql(sql), tuple(params))

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if not batch:
            return
        if self.dialect == "sqlite":
            self._conn.executemany(sql, batch)
        else:
            with self._conn.cursor() as cur:
                cur.executemany(_pg_sql(sql), batch)

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """An INSERT ... RETURNING id; the new row's id."""
        row = self.one(sql + " RETURNING id", params)
        assert row is not None
        return int(row[0])

    # ---------------------------------------------------------------- transactions

    def begin(self, write: bool) -> None:
        """SQLite: BEGIN IMMEDIATE takes the write lock now, so a writer never fails
        half-way for another's lock; PostgreSQL locks rows as it writes them."""
        if self.dialect == "sqlite":
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        else:
            self._conn.execute("BEGIN" if write else "BEGIN READ ONLY")

    def lock_migrations(self) -> None:
        """Inside a transaction: one process at a time creates or migrates the tables
        (SQLite's BEGIN IMMEDIATE already is that lock)."""
        if self.dialect == "postgresql":
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        """Leave a failed transaction; quiet when there is none (or no connection)."""
        try:
            if self.dialect == "sqlite":
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            else:
                if self._conn.info.transaction_status != 0:  # psycopg's IDLE
                    self._conn.execute("ROLLBACK")
        except self.errors:
            pass

    def close(self) -> None:
        with contextlib.suppress(*self.errors):
            self._conn.close()

    def table_exists(self, name: str) -> bool:
        if self.dialect == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return self.one(sql, (name,)) is not None
        row = self.one("SELECT to_regclass(?)::text", (name,))
        return row is not None and row[0] is not None

    # ------------------------------------------------------------- dialect pieces

    def contains(self, column: str) -> str:
        """SQL true when `column` contains the parameter's text (case-sensitive)."""
        return f"instr({column}, ?) > 0" if self.dialect == "sqlite" else \
            f"strpos({column}, ?) > 0"

    def matches(self, column: str) -> str:
        """SQL true when `column` matches the parameter, a regular expression that uses
        only what Python's re and PostgreSQL's ARE agree on (glob_regex)."""
        return f"{column} REGEXP ?" if self.dialect == "sqlite" else f"{column} ~ ?"

    def size_bytes(self) -> int | None:
        """How big the store is on disk (SQLite: file and WAL; PostgreSQL: the database)."""
        if self.dialect == "sqlite":
            path = Path(self.url.target)
            return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"))
                       if p.exists())
        row = self.one("SELECT pg_database_size(current_database())")
        return int(row[0]) if row else None


def glob_regex(pattern: str) -> str:
    """A glob (* ? [abc] [!abc]) as an anchored regular expression both databases read."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (end := pattern.find("]", i + 1 if pattern[i:i + 1] in ("!", "]")
                                              else i)) > 0:
            body = pattern[i:end]
            i = end + 1
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = "".join(ch if ch.isalnum() or ch == "-" else "\\" + ch for ch in body)
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(c if c.isalnum() or c == "_" else "\\" + c)
    out.append("$")
    return "".join(out)
