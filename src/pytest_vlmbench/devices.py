"""Device profiles and detection.

A profile says what a box can run (precisions), what it has (memory, peak memory
bandwidth, for the roofline) and how its power is read (default meter). `auto`
detects the machine; an explicit device that does not match the machine is a usage
error, because silently labelling CPU numbers "orin" would poison every comparison.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

GGUF_QUANTS = ("q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_k_s", "q4_0", "q3_k_m", "q2_k")


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
    match: tuple[str, ...] = field(default=())  # substrings of NVML / device-tree names

    def supports(self, precision: str) -> bool:
        return precision in self.precisions

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "accelerator": self.accelerator,
            "memory_gb": self.memory_gb,
            "bandwidth_gbs": self.bandwidth_gbs,
            "precisions": list(self.precisions),
            "power_meter": self.power_meter,
        }


_FLOAT_ALL = ("fp32", "fp16", "bf16")
_GPU_INT = ("int8", "int4", "nf4")

PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            "cpu", "a CPU, no accelerator", "cpu", None, None,
            ("fp32", "fp16", "bf16", "int8", *GGUF_QUANTS), "rapl",
        ),
        DeviceProfile(
            "orin", "Jetson AGX Orin 64GB (Ampere, shared LPDDR5)", "jetson", 64.0, 204.8,
            (*_FLOAT_ALL, *_GPU_INT, *GGUF_QUANTS), "tegrastats", ("agx orin", "orin agx"),
        ),
        DeviceProfile(
            "orin-nano", "Jetson Orin Nano 8GB (Ampere, shared LPDDR5)", "jetson", 8.0, 68.0,
            (*_FLOAT_ALL, *_GPU_INT, *GGUF_QUANTS), "tegrastats", ("orin nano",),
        ),
        DeviceProfile(
            "thor", "Jetson AGX Thor (Blackwell, shared LPDDR5X)", "jetson", 128.0, 273.0,
            (*_FLOAT_ALL, "fp8", "fp4", *_GPU_INT, *GGUF_QUANTS), "tegrastats", ("thor",),
        ),
        DeviceProfile(
            "gb10", "NVIDIA GB10 / DGX Spark (unified LPDDR5X)", "cuda", 128.0, 273.0,
            (*_FLOAT_ALL, "fp8", "fp4", *_GPU_INT, *GGUF_QUANTS), "nvml", ("gb10",),
        ),
        DeviceProfile(
            "t4", "NVIDIA T4 16GB (Turing: no bf16, no fp8)", "cuda", 16.0, 320.0,
            ("fp32", "fp16", *_GPU_INT, *GGUF_QUANTS), "nvml", ("t4",),
        ),
        DeviceProfile(
            "l4", "NVIDIA L4 24GB (Ada)", "cuda", 24.0, 300.0,
            (*_FLOAT_ALL, "fp8", *_GPU_INT, *GGUF_QUANTS), "nvml", ("l4",),
        ),
        DeviceProfile(
            "a100", "NVIDIA A100 80GB SXM (Ampere: no fp8)", "cuda", 80.0, 2039.0,
            (*_FLOAT_ALL, *_GPU_INT, *GGUF_QUANTS), "nvml", ("a100",),
        ),
        DeviceProfile(
            "h100", "NVIDIA H100 80GB SXM (Hopper)", "cuda", 80.0, 3350.0,
            (*_FLOAT_ALL, "fp8", *_GPU_INT, *GGUF_QUANTS), "nvml", ("h100",),
        ),
        DeviceProfile(
            "h200", "NVIDIA H200 141GB (Hopper)", "cuda", 141.0, 4800.0,
            (*_FLOAT_ALL, "fp8", *_GPU_INT, *GGUF_QUANTS), "nvml", ("h200",),
        ),
    )
}


class DeviceError(Exception):
    """An unknown device name, or one that does not match this machine."""


@dataclass(frozen=True)
class Detection:
    """What `auto` found, and the evidence, so a reader can check it."""

    profile: str
    evidence: str


def _jetson_model(root: Path) -> str | None:
    model = root / "proc/device-tree/model"
    if model.is_file():
        text = model.read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
        if "jetson" in text.lower() or "orin" in text.lower() or "thor" in text.lower():
            return text
    if (root / "etc/nv_tegra_release").is_file():
        return "Jetson (etc/nv_tegra_release present)"
    return None


def _nvml_names(root: Path) -> list[str] | None:
    """Names of the NVIDIA GPUs that NVML sees; None when nvidia-ml-py is missing but an
    NVIDIA driver is present (so detection cannot be trusted)."""
    try:
        import pynvml
    except ImportError:
        return None if (root / "dev/nvidiactl").exists() else []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    finally:
        pynvml.nvmlShutdown()


def _match(name: str, candidates: list[DeviceProfile]) -> DeviceProfile | None:
    """The profile whose match string appears in `name` as whole words.

    Whole words, so that "NVIDIA L40S" is not an L4; longest first, so that
    "orin nano" wins over "orin".
    """
    low = name.lower()
    pairs = sorted(
        ((m, p) for p in candidates for m in p.match), key=lambda mp: len(mp[0]), reverse=True
    )
    for m, p in pairs:
        if re.search(rf"(?<![a-z0-9]){re.escape(m)}(?![a-z0-9])", low):
            return p
    return None


def detect(root: Path = Path("/")) -> Detection:
    """Detect the profile of this machine: Jetson first, then NVML GPUs, else cpu."""
    jetson = _jetson_model(root)
    if jetson is not None:
        found = _match(jetson, [p for p in PROFILES.values() if p.accelerator == "jetson"])
        if found is not None:
            return Detection(found.name, f"device tree says {jetson!r}")
        return Detection("orin", f"{jetson!r}: an unlisted Jetson, treated as orin")
    names = _nvml_names(root)
    if names is None:
        return Detection(
            "cpu",
            "an NVIDIA driver is present (/dev/nvidiactl) but nvidia-ml-py is not installed, "
            "so GPUs were not looked for: pip install nvidia-ml-py, or pass --device",
        )
    for name in names:
        found = _match(name, [p for p in PROFILES.values() if p.accelerator == "cuda"])
        if found is not None:
            return Detection(found.name, f"NVML reports GPU {name!r}")
    if names:
        return Detection("cpu", f"NVML reports {names!r}, none of which has a profile")
    return Detection("cpu", f"no Jetson and no NVIDIA GPU seen ({platform.machine()})")


def resolve(requested: str, root: Path = Path("/")) -> tuple[DeviceProfile, Detection]:
    """Turn `--device` into a profile; refuse a device this machine is not."""
    detection = detect(root)
    if requested == "auto":
        return PROFILES[detection.profile], detection
    if requested not in PROFILES:
        raise DeviceError(
            f"unknown device {requested!r}; known: auto, {', '.join(sorted(PROFILES))}"
        )
    if requested != detection.profile:
        raise DeviceError(
            f"--device={requested} but this machine was detected as {detection.profile!r} "
            f"({detection.evidence}); use --device=auto or --device={detection.profile}"
        )
    return PROFILES[requested], detection


def cpu_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
