"""The sampling threads: meter readings and process RSS, kept, traced and costed.

One thread wakes every interval, reads this process's RSS and, for a polled meter,
the meter; a streaming meter (tegrastats) pushes its readings from a second thread.
Readings are kept in memory (attribution cuts them at request boundaries) and
appended to a JSONL trace beside the results, so every energy figure can be
recomputed from files. The threads time their own work, so the cost of metering is
reported instead of assumed.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pytest_vlmbench.power import PowerMeter, Reading
from pytest_vlmbench.run import memory

DEAD_AFTER_FAILURES = 20  # consecutive failed polls before a meter is given up


@dataclass
class SamplerCost:
    """What metering cost this process: time inside readings and the threads' CPU time."""

    polls: int = 0
    busy_ns: int = 0  # wall time spent reading meters, RSS and writing the trace
    thread_cpu_ns: int = 0  # CPU time of the sampling threads
    started_ns: int = 0
    stopped_ns: int | None = None

    def to_json(self, meter: PowerMeter | None) -> dict[str, Any]:
        end = self.stopped_ns if self.stopped_ns is not None else time.perf_counter_ns()
        wall = max(1, end - self.started_ns)
        external = meter.overhead_cpu_s() if meter is not None else None
        return {
            "polls": self.polls,
            "busy_s": self.busy_ns / 1e9,
            "thread_cpu_s": self.thread_cpu_ns / 1e9,
            "external_cpu_s": external,
            "wall_s": wall / 1e9,
            "cpu_fraction": (self.thread_cpu_ns / 1e9 + (external or 0.0)) / (wall / 1e9),
        }


@dataclass
class Sampler:
    """Samples `meter` (may be None: RSS only) every `interval_s` until stopped."""

    meter: PowerMeter | None
    interval_s: float
    trace_path: Path | None = None
    readings: list[Reading] = field(default_factory=list)
    rss: list[tuple[int, int]] = field(default_factory=list)  # (t_ns, bytes)
    cost: SamplerCost = field(default_factory=SamplerCost)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending: list[dict[str, Any]] = []
        self._trace: IO[str] | None = None
        self._stream_cpu_ns = 0
        self._failures = 0  # consecutive failed polls
        self.dead: str | None = None  # why the meter stopped giving readings

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.trace_path is not None:
            self.trace_path.parent.mkdir(parents=True, exist_ok=True)
            # "w": one sampler per session, and a reused --vlm-out name must not keep the
            # last run's readings under this run's document.
            self._trace = self.trace_path.open("w", encoding="utf-8")
        self.cost.started_ns = time.perf_counter_ns()
        poll = threading.Thread(target=self._poll_loop, name="vlmbench-sampler", daemon=True)
        self._threads.append(poll)
        if self.meter is not None and self.meter.streaming:
            self._threads.append(threading.Thread(
                target=self._stream_loop, name="vlmbench-meter-stream", daemon=True
            ))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop the threads, close the meter, flush the trace; safe to call twice."""
        self._stop.set()
        if self.meter is not None:
            self.meter.close()  # unblocks a streaming meter's read
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads.clear()
        if self.cost.stopped_ns is None:
            self.cost.stopped_ns = time.perf_counter_ns()
        self._flush()
        with self._lock:
            if self._trace is not None:
                self._trace.close()
                self._trace = None

    # -- the threads ---------------------------------------------------------------
    def _add(self, reading: Reading) -> None:
        with self._new:
            self.readings.append(reading)
            self._pending.append({"kind": "meter", **reading.to_json()})
            self._new.notify_all()

    def _poll_loop(self) -> None:
        next_ns = time.perf_counter_ns()
        step = int(self.interval_s * 1e9)
        while not self._stop.is_set():
            t0 = time.perf_counter_ns()
            rss = memory.rss_bytes()
            if rss is not None:
                with self._lock:
                    self.rss.append((t0, rss))
                    self._pending.append({"kind": "rss", "t_ns": t0, "rss_bytes": rss})
            if self.meter is not None and not self.meter.streaming and self.dead is None:
                try:
                    self._add(self.meter.read())
                    self._failures = 0
                except Exception as exc:  # a failing read is noted, sampling goes on
                    self._failures += 1
                    if len(self.errors) < 10:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    if self._failures >= DEAD_AFTER_FAILURES:
                        self._die(f"{self.meter.name}: {self._failures} reads in a row failed; "
                                  f"the last: {type(exc).__name__}: {exc}")
            self._flush()
            self.cost.polls += 1
            self.cost.busy_ns += time.perf_counter_ns() - t0
            self.cost.thread_cpu_ns = time.thread_time_ns() + self._stream_cpu_ns
            next_ns += step
            delay = (next_ns - time.perf_counter_ns()) / 1e9
            if delay < 0:  # fell behind (a slow read): do not burst to catch up
                next_ns = time.perf_counter_ns()
                delay = 0.0
            self._stop.wait(delay)

    def _stream_loop(self) -> None:
        assert self.meter is not None
        try:
            self.meter.stream(self._add, self._stop)
            if not self._stop.is_set():
                self._die(f"{self.meter.name} stopped giving readings")
        except Exception as exc:
            self._die(f"{type(exc).__name__}: {exc}")
        finally:
            self._stream_cpu_ns = time.thread_time_ns()

    def _die(self, why: str) -> None:
        """The meter will give no more readings: say why once, stop anyone waiting."""
        with self._new:
            if self.dead is None:
                self.dead = why
                self.errors.append(why)
            self._new.notify_all()

    def _flush(self) -> None:
        with self._lock:  # under the lock: stop() may close the trace meanwhile
            pending, self._pending = self._pending, []
            if self._trace is not None and pending:
                self._trace.write("".join(json.dumps(p, separators=(",", ":")) + "\n"
                                          for p in pending))
                self._trace.flush()

    # -- queries -------------------------------------------------------------------
    def wait_past(self, t_ns: int, timeout_s: float) -> bool:
        """Wait until the meter has a reading at or after t_ns (to close a window)."""
        if self.meter is None:
            return True
        deadline = time.monotonic() + timeout_s
        with self._new:
            while not (self.readings and self.readings[-1].t_ns >= t_ns):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set() or self.dead is not None:
                    return False
                self._new.wait(left)
        return True

    def window(self, t0_ns: int, t1_ns: int) -> list[Reading]:
        """Readings covering [t0, t1]: those inside plus the last before and first after."""
        with self._lock:
            readings = list(self.readings)
        before = [r for r in readings if r.t_ns < t0_ns]
        inside = [r for r in readings if t0_ns <= r.t_ns <= t1_ns]
        after = [r for r in readings if r.t_ns > t1_ns]
        return before[-1:] + inside + after[:1]

    def rss_peak(self, t0_ns: int, t1_ns: int) -> tuple[int | None, int]:
        with self._lock:
            values = [b for t, b in self.rss if t0_ns <= t <= t1_ns]
        return (max(values) if values else None), len(values)

    def latest_memory(self) -> int | None:
        with self._lock:
            for r in reversed(self.readings):
                if r.memory_bytes is not None:
                    return r.memory_bytes
        return None
