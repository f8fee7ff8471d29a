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
exceeded BUSY_STEAL_FRACTION (its note, and busy_warning, say how many CPUs' worth);
None (unknown) for a window under MIN_WINDOW_S, where the counters' 10 ms ticks make
the fractions too coarse to judge. Where /proc/stat is
missing (not Linux) the fractions are None and `busy` is None: unknown, never guessed.

Before the first model loads, free_cpus() takes the same reading over half a second, so
thread_advice() can say, on the terminal, when other processes hold CPUs the requested
llama.cpp threads need, and `--vlm-threads=fit` can use fit_threads() instead.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_vlmbench.results.models import MachineLoad

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


def _others(before: CpuTimes, after: CpuTimes, hz: int | None,
            ours_elsewhere_s: float = 0.0) -> tuple[float, float] | None:
    """(others' CPU seconds, steal fraction) over the window between two readings; None
    when /proc/stat was unreadable at either end."""
    if (before.busy_jiffies is None or after.busy_jiffies is None
            or before.total_jiffies is None or after.total_jiffies is None
            or before.steal_jiffies is None or after.steal_jiffies is None):
        return None
    ticks = hz or os.sysconf("SC_CLK_TCK")
    busy_s = (after.busy_jiffies - before.busy_jiffies) / ticks
    own_s = after.own_cpu_s - before.own_cpu_s + ours_elsewhere_s
    total = after.total_jiffies - before.total_jiffies
    steal = (after.steal_jiffies - before.steal_jiffies) / total if total > 0 else 0.0
    return max(0.0, busy_s - own_s), min(1.0, max(0.0, steal))


def describe(machine: Mapping[str, Any]) -> str | None:
    """How much CPU others took, from a `machine` block: "other processes took 45% of 2
    CPUs (0.9 CPU), steal 0%"; None when it was not measured."""
    other, steal, cpus = (machine.get("other_cpu_fraction"), machine.get("steal_fraction"),
                          machine.get("cpus"))
    if other is None:
        return None
    if not isinstance(cpus, int) or cpus < 1:  # a block that did not record its CPUs
        text = f"other processes took {other:.0%} of the CPUs"
    else:
        text = (f"other processes took {other:.0%} of {cpus} CPU{'s' if cpus != 1 else ''} "
                f"({other * cpus:.1f} CPU)")
    return text if steal is None else f"{text}, steal {steal:.0%}"


SHARED = "these timings describe a shared machine"


def busy_warning(benchmark_id: str, machine: Mapping[str, Any] | None) -> str | None:
    """The terminal line for a benchmark run on a busy machine, from its results entry's
    `machine` block (also of documents written before the note named CPU amounts); None
    when the machine was not busy or it is unknown."""
    if not machine or not machine.get("busy"):
        return None
    amount = describe(machine)
    if amount is None:
        return None
    return f"machine busy during {benchmark_id}: {amount}: {SHARED}"


def assess(before: CpuTimes, after: CpuTimes, *, hz: int | None = None,
           server_cpu_s: float | None = None) -> MachineLoad:
    """The benchmark entry's `machine` block for the window between two readings;
    `server_cpu_s`: CPU time the benchmark's managed server used in it (its process tree
    is not this process's child in `os.times()` until reaped), which is ours too."""
    wall_s = (after.wall_ns - before.wall_ns) / 1e9
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not available
        load = None
    block: MachineLoad = {
        "busy": None, "note": None, "loadavg_1m": load, "other_cpu_fraction": None,
        "steal_fraction": None, "window_s": wall_s,
        "cpus": after.cpus,
        "method": f"others' CPU time on our CPUs / (window x CPUs), from /proc/stat less this "
        "process; "
        f"busy above {BUSY_OTHER_FRACTION:.0%} others or {BUSY_STEAL_FRACTION:.0%} steal"
        + ("; the managed server's CPU time counted as ours" if server_cpu_s is not None
           else ""),
    }
    got = _others(before, after, hz, server_cpu_s or 0.0)
    if got is None or wall_s <= 0:
        block["note"] = "no /proc/stat: how busy the machine was is unknown"
        return block
    others_s, steal = got
    # Jiffies are counted in whole ticks: clamp the rounding, not the evidence.
    other = min(1.0, others_s / (wall_s * after.cpus))
    block["other_cpu_fraction"] = other
    block["steal_fraction"] = steal
    if wall_s < MIN_WINDOW_S:
        # /proc/stat and os.times() count whole clock ticks (10 ms): over a short window
        # a tick or two of rounding is a large fraction, so no verdict either way.
        block["note"] = (f"the benchmark took {wall_s:.2f} s, too short (under "
                         f"{MIN_WINDOW_S:g} s) to tell how busy the machine was")
        return block
    block["busy"] = other > BUSY_OTHER_FRACTION or steal > BUSY_STEAL_FRACTION
    if block["busy"]:
        block["note"] = f"the machine was busy during this benchmark: {describe(block)}: {SHARED}"
    return block


# --- before the first load: how many CPUs are free for our threads -------------------------

FREE_WINDOW_S = 0.5
FREE_SLACK_CPU = 0.25
"""A CPU counts as free while others use less than this of it: background daemons, and
the 10 ms tick rounding of a 0.5 s reading (about 0.02 CPU per CPU, twice)."""


@dataclass(frozen=True)
class CpuShare:
    """The CPUs this process may use over a short window: how many, and how many CPUs'
    worth other processes and the hypervisor (steal) took; None where unknown."""

    cpus: int
    others: float | None
    steal: float | None
    window_s: float

    @property
    def taken(self) -> float | None:
        """CPUs' worth not available to us: others' CPU time plus steal."""
        if self.others is None:
            return None
        return min(float(self.cpus), self.others + (self.steal or 0.0) * self.cpus)

    @property
    def free(self) -> float | None:
        taken = self.taken
        return None if taken is None else max(0.0, self.cpus - taken)

    def to_json(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "others_cpus": self.others, "steal_fraction": self.steal,
                "free_cpus": self.free, "window_s": self.window_s}


def share(before: CpuTimes, after: CpuTimes, *, hz: int | None = None) -> CpuShare:
    """The CpuShare of the window between two readings (pure: tests feed synthetic ones)."""
    wall_s = (after.wall_ns - before.wall_ns) / 1e9
    got = _others(before, after, hz)
    if got is None or wall_s <= 0:
        return CpuShare(after.cpus, None, None, max(wall_s, 0.0))
    others_s, steal = got
    return CpuShare(after.cpus, min(float(after.cpus), others_s / wall_s), steal, wall_s)


def free_cpus(
    window_s: float = FREE_WINDOW_S, *, path: Path = PROC_STAT,
    cpus: frozenset[int] | None = None, sleep: Callable[[float], object] = time.sleep,
) -> CpuShare:
    """Read /proc/stat and our own CPU time `window_s` apart: how many of the CPUs this
    process may run on other processes are using now. Unknown (others None) without
    /proc/stat."""
    before = read(path, cpus)
    sleep(window_s)
    return share(before, read(path, cpus))


def fit_threads(share_: CpuShare) -> int:
    """Threads for `--vlm-threads=fit`: the whole free CPUs (a CPU less than
    FREE_SLACK_CPU used counts as free), at least 1; every CPU when unknown."""
    free = share_.free
    if free is None:
        return max(1, share_.cpus)
    return max(1, min(share_.cpus, math.floor(free + FREE_SLACK_CPU)))


def thread_advice(requested: int, share_: CpuShare) -> str | None:
    """One terminal line when fewer CPUs are free than threads were asked for; None when
    they fit or it is unknown.

    llama.cpp's threads meet at a barrier after every operation of every token, so one
    thread without a CPU holds all of them up: the cost is far more than the missing
    CPU's share."""
    free = share_.free
    if free is None or requested <= fit_threads(share_):
        return None
    fit = fit_threads(share_)
    cpus = f"{share_.cpus} CPU{'s' if share_.cpus != 1 else ''}"
    taken = []
    if share_.others is not None and share_.others >= 0.05:
        taken.append(f"other processes are using {share_.others:.1f} of {cpus}")
    if share_.steal and share_.steal * share_.cpus >= 0.05:
        taken.append(f"the hypervisor is taking {share_.steal * share_.cpus:.1f} of {cpus} "
                     "(steal)")
    where = "; ".join(taken) if taken else f"this process may use {cpus}"
    return (f"{where}; llama.cpp with {requested} threads on {free:.1f} free CPUs can slow "
            "down many times over (its threads wait for each other at every step); pass "
            f"--vlm-threads={fit}, or --vlm-threads=fit to use what is free")
