"""Tests for devices.py: detection from a fake root and NVML, resolve, the profiles.

NVML is a stand-in here (this machine has no GPU): `fake_pynvml` raises the real
`pynvml.NVMLError` codes and returns the real ctypes structures, as
tests/test_power_nvml.py does, so the readings' except-clauses meet the real types.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml as real
import pytest

from pytest_vlmbench.models import devices
from pytest_vlmbench.models.devices import (
    CPU_FALLBACK,
    PROFILES,
    DeviceError,
    NvmlGpu,
    cpu_fallback,
    cpu_threads,
    detect,
    match_gpu,
    nvml_bandwidth_gbs,
    nvml_key,
    nvml_profile,
    resolve,
)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection must not depend on whether the machine running the tests has a GPU."""
    monkeypatch.setattr(devices, "_nvml_gpus", lambda root: [])


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> list[NvmlGpu]:
    found: list[NvmlGpu] = []
    monkeypatch.setattr(devices, "_nvml_gpus", lambda root: list(found))
    return found


def gpu(name: str, index: int = 0, **readings: Any) -> NvmlGpu:
    return NvmlGpu(index, name, **readings)


def jetson_root(tmp_path: Path, model: bytes) -> Path:
    tree = tmp_path / "proc" / "device-tree"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(model)
    return tmp_path


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (b"NVIDIA Jetson Orin Nano Developer Kit\0", "orin-nano"),
        (b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0", "orin-nano"),
        (b"NVIDIA Jetson AGX Orin Developer Kit\0", "orin"),
        (b"NVIDIA Jetson AGX Orin", "orin"),
        (b"NVIDIA Jetson AGX Thor Developer Kit\0", "thor"),
        (b"NVIDIA Jetson AGX Thor", "thor"),
    ],
)
def test_detect_jetson_from_device_tree(tmp_path: Path, model: bytes, expected: str) -> None:
    found = detect(jetson_root(tmp_path, model))
    assert found.profile == expected
    name = model.rstrip(b"\0").decode()
    assert name in found.evidence
    assert "\\x00" not in found.evidence


@pytest.mark.usefixtures("no_gpu")
def test_unlisted_jetson_is_treated_as_orin(tmp_path: Path) -> None:
    found = detect(jetson_root(tmp_path, b"NVIDIA Jetson Orin NX Developer Kit\0"))
    assert found.profile == "orin"
    assert "Orin NX" in found.evidence
    assert "unlisted" in found.evidence


@pytest.mark.usefixtures("no_gpu")
def test_nv_tegra_release_alone_means_orin(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 3.0\n")
    found = detect(tmp_path)
    assert found.profile == "orin"
    assert "nv_tegra_release" in found.evidence


@pytest.mark.usefixtures("no_gpu")
def test_non_jetson_device_tree_is_cpu(tmp_path: Path) -> None:
    found = detect(jetson_root(tmp_path, b"Raspberry Pi 4 Model B Rev 1.4\0"))
    assert found.profile == "cpu"


@pytest.mark.usefixtures("no_gpu")
def test_empty_root_is_cpu(tmp_path: Path) -> None:
    found = detect(tmp_path)
    assert found.profile == "cpu"
    assert "no Jetson and no NVIDIA GPU" in found.evidence


def test_empty_root_is_cpu_with_real_nvml_lookup(tmp_path: Path) -> None:
    # This machine has no GPU (nvidia-ml-py finds no driver); on one that has, skip.
    if devices._nvml_gpus(Path("/")):
        pytest.skip("an NVIDIA GPU is visible to NVML here")
    assert detect(tmp_path).profile == "cpu"


# Real NVML names (as drivers report them) and the profile each must get.
NVML_NAMES = [
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA H200 NVL", "h200-nvl"),
    ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
    ("NVIDIA A100 80GB PCIe", "a100-pcie"),
    ("A100-SXM4-40GB", "a100-40gb"),  # drivers before ~R470 left out "NVIDIA "
    ("NVIDIA L40S", "l40s"),
    ("NVIDIA L40", "l40"),
    ("NVIDIA L4", "l4"),
    ("Tesla T4", "t4"),
    ("NVIDIA A10", "a10"),
    ("NVIDIA A10G", "a10g"),
    ("NVIDIA GB10", "gb10"),
    ("NVIDIA GeForce RTX 3090", "rtx-3090"),
    ("GeForce RTX 3090", "rtx-3090"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("NVIDIA GeForce RTX 5090", "rtx-5090"),
]


@pytest.mark.parametrize(("name", "expected"), NVML_NAMES)
def test_detect_gpu_from_its_exact_nvml_name(
    tmp_path: Path, gpus: list[NvmlGpu], name: str, expected: str
) -> None:
    gpus.append(gpu(name))
    found = detect(tmp_path)
    assert found.profile == expected
    assert found.derived is None
    assert found.resolved() is PROFILES[expected]
    assert name in found.evidence


@pytest.mark.parametrize(
    ("name", "memory_gb", "bandwidth_gbs"),
    [
        ("NVIDIA H100 80GB HBM3", 80, 3350),
        ("NVIDIA H100 PCIe", 80, 2000),
        ("NVIDIA H100 NVL", 94, 3900),
        ("NVIDIA H200", 141, 4800),
        ("NVIDIA H200 NVL", 141, 4800),
        ("NVIDIA A100-SXM4-40GB", 40, 1555),
        ("NVIDIA A100-PCIE-40GB", 40, 1555),
        ("NVIDIA A100-SXM4-80GB", 80, 2039),
        ("NVIDIA A100 80GB PCIe", 80, 1935),
        ("NVIDIA L40S", 48, 864),
        ("NVIDIA L4", 24, 300),
        ("Tesla T4", 16, 320),
        ("NVIDIA GB10", 128, 273),
        ("NVIDIA GeForce RTX 3090", 24, 936),
        ("NVIDIA GeForce RTX 4090", 24, 1008),
        ("NVIDIA GeForce RTX 5090", 32, 1792),
    ],
)
def test_variants_carry_their_own_spec_sheet_figures(
    name: str, memory_gb: float, bandwidth_gbs: float
) -> None:
    profile = match_gpu(name)
    assert profile is not None
    assert (profile.memory_gb, profile.bandwidth_gbs) == (memory_gb, bandwidth_gbs)
    assert f"{bandwidth_gbs:g} GB/s" in profile.bandwidth_source
    assert profile.to_json()["bandwidth_source"] == profile.bandwidth_source


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA GeForce RTX 3090 Ti",  # 1008 GB/s, not the 3090's 936
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA GeForce RTX 4090 Laptop GPU",  # 16 GB, 576 GB/s
        "NVIDIA H100",
        "NVIDIA H800",
        "NVIDIA L40S-48C",  # a vGPU profile name
        "NVIDIA GeForce GTX 1080",
    ],
)
def test_a_name_that_only_contains_a_known_one_is_not_that_gpu(name: str) -> None:
    # Substring matching labelled an H100 PCIe and NVL as the SXM and a 3090 Ti as a 3090.
    assert match_gpu(name) is None


def test_old_substring_cases_now_get_their_own_profile(
    tmp_path: Path, gpus: list[NvmlGpu]
) -> None:
    gpus.append(gpu("NVIDIA H100 PCIe"))
    profile, _ = resolve("auto", root=tmp_path)
    assert profile.name == "h100-pcie"
    assert profile.bandwidth_gbs == 2000  # not the SXM's 3350
    gpus[0] = gpu("NVIDIA A100-PCIE-40GB")
    profile, _ = resolve("auto", root=tmp_path)
    assert (profile.name, profile.memory_gb) == ("a100-pcie-40gb", 40)


def test_first_gpu_with_a_profile_wins(tmp_path: Path, gpus: list[NvmlGpu]) -> None:
    gpus.extend([gpu("NVIDIA GeForce GTX 1080", 0), gpu("NVIDIA H100 PCIe", 1)])
    found = detect(tmp_path)
    assert found.profile == "h100-pcie"
    assert found.gpu is not None
    assert found.gpu.index == 1
    assert "GPU 1 of 2" in found.evidence
    assert "GTX 1080" in found.evidence


@pytest.mark.parametrize("name", ["NVIDIA L40S", "NVIDIA L40"])
def test_l40_is_not_detected_as_l4(tmp_path: Path, gpus: list[NvmlGpu], name: str) -> None:
    # An L40S (48 GB, 864 GB/s) must not be labelled an L4 (24 GB, 300 GB/s), which
    # would also let --device=l4 pass on it.
    gpus.append(gpu(name))
    assert detect(tmp_path).profile == name.removeprefix("NVIDIA ").lower()


# --- GPUs the table does not know: a profile from NVML ------------------------------------


# (name, max memory clock MHz, bus width bits) as NVML reports them, and the spec sheet's
# peak bandwidth (GB/s). H100 SXM/NVL and H200: `nvidia-smi -q` "Max Clocks / Memory"
# outputs (2619, 2619, 3201 MHz) and the HBM bus widths; T4: `nvidia-smi -q` "Max Clocks /
# Memory 5001 MHz" (graphics 1590 MHz) and its 256-bit bus; L4: 6251 MHz on a 192-bit bus.
KNOWN_CARDS = [
    ("H100 SXM", 2619, 5120, 3350, 0.01),
    ("H100 NVL", 2619, 6016, 3900, 0.01),
    ("T4", 5001, 256, 320, 0.01),
    ("L4", 6251, 192, 300, 0.01),
    ("H200", 3201, 6144, 4800, 0.03),  # 4917 by the formula; NVIDIA rounds to "4.8 TB/s"
]


@pytest.mark.parametrize(("card", "clock", "bus", "spec", "tolerance"), KNOWN_CARDS)
def test_nvml_bandwidth_formula_matches_spec_sheets(
    card: str, clock: int, bus: int, spec: float, tolerance: float
) -> None:
    # Two transfers per reported memory clock, for HBM and GDDR alike: a factor of 1
    # would give half and 4 double the spec sheets'.
    assert nvml_bandwidth_gbs(clock, bus) == pytest.approx(spec, rel=tolerance)


def test_h100_sxm_by_the_formula_is_3352_gbs() -> None:
    assert nvml_bandwidth_gbs(2619, 5120) == 3352.3


def test_unknown_gpu_gets_a_profile_from_nvml(tmp_path: Path, gpus: list[NvmlGpu]) -> None:
    gpus.append(gpu(
        "NVIDIA GeForce RTX 4080", memory_total_bytes=16 * 2**30 - 300 * 2**20,
        max_memory_clock_mhz=11201, memory_bus_width_bits=256, compute_capability=(8, 9),
    ))
    profile, detection = resolve("auto", root=tmp_path)
    assert profile.name == "geforce-rtx-4080" == detection.profile
    assert detection.derived is profile
    assert profile.accelerator == "cuda"
    assert profile.power_meter == "nvml"
    assert profile.memory_gb == 15.7
    assert profile.bandwidth_gbs == 716.9  # the RTX 4080's spec sheet: 716.8 GB/s
    assert profile.bandwidth_source == (
        "NVML: 2 x 11201 MHz (max memory clock) x 256 bits (memory bus width) / 8 = 716.9 GB/s"
    )
    assert profile.bandwidth_source in detection.evidence
    assert "no profile in the table" in detection.evidence
    assert profile.supports("bf16")
    assert profile.supports("fp8")  # Ada: compute capability 8.9
    assert not profile.supports("fp4")
    assert "compute capability 8.9" in profile.description


def test_an_explicit_device_may_name_the_nvml_profile(
    tmp_path: Path, gpus: list[NvmlGpu]
) -> None:
    gpus.append(gpu("NVIDIA GeForce RTX 4080", max_memory_clock_mhz=11201,
                    memory_bus_width_bits=256))
    profile, _ = resolve("geforce-rtx-4080", root=tmp_path)
    assert profile.bandwidth_gbs == 716.9
    with pytest.raises(DeviceError, match="detected as 'geforce-rtx-4080'"):
        resolve("rtx-4090", root=tmp_path)


@pytest.mark.parametrize(
    ("cc", "bf16", "fp8", "fp4"),
    [((7, 5), False, False, False), ((8, 0), True, False, False), ((8, 6), True, False, False),
     ((8, 9), True, True, False), ((9, 0), True, True, False), ((10, 0), True, True, True),
     ((12, 0), True, True, True), (None, False, False, False)],
)
def test_nvml_profile_precisions_follow_the_compute_capability(
    cc: tuple[int, int] | None, bf16: bool, fp8: bool, fp4: bool
) -> None:
    profile = nvml_profile(gpu("NVIDIA Some GPU", compute_capability=cc))
    assert (profile.supports("bf16"), profile.supports("fp8"), profile.supports("fp4")) == (
        bf16, fp8, fp4)
    assert profile.supports("fp16")
    assert profile.supports("q4_k_m")


def test_nvml_profile_without_readings_says_what_is_missing() -> None:
    profile = nvml_profile(gpu("NVIDIA GeForce GTX 1080", max_memory_clock_mhz=5005))
    assert profile.bandwidth_gbs is None
    assert profile.memory_gb is None
    assert profile.bandwidth_source == "none: NVML did not report the memory bus width"
    assert "compute capability unknown" in profile.description


def test_nvml_profile_name_never_takes_a_table_name() -> None:
    # "NVIDIA H100" (bare) is not in the table; its slug must not pose as the SXM's.
    assert nvml_profile(gpu("NVIDIA H100")).name == "h100-nvml"
    assert nvml_profile(gpu("NVIDIA Tesla V100-SXM2-16GB")).name == "tesla-v100-sxm2-16gb"


def test_unknown_gpu_is_no_longer_treated_as_cpu(tmp_path: Path, gpus: list[NvmlGpu]) -> None:
    gpus.append(gpu("NVIDIA GeForce GTX 1080"))
    found = detect(tmp_path)
    assert found.profile == "geforce-gtx-1080"
    assert found.resolved().accelerator == "cuda"


def test_jetson_wins_over_nvml(tmp_path: Path, gpus: list[NvmlGpu]) -> None:
    gpus.append(gpu("NVIDIA H100 80GB HBM3"))
    root = jetson_root(tmp_path, b"NVIDIA Jetson AGX Thor\0")
    assert detect(root).profile == "thor"


def test_nvml_gpus_without_pynvml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert devices._nvml_gpus(tmp_path) == []


def test_driver_without_nvidia_ml_py_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A GPU box without nvidia-ml-py must not be silently reported as a plain CPU."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidiactl").touch()
    found = detect(tmp_path)
    assert found.profile == "cpu"
    assert "nvidia-ml-py is not installed" in found.evidence


@dataclass
class FakeGpu:
    """A stand-in GPU; None for a reading means NVML answers NOT_SUPPORTED."""

    name: bytes | str
    total: int | None = 80 * 2**30
    max_memory_clock: int | None = 2619
    bus_width: int | None = 5120
    cc: tuple[int, int] | None = (9, 0)


def _fake_pynvml(gpus: list[FakeGpu], init_error: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    for name in dir(real):  # the real exception classes and constants
        if name.startswith(("NVMLError", "NVML_")):
            setattr(mod, name, getattr(real, name))
    calls: list[Any] = []

    def init() -> None:
        calls.append("init")
        if init_error:
            raise real.NVMLError(real.NVML_ERROR_LIBRARY_NOT_FOUND)

    def answer(value: Any) -> Any:
        if value is None:
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return value

    def memory(g: FakeGpu) -> Any:
        total = answer(g.total)
        return real.c_nvmlMemory_t(total=total, free=total, used=0)

    def max_clock(g: FakeGpu, clock_type: int) -> int:
        calls.append(("max_clock", clock_type))
        return int(answer(g.max_memory_clock))

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda g: g.name  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMaxClockInfo = max_clock  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryBusWidth = lambda g: answer(g.bus_width)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCudaComputeCapability = lambda g: answer(g.cc)  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    return mod


def test_nvml_gpus_reads_every_gpu_and_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml([FakeGpu(b"Tesla T4", 16 * 2**30, 5001, 256, (7, 5)),
                         FakeGpu("NVIDIA L4")])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    found = devices._nvml_gpus(Path("/"))
    assert found is not None
    assert [g.name for g in found] == ["Tesla T4", "NVIDIA L4"]
    t4 = found[0]
    assert (t4.memory_total_bytes, t4.max_memory_clock_mhz, t4.memory_bus_width_bits,
            t4.compute_capability, t4.errors) == (16 * 2**30, 5001, 256, (7, 5), ())
    assert fake.calls[0] == "init"
    assert fake.calls[-1] == "shutdown"
    assert ("max_clock", real.NVML_CLOCK_MEM) in fake.calls


def test_nvml_gpus_keeps_going_when_a_reading_is_not_supported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _fake_pynvml([FakeGpu("NVIDIA GB10", total=None, bus_width=None)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    found = devices._nvml_gpus(Path("/"))
    assert found is not None
    gb10 = found[0]
    assert gb10.memory_total_bytes is None
    assert gb10.memory_bus_width_bits is None
    assert gb10.max_memory_clock_mhz == 2619
    errors = dict(gb10.errors)
    assert set(errors) == {"memory_total_bytes", "memory_bus_width_bits"}
    assert errors["memory_total_bytes"].startswith("NVMLError_NotSupported")
    assert gb10.to_json()["errors"] == errors
    assert gb10.to_json()["compute_capability"] == "9.0"


def test_nvml_gpus_with_an_old_nvidia_ml_py(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml([FakeGpu("NVIDIA H100 80GB HBM3")])
    del fake.nvmlDeviceGetMemoryBusWidth
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    found = devices._nvml_gpus(Path("/"))
    assert found is not None
    assert found[0].memory_bus_width_bits is None
    assert "AttributeError" in dict(found[0].errors)["memory_bus_width_bits"]


def test_nvml_gpus_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([], init_error=True))
    assert devices._nvml_gpus(Path("/")) == []


def test_detect_through_the_stand_in_nvml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The whole path: pynvml readings -> NvmlGpu -> profile -> the document's evidence."""
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([
        FakeGpu("NVIDIA RTX PRO 6000 Blackwell Server Edition", 96 * 2**30, 14001, 512,
                (12, 0)),
    ]))
    found = detect(tmp_path)
    profile = found.resolved()
    assert profile.name == "rtx-pro-6000-blackwell-server-edition"
    assert profile.bandwidth_gbs == 1792.1  # its spec sheet: 1792 GB/s
    assert profile.memory_gb == 96.0
    assert profile.supports("fp4")
    assert found.gpu is not None
    assert found.gpu.to_json()["max_memory_clock_mhz"] == 14001


# --- resolve -------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_gpu")
def test_resolve_auto_returns_the_detected_profile(tmp_path: Path) -> None:
    profile, detection = resolve("auto", root=tmp_path)
    assert profile is PROFILES["cpu"]
    assert detection.profile == "cpu"


@pytest.mark.usefixtures("no_gpu")
def test_resolve_matching_device(tmp_path: Path) -> None:
    root = jetson_root(tmp_path, b"NVIDIA Jetson AGX Orin Developer Kit\0")
    profile, detection = resolve("orin", root=root)
    assert profile.name == "orin"
    assert detection.profile == "orin"


@pytest.mark.usefixtures("no_gpu")
def test_resolve_refuses_a_device_this_machine_is_not(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as info:
        resolve("orin", root=tmp_path)
    message = str(info.value)
    assert "--device=orin" in message
    assert "detected as 'cpu'" in message
    assert "--device=auto" in message


@pytest.mark.usefixtures("no_gpu")
def test_resolve_refuses_orin_on_an_orin_nano(tmp_path: Path) -> None:
    root = jetson_root(tmp_path, b"NVIDIA Jetson Orin Nano Developer Kit\0")
    with pytest.raises(DeviceError, match="'orin-nano'"):
        resolve("orin", root=root)


def test_cpu_is_allowed_on_a_gpu_machine(tmp_path: Path, gpus: list[NvmlGpu]) -> None:
    gpus.append(gpu("NVIDIA H100 80GB HBM3"))
    profile, detection = resolve("cpu", root=tmp_path)
    assert profile is PROFILES["cpu"]
    assert detection.profile == "h100"  # what the machine is stays on record
    assert "a deliberate CPU run on this h100 machine" in detection.evidence
    assert "NVIDIA H100 80GB HBM3" in detection.evidence


@pytest.mark.usefixtures("no_gpu")
def test_cpu_on_a_cpu_machine_says_nothing_extra(tmp_path: Path) -> None:
    _, detection = resolve("cpu", root=tmp_path)
    assert "deliberate" not in detection.evidence


@pytest.mark.usefixtures("no_gpu")
def test_cpu_is_allowed_on_a_jetson(tmp_path: Path) -> None:
    profile, detection = resolve("cpu", root=jetson_root(tmp_path, b"NVIDIA Jetson AGX Orin"))
    assert profile.name == "cpu"
    assert detection.profile == "orin"


@pytest.mark.parametrize(
    ("requested", "machine", "detected"),
    [
        ("h100", "NVIDIA H100 PCIe", "h100-pcie"),
        ("h100", "NVIDIA H100 NVL", "h100-nvl"),
        ("h100-pcie", "NVIDIA H100 80GB HBM3", "h100"),
        ("a100", "NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("l4", "NVIDIA L40S", "l40s"),
        ("h100", "NVIDIA GeForce RTX 4090", "rtx-4090"),
    ],
)
def test_other_mismatches_stay_errors(
    tmp_path: Path, gpus: list[NvmlGpu], requested: str, machine: str, detected: str
) -> None:
    gpus.append(gpu(machine))
    with pytest.raises(DeviceError) as info:
        resolve(requested, root=tmp_path)
    assert f"--device={requested} but this machine was detected as {detected!r}" in str(
        info.value)
    assert f"--device={detected}" in str(info.value)


@pytest.mark.parametrize("name", ["h100", "a100", "l4", "t4", "h200", "gb10"])
def test_short_names_still_resolve_on_their_machine(
    tmp_path: Path, gpus: list[NvmlGpu], name: str
) -> None:
    gpus.append(gpu(next(n for n, p in NVML_NAMES if p == name)))
    assert resolve(name, root=tmp_path)[0] is PROFILES[name]


@pytest.mark.usefixtures("no_gpu")
def test_resolve_unknown_device_lists_known(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as info:
        resolve("nonsense", root=tmp_path)
    message = str(info.value)
    assert "unknown device 'nonsense'" in message
    assert "auto" in message
    for name in PROFILES:
        assert name in message


# --- profiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_is_complete(name: str) -> None:
    p = PROFILES[name]
    assert p.name == name
    assert p.accelerator in ("cpu", "cuda", "jetson")
    if name == "cpu":
        assert p.accelerator == "cpu"
    else:
        assert p.bandwidth_gbs is not None
        assert p.bandwidth_gbs > 0
        assert p.memory_gb is not None
        assert p.match or p.nvml_names, "a non-cpu profile must be detectable"
        assert f"{p.bandwidth_gbs:g} GB/s" in p.bandwidth_source
    if p.accelerator == "cuda":
        assert p.nvml_names
        assert p.power_meter == "nvml"
    assert p.precisions
    assert len(set(p.precisions)) == len(p.precisions)
    assert p.to_json()["name"] == name
    assert p.to_json()["precisions"] == list(p.precisions)


def test_supports() -> None:
    assert not PROFILES["t4"].supports("bf16")
    assert not PROFILES["t4"].supports("fp8")
    assert PROFILES["t4"].supports("fp16")
    assert not PROFILES["a100"].supports("fp8")
    assert PROFILES["h100"].supports("fp8")
    assert PROFILES["thor"].supports("fp4")
    assert PROFILES["cpu"].supports("q4_k_m")
    assert not PROFILES["cpu"].supports("fp8")
    assert not PROFILES["h100"].supports("nonsense")


def test_every_match_string_is_lower_case() -> None:
    # _match lower-cases the name it reads, so an upper-case pattern could never match.
    for p in PROFILES.values():
        assert all(m == m.lower() for m in p.match), p.name


def test_nvml_names_are_stored_normalised_and_unique() -> None:
    seen: dict[str, str] = {}
    for p in PROFILES.values():
        for key in p.nvml_names:
            assert nvml_key(key) == key, p.name
            assert key not in seen, f"{key!r} in both {seen.get(key)} and {p.name}"
            seen[key] = p.name


def test_nvml_key() -> None:
    assert nvml_key("NVIDIA  GeForce RTX 4090 ") == "geforce rtx 4090"
    assert nvml_key("GeForce RTX 4090") == "geforce rtx 4090"
    assert nvml_key("Tesla T4") == "tesla t4"


def test_cpu_fallback_profile() -> None:
    profile = cpu_fallback(PROFILES["h100"])
    assert profile.name == CPU_FALLBACK
    assert profile.accelerator == "cpu"
    assert profile.bandwidth_gbs is None  # the H100's 3350 GB/s does not bound a CPU
    assert profile.precisions == PROFILES["cpu"].precisions
    assert "h100" in profile.description
    assert "3350 GB/s" in profile.bandwidth_source
    assert profile.to_json()["name"] == CPU_FALLBACK
    assert CPU_FALLBACK not in PROFILES  # not a device one can ask for


def test_cpu_threads_is_positive() -> None:
    assert cpu_threads() >= 1
