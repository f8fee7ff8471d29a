"""Honest accelerators: a backend build that cannot use the device's GPU, the CPU
fallback, and a deliberate CPU run on a GPU machine.

This machine has no GPU and its llama-cpp-python is a CPU build, which is exactly the
case to test: detection is told it is an H100 (a stand-in NVML reading, as in
test_devices.py), and the real llama-cpp-python says it cannot offload.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from pytest_vlmbench import backends
from pytest_vlmbench.backends import device_problem
from pytest_vlmbench.backends.llama_cpp import LlamaCppBackend
from pytest_vlmbench.models import devices
from pytest_vlmbench.models.devices import CPU_FALLBACK, PROFILES, NvmlGpu
from pytest_vlmbench.plugin import options
from tests.conftest import Project

BENCH = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""

QUICK = (f"{options.SAMPLES}=2", f"{options.WARMUP}=0", f"{options.POWER_METER}=none",
         f"{options.IDLE_S}=0")


def pretend(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make detection see one GPU called `name` (inner sessions run in this process)."""
    monkeypatch.setattr(devices, "_nvml_gpus", lambda root: [NvmlGpu(0, name)])


@pytest.fixture
def project(project: Project) -> Project:
    """conftest pins inner sessions to the CPU; these fake a GPU and let `auto` find it."""
    ini = project.pytester.path / "tox.ini"
    ini.write_text(ini.read_text().replace("vlm_device = cpu", "vlm_device = auto"))
    return project


@pytest.fixture
def h100(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend(monkeypatch, "NVIDIA H100 80GB HBM3")


# --- the backend's own answer ---------------------------------------------------------


def test_llama_cpp_cpu_build_says_it_cannot_use_a_gpu() -> None:
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python can offload to a GPU")
    problem = LlamaCppBackend().check_device(PROFILES["h100"])
    assert problem == (
        f"llama-cpp-python {llama_cpp.__version__} was built without GPU offload "
        "(llama_supports_gpu_offload() is false) but device h100 has a cuda GPU; rebuild it "
        "with CUDA: CMAKE_ARGS=-DGGML_CUDA=on pip install --force-reinstall --no-deps "
        "--no-cache-dir --no-binary llama-cpp-python "
        f"llama-cpp-python=={llama_cpp.__version__} (tools/install.sh does this where nvcc "
        "and an NVIDIA driver are present)"
    )
    assert LlamaCppBackend._gpu_libraries() == []  # the CPU build ships no GPU backend


def test_llama_cpp_check_passes_a_cpu_device_and_a_gpu_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = LlamaCppBackend()
    assert backend.check_device(PROFILES["cpu"]) is None
    assert backend.check_device(devices.cpu_fallback(PROFILES["h100"])) is None
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    assert backend.check_device(PROFILES["h100"]) is None
    assert backend.check_device(PROFILES["orin"]) is None


def test_llama_cpp_gpu_build_without_a_usable_gpu_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    monkeypatch.setattr(LlamaCppBackend, "_gpu_libraries",
                        classmethod(lambda cls: ["libggml-cuda.so"]))
    problem = LlamaCppBackend().check_device(PROFILES["l4"])
    assert problem is not None
    assert "is a GPU build (libggml-cuda.so)" in problem
    assert "found no usable GPU for device l4" in problem
    assert "rebuild" not in problem  # rebuilding would not help


def test_device_problem_takes_older_backends_at_their_word() -> None:
    class Old:
        name = "old"

    assert device_problem(Old(), PROFILES["h100"]) is None  # type: ignore[arg-type]

    class Picky:
        name = "picky"

        def __init__(self) -> None:
            self.asked: list[str] = []

        def check_device(self, device: devices.DeviceProfile) -> str | None:
            self.asked.append(device.name)
            return "no"

    picky = Picky()
    assert device_problem(picky, PROFILES["cpu"]) is None  # type: ignore[arg-type]
    assert device_problem(picky, PROFILES["h100"]) == "no"  # type: ignore[arg-type]
    assert picky.asked == ["h100"]


# --- the plugin: refuse, or fall back when asked --------------------------------------


@pytest.mark.usefixtures("h100")
def test_a_cpu_build_on_a_gpu_fails_the_test_with_one_line(project: Project) -> None:
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python can offload to a GPU")
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run(f"{options.MODELS}=tiny-text", *QUICK)
    out.run.assert_outcomes(errors=1)
    out.run.stdout.fnmatch_lines([
        "*test_caption[[]tiny-text-fp32-h100[]]*",
        "*llama-cpp-python * was built without GPU offload (llama_supports_gpu_offload() is "
        "false) but device h100 has a cuda GPU; rebuild it with CUDA: CMAKE_ARGS=-DGGML_CUDA=on"
        "*; or pass --vlm-cpu-fallback to run on the CPU, labelled cpu-fallback",
    ])
    doc = out.doc()
    assert doc["device"]["name"] == "h100"
    assert doc["device"]["cpu_fallback"] is None
    [load] = doc["loads"]
    assert load["count"] == 0
    assert "\n" not in load["error"]
    assert "built without GPU offload" in load["error"]
    assert doc["benchmarks"] == []


@pytest.mark.usefixtures("h100")
def test_cpu_fallback_runs_on_the_cpu_and_says_so_everywhere(project: Project) -> None:
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python can offload to a GPU")
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run(options.CPU_FALLBACK, "-v", *QUICK)
    out.run.assert_outcomes(passed=2)
    out.run.stdout.fnmatch_lines([
        "*test_caption[[]tiny-text-fp32-cpu-fallback[]] PASSED*",
        "*test_caption[[]tiny-vision-fp32-cpu-fallback[]] PASSED*",
        "*warning: llama_cpp models ran on the CPU, labelled cpu-fallback (--vlm-cpu-fallback)"
        ": llama-cpp-python * was built without GPU offload*",
    ])
    doc = out.doc()  # validated against the schema
    device = doc["device"]
    assert (device["name"], device["detected"]) == ("h100", "h100")
    fallback = device["cpu_fallback"]
    assert fallback["profile"]["name"] == CPU_FALLBACK
    assert fallback["profile"]["bandwidth_gbs"] is None
    assert "built without GPU offload" in fallback["backends"]["llama_cpp"]
    assert doc["settings"]["cpu_fallback"] is True
    for bench in doc["benchmarks"]:
        assert bench["device"] == CPU_FALLBACK
        assert bench["settings"]["n_gpu_layers"] == 0
        assert any(w.startswith("ran on the CPU, not on h100's GPU (--vlm-cpu-fallback): "
                                "llama-cpp-python") for w in bench["warnings"])
        roofline = bench["summary"]["roofline"]
        assert roofline["bandwidth_gbs"] is None  # not the H100's 3350 GB/s
        assert roofline["bandwidth_source"].startswith("device profile cpu-fallback (none: ")
    for load in doc["loads"]:
        assert load["device"] == CPU_FALLBACK
        assert load["cpu_fallback"]["from"] == "h100"
    assert {r["device"] for r in out.records()} == {CPU_FALLBACK}


def test_cpu_fallback_from_the_ini_file(
    project: Project, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretend(monkeypatch, "NVIDIA L4")
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    project.pytester.makeini(f"""
        [pytest]
        vlm_catalog = models.toml
        vlm_cache_dir = {model_cache}
        vlm_cpu_fallback = true
    """)
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run("--collect-only", "-q")
    out.run.stdout.fnmatch_lines([
        "test_bench.py::test_caption[[]tiny-text-fp32-cpu-fallback[]]",
        "test_bench.py::test_caption[[]tiny-vision-fp32-cpu-fallback[]]",
    ])


def test_a_gpu_build_keeps_the_gpu_label_with_fallback_allowed(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretend(monkeypatch, "NVIDIA H100 PCIe")
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run(options.CPU_FALLBACK, "--collect-only", "-q")
    out.run.stdout.fnmatch_lines(["test_bench.py::test_caption[[]tiny-text-fp32-h100-pcie[]]"])


def test_sessions_without_benchmarks_never_ask_a_backend(
    project: Project, monkeypatch: pytest.MonkeyPatch, h100: None
) -> None:
    asked: list[str] = []

    def get_backend(name: str) -> Any:
        asked.append(name)
        return LlamaCppBackend()

    monkeypatch.setattr(backends, "get_backend", get_backend)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    project.pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    project.run(options.CPU_FALLBACK).run.assert_outcomes(passed=1)
    assert asked == []  # validating the catalog imports no backend
    project.pytester.makepyfile(test_bench=BENCH)
    project.run(options.CPU_FALLBACK, "--collect-only", "-q")
    assert asked == ["llama_cpp"]  # asked once per backend, not per cell


# --- a deliberate CPU run on a GPU machine ------------------------------------------------


CPU_RUN = """
import os

def test_cpu(vlm_model):
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert vlm_model.model.settings["n_gpu_layers"] == 0
"""


@pytest.mark.parametrize("before", [None, "0,1"])
def test_device_cpu_on_a_gpu_machine_runs_on_the_cpu(
    project: Project, monkeypatch: pytest.MonkeyPatch, h100: None, before: str | None
) -> None:
    if before is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", before)
    project.pytester.makepyfile(test_bench=CPU_RUN)
    out = project.run(f"{options.DEVICE}=cpu", f"{options.MODELS}=tiny-text", "-v", *QUICK)
    out.run.assert_outcomes(passed=1)
    out.run.stdout.fnmatch_lines(["*test_cpu[[]tiny-text-fp32-cpu[]] PASSED*"])
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before  # put back afterwards
    device = out.doc()["device"]
    assert (device["name"], device["detected"]) == ("cpu", "h100")
    assert "a deliberate CPU run on this h100 machine" in device["evidence"]
    assert device["nvml"]["name"] == "NVIDIA H100 80GB HBM3"


def test_another_mismatch_is_still_a_usage_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretend(monkeypatch, "NVIDIA H100 PCIe")
    out = project.run(f"{options.DEVICE}=h100")
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines([
        "*--device=h100 but this machine was detected as 'h100-pcie'*--device=h100-pcie*"
    ])
