"""What a server process tree costs the machine, read from /proc (Linux).

The client's own RSS says nothing about a server's: a managed server's memory and CPU
time are read here for its whole process tree (the process, its children by parent
pid, and anything left in its session, since the plugin starts each server in a
session of its own), so that a server which forks workers is counted whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ServerUsage:
    """A process tree's memory and CPU at one moment."""

    rss_bytes: int
    """Sum of VmRSS: resident memory now."""
    rss_peak_bytes: int
    """Sum of VmHWM: each process's own peak (an upper bound of the tree's peak)."""
    cpu_s: float
    """utime + stime of every process, plus cutime + cstime (its reaped children)."""
    processes: int

    def to_json(self) -> dict[str, Any]:
        return {"rss_bytes": self.rss_bytes, "rss_peak_bytes": self.rss_peak_bytes,
                "cpu_s": round(self.cpu_s, 3), "processes": self.processes}


NO_USAGE = ServerUsage(0, 0, 0.0, 0)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone, or not ours to read
        return None
    return text[text.rfind(")") + 2:].split()


def tree_pids(root: int) -> list[int]:
    """`root` and every live process below it (by parent pid) or in its session."""
    parents: dict[int, int] = {}
    sessions: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or fields[0] == "Z":
            continue
        parents[int(entry.name)] = int(fields[1])  # state ppid pgrp session ...
        sessions[int(entry.name)] = int(fields[3])
    if root not in parents:
        return []
    found = {root} | {pid for pid, sid in sessions.items() if sid == root}
    frontier = list(found)
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return sorted(found)


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with (PROC / str(pid) / "status").open() as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in keys:
                    out[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def usage(root: int) -> ServerUsage:
    """Memory and CPU of `root`'s process tree; zeros once it is gone."""
    rss = peak = ticks = count = 0
    for pid in tree_pids(root):
        fields = _stat(pid)
        if fields is None:
            continue
        # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
        kib = _status_kib(pid, ("VmRSS", "VmHWM"))
        rss += kib.get("VmRSS", 0) * 1024
        peak += kib.get("VmHWM", 0) * 1024
        count += 1
    return ServerUsage(rss, peak, ticks / _TICKS, count)
