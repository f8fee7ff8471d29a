"""history:N baselines: per benchmark of a run, its newest N complete runs in the history.

Chosen in SQL by the benchmark's key (entry id, model, precision, device, task), prompt
version and dataset hash, newest first, complete runs only, the current run and its
entries' own runs left out; then built into compare's Run objects from the stored
documents and per-request columns, so that compare.core.compare_runs judges them as it
judges results files, without parsing one record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from pytest_vlmbench.compare.runs import Baseline, BenchmarkKey, Run, key_of, when
from pytest_vlmbench.compare.samples import Columns, columns_from_json
from pytest_vlmbench.history.db import Database
from pytest_vlmbench.results.document import loads
from pytest_vlmbench.results.models import BenchmarkEntry, ResultsDocument

CHUNK = 500
"""Parameters per IN (...) list."""
KEY_COLUMNS = "b.entry_id, b.model, b.precision, b.device, b.task"


@contextmanager
def _read(db: Database) -> Iterator[None]:
    """One read transaction (a consistent view); the caller's guard rolls back on error."""
    db.begin(write=False)
    yield
    db.commit()


def choose(db: Database, display: str, current: ResultsDocument, n: int,
           exclude_run_id: str | None) -> Baseline:
    """For each benchmark of `current`, the newest n complete runs holding it (same
    id, model, precision, device, task, prompt_version and dataset): a Baseline that
    compare.core.compare_runs judges as it judges files. A benchmark whose prompt
    or dataset changed gets its newest run of the old one, which compare reports
    as not comparable (and why); one the history never saw is compare's "new".
    When no benchmark has a run in the history (a first run), the Baseline has no
    runs and a note saying so: every benchmark is new, never a failure."""
    wanted = list(dict.fromkeys(
        (key_of(e), e["prompt_version"], e["dataset"]["hash"]) for e in current["benchmarks"]))
    serves: dict[int, set[BenchmarkKey]] = {}
    found: list[int] = []
    # the current run, and the runs its entries came from (a merged document's
    # devices), are never their own baseline, whichever history run holds them
    own = sorted({str(e.get("run_id") or current["run_id"]) for e in current["benchmarks"]})
    skip = " AND r.run_id <> ?" if exclude_run_id is not None else ""
    skip_params: list[Any] = [exclude_run_id] if exclude_run_id is not None else []
    if own:
        skip += f" AND b.entry_run_id NOT IN ({', '.join('?' * len(own))})"
        skip_params += own
    with _read(db):
        for key, prompt, dataset in wanted:
            head = ("SELECT b.run, MAX(b.started_at) AS newest FROM vlm_benchmark b "
                    "JOIN vlm_run r ON r.id = b.run WHERE b.entry_id = ? AND b.model = ? "
                    "AND b.precision = ? AND b.device = ? AND b.task = ? AND r.complete = ?"
                    + skip)
            tail = " GROUP BY b.run ORDER BY newest DESC, b.run DESC LIMIT ?"
            rows = db.rows(head + " AND b.prompt_version = ? AND b.dataset_hash = ?" + tail,
                           [*key, True, *skip_params, prompt, dataset, n])
            found.append(len(rows))
            if not rows:  # compare says why the old runs are not comparable
                rows = db.rows(head + tail, [*key, True, *skip_params, 1])
            for run, _newest in rows:
                serves.setdefault(int(run), set()).add(key)
        if not serves:  # a first run: every benchmark is compare's "new"
            other = f" other than run {exclude_run_id}" if exclude_run_id else ""
            return Baseline([], Path(f"history:{n}"), n, [
                f"history {display}: no complete run{other} holds any of the "
                f"current run's {len(wanted)} benchmark{'s' if len(wanted) != 1 else ''}"])
        ids = sorted(serves)
        headers: dict[int, tuple[str, str]] = {}
        bench_rows: list[Sequence[Any]] = []
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            marks = ", ".join("?" * len(chunk))
            headers.update((int(r[0]), (r[1], r[2])) for r in db.rows(
                f"SELECT id, run_id, header FROM vlm_run WHERE id IN ({marks})", chunk))
            bench_rows += db.rows(
                f"SELECT b.run, b.entry_run_id, {KEY_COLUMNS}, b.entry, b.columns "
                f"FROM vlm_benchmark b WHERE b.run IN ({marks}) ORDER BY b.run, b.id",
                chunk)
    entries: dict[int, list[BenchmarkEntry]] = {i: [] for i in ids}
    columns: dict[int, dict[tuple[str, str], Columns]] = {i: {} for i in ids}
    for row in bench_rows:
        run = int(row[0])
        if BenchmarkKey(*row[2:7]) not in serves[run] or row[1] in own:
            continue
        # A merged history run may hold a benchmark several times, each entry under
        # its own run id: each is a run of it (compare counts them, as it counts a
        # merged file's), and compare keeps the newest n of them.
        entries[run].append(cast(BenchmarkEntry, loads(row[7])))
        if row[8] is not None:
            columns[run][(row[1], row[2])] = columns_from_json(row[8])
    runs = []
    for i in ids:
        run_id, header = headers[i]
        doc = cast(ResultsDocument, {**loads(header), "benchmarks": entries[i]})
        runs.append(Run(Path(f"history:{run_id}"), doc, columns[i]))
    runs.sort(key=lambda r: when(r.doc["started_at"]), reverse=True)
    return Baseline(runs, Path(f"history:{n}"), n, _notes(display, n, found, runs))

def _notes(display: str, n: int, found: list[int], runs: list[Run]) -> list[str]:
    have = [k for k in found if k]
    lo, hi = (min(have), max(have)) if have else (0, 0)
    counted = f"{lo}" if lo == hi else f"{lo}-{hi}"
    missing = len(found) - len(have)
    none = (f"; none for {missing} benchmark{'s' if missing != 1 else ''}"
            if missing else "")
    notes = [f"history {display}: the newest {n} complete run"
             f"{'s' if n != 1 else ''} of each benchmark (found {counted}{none})"]
    commits = {r.commit for r in runs}
    if len(runs) > 1 and len(commits) > 1:
        named = ", ".join(sorted(c[:12] if c else "unknown" for c in commits))
        notes.append(f"baseline runs of {len(commits)} commits ({named}): their spread "
                     "includes any change between those commits")
    return notes
