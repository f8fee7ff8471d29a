"""Hugging Face transformers in-process: `model.generate` on a model directory.

The modules follow a request:
- backend.py: `TransformersBackend`: can this torch use the device's GPU
  (`check_device`), which precisions load here (`precision_problem`), and `load`.
- model.py: `TransformersModel`: the directory (models/weights.resolve), dtype or
  bitsandbytes quantization, speed settings (threads, attention), the load, and
  `capabilities` (what this model as loaded can do and report).
- request.py: one request (`serve`) or one padded batch (`serve_batch`): chat template and
  processor, one generate call, tokens from the output ids, disjoint stages.
- timing.py: the streamer that timestamps every generation step (TTFT, decode) and the
  forward hooks that time the prefill's start and the vision encoder (image_encode).
- constraint.py: a task's JSON schema or GBNF grammar compiled once by xgrammar, and the
  logits processor that enforces it (timed as the `sample` stage).
"""

from __future__ import annotations

from pytest_vlmbench.backends.hf_transformers.backend import (
    TransformersBackend,
    precision_problem,
)

__all__ = ["TransformersBackend", "precision_problem"]
