"""Keep native libraries' output (llama.cpp, ggml, mtmd) out of the terminal, and
Ctrl-C working while they run.

Output. llama.cpp logs through a callback; llama-cpp-python 0.3.36 installs one that
writes to Python's `sys.stderr`, drops everything but ERROR under `verbose=False`, and
numbers the levels from an older ggml: its "ERROR" is ggml's WARN and ggml's ERROR (4)
counts as DEBUG, so llama.cpp's own reason for a failed load ("gguf_init_from_reader:
failed to read key-value pairs", "invalid magic characters") was dropped; and during a
load it points `sys.stderr` and fd 2 at /dev/null anyway. A backend that logs through
`route_line` instead has its lines written to our log file's own descriptor (no
redirection can lose them), ERROR lines remembered for its error messages
(`errors_since`), and DEBUG lines dropped: they are per-tensor load steps and mtmd's
echo of every prompt it tokenises (`add_text: ...`), and a log must not keep prompts.
What prints from C straight to file descriptor 2 is caught by pointing fd 2 at the
log for the duration of a load or a benchmark (`native_stderr_to`); when something
fails, the message quotes what the library printed during that operation.

Ctrl-C. Python runs a SIGINT handler at the next bytecode, and during a native call
the only bytecode that runs is a ctypes callback (the log callback, a load's progress
callback); a KeyboardInterrupt raised there is printed as "Exception ignored on
calling ctypes callback function" and lost, and the run went on. `sigint_deferred`
records the signal instead, native code polls `interrupt_pending()` (a load's progress
callback returns False: llama.cpp aborts the load), and the KeyboardInterrupt is raised
once control is back in Python.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

# ggml's log levels (ggml.h, enum ggml_log_level), as llama-cpp-python 0.3.36's build sends them.
LEVEL_NONE, LEVEL_DEBUG, LEVEL_INFO, LEVEL_WARN, LEVEL_ERROR, LEVEL_CONT = range(6)
_TERMINAL = -1  # route target: the user asked to see the backend's output (fd 2)


class _Router:
    """Where `route_line` sends a line now: the innermost `native_stderr_to`'s log."""

    def __init__(self) -> None:
        self.targets: list[int] = []  # log file descriptors, or _TERMINAL
        self.last_level = LEVEL_INFO  # what a LEVEL_CONT line continues
        self.errors: deque[tuple[int, str]] = deque(maxlen=64)  # (sequence, ERROR line)
        self.error_count = 0


_ROUTER = _Router()


def route_line(level: int, text: bytes | None) -> None:
    """One line a native library logged (from its ctypes log callback): to the active
    log, or to the terminal. Never raises: an exception in a ctypes callback is lost."""
    if not text:
        return
    try:
        if level == LEVEL_CONT:
            level = _ROUTER.last_level
        else:
            _ROUTER.last_level = level
        target = _ROUTER.targets[-1] if _ROUTER.targets else None
        if level == LEVEL_DEBUG and target != _TERMINAL:
            return  # they echo every prompt: only for a user who asked to see it all
        if level == LEVEL_ERROR:
            line = text.decode("utf-8", "replace").strip()
            if line:
                _ROUTER.errors.append((_ROUTER.error_count, line))
                _ROUTER.error_count += 1
        if target is None:  # outside any operation: only errors, as llama.cpp's default
            if level == LEVEL_ERROR:
                os.write(2, text)
        else:
            os.write(2 if target == _TERMINAL else target, text)
    except Exception:
        return


_KEPT: list[object] = []


def keep_alive(*callbacks: object) -> None:
    """Keep ctypes callbacks handed to a native library alive for the whole process.

    The library keeps the pointer; the module that made the callback may be unloaded
    before (pytester's in-process runs drop the modules they imported), and a call
    through a freed callback crashes the process. This module is the plugin's own and
    outlives them.
    """
    _KEPT.extend(callbacks)


def error_mark() -> int:
    """A position in the ERROR lines logged so far, for `errors_since`."""
    return _ROUTER.error_count


def errors_since(mark: int) -> list[str]:
    """The ERROR lines native libraries logged since `mark` (the last 64 at most)."""
    return [line for seq, line in list(_ROUTER.errors) if seq >= mark]


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
    """Redirect fd 2, sys.stderr and `route_line` to `path` (appending) inside the block.

    `None` leaves fd 2 alone and sends routed lines to it (the user asked to see the
    backend's output).
    """
    if path is None:
        _ROUTER.targets.append(_TERMINAL)
        try:
            yield Capture(None)
        finally:
            _ROUTER.targets.pop()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, f"\n== {label} ==\n".encode())
        saved = os.dup(2)
        _ROUTER.targets.append(fd)
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
            _ROUTER.targets.pop()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    finally:
        os.close(fd)


# -- Ctrl-C around native calls ----------------------------------------------------
class _Sigint:
    pending = False  # a SIGINT arrived inside a `sigint_deferred` block


_SIGINT = _Sigint()


def _record_sigint(signum: int, frame: FrameType | None) -> None:
    _SIGINT.pending = True


def interrupt_pending() -> bool:
    """Whether Ctrl-C was pressed inside the current `sigint_deferred` block (native
    code polls this: a load's progress callback, the generation loop)."""
    return _SIGINT.pending


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt a deferred Ctrl-C stands for, now (in Python)."""
    if _SIGINT.pending:
        _SIGINT.pending = False
        raise KeyboardInterrupt


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Inside the block, Ctrl-C is recorded (`interrupt_pending`) instead of raised, and
    raised as KeyboardInterrupt when the block ends, even if it ends with an error.

    Wrap native calls that may call back into Python (see the module docstring). Only
    the main thread receives signals, so elsewhere this does nothing; nor does it when
    SIGINT is ignored or its handler was not set from Python. The previous handler is
    restored and decides what the deferred signal does (by default: KeyboardInterrupt).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, _record_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if _SIGINT.pending:
            _SIGINT.pending = False
            if previous is _record_sigint:  # nested: raise here, the outer block is Python
                raise KeyboardInterrupt
            signal.raise_signal(signal.SIGINT)  # the restored handler acts on it now
