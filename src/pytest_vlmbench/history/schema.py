"""The history's tables, as a versioned list of migrations written once for both dialects.

Each migration is SQL with type placeholders ({id}, {int}, {real}, {blob}, {bool}) that
`statements` maps per dialect, so SQLite and PostgreSQL hold the same tables and columns.
`vlm_schema_version` records what was applied; a store whose version is newer than the
last migration here was written by a newer pytest-vlmbench, and is refused rather than
misread (store.History.open).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_vlmbench.history.urls import Dialect


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: tuple[str, ...]


TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"id": "INTEGER PRIMARY KEY", "int": "INTEGER", "real": "REAL",
               "blob": "BLOB", "bool": "INTEGER"},
    "postgresql": {"id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "int": "BIGINT",
                   "real": "DOUBLE PRECISION", "blob": "BYTEA", "bool": "BOOLEAN"},
}

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS vlm_schema_version (
    version {int} PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, benchmarks, metrics and records", (
        """CREATE TABLE vlm_run (
            id {id},
            run_id TEXT NOT NULL UNIQUE,
            started_at TEXT,
            finished_at TEXT,
            status TEXT NOT NULL,
            complete {bool} NOT NULL,
            git_commit TEXT,
            git_branch TEXT,
            device TEXT,
            hostname TEXT,
            source TEXT,
            appended_at TEXT NOT NULL,
            n_benchmarks {int} NOT NULL,
            n_records {int} NOT NULL,
            header TEXT NOT NULL
        )""",
        "CREATE INDEX vlm_run_started ON vlm_run (started_at)",
        """CREATE TABLE vlm_benchmark (
            id {id},
            run {int} NOT NULL REFERENCES vlm_run (id) ON DELETE CASCADE,
            entry_run_id TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            model TEXT NOT NULL,
            precision TEXT NOT NULL,
            device TEXT NOT NULL,
            task TEXT NOT NULL,
            backend TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            dataset_hash TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT,
            n_records {int} NOT NULL,
            entry TEXT NOT NULL,
            columns TEXT
        )""",
        # baseline(): the newest runs of one benchmark; trend() and filters by key
        """CREATE INDEX vlm_benchmark_key
            ON vlm_benchmark (entry_id, model, precision, device, task, started_at)""",
        "CREATE INDEX vlm_benchmark_run ON vlm_benchmark (run)",
        """CREATE TABLE vlm_metric (
            benchmark {int} NOT NULL REFERENCES vlm_benchmark (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            value {real},
            n {int} NOT NULL,
            absent_reason TEXT,
            PRIMARY KEY (benchmark, name)
        )""",
        "CREATE INDEX vlm_metric_name ON vlm_metric (name)",
        """CREATE TABLE vlm_records (
            run {int} NOT NULL REFERENCES vlm_run (id) ON DELETE CASCADE,
            entry_run_id TEXT NOT NULL,
            benchmark TEXT NOT NULL,
            n {int} NOT NULL,
            jsonl {blob} NOT NULL,
            PRIMARY KEY (run, entry_run_id, benchmark)
        )""",
    )),
    # A run's measurements are stored once, whichever document brings them (a device's
    # file, then the merged document holding it, or the same artifacts merged again by a
    # re-run CI job): append looks entries up by their own run id, and history:N keeps the
    # current run's entries out of its own baseline by it.
    Migration(2, "benchmarks found by their own run id", (
        "CREATE INDEX vlm_benchmark_entry_run ON vlm_benchmark (entry_run_id, entry_id)",
    )),
)

LATEST = MIGRATIONS[-1].version


def statements(sql: str, dialect: Dialect) -> str:
    """The SQL with this dialect's types."""
    return sql.format(**TYPES[dialect])
