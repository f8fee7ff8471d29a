"""The NVML meter's logic against a stand-in `pynvml` (this machine has no GPU).

The stand-in follows nvidia-ml-py's shapes: it raises the real `pynvml.NVMLError` (which
maps a code to its subclass, e.g. NVMLError_NotSupported, exactly as the real
`_nvmlCheckReturn` does), and returns the real ctypes structures
(`c_nvmlFieldValue_t` with a per-value `nvmlReturn`, `c_nvmlMemory_t`). So the meter's
except-clauses and field reads are checked against the real types.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml as real
import pytest

from pytest_vlmbench.power import ROOT_ENV, MeterUnavailable, create
from pytest_vlmbench.power.nvml import INSTALL_HINT, NvmlMeter


@dataclass
class Gpu:
    """One fake GPU; None for a reading means NVML answers NOT_SUPPORTED."""

    index: int
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    energy_mj: int | None = 1_000_000
    instant_mw: int | None = 312_500
    average_mw: int | None = 250_000
    used_bytes: int | None = 3 * 2**30
    parent: Gpu | None = None  # set on a MIG instance


@dataclass
class Nvml:
    gpus: list[Gpu]
    init_error: int | None = None
    calls: list[str] = field(default_factory=list)
    migs: list[Gpu] = field(default_factory=list)


def not_supported() -> real.NVMLError:
    return real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)


def fake_pynvml(state: Nvml) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    for name in dir(real):  # the real exception classes and constants
        if name.startswith(("NVMLError", "NVML_")):
            setattr(mod, name, getattr(real, name))

    def init() -> None:
        state.calls.append("init")
        if state.init_error is not None:
            raise real.NVMLError(state.init_error)

    def by_index(index: int) -> Gpu:
        if not 0 <= index < len(state.gpus):
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return state.gpus[index]

    def by_uuid(uuid: str) -> Gpu:
        for gpu in [*state.gpus, *state.migs]:
            if gpu.uuid == uuid:
                return gpu
        raise real.NVMLError(real.NVML_ERROR_NOT_FOUND)

    def energy(gpu: Gpu) -> int:
        if gpu.parent is not None or gpu.energy_mj is None:
            raise not_supported()
        return gpu.energy_mj

    def field_values(gpu: Gpu, ids: list[int]) -> Any:
        values = (real.c_nvmlFieldValue_t * len(ids))()
        for value, field_id in zip(values, ids, strict=True):
            value.fieldId = field_id
            if field_id == real.NVML_FI_DEV_POWER_INSTANT and gpu.instant_mw is not None:
                value.nvmlReturn = real.NVML_SUCCESS
                value.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = gpu.instant_mw
            else:
                value.nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
        return values

    def power_usage(gpu: Gpu) -> int:
        if gpu.parent is not None or gpu.average_mw is None:
            raise not_supported()
        return gpu.average_mw

    def memory(gpu: Gpu) -> Any:
        if gpu.used_bytes is None:
            raise not_supported()
        return real.c_nvmlMemory_t(
            total=80 * 2**30, free=80 * 2**30 - gpu.used_bytes, used=gpu.used_bytes
        )

    def is_mig(gpu: Gpu) -> Any:
        return real.c_uint(gpu.parent is not None)  # the real binding returns the c_uint

    def parent(gpu: Gpu) -> Gpu:
        if gpu.parent is None:
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.parent

    def index_of(gpu: Gpu) -> int:
        if gpu.parent is not None:
            raise not_supported()
        return gpu.index

    functions: dict[str, Any] = {
        "nvmlInit": init,
        "nvmlShutdown": lambda: state.calls.append("shutdown"),
        "nvmlDeviceGetCount": lambda: len(state.gpus),
        "nvmlDeviceGetHandleByIndex": by_index,
        "nvmlDeviceGetHandleByUUID": by_uuid,
        "nvmlDeviceGetName": lambda gpu: gpu.name,
        "nvmlDeviceGetUUID": lambda gpu: gpu.uuid,
        "nvmlDeviceGetIndex": index_of,
        "nvmlDeviceGetTotalEnergyConsumption": energy,
        "nvmlDeviceGetFieldValues": field_values,
        "nvmlDeviceGetPowerUsage": power_usage,
        "nvmlDeviceGetMemoryInfo": memory,
        "nvmlDeviceIsMigDeviceHandle": is_mig,
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle": parent,
    }
    for name, fn in functions.items():
        setattr(mod, name, fn)
    return mod


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))


def install(monkeypatch: pytest.MonkeyPatch, state: Nvml) -> types.ModuleType:
    mod = fake_pynvml(state)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return mod


def test_energy_counter_and_instant_power(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = Gpu(0)
    state = Nvml([gpu])
    install(monkeypatch, state)
    meter = create("nvml", 0.01)
    assert isinstance(meter, NvmlMeter)
    meter.open()
    gpu.energy_mj = 1_002_500  # +2.5 J since open()
    reading = meter.read()
    assert reading.energy_j == 2.5
    assert reading.power_w == 312.5
    assert reading.memory_bytes == 3 * 2**30
    assert meter.resolution_s == 0.1  # the counter refreshes every 20-100 ms
    info = meter.info()
    assert info["absent"] == {}
    assert "NVML_FI_DEV_POWER_INSTANT" in info["power_source"]
    assert "nvmlDeviceGetTotalEnergyConsumption" in info["energy_source"]
    assert info["device"]["index"] == 0
    assert info["device"]["uuid"] == gpu.uuid
    assert "notes" not in info  # one GPU: no ordering question
    meter.close()
    meter.close()
    assert state.calls == ["init", "shutdown"]


def test_a_long_interval_is_its_own_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, Nvml([Gpu(0)]))
    meter = NvmlMeter(interval_s=0.5)
    meter.open()
    assert meter.resolution_s == 0.5


@pytest.mark.parametrize("why", ["field not supported", "pynvml without the field"])
def test_power_falls_back_to_the_one_second_average(
    monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    mod = install(monkeypatch, Nvml([Gpu(0, instant_mw=None if why.startswith("field") else 1)]))
    if why.startswith("pynvml"):
        delattr(mod, "NVML_FI_DEV_POWER_INSTANT")
    meter = NvmlMeter()
    meter.open()
    assert meter.read().power_w == 250.0
    info = meter.info()
    assert "nvmlDeviceGetPowerUsage" in info["power_source"]
    assert "1-second average" in info["power_source"]
    assert any("instantaneous power is unavailable" in note for note in info["notes"])
    assert "power_w" not in info["absent"]


def test_unified_memory_reads_proc_meminfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal:       131072000 kB\nMemFree:         1000 kB\nMemAvailable:   100000000 kB\n"
    )
    install(monkeypatch, Nvml([Gpu(0, name="NVIDIA GB10", used_bytes=None)]))
    meter = NvmlMeter()
    meter.open()
    assert meter.read().memory_bytes == (131_072_000 - 100_000_000) * 1024
    info = meter.info()
    assert "/proc/meminfo" in info["memory_source"]
    assert "unified memory" in info["memory_source"]
    assert "memory_bytes" not in info["absent"]


def test_unified_memory_without_meminfo_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, Nvml([Gpu(0, used_bytes=None)]))
    meter = NvmlMeter()
    meter.open()
    assert meter.read().memory_bytes is None
    assert "Not Supported" in meter.info()["absent"]["memory_bytes"]


def test_energy_not_supported_is_absent_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, Nvml([Gpu(0, name="Tesla P4", energy_mj=None)]))
    meter = NvmlMeter(interval_s=0.02)
    meter.open()
    reading = meter.read()
    assert reading.energy_j is None
    assert reading.power_w == 312.5
    info = meter.info()
    assert info["absent"]["energy_j"].startswith("nvmlDeviceGetTotalEnergyConsumption: Not Supp")
    assert "Volta" in info["absent"]["energy_j"]
    assert info["energy_source"] is None
    assert meter.resolution_s == 0.02  # instant power, no coarse counter


def test_neither_energy_nor_power_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    state = Nvml([Gpu(0, energy_mj=None, instant_mw=None, average_mw=None)])
    install(monkeypatch, state)
    with pytest.raises(MeterUnavailable, match="neither energy nor power") as exc:
        NvmlMeter().open()
    assert "nvmlDeviceGetPowerUsage: Not Supported" in str(exc.value)
    assert state.calls == ["init", "shutdown"]


def test_a_failing_read_is_a_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = install(monkeypatch, Nvml([Gpu(0)]))
    meter = NvmlMeter()
    meter.open()

    def lost(gpu: Gpu) -> int:
        raise real.NVMLError(real.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(mod, "nvmlDeviceGetTotalEnergyConsumption", lost)
    reading = meter.read()
    assert reading.energy_j is None
    assert reading.power_w == 312.5
    assert meter.info()["read_errors"] == {"energy_j": "GPU is lost"}


def two_gpus() -> list[Gpu]:
    return [
        Gpu(0, name="NVIDIA L4", uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000"),
        Gpu(1, name="NVIDIA H100 80GB HBM3", uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000"),
    ]


def test_cuda_visible_devices_index(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = two_gpus()
    install(monkeypatch, Nvml(gpus))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    meter = NvmlMeter()
    meter.open()
    gpus[1].energy_mj = 1_001_000
    assert meter.read().energy_j == 1.0
    info = meter.info()
    assert info["device"]["index"] == 1
    assert info["device"]["name"] == "NVIDIA H100 80GB HBM3"
    assert info["device"]["uuid"] == gpus[1].uuid
    assert any("assumes PCI order" in note for note in info["notes"])
    meter.close()

    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    meter.open()
    assert "notes" not in meter.info()


@pytest.mark.parametrize("entry", ["GPU-bbbbbbbb-0000-0000-0000-000000000000", "GPU-bbbb"])
def test_cuda_visible_devices_uuid(monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    """A full UUID, or a unique prefix of one (CUDA accepts both)."""
    gpus = two_gpus()
    install(monkeypatch, Nvml(gpus))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", entry)
    meter = NvmlMeter()
    meter.open()
    info = meter.info()
    assert info["device"]["index"] == 1
    assert info["device"]["uuid"] == gpus[1].uuid
    assert "notes" not in info  # a UUID is unambiguous whatever the order


def test_mig_instance_reads_the_whole_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = Gpu(0)
    mig = Gpu(0, uuid="MIG-11111111-2222-3333-4444-555555555555", used_bytes=2**30, parent=gpu)
    install(monkeypatch, Nvml([gpu], migs=[mig]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig.uuid)
    meter = NvmlMeter()
    meter.open()
    gpu.energy_mj = 1_000_500
    reading = meter.read()
    assert reading.energy_j == 0.5
    assert reading.memory_bytes == 2**30  # the instance's own memory
    info = meter.info()
    assert info["device"]["uuid"] == mig.uuid
    assert any("MIG instance" in note for note in info["notes"])


@pytest.mark.parametrize(
    ("visible", "match"),
    [("2", "selects GPU 2, but NVML sees 2"), ("", "no GPU"), ("GPU-cccc", "cannot find")],
)
def test_cuda_visible_devices_that_select_nothing(
    monkeypatch: pytest.MonkeyPatch, visible: str, match: str
) -> None:
    state = Nvml(two_gpus())
    install(monkeypatch, state)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(MeterUnavailable, match=match):
        NvmlMeter().open()
    assert state.calls == ["init", "shutdown"]


def test_init_failure_is_unavailable_with_nvmls_message(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, Nvml([], init_error=real.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(MeterUnavailable, match="NVML could not start: Driver Not Loaded"):
        NvmlMeter().open()


def test_without_nvidia_ml_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(MeterUnavailable) as exc:
        NvmlMeter().open()
    assert str(exc.value) == INSTALL_HINT
    assert "pip install 'pytest-vlmbench[nvml]'" in INSTALL_HINT


def test_real_pynvml_without_a_gpu_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed nvidia-ml-py on a machine with no NVIDIA driver: a reason, no traceback."""
    try:
        real.nvmlInit()
    except real.NVMLError:
        pass
    else:
        real.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present here; this test is for GPU-less machines")
    monkeypatch.setitem(sys.modules, "pynvml", real)
    with pytest.raises(MeterUnavailable, match="NVML could not start: "):
        NvmlMeter().open()
