"""The results document: one JSON file per run, validated against a shipped schema.

It is written atomically (temporary file, then rename) after every benchmark and at
the end of the session, so an interrupted run still leaves a valid document naming
the benchmarks that completed. It is validated on write and on load; a load error
names the file and the field.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

try:  # JSON text to Python, 3-5x the standard library's speed on 100,000-record files
    from orjson import loads as loads  # (re-exported: compare reads records with it)
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    from json import loads as loads  # type: ignore[assignment]

from pytest_vlmbench.results.models import Record, ResultsDocument
from pytest_vlmbench.run.records import read_records

SCHEMA_VERSION: Final = 1
KIND: Final = "pytest-vlmbench-results"


class ResultsError(Exception):
    """A results file that cannot be read or does not match the schema."""


@cache
def schema() -> dict[str, Any]:
    schema_file = files("pytest_vlmbench.results").joinpath("schema/results.schema.json")
    text = schema_file.read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # 80 ms: when a document is written

    return Draft202012Validator(schema())


@cache
def _record_validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    sub = {"$defs": schema()["$defs"], "$ref": "#/$defs/record"}
    return Draft202012Validator(sub)


def _first_error(validator: Draft202012Validator, doc: Any) -> str | None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    e = errors[0]
    where = "/".join(str(p) for p in e.absolute_path) or "(root)"
    return f"at {where}: {e.message}"


def validate(doc: Any, source: str = "results document") -> None:
    """Raise ResultsError naming the first offending field."""
    if isinstance(doc, dict) and doc.get("kind") == KIND:
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(
                f"{source}: schema_version {version!r}, this pytest-vlmbench reads "
                f"{SCHEMA_VERSION}"
            )
    error = _first_error(_validator(), doc)
    if error:
        raise ResultsError(f"{source}: not a valid pytest-vlmbench results document {error}")


def validate_record(record: Any, source: str = "record") -> None:
    error = _first_error(_record_validator(), record)
    if error:
        raise ResultsError(f"{source}: not a valid record {error}")


@cache
def record_fields() -> frozenset[str] | None:
    """The exact key set of every record, when the schema fixes it (all fields required,
    no others allowed); None otherwise."""
    sub = schema()["$defs"]["record"]
    fields = frozenset(sub["properties"])
    closed = sub.get("additionalProperties") is False
    return fields if closed and frozenset(sub.get("required", ())) == fields else None


def record_enum(name: str) -> frozenset[str]:
    """The values the schema allows for a record's enumerated field (phase, parse)."""
    return frozenset(schema()["$defs"]["record"]["properties"][name]["enum"])


SAMPLE_HEAD = 16
SAMPLE_EVERY = 4096


def torn_record(source: str | Path, lineno: int, exc: ValueError) -> ResultsError:
    msg = getattr(exc, "msg", str(exc))
    return ResultsError(f"{source}:{lineno}: not a JSON record ({msg}): torn or corrupt "
                        "records file")


def check_record(record: Any, source: str) -> None:
    """The full schema check of one record, and that it is an object.

    Readers of large records files (compare) call it on the first SAMPLE_HEAD records,
    every SAMPLE_EVERY-th, and any record whose keys are not exactly record_fields():
    the full check costs about 100x the parse. A record they then cannot use goes to
    explain_record, which names the file, the line and the field. `vlmbench validate`
    checks every record in full.
    """
    validate_record(record, source)
    if type(record) is not dict:  # a schema that allows it; we do not
        raise ResultsError(f"{source}: not a valid record (not an object)")


def explain_record(record: Any, source: str, problem: BaseException) -> ResultsError:
    """The error for a record a reader could not use: the schema's first complaint
    about it, else the reader's own."""
    try:
        validate_record(record, source)
    except ResultsError as exc:
        return exc
    return ResultsError(f"{source}: cannot read the record ({type(problem).__name__}: "
                        f"{problem})")


FILE_MODE = 0o666
"""What every file we write is created with, less the process umask, as open() does:
results, records, power trace and merged outputs then share one mode (tempfile's 0600
made the results file private while its records file beside it was not)."""


def _create_temp(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path`, created with FILE_MODE less the umask (the
    kernel applies the umask; reading it would mean setting it, which races threads)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename: a reader
    sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Validate, then write atomically."""
    validate(doc, str(path))
    try:
        text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # NaN or infinity somewhere: not JSON
        raise ResultsError(f"{path}: cannot write results: {exc}") from None
    write_text_atomic(path, text + "\n")


def load(path: Path) -> ResultsDocument:
    """Read and validate a results document; the schema check makes the typed read model
    true (tests/test_read_models.py keeps the models and the schema in step)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        doc = loads(data)
    except json.JSONDecodeError as exc:
        raise ResultsError(
            f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "truncated or not a results file?"
        ) from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ResultsError(f"{path}: not a pytest-vlmbench results document (no kind={KIND!r})")
    validate(doc, str(path))
    return cast(ResultsDocument, doc)


def records_path(results_path: Path, doc: Mapping[str, Any]) -> Path:
    """Where a document's records live (stored relative to the document); a Mapping so
    that a ResultsDocument and a document still being built both pass."""
    return results_path.parent / str(doc["records_file"])


def existing_records_path(path: Path, doc: Mapping[str, Any], needed_for: str) -> Path:
    """The document's records file; a missing one is an error naming what needs it:
    comparing or merging without the records would silently lose the run's ground truth."""
    rpath = records_path(path, doc)
    if not rpath.is_file():
        raise ResultsError(
            f"{path}: records file {rpath} is missing; {needed_for} needs the per-request "
            "records (keep the .records.jsonl next to the results file)"
        )
    return rpath


def load_with_records(path: Path, needed_for: str) -> tuple[ResultsDocument, list[Record]]:
    """A document and its records, every one validated. A missing records file is an
    error (`needed_for` says what needs it): comparing or merging without the records
    would silently lose the run's ground truth."""
    doc = load(path)
    rpath = existing_records_path(path, doc, needed_for)
    try:
        records = read_records(rpath)
    except ValueError as exc:
        raise ResultsError(f"{exc}: torn or corrupt records file") from None
    except OSError as exc:
        raise ResultsError(f"{rpath}: cannot read ({exc.strerror})") from None
    for i, record in enumerate(records, 1):
        validate_record(record, f"{rpath}:{i}")
    return doc, records
