"""What a report reads: results documents, their benchmark entries and their records.

`load_sources` takes files and directories (a directory gives every results document in
it, found by content as compare finds them) and returns one `Source` per document. Each
benchmark entry becomes a `Config` row, named by the document, the run id and the entry
id, so every figure of the report traces back to one entry and its records.

Several runs of one configuration (the same test, model, backend, device, precision,
task and load level: a repeated run, or the same suite merged from two days) are all
kept: the CSV has every one, and the tables and recommendations use the newest one and
say which older ones they leave out (`Config.superseded`), so a configuration never
competes with itself.

`scan_records` streams every source's records once (orjson, one line at a time): 100,000
records never sit in memory as dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pytest_vlmbench.results.document import ResultsError, load, loads, records_path
from pytest_vlmbench.results.models import BenchmarkEntry, Record, ResultsDocument


@dataclass(frozen=True)
class Source:
    """One results document: its path, its records file and the runs it holds."""

    path: Path
    doc: ResultsDocument
    records: Path | None
    """The records file; None when it is missing (figures from the summaries only)."""
    number: int
    """1-based position among the report's sources (`S1`, `S2`: the tables' references)."""

    @property
    def label(self) -> str:
        return f"S{self.number}"

    @property
    def run_ids(self) -> list[str]:
        runs = self.doc.get("runs")
        if isinstance(runs, list) and runs:
            # pytest-xdist workers' partials share one run id: one row per run
            return list(dict.fromkeys(str(r.get("run_id")) for r in runs
                                      if isinstance(r, Mapping)))
        return [self.doc["run_id"]]

    def header_of(self, run_id: str) -> Mapping[str, Any]:
        """The run's own header (command, environment, device): a merged document keeps
        each input run's in `runs`."""
        for run in self.doc.get("runs") or []:
            if isinstance(run, Mapping) and run.get("run_id") == run_id:
                return run
        return self.doc


CONFIG_FIELDS = ("test", "model", "backend", "device", "precision", "task", "level")
"""What makes two benchmark entries the same configuration (newest run wins in tables)."""


@dataclass
class Config:
    """One benchmark entry of one run: a row of the report."""

    key: str
    """Unique in the report: `S1:<run id>:<entry id>` (the CSV's `row` column)."""
    source: Source
    entry: BenchmarkEntry
    run_id: str
    label: str = ""
    """Short and unique among the report's shown rows: model, precision, and the device,
    backend, task or level where those differ (set by `label_configs`)."""
    superseded: list[Config] = field(default_factory=list)
    """Older runs of this configuration, left out of the tables (kept in the CSV)."""
    variant: str = ""
    """What tells apart configurations with one task, dataset name and level that still
    did different work (input mode, prompt version, dataset hash, as compare refuses to
    compare them); set by `mark_variants` only where they differ."""

    @property
    def model(self) -> str:
        return self.entry["model"]

    @property
    def backend(self) -> str:
        return self.entry["backend"]

    @property
    def device(self) -> str:
        return self.entry["device"]

    @property
    def precision(self) -> str:
        return self.entry["precision"]

    @property
    def task(self) -> str:
        return self.entry["task"]

    @property
    def test(self) -> str:
        return self.entry["test"]

    @property
    def summary(self) -> Mapping[str, Any]:
        return self.entry["summary"]

    @property
    def level(self) -> str | None:
        """The load level's label (`c4`, `r2.0`); None for a sequential benchmark."""
        load = self.entry.get("load")
        return None if load is None else load["label"]

    @property
    def modality(self) -> str:
        """`video` (scenes of a video), `image` or `text`: the headline table's groups."""
        if "video" in self.entry["dataset"]:
            return "video"
        return self.entry["input_mode"]

    @property
    def workload(self) -> tuple[str, str, str]:
        """(task, dataset, level): configurations with one workload did the same work, so
        their figures are comparable (recommendations, Pareto fronts and the tables'
        best values are per workload). The dataset part carries the `variant` where one
        name covers different work."""
        name = self.entry["dataset"]["name"]
        return (self.task, f"{name} [{self.variant}]" if self.variant else name,
                self.level or "seq")

    @property
    def work(self) -> tuple[str, str, str]:
        """What compare requires to be equal: input mode, prompt version, dataset hash."""
        return (self.entry["input_mode"], self.entry["prompt_version"],
                self.entry["dataset"]["hash"])

    @property
    def identity(self) -> tuple[str, ...]:
        return (self.test, self.model, self.backend, self.device, self.precision, self.task,
                self.level or "")

    @property
    def dataset(self) -> str:
        return self.entry["dataset"]["name"]

    @property
    def started_at(self) -> str:
        return self.entry["started_at"]

    @property
    def complete(self) -> bool:
        return self.entry["status"] == "complete"


class ReportInputError(ResultsError):
    """An input the report cannot read: one line naming it."""


def _results_in(directory: Path) -> list[Path]:
    from pytest_vlmbench.compare.runs import results_files

    return results_files(directory)


def expand(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given; a directory's results documents (found by content), sorted. An
    input that is neither, or a directory without results, is an error."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = _results_in(path)
            if not found:
                raise ReportInputError(f"{path}: no results documents in this directory")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise ReportInputError(f"{path}: no such results file or directory")
    unique: list[Path] = []
    for p in out:  # a file named twice (or inside a named directory) is read once
        if p.resolve() not in {u.resolve() for u in unique}:
            unique.append(p)
    return unique


def load_sources(inputs: Sequence[str | Path]) -> list[Source]:
    """Read every document (schema-checked). A missing records file is no error: the
    report is made from the summaries and says which figures need the records."""
    sources: list[Source] = []
    for n, path in enumerate(expand(inputs), 1):
        doc = load(path)
        rpath = records_path(path, doc)
        sources.append(Source(path, doc, rpath if rpath.is_file() else None, n))
    return sources


def configs_of(sources: Sequence[Source]) -> list[Config]:
    """Every benchmark entry of every source, in reading order."""
    out: list[Config] = []
    for src in sources:
        for entry in src.doc["benchmarks"]:
            run_id = entry.get("run_id") or src.doc["run_id"]
            out.append(Config(f"{src.label}:{run_id}:{entry['id']}", src, entry, run_id))
    return out


def newest(configs: Sequence[Config]) -> list[Config]:
    """One Config per configuration, the newest run's (by the entry's started_at), with
    the older ones in its `superseded`; in the order the configurations first appear."""
    groups: dict[tuple[str, ...], list[Config]] = {}
    for c in configs:
        groups.setdefault(c.identity, []).append(c)
    out = []
    for group in groups.values():
        # the newest complete run; a newer run that failed does not hide it (it is
        # listed among the older ones, in summary.csv)
        best = max(group, key=lambda c: (c.complete, c.started_at))
        best.superseded = [c for c in group if c is not best]
        out.append(best)
    mark_variants(out)
    label_configs(out)
    return out


def mark_variants(configs: Sequence[Config]) -> None:
    """Set `variant` on configurations whose task, dataset name and level are shared
    with others that did different work, naming only what differs."""
    base: dict[tuple[str, str, str], list[Config]] = {}
    for c in configs:
        c.variant = ""
        base.setdefault(c.workload, []).append(c)
    for group in base.values():
        works = {c.work for c in group}
        if len(works) < 2:
            continue
        differ = [i for i in range(3) if len({w[i] for w in works}) > 1]
        for c in group:
            mode, prompt, data = c.work
            parts = [(f"{mode} input", f"prompt {prompt[:8]}", f"data {data[:8]}")[i]
                     for i in differ]
            c.variant = ", ".join(parts)


def label_configs(configs: Sequence[Config]) -> None:
    """Give each Config a short label: model and precision, then the device, backend,
    task, level and test only where they vary; a run id as the last resort."""
    def varies(attr: str) -> bool:
        return len({getattr(c, attr) for c in configs}) > 1

    parts = [a for a in ("device", "backend", "task", "level") if varies(a)]
    for c in configs:
        extra = [str(getattr(c, a) or "seq") for a in parts]
        c.label = " ".join([c.model, c.precision, *extra])
    seen: dict[str, list[Config]] = {}
    fallbacks: tuple[Callable[[Config], str], ...] = (
        lambda c: c.dataset, lambda c: c.test.split("::")[-1].split("[")[0],
        lambda c: c.variant, lambda c: c.entry["id"].split("::")[-1], lambda c: c.key)
    for fallback in fallbacks:
        seen.clear()
        for c in configs:
            seen.setdefault(c.label, []).append(c)
        for same in seen.values():
            if len(same) > 1:
                for c in same:
                    tail = fallback(c)
                    c.label = f"{c.label} ({tail})" if tail else c.label


RECORD_KEYS = ("run_id", "benchmark", "seq", "phase")
"""What the report needs of every record to place it (the schema requires them)."""


def iter_records(source: Source) -> Iterator[Record]:
    """The source's records, one at a time (nothing when its records file is missing).
    A torn line (a killed run) is an error naming the file and line."""
    if source.records is None:
        return
    with source.records.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = loads(line)
            except ValueError as exc:
                raise ReportInputError(f"{source.records}:{lineno}: not a JSON record "
                                       f"({exc})") from None
            if not isinstance(record, dict) or not all(k in record for k in RECORD_KEYS):
                raise ReportInputError(f"{source.records}:{lineno}: not a record (a JSON "
                                       f"object with {', '.join(RECORD_KEYS)})")
            yield cast("Record", record)


def record_key(source: Source, record: Mapping[str, Any]) -> str:
    """The Config key a record belongs to (its run id and benchmark entry)."""
    return f"{source.label}:{record['run_id']}:{record['benchmark']}"
