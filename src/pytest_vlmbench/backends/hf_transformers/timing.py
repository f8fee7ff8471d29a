"""Where a `generate` call spends its time, read on our clock (perf_counter_ns).

- `StepClock`, a streamer: transformers hands it every generation step's tokens
  (`streamer.put(tokens.cpu())`, after the step's forward, logits processing and token
  choice; the `.cpu()` copy waits for the device). Its first `put` is the prompt and is
  skipped; the next one is the first token (TTFT, `ttft_source` "stream") and the last one
  the last token.
- `ForwardTimer`, forward hooks: when the prefill begins (the first forward of the model
  or of its vision encoder: transformers 5 runs a VLM's encoder from generate() before
  the model's first forward), and how long the vision encoder and projector ran
  (`image_encode`). On CUDA the
  hooks synchronise the device before reading the clock, so queued kernels of the step
  before are not counted in the vision encoder and its own kernels are (three or four
  synchronisations per request, a few microseconds each).

Hooks are registered for one `generate` call and removed after it, so the model between
requests (and the bare `model.generate` of tools/transformers_vs_generate.py) runs
without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from pytest_vlmbench.backends import Progress

import torch  # isort: skip  # the backend's modules are imported only when used
from transformers.generation.streamers import BaseStreamer  # isort: skip

# Where vision-language models in transformers keep their vision encoder and projector,
# on the model or on its inner `.model` (LLaVA, Gemma 3, PaliGemma: vision_tower +
# multi_modal_projector; Idefics3/SmolVLM: vision_model + connector; Qwen2-VL: visual).
VISION_MODULE_NAMES = (
    "vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder",
    "multi_modal_projector", "mm_projector", "connector", "visual_projection",
    "vision_projection", "embed_vision",
)


def vision_modules(model: Any) -> list[Any]:
    """The vision encoder and projector modules of `model` (empty for a text model).

    Looked up by name, one level deep (on the model and on its `.model`); a module found
    twice (an alias) is kept once."""
    found: list[Any] = []
    owners = [model]
    inner = getattr(model, "model", None)
    if isinstance(inner, torch.nn.Module):
        owners.append(inner)
    for owner in owners:
        for name in VISION_MODULE_NAMES:
            module = getattr(owner, name, None)
            if isinstance(module, torch.nn.Module) and all(module is not m for m in found):
                found.append(module)
    return found


class StepClock(BaseStreamer):  # type: ignore[misc]  # transformers is untyped here
    """Records when each generation step's tokens reached the host.

    `put` is called once with the prompt, then once per step with one token per batch
    row; `steps_ns[i]` is when step i's tokens arrived. It also keeps each request's
    `Progress` counter (the runner shows long requests growing)."""

    def __init__(self, progress: Sequence[Progress | None] = ()) -> None:
        self.steps_ns: list[int] = []
        self._prompt_seen = False
        self._progress = [p for p in progress if p is not None]

    def put(self, value: Any) -> None:
        now = time.perf_counter_ns()
        if not self._prompt_seen:  # generate() streams the prompt first
            self._prompt_seen = True
            return
        self.steps_ns.append(now)
        for progress in self._progress:
            progress.tokens = len(self.steps_ns)

    def end(self) -> None:
        """Nothing to flush: tokens are read from generate()'s output ids."""

    @property
    def first_ns(self) -> int | None:
        return self.steps_ns[0] if self.steps_ns else None

    @property
    def last_ns(self) -> int | None:
        return self.steps_ns[-1] if self.steps_ns else None


class ForwardTimer:
    """Forward hooks for one generate call: the prefill's start and the vision time.

    `prefill_start_ns`: when the first forward of the model or of a vision module began
    (generate's setup before it is not a stage). `image_encode_ns`: wall time inside the
    vision modules; a module called inside another hooked one is not counted twice."""

    def __init__(self, model: Any, vision: Iterable[Any], cuda: bool) -> None:
        self.prefill_start_ns: int | None = None
        self.image_encode_ns = 0
        self.image_calls = 0
        self._model = model
        self._vision = list(vision)
        self._sync = device_sync(cuda)
        self._depth = 0
        self._entered_ns = 0
        self._handles: list[Any] = []
        self._model_hook: Any = None

    def __enter__(self) -> ForwardTimer:
        self._model_hook = self._model.register_forward_pre_hook(self._model_pre)
        self._handles.append(self._model_hook)
        for module in self._vision:
            self._handles.append(module.register_forward_pre_hook(self._vision_pre))
            self._handles.append(module.register_forward_hook(self._vision_post))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _model_pre(self, module: Any, args: Any) -> None:
        if self.prefill_start_ns is None:
            self._sync()
            self.prefill_start_ns = time.perf_counter_ns()
        # Needed once: the decode steps' forwards then run without a hook to call.
        self._model_hook.remove()

    def _vision_pre(self, module: Any, args: Any) -> None:
        if self._depth == 0:
            self._sync()
            self._entered_ns = time.perf_counter_ns()
            if self.prefill_start_ns is None:
                self.prefill_start_ns = self._entered_ns
        self._depth += 1

    def _vision_post(self, module: Any, args: Any, output: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._sync()
            self.image_encode_ns += time.perf_counter_ns() - self._entered_ns
            self.image_calls += 1


def no_sync() -> None:
    """On the CPU nothing is queued: every operation has finished when it returns."""


def device_sync(cuda: bool) -> Callable[[], None]:
    """What waits for the device before a timestamp: torch.cuda.synchronize on CUDA."""
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else no_sync
    return sync
