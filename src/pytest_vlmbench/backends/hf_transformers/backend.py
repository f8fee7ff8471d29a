"""The transformers backend: can this torch use the device, and loading a model.

Only torch is imported here: `check_device` runs at collection for GPU devices, and
importing transformers (about 8 s here) waits until a model is really loaded.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from pytest_vlmbench.backends import BackendError, LoadContext, PrecisionUnavailable
from pytest_vlmbench.models.catalog import ModelSpec
from pytest_vlmbench.models.devices import DeviceProfile

import torch  # isort: skip  # the backend's modules are imported only when used

if TYPE_CHECKING:
    from pytest_vlmbench.backends.hf_transformers.model import TransformersModel

GPU_ACCELERATORS = ("cuda", "jetson")  # both run torch's CUDA build

FLOAT_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""Precision -> torch dtype of the weights and activations."""

BNB_PRECISIONS = {"int8": "8-bit (LLM.int8)", "nf4": "4-bit nf4", "int4": "4-bit fp4"}
"""Precision -> the bitsandbytes quantization applied while loading."""


def torch_device(device: DeviceProfile) -> str:
    """Where the model goes: "cuda" for a GPU device, "cpu" otherwise."""
    return "cuda" if device.accelerator in GPU_ACCELERATORS else "cpu"


def _bitsandbytes_problem(precision: str) -> str | None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        return (f"precision {precision} ({BNB_PRECISIONS[precision]}) is quantized while "
                f"loading by bitsandbytes, which cannot be imported here ({exc}); install a "
                "bitsandbytes build for this device (pip install bitsandbytes) or run fp32, "
                "bf16 or fp16")
    if importlib.util.find_spec("accelerate") is None:  # transformers' bnb loader needs it
        return (f"precision {precision} ({BNB_PRECISIONS[precision]}) loads through "
                "bitsandbytes, which transformers drives with accelerate, which is not "
                "installed here; pip install accelerate")
    return None


def precision_problem(precision: str, device: DeviceProfile) -> str | None:
    """Why transformers cannot run `precision` on `device` as installed here, in one line;
    None when it can (as far as can be told before loading: whether a bitsandbytes build
    supports the device is said by its own load error)."""
    if precision in FLOAT_PRECISIONS:
        if (precision == "bf16" and torch_device(device) == "cuda"
                and torch.cuda.is_available()
                and not torch.cuda.is_bf16_supported(including_emulation=False)):
            return (f"precision bf16 needs a GPU with bfloat16 support (compute capability "
                    f"8.0 or later); torch.cuda.is_bf16_supported() is False on "
                    f"{torch.cuda.get_device_name()}: run fp16 or fp32")
        return None
    if precision in BNB_PRECISIONS:
        return _bitsandbytes_problem(precision)
    known = ", ".join([*FLOAT_PRECISIONS, *BNB_PRECISIONS])
    return f"precision {precision!r} is not one the transformers backend loads ({known})"


class TransformersBackend:
    """Hugging Face transformers in this process: AutoModelForCausalLM for text models,
    AutoProcessor and AutoModelForImageTextToText for vision models."""

    name = "transformers"

    def check_device(self, device: DeviceProfile) -> str | None:
        """Whether this torch can use the device's GPU (a CPU-only wheel cannot: the
        model would run on the CPU under the GPU's label)."""
        if device.accelerator == "cpu":
            return None
        if device.accelerator not in GPU_ACCELERATORS:
            return (f"the transformers backend runs on CUDA GPUs and CPUs; device "
                    f"{device.name} has a {device.accelerator} accelerator")
        if torch.cuda.is_available():
            return None
        if torch.version.cuda is None:
            return (f"torch {torch.__version__} is a CPU-only build "
                    f"(torch.cuda.is_available() is False) but device {device.name} has a "
                    f"{device.accelerator} GPU; install a CUDA build of torch "
                    "(https://pytorch.org/get-started/locally/)")
        return (f"torch {torch.__version__} is a CUDA {torch.version.cuda} build but "
                f"torch.cuda.is_available() is False: it found no usable GPU for device "
                f"{device.name} (check the NVIDIA driver and that CUDA_VISIBLE_DEVICES does "
                "not hide the GPU)")

    def load(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> TransformersModel:
        if precision not in spec.precisions:
            raise BackendError(f"model {spec.id!r} has no {precision!r} variant")
        problem = precision_problem(precision, ctx.device)
        if problem is not None:
            raise PrecisionUnavailable(f"model {spec.id!r} ({precision}): {problem}")
        from pytest_vlmbench.backends.hf_transformers.model import TransformersModel

        return TransformersModel(spec, precision, ctx)
