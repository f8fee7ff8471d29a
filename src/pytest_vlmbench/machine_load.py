"""How busy the machine was while a benchmark ran: the evidence behind a "busy" warning.

Measured here (DESIGN.md): beside another job, a run was faster with 1 thread than
with 2, the reverse of a quiet machine, and between runs the speed drifts 10-25%.
Numbers taken on a busy machine describe the machine, not the model, so every
benchmark records what else used the CPUs during its window:

- other_cpu_fraction: CPU time used by everything but this process on the CPUs this
  process may run on (their /proc/stat busy jiffies minus our own user+system time,
  children included), as a fraction of the window's wall time times those CPUs;
- steal_fraction: time the hypervisor gave our virtual CPUs to someone else (steal
  jiffies / all jiffies), the shared-cloud kind of busy;
- loadavg_1m: the 1-minute load average at the end (it includes our own threads).

`busy` is true when others took more than BUSY_OTHER_FRACTION of the CPUs or steal
exceeded BUSY_STEAL_FRACTION; None (unknown) for a window under MIN_WINDOW_S, where the
counters' 10 ms ticks make the fractions too coarse to judge. Where /proc/stat is
missing (not Linux) the fractions are None and `busy` is None: unknown, never guessed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSY_OTHER_FRACTION = 0.10
BUSY_STEAL_FRACTION = 0.05
MIN_WINDOW_S = 2.0
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    """One reading over the CPUs this process may run on: their jiffies (busy, steal,
    total), our own CPU seconds, how many CPUs, and the clock."""

    busy_jiffies: int | None
    steal_jiffies: int | None
    total_jiffies: int | None
    own_cpu_s: float
    wall_ns: int
    cpus: int = 1


def _fields(line: list[str]) -> tuple[int, int, int] | None:
    try:
        fields = [int(v) for v in line[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _proc_stat(path: Path, cpus: frozenset[int] | None) -> tuple[int, int, int, int] | None:
    """(busy, steal, total) jiffies summed over `cpus` (the per-CPU `cpuN` lines; all of
    the machine's `cpu` line when None), and how many CPUs that was; None if unreadable.

    Only the CPUs we may use count: a neighbour saturating our 8 of 128 CPUs distorts
    our numbers, load on the other 120 does not."""
    try:
        lines = [line.split() for line in path.read_text().splitlines()]
    except OSError:
        return None
    if cpus is None:
        first = next((f for f in lines if f and f[0] == "cpu"), None)
        got = _fields(first) if first else None
        return None if got is None else (*got, os.cpu_count() or 1)
    totals = [0, 0, 0]
    seen = 0
    for f in lines:
        if f and f[0].startswith("cpu") and f[0][3:].isdigit() and int(f[0][3:]) in cpus:
            got = _fields(f)
            if got is None:
                return None
            totals = [a + b for a, b in zip(totals, got, strict=True)]
            seen += 1
    return None if seen == 0 else (totals[0], totals[1], totals[2], seen)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _allowed_cpus() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None


def read(path: Path = PROC_STAT, cpus: frozenset[int] | None = None) -> CpuTimes:
    """A reading over `cpus` (default: the CPUs this process may run on)."""
    stat = _proc_stat(path, cpus if cpus is not None else _allowed_cpus())
    return CpuTimes(
        busy_jiffies=stat[0] if stat else None,
        steal_jiffies=stat[1] if stat else None,
        total_jiffies=stat[2] if stat else None,
        own_cpu_s=_own_cpu_s(),
        wall_ns=time.perf_counter_ns(),
        cpus=stat[3] if stat else 1,
    )


def assess(before: CpuTimes, after: CpuTimes, *, hz: int | None = None) -> dict[str, Any]:
    """The benchmark entry's `machine` block for the window between two readings."""
    wall_s = (after.wall_ns - before.wall_ns) / 1e9
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not available
        load = None
    block: dict[str, Any] = {
        "busy": None, "note": None, "loadavg_1m": load, "other_cpu_fraction": None,
        "steal_fraction": None, "window_s": wall_s,
        "cpus": after.cpus,
        "method": f"others' CPU time on our CPUs / (window x CPUs), from /proc/stat less this "
        "process; "
        f"busy above {BUSY_OTHER_FRACTION:.0%} others or {BUSY_STEAL_FRACTION:.0%} steal",
    }
    if (before.busy_jiffies is None or after.busy_jiffies is None or wall_s <= 0
            or before.total_jiffies is None or after.total_jiffies is None
            or before.steal_jiffies is None or after.steal_jiffies is None):
        block["note"] = "no /proc/stat: how busy the machine was is unknown"
        return block
    ticks = hz or os.sysconf("SC_CLK_TCK")
    busy_s = (after.busy_jiffies - before.busy_jiffies) / ticks
    own_s = after.own_cpu_s - before.own_cpu_s
    # Jiffies are counted in whole ticks: clamp the rounding, not the evidence.
    other = min(1.0, max(0.0, busy_s - own_s) / (wall_s * after.cpus))
    total = after.total_jiffies - before.total_jiffies
    steal = (after.steal_jiffies - before.steal_jiffies) / total if total > 0 else 0.0
    block["other_cpu_fraction"] = other
    block["steal_fraction"] = steal
    if wall_s < MIN_WINDOW_S:
        # /proc/stat and os.times() count whole clock ticks (10 ms): over a short window
        # a tick or two of rounding is a large fraction, so no verdict either way.
        block["note"] = (f"the benchmark took {wall_s:.2f} s, too short (under "
                         f"{MIN_WINDOW_S:g} s) to tell how busy the machine was")
        return block
    reasons = []
    if other > BUSY_OTHER_FRACTION:
        reasons.append(f"other processes used {other:.0%} of the CPUs")
    if steal > BUSY_STEAL_FRACTION:
        reasons.append(f"the hypervisor stole {steal:.0%} of CPU time")
    block["busy"] = bool(reasons)
    if reasons:
        block["note"] = ("the machine was busy during this benchmark: " + " and ".join(reasons)
                         + "; its timings describe a shared machine")
    return block
