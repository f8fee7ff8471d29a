"""Device profiles and detection.

A profile says what a box can run (precisions), what it has (memory, peak memory
bandwidth, for the roofline) and how its power is read (default meter). `auto`
detects the machine; an explicit device that does not match the machine is a usage
error, because silently labelling CPU numbers "orin" would poison every comparison.
The one exception is `cpu`: a deliberate CPU run is allowed on any machine (the plugin
then hides the GPUs from CUDA, so that nothing is offloaded behind the label's back).

GPUs are matched by their exact NVML name, because the variants of one chip differ in
memory and bandwidth (H100 SXM 3.35 TB/s, H100 PCIe 2.0 TB/s, H100 NVL 3.9 TB/s) and
the substring match this replaced gave all of them the SXM's figures. A GPU the table
does not know gets a profile built from NVML's own readings (`nvml_profile`), with the
formula and the readings in the profile, instead of being treated as a CPU.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_vlmbench.results.models import DeviceProfile as ProfileDocument
from pytest_vlmbench.results.models import NvmlInfo

# GGUF file types, as llama.cpp names them (f16/bf16/f32 are unquantised GGUF files).
# llama.cpp's file types (gguf's LlamaFileType, "MOSTLY_" dropped, lower case), the
# names GGUF files and catalogs use; the common ones first.
GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_0", "q5_1",
               "q4_k_m", "q4_k_s", "q4_0", "q4_1", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
               "q2_k_s", "iq4_nl", "iq4_xs", "iq3_m", "iq3_s", "iq3_xs", "iq3_xxs", "iq2_m",
               "iq2_s", "iq2_xs", "iq2_xxs", "iq1_m", "iq1_s", "tq1_0", "tq2_0", "mxfp4_moe",
               "nvfp4", "q1_0")


def known_precisions() -> frozenset[str]:
    """Every precision some device profile supports: a name outside this set is a typo
    (or a format no device here runs), whatever the device of this run."""
    return frozenset(p for profile in PROFILES.values() for p in profile.precisions)

CPU_FALLBACK = "cpu-fallback"  # the profile of a run --vlm-cpu-fallback moved off its GPU
REMOTE = "remote"  # the label of a model behind an external endpoint (a server elsewhere)
_NO_BANDWIDTH = "none: this profile has no peak memory bandwidth"


@dataclass(frozen=True)
class DeviceProfile:
    """What one kind of machine is and can run."""

    name: str
    description: str
    accelerator: str  # "cpu", "cuda", "jetson"
    memory_gb: float | None
    bandwidth_gbs: float | None  # peak memory bandwidth, GB/s; None when unknown
    precisions: tuple[str, ...]
    power_meter: str  # default meter for issue 4's power fixtures
    match: tuple[str, ...] = field(default=())  # Jetson: substrings of the device-tree model
    nvml_names: tuple[str, ...] = field(default=())  # GPUs: exact NVML names, as nvml_key()
    bandwidth_source: str = _NO_BANDWIDTH  # where bandwidth_gbs (and memory_gb) come from

    def supports(self, precision: str) -> bool:
        return precision in self.precisions

    def to_json(self) -> ProfileDocument:
        return {
            "name": self.name,
            "description": self.description,
            "accelerator": self.accelerator,
            "memory_gb": self.memory_gb,
            "bandwidth_gbs": self.bandwidth_gbs,
            "bandwidth_source": self.bandwidth_source,
            "precisions": list(self.precisions),
            "power_meter": self.power_meter,
        }


def nvml_key(name: str) -> str:
    """An NVML name as the table stores it: lower case, single spaces, and without the
    "NVIDIA " prefix, which older drivers leave out ("A100-SXM4-40GB", "GeForce RTX 3090")."""
    return " ".join(name.lower().split()).removeprefix("nvidia ")


def _precisions(*names: str, bf16: bool = True) -> tuple[str, ...]:
    """Names in order, once each ("bf16" is both a dtype and a GGUF file type); without
    bf16 where the hardware has none (Turing)."""
    return tuple(n for n in dict.fromkeys(names) if bf16 or n != "bf16")


_FLOAT_ALL = ("fp32", "fp16", "bf16")
_GPU_INT = ("int8", "int4", "nf4")
_TURING = _precisions("fp32", "fp16", *_GPU_INT, *GGUF_QUANTS, bf16=False)  # no fp8
_AMPERE = _precisions(*_FLOAT_ALL, *_GPU_INT, *GGUF_QUANTS)  # no fp8
_ADA_HOPPER = _precisions(*_FLOAT_ALL, "fp8", *_GPU_INT, *GGUF_QUANTS)
_BLACKWELL = _precisions(*_FLOAT_ALL, "fp8", "fp4", *_GPU_INT, *GGUF_QUANTS)


def _from_sheet(
    accelerator: str, power_meter: str, name: str, description: str, memory_gb: float,
    bandwidth_gbs: float, precisions: tuple[str, ...], ids: tuple[str, ...], source: str,
) -> DeviceProfile:
    """A profile from the vendor's spec sheet that `source` names; `ids` find the
    machine: a GPU's NVML names, or substrings of a Jetson's device-tree model."""
    gpu = accelerator == "cuda"
    return DeviceProfile(
        name, description, accelerator, memory_gb, bandwidth_gbs, precisions, power_meter,
        match=() if gpu else ids, nvml_names=tuple(nvml_key(n) for n in ids) if gpu else (),
        bandwidth_source=f"{source}: {bandwidth_gbs:g} GB/s",
    )


_gpu = functools.partial(_from_sheet, "cuda", "nvml")
_jetson = functools.partial(_from_sheet, "jetson", "tegrastats")


# Memory and bandwidth from the vendors' spec sheets (the source names which). The NVML
# names are the strings drivers report, e.g. "NVIDIA H100 80GB HBM3" for an H100 SXM5.
PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            "cpu", "a CPU, no accelerator", "cpu", None, None,
            _precisions("fp32", "fp16", "bf16", "int8", *GGUF_QUANTS), "rapl",
        ),
        _jetson("orin", "Jetson AGX Orin 64GB (Ampere, shared LPDDR5)", 64.0, 204.8,
                _AMPERE, ("agx orin", "orin agx"), "Jetson AGX Orin 64GB datasheet"),
        _jetson("orin-nano", "Jetson Orin Nano 8GB (Ampere, shared LPDDR5)", 8.0, 68.0,
                _AMPERE, ("orin nano",), "Jetson Orin Nano 8GB datasheet"),
        _jetson("thor", "Jetson AGX Thor (Blackwell, shared LPDDR5X)", 128.0, 273.0,
                _BLACKWELL, ("thor",), "Jetson AGX Thor datasheet"),
        _gpu("gb10", "NVIDIA GB10 / DGX Spark (Blackwell, unified LPDDR5X)", 128.0, 273.0,
             _BLACKWELL, ("NVIDIA GB10",), "DGX Spark spec sheet"),
        _gpu("t4", "NVIDIA T4 16GB (Turing: no bf16, no fp8)", 16.0, 320.0,
             _TURING, ("Tesla T4", "NVIDIA T4"), "T4 datasheet"),
        _gpu("l4", "NVIDIA L4 24GB (Ada)", 24.0, 300.0,
             _ADA_HOPPER, ("NVIDIA L4",), "L4 datasheet"),
        _gpu("l40", "NVIDIA L40 48GB (Ada)", 48.0, 864.0,
             _ADA_HOPPER, ("NVIDIA L40",), "L40 datasheet"),
        _gpu("l40s", "NVIDIA L40S 48GB (Ada)", 48.0, 864.0,
             _ADA_HOPPER, ("NVIDIA L40S",), "L40S datasheet"),
        _gpu("a10", "NVIDIA A10 24GB (Ampere: no fp8)", 24.0, 600.0,
             _AMPERE, ("NVIDIA A10",), "A10 datasheet"),
        _gpu("a10g", "NVIDIA A10G 24GB (Ampere, AWS G5: no fp8)", 24.0, 600.0,
             _AMPERE, ("NVIDIA A10G",), "AWS G5 instance spec"),
        _gpu("a100", "NVIDIA A100 80GB SXM4 (Ampere: no fp8)", 80.0, 2039.0,
             _AMPERE, ("NVIDIA A100-SXM4-80GB",), "A100 datasheet, 80GB SXM"),
        _gpu("a100-pcie", "NVIDIA A100 80GB PCIe (Ampere: no fp8)", 80.0, 1935.0,
             _AMPERE, ("NVIDIA A100 80GB PCIe",), "A100 datasheet, 80GB PCIe"),
        _gpu("a100-40gb", "NVIDIA A100 40GB SXM4 (Ampere: no fp8)", 40.0, 1555.0,
             _AMPERE, ("NVIDIA A100-SXM4-40GB",), "A100 datasheet, 40GB SXM"),
        _gpu("a100-pcie-40gb", "NVIDIA A100 40GB PCIe (Ampere: no fp8)", 40.0, 1555.0,
             _AMPERE, ("NVIDIA A100-PCIE-40GB",), "A100 datasheet, 40GB PCIe"),
        _gpu("h100", "NVIDIA H100 80GB SXM5 (Hopper, HBM3)", 80.0, 3350.0,
             _ADA_HOPPER, ("NVIDIA H100 80GB HBM3",), "H100 datasheet, SXM"),
        _gpu("h100-pcie", "NVIDIA H100 80GB PCIe (Hopper, HBM2e)", 80.0, 2000.0,
             _ADA_HOPPER, ("NVIDIA H100 PCIe",), "H100 datasheet, PCIe"),
        _gpu("h100-nvl", "NVIDIA H100 NVL 94GB (Hopper, HBM3)", 94.0, 3900.0,
             _ADA_HOPPER, ("NVIDIA H100 NVL",), "H100 datasheet, NVL"),
        _gpu("h200", "NVIDIA H200 141GB SXM (Hopper, HBM3e)", 141.0, 4800.0,
             _ADA_HOPPER, ("NVIDIA H200",), "H200 datasheet, SXM"),
        _gpu("h200-nvl", "NVIDIA H200 NVL 141GB (Hopper, HBM3e)", 141.0, 4800.0,
             _ADA_HOPPER, ("NVIDIA H200 NVL",), "H200 datasheet, NVL"),
        _gpu("rtx-3090", "NVIDIA GeForce RTX 3090 24GB (Ampere: no fp8)", 24.0, 936.0,
             _AMPERE, ("NVIDIA GeForce RTX 3090",), "GeForce RTX 3090 specifications"),
        _gpu("rtx-4090", "NVIDIA GeForce RTX 4090 24GB (Ada)", 24.0, 1008.0,
             _ADA_HOPPER, ("NVIDIA GeForce RTX 4090",), "GeForce RTX 4090 specifications"),
        _gpu("rtx-5090", "NVIDIA GeForce RTX 5090 32GB (Blackwell)", 32.0, 1792.0,
             _BLACKWELL, ("NVIDIA GeForce RTX 5090",), "GeForce RTX 5090 specifications"),
    )
}


class DeviceError(Exception):
    """An unknown device name, or one that does not match this machine."""


def cpu_fallback(device: DeviceProfile) -> DeviceProfile:
    """The profile of a run that --vlm-cpu-fallback moved from `device`'s GPU to its CPU.

    It has its own name, so that a compare key never matches it with a GPU run on
    `device`, nor silently with a deliberate --device=cpu run (which may use a
    GPU-capable build with the GPUs hidden, and a CPU power meter); and no peak
    bandwidth, because the GPU's does not bound a decode that ran on the CPU.
    """
    bw = "no" if device.bandwidth_gbs is None else f"{device.bandwidth_gbs:g} GB/s"
    return replace(
        PROFILES["cpu"], name=CPU_FALLBACK,
        description=f"the CPU of a {device.name} machine whose {device.accelerator} GPU the "
        "backend could not use (--vlm-cpu-fallback)",
        bandwidth_source=f"none: the model ran on the CPU, so {device.name}'s {bw} peak "
        "bandwidth does not bound it",
    )


def remote_profile() -> DeviceProfile:
    """The profile of a model served by an external endpoint (`base_url`): the machine
    running pytest says nothing of the server's, so nothing is assumed. Every precision
    is allowed (the server decides), no peak bandwidth (no roofline) and no power meter
    (a meter here would measure the client, not the server)."""
    return DeviceProfile(
        name=REMOTE,
        description="a server elsewhere, reached through its base_url: its hardware is not "
        "this machine's",
        accelerator=REMOTE, memory_gb=None, bandwidth_gbs=None,
        precisions=tuple(sorted(known_precisions())), power_meter="none",
        bandwidth_source="none: the model runs on a server elsewhere",
    )


# --- NVML ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NvmlGpu:
    """One GPU as NVML reports it: its name and what a profile can be built from (None
    where NVML could not tell; why, in `errors`)."""

    index: int
    name: str
    memory_total_bytes: int | None = None
    max_memory_clock_mhz: int | None = None
    memory_bus_width_bits: int | None = None
    compute_capability: tuple[int, int] | None = None
    errors: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> NvmlInfo:
        return {
            "index": self.index,
            "name": self.name,
            "memory_total_bytes": self.memory_total_bytes,
            "max_memory_clock_mhz": self.max_memory_clock_mhz,
            "memory_bus_width_bits": self.memory_bus_width_bits,
            "compute_capability": None if self.compute_capability is None
            else ".".join(map(str, self.compute_capability)),
            "errors": dict(self.errors),
        }


def nvml_bandwidth_gbs(max_memory_clock_mhz: float, bus_width_bits: int) -> float:
    """Peak memory bandwidth from NVML's readings, GB/s: two transfers per memory clock.

    NVML reports the memory clock so that HBM and GDDR alike move data twice per cycle;
    checked against spec sheets: H100 SXM 2 x 2619 MHz x 5120 bits / 8 = 3352 GB/s (3.35
    TB/s), H100 NVL 2 x 2619 x 6016 / 8 = 3939 (3.9 TB/s), T4 2 x 5001 x 256 / 8 = 320
    (320 GB/s), L4 2 x 6251 x 192 / 8 = 300 (300 GB/s).
    """
    return round(2 * max_memory_clock_mhz * 1e6 * bus_width_bits / 8 / 1e9, 1)


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", nvml_key(name)).strip("-") or "gpu"
    return f"{slug}-nvml" if slug in PROFILES or slug == CPU_FALLBACK else slug


def nvml_profile(gpu: NvmlGpu) -> DeviceProfile:
    """A profile for a GPU the table does not know, from NVML's readings.

    Precisions follow the CUDA compute capability (bf16 from 8.0, fp8 from 8.9, fp4 from
    10.0); without it only what every CUDA GPU runs is claimed.
    """
    clock, bus = gpu.max_memory_clock_mhz, gpu.memory_bus_width_bits
    bandwidth: float | None = None
    if clock and bus:
        bandwidth = nvml_bandwidth_gbs(clock, bus)
        source = (f"NVML: 2 x {clock} MHz (max memory clock) x {bus} bits (memory bus width)"
                  f" / 8 = {bandwidth:g} GB/s")
    else:
        missing = [what for what, value in (("the max memory clock", clock),
                                             ("the memory bus width", bus)) if not value]
        source = f"none: NVML did not report {' or '.join(missing)}"
    total = gpu.memory_total_bytes
    memory_gb = round(total / 2**30, 1) if total else None
    cc = gpu.compute_capability
    if cc is None:
        precisions = _TURING
    else:
        precisions = _precisions(
            "fp32", "fp16", "bf16", *(("fp8",) if cc >= (8, 9) else ()),
            *(("fp4",) if cc >= (10, 0) else ()), *_GPU_INT, *GGUF_QUANTS, bf16=cc >= (8, 0),
        )
    cc_text = "compute capability unknown" if cc is None else f"compute capability {cc[0]}.{cc[1]}"
    return DeviceProfile(
        _slug(gpu.name),
        f"{gpu.name} ({cc_text}; not in the profile table: memory and bandwidth from NVML)",
        "cuda", memory_gb, bandwidth, precisions, "nvml",
        nvml_names=(nvml_key(gpu.name),), bandwidth_source=source,
    )


def _read_gpu(pynvml: Any, index: int) -> NvmlGpu:
    """Name and readings of GPU `index`; a reading NVML refuses is None, with the reason."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = pynvml.nvmlDeviceGetName(handle)
    reads: dict[str, Callable[[], Any]] = {
        "memory_total_bytes": lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
        "max_memory_clock_mhz": lambda: int(
            pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
        "memory_bus_width_bits": lambda: int(pynvml.nvmlDeviceGetMemoryBusWidth(handle)),
        "compute_capability": lambda: tuple(
            int(v) for v in pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
    }
    fields: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for key, read in reads.items():
        try:
            fields[key] = read()
        except Exception as exc:  # NVMLError_NotSupported; an old nvidia-ml-py without it
            errors.append((key, f"{type(exc).__name__}: {exc}"))
    return NvmlGpu(index, name.decode() if isinstance(name, bytes) else str(name),
                   errors=tuple(errors), **fields)


def _nvml_gpus(root: Path) -> list[NvmlGpu] | None:
    """The NVIDIA GPUs that NVML sees, with their readings; None when nvidia-ml-py is
    missing but an NVIDIA driver is present (so detection cannot be trusted)."""
    try:
        import pynvml
    except ImportError:
        return None if (root / "dev/nvidiactl").exists() else []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        return [_read_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def match_gpu(name: str) -> DeviceProfile | None:
    """The table's profile for this exact NVML name, or None."""
    key = nvml_key(name)
    return next((p for p in PROFILES.values() if key in p.nvml_names), None)


# --- detection ----------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """What `auto` found, and the evidence, so a reader can check it."""

    profile: str
    evidence: str
    derived: DeviceProfile | None = None  # a GPU the table does not know: built from NVML
    gpu: NvmlGpu | None = None  # the GPU the profile is for, as NVML read it

    def resolved(self) -> DeviceProfile:
        return self.derived if self.derived is not None else PROFILES[self.profile]


def _jetson_model(root: Path) -> str | None:
    model = root / "proc/device-tree/model"
    if model.is_file():
        text = model.read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
        if "jetson" in text.lower() or "orin" in text.lower() or "thor" in text.lower():
            return text
    if (root / "etc/nv_tegra_release").is_file():
        return "Jetson (etc/nv_tegra_release present)"
    return None


def _match(name: str, candidates: list[DeviceProfile]) -> DeviceProfile | None:
    """The profile whose match string appears in `name` (a device-tree model) as whole
    words; longest first, so that "orin nano" wins over "orin"."""
    low = name.lower()
    pairs = sorted(
        ((m, p) for p in candidates for m in p.match), key=lambda mp: len(mp[0]), reverse=True
    )
    for m, p in pairs:
        if re.search(rf"(?<![a-z0-9]){re.escape(m)}(?![a-z0-9])", low):
            return p
    return None


def detect(root: Path = Path("/")) -> Detection:
    """Detect the profile of this machine: Jetson first, then NVML GPUs, else cpu.

    Of several GPUs, the first with a profile in the table; if none has one, the first,
    with a profile built from NVML.
    """
    jetson = _jetson_model(root)
    if jetson is not None:
        found = _match(jetson, [p for p in PROFILES.values() if p.accelerator == "jetson"])
        if found is not None:
            return Detection(found.name, f"device tree says {jetson!r}")
        return Detection("orin", f"{jetson!r}: an unlisted Jetson, treated as orin")
    gpus = _nvml_gpus(root)
    if gpus is None:
        return Detection(
            "cpu",
            "an NVIDIA driver is present (/dev/nvidiactl) but nvidia-ml-py is not installed, "
            "so GPUs were not looked for: pip install nvidia-ml-py, or pass --device",
        )
    if not gpus:
        return Detection("cpu", f"no Jetson and no NVIDIA GPU seen ({platform.machine()})")

    def seen(gpu: NvmlGpu) -> str:
        others = "" if len(gpus) == 1 else (
            f" (GPU {gpu.index} of {len(gpus)}: {', '.join(repr(g.name) for g in gpus)})"
        )
        return f"NVML reports GPU {gpu.name!r}{others}"

    for gpu in gpus:
        found = match_gpu(gpu.name)
        if found is not None:
            return Detection(found.name, seen(gpu), gpu=gpu)
    derived = nvml_profile(gpus[0])
    return Detection(
        derived.name,
        f"{seen(gpus[0])}, which has no profile in the table; profile {derived.name!r} "
        f"built from NVML ({derived.bandwidth_source})",
        derived=derived, gpu=gpus[0],
    )


def resolve(requested: str, root: Path = Path("/")) -> tuple[DeviceProfile, Detection]:
    """Turn `--device` into a profile; refuse a device this machine is not (except cpu)."""
    detection = detect(root)
    if requested == "auto":
        return detection.resolved(), detection
    if requested == "cpu":
        if detection.profile != "cpu":
            detection = replace(detection, evidence=(
                f"{detection.evidence}; --device=cpu: a deliberate CPU run on this "
                f"{detection.profile} machine (no layers on the GPU, and "
                "CUDA_VISIBLE_DEVICES='' hides its GPUs from CUDA)"
            ))
        return PROFILES["cpu"], detection
    if requested == detection.profile:
        return detection.resolved(), detection
    if requested not in PROFILES:
        raise DeviceError(
            f"unknown device {requested!r}; known: auto, {', '.join(sorted(PROFILES))} "
            f"(this machine: {detection.profile})"
        )
    raise DeviceError(
        f"--device={requested} but this machine was detected as {detection.profile!r} "
        f"({detection.evidence}); use --device=auto or --device={detection.profile}"
    )


def cpu_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
