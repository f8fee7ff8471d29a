"""Requests through `vllm.LLM`: the prompt, the sampling parameters, one engine call, and
the figures vLLM's own per-request metrics give.

A request is one `LLM.generate` call (latency mode) or one item of a batch submitted in
a single call (offline throughput, `generate_batch`). vLLM returns nothing until the call
ends, so the first token is never seen here: the times inside a request come from the
engine's `RequestOutput.metrics` (`RequestStateStats`, filled because the engine runs
with `disable_log_stats=False`), stamped by the engine-core process with
`time.monotonic()` and put on our `perf_counter_ns` clock by `EngineClock`:

- TTFT: `first_token_ts` (ttft_source "engine"), when the engine produced the first
  token, not when this process saw it;
- stages: "template" (our chat template and tokenizer, or our template and the image
  decode, on our clock, before the call), "queue" (queued_ts -> scheduled_ts: waiting
  for a slot in the engine's batch), "prefill" (scheduled_ts -> first_token_ts, image
  encoding included: vLLM runs the vision tower inside that step), "decode"
  (first_token_ts -> last_token_ts). They follow each other in this order and never
  overlap; what is left of the latency (vLLM's input processing, the hops between the
  processes, detokenising the last step) is not a stage: summary.py says it is
  unattributed. A stamp the engine did not set (0.0: a request aborted before its first
  token), or stamps out of order within the call, leave the engine's stages and the
  TTFT absent, never 0.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_vlmbench.backends import BackendError, Capabilities, Request, Response, refuse_images
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ConstraintError

TEXT_STAGES = ("template", "queue", "prefill", "decode")
TEXT_COUNTS = ("prefill_tokens", "decode_tokens", "constrained", "context_full", "preemptions")
IMAGE_COUNTS = ("image_tokens",)


class PromptTooLong(BackendError):
    """A request whose prompt does not fit the engine's `max_model_len`."""


@dataclass(frozen=True)
class EngineClock:
    """Engine-core timestamps (seconds of `time.monotonic()` in another process) as
    `perf_counter_ns` values of this process.

    On Linux both clocks are clock_gettime(CLOCK_MONOTONIC), system-wide, so the offset
    is 0 and the conversion exact to the float's resolution; elsewhere the offset is
    measured once, bracketed, at load (`measure`)."""

    offset_ns: int
    how: str

    @classmethod
    def measure(cls) -> EngineClock:
        perf, mono = time.get_clock_info("perf_counter"), time.get_clock_info("monotonic")
        if perf.implementation == mono.implementation:
            return cls(0, f"engine time.monotonic() and our perf_counter are both "
                          f"{perf.implementation}: offset 0")
        before = time.monotonic_ns()
        ours = time.perf_counter_ns()
        after = time.monotonic_ns()
        offset = ours - (before + after) // 2
        return cls(offset, f"engine time.monotonic() ({mono.implementation}) + {offset} ns "
                           f"= our perf_counter ({perf.implementation}), measured at load "
                           f"to +-{(after - before) // 2} ns")

    def ns(self, stamp: float) -> int | None:
        """The stamp on our clock, or None when the engine left it unset (0.0)."""
        return round(stamp * 1e9) + self.offset_ns if stamp > 0 else None


# -- the prompt -------------------------------------------------------------------
@dataclass(frozen=True)
class Prompting:
    """How requests become engine prompts for one loaded model."""

    tokenizer: Any  # LLM.get_tokenizer(): vLLM's wrapper of the model's HF tokenizer
    chat_format: str  # the catalog's: "model", "gemma" (ours), "completion" (plain text)
    chat_template: str | None  # ours for "gemma"; None: the model's own
    max_model_len: int
    model_id: str
    image_token_id: int | None = None  # what the processor expands an image into
    max_images: int | None = None  # per prompt (vLLM refuses more, failing a whole batch)
    image_limit_from: str = "vLLM's image limit per prompt for this model"


def _messages(request: Request) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    if request.images:  # the chat template places an image token per image part
        parts: list[dict[str, Any]] = [{"type": "image"} for _ in request.images]
        parts.append({"type": "text", "text": request.user})
        messages.append({"role": "user", "content": parts})
    else:
        messages.append({"role": "user", "content": request.user})
    return messages


def build_prompt(prompting: Prompting, request: Request) -> dict[str, Any]:
    """The engine input for `request`: token ids for a text prompt (rendered and
    tokenised here, so "template" is timed on our clock), or the rendered text with the
    decoded images as `multi_modal_data` (vLLM's processor expands the image tokens)."""
    if request.images:  # refused here, alone: vLLM's own check would fail the whole batch
        refuse_images(prompting.model_id, len(request.images),
                      Capabilities(images=True, max_images=prompting.max_images),
                      prompting.image_limit_from)
    tok = prompting.tokenizer
    if prompting.chat_format == "completion":
        text = f"{request.system}\n\n{request.user}" if request.system else request.user
        special = True  # a plain prompt starts with the tokenizer's BOS, as vLLM's would
    else:
        kwargs = {"chat_template": prompting.chat_template} if prompting.chat_template else {}
        text = tok.apply_chat_template(_messages(request), tokenize=False,
                                       add_generation_prompt=True, **kwargs)
        special = False  # the template wrote the special tokens itself
    if request.images:
        from PIL import Image

        images = [Image.open(io.BytesIO(img.jpeg)).convert("RGB") for img in request.images]
        return {"prompt": text, "multi_modal_data": {"image": images}}
    ids = list(tok.encode(text, add_special_tokens=special))
    if len(ids) >= prompting.max_model_len:  # vLLM would refuse the whole batch for it
        raise PromptTooLong(
            f"model {prompting.model_id!r}: the prompt has {len(ids)} tokens and "
            f"max_model_len is {prompting.max_model_len}, which leaves no room for an "
            "answer (raise settings.max_model_len in the catalog)")
    return {"prompt_token_ids": ids}


# -- sampling and constraints -----------------------------------------------------
REQUEST_SEED_ON_CPU = (
    "not passed: vLLM 0.32's CPU worker dies on a seeded request whose sampled token it "
    "discards (a prompt prefilled in chunks: 'CPU Generator does not use offset'), so "
    "random sampling draws from the engine's seed (settings.seed)")


def sampling(request: Request, seeded: bool) -> Any:
    """vLLM's SamplingParams for `request`.

    The request's seed is passed only when sampling is random (a seeded request takes
    vLLM's per-request generator path, which costs time and changes nothing in greedy
    decoding) and `seeded` (not on vLLM's CPU worker, see `REQUEST_SEED_ON_CPU`).
    repeat_penalty becomes vLLM's repetition_penalty, which (as in transformers) looks at
    the prompt and the output, where llama.cpp's looks at the last 64 tokens."""
    from vllm import SamplingParams

    p = request.params
    constraint = request.constraint
    return SamplingParams(
        max_tokens=p.max_tokens, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
        min_p=p.min_p, repetition_penalty=p.repeat_penalty, stop=list(p.stop) or None,
        seed=request.seed if seeded and p.temperature > 0 else None,
        # A fresh copy: vLLM records the structured-output backend it chose on it.
        structured_outputs=dataclasses.replace(constraint) if constraint is not None else None,
    )


def compile_constraint(task: Task, llm: Any) -> Any:
    """The task's grammar (its own, else its JSON schema) as StructuredOutputsParams,
    checked now by the same validation vLLM runs when a request is added (xgrammar's or
    llguidance's parser), so a bad one fails the test before any request; None when the
    task has neither."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    grammar = task.grammar_text()
    if grammar is not None:
        params = StructuredOutputsParams(grammar=grammar)
        source, what = str(task.grammar_file), "GBNF grammar"
    elif task.schema is not None:
        params = StructuredOutputsParams(json=json.loads(json.dumps(task.schema)))
        source, what = f"task {task.name!r}", "JSON schema"
    else:
        return None
    processor = llm.input_processor
    check = SamplingParams(max_tokens=1, structured_outputs=dataclasses.replace(params))
    try:
        check.verify(processor.model_config, processor.speculative_config,
                     processor.structured_outputs_config, processor.tokenizer)
    except Exception as exc:  # VLLMValidationError, ValueError from the grammar libraries
        raise ConstraintError(f"{source}: vLLM cannot use this {what} ({_said(exc)})") from None
    return params


def _said(exc: BaseException) -> str:
    """The first line of an exception and of each one it was raised from, joined: vLLM
    says "Invalid grammar specification." and chains the parser's reason to it."""
    said: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(said) < 4:
        line = next((ln.strip() for ln in str(seen).splitlines() if ln.strip()), "")
        if line and line not in said:
            said.append(line.rstrip("."))
        seen = seen.__cause__ or seen.__context__
    return ": ".join(said) or repr(exc)


# -- one call, and the responses --------------------------------------------------
@dataclass(frozen=True)
class Served:
    """What a request needs besides itself: the engine, its clock, how prompts are made."""

    llm: Any
    clock: EngineClock
    prompting: Prompting
    seeded: bool = True  # requests carry their own seed (see REQUEST_SEED_ON_CPU)


def serve(served: Served, request: Request) -> Response:
    """One request, alone in its `LLM.generate` call: latency mode."""
    t_start = time.perf_counter_ns()
    prompt = build_prompt(served.prompting, request)
    t_templated = time.perf_counter_ns()
    outputs = served.llm.generate([prompt], sampling(request, served.seeded), use_tqdm=False)
    t_end = time.perf_counter_ns()
    return response_of(outputs[0], request, served, t_start, t_end,
                       template_ns=t_templated - t_start)


def serve_batch(served: Served, requests: Sequence[Request]) -> list[Response | Exception]:
    """All `requests` in one `LLM.generate` call (vLLM schedules them together, up to
    max_num_seqs at a time). Their prompts are made first, outside the call: one that
    cannot be made is that request's exception and the others still go. Each response
    starts at the submit time and ends at its engine's last token (its own end, not the
    batch's); its "template" was before the submit, so it is not one of its stages."""
    prepared: list[tuple[dict[str, Any], Any] | Exception] = []
    for request in requests:
        try:
            prepared.append((build_prompt(served.prompting, request),
                             sampling(request, served.seeded)))
        except Exception as exc:  # PromptTooLong, an image PIL cannot decode...
            prepared.append(exc)
    sent = [item for item in prepared if not isinstance(item, Exception)]
    outputs: list[Any] = []
    t_submit = time.perf_counter_ns()
    if sent:
        outputs = served.llm.generate([prompt for prompt, _ in sent],
                                      [params for _, params in sent], use_tqdm=False)
    t_done = time.perf_counter_ns()
    returned = iter(outputs)  # in the order the prompts were given
    results: list[Response | Exception] = []
    for item, request in zip(prepared, requests, strict=True):
        if isinstance(item, Exception):
            results.append(item)
            continue
        try:
            results.append(response_of(next(returned), request, served, t_submit, t_done,
                                       batch=True))
        except BackendError as exc:
            results.append(exc)
    return results


def _engine_times(metrics: Any, clock: EngineClock, t_start: int,
                  t_end: int) -> tuple[int, int, int, int] | None:
    """(queued, scheduled, first token, last token) on our clock, or None when the
    engine left one unset or they are not in order inside [t_start, t_end]."""
    if metrics is None:
        return None
    stamps = [clock.ns(getattr(metrics, name, 0.0) or 0.0)
              for name in ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts")]
    if any(s is None for s in stamps):
        return None
    queued, scheduled, first, last = (int(s) for s in stamps if s is not None)
    if not t_start <= queued <= scheduled <= first <= last <= t_end:
        return None
    return queued, scheduled, first, last


def response_of(output: Any, request: Request, served: Served, t_start: int, t_end: int,
                *, template_ns: int | None = None, batch: bool = False) -> Response:
    """A Response from vLLM's RequestOutput: text, tokens, finish, and the engine's
    times. In a batch, `t_end` is the call's end and the response ends at its own last
    token when the engine stamped it."""
    completion = output.outputs[0]
    if completion.finish_reason in ("error", "abort"):
        raise BackendError(
            f"model {served.prompting.model_id!r}: vLLM ended the request with finish_reason "
            f"{completion.finish_reason!r} after {len(completion.token_ids)} tokens (the "
            "engine's reason is in the backend log)")
    metrics = output.metrics
    times = _engine_times(metrics, served.clock, t_start, t_end)
    stages: dict[str, int] = {}
    if template_ns is not None:
        stages["template"] = template_ns
    t_first: int | None = None
    if times is not None:
        queued, scheduled, first, last = times
        stages.update(queue=scheduled - queued, prefill=first - scheduled, decode=last - first)
        t_first = first
        if batch:
            t_end = last
    prompt_tokens = len(output.prompt_token_ids or ())
    generated = len(completion.token_ids)
    # vLLM keeps the end-of-generation token in token_ids (its check_stop stops after
    # appending it: stop_reason None for the EOS, the id for another stop token). As
    # llama.cpp and transformers count them, completion_tokens leaves it out and
    # decode_tokens (the steps after the first) keeps it: it cost a step too.
    ended_by_token = completion.finish_reason == "stop" and (
        completion.stop_reason is None or isinstance(completion.stop_reason, int))
    completion_tokens = max(0, generated - 1) if ended_by_token and generated else generated
    counts = {"prefill_tokens": prompt_tokens,
              # tokens after the first: each cost a decode step inside first -> last token
              "decode_tokens": max(0, generated - 1)}
    if request.constraint is not None:
        counts["constrained"] = 1
    if (completion.finish_reason == "length" and generated < request.params.max_tokens
            and prompt_tokens + generated >= served.prompting.max_model_len):
        counts["context_full"] = 1  # stopped by max_model_len, not by max_tokens
    preemptions = int(getattr(metrics, "num_preemptions", 0) or 0)
    if preemptions:
        counts["preemptions"] = preemptions
    image_id = served.prompting.image_token_id
    if request.images and image_id is not None:
        counts["image_tokens"] = sum(1 for t in output.prompt_token_ids or () if t == image_id)
    return Response(
        text=completion.text,
        finish_reason=completion.finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        t_start_ns=t_start,
        t_first_token_ns=t_first,
        t_end_ns=t_end,
        stages_ns=stages,
        counts=counts,
        tokens_source="engine",
        ttft_source="engine" if t_first is not None else None,
    )

