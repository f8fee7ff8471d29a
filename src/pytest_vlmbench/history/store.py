"""The results history: every run appended to one database, for trends and baselines.

A run is appended in ONE transaction: its row, a row per benchmark entry (with the
figures compare judges, computed once from the records exactly as `vlmbench compare`
computes them, and the compare Columns as JSON), and its records, zlib-compressed JSON
lines per (entry run id, benchmark). A writer killed half-way leaves nothing (the
database rolls the transaction back), so a run is in the history whole or not at all.
A baseline (`--vlm-compare=history:N`) is then built from the stored Columns of the
newest N complete runs of each benchmark, without parsing one record, and compared by
compare.core.compare_runs unchanged.

    with History.open("sqlite:.vlmbench/history.db") as history:
        history.import_file(Path("results.json"))          # or .append(doc, records)
        points = history.trend("p95_latency", Filters(model="tiny-vlm"))
        baseline = history.baseline(current_doc, 20, exclude_run_id=current_doc["run_id"])
"""

from __future__ import annotations

import csv
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from types import TracebackType
from typing import Any, TextIO, cast

from pytest_vlmbench.compare.runs import Baseline, BenchmarkKey, commit_of, when
from pytest_vlmbench.compare.samples import (
    Columns,
    columns_of,
    columns_to_json,
    samples,
)
from pytest_vlmbench.history.baselines import CHUNK, KEY_COLUMNS, choose
from pytest_vlmbench.history.db import Database, glob_regex
from pytest_vlmbench.history.rows import (
    EVERYTHING,
    AppendResult,
    Filters,
    RunRow,
    TrendPoint,
    run_row,
)
from pytest_vlmbench.history.schema import LATEST, MIGRATIONS, VERSION_TABLE, statements
from pytest_vlmbench.history.urls import HistoryError, HistoryURL, parse_url
from pytest_vlmbench.metrics import noise, registry
from pytest_vlmbench.results.document import ResultsError, load_with_records, loads
from pytest_vlmbench.results.models import BenchmarkEntry, Record, ResultsDocument

try:  # 10x the standard library's speed: a run of 5,000 records is dumped at every append
    from orjson import dumps as _orjson_dumps

    def _dumps(obj: Any) -> bytes:
        return _orjson_dumps(obj)
except ImportError:  # pragma: no cover - orjson is a dependency
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

__all__ = ["AppendResult", "Filters", "History", "HistoryError", "RunRow",
           "TrendPoint"]

ZLIB_LEVEL = 6
"""Records of one benchmark repeat their fields and prompts: level 6 shrinks them about
15x; level 1 saves little time on runs of hundreds of records."""


def _glob(text: str) -> str | None:
    """The regular expression of a glob filter; None for a plain substring, and for
    text that is no valid glob (an id's own [tiny-q4_k_m-cpu] is a bad range y-v)."""
    if not any(c in text for c in "*?["):
        return None
    pattern = glob_regex(text)
    try:
        re.compile(pattern)
    except re.error:
        return None
    return pattern


def _stamp(text: Any) -> str | None:
    """A timestamp as UTC ISO text, which sorts in time order as text (the database
    orders by it); None stays None, an unparsable one sorts first."""
    if text is None:
        return None
    return when(text).astimezone(UTC).isoformat()


def _git(doc: Mapping[str, Any], name: str) -> str | None:
    env = doc.get("environment")
    git = env.get("git") if isinstance(env, dict) else None
    value = git.get(name) if isinstance(git, dict) else None
    return str(value) if value else None


def _jsonl(records: Iterable[Record]) -> bytes:
    return zlib.compress(b"".join(_dumps(r) + b"\n" for r in records), ZLIB_LEVEL)


def metric_values(entry: Mapping[str, Any],
                  cols: Columns | None) -> list[tuple[str, float | None, int, str | None]]:
    """(name, value, n, absent_reason) of every metric compare judges on a benchmark:
    its statistic of the per-request samples, exactly as `vlmbench compare` takes it
    (compare.samples.samples, then noise.statistic)."""
    s = samples(entry, cols)
    out: list[tuple[str, float | None, int, str | None]] = []
    for metric in registry.compared().values():
        values = s.of(metric)
        reason = s.unavailable.get(metric.name)
        value: float | None = None
        if reason is None and len(values):
            value = noise.statistic(values, metric.statistic)
            if not math.isfinite(value):
                value, reason = None, f"not a finite number ({value})"
        elif reason is None:
            reason = "no records" if cols is None else f"no {metric.sample} samples"
        out.append((metric.name, value, len(values), reason))
    return out


_RUN_COLUMNS = ("r.run_id, r.started_at, r.finished_at, r.status, r.complete, r.git_commit, "
                "r.git_branch, r.device, r.hostname, r.source, r.appended_at, "
                "r.n_benchmarks, r.n_records")


class History:
    """An open results history (see the module docstring)."""

    def __init__(self, url: HistoryURL, db: Database) -> None:
        self.url = url
        self._db = db

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, url: str | HistoryURL, base_dir: Path | None = None) -> History:
        """Connect, and create or migrate the tables; a store written by a newer
        pytest-vlmbench (a newer schema version) is refused."""
        parsed = url if isinstance(url, HistoryURL) else parse_url(url, base_dir)
        history = cls(parsed, Database.connect(parsed))
        try:
            history._migrate()
        except BaseException:
            history.close()
            raise
        return history

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"History({self.url.display!r})"

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Database errors as one HistoryError line, the password scrubbed; any
        transaction left open is rolled back."""
        try:
            yield
        except self._db.errors as exc:
            self._db.rollback()
            raise HistoryError(f"history {self.url.display}: {what}: "
                               f"{self.url.scrub(str(exc)) or type(exc).__name__}") from None
        except BaseException:
            self._db.rollback()
            raise

    def _version(self) -> int:
        if not self._db.table_exists("vlm_schema_version"):
            return 0
        row = self._db.one("SELECT MAX(version) FROM vlm_schema_version")
        return int(row[0]) if row and row[0] is not None else 0

    def _refuse_newer(self, version: int) -> None:
        if version > LATEST:
            self._db.rollback()
            raise HistoryError(f"history {self.url.display}: schema version {version} was "
                               f"written by a newer pytest-vlmbench; this one knows up to "
                               f"version {LATEST}: upgrade pytest-vlmbench")

    def _migrate(self) -> None:
        with self._guard("reading the schema version"):
            version = self._version()
        self._refuse_newer(version)
        if version == LATEST:
            return
        db = self._db
        with self._guard("creating the tables"):
            db.begin(write=True)
            db.lock_migrations()
            db.run(statements(VERSION_TABLE, db.dialect))
            version = self._version()  # again, under the lock: another may have won
            self._refuse_newer(version)
            for migration in MIGRATIONS:
                if migration.version <= version:
                    continue
                for sql in migration.sql:
                    db.run(statements(sql, db.dialect))
                db.run("INSERT INTO vlm_schema_version (version, name, applied_at) "
                       "VALUES (?, ?, ?)",
                       (migration.version, migration.name, datetime.now(UTC).isoformat()))
            db.commit()

    @property
    def schema_version(self) -> int:
        with self._guard("reading the schema version"):
            return self._version()

    # ------------------------------------------------------------------ writing

    def _stored_entries(self, entries: Sequence[BenchmarkEntry],
                        run_id: str) -> tuple[set[tuple[str, str]], str]:
        """Which of these entries (by their own run id and id) the history holds, and a
        line saying in which history runs."""
        pairs = {(str(e.get("run_id") or run_id), e["id"]) for e in entries}
        runs = sorted({p[0] for p in pairs})
        found: set[tuple[str, str]] = set()
        hits: dict[str, set[str]] = {}
        for i in range(0, len(runs), CHUNK):
            chunk = runs[i:i + CHUNK]
            marks = ", ".join("?" * len(chunk))
            for entry_run, entry_id, holder in self._db.rows(
                    "SELECT b.entry_run_id, b.entry_id, r.run_id FROM vlm_benchmark b JOIN "
                    f"vlm_run r ON r.id = b.run WHERE b.entry_run_id IN ({marks})", chunk):
                if (entry_run, entry_id) in pairs:
                    found.add((str(entry_run), str(entry_id)))
                    hits.setdefault(str(holder), set()).add(str(entry_run))
        where = "; ".join(f"run {', '.join(sorted(of))} in history run {holder}"
                          for holder, of in sorted(hits.items()))
        return found, where

    def import_file(self, path: Path) -> AppendResult:
        """Append a results file and its records file (both validated)."""
        try:
            doc, records = load_with_records(path, "a history import")
        except ResultsError as exc:
            raise HistoryError(str(exc)) from None
        return self.append(doc, records, source=str(path))

    def append(self, doc: ResultsDocument, records: Iterable[Record], *, source: str,
               progress: Callable[[str], None] | None = None) -> AppendResult:
        """Append a run (a validated document and its records) in one transaction.

        A merged document is one history run whose entries keep their own run ids.
        A run already in the history is skipped (`AppendResult.skipped` says so).
        `progress(line)` hears "begin", "benchmark <id>" after each benchmark written,
        and "commit".
        """
        start = perf_counter()
        records = list(records)
        run_id = str(doc["run_id"])
        entries = doc["benchmarks"]
        groups: dict[tuple[str, str], list[Record]] = {}
        for r in records:
            groups.setdefault((r["run_id"], r["benchmark"]), []).append(r)
        try:
            columns = columns_of(records, f"records of run {run_id}")
        except ResultsError as exc:
            raise HistoryError(f"run {run_id}: {exc}") from None
        header = {k: v for k, v in doc.items() if k != "benchmarks"}
        say = progress or (lambda _line: None)
        db = self._db
        with self._guard(f"appending run {run_id}"):
            db.begin(write=True)
            say("begin")
            found = db.one("SELECT appended_at, source FROM vlm_run WHERE run_id = ?",
                           (run_id,))
            if found is not None:
                db.rollback()
                return AppendResult(run_id, 0, 0, perf_counter() - start,
                                    f"run {run_id} is in the history already (appended "
                                    f"{found[0]} from {found[1]})")
            stored, where = self._stored_entries(entries, run_id)
            left_out = None
            if stored:  # appended once: keep only what the history does not hold yet
                entries = [e for e in entries
                           if (str(e.get("run_id") or run_id), e["id"]) not in stored]
                if not entries:
                    db.rollback()
                    return AppendResult(run_id, 0, 0, perf_counter() - start,
                                        f"its benchmarks' measurements are in the history "
                                        f"already: {where}")
                groups = {k: g for k, g in groups.items() if k not in stored}
                records = [r for g in groups.values() for r in g]
                left_out = (f"{len(stored)} of its benchmark entries are in the history "
                            f"already and were left out: {where}")
            try:
                run = db.insert(
                    "INSERT INTO vlm_run (run_id, started_at, finished_at, status, complete, "
                    "git_commit, git_branch, device, hostname, source, appended_at, "
                    "n_benchmarks, n_records, header) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, _stamp(doc["started_at"]), _stamp(doc.get("finished_at")),
                     doc["status"], doc["status"] == "complete", commit_of(doc),
                     _git(doc, "branch"), str(doc["device"].get("name") or "") or None,
                     _hostname(doc), source, datetime.now(UTC).isoformat(), len(entries),
                     len(records), _dumps(header).decode()))
            except db.unique:  # another writer appended it since our check
                db.rollback()
                return AppendResult(run_id, 0, 0, perf_counter() - start,
                                    f"run {run_id} is in the history already (appended "
                                    "meanwhile by another writer)")
            written: set[tuple[str, str]] = set()
            for entry in entries:
                entry_run = str(entry.get("run_id") or run_id)
                key = (entry_run, entry["id"])
                self._write_benchmark(run, entry_run, entry, columns.get(key))
                if key in groups and key not in written:
                    self._write_records(run, key, groups[key])
                    written.add(key)
                say(f"benchmark {entry['id']}")
            for key, group in groups.items():  # records of no entry: kept, as merge does
                if key not in written:
                    self._write_records(run, key, group)
            db.commit()
            say("commit")
        return AppendResult(run_id, len(entries), len(records), perf_counter() - start,
                            left_out=left_out)

    def _write_benchmark(self, run: int, entry_run: str, entry: BenchmarkEntry,
                         cols: Columns | None) -> None:
        db = self._db
        bid = db.insert(
            "INSERT INTO vlm_benchmark (run, entry_run_id, entry_id, model, precision, "
            "device, task, backend, prompt_version, dataset_hash, status, started_at, "
            "n_records, entry, columns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run, entry_run, entry["id"], entry["model"], entry["precision"], entry["device"],
             entry["task"], entry["backend"], entry["prompt_version"], entry["dataset"]["hash"],
             entry["status"], _stamp(entry["started_at"]), cols.records if cols else 0,
             _dumps(entry).decode(), columns_to_json(cols) if cols else None))
        db.many("INSERT INTO vlm_metric (benchmark, name, value, n, absent_reason) "
                "VALUES (?, ?, ?, ?, ?)",
                [(bid, *values) for values in metric_values(entry, cols)])

    def _write_records(self, run: int, key: tuple[str, str], group: list[Record]) -> None:
        self._db.run("INSERT INTO vlm_records (run, entry_run_id, benchmark, n, jsonl) "
                     "VALUES (?, ?, ?, ?, ?)", (run, key[0], key[1], len(group), _jsonl(group)))

    # ------------------------------------------------------------------ reading

    def _filters(self, f: Filters) -> tuple[list[str], list[Any], list[str], list[Any]]:
        """SQL conditions (and their parameters) on the run (alias r) and on the
        benchmark (alias b)."""
        run_sql: list[str] = []
        run_params: list[Any] = []
        bench_sql: list[str] = []
        bench_params: list[Any] = []
        if f.commit:
            run_sql.append("substr(r.git_commit, 1, ?) = ?")
            run_params += [len(f.commit), f.commit]
        if f.benchmark:
            pattern = _glob(f.benchmark)
            if pattern is not None:  # ids hold [...] too: as given, a substring matches
                bench_sql.append(f"({self._db.contains('b.entry_id')} OR "
                                 f"{self._db.matches('b.entry_id')})")
                bench_params += [f.benchmark, pattern]
            else:
                bench_sql.append(self._db.contains("b.entry_id"))
                bench_params.append(f.benchmark)
        for name in ("model", "device", "precision", "task"):
            value = getattr(f, name)
            if value is not None:
                bench_sql.append(f"b.{name} = ?")
                bench_params.append(value)
        if f.last is not None and f.last < 1:
            raise HistoryError(f"last: give a number of runs >= 1, got {f.last}")
        return run_sql, run_params, bench_sql, bench_params

    def _chosen_runs(self, f: Filters) -> tuple[str, list[Any]]:
        """A condition on r.id (and its parameters): the runs the filters choose."""
        run_sql, run_params, bench_sql, bench_params = self._filters(f)
        where = list(run_sql)
        params = list(run_params)
        if bench_sql:
            where.append("EXISTS (SELECT 1 FROM vlm_benchmark b WHERE b.run = r.id AND "
                         + " AND ".join(bench_sql) + ")")
            params += bench_params
        sql = "SELECT r.id FROM vlm_run r" + (" WHERE " + " AND ".join(where) if where else "")
        if f.last is not None:
            sql += " ORDER BY r.started_at DESC, r.id DESC LIMIT ?"
            params.append(f.last)
        return sql, params

    def runs(self, filters: Filters = EVERYTHING) -> list[RunRow]:
        """The runs, newest first."""
        sql, params = self._chosen_runs(filters)
        with self._guard("listing runs"):
            rows = self._db.rows(f"SELECT {_RUN_COLUMNS} FROM vlm_run r WHERE r.id IN ({sql}) "
                                 "ORDER BY r.started_at DESC, r.id DESC", params)
        return [run_row(row) for row in rows]

    def _bench_where(self, filters: Filters) -> tuple[str, list[Any]]:
        """The WHERE of a query over vlm_benchmark b JOIN vlm_run r."""
        run_sql, run_params, bench_sql, bench_params = self._filters(filters)
        where = [*run_sql, *bench_sql]
        params = [*run_params, *bench_params]
        if filters.last is not None:
            sql, chosen = self._chosen_runs(filters)
            where.append(f"r.id IN ({sql})")
            params += chosen
        return (" AND ".join(where) or "1 = 1"), params

    def trend(self, metric: str, filters: Filters = EVERYTHING) -> list[TrendPoint]:
        """A metric's value in every run and benchmark the filters choose, oldest first:
        what `vlmbench compare` computes for it, stored at append."""
        known = registry.compared()
        if metric not in known:
            raise HistoryError(f"unknown metric {metric!r}; the history holds "
                               f"{', '.join(sorted(known))}")
        where, params = self._bench_where(filters)
        with self._guard(f"reading the trend of {metric}"):
            rows = self._db.rows(
                f"SELECT r.run_id, r.started_at, r.git_commit, {KEY_COLUMNS}, m.value, m.n, "
                "m.absent_reason FROM vlm_metric m "
                "JOIN vlm_benchmark b ON b.id = m.benchmark JOIN vlm_run r ON r.id = b.run "
                f"WHERE m.name = ? AND {where} "
                "ORDER BY r.started_at, r.id, b.started_at, b.id", [metric, *params])
        return [TrendPoint(row[0], row[1], row[2], BenchmarkKey(*row[3:8]),
                           None if row[8] is None else float(row[8]), int(row[9]), row[10])
                for row in rows]

    def export_csv(self, out: TextIO, filters: Filters = EVERYTHING) -> int:
        """One CSV row per (run, benchmark): the run's fields, the benchmark's key, then
        one column per metric (sorted; empty when absent). Returns the rows written."""
        where, params = self._bench_where(filters)
        with self._guard("exporting"):
            rows = self._db.rows(
                "SELECT b.id, r.run_id, r.started_at, r.finished_at, r.status, r.complete, "
                "r.git_commit, r.git_branch, r.device, r.hostname, r.source, b.entry_run_id, "
                f"{KEY_COLUMNS}, b.backend, b.prompt_version, b.dataset_hash, b.status, "
                "b.n_records FROM vlm_benchmark b JOIN vlm_run r ON r.id = b.run "
                f"WHERE {where} ORDER BY r.started_at, r.id, b.started_at, b.id", params)
            values: dict[int, dict[str, float | None]] = {}
            for bid, name, value in self._db.rows(
                    "SELECT m.benchmark, m.name, m.value FROM vlm_metric m "
                    "JOIN vlm_benchmark b ON b.id = m.benchmark JOIN vlm_run r ON r.id = b.run "
                    f"WHERE {where}", params):
                values.setdefault(int(bid), {})[name] = value
        names = sorted(set(registry.compared()) | {n for v in values.values() for n in v})
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run_id", "started_at", "finished_at", "status", "complete", "commit",
                         "branch", "run_device", "hostname", "source", "entry_run_id",
                         "benchmark", "model", "precision", "device", "task", "backend",
                         "prompt_version", "dataset_hash", "benchmark_status", "records",
                         *names])
        for row in rows:
            figures = values.get(int(row[0]), {})
            cells = ["" if v is None else v for v in row[1:]]
            cells[4] = "true" if row[5] else "false"
            writer.writerow([*cells, *("" if figures.get(n) is None else repr(figures[n])
                                       for n in names)])
        return len(rows)

    def read_records(self, run_id: str) -> list[Record]:
        """A run's records as appended (in their groups' order)."""
        with self._guard(f"reading the records of run {run_id}"):
            blobs = self._db.rows(
                "SELECT x.jsonl FROM vlm_records x JOIN vlm_run r ON r.id = x.run "
                "WHERE r.run_id = ? ORDER BY x.entry_run_id, x.benchmark", (run_id,))
        out: list[Record] = []
        for (blob,) in blobs:
            out += [cast(Record, loads(line))
                    for line in zlib.decompress(bytes(blob)).splitlines() if line]
        return out

    # ------------------------------------------------------------------ baselines

    def baseline(self, current: ResultsDocument, n: int, *,
                 exclude_run_id: str | None = None) -> Baseline:
        """For each benchmark of `current`, the newest n complete runs holding it (same
        id, model, precision, device, task, prompt_version and dataset): a Baseline that
        compare.core.compare_runs judges as it judges files (baselines.choose)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        with self._guard("choosing baseline runs"):
            return choose(self._db, self.url.display, current, n, exclude_run_id)

    # ------------------------------------------------------------------ upkeep

    def check(self) -> list[str]:
        """Consistency problems, one line each (empty when the store is sound): runs
        whose counts disagree with their rows, benchmarks whose record counts disagree
        with their stored records, rows that belong to nothing."""
        problems: list[str] = []
        db = self._db
        with self._guard("checking"):
            db.begin(write=False)
            for run_id, n_bench, rows, n_rec, stored in db.rows(
                    "SELECT r.run_id, r.n_benchmarks, "
                    "(SELECT COUNT(*) FROM vlm_benchmark b WHERE b.run = r.id), r.n_records, "
                    "(SELECT COALESCE(SUM(x.n), 0) FROM vlm_records x WHERE x.run = r.id) "
                    "FROM vlm_run r ORDER BY r.id"):
                if int(n_bench) != int(rows):
                    problems.append(f"run {run_id}: {n_bench} benchmarks, {rows} stored")
                if int(n_rec) != int(stored):
                    problems.append(f"run {run_id}: {n_rec} records, {stored} stored")
            for run_id, entry_id, n_rec, stored in db.rows(
                    "SELECT r.run_id, b.entry_id, b.n_records, x.n FROM vlm_benchmark b "
                    "JOIN vlm_run r ON r.id = b.run LEFT JOIN vlm_records x ON x.run = b.run "
                    "AND x.entry_run_id = b.entry_run_id AND x.benchmark = b.entry_id "
                    "WHERE COALESCE(x.n, 0) <> b.n_records"):
                problems.append(f"run {run_id}: benchmark {entry_id}: {n_rec} records, "
                                f"{stored or 0} stored")
            for table, sql in (
                    ("vlm_benchmark", "SELECT COUNT(*) FROM vlm_benchmark b WHERE NOT EXISTS "
                                      "(SELECT 1 FROM vlm_run r WHERE r.id = b.run)"),
                    ("vlm_metric", "SELECT COUNT(*) FROM vlm_metric m WHERE NOT EXISTS "
                                   "(SELECT 1 FROM vlm_benchmark b WHERE b.id = m.benchmark)"),
                    ("vlm_records", "SELECT COUNT(*) FROM vlm_records x WHERE NOT EXISTS "
                                    "(SELECT 1 FROM vlm_run r WHERE r.id = x.run)")):
                row = db.one(sql)
                if row and int(row[0]):
                    problems.append(f"{table}: {row[0]} rows of no run")
            db.commit()
        return problems

    def size_bytes(self) -> int | None:
        """The store's size on disk."""
        with self._guard("measuring the store"):
            return self._db.size_bytes()


def _hostname(doc: Mapping[str, Any]) -> str | None:
    env = doc.get("environment")
    host = env.get("hostname") if isinstance(env, dict) else None
    return str(host) if host else None
