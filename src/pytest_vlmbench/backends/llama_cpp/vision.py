"""The image path: mtmd's projector, timed as image_encode and prefill.

On the vision path `mtmd_helper_eval_chunk_single` encodes the image and decodes its
embeddings; llama.cpp's prompt-eval counter, read between two synchronisations, gives
the decode part (prefill) and the rest of the chunk is the image encode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_vlmbench.backends.llama_cpp.callbacks import mtmd_hooks
from pytest_vlmbench.backends.llama_cpp.counting import Stages

import llama_cpp  # isort: skip  # the backend's modules are imported only when used
from llama_cpp.llama_chat_format import MTMDChatHandler  # isort: skip


class TimedMtmd:
    """Stands in for `llama_cpp.mtmd_cpp` inside the handler to time the image path.

    `mtmd_helper_eval_chunk_single` encodes the image with the projector, then decodes
    the image embeddings into the language model's context. The context is
    synchronised after it, so llama.cpp's prompt-eval counter has accounted that
    decode; its delta is the image tokens' prefill and the rest of the chunk's wall time
    is the image encode. (Without the synchronisation the decode was accounted only at
    the first sample, and both stages held the other's time.)

    mtmd makes one image chunk per image, in the prompt's order (one media marker each), so
    a request with several images passes here once per image and its image_tokens are
    the sum over them.

    It also gives the projector's load our progress callback (Ctrl-C aborts it) and
    checks that a tokenised prompt, image tokens included, fits the context before any
    of it is evaluated.
    """

    def __init__(self, module: Any) -> None:
        self._module = module
        self.stages: Stages | None = None
        self.check_prompt: Callable[[int], None] | None = None
        self._progress = mtmd_hooks(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def mtmd_context_params_default(self) -> Any:
        params = self._module.mtmd_context_params_default()
        params.progress_callback = self._progress
        return params

    def mtmd_tokenize(self, mctx: Any, chunks: Any, *rest: Any) -> Any:
        result = self._module.mtmd_tokenize(mctx, chunks, *rest)
        if result == 0 and self.check_prompt is not None:
            self.check_prompt(int(self._module.mtmd_helper_get_n_tokens(chunks)))
        return result

    def mtmd_helper_eval_chunk_single(self, mctx: Any, lctx: Any, chunk: Any, *rest: Any) -> Any:
        st = self.stages
        if st is None:
            return self._module.mtmd_helper_eval_chunk_single(mctx, lctx, chunk, *rest)
        llama_cpp.llama_synchronize(lctx)
        before = llama_cpp.llama_perf_context(lctx).t_p_eval_ms
        t0 = time.perf_counter_ns()
        st.mark_eval_start(t0)
        result = self._module.mtmd_helper_eval_chunk_single(mctx, lctx, chunk, *rest)
        llama_cpp.llama_synchronize(lctx)
        wall = time.perf_counter_ns() - t0
        decode_ns = min(wall, max(0, round(
            (llama_cpp.llama_perf_context(lctx).t_p_eval_ms - before) * 1e6)))
        n_tokens = int(self._module.mtmd_input_chunk_get_n_tokens(chunk))
        st.ns["image_encode"] += wall - decode_ns
        st.counts["image_tokens"] += n_tokens
        st.ns["prefill"] += decode_ns
        st.counts["prefill_tokens"] += n_tokens
        return result


class VisionHandler(MTMDChatHandler):
    """MTMDChatHandler with an explicit template (base models ship none) and stage timing."""

    def __init__(self, clip_model_path: str, template: str | None, use_gpu: bool) -> None:
        super().__init__(clip_model_path=clip_model_path, verbose=False, use_gpu=use_gpu)
        self._template = template
        self.timed = TimedMtmd(self._mtmd_cpp)
        self._mtmd_cpp = self.timed  # type: ignore[assignment]  # a timing proxy

    def _get_chat_template(self, llama_model: Any) -> str:
        if self._template is not None:
            return self._template
        template: str = super()._get_chat_template(llama_model)
        return template
