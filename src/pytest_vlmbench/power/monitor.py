"""The session's power and memory monitor: one meter, one sampler, one idle baseline.

The plugin opens it before the first benchmark (an explicitly named meter is opened at
session start, so a meter that cannot run is a usage error before any model loads).
Each benchmark asks for a window (`begin`) and gets its energy and memory blocks back
(`finish`); the document gets `to_json` (meter, interval, samples, idle baseline,
cost, or why there is no meter). The `vlm_power` fixture opens windows on any code
(`open_window`, `close_window`) on the same meter and idle baseline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vlmbench.power import Reading, Resolution, resolve
from pytest_vlmbench.power.energy import attribute, idle_power
from pytest_vlmbench.power.sampler import Sampler
from pytest_vlmbench.results.models import Record
from pytest_vlmbench.run import memory


@dataclass(frozen=True)
class Window:
    """A benchmark's span as the monitor saw it begin."""

    begin_ns: int
    hwm_reset: bool


@dataclass(eq=False)  # one session's monitor: equal only to itself
class PowerMonitor:
    """Owns the meter and the sampler for a session."""

    requested: str
    profile_meter: str
    interval_s: float
    idle_s: float
    trace_path: Path | None
    device: str = ""
    resolution: Resolution | None = field(default=None, init=False)
    sampler: Sampler | None = field(default=None, init=False)
    idle: dict[str, Any] | None = field(default=None, init=False)
    shared_note: str | None = field(default=None, init=False)
    """Set under pytest-xdist when other workers draw on what this meter measures."""
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    """vlm_power windows may open from several threads: one start, one idle baseline."""

    @property
    def started(self) -> bool:
        return self.sampler is not None

    def start(self) -> None:
        """Resolve and open the meter, start sampling. MeterUnavailable propagates only
        for an explicitly named meter; `auto` records why there is none."""
        with self._lock:
            if self.sampler is not None:
                return
            self.resolution = resolve(self.requested, self.profile_meter, self.interval_s,
                                      self.device)
            meter = self.resolution.meter
            self.sampler = Sampler(meter, self.interval_s,
                                   self.trace_path if meter is not None else None)
            self.sampler.start()

    @property
    def meter_name(self) -> str | None:
        meter = self.resolution.meter if self.resolution else None
        return meter.name if meter is not None else None

    @property
    def absent_reason(self) -> str | None:
        return self.resolution.reason if self.resolution else None

    def _measure_idle(self, when: str = "before the first benchmark's warm-up, its model "
                      "loaded") -> None:
        sampler = self.sampler
        if sampler is None or sampler.meter is None or self.idle is not None:
            return
        if self.idle_s <= 0:
            self.idle = {"power_w": None, "window_s": 0.0, "note": "disabled (--vlm-idle-s=0)"}
            return
        sampler.wait_past(time.perf_counter_ns(), timeout_s=max(5.0, 5 * self.interval_s))
        t0 = time.perf_counter_ns()
        time.sleep(self.idle_s)
        t1 = time.perf_counter_ns()
        sampler.wait_past(t1, timeout_s=max(5.0, 5 * self.interval_s))
        watts = idle_power(sampler.window(t0, t1), t0, t1)
        self.idle = {
            "power_w": watts, "window_s": (t1 - t0) / 1e9, "t0_ns": t0, "t1_ns": t1,
            "note": f"measured once, {when}"
            if watts is not None else "the meter's readings did not cover the idle window",
        }

    def _reading_now(self) -> None:
        """Wait for a reading at or after now, so a window opened next is covered."""
        if self.sampler is not None:
            self.sampler.wait_past(time.perf_counter_ns(), timeout_s=max(5.0, 5 * self.interval_s))

    def begin(self) -> Window:
        with self._lock:
            self.start()
            self._measure_idle()
        self._reading_now()
        reset = memory.reset_peak()
        return Window(time.perf_counter_ns(), reset)

    def open_window(self, first_use: str) -> int:
        """Open a span outside a benchmark (vlm_power): the meter started, the idle
        baseline measured if nothing measured it yet (`first_use` says before what), a
        reading taken before the start. Returns the start (perf_counter_ns)."""
        with self._lock:
            self.start()
            self._measure_idle(f"before {first_use}")
        self._reading_now()
        return time.perf_counter_ns()

    def close_window(self, start_ns: int, *, wait: bool = True) -> tuple[int, list[Reading]]:
        """The span's end (now) and the readings covering it, after a reading past the
        end (`wait=False` after Ctrl-C: the window must still be written)."""
        end_ns = time.perf_counter_ns()
        sampler = self.sampler
        if sampler is None or sampler.meter is None:
            return end_ns, []
        if wait:
            sampler.wait_past(end_ns, timeout_s=max(2.0, 5 * sampler.meter.resolution_s))
        return end_ns, sampler.window(start_ns, end_ns)

    @property
    def idle_power_w(self) -> float | None:
        """The session's idle baseline (W), None until measured or when it could not be."""
        watts = self.idle.get("power_w") if self.idle else None
        return None if watts is None else float(watts)

    def latest(self, n: int = 2) -> list[Reading]:
        """The last n meter readings, oldest first (fewer, or none, without a meter)."""
        sampler = self.sampler
        return [] if sampler is None else list(sampler.readings[-n:])

    def memory_now(self) -> int | None:
        """Accelerator memory in use now (a fresh reading), for model-load deltas."""
        sampler = self.sampler
        if sampler is None or sampler.meter is None:
            return None
        sampler.wait_past(time.perf_counter_ns(), timeout_s=max(2.0, 5 * self.interval_s))
        return sampler.latest_memory()

    def finish(
        self, window: Window, records: Sequence[Record], *, vision: bool,
        interrupted: bool = False,
    ) -> dict[str, Any]:
        """The benchmark's `energy` (None without a meter) and `memory` summary blocks.
        After Ctrl-C it does not wait for a closing reading: the entry must reach disk."""
        sampler = self.sampler
        end_ns = time.perf_counter_ns()
        energy = None
        accel_peak = None
        if sampler is not None and sampler.meter is not None:
            meter = sampler.meter
            if not interrupted:
                sampler.wait_past(end_ns, timeout_s=max(2.0, 5 * meter.resolution_s))
            readings = sampler.window(window.begin_ns, end_ns)
            energy = attribute(readings, records, resolution_s=meter.resolution_s,
                               idle_power_w=self.idle_power_w, vision=vision)
            energy["meter"] = meter.name
            if self.shared_note:
                energy["warnings"].append(self.shared_note)
            if sampler.dead:
                energy["warnings"].append(f"the meter stopped: {sampler.dead}")
            mem = [r.memory_bytes for r in readings if r.memory_bytes is not None
                   and window.begin_ns <= r.t_ns <= end_ns]
            accel_peak = max(mem) if mem else None
        rss_peak, rss_samples = (
            sampler.rss_peak(window.begin_ns, end_ns) if sampler else (None, 0)
        )
        info = sampler.meter.info() if sampler and sampler.meter else {}
        memory_block = {
            "rss_peak_sampled_bytes": rss_peak,
            "rss_samples": rss_samples,
            "rss_hwm_bytes": memory.hwm_since_reset() if window.hwm_reset else None,
            "accelerator_memory_peak_bytes": accel_peak,
            "accelerator_memory_source": info.get("memory_source") if accel_peak else None,
        }
        return {"energy": energy, "memory": memory_block}

    def to_json(self) -> dict[str, Any]:
        sampler = self.sampler
        meter = sampler.meter if sampler else None
        return {
            "requested": self.requested,
            "meter": meter.name if meter else None,
            "absent_reason": None if meter else (
                self.absent_reason or "no benchmark ran, so no meter was opened"
            ),
            "info": meter.info() if meter else None,
            "interval_s": self.interval_s,
            "resolution_s": meter.resolution_s if meter else None,
            "samples": len(sampler.readings) if sampler else 0,
            "rss_samples": len(sampler.rss) if sampler else 0,
            "idle": self.idle,
            "cost": sampler.cost.to_json(meter) if sampler else None,
            "errors": list(sampler.errors) if sampler else [],
            "stopped": sampler.dead if sampler else None,
            "shared": self.shared_note,
            "trace_file": self.trace_path.name if (meter and self.trace_path) else None,
        }

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
