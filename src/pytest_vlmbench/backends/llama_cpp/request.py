"""One request through llama.cpp: the prompt, the stream, the disjoint stages.

Requests stream: time to first token is the first chunk with content. Stages are timed
by `CountingLlama` (and `TimedMtmd` for images) between synchronised points, so template
(rendering, tokenising, image preprocessing), image_encode, prefill, decode, sample and
detokenize never hold each other's time; what is left of the latency (Python streaming,
stop checks) is not a stage: summary.py reports it as unattributed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from pytest_vlmbench.backends import Request, Response
from pytest_vlmbench.backends.llama_cpp.counting import CountingLlama, PromptTooLong, Stages
from pytest_vlmbench.backends.llama_cpp.vision import VisionHandler
from pytest_vlmbench.backends.native_log import sigint_deferred

import llama_cpp  # isort: skip  # the backend's modules are imported only when used

# llama-cpp-python's own context checks, in 0.3.36's words (a fallback: ours come first).
_REQUESTED_TOKENS = re.compile(r"Requested tokens \((\d+)\) exceed context window")


@dataclass(frozen=True)
class Prompting:
    """How a request becomes a prompt for one loaded model."""

    chat_format: str  # the catalog's: "completion" sends system and user as plain text
    compiled: Any  # our compiled chat template (jinja2), or None: the model's own
    prompt_cache: bool  # reuse the context's prefix across requests (off: full prefill)


def _sampling(request: Request) -> dict[str, Any]:
    """The keyword arguments of a completion call: sampling, seed, constraint, stream."""
    p = request.params
    return {
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "top_k": p.top_k,
        "top_p": p.top_p,
        "min_p": p.min_p,
        "repeat_penalty": p.repeat_penalty,
        "stop": list(p.stop),
        "seed": request.seed,
        "grammar": request.constraint,
        "stream": True,
    }


def serve(llm: CountingLlama, handler: VisionHandler | None, prompting: Prompting,
          request: Request) -> Response:
    """Run `request` on the loaded model, every stage timed and counted."""
    if not prompting.prompt_cache:
        untyped: Any = llm  # llama-cpp-python's reset() has no annotations
        untyped.reset()
    st = Stages()
    llm.stages = st
    llm.progress = request.progress
    llm.context_full = False
    if handler is not None:
        handler.timed.stages = st
    llama_cpp.llama_perf_context_reset(llm.ctx)
    try:
        # Ctrl-C: raised between tokens, or when llama.cpp returns (native_log.py).
        with sigint_deferred():
            t_start, t_first, t_end, finish, parts = _stream(llm, request, prompting)
    except ValueError as exc:  # llama-cpp-python's own check, for a prompt past its
        found = _REQUESTED_TOKENS.match(str(exc))  # (padded) context: say it as ours
        if found is None:
            raise
        try:
            llm.check_prompt(int(found.group(1)))
        except PromptTooLong as ours:
            raise ours from None
        raise
    finally:
        llm.stages = None
        llm.progress = None
        if handler is not None:
            handler.timed.stages = None
    split = _stages_and_counts(llm, st, t_start, t_end,
                               with_image=handler is not None and bool(request.images))
    return Response(
        text="".join(parts),
        finish_reason=finish,
        prompt_tokens=llm.last_prompt_tokens,
        completion_tokens=llm.completion_tokens(),
        t_start_ns=t_start,
        t_first_token_ns=t_first,
        ttft_source="stream" if t_first is not None else None,  # the first streamed piece
        t_end_ns=t_end,
        stages_ns=split["stages_ns"],
        counts=split["counts"],
    )


def _stages_and_counts(llm: CountingLlama, st: Stages, t_start: int, t_end: int,
                       with_image: bool) -> dict[str, dict[str, int]]:
    """The response's stages_ns and counts (names as in counting.TEXT_STAGES...)."""
    # template: the time before the first evaluation that sampling did not take.
    before = (st.first_eval_ns if st.first_eval_ns is not None else t_end) - t_start
    stages = {"template": max(0, before - st.before_eval_ns)}
    stages.update((name, st.ns[name]) for name in ("prefill", "decode", "sample", "detokenize"))
    # decode_tokens: tokens sampled after the first one (an end-of-generation token
    # included): each cost a decode step inside the window from first token to end.
    counts = {
        "prefill_tokens": st.counts["prefill_tokens"],
        "decode_evals": st.counts["decode_evals"],
        "decode_tokens": max(0, llm.sampled_tokens() - 1),
    }
    if llm.context_full:  # finish_reason "length" came from n_ctx, not max_tokens
        counts["context_full"] = 1
    if with_image:
        stages["image_encode"] = st.ns["image_encode"]
        counts["image_tokens"] = st.counts["image_tokens"]
    return {"stages_ns": stages, "counts": counts}


def _stream(
    llm: Any, request: Request, prompting: Prompting,
) -> tuple[int, int | None, int, str | None, list[str]]:
    """Send the request and drain the stream: (start, first content, end, finish, text).

    `llm` is Any: llama-cpp-python's stream types are unions of dict shapes."""
    common = _sampling(request)
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    stream: Any
    t_start = time.perf_counter_ns()
    if request.images:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": img.data_url()}}
            for img in request.images
        ]
        content.append({"type": "text", "text": request.user})
        messages.append({"role": "user", "content": content})
        stream = llm.create_chat_completion(messages=messages, **common)
    elif prompting.chat_format == "completion":
        prompt = f"{request.system}\n\n{request.user}" if request.system else request.user
        stream = llm.create_completion(prompt=prompt, **common)
    else:
        messages.append({"role": "user", "content": request.user})
        if prompting.compiled is not None:
            prompt = prompting.compiled.render(messages=messages, add_generation_prompt=True)
            stream = llm.create_completion(prompt=prompt, **common)
        else:
            stream = llm.create_chat_completion(messages=messages, **common)
    t_first: int | None = None
    finish: str | None = None
    parts: list[str] = []
    for chunk in stream:
        choice = chunk["choices"][0]
        piece = choice.get("text")
        if piece is None:
            piece = (choice.get("delta") or {}).get("content")
        if piece:
            if t_first is None:
                t_first = time.perf_counter_ns()
            parts.append(piece)
        if choice.get("finish_reason"):
            finish = choice["finish_reason"]
    return t_start, t_first, time.perf_counter_ns(), finish, parts

