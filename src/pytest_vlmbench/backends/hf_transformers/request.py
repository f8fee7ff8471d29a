"""Requests through `model.generate`: one at a time (`serve`) or as one padded batch
(`serve_batch`), every figure read on our clock.

A request's latency runs from `t_start_ns` (read just before its images are decoded) to
`t_end_ns` (its text decoded). Stages, disjoint:

- template: the prepared JPEGs decoded into PIL images (the bytes every backend is sent;
  a server decodes them inside its latency, and so do the llama_cpp and vllm backends),
  chat template, tokenizer and image processor, inputs moved to the device;
- image_encode: the vision encoder and projector (forward hooks, timing.py), vision
  requests only;
- prefill: from the first forward (of the model, or of its vision encoder, which
  transformers 5 runs first) to the first token, less image_encode and sample: the
  prompt's forward (image tokens included), then choosing the first token;
- decode: from the first token to the last, less sample: every later step (forward,
  logits processing, token choice, stop checks: transformers' loop is the engine);
- sample: the grammar constraint's work (xgrammar's mask), constrained requests only;
  unconstrained token choice is a tensor operation inside prefill and decode;
- detokenize: output ids to text after generate returns.

What is left (generate's setup before the first forward, its return after the last
token) is unattributed. `chunk_ns` holds when each completion token reached the host (one
step each; the end-of-generation step is not content), so ITL is the gap between steps.

Tokens come from the output ids: completion_tokens stop before the first
end-of-generation token; finish_reason is "stop" (end of generation or a stop string) or
"length".
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_vlmbench.backends import BackendError, Capabilities, Request, Response, refuse_images
from pytest_vlmbench.backends.hf_transformers.constraint import Constraint, GrammarMask
from pytest_vlmbench.backends.hf_transformers.timing import ForwardTimer, StepClock, device_sync
from pytest_vlmbench.datasets import PreparedImage
from pytest_vlmbench.tasks import GenerationParams

import torch  # isort: skip  # the backend's modules are imported only when used

TEXT_STAGES = ("template", "prefill", "decode", "detokenize")
IMAGE_STAGES = ("image_encode",)
CONSTRAINT_STAGES = ("sample",)
TEXT_COUNTS = ("prefill_tokens", "decode_evals", "decode_tokens", "constrained")
IMAGE_COUNTS = ("image_tokens",)


@dataclass(frozen=True)
class Engine:
    """What a request needs from the loaded model (built by model.py)."""

    model_id: str
    model: Any  # a transformers PreTrainedModel, on its device
    tokenizer: Any  # the text tokenizer (a vision model's processor.tokenizer)
    processor: Any  # the AutoProcessor of a vision model; None for a text model
    device: Any  # torch.device
    float_dtype: Any  # floating inputs (pixel values) are cast to it
    template: str | None  # a chat template of ours (chat_format "gemma"); None: the model's
    plain_text: bool  # chat_format "completion": system and user as plain text
    eos_ids: frozenset[int]
    pad_id: int
    image_token_id: int | None
    vision: tuple[Any, ...]  # vision encoder and projector modules (timing.vision_modules)
    vocab_size: int  # the logits' width (the model's, not the tokenizer's)
    cuda: bool
    max_images: int | None = None  # per request (the catalog's); None: any number


def refusal(engine: Engine, request: Request) -> BackendError | None:
    """Why `request` cannot be sent whole (images to a text model, more images than
    max_images: backends.refuse_images), or None."""
    try:
        refuse_images(engine.model_id, len(request.images),
                      Capabilities(images=engine.processor is not None,
                                   max_images=engine.max_images))
    except BackendError as exc:
        return exc
    return None


def decode_images(images: Sequence[PreparedImage]) -> list[Any]:
    """The prepared JPEGs as RGB PIL images (the same bytes every backend is sent)."""
    from PIL import Image

    out = []
    for image in images:
        with Image.open(io.BytesIO(image.jpeg)) as opened:
            out.append(opened.convert("RGB"))
    return out


def _messages(engine: Engine, request: Request, n_images: int) -> list[dict[str, Any]]:
    """The chat: system (when set) and user; a vision model's user turn lists one image
    part per image, then the text (the form processors' chat templates expect)."""
    messages: list[dict[str, Any]] = []
    if engine.processor is None:
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.user})
        return messages
    if request.system:
        messages.append({"role": "system",
                         "content": [{"type": "text", "text": request.system}]})
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    parts.append({"type": "text", "text": request.user})
    messages.append({"role": "user", "content": parts})
    return messages


def _prompt_text(engine: Engine, request: Request, n_images: int) -> str:
    """The prompt as text. Images always go through a chat template, which places the
    processor's image tokens (chat_format "completion" too, as in the llama_cpp backend)."""
    if engine.plain_text and not n_images:
        return f"{request.system}\n\n{request.user}" if request.system else request.user
    owner = engine.processor if engine.processor is not None else engine.tokenizer
    text: str = owner.apply_chat_template(
        _messages(engine, request, n_images), add_generation_prompt=True, tokenize=False,
        **({"chat_template": engine.template} if engine.template is not None else {}))
    return text


def encode(engine: Engine, requests: Sequence[Request], images: Sequence[list[Any]]) -> Any:
    """The template stage: prompts rendered, tokenised (left-padded when several), images
    processed, everything on the model's device."""
    texts = [_prompt_text(engine, r, len(imgs)) for r, imgs in zip(requests, images, strict=True)]
    special = engine.plain_text and not any(images)  # a chat template writes its own BOS
    if engine.processor is None:
        inputs = engine.tokenizer(texts, return_tensors="pt", padding=len(texts) > 1,
                                  add_special_tokens=special)
    else:
        pictures = None
        if any(images):
            pictures = images[0] if len(images) == 1 else [list(i) for i in images]
        inputs = engine.processor(text=texts, images=pictures, return_tensors="pt",
                                  padding=len(texts) > 1, add_special_tokens=special)
    return inputs.to(engine.device, dtype=engine.float_dtype) if engine.processor is not None \
        else inputs.to(engine.device)


def generate_kwargs(engine: Engine, params: GenerationParams) -> dict[str, Any]:
    """GenerationParams as generate() arguments: greedy (do_sample=False) at temperature 0,
    else sampling with the task's temperature, top_k, top_p and min_p; 0 turns top_k and
    min_p off, as in llama.cpp."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": engine.pad_id}
    if params.temperature == 0:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=params.temperature, top_k=params.top_k,
                      top_p=params.top_p, min_p=params.min_p or None)
    if params.repeat_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repeat_penalty
    if params.stop:
        kwargs.update(stop_strings=list(params.stop), tokenizer=engine.tokenizer)
    return kwargs


@dataclass(frozen=True)
class Finished:
    """One row's generated ids read back: how many count, why it ended, the text."""

    completion_tokens: int
    finish_reason: str
    last_step: int  # the generation step that ended the row (its EOS, or its last token)
    steps: int  # steps the row ran (its EOS included)


def finish_row(engine: Engine, ids: list[int], params: GenerationParams) -> tuple[Finished, str]:
    """The row's tokens up to its first end-of-generation token, and its text (cut at the
    first stop string, which is not part of the answer, as in OpenAI's API)."""
    for k, token in enumerate(ids):
        if token in engine.eos_ids:
            text = engine.tokenizer.decode(ids[:k], skip_special_tokens=True)
            return Finished(k, "stop", k, k + 1), text
    n = len(ids)
    text = engine.tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [text.find(stop) for stop in params.stop if stop in text]
    if cuts:
        # In a batch a row stopped by a stop string is padded until the batch ends.
        while n > 1 and ids[n - 1] == engine.pad_id:
            n -= 1
        return Finished(n, "stop", n - 1, n), text[:min(cuts)]
    return Finished(n, "length", n - 1, n), text


def _constraints(requests: Sequence[Request]) -> list[Constraint | None]:
    rows: list[Constraint | None] = []
    for request in requests:
        if request.constraint is not None and not isinstance(request.constraint, Constraint):
            raise BackendError(f"request constraint {type(request.constraint).__name__} was "
                               "not prepared by the transformers backend")
        rows.append(request.constraint)
    return rows


@dataclass
class _Call:
    """One generate call's measurements."""

    t_start: int
    t_template: int
    t_generated: int
    clock: StepClock
    timer: ForwardTimer
    mask: GrammarMask | None
    inputs: Any
    output: Any  # the output ids, prompt included, on the CPU


def _run(engine: Engine, requests: Sequence[Request], images: Sequence[list[Any]],
         t_start: int) -> _Call:
    """The rest of the template stage (begun at `t_start` by decoding `images`), then one
    generate call for `requests` (same parameters), timed."""
    rows = _constraints(requests)
    clock = StepClock([r.progress for r in requests])
    mask = GrammarMask(rows, engine.vocab_size, clock, device_sync(engine.cuda),
                       engine.pad_id) if any(rows) else None
    kwargs = generate_kwargs(engine, requests[0].params)
    if mask is not None:
        kwargs["logits_processor"] = [mask]
    inputs = encode(engine, requests, images)
    t_template = time.perf_counter_ns()
    with torch.inference_mode(), ForwardTimer(engine.model, engine.vision, engine.cuda) as timer:
        output = engine.model.generate(**inputs, streamer=clock, **kwargs)
    output = output.cpu()
    return _Call(t_start, t_template, time.perf_counter_ns(), clock, timer, mask, inputs, output)


def _stages(call: _Call, last_step: int, images: bool, constrained: bool,
            detokenize_ns: int | None) -> dict[str, int]:
    """Disjoint stages of one response (see the module docstring); `last_step`: the step
    that ended its row."""
    steps = call.clock.steps_ns
    first = steps[0] if steps else None
    last = steps[min(last_step, len(steps) - 1)] if steps else None
    stages = {"template": call.t_template - call.t_start}
    before, after = call.mask.spent_ns(last_step) if call.mask is not None else (0, 0)
    image_ns = call.timer.image_encode_ns if images and call.timer.image_calls else 0
    if images and call.timer.image_calls:
        stages["image_encode"] = image_ns
    if first is not None and call.timer.prefill_start_ns is not None:
        stages["prefill"] = max(0, first - call.timer.prefill_start_ns - image_ns - before)
    if first is not None and last is not None:
        stages["decode"] = max(0, last - first - after)
    if constrained:
        stages["sample"] = before + after
    if detokenize_ns is not None:
        stages["detokenize"] = detokenize_ns
    return stages


def _counts(engine: Engine, call: _Call, row_index: int, row: Finished, has_images: bool,
            constrained: bool) -> dict[str, int]:
    """Prompt tokens (batch padding excluded), decode steps, image tokens."""
    ids = call.inputs["input_ids"][row_index]
    mask = call.inputs.get("attention_mask")
    real = mask[row_index].bool() if mask is not None else None
    prompt = int(real.sum()) if real is not None else int(ids.numel())
    counts = {"prefill_tokens": prompt, "decode_evals": max(0, row.steps - 1),
              "decode_tokens": max(0, row.steps - 1)}
    if has_images and engine.image_token_id is not None:
        images = ids == engine.image_token_id
        counts["image_tokens"] = int((images & real).sum() if real is not None else images.sum())
    if constrained:
        counts["constrained"] = 1
    return counts


def _response(engine: Engine, call: _Call, row_index: int, request: Request, row: Finished,
              text: str, has_images: bool, t_end: int, detokenize_ns: int | None) -> Response:
    constrained = request.constraint is not None
    counts = _counts(engine, call, row_index, row, has_images, constrained)
    return Response(
        text=text, finish_reason=row.finish_reason, prompt_tokens=counts["prefill_tokens"],
        completion_tokens=row.completion_tokens, t_start_ns=call.t_start,
        t_first_token_ns=call.clock.first_ns, t_end_ns=t_end,
        stages_ns=_stages(call, row.last_step, has_images, constrained, detokenize_ns),
        counts=counts, chunk_ns=call.clock.steps_ns[:row.completion_tokens],
        tokens_source="engine", ttft_source="stream" if call.clock.first_ns else None,
    )


def _seed(request: Request) -> None:
    """Seed torch's generator for a sampled request (greedy decoding draws nothing, and
    torch.manual_seed costs 0.15 to 2 ms here)."""
    if request.params.temperature != 0:
        torch.manual_seed(request.seed)


def serve(engine: Engine, request: Request) -> Response:
    """One request: one generate call, streamed into the step clock."""
    refused = refusal(engine, request)
    if refused is not None:
        raise refused
    _seed(request)
    t_start = time.perf_counter_ns()
    images = decode_images(request.images)
    call = _run(engine, [request], [images], t_start)
    ids = call.output[0, call.inputs["input_ids"].shape[1]:].tolist()
    row, text = finish_row(engine, ids, request.params)
    t_end = time.perf_counter_ns()
    return _response(engine, call, 0, request, row, text, bool(images), t_end,
                     t_end - call.t_generated)


def serve_batch(engine: Engine, requests: Sequence[Request]) -> list[Response | Exception]:
    """All requests in one left-padded generate call (offline throughput).

    Each response starts at the batch's start (t_start_ns, before the batch's template),
    its first token is the batch's first step, and it ends at the step its row emitted
    its end-of-generation token (or its last token); its stages are the batch's template,
    image_encode and prefill, and its own decode window. Detokenizing happens after the
    whole batch and is outside every row's latency, so it is not a stage here. A request
    that cannot be sent (images to a text model, an image that does not decode) is its
    exception, and so is one with more images than max_images; the others run."""
    if not requests:
        return []
    params = requests[0].params
    if any(r.params != params for r in requests):
        raise BackendError(f"model {engine.model_id!r}: a batch runs with one set of "
                           "generation parameters; these requests differ")
    results: list[Response | Exception | None] = [None] * len(requests)
    for i, request in enumerate(requests):
        results[i] = refusal(engine, request)
    _seed(requests[0])
    t_start = time.perf_counter_ns()
    sent: list[int] = []
    pictures: list[list[Any]] = []
    for i, request in enumerate(requests):
        if results[i] is not None:
            continue
        try:
            pictures.append(decode_images(request.images))
        except Exception as exc:  # this request's own failure (Pillow's); the batch goes on
            results[i] = exc
        else:
            sent.append(i)
    if sent:
        batch = [requests[i] for i in sent]
        try:
            call = _run(engine, batch, pictures, t_start)
        except Exception as exc:  # the engine call failed: every request in it did
            for i in sent:
                results[i] = exc
        else:
            rows = call.output[:, call.inputs["input_ids"].shape[1]:].tolist()
            steps = call.clock.steps_ns
            for row_index, i in enumerate(sent):
                row, text = finish_row(engine, rows[row_index], batch[row_index].params)
                # The row ended at the step of its last token (or its EOS).
                t_end = steps[min(row.last_step, len(steps) - 1)] if steps else call.t_generated
                results[i] = _response(engine, call, row_index, batch[row_index], row, text,
                                       bool(pictures[row_index]), t_end, None)
    return [r if r is not None else BackendError("not sent") for r in results]
