"""Jetson power read straight from the INA3221 monitors' hwmon files.

Jetson modules carry one or two INA3221 chips (three channels each) on the rails that
tegrastats reports; since JetPack 5 the kernel's `ina3221` hwmon driver exposes them at
`/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmonN/`:

- `inN_label`: the rail's name (`VDD_IN`, `VDD_GPU_SOC`, `NC` for an unused channel),
- `inN_input`: the rail's bus voltage in mV, `currN_input`: its current in mA,

so a rail's power is mV * mA / 1e6 W. Channel 7 (`in7_*`) is the chip's sum of shunt
voltages, not a rail, and is skipped with the unused ones. Reading the files directly
gives a reading at every poll, finer than tegrastats' lines; the board total follows the
same rule as tegrastats (`total_rail`): an input rail alone, else the sum of the rails.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pytest_vlmbench.power import (
    DEFAULT_INTERVAL_S,
    MeterUnavailable,
    PowerMeter,
    Reading,
    system_root,
)
from pytest_vlmbench.power.tegrastats import total_rail

DRIVER_DIR = "sys/bus/i2c/drivers/ina3221"
LABEL_GLOB = "*/hwmon/hwmon*/in*_label"
MEMINFO = "proc/meminfo"
NO_CHANNELS = (
    "no INA3221 channels under /sys/bus/i2c/drivers/ina3221 (not a Jetson, or the driver "
    "is not loaded)"
)
_LABEL_RE = re.compile(r"in(\d+)_label")


@dataclass(frozen=True)
class _Channel:
    """One rail: its name and the two files its power is computed from."""

    rail: str
    voltage_file: Path  # inN_input, mV
    current_file: Path  # currN_input, mA


def _read_text(path: Path) -> str:
    """A sysfs file's text; unreadable files become MeterUnavailable naming the file."""
    try:
        return path.read_text().strip()
    except PermissionError as exc:
        raise MeterUnavailable(
            f"{path} is not readable (permission denied); run as a user who can read the "
            "INA3221 hwmon files, or use --power-meter=tegrastats"
        ) from exc
    except OSError as exc:
        raise MeterUnavailable(f"{path} could not be read: {exc}") from exc


def _read_number(path: Path) -> float:
    text = _read_text(path)
    try:
        return float(text)
    except ValueError as exc:
        raise MeterUnavailable(f"{path} holds {text!r}, not a number") from exc


def _is_rail(label: str) -> bool:
    """NC marks an unconnected channel; a label with "sum" is the chip's shunt sum."""
    return label.upper() != "NC" and "sum" not in label.lower()


def _meminfo_used_bytes(path: Path) -> int | None:
    """MemTotal - MemAvailable: on a Jetson RAM is shared, so this is the model's memory."""
    try:
        text = path.read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * 1024  # kB
    if "MemTotal" not in fields or "MemAvailable" not in fields:
        return None
    return fields["MemTotal"] - fields["MemAvailable"]


class Ina3221Meter(PowerMeter):
    """Polled Jetson rail power from the INA3221 hwmon files."""

    name: ClassVar[str] = "ina3221"

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(interval_s)
        self._channels: list[_Channel] = []
        self._sources: list[str] = []
        self._total_method: str | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        base = system_root() / DRIVER_DIR
        labels = sorted(base.glob(LABEL_GLOB)) if base.is_dir() else []
        channels: list[_Channel] = []
        sources: list[str] = []
        for label_file in labels:
            match = _LABEL_RE.fullmatch(label_file.name)
            if match is None:
                continue
            label = _read_text(label_file)
            if not _is_rail(label):
                continue
            n, hwmon = match.group(1), label_file.parent
            rail = label
            if any(c.rail == rail for c in channels):  # same label on two chips
                rail = f"{label}@{hwmon.parent.parent.name}"
            channels.append(_Channel(rail, hwmon / f"in{n}_input", hwmon / f"curr{n}_input"))
            if str(hwmon) not in sources:
                sources.append(str(hwmon))
        if not channels:
            raise MeterUnavailable(NO_CHANNELS)
        for channel in channels:  # the files are readable now, or say which is not
            _read_number(channel.voltage_file)
            _read_number(channel.current_file)
        with self._lock:
            self._channels = channels
            self._sources = sources
            self._total_method = total_rail(dict.fromkeys((c.rail for c in channels), 0.0))[1]

    def read(self) -> Reading:
        with self._lock:
            channels = list(self._channels)
        rails_mw: dict[str, float] = {}
        t0 = time.perf_counter_ns()
        for channel in channels:
            mv = _read_number(channel.voltage_file)
            ma = _read_number(channel.current_file)
            rails_mw[channel.rail] = mv * ma / 1000.0  # mV * mA = uW; / 1000 = mW
        t_ns = (t0 + time.perf_counter_ns()) // 2  # the files are read one after another
        total_w, _ = total_rail(rails_mw)
        return Reading(
            t_ns=t_ns,
            power_w=total_w if channels else None,
            rails_w={rail: mw / 1000.0 for rail, mw in rails_mw.items()},
            memory_bytes=_meminfo_used_bytes(system_root() / MEMINFO),
        )

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["source"] = ", ".join(self._sources)
        out["total_method"] = self._total_method
        out["rails"] = [c.rail for c in self._channels]
        out["files"] = {
            c.rail: {"voltage_mv": str(c.voltage_file), "current_ma": str(c.current_file)}
            for c in self._channels
        }
        return out
