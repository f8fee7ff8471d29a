"""Merge results documents: several runs (devices, days, pytest-xdist workers) into one.

Nothing is summarised again and nothing is dropped: every benchmark entry (tagged with
its run_id), every load entry (tagged too) and every record is carried over, and each
input run keeps its own header (command, settings, environment, device) in `runs`, so
the merged document still says where each figure came from. Records are the ground
truth, so the merge refuses anything that would count one twice: the same run from two
files, the same (run_id, benchmark) entry twice, the same (run_id, benchmark, seq)
record twice. pytest-xdist workers share one run_id, so that first check can be turned
off (`shared_run_id`); the other two always apply.

The records file is written first and the document last, both atomically, so the
document never names a records file that is not there.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_vlmbench import __version__
from pytest_vlmbench.results import naming
from pytest_vlmbench.results.document import (
    KIND,
    SCHEMA_VERSION,
    ResultsError,
    load_with_records,
    records_path,
    validate,
    write_atomic,
    write_text_atomic,
)
from pytest_vlmbench.results.models import (
    BenchmarkEntry,
    LoadEntry,
    Record,
    ResultsDocument,
    Window,
)
from pytest_vlmbench.run import environment

Document = dict[str, Any]
"""The merged document as it is built (validated against the schema before it is kept)."""
LoadedInput = tuple[Path, ResultsDocument, list[Record]]

# weakest first: a run still "running" in its file never finished (killed, or in flight)
_STATUS_ORDER = ("running", "interrupted", "complete")


class MergeError(ResultsError):
    """Inputs that cannot be merged without losing or double-counting something."""


class MergeWarning(UserWarning):
    """Something kept but worth a look (records with no benchmark entry)."""


@dataclass
class Merged:
    """A merged document, its records, and what the merge kept but warns about."""

    document: Document
    records: list[Record]
    warnings: list[str] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        """Distinct runs merged (pytest-xdist workers of one run count once)."""
        return list(dict.fromkeys(str(h["run_id"]) for h in self.document["runs"]))


def new_run_id(now: datetime | None = None) -> str:
    """A merge is a run of its own; its id says it was merged."""
    return naming.new_run_id(now, prefix="merged-")


def read_input(path: Path) -> LoadedInput:
    """A document and its records, both validated; a missing records file is an error
    because merging without it would silently lose the run's ground truth."""
    try:
        doc, records = load_with_records(path, "a merge")
    except ResultsError as exc:
        raise MergeError(str(exc)) from None
    return path, doc, records


def _run_ids_of(doc: ResultsDocument) -> list[str]:
    """The runs a document holds: its `runs` headers when merged, else itself."""
    if doc.get("runs"):
        return list(dict.fromkeys(str(h["run_id"]) for h in doc["runs"]))
    return [str(doc["run_id"])]


def _header(path: Path, doc: ResultsDocument, n_benchmarks: int, n_records: int) -> dict[str, Any]:
    return {
        "run_id": doc["run_id"],
        "source": path.name,
        "started_at": doc["started_at"],
        "finished_at": doc["finished_at"],
        "status": doc["status"],
        "command": doc["command"],
        "settings": doc["settings"],
        "environment": doc["environment"],
        "device": doc["device"],
        "tool": doc["tool"],
        "power": doc.get("power"),
        "power_trace_file": doc.get("power_trace_file"),
        "records_file": doc["records_file"],
        "benchmarks": n_benchmarks,
        "records": n_records,
    }


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _extreme_time(texts: Iterable[Any], latest: bool) -> Any:
    """The earliest (or latest) parsable timestamp; the first value when none parses."""
    values = list(texts)
    parsed = [(t, v) for v in values if (t := _parse_time(v)) is not None]
    if not parsed:
        return values[0] if values else None
    pick = max if latest else min
    return pick(parsed, key=lambda p: p[0])[1]


def _device(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's device; when runs differ, still that one (name stays a string) with
    the mix spelled out, so nobody reads a multi-device document as one device's."""
    first = dict(runs[0]["device"])
    names = list(dict.fromkeys(str(h["device"].get("name")) for h in runs))
    if len(names) > 1:
        first["mixed"] = names
        first["evidence"] = (
            f"{first.get('evidence')}; mixed: merged runs ran on devices "
            f"{', '.join(names)} (see runs[].device)"
        )
    return first


def _power(docs: list[LoadedInput]) -> dict[str, Any] | None:
    """The first input's power block when every input used the same meter, else a
    block that says why there is no single one (each run's stays in its header)."""
    blocks = [d.get("power") for _, d, _ in docs]
    if blocks[0] is None:
        return None
    meters = list(dict.fromkeys(str(b.get("meter")) if b else "none" for b in blocks))
    if len(meters) == 1:
        return dict(blocks[0])
    return {
        "requested": blocks[0].get("requested"),
        "meter": None,
        "absent_reason": f"merged runs used different power meters ({', '.join(meters)}); "
        "see runs[].power",
    }


def merge_loaded(
    docs: list[LoadedInput],
    *,
    records_file: str,
    shared_run_id: bool = False,
    run_id: str | None = None,
    command: list[str] | None = None,
) -> Merged:
    """Merge loaded inputs in memory; MergeError names both files of any duplicate.

    `shared_run_id` allows one run_id in several inputs (pytest-xdist workers); duplicate
    entries and records are refused either way. `run_id` defaults to the one shared run
    id when every input belongs to it, else a new `merged-...` id.
    """
    if not docs:
        raise MergeError("nothing to merge: no input documents")
    seen_path: dict[Path, Path] = {}
    run_owner: dict[str, Path] = {}
    for path, doc, _ in docs:
        resolved = path.resolve()
        if resolved in seen_path:
            raise MergeError(f"{path} is given twice (also as {seen_path[resolved]})")
        seen_path[resolved] = path
        for rid in _run_ids_of(doc):
            if rid in run_owner and not shared_run_id:
                raise MergeError(
                    f"run {rid} is in both {run_owner[rid]} and {path}: the same run merged "
                    "twice? (only pytest-xdist workers of one run share a run id; allow "
                    "that with --shared-run-ids)"
                )
            run_owner.setdefault(rid, path)

    first_doc = docs[0][1]
    methods: dict[str, str] = dict(first_doc["methods"])
    runs: list[dict[str, Any]] = []
    benchmarks: list[BenchmarkEntry] = []
    loads: list[LoadEntry] = []
    records: list[Record] = []
    notes: list[str] = []
    entry_owner: dict[tuple[str, str], Path] = {}
    record_owner: dict[tuple[str, str, int], str] = {}

    for path, doc, doc_records in docs:
        doc_run = str(doc["run_id"])
        rpath = records_path(path, doc)
        keys: set[tuple[str, str]] = set()
        for found in doc["benchmarks"]:
            entry: BenchmarkEntry = {**found, "run_id": str(found.get("run_id") or doc_run)}
            key = (str(entry.get("run_id")), entry["id"])
            if key in entry_owner:
                other = entry_owner[key]
                where = "twice in" if other == path else f"in both {other} and"
                raise MergeError(f"benchmark {key[1]!r} of run {key[0]} is {where} {path}")
            entry_owner[key] = path
            keys.add(key)
            entry["records"] = {**entry["records"], "file": records_file}
            benchmarks.append(entry)
        for load in doc["loads"]:
            loads.append({**load, "run_id": str(load.get("run_id") or doc_run)})

        orphans: dict[str, int] = {}
        for i, record in enumerate(doc_records, 1):
            rkey = (str(record["run_id"]), str(record["benchmark"]), int(record["seq"]))
            origin = f"{rpath} (record {i})"
            if rkey in record_owner:
                raise MergeError(
                    f"record seq {rkey[2]} of benchmark {rkey[1]!r}, run {rkey[0]}, is in both "
                    f"{record_owner[rkey]} and {origin}"
                )
            record_owner[rkey] = origin
            if rkey[:2] not in keys:
                orphans[rkey[1]] = orphans.get(rkey[1], 0) + 1
            records.append(record)
        if orphans:
            notes.append(
                f"{rpath}: kept {sum(orphans.values())} records of {len(orphans)} benchmark(s) "
                f"with no entry in {path.name} (an interrupted run?): {', '.join(orphans)}"
            )

        if doc.get("runs"):  # an already-merged document: carry its headers over, flat
            headers = [dict(h) for h in doc["runs"]]
        else:
            headers = [_header(path, doc, len(doc["benchmarks"]), len(doc_records))]
            if orphans:
                headers[0]["records_without_entry"] = sum(orphans.values())
        differ = sorted(
            k for k in set(methods) | set(doc["methods"])
            if methods.get(k) != doc["methods"].get(k)
        )
        if differ:
            for h in headers:
                h["methods_differ"] = {k: doc["methods"].get(k) for k in differ}
                h["notes"] = [*h.get("notes", []), (
                    "methods differ from the merged document's (those of "
                    f"{docs[0][0].name}) in: {', '.join(differ)}"
                )]
        runs.extend(headers)

    statuses = [str(d["status"]) for _, d, _ in docs]
    status = min(statuses, key=_STATUS_ORDER.index)
    ids = list(dict.fromkeys(str(h["run_id"]) for h in runs))
    if run_id is None:
        run_id = ids[0] if shared_run_id and len(ids) == 1 else new_run_id()
    document: Document = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "pytest-vlmbench", "version": __version__},
        "run_id": run_id,
        "started_at": _extreme_time((d["started_at"] for _, d, _ in docs), latest=False),
        "finished_at": None if status == "running"
        else _extreme_time((d["finished_at"] for _, d, _ in docs), latest=True),
        "status": status,
        "command": command if command is not None else environment.redact_argv(list(sys.argv)),
        "settings": dict(runs[0]["settings"]),
        "environment": dict(runs[0]["environment"]),
        "device": _device(runs),
        "methods": methods,
        "loads": loads,
        "benchmarks": benchmarks,
        "records_file": records_file,
        "runs": runs,
        "power_trace_file": None,  # traces stay beside their runs: runs[].power_trace_file
    }
    power = _power(docs)
    if power is not None:
        document["power"] = power
    windows = _windows(docs)
    if windows:
        document["windows"] = windows
    validate(document, "merged document")
    return Merged(document, records, notes)


def _windows(docs: list[LoadedInput]) -> list[Window]:
    """Every input's vlm_power windows, each keeping its run id. pytest-xdist workers
    share a run id and number their windows from 1 each, so a window is one per
    (run id, test, name, seq); the same one twice is two inputs of one run."""
    seen: dict[tuple[str, str, str, int], Path] = {}
    out: list[Window] = []
    for path, doc, _ in docs:
        for window in doc.get("windows", []):
            key = (window["run_id"], window["test"], window["name"], window["seq"])
            if key in seen:
                raise MergeError(f"window {key[2]!r} (#{key[3]}) of {key[1]}, run {key[0]}, "
                                 f"is in both {seen[key]} and {path}")
            seen[key] = path
            out.append(window)
    return sorted(out, key=lambda w: (w["run_id"], w["test"], w["seq"]))


def _write_records_atomic(path: Path, records: list[Record]) -> None:
    write_text_atomic(path, "".join(
        json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        for record in records
    ))


def write_merged(merged: Merged, out: Path) -> None:
    """Records first, then the document, so the document never names a missing file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_records_atomic(out.parent / merged.document["records_file"], merged.records)
    write_atomic(out, merged.document)


def merge_files(
    inputs: list[Path], out: Path, *, shared_run_id: bool = False, force: bool = False,
    command: list[str] | None = None,
) -> Merged:
    """Read, merge and write; refuses an existing OUT (unless `force`) or OUT as an input."""
    if not inputs:
        raise MergeError("nothing to merge: no input documents")
    rout = naming.records_file(out)
    if not force:
        for target in (out, rout):
            if target.exists():
                raise MergeError(f"{target} exists; use --force to overwrite it")
    targets = {out.resolve(): out, rout.resolve(): rout}
    for path in inputs:
        if path.resolve() in targets:
            raise MergeError(f"{path} is an input and the output; choose another OUT")
    loaded = [read_input(p) for p in inputs]
    for path, doc, _ in loaded:
        rpath = records_path(path, doc)
        if rpath.resolve() in targets:
            raise MergeError(
                f"{rpath} is the records file of input {path} and would be overwritten by "
                "the output; choose another OUT"
            )
    merged = merge_loaded(
        loaded, records_file=rout.name, shared_run_id=shared_run_id, command=command
    )
    write_merged(merged, out)
    return merged


def merge_documents(
    inputs: list[Path], out: Path, *, shared_run_id: bool = False, force: bool = False,
) -> Document:
    """Merge results files into OUT (and its records file); returns the merged document.

    Records kept without a benchmark entry are reported as MergeWarning.
    """
    merged = merge_files(inputs, out, shared_run_id=shared_run_id, force=force)
    for note in merged.warnings:
        warnings.warn(note, MergeWarning, stacklevel=2)
    return merged.document
