"""The record stream: one JSON line per request, flushed the moment it completes.

Records are the ground truth every summary figure is computed from. They are
appended and flushed as each request finishes, so Ctrl-C, a crash or a killed CI job
loses at most the request in flight. The file is opened once per session, never per
request, and created the way open() creates files (0666 less the umask): the mode
results.write_text_atomic gives the results document beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # results.document imports this module: no import cycle at run time
    from pytest_vlmbench.results.models import Record


class RecordWriter:
    """Writes a run's records to a JSONL file, opened lazily on the first record.

    The file starts empty: a fixed --vlm-out name reused by a later run must not keep
    the earlier run's records under the new document (they would mix two run ids)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self.count = 0

    def write(self, record: Mapping[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        self._fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_records(path: Path) -> list[Record]:
    """All records of a JSONL file; a torn last line (killed mid-write) is reported.
    Typed as Record, not checked: load_with_records and `vlmbench validate` check them
    against the schema."""
    records: list[Record] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(cast("Record", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON record ({exc.msg})") from None
    return records
