#!/usr/bin/env bash
# Build one of llama.cpp's own programs (llama-bench, llama-server) from the llama.cpp
# sources vendored in the llama-cpp-python sdist we pin, so that its figures are those of
# the same llama.cpp code the in-process backend runs, on the same machine.
# Usage: tools/build_llama_tool.sh TARGET [OUT_DIR]   (prints the binary's path)
# The build is cached (OUT_DIR, default ~/.cache/pytest-vlmbench/llama-cpp-<version>);
# llama-server took 24 CPU-minutes here (25 minutes on 2 shared cores; llama-bench is far
# less: no HTTP server, web UI or chat parsers to compile). cmake comes from
# PATH, or from pip (`pip install cmake`) where the machine has none.
set -euo pipefail
target="${1:?usage: tools/build_llama_tool.sh llama-bench|llama-server [OUT_DIR]}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
out="${2:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-vlmbench/llama-cpp-$version}"
bin="$out/build/bin/$target"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
python="${PYTHON:-python3}"
mkdir -p "$out"
if ! command -v cmake >/dev/null 2>&1; then
  "$python" -m venv "$out/cmake-venv" >&2
  "$out/cmake-venv/bin/pip" install --quiet cmake >&2
  export PATH="$out/cmake-venv/bin:$PATH"
fi
if [ ! -d "$out/src" ]; then
  "$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" \
    -d "$out/sdist" >&2
  mkdir -p "$out/src"
  tar xzf "$out/sdist/llama_cpp_python-$version.tar.gz" -C "$out/src" --strip-components=1
fi
server=OFF
[ "$target" = llama-server ] && server=ON
cmake -S "$out/src/vendor/llama.cpp" -B "$out/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER="$server" -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON >&2
cmake --build "$out/build" --target "$target" -j "$(nproc)" >&2
echo "$bin"
