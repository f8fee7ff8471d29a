"""Runs to compare: results documents with their records, and baselines of several runs.

A baseline may be several runs, because between two runs this machine's speed moves by
10-25% while requests within a run agree to 5-8% (docs/compare.md): only several runs
show how far an unchanged build drifts. A directory gives its newest finished runs (of
the newest run's commit, when the documents record one); several files give those
files; a merged document holding several runs of a benchmark gives each of them.
A directory's documents are found by content, not by name (`results_files`), so runs
written under any `vlm_out` name are found; `latest` is the output directory, which
the caller resolves (the CLI from the project's ini, pytest from its results file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pytest_vlmbench.compare.samples import Columns, RunBenchmark, columns_of, read_columns
from pytest_vlmbench.results import naming
from pytest_vlmbench.results.document import KIND, ResultsError, existing_records_path, load, loads
from pytest_vlmbench.results.models import BenchmarkEntry, ResultsDocument

DEFAULT_DIR = Path(naming.DEFAULT_OUT_DIR)  # the plugin's default output directory
LATEST = "latest"
DEFAULT_BASELINE_RUNS = 5  # options.DEFAULT_BASELINE_RUNS


@dataclass
class Run:
    """A loaded results document and its records' columns by (run_id, benchmark)."""

    path: Path
    doc: ResultsDocument
    columns: dict[RunBenchmark, Columns]
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.doc["run_id"])

    @property
    def commit(self) -> str | None:
        return commit_of(self.doc)

    @classmethod
    def from_records(cls, path: Path, doc: ResultsDocument,
                     records: Iterable[Mapping[str, Any]]) -> Run:
        """A run from records in memory (trusted: the pytest gate's own)."""
        return cls(path, doc, columns_of(records))


def commit_of(doc: Mapping[str, Any]) -> str | None:
    """environment.git.commit, when the document records one."""
    env = doc.get("environment")
    git = env.get("git") if isinstance(env, dict) else None
    commit = git.get("commit") if isinstance(git, dict) else None
    return str(commit) if commit else None


def when(stamp: Any) -> datetime:
    """An ISO timestamp as an aware datetime; unparsable ones sort first."""
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class BenchmarkKey(NamedTuple):
    """What makes two entries the same benchmark."""

    id: str
    model: str
    precision: str
    device: str
    task: str

    @property
    def label(self) -> str:
        """The test's parametrised name, without its file."""
        return self.id.split("::")[-1]


def key_of(entry: Mapping[str, Any]) -> BenchmarkKey:
    return BenchmarkKey(entry["id"], entry["model"], entry["precision"], entry["device"],
                        entry["task"])


@dataclass(frozen=True)
class Instance:
    """One run of one benchmark: an entry of a document, and where its records are."""

    run: Run
    entry: BenchmarkEntry
    order: int
    """The entry's index in its document (ties of started_at go to the later one)."""

    @property
    def run_id(self) -> str:
        return str(self.entry.get("run_id") or self.run.run_id)

    @property
    def columns(self) -> Columns | None:
        return self.run.columns.get((self.run_id, self.entry["id"]))

    @property
    def newness(self) -> tuple[datetime, int]:
        return when(self.entry["started_at"]), self.order


def instances(run: Run) -> dict[BenchmarkKey, list[Instance]]:
    """Every run of every benchmark in a document, newest first."""
    groups: dict[BenchmarkKey, list[Instance]] = {}
    for i, entry in enumerate(run.doc["benchmarks"]):
        groups.setdefault(key_of(entry), []).append(Instance(run, entry, i))
    for items in groups.values():
        items.sort(key=lambda it: it.newness, reverse=True)
    return groups


@dataclass
class Baseline:
    """The runs a current run is compared with: one, or several to measure drift."""

    runs: list[Run]
    """The documents, newest first."""
    path: Path
    """What was asked for: a results file or a directory (the first, of several)."""
    max_runs: int | None = None
    """Per benchmark, use at most the newest this many runs (None: all)."""
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        """The newest run's id."""
        return self.runs[0].run_id

    @classmethod
    def of(cls, run: Run) -> Baseline:
        return cls([run], run.path, None, list(run.notes))


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Candidate:
    moment: datetime
    name: str
    path: Path
    run_id: str
    commit: str | None


def _peek(path: Path) -> dict[str, Any]:
    """A results document's header, read without the schema check (that comes when the
    document is chosen): a directory may hold many runs, each megabytes of JSON."""
    try:
        doc = loads(path.read_bytes())
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND \
            or not isinstance(doc.get("run_id"), str) or "started_at" not in doc:
        raise ResultsError(f"{path}: not a pytest-vlmbench results document")
    return doc


HEAD_BYTES = 64 * 1024
"""How much of a file is read to tell a results document from another file: the
plugin writes `kind` first, and a directory may hold many runs of megabytes each."""
"""The plugin's default file name: such a file is always read, and reported when it is
not a results document."""
_KIND_IN_HEAD = re.compile(rb'"kind"\s*:\s*"' + re.escape(KIND.encode()) + rb'"')


def _is_results(path: Path) -> bool:
    """Whether a file's first HEAD_BYTES show a results document: a JSON object whose
    `kind` is the results kind. Records and power traces (`.jsonl`), hidden files
    (atomic writes in progress), logs and other JSON are not."""
    if path.name.startswith(".") or path.suffix == ".jsonl" or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and _KIND_IN_HEAD.search(head) is not None


def results_files(directory: Path) -> list[Path]:
    """The results documents of a directory, found by content, so that any `vlm_out`
    name is found: the files named results-*.json, and every other file whose head
    shows a results document. Not recursive: pytest-xdist workers' partial documents
    (workers-<run id>/) are never a run of their own."""
    return sorted(path for path in directory.iterdir()
                  if (path.match(naming.RESULTS_GLOB) and path.is_file()) or _is_results(path))


def _candidates(directory: Path, exclude_run_id: str | None) -> tuple[list[_Candidate], list[str]]:
    """The finished results documents of a directory, newest (by started_at) first, and
    the errors of those that could not be read."""
    if not directory.is_dir():
        raise ResultsError(f"{directory}: no such directory of results")
    try:
        paths = results_files(directory)
    except OSError as exc:
        raise ResultsError(f"{directory}: cannot list ({exc.strerror})") from None
    if not paths:
        raise ResultsError(f"no {naming.RESULTS_GLOB} in {directory}, nor another results document "
                           f"(a JSON file of kind {KIND!r})")
    found: list[_Candidate] = []
    errors: list[str] = []
    for path in paths:
        try:
            doc = _peek(path)
        except ResultsError as exc:
            errors.append(str(exc))
            continue
        if doc.get("status") == "running" or doc["run_id"] == exclude_run_id:
            continue
        found.append(_Candidate(when(doc["started_at"]), path.name, path, doc["run_id"],
                                commit_of(doc)))
    found.sort(key=lambda c: (c.moment, c.name), reverse=True)
    return found, errors


def _newest(directory: Path, count: int, exclude_run_id: str | None,
            same_commit: bool) -> tuple[list[Run], list[str]]:
    """The newest `count` finished runs of a directory, loaded; with same_commit, only
    those of the newest one's commit (when it records one). Documents that fail to
    load are skipped with a note, the next older taking their place."""
    found, errors = _candidates(directory, exclude_run_id)
    runs: list[Run] = []
    commit: str | None = None
    other = left_out = 0
    for candidate in found:
        if runs and same_commit and commit and candidate.commit != commit:
            other += 1
            continue
        if len(runs) == count:
            left_out += 1
            continue
        try:
            run = _load(candidate.path, [])
        except ResultsError as exc:
            errors.append(str(exc))
            continue
        if not runs and same_commit:
            commit = run.commit
        runs.append(run)
    if not runs:
        other_than = f" other than run {exclude_run_id}" if exclude_run_id else ""
        first = f"; {len(errors)} unreadable, the first: {errors[0]}" if errors else ""
        raise ResultsError(f"no finished results document{other_than} in {directory}{first}")
    notes = [f"skipped {len(errors)} unreadable results file{'s' if len(errors) > 1 else ''} "
             f"in {directory}; the first: {errors[0]}"] if errors else []
    if count > 1:
        what = f"{len(runs)} newest finished run{'s' if len(runs) != 1 else ''} in {directory}"
        if commit:
            what += f", of commit {commit[:12]} (the newest run's)"
        extra = []
        if other:
            extra.append(f"{other} of other or unknown commits left out")
        if left_out:
            extra.append(f"{left_out} older left out (--baseline-runs {count})")
        notes.append(f"baseline: the {what}" + (f"; {', '.join(extra)}" if extra else ""))
    return runs, notes


def _load(path: Path, notes: list[str]) -> Run:
    doc = load(path)
    rpath = existing_records_path(path, doc, "a comparison")
    try:
        columns = read_columns(rpath)
    except OSError as exc:
        raise ResultsError(f"{rpath}: cannot read ({exc.strerror})") from None
    return Run(path, doc, columns, notes)


def _directory(spec: str | Path, default_dir: str | Path) -> Path | None:
    if str(spec) == LATEST:
        return Path(default_dir)
    return Path(spec) if Path(spec).is_dir() else None


def _newest_of(spec: str | Path, directory: Path, count: int, exclude_run_id: str | None, *,
               same_commit: bool, latest_from: str | None) -> tuple[list[Run], list[str]]:
    """_newest, its error saying where `latest` pointed: a user who did not name the
    directory must learn which one was searched, and why that one."""
    try:
        return _newest(directory, count, exclude_run_id, same_commit)
    except ResultsError as exc:
        if str(spec) != LATEST or latest_from is None:
            raise
        raise ResultsError(f"{exc} (latest: {latest_from})") from None


def load_run(spec: str | Path, default_dir: str | Path = DEFAULT_DIR, *,
             exclude_run_id: str | None = None, latest_from: str | None = None) -> Run:
    """Load a run from a results file, a directory of saved runs (the newest finished
    one) or "latest" (the newest in default_dir, the output directory; `latest_from`
    says where that came from, in errors), skipping run `exclude_run_id` when choosing
    from a directory. Any bad input raises one ResultsError naming the file."""
    directory = _directory(spec, default_dir)
    if directory is None:
        return _load(Path(spec), [])
    [run], notes = _newest_of(spec, directory, 1, exclude_run_id, same_commit=False,
                              latest_from=latest_from)
    run.notes = notes
    return run


def load_baseline(specs: str | Path | Sequence[str | Path],
                  default_dir: str | Path = DEFAULT_DIR, *,
                  runs: int = DEFAULT_BASELINE_RUNS,
                  exclude_run_id: str | None = None,
                  latest_from: str | None = None) -> Baseline:
    """The baseline runs named by specs: results files, directories of saved runs (the
    newest `runs` finished ones of the newest one's commit) or "latest" (default_dir;
    `latest_from` as in load_run). Per benchmark, the newest `runs` runs are compared.
    ResultsError on bad input."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    items = [specs] if isinstance(specs, str | Path) else list(specs)
    if not items:
        raise ValueError("a baseline needs at least one results file or directory")
    notes: list[str] = []
    loaded: list[Run] = []
    seen: set[Path] = set()
    for spec in items:
        directory = _directory(spec, default_dir)
        if directory is None:
            found = [] if Path(spec).resolve() in seen else [_load(Path(spec), [])]
        else:
            found, found_notes = _newest_of(spec, directory, runs, exclude_run_id,
                                            same_commit=True, latest_from=latest_from)
            notes += found_notes
        for run in found:
            if run.path.resolve() not in seen:
                seen.add(run.path.resolve())
                loaded.append(run)
    loaded.sort(key=lambda r: when(r.doc["started_at"]), reverse=True)
    commits = {r.commit for r in loaded}
    if len(loaded) > 1 and len(commits) > 1:
        named = ", ".join(sorted(c[:12] if c else "unknown" for c in commits))
        notes.append(f"baseline runs of {len(commits)} commits ({named}): their spread "
                     "includes any change between those commits")
    first = _directory(items[0], default_dir) or Path(items[0])
    return Baseline(loaded, first, runs, notes)
