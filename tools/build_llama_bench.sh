#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` from the llama.cpp sources vendored in the
# llama-cpp-python sdist we pin, so that our decode tokens/s can be checked against
# llama.cpp's figure for the same code on the same machine (tools/compare_llama_bench.py).
# Usage: tools/build_llama_bench.sh [OUT_DIR]   (prints the binary's path)
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
out="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-vlmbench/llama-bench-$version}"
bin="$out/build/bin/llama-bench"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$out"
if [ ! -d "$out/src" ]; then
  pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$out/sdist" >&2
  mkdir -p "$out/src"
  tar xzf "$out/sdist/llama_cpp_python-$version.tar.gz" -C "$out/src" --strip-components=1
fi
cmake -S "$out/src/vendor/llama.cpp" -B "$out/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$out/build" --target llama-bench -j "$(nproc)" >&2
echo "$bin"
