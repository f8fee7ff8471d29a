#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` from the llama.cpp sources vendored in the
# llama-cpp-python sdist we pin, so that our decode tokens/s can be checked against
# llama.cpp's figure for the same code on the same machine (tools/compare_llama_bench.py).
# Usage: tools/build_llama_bench.sh [OUT_DIR]   (prints the binary's path)
exec "$(dirname "$0")/build_llama_tool.sh" llama-bench "$@"
