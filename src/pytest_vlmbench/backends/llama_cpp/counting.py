"""The Llama that times and counts one request, stage by stage, and bounds it by n_ctx.

llama.cpp accounts an evaluation only when the context synchronises, and on a GPU
`llama_decode` returns before the work is done; so every evaluation here is followed by
`llama_synchronize`, and the time of each stage is read on our own clock between two
synchronised points: it cannot leak into the next stage. Streaming chunks carry no token
usage, so `CountingLlama.generate` counts the tokens llama.cpp actually sampled (exact,
one list append per token).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pytest_vlmbench.backends import BackendError, Progress
from pytest_vlmbench.backends.llama_cpp.callbacks import LOAD_PROGRESS
from pytest_vlmbench.backends.native_log import raise_if_interrupted

import llama_cpp  # isort: skip  # the backend's modules are imported only when used

T = TypeVar("T")

# What a response reports (Capabilities.stages / .counts); the image ones only when a
# projector is loaded and the request has images, context_full only when it happened.
TEXT_STAGES = ("template", "prefill", "decode", "sample", "detokenize")
IMAGE_STAGES = ("image_encode",)
TEXT_COUNTS = ("prefill_tokens", "decode_evals", "decode_tokens", "context_full")
IMAGE_COUNTS = ("image_tokens",)


class PromptTooLong(BackendError):
    """A request whose prompt does not fit the model's context (n_ctx)."""


class Stages:
    """One request's disjoint stage times (ns) and counts, timed on our clock with the
    context synchronised at every boundary (see the module docstring)."""

    def __init__(self) -> None:
        self.ns = dict.fromkeys(("image_encode", "prefill", "decode", "sample", "detokenize"), 0)
        self.counts = dict.fromkeys(("image_tokens", "prefill_tokens", "decode_evals"), 0)
        self.first_eval_ns: int | None = None  # when the first evaluation of the prompt began
        self.sampled = 0  # tokens sampled so far (the first one ends the prefill)
        self.before_eval_ns = 0  # sample/detokenize time spent before the first evaluation

    def mark_eval_start(self, t_ns: int) -> None:
        if self.first_eval_ns is None:
            self.first_eval_ns = t_ns

    def add(self, stage: str, dt: int) -> None:
        """Time spent outside an evaluation (sample, detokenize)."""
        self.ns[stage] += dt
        if self.first_eval_ns is None:
            self.before_eval_ns += dt


class CountingLlama(llama_cpp.Llama):
    """Llama that times and counts what one request does, stage by stage."""

    last_prompt_tokens: int = 0
    last_sampled: list[int]
    stages: Stages | None = None  # set for the duration of one measured request
    progress: Progress | None = None  # the request's live token count, if it has one
    context_full = False  # the last generation stopped at the end of the context
    context_owner = "this model"  # for the message of a prompt that does not fit
    context_hint = "raise settings.n_ctx"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The context requests may use: llama-cpp-python's token buffer is sized by the
        # n_ctx asked for, llama.cpp's context by that padded to a multiple of 256.
        self.context_limit = min(len(self.input_ids), int(llama_cpp.llama_n_ctx(self.ctx)))

    # llama-cpp-python builds its model parameters inside __init__ and gives no way to
    # pass a progress callback; this property hands it ours as they are assigned.
    @property
    def model_params(self) -> Any:
        return self._vlm_model_params

    @model_params.setter
    def model_params(self, params: Any) -> None:
        params.progress_callback = LOAD_PROGRESS
        self._vlm_model_params = params

    def check_prompt(self, n_tokens: int) -> None:
        """Refuse a prompt that leaves no room in the context, before it is evaluated."""
        if n_tokens >= self.context_limit:
            raise PromptTooLong(
                f"prompt of {n_tokens} tokens does not fit the context (n_ctx "
                f"{self.context_limit} of {self.context_owner}; {self.context_hint})"
            )

    def generate(  # type: ignore[override]  # same call, counted and bounded
        self, tokens: Any, *args: Any, **kwargs: Any
    ) -> Iterator[int]:
        n_prompt = len(tokens)
        self.check_prompt(n_prompt)
        self.last_prompt_tokens = n_prompt
        self.last_sampled = sampled = []
        self.context_full = False
        room = self.context_limit - n_prompt  # as llama-cpp-python bounds max_tokens
        progress = self.progress
        for token in super().generate(tokens, *args, **kwargs):
            sampled.append(token)
            if progress is not None:
                progress.tokens = len(sampled)
            raise_if_interrupted()  # Ctrl-C during the request (see sigint_deferred)
            yield token
            if len(sampled) >= room:  # the next token would not fit: stop, "length"
                self.context_full = True
                return

    def eval(self, tokens: Sequence[int]) -> None:
        st = self.stages
        if st is None:
            super().eval(tokens)
            return
        t0 = time.perf_counter_ns()
        st.mark_eval_start(t0)
        super().eval(tokens)
        llama_cpp.llama_synchronize(self.ctx)
        dt = time.perf_counter_ns() - t0
        if st.sampled == 0:  # still the prompt (llama-cpp-python re-evaluates its last token)
            st.ns["prefill"] += dt
            st.counts["prefill_tokens"] += len(tokens)
        else:
            st.ns["decode"] += dt
            st.counts["decode_evals"] += 1

    def _timed(self, stage: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)`, its time added to `stage` while a request is measured."""
        st = self.stages
        t0 = time.perf_counter_ns()
        result = call(*args, **kwargs)
        if st is not None:
            st.add(stage, time.perf_counter_ns() - t0)
        return result

    def _init_sampler(self, *args: Any, **kwargs: Any) -> Any:
        # Building the sampler chain parses a grammar: sampling work, inside the request.
        return self._timed("sample", super()._init_sampler, *args, **kwargs)

    def sample(self, *args: Any, **kwargs: Any) -> int:
        token: int = self._timed("sample", super().sample, *args, **kwargs)
        if self.stages is not None:
            self.stages.sampled += 1
        return token

    def detokenize(self, *args: Any, **kwargs: Any) -> bytes:
        text: bytes = self._timed("detokenize", super().detokenize, *args, **kwargs)
        return text

    def sampled_tokens(self) -> int:
        return len(getattr(self, "last_sampled", []))

    def completion_tokens(self) -> int:
        sampled = getattr(self, "last_sampled", [])
        if sampled and llama_cpp.llama_vocab_is_eog(self._model.vocab, sampled[-1]):
            return len(sampled) - 1
        return len(sampled)
