"""Keep native libraries' stderr chatter (llama.cpp, ggml, mtmd) out of the terminal.

llama.cpp prints from C straight to file descriptor 2, which Python's sys.stderr
redirection cannot catch, while llama-cpp-python's log callback writes to Python's
`sys.stderr`, which an fd redirect cannot catch. We point both at a log file for the
duration of a load or a benchmark and put them back afterwards; when something fails,
the message quotes the lines the library printed during that operation, so nothing
useful is lost.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Capture:
    """Where this operation's native output went, to quote it in an error."""

    path: Path | None
    offset: int = 0

    def text(self, max_lines: int = 12) -> str:
        if self.path is None or not self.path.exists():
            return ""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            lines = fh.read().decode("utf-8", "replace").splitlines()
        lines = [line for line in lines if line.strip()]
        return "\n".join(lines[-max_lines:])


@contextmanager
def native_stderr_to(path: Path | None, label: str) -> Iterator[Capture]:
    """Redirect fd 2 to `path` (appending) inside the block; `None` leaves it alone."""
    if path is None:
        yield Capture(None)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"\n== {label} ==\n".encode())
        capture = Capture(path, os.lseek(fd, 0, os.SEEK_END))
        saved = os.dup(2)
        try:
            os.dup2(fd, 2)
            with (
                os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace", buffering=1)
                as py_err,
                redirect_stderr(py_err),
            ):
                yield capture
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    finally:
        os.close(fd)
