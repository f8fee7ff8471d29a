"""NVIDIA GPU energy, power and memory through NVML (the nvidia-ml-py package).

What each NVML call gives, and why this meter prefers one over another:

- `nvmlDeviceGetTotalEnergyConsumption`: mJ since the driver loaded (Volta and newer).
  The best source of energy, but the driver refreshes it only every 20-100 ms, so energy
  over a shorter window is not meaningful: `resolution_s` is then max(interval, 0.1).
- `nvmlDeviceGetFieldValues([NVML_FI_DEV_POWER_INSTANT])`: instantaneous power (mW).
  Each returned value carries its own `nvmlReturn`, which must be checked: the call as a
  whole succeeds even when the field is not supported.
- `nvmlDeviceGetPowerUsage`: mW, but on Ampere (except GA100) and newer it is averaged
  over the last second, so it is only the fallback.
- `nvmlDeviceGetMemoryInfo`: raises NOT_SUPPORTED on unified-memory systems (GB10 / DGX
  Spark); there the process's memory is system RAM, read from /proc/meminfo.

Every NOT_SUPPORTED is an absent metric with its reason in `info()["absent"]`, never an
error and never a zero. Each capability is probed once in `open()`; `read()` calls only
what worked there.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, ClassVar

from pytest_vlmbench.power import MeterUnavailable, PowerMeter, Reading, system_root

INSTALL_HINT = "nvidia-ml-py is not installed: pip install 'pytest-vlmbench[nvml]'"
ENERGY_UPDATE_PERIOD_S = 0.1  # the energy counter refreshes every 20-100 ms
AVERAGE_POWER_WINDOW_S = 1.0  # nvmlDeviceGetPowerUsage on Ampere and newer
_NVML_ERROR_NOT_SUPPORTED = 3  # nvml.h; read from pynvml when it has it

# nvmlValueType_t -> the c_nvmlValue_t union member that holds it (nvml.h).
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


def _text(value: Any) -> str:
    """Older nvidia-ml-py releases return bytes for names and UUIDs."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_number(field: Any) -> float:
    """The number in a c_nvmlFieldValue_t, whichever union member its valueType names
    (the power fields are unsigned int on most drivers, but not all)."""
    kind = int(field.valueType)
    member = _VALUE_MEMBERS[kind] if 0 <= kind < len(_VALUE_MEMBERS) else "uiVal"
    return float(getattr(field.value, member))


def meminfo_used_bytes() -> int:
    """System RAM in use, MemTotal - MemAvailable, from system_root()/proc/meminfo."""
    fields: dict[str, int] = {}
    for line in (system_root() / "proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    try:
        return fields["MemTotal"] - fields["MemAvailable"]
    except KeyError as exc:
        raise ValueError(f"/proc/meminfo has no {exc.args[0]} line") from exc


class NvmlMeter(PowerMeter):
    """Polled energy (preferred), power and memory of the GPU this process uses."""

    name: ClassVar[str] = "nvml"

    def __init__(self, interval_s: float = 0.1) -> None:
        super().__init__(interval_s)
        self._nvml: Any = None  # the pynvml module, once nvmlInit succeeded
        self._handle: Any = None  # for memory: the MIG instance when one is selected
        self._power_handle: Any = None  # for energy and power: always the whole GPU
        self._energy0_mj: int | None = None
        self._instant_field = 0  # NVML_FI_DEV_POWER_INSTANT, once it has read
        self._power_source: str | None = None  # "instant" | "average"
        self._memory_source: str | None = None  # "nvml" | "meminfo"
        self._absent: dict[str, str] = {}
        self._read_errors: dict[str, str] = {}
        self._device: dict[str, Any] = {}
        self._notes: list[str] = []
        self._lock = threading.Lock()

    # --- open / close ---------------------------------------------------------------

    def open(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise MeterUnavailable(INSTALL_HINT) from exc
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError (no driver, no library) or a library mismatch
            raise MeterUnavailable(f"NVML could not start: {exc}") from exc
        self._nvml = pynvml
        self._reset()
        try:
            self._select_device()
            self._probe()
        except pynvml.NVMLError as exc:  # a device lookup failed outright
            self.close()
            raise MeterUnavailable(f"NVML: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _reset(self) -> None:
        self._energy0_mj = None
        self._power_source = self._memory_source = None
        self._absent, self._read_errors, self._device, self._notes = {}, {}, {}, []

    def close(self) -> None:
        """nvmlShutdown once; NVML counts nvmlInit calls, so a second would unbalance it."""
        with self._lock:
            nvml, self._nvml = self._nvml, None
        if nvml is not None:
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()

    # --- device selection -------------------------------------------------------------

    def _select_device(self) -> None:
        """The GPU the process uses: CUDA_VISIBLE_DEVICES' first entry, else index 0."""
        nvml = self._nvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        entry = visible.split(",")[0].strip() if visible is not None else "0"
        count = int(nvml.nvmlDeviceGetCount())
        by_uuid = entry.startswith(("GPU-", "MIG-"))
        if by_uuid:
            handle = self._handle_by_uuid(entry, count)
        elif entry.isdigit():
            index = int(entry)
            if index >= count:
                raise MeterUnavailable(
                    f"CUDA_VISIBLE_DEVICES={visible} selects GPU {index}, but NVML sees "
                    f"{count} GPU(s)"
                )
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        else:  # "", "-1", "none": CUDA then sees no GPU at all
            raise MeterUnavailable(
                f"CUDA_VISIBLE_DEVICES={visible!r} leaves this process no GPU to measure"
            )
        self._handle = handle
        self._power_handle = handle
        if self._call_quietly("nvmlDeviceIsMigDeviceHandle", handle):
            # A MIG instance has no power sensor of its own: energy and power are the
            # whole GPU's, memory is the instance's.
            self._power_handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            self._notes.append(
                "a MIG instance is selected: energy and power are the whole GPU's "
                "(shared with the other instances), memory is the instance's"
            )
        self._device = {
            "index": self._call_quietly("nvmlDeviceGetIndex", self._power_handle),
            "name": _text(nvml.nvmlDeviceGetName(self._power_handle)),
            "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
            "selected_by": (
                f"CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "default index 0"
            ),
        }
        if not by_uuid and count > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
            self._notes.append(
                f"{count} GPUs and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA's default "
                "FASTEST_FIRST order may differ from NVML's PCI order; the index mapping "
                "assumes PCI order (set CUDA_DEVICE_ORDER=PCI_BUS_ID, or select the GPU by "
                "UUID, to be sure)"
            )

    def _handle_by_uuid(self, entry: str, count: int) -> Any:
        """A full UUID goes straight to NVML; CUDA also accepts a unique GPU-UUID prefix."""
        nvml = self._nvml
        try:
            return nvml.nvmlDeviceGetHandleByUUID(entry)
        except nvml.NVMLError as exc:
            first_error = exc
        if entry.startswith("GPU-"):
            matches = []
            for i in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(entry):
                    matches.append(handle)
            if len(matches) == 1:
                return matches[0]
        raise MeterUnavailable(
            f"CUDA_VISIBLE_DEVICES names {entry}, which NVML cannot find: {first_error}"
        )

    # --- probing ----------------------------------------------------------------------

    def _not_supported(self, exc: BaseException) -> bool:
        code = getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", _NVML_ERROR_NOT_SUPPORTED)
        return isinstance(exc, self._nvml.NVMLError) and getattr(exc, "value", None) == code

    def _call_quietly(self, function: str, handle: Any) -> Any:
        """An optional lookup: None when this pynvml or driver lacks it."""
        fn = getattr(self._nvml, function, None)
        if fn is None:
            return None
        try:
            value = fn(handle)
        except self._nvml.NVMLError:
            return None
        return getattr(value, "value", value)  # nvmlDeviceIsMigDeviceHandle returns a c_uint

    def _probe(self) -> None:
        """Try each capability once; what fails is recorded as absent, with NVML's reason."""
        nvml, handle = self._nvml, self._power_handle
        try:
            self._energy0_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except nvml.NVMLError as exc:
            self._absent["energy_j"] = self._reason(
                "nvmlDeviceGetTotalEnergyConsumption", exc, "needs a Volta or newer GPU"
            )

        instant_reason = self._probe_instant_power()
        if instant_reason is None:
            self._power_source = "instant"
        else:
            try:
                nvml.nvmlDeviceGetPowerUsage(handle)
            except nvml.NVMLError as exc:
                self._absent["power_w"] = (
                    f"{instant_reason}; {self._reason('nvmlDeviceGetPowerUsage', exc)}"
                )
            else:
                self._power_source = "average"
                self._notes.append(
                    f"instantaneous power is unavailable ({instant_reason}); power_w is "
                    "nvmlDeviceGetPowerUsage, a 1-second average on Ampere and newer GPUs"
                )

        if self._energy0_mj is None and self._power_source is None:
            raise MeterUnavailable(
                f"NVML reads neither energy nor power on {self._device.get('name', 'this GPU')}: "
                f"{self._absent['energy_j']}; {self._absent['power_w']}"
            )

        try:
            nvml.nvmlDeviceGetMemoryInfo(self._handle)
        except nvml.NVMLError as exc:
            if not self._not_supported(exc):
                self._absent["memory_bytes"] = self._reason("nvmlDeviceGetMemoryInfo", exc)
            else:
                try:
                    meminfo_used_bytes()
                except (OSError, ValueError) as err:
                    self._absent["memory_bytes"] = (
                        "nvmlDeviceGetMemoryInfo: Not Supported (unified memory), and "
                        f"/proc/meminfo could not be read: {err}"
                    )
                else:
                    self._memory_source = "meminfo"
        else:
            self._memory_source = "nvml"

    def _probe_instant_power(self) -> str | None:
        """None when NVML_FI_DEV_POWER_INSTANT reads; otherwise why not."""
        nvml = self._nvml
        field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            return "this nvidia-ml-py has no NVML_FI_DEV_POWER_INSTANT"
        try:
            field = nvml.nvmlDeviceGetFieldValues(self._power_handle, [field_id])[0]
        except nvml.NVMLError as exc:
            return self._reason("nvmlDeviceGetFieldValues", exc)
        if field.nvmlReturn != getattr(nvml, "NVML_SUCCESS", 0):
            return self._reason("NVML_FI_DEV_POWER_INSTANT", nvml.NVMLError(field.nvmlReturn))
        self._instant_field = field_id
        return None

    def _reason(self, call: str, exc: BaseException, unsupported_hint: str = "") -> str:
        hint = f" ({unsupported_hint})" if unsupported_hint and self._not_supported(exc) else ""
        return f"{call}: {exc}{hint}"

    # --- reading ----------------------------------------------------------------------

    def read(self) -> Reading:
        """One reading; a metric whose call fails now is None in it (and counted in info)."""
        nvml = self._nvml
        if nvml is None:
            raise RuntimeError("NvmlMeter.read() outside open() ... close()")
        t0 = time.perf_counter_ns()
        energy_j = power_w = None
        memory: int | None = None
        if self._energy0_mj is not None:
            mj = self._attempt(
                "energy_j", nvml.nvmlDeviceGetTotalEnergyConsumption, self._power_handle
            )
            energy_j = None if mj is None else (int(mj) - self._energy0_mj) / 1000.0
        if self._power_source == "instant":
            power_w = self._attempt("power_w", self._instant_power_w)
        elif self._power_source == "average":
            mw = self._attempt("power_w", nvml.nvmlDeviceGetPowerUsage, self._power_handle)
            power_w = None if mw is None else float(mw) / 1000.0
        if self._memory_source == "nvml":
            info = self._attempt("memory_bytes", nvml.nvmlDeviceGetMemoryInfo, self._handle)
            memory = None if info is None else int(info.used)
        elif self._memory_source == "meminfo":
            memory = self._attempt("memory_bytes", meminfo_used_bytes)
        t1 = time.perf_counter_ns()
        return Reading(t_ns=(t0 + t1) // 2, power_w=power_w, energy_j=energy_j, memory_bytes=memory)

    def _instant_power_w(self) -> float:
        field = self._nvml.nvmlDeviceGetFieldValues(self._power_handle, [self._instant_field])[0]
        if field.nvmlReturn != getattr(self._nvml, "NVML_SUCCESS", 0):
            raise self._nvml.NVMLError(field.nvmlReturn)
        return _field_number(field) / 1000.0

    def _attempt(self, metric: str, fn: Any, *args: Any) -> Any:
        """fn(*args), or None if it fails this once: a gap in the series, never a zero."""
        try:
            return fn(*args)
        except (self._nvml.NVMLError, OSError, ValueError) as exc:
            with self._lock:
                self._read_errors[metric] = f"{exc}"
            return None

    # --- description ------------------------------------------------------------------

    @property
    def resolution_s(self) -> float:
        if self._energy0_mj is not None:
            return max(self.interval_s, ENERGY_UPDATE_PERIOD_S)
        if self._power_source == "average":  # integrating a 1-second trailing average
            return max(self.interval_s, AVERAGE_POWER_WINDOW_S)
        return self.interval_s

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["device"] = dict(self._device)
        out["energy_source"] = (
            "nvmlDeviceGetTotalEnergyConsumption (mJ, relative to open(); refreshed every "
            "20-100 ms)"
            if self._energy0_mj is not None
            else None
        )
        out["power_source"] = {
            "instant": "nvmlDeviceGetFieldValues NVML_FI_DEV_POWER_INSTANT (instantaneous)",
            "average": "nvmlDeviceGetPowerUsage (a 1-second average on Ampere and newer)",
        }.get(self._power_source or "")
        out["memory_source"] = {
            "nvml": "nvmlDeviceGetMemoryInfo used",
            "meminfo": (
                "/proc/meminfo MemTotal - MemAvailable: NVML reports no GPU memory here "
                "(unified memory, e.g. GB10 / DGX Spark), so this is system RAM in use"
            ),
        }.get(self._memory_source or "")
        out["absent"] = dict(self._absent)
        if self._notes:
            out["notes"] = list(self._notes)
        with self._lock:
            if self._read_errors:
                out["read_errors"] = dict(self._read_errors)
        out["resolution_s"] = self.resolution_s
        return out
