"""The llama.cpp backend: which build is installed (can it use the device's GPU?), and
loading a model."""

from __future__ import annotations

from pathlib import Path

from pytest_vlmbench.backends import BackendError, LoadContext
from pytest_vlmbench.backends.llama_cpp.model import LlamaCppModel
from pytest_vlmbench.models.catalog import ModelSpec
from pytest_vlmbench.models.devices import DeviceProfile

import llama_cpp  # isort: skip  # the backend's modules are imported only when used


class LlamaCppBackend:
    name = "llama_cpp"

    # ggml backends that put work on a GPU, as their shared libraries are named.
    _GPU_KINDS = ("cuda", "hip", "musa", "vulkan", "sycl", "metal", "opencl")

    def check_device(self, device: DeviceProfile) -> str | None:
        """Whether this llama-cpp-python can offload to the device's GPU.

        A CPU-only build (the default of `pip install llama-cpp-python`) loads with
        n_gpu_layers=-1 without complaint and runs every layer on the CPU; the only
        trace was `gpu_offload_supported=false` in the settings.
        """
        if device.accelerator == "cpu" or llama_cpp.llama_supports_gpu_offload():
            return None
        version = llama_cpp.__version__
        shipped = self._gpu_libraries()
        if shipped:
            return (
                f"llama-cpp-python {version} is a GPU build ({', '.join(shipped)}) but "
                "llama_supports_gpu_offload() is false: it found no usable GPU for device "
                f"{device.name} (check the NVIDIA driver and that CUDA_VISIBLE_DEVICES "
                "does not hide the GPU)"
            )
        return (
            f"llama-cpp-python {version} was built without GPU offload "
            f"(llama_supports_gpu_offload() is false) but device {device.name} has a "
            f"{device.accelerator} GPU; rebuild it with CUDA: CMAKE_ARGS=-DGGML_CUDA=on pip "
            "install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python "
            f"llama-cpp-python=={version} (tools/install.sh does this where nvcc and an NVIDIA "
            "driver are present)"
        )

    @classmethod
    def _gpu_libraries(cls) -> list[str]:
        """The GPU backend libraries shipped in llama_cpp/lib (libggml-cuda.so, ...)."""
        lib = Path(llama_cpp.__file__).parent / "lib"
        return sorted(
            path.name for path in lib.glob("*ggml-*")
            if any(f"ggml-{kind}." in path.name for kind in cls._GPU_KINDS)
            and path.suffix in (".so", ".dll", ".dylib")
        )

    def load(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> LlamaCppModel:
        if precision not in spec.precisions:
            raise BackendError(f"model {spec.id!r} has no {precision!r} variant")
        return LlamaCppModel(spec, precision, ctx)
