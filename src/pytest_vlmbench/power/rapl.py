"""CPU energy from the RAPL counters the Linux powercap framework exposes.

`/sys/class/powercap/intel-rapl:N` are the top-level zones (one `package-N` per CPU
socket, and on some laptops and desktops a `psys` platform zone); `intel-rapl:N:M` are
their subzones (`core`, `uncore`, `dram`). AMD Zen CPUs expose the same `intel-rapl:*`
zones through the same driver. Each zone has a cumulative `energy_uj` counter that
wraps at `max_energy_range_uj`; the hardware updates it about every millisecond, so
the meter's resolution is its polling interval.

The total is the packages plus the DRAM subzones, because DRAM energy is not inside
the package counter (core and uncore are). `psys` covers the whole platform, packages
included, so it is recorded as a rail but never added (it is the total only when a
machine has no package zone at all).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pytest_vlmbench.power import MeterUnavailable, PowerMeter, Reading, system_root

POWERCAP = "sys/class/powercap"
_ZONE_RE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")

NO_COUNTERS = (
    "no RAPL energy counters under /sys/class/powercap (a virtual machine, or the "
    "intel_rapl_msr / rapl driver is not loaded)"
)
# Since the PLATYPUS side channel (CVE-2020-8694) energy_uj is mode 0400: root only.
PERMISSION_HINT = (
    "permission denied (since Linux 5.10 only root may read RAPL counters; run as root "
    "or `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj`)"
)
TOTAL_METHOD = (
    "sum of the package-N zones plus their dram subzones (DRAM energy is not inside the "
    "package counter; core and uncore are, so they are not added); a psys (platform) "
    "zone is kept as a rail but not added, since it already contains the packages"
)
TOTAL_METHOD_PSYS = "the psys (platform) zone alone: this machine exposes no package-N zone"


@dataclass
class _Zone:
    """One counter: where it is, what it is called, and its unwrapped running total."""

    sysfs_id: str  # "intel-rapl:0" or "intel-rapl:0:2"
    key: str  # "package-0", or "package-0/dram" for a subzone
    kind: str  # the zone's `name` file: package-0, core, uncore, dram, psys
    top: bool  # a top-level zone (a package or psys), not a subzone
    energy_file: Path
    max_range_uj: int | None
    counted: bool = False
    last_uj: int = 0
    total_uj: int = 0  # energy since open(), wrap-around undone
    wraps: int = 0
    unhandled_wraps: int = 0  # the counter went down but its range is unknown


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _read_counter(path: Path) -> int:
    """One energy_uj value; a permission problem becomes MeterUnavailable with the fix."""
    try:
        return _read_int(path)
    except PermissionError as exc:
        raise MeterUnavailable(f"{path} is not readable: {PERMISSION_HINT}") from exc
    except (OSError, ValueError) as exc:
        raise MeterUnavailable(f"{path} could not be read: {exc}") from exc


def _zone_dirs(base: Path) -> dict[tuple[int, int | None], Path]:
    """Every intel-rapl zone by (package, subzone): /sys/class/powercap lists them all
    flat (symlinks); a copied tree may only have the subzones nested in their parent."""
    found: dict[tuple[int, int | None], Path] = {}
    candidates = list(base.iterdir())
    for top in list(candidates):
        if _ZONE_RE.match(top.name) and top.is_dir():
            candidates.extend(p for p in top.iterdir() if p.is_dir())
    for path in candidates:
        match = _ZONE_RE.match(path.name)
        if match is None or not (path / "energy_uj").exists():
            continue
        sub = match.group(2)
        found.setdefault((int(match.group(1)), None if sub is None else int(sub)), path)
    return found


class RaplMeter(PowerMeter):
    """Polled CPU package (+ DRAM) energy from RAPL counters; power_w stays None."""

    name: ClassVar[str] = "rapl"

    def __init__(self, interval_s: float = 0.1) -> None:
        super().__init__(interval_s)
        self._zones: list[_Zone] = []
        self._total_method = TOTAL_METHOD
        self._lock = threading.Lock()
        self._open = False

    def open(self) -> None:
        base = system_root() / POWERCAP
        dirs = _zone_dirs(base) if base.is_dir() else {}
        if not dirs:
            raise MeterUnavailable(NO_COUNTERS)
        names = {key: self._zone_name(path) for key, path in dirs.items()}
        zones: list[_Zone] = []
        used_keys: set[str] = set()
        order = sorted(dirs, key=lambda k: (k[0], -1 if k[1] is None else k[1]))
        for pkg, sub in order:
            path = dirs[(pkg, sub)]
            kind = names[(pkg, sub)]
            key = kind if sub is None else f"{names.get((pkg, None), f'intel-rapl:{pkg}')}/{kind}"
            if key in used_keys:  # two zones with the same name: fall back to the sysfs id
                key = path.name
            used_keys.add(key)
            zones.append(
                _Zone(
                    sysfs_id=path.name,
                    key=key,
                    kind=kind,
                    top=sub is None,
                    energy_file=path / "energy_uj",
                    max_range_uj=self._max_range(path),
                )
            )
        if any(z.top and z.kind.startswith("package") for z in zones):
            for z in zones:
                z.counted = z.kind.startswith("package") if z.top else z.kind == "dram"
            self._total_method = TOTAL_METHOD
        else:
            psys = [z for z in zones if z.kind == "psys"]
            if not psys:
                found = ", ".join(f"{z.sysfs_id} ({z.kind})" for z in zones)
                raise MeterUnavailable(f"no RAPL package or psys zone under {base}: only {found}")
            for z in psys:
                z.counted = True
            self._total_method = TOTAL_METHOD_PSYS
        for z in zones:  # the baseline; also where an unreadable counter is found
            z.last_uj = _read_counter(z.energy_file)
        with self._lock:
            self._zones = zones
            self._open = True

    @staticmethod
    def _zone_name(path: Path) -> str:
        try:
            return (path / "name").read_text().strip() or path.name
        except OSError:
            return path.name

    @staticmethod
    def _max_range(path: Path) -> int | None:
        try:
            return _read_int(path / "max_energy_range_uj")
        except (OSError, ValueError):
            return None

    def read(self) -> Reading:
        with self._lock:
            if not self._open:
                raise RuntimeError("RaplMeter.read() outside open() ... close()")
            t0 = time.perf_counter_ns()
            values = [_read_int(z.energy_file) for z in self._zones]
            t1 = time.perf_counter_ns()
            for zone, value in zip(self._zones, values, strict=True):
                self._advance(zone, value)
            total_uj = sum(z.total_uj for z in self._zones if z.counted)
            extra = {f"energy_j:{z.key}": z.total_uj / 1e6 for z in self._zones}
        # The files are read one after another; stamp the reading at the middle.
        return Reading(t_ns=(t0 + t1) // 2, energy_j=total_uj / 1e6, extra=extra)

    @staticmethod
    def _advance(zone: _Zone, value: int) -> None:
        """Add the change since the last read; a counter that went down has wrapped."""
        delta = value - zone.last_uj
        if delta < 0:
            if zone.max_range_uj is None:
                zone.unhandled_wraps += 1
                delta = 0  # unknown range: lose this interval rather than invent energy
            else:
                zone.wraps += 1
                delta += zone.max_range_uj
        zone.total_uj += delta
        zone.last_uj = value

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["zones"] = [
            {
                "zone": z.sysfs_id,
                "name": z.key,
                "counted_in_total": z.counted,
                "max_energy_range_uj": z.max_range_uj,
                "wraps": z.wraps,
                **({"unhandled_wraps": z.unhandled_wraps} if z.unhandled_wraps else {}),
            }
            for z in self._zones
        ]
        out["total_method"] = self._total_method
        out["counter_update_period_s"] = 0.001
        out["power_w"] = "not read: RAPL gives energy counters; power is energy over time"
        return out

    def close(self) -> None:
        """Nothing to release (plain files); the zones stay for info()."""
        with self._lock:
            self._open = False
