"""Power meters: the interface, the registry and how `--power-meter` is resolved.

A meter either answers a poll (`read`, for sysfs files and NVML: the sampler thread
calls it every interval) or streams readings as they arrive (`stream`, for tegrastats:
a subprocess prints a line every interval). Either way it yields `Reading`s stamped
with `perf_counter_ns`, the clock the request records use, so energy can be cut at
request boundaries. A meter that cannot run here raises `MeterUnavailable` with the
reason; every quantity a meter cannot read is None (absent), never zero.

Third parties register meters through the `pytest_vlmbench.power_meters` entry-point
group (a name -> a `PowerMeter` subclass).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pytest_vlmbench import extensions

ENTRY_POINT_GROUP = "pytest_vlmbench.power_meters"
DEFAULT_INTERVAL_S = 0.1

# Built-in meters by name -> "module:class".
BUILTIN: dict[str, str] = {
    "nvml": "pytest_vlmbench.power.nvml:NvmlMeter",
    "tegrastats": "pytest_vlmbench.power.tegrastats:TegrastatsMeter",
    "ina3221": "pytest_vlmbench.power.ina3221:Ina3221Meter",
    "rapl": "pytest_vlmbench.power.rapl:RaplMeter",
}
CHOICES = ("auto", "none", *BUILTIN)

# Environment variable that points sysfs/procfs readers at another root directory.
# It exists for tests (a temporary sysfs-shaped tree); users never need it.
ROOT_ENV = "VLMBENCH_SYSFS_ROOT"


def system_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "/"))


class MeterUnavailable(Exception):
    """This meter cannot run here; the message says why and what would fix it."""


@dataclass(frozen=True)
class Reading:
    """One reading, stamped with time.perf_counter_ns().

    power_w: total instantaneous power (W) when the meter reads power.
    energy_j: a cumulative energy counter (J since the meter opened, wrap-around
        already undone) when the meter has one; preferred over integrating power.
    rails_w: per-rail power (W), for meters that see rails.
    memory_bytes: accelerator memory in use (GPU memory, or a Jetson's shared RAM).
    extra: anything else worth keeping (gpu_load_pct, gpu_freq_mhz, ...).
    """

    t_ns: int
    power_w: float | None = None
    energy_j: float | None = None
    rails_w: Mapping[str, float] = field(default_factory=dict)
    memory_bytes: int | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t_ns": self.t_ns}
        for key in ("power_w", "energy_j", "memory_bytes"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.rails_w:
            out["rails_w"] = dict(self.rails_w)
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


class PowerMeter:
    """Base class of every meter. Subclasses set `name` and implement `open` and
    either `read` (polled) or `stream` (streaming, `streaming = True`)."""

    name: ClassVar[str] = ""
    streaming: ClassVar[bool] = False

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.interval_s = interval_s

    def open(self) -> None:
        """Acquire the meter; raise MeterUnavailable with the reason if it cannot run."""

    def read(self) -> Reading:
        """Polled meters: one reading now."""
        raise NotImplementedError

    def stream(self, emit: Callable[[Reading], None], stop: threading.Event) -> None:
        """Streaming meters: emit readings as they arrive until `stop` is set."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the meter (stop a subprocess, shut NVML down); safe to call twice."""

    @property
    def resolution_s(self) -> float:
        """The shortest window over which this meter's energy is meaningful: its sampling
        interval, or the update period of its energy counter when that is coarser."""
        return self.interval_s

    def info(self) -> dict[str, Any]:
        """What this meter reads and how the total is formed, for the results document."""
        return {"name": self.name, "interval_s": self.interval_s}

    def overhead_cpu_s(self) -> float | None:
        """CPU time spent outside this process on metering (a subprocess), if known."""
        return None


def _load_class(target: str) -> type[PowerMeter]:
    cls = extensions.load(target)
    if not (isinstance(cls, type) and issubclass(cls, PowerMeter)):
        raise MeterUnavailable(f"{target} is not a pytest_vlmbench.power.PowerMeter subclass")
    return cls


def registered() -> dict[str, str]:
    """Every meter name -> its "module:class", built-ins first, then entry points."""
    return extensions.names(BUILTIN, ENTRY_POINT_GROUP)


def known_names() -> list[str]:
    return ["auto", "none", *registered()]


def create(name: str, interval_s: float) -> PowerMeter:
    """Instantiate (not open) meter `name`; MeterUnavailable if it is unknown."""
    table = registered()
    if name not in table:
        raise MeterUnavailable(
            f"unknown power meter {name!r}; known: {', '.join(known_names())}"
        )
    return _load_class(table[name])(interval_s)


def auto_candidates(profile_meter: str, device: str = "") -> list[str]:
    """What `auto` tries, in order, for a device whose profile names `profile_meter`.

    On a Jetson the INA3221 sysfs files give finer time resolution than tegrastats'
    lines, so they are tried first; except on Thor, whose input rail (VIN) sits on a
    separate INA238 that only tegrastats reads (the INA3221 rails would miss the
    carrier board).
    """
    if profile_meter == "tegrastats" and device != "thor":
        return ["ina3221", "tegrastats"]
    return [profile_meter]


@dataclass
class Resolution:
    """The outcome of resolving `--power-meter`: an open meter, or why there is none."""

    meter: PowerMeter | None
    requested: str
    reason: str | None  # set when meter is None


def resolve(requested: str, profile_meter: str, interval_s: float,
            device: str = "") -> Resolution:
    """Open the meter the user asked for (`auto`: the device profile's, if it works).

    An explicitly named meter that cannot run raises MeterUnavailable (the user asked
    for it: a usage error); `auto` falls back to no meter and says why.
    """
    if requested == "none":
        return Resolution(None, requested, "--power-meter=none")
    if requested != "auto":
        meter = create(requested, interval_s)
        meter.open()
        return Resolution(meter, requested, None)
    reasons = []
    for name in auto_candidates(profile_meter, device):
        try:
            meter = create(name, interval_s)
            meter.open()
        except MeterUnavailable as exc:
            reasons.append(str(exc))
            continue
        return Resolution(meter, requested, None)
    return Resolution(None, requested, "; ".join(reasons) or "no meter for this device")
