"""llama.cpp's, ggml's and mtmd's native callbacks: log lines and load progress.

Log lines go through `native_log.route_line` (looked up here at call time, so a test may
replace it); a load's progress callback returns False once Ctrl-C is pending, which makes
llama.cpp (and mtmd, for a projector) abort the load. The ctypes wrappers are kept alive
for as long as the process: llama.cpp keeps the pointers.
"""

from __future__ import annotations

import ctypes
from typing import Any

from pytest_vlmbench.backends.native_log import interrupt_pending, keep_alive, route_line

import llama_cpp  # isort: skip  # the backend's modules are imported only when used


def _log_line(level: int, text: bytes | None, user_data: Any) -> None:
    """llama.cpp's (and ggml's, mtmd's) log callback: see native_log.route_line."""
    route_line(level, text)


def _continue_load(progress: float, user_data: Any) -> bool:
    """A load's progress callback: False (Ctrl-C pressed) makes llama.cpp abort the load."""
    return not interrupt_pending()


LOG_CALLBACK = llama_cpp.llama_log_callback(_log_line)
LOAD_PROGRESS = llama_cpp.llama_progress_callback(_continue_load)
keep_alive(LOG_CALLBACK, LOAD_PROGRESS)  # llama.cpp keeps the pointers
llama_cpp.llama_log_set(LOG_CALLBACK, ctypes.c_void_p(0))
_MTMD_PROGRESS: list[Any] = []  # set up with the first vision model (see mtmd_hooks)


def mtmd_hooks(mtmd: Any) -> Any:
    """Route mtmd's own log hooks (it has its own, and its helpers too) like llama.cpp's,
    once; return the progress callback for projector loads."""
    if not _MTMD_PROGRESS:
        mtmd.mtmd_log_set(LOG_CALLBACK, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(LOG_CALLBACK, ctypes.c_void_p(0))
        progress = mtmd.mtmd_progress_callback(_continue_load)
        keep_alive(progress)
        _MTMD_PROGRESS.append(progress)
    return _MTMD_PROGRESS[0]
