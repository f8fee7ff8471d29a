#!/usr/bin/env bash
# The peer client for tools/peer_agreement.py: guidellm 0.8.1 from PyPI, in a virtual
# environment of its own (it pins torch, transformers and httpx versions the project
# does not want), never in the project's .venv.
#
#   tools/peer_venv.sh [VENV]     (default ~/.cache/pytest-vlmbench/peer-venv)
#
# About 6 GB (guidellm depends on torch, whose PyPI wheel carries CUDA libraries) and
# 2-4 minutes. It needs no model hub: peer_agreement.py gives guidellm a prompt file,
# so no tokenizer is loaded (HF_HUB_OFFLINE=1 is set when it runs).
set -euo pipefail
VENV="${1:-${VLMBENCH_CACHE:-$HOME/.cache/pytest-vlmbench}/peer-venv}"
PYTHON="${PYTHON:-python3}"
if [ -x "$VENV/bin/guidellm" ] && "$VENV/bin/guidellm" --version 2>/dev/null | grep -q '0\.8\.1'; then
  echo "guidellm 0.8.1 already in $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet 'guidellm==0.8.1'
"$VENV/bin/guidellm" --version
echo "guidellm installed in $VENV"
