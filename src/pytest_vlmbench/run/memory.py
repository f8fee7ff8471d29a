"""Process memory readings (Linux /proc; resource as the fallback for the peak).

Resident set size now, and the kernel's high-water mark of the process. The mark can be
reset (Linux clear_refs), which gives an exact peak per benchmark and per model load;
the sampler (power/sampler.py) also samples RSS, for systems where it cannot.
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


_peak_seen = 0  # the largest high-water mark read so far, resets included


def peak_rss_bytes() -> int | None:
    """High-water mark of the process's resident set size over its whole life: the
    kernel's VmHWM, or the largest mark seen before a `reset_peak` if that was higher."""
    global _peak_seen
    hwm = hwm_since_reset()
    if hwm is None:
        return None
    _peak_seen = max(_peak_seen, hwm)
    return _peak_seen


def proc_kb(path: Path, key: str) -> int | None:
    """A ``Key:  N kB`` line of a /proc file (status, meminfo) in bytes; None where the
    file or the key is missing."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def hwm_since_reset() -> int | None:
    """The kernel's high-water mark (VmHWM): since the last `reset_peak`, if any."""
    hwm = proc_kb(Path("/proc/self/status"), "VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not maxrss:
        return None
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024  # macOS: bytes


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux: write 5 to /proc/self/clear_refs), so
    `hwm_since_reset` is the peak since now (`peak_rss_bytes` keeps the lifetime peak);
    False where that is not allowed."""
    peak_rss_bytes()  # remember the mark before it goes
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
