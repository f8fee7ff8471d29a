"""Jetson power from `tegrastats`, the utility JetPack ships on every Jetson board.

tegrastats prints one line per interval. The parts read here:

- power rails, `NAME current/average` in mW. JetPack 5 and 6 print
  `VDD_IN 4793mW/4793mW`; JetPack 7.2 (L4T R39) adds a third number
  (`VDD_GPU 4925mW/4925mW/4925mW`, current first); JetPack 4 boards print bare numbers
  (`POM_5V_IN 1022/1022`, `VDD_IN 3056/3056`, AGX Xavier `GPU 0/0 CPU 311/311`). Thor's
  VDD_GPU can read slightly negative at idle (a calibration offset), so signs are kept.
  Unused INA3221 channels print as `NC 0mW/0mW` and are skipped.
- `RAM used/totalMB`: a Jetson's RAM is shared by CPU and GPU, so RAM in use is the
  model's memory.
- `GR3D_FREQ load%@freq`: `0%@[305,305]` (one frequency per GPC), `12%@1300`, `0%`
  (no frequency), and on Thor `@[314,314,314]` (no load at all).

Everything else on the line (CPU loads, temperatures, engines) is ignored; a token this
parser does not know is skipped, never an error, because every JetPack release adds some.

Only the first (current) number of a rail is used: the averages are since tegrastats
started, and the meter integrates the current values itself.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from pytest_vlmbench.power import DEFAULT_INTERVAL_S, MeterUnavailable, PowerMeter, Reading

NOT_FOUND = "tegrastats not found on PATH (it ships with JetPack on Jetson boards)"

# The smallest wait for tegrastats' first line: it prints its first line one interval
# after it starts, and a cold start of the binary can take a moment on a busy board.
FIRST_LINE_MIN_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 2.0

# Input rails: each is the whole module's (or board's) input, the other rails are inside it.
INPUT_RAILS: tuple[tuple[str, str], ...] = (
    ("VDD_IN", "VDD_IN alone: the module's input rail, which the other rails are part of"),
    (
        "POM_5V_IN",
        "POM_5V_IN alone: the module's 5 V input rail, which POM_5V_GPU and POM_5V_CPU "
        "are part of",
    ),
    (
        "VIN",
        "VIN alone: Thor's board input (the INA238 monitor); VDD_GPU, VDD_CPU_SOC_MSS and "
        "VIN_SYS_5V0 are inside it, so summing would count them twice",
    ),
)
SKIPPED_RAILS = frozenset({"NC"})  # an INA3221 channel with nothing connected

_RAIL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# `current/average[/max]`, each optionally in mW (JetPack 5+) or bare (JetPack 4).
_RAIL_VALUE = re.compile(r"(-?\d+(?:\.\d+)?)(?:mW)?(?:/-?\d+(?:\.\d+)?(?:mW)?){1,2}")
_RAM = re.compile(r"(\d+)/(\d+)(kB|MB|GB)")
_GR3D = re.compile(r"(?:(\d+(?:\.\d+)?)%)?(?:@(?:\[(\d+(?:,\d+)*)\]|(\d+)))?")
_UNIT = {"kB": 1024, "MB": 1024**2, "GB": 1024**3}


@dataclass(frozen=True)
class TegraLine:
    """What one tegrastats line says; None where the line does not say it."""

    rails_mw: dict[str, float] = field(default_factory=dict)  # current value per rail
    ram_used_bytes: int | None = None
    ram_total_bytes: int | None = None
    gpu_load_pct: float | None = None
    gpu_freq_mhz: float | None = None


def parse_line(line: str) -> TegraLine | None:
    """Parse one tegrastats line; None when nothing on it is recognised.

    Usage: `parse_line("RAM 2448/62804MB VDD_IN 4793mW/4793mW").rails_mw == {"VDD_IN":
    4793.0}`.
    """
    tokens = line.split()
    rails: dict[str, float] = {}
    ram_used = ram_total = None
    load = freq = None
    found = False
    for name, value in itertools.pairwise(tokens):
        if name == "RAM":
            ram = _RAM.fullmatch(value)
            if ram is not None:
                unit = _UNIT[ram.group(3)]
                ram_used, ram_total = int(ram.group(1)) * unit, int(ram.group(2)) * unit
                found = True
        elif name == "GR3D_FREQ":
            gr3d = _GR3D.fullmatch(value)
            if gr3d is not None and any(gr3d.groups()):
                if gr3d.group(1) is not None:
                    load = float(gr3d.group(1))
                if gr3d.group(2) is not None:  # one clock per GPC; they move together
                    freq = float(max(int(f) for f in gr3d.group(2).split(",")))
                elif gr3d.group(3) is not None:
                    freq = float(gr3d.group(3))
                found = True
        elif _RAIL_NAME.fullmatch(name):
            rail = _RAIL_VALUE.fullmatch(value)
            if rail is None:
                continue
            found = True
            if name in SKIPPED_RAILS:
                continue
            key, n = name, 2
            while key in rails:  # never seen twice on real boards; keep both if it happens
                key, n = f"{name}#{n}", n + 1
            rails[key] = float(rail.group(1))
    if not found:
        return None
    return TegraLine(rails, ram_used, ram_total, load, freq)


def total_rail(rails_mw: Mapping[str, float]) -> tuple[float | None, str]:
    """The board total in W from rails in mW, and how it was formed.

    An input rail (VDD_IN, POM_5V_IN, Thor's VIN) already contains the others, so it is
    the total alone. Boards without one (AGX Orin, AGX Xavier, a Thor whose carrier has
    no INA238) report only their module rails, which are then summed.
    """
    rails = {k: v for k, v in rails_mw.items() if k not in SKIPPED_RAILS}
    for name, method in INPUT_RAILS:
        if name in rails:
            return rails[name] / 1000.0, method
    if not rails:
        return None, "no power rails reported"
    names = ", ".join(rails)
    if "VDD_GPU_SOC" in rails:
        why = "AGX Orin has no input rail"
    elif "SYS5V" in rails:
        why = "AGX Xavier has no input rail"
    elif "VDD_CPU_SOC_MSS" in rails:
        why = "this Thor reports no VIN rail (the carrier board's INA238 input monitor)"
    else:
        why = "no input rail (VDD_IN, POM_5V_IN or VIN) is reported"
    return sum(rails.values()) / 1000.0, f"sum of rails {names}: {why}"


def _proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat, in seconds; None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may contain spaces: split after its closing paren.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class TegrastatsMeter(PowerMeter):
    """Streams readings from a `tegrastats --interval N` subprocess, one per line."""

    name: ClassVar[str] = "tegrastats"
    streaming: ClassVar[bool] = True

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(interval_s)
        self.interval_ms = max(1, round(interval_s * 1000))
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._path: str | None = None
        self._first: tuple[int, str] | None = None  # read by open(), emitted by stream()
        self._lines = 0
        self._unparsed = 0
        self._rails: dict[str, None] = {}  # rails seen, in order
        self._total_method: str | None = None
        self._cpu_s: float | None = None  # the last CPU time read, kept after close()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    # --- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        path = shutil.which("tegrastats")
        if path is None:
            raise MeterUnavailable(NOT_FOUND)
        # stderr goes to a file, not a pipe nobody reads (a full pipe would block it);
        # it lives as long as the process and close() closes it.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [path, "--interval", str(self.interval_ms)],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches pytest, which stops it cleanly
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            stderr.close()
            raise MeterUnavailable(f"tegrastats ({path}) could not be started: {exc}") from exc
        with self._lock:
            self._proc, self._stderr, self._path = proc, stderr, path
        line, t_ns, timed_out = self._first_line(proc)
        if line:
            self._first = (t_ns, line)
            return
        if timed_out:
            reason = f"printed nothing within {self._first_line_timeout_s():g} s"
        elif proc.returncode is not None:
            reason = f"exited with status {proc.returncode} before printing a line"
        else:
            reason = "closed its output before printing a line"
        err = self._stderr_tail()
        self.close()
        raise MeterUnavailable(
            f"tegrastats ({path}) {reason}" + (f"; its stderr: {err}" if err else "")
        )

    def _first_line_timeout_s(self) -> float:
        return max(FIRST_LINE_MIN_TIMEOUT_S, 3 * self.interval_s)

    def _first_line(self, proc: subprocess.Popen[str]) -> tuple[str, int, bool]:
        """Wait for the first line; a timer kills a silent tegrastats so readline returns.
        Returns the line ("" if none), its arrival time and whether the wait timed out."""
        assert proc.stdout is not None
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with contextlib.suppress(OSError):
                proc.kill()

        timer = threading.Timer(self._first_line_timeout_s(), expire)
        timer.daemon = True
        timer.start()
        try:
            line = proc.stdout.readline()
        finally:
            timer.cancel()
            timer.join()
        t_ns = time.perf_counter_ns()
        if expired.is_set():
            return "", t_ns, True
        if not line:  # EOF: it exited; reap it so the status is known
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT_S)
        return line, t_ns, False

    def stream(self, emit: Callable[[Reading], None], stop: threading.Event) -> None:
        """Emit a reading per line until `stop` is set or tegrastats ends; close() from
        another thread ends the process, which ends the blocked readline (EOF)."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        first, self._first = self._first, None
        if first is not None:
            self._handle(first[1], first[0], emit)
        while not stop.is_set():
            try:
                line = proc.stdout.readline()
            except (ValueError, OSError):  # closed by close() in another thread
                return
            t_ns = time.perf_counter_ns()
            if not line:
                if not stop.is_set() and self._proc is not None:  # ended, not closed by us
                    code = proc.poll()
                    said = self._stderr_tail()
                    raise MeterUnavailable(
                        f"tegrastats stopped printing (exit status {code})"
                        + (f"; it said: {said}" if said else "")
                    )
                return
            self._handle(line, t_ns, emit)

    def _handle(self, line: str, t_ns: int, emit: Callable[[Reading], None]) -> None:
        if not line.strip():
            return
        self._lines += 1
        parsed = parse_line(line)
        if parsed is None:
            self._unparsed += 1  # a line we do not understand is counted, not fatal
            return
        total_w, method = total_rail(parsed.rails_mw)
        if parsed.rails_mw:
            self._total_method = method
            self._rails.update(dict.fromkeys(parsed.rails_mw))
        extra: dict[str, float] = {}
        if parsed.gpu_load_pct is not None:
            extra["gpu_load_pct"] = parsed.gpu_load_pct
        if parsed.gpu_freq_mhz is not None:
            extra["gpu_freq_mhz"] = parsed.gpu_freq_mhz
        emit(
            Reading(
                t_ns=t_ns,
                power_w=total_w,
                rails_w={k: v / 1000.0 for k, v in parsed.rails_mw.items()},
                memory_bytes=parsed.ram_used_bytes,
                extra=extra,
            )
        )

    def close(self) -> None:
        """Stop tegrastats (terminate, then kill) and release its pipes; safe to call twice
        and from another thread while stream() is blocked reading."""
        with self._lock:
            proc, self._proc = self._proc, None
            stderr, self._stderr = self._stderr, None
        if proc is not None:
            cpu = _proc_cpu_s(proc.pid)  # before it exits: /proc/<pid> goes with it
            if cpu is not None:
                self._cpu_s = cpu
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                # A reader blocked in readline holds the buffer's lock until it sees EOF,
                # which it does now that the process is gone; this then closes the pipe.
                proc.stdout.close()
        if stderr is not None:
            stderr.close()

    # --- reporting ----------------------------------------------------------------------

    def _stderr_tail(self, limit: int = 500) -> str:
        stderr = self._stderr
        if stderr is None:
            return ""
        try:
            stderr.seek(0)
            text = stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        text = " ".join(text.split())
        return text if len(text) <= limit else "..." + text[-limit:]

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["source"] = f"tegrastats --interval {self.interval_ms}"
        out["path"] = self._path
        out["total_method"] = self._total_method
        out["rails"] = list(self._rails)
        out["lines"] = self._lines
        out["unparsed_lines"] = self._unparsed
        return out

    def overhead_cpu_s(self) -> float | None:
        """tegrastats' own CPU time (utime + stime), read from /proc while it runs."""
        proc = self._proc
        if proc is not None:
            cpu = _proc_cpu_s(proc.pid)
            if cpu is not None:
                self._cpu_s = cpu
        return self._cpu_s
