"""Tests for devices.py: detection from a fake root and NVML, resolve, the profiles."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from pytest_vlmbench import devices
from pytest_vlmbench.devices import PROFILES, DeviceError, cpu_threads, detect, resolve


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection must not depend on whether the machine running the tests has a GPU."""
    monkeypatch.setattr(devices, "_nvml_names", lambda root: [])


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    monkeypatch.setattr(devices, "_nvml_names", lambda root: list(names))
    return names


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
    # This machine has no nvidia-ml-py and no GPU; on one that has both, skip.
    if devices._nvml_names(Path("/")):
        pytest.skip("an NVIDIA GPU is visible to NVML here")
    assert detect(tmp_path).profile == "cpu"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Tesla T4", "t4"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA GB10", "gb10"),
    ],
)
def test_detect_gpu_from_nvml(tmp_path: Path, gpus: list[str], name: str, expected: str) -> None:
    gpus.append(name)
    found = detect(tmp_path)
    assert found.profile == expected
    assert name in found.evidence


def test_unknown_gpu_falls_back_to_cpu(tmp_path: Path, gpus: list[str]) -> None:
    gpus.append("NVIDIA GeForce GTX 1080")
    assert detect(tmp_path).profile == "cpu"


def test_first_known_gpu_wins(tmp_path: Path, gpus: list[str]) -> None:
    gpus.extend(["NVIDIA GeForce GTX 1080", "NVIDIA H100 PCIe"])
    assert detect(tmp_path).profile == "h100"


@pytest.mark.parametrize("name", ["NVIDIA L40S", "NVIDIA L40"])
def test_l40_is_not_detected_as_l4(tmp_path: Path, gpus: list[str], name: str) -> None:
    # "l4" is a substring of "l40s": an L40S (48 GB, 864 GB/s) must not be labelled
    # an L4 (24 GB, 300 GB/s), which would also let --device=l4 pass on it.
    gpus.append(name)
    assert detect(tmp_path).profile != "l4"


def test_jetson_wins_over_nvml(tmp_path: Path, gpus: list[str]) -> None:
    gpus.append("NVIDIA H100 80GB HBM3")
    root = jetson_root(tmp_path, b"NVIDIA Jetson AGX Thor\0")
    assert detect(root).profile == "thor"


def test_nvml_names_without_pynvml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert devices._nvml_names(tmp_path) == []


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


def _fake_pynvml(names: list[bytes | str], init_error: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_error:
            raise RuntimeError("NVML Shared Library Not Found")

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(names)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: names[h]  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    return mod


def test_nvml_names_reads_every_gpu_and_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml([b"Tesla T4", "NVIDIA L4"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert devices._nvml_names(Path("/")) == ["Tesla T4", "NVIDIA L4"]
    assert fake.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_nvml_names_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([], init_error=True))
    assert devices._nvml_names(Path("/")) == []


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
        assert p.match, "a non-cpu profile must be detectable"
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


def test_cpu_threads_is_positive() -> None:
    assert cpu_threads() >= 1
