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
from typing import IO


@dataclass
class Capture:
    """Where this operation's native output went, to quote it in an error."""

    path: Path | None
    offset: int = 0
    _fd: int | None = None
    _stream: IO[str] | None = None

    def text(self, max_lines: int = 12) -> str:
        if self.path is None or not self.path.exists():
            return ""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            lines = fh.read().decode("utf-8", "replace").splitlines()
        lines = [line for line in lines if line.strip()]
        return "\n".join(lines[-max_lines:])

    def reapply(self) -> None:
        """Point fd 2 and sys.stderr at the log again.

        Needed after anything that suspends and resumes pytest's capture (writing a
        progress line does): resuming re-points fd 2 and sys.stderr at pytest's own
        capture, and native output would leak into the test's captured stderr.
        """
        if self._fd is not None and self._stream is not None:
            os.dup2(self._fd, 2)
            sys.stderr = self._stream


@contextmanager
def native_stderr_to(path: Path | None, label: str) -> Iterator[Capture]:
    """Redirect fd 2 and sys.stderr to `path` (appending) inside the block.

    `None` leaves them alone (the user asked to see the backend's output).
    """
    if path is None:
        yield Capture(None)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"\n== {label} ==\n".encode())
        saved = os.dup(2)
        try:
            with (
                os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace", buffering=1)
                as py_err,
                redirect_stderr(py_err),
            ):
                capture = Capture(path, os.lseek(fd, 0, os.SEEK_END), fd, py_err)
                os.dup2(fd, 2)
                yield capture
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    finally:
        os.close(fd)
