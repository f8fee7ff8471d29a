"""A manifest: a file that lists images, each with an optional id, text description and
ground truth; for a chosen set of photos, or photos that text-only models should get
described in words.

Two formats, by suffix; image paths are relative to the manifest's folder:

- ``.jsonl``: one JSON object a line, ``{"image": "a.jpg", "id": "a", "description":
  "A red kite over a beach.", "truth": {"score": 7}}``; only ``image`` is required.
- ``.csv``: a header row with an ``image`` column; ``id`` and ``description`` columns
  are read as such, every other column goes into the sample's truth (as text).

A row's id defaults to its image path as written. The selection (``limit``, ``seed``)
is `select_ids`'s, over the ids; samples come in the manifest's order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vlmbench.datasets import DatasetArgumentError, Sample, Selection
from pytest_vlmbench.datasets.images import file_digest, select_ids, some_of

SUFFIXES = (".jsonl", ".csv")
"""The manifest formats, by file suffix."""

_NAMED_MISSING = 3


@dataclass(frozen=True)
class _Row:
    id: str
    image: str
    description: str | None
    truth: Mapping[str, Any] = field(default_factory=dict)


class ManifestDataset:
    """The images a manifest file lists (`SUFFIXES`), optionally a seeded sample.

    A listed image that is missing stays a sample (its requests record "file not
    found", as a folder's unreadable photo does) and `notes()` names it; a manifest
    whose images are all missing is refused.

    Example::

        ManifestDataset("album/picks.jsonl", limit=20, seed=7)
    """

    name: str = "manifest"

    def __init__(self, path: str | os.PathLike[str], *, limit: int | None = None,
                 seed: int = 0) -> None:
        call = manifest_call(path, limit)
        if not isinstance(path, (str, os.PathLike)):
            raise DatasetArgumentError(
                f"{call}: path must be a manifest file (a str or a Path), got "
                f"{type(path).__name__}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise DatasetArgumentError(
                f"{call}: limit must be a whole number of at least 1 (or None for every "
                f"image), got {limit!r}")
        self.path = Path(path)
        self.limit = limit
        self.seed = seed
        rows = _read(self.path, call)
        chosen = set(select_ids([row.id for row in rows], limit, seed))
        self._rows = [row for row in rows if row.id in chosen]
        self.available = len(rows)
        """How many images the manifest lists, before the limit chose."""
        self.ids = tuple(row.id for row in self._rows)
        """The chosen ids, in the manifest's order: what `samples()` yields."""
        self.missing = tuple(row.image for row in rows if not self._file(row).is_file())
        if len(self.missing) == len(rows):
            raise DatasetArgumentError(
                f"{call}: none of its {len(rows)} images exists (relative to "
                f"{self.path.parent}), e.g. {self.missing[0]}")
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"ManifestDataset({str(self.path)!r}, limit={self.limit!r}, seed={self.seed!r})"

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def label(self) -> str:
        """How messages name this dataset: ``manifest:PATH`` (see `dataset_label`)."""
        return f"{self.name}:{self.path}"

    def selection(self) -> Selection:
        """The seed, the limit and the chosen ids, in the manifest's order
        (`DatasetSelection`)."""
        return {"seed": self.seed, "limit": self.limit, "ids": list(self.ids)}

    def notes(self) -> list[str]:
        """One line naming the listed images that do not exist, if any (`DatasetNotes`)."""
        if not self.missing:
            return []
        count = len(self.missing)
        return [f"manifest {self.path}: {count} listed image{'s' if count > 1 else ''} "
                f"not found: {some_of(self.missing, _NAMED_MISSING)}"]

    def _file(self, row: _Row) -> Path:
        return self.path.parent / row.image

    def samples(self) -> Iterator[Sample]:
        """Yield the chosen rows in the manifest's order."""
        for row in self._rows:
            file = self._file(row)
            yield Sample(id=row.id, source=str(file), load_image=file.read_bytes,
                         description=row.description, truth=row.truth)

    def fingerprint(self) -> str:
        """Hash the selection, each row's id, description, truth and image bytes; not
        where the manifest is, so a copy elsewhere is the same dataset."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            params = {"dataset": self.name, "limit": self.limit, "seed": self.seed}
            digest.update(json.dumps(params, sort_keys=True).encode())
            for row in self._rows:
                entry = [row.id, row.description, dict(row.truth), file_digest(self._file(row))]
                digest.update(b"\n" + json.dumps(entry, sort_keys=True).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def manifest_call(path: object, limit: object) -> str:
    """The constructor call as written, to start error messages with."""
    given = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    return f"ManifestDataset({given!r}" + ("" if limit is None else f", limit={limit!r}") + ")"


def _read(path: Path, call: str) -> list[_Row]:
    """The manifest's rows, checked: each has an image, ids are unique, there is one."""
    if path.suffix.lower() not in SUFFIXES:
        raise DatasetArgumentError(
            f"{call}: a manifest must be {' or '.join(SUFFIXES)}, got {path.name!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a spreadsheet's export
    except FileNotFoundError:
        raise DatasetArgumentError(f"{call}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetArgumentError(f"{call}: cannot read it ({exc})") from None
    raw = _jsonl(text, call) if path.suffix.lower() == ".jsonl" else _csv(text, call)
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    for line, fields in raw:
        row = _row(fields, f"{call}: line {line}")
        if row.id in seen:
            raise DatasetArgumentError(
                f"{call}: line {line}: id {row.id!r} is already on line {seen[row.id]}")
        seen[row.id] = line
        rows.append(row)
    if not rows:
        raise DatasetArgumentError(f"{call}: lists no images")
    return rows


def _jsonl(text: str, call: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetArgumentError(f"{call}: line {number}: not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise DatasetArgumentError(
                f"{call}: line {number}: expected an object such as "
                f'{{"image": "a.jpg"}}, got {type(value).__name__}')
        rows.append((number, value))
    return rows


def _csv(text: str, call: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "image" not in reader.fieldnames:
        raise DatasetArgumentError(
            f"{call}: the first row must name the columns, one of them 'image'; got "
            f"{reader.fieldnames or 'nothing'}")
    rows = []
    for row in reader:
        if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
            continue  # a blank line
        known = {key: value for key, value in row.items() if key in ("image", "id", "description")}
        truth = {key: value for key, value in row.items()
                 if key not in known and isinstance(key, str)}
        rows.append((reader.line_num, {**known, "truth": truth}))
    return rows


def _row(fields: Mapping[str, Any], where: str) -> _Row:
    image, image_id = fields.get("image"), fields.get("id")
    description, truth = fields.get("description"), fields.get("truth", {})
    if not isinstance(image, str) or not image.strip():
        raise DatasetArgumentError(f"{where}: 'image' must be a path to an image, got {image!r}")
    if image_id in (None, ""):
        image_id = image.strip()
    for key, value, kind in (("id", image_id, str), ("description", description, str | None),
                             ("truth", truth, dict)):
        if not isinstance(value, kind):
            raise DatasetArgumentError(
                f"{where}: {key!r} must be {'an object' if key == 'truth' else 'text'}, "
                f"got {value!r}")
    if description is not None and not description.strip():
        description = None  # an empty CSV cell: no description
    return _Row(id=unicodedata.normalize("NFC", str(image_id).replace("\\", "/")),
                image=image.strip(), description=description, truth=truth)
