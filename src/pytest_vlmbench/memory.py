"""Process memory readings (Linux /proc; resource as the fallback for the peak).

Issue 4 adds sampled peaks and GPU memory; here: resident set size now, and the
kernel's high-water mark of the process, which includes everything loaded so far
(so a benchmark's `peak_rss_bytes` is "process peak up to the end of it").
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path


def rss_bytes() -> int | None:
    """Current resident set size, or None where /proc is not available."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int | None:
    """High-water mark of the process's resident set size (VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not maxrss:
        return None
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024  # macOS: bytes
