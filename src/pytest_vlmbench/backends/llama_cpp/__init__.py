"""llama.cpp in-process, through llama-cpp-python.

The modules follow a request (measured on 2 cores, see DESIGN.md for the choices):
- backend.py: `LlamaCppBackend`, which build is installed (`check_device`) and `load`.
- model.py: `LlamaCppModel`: weights, speed settings (threads, flash attention), the load,
  and `capabilities` (what this model as loaded can do and report).
- constraint.py: a task's grammar or JSON schema, compiled and checked once per task.
- request.py: one request: prompt, stream (TTFT is the first chunk with content), stages.
- counting.py: `CountingLlama`, which synchronises the context after every evaluation
  and times template, prefill, decode, sample and detokenize disjointly on our clock,
  counts the sampled tokens and enforces the catalog's `n_ctx` (llama.cpp pads a context
  to a multiple of 256; a prompt that does not fit is `PromptTooLong`, a generation that
  reaches the end stops with finish_reason "length" and `counts.context_full`).
- vision.py: the projector (mtmd): image_encode and the image tokens' prefill.
- callbacks.py: llama.cpp's, ggml's and mtmd's log lines go through
  `native_log.route_line`, and their load progress callbacks abort a load on Ctrl-C
  (native calls run under `native_log.sigint_deferred`; see native_log.py).
"""

from __future__ import annotations

from pytest_vlmbench.backends.llama_cpp.backend import LlamaCppBackend
from pytest_vlmbench.backends.llama_cpp.counting import PromptTooLong
from pytest_vlmbench.backends.llama_cpp.model import LlamaCppModel

__all__ = ["LlamaCppBackend", "LlamaCppModel", "PromptTooLong"]
