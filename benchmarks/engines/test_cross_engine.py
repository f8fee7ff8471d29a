"""The same benchmarks on every backend: llama.cpp in-process, transformers in-process,
vLLM in-process (`vllm.LLM`) and vLLM served (`vllm serve`, managed on loopback), in one
results document.

The models: gemma3-270m (Q4_K_M GGUF) on llama.cpp; a tiny random-weight Llama (hidden
128, 2 layers) on transformers and vLLM, the same directory for both; a tiny LLaVA on
transformers beside the tiny VLM on llama.cpp. What compares across backends and what
does not (README, "Which figures compare across backends"): the tiny Llama's figures
compare between transformers, vLLM and `vllm serve` (same weights, same tokenizer, same
greedy decoding), not with gemma3-270m's (another model and tokenizer); TTFT is the
streamer's on transformers, the engine's own timestamp on in-process vLLM and the first
streamed chunk through `vllm serve` (records say which: `ttft_source`).

Run it alone: make bench-engines (or .venv-engines/bin/pytest benchmarks/engines/)
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_vlmbench.tasks import CAPTION_BRIEF, GenerationParams, Task

TEXT = ("gemma3-270m", "tiny-llama-hf", "tiny-llama-vllm", "tiny-llama-vllm-serve")
VISION = ("tiny-vlm", "tiny-llava-hf")
ENGINES = ("tiny-llama-hf", "tiny-llama-vllm")

# A schema whose every valid output is short, so that even a random-weight model's
# constrained output ends inside max_tokens: what it measures is that the constraint
# reached the sampler on every backend (an unconstrained random model never emits it).
VERDICT = Task(
    name="verdict",
    system="You answer with JSON only.",
    prompt='Is there a person in this picture? Answer {"person": true} or {"person": false}.',
    expects_json=True,
    schema={"type": "object", "properties": {"person": {"type": "boolean"}},
            "required": ["person"], "additionalProperties": False},
    params=GenerationParams(max_tokens=24),
)


@pytest.mark.vlm_models(*TEXT)
@pytest.mark.vlm_one_precision
@pytest.mark.vlm_slo(min_success_rate=1.0)
def test_caption_across_engines(vlm_bench: Any) -> None:
    """One-sentence captions of the scene descriptions, one request at a time, on every
    text backend: latency, TTFT (with its source), prompt and decode rates, load time."""
    vlm_bench.run(CAPTION_BRIEF, samples=6)


@pytest.mark.vlm_models("gemma3-270m", "tiny-llama-hf", "tiny-llama-vllm")
@pytest.mark.vlm_one_precision
@pytest.mark.vlm_slo(min_success_rate=1.0)
def test_json_verdict_across_engines(vlm_bench: Any) -> None:
    """A JSON-schema constrained answer on each in-process engine: llama.cpp's grammar,
    xgrammar in transformers, vLLM's structured outputs (without free whitespace, as the
    catalog entry says); the parse rate says whether each output obeyed the schema.
    (`vllm serve` constrains JSON with free whitespace, which the tiny random model fills
    to max_tokens; its structured outputs are tested in tests/engines/test_vllm_serve.py.)"""
    vlm_bench.run(VERDICT, samples=6)


@pytest.mark.vlm_models(*VISION)
@pytest.mark.vlm_one_precision
@pytest.mark.vlm_slo(min_success_rate=1.0)
def test_caption_images_across_engines(vlm_bench: Any) -> None:
    """Image captions through llama.cpp's multimodal path and transformers' LLaVA: the
    vision encoder's time (image_encode) beside prefill and decode."""
    vlm_bench.run(CAPTION_BRIEF, samples=6)


@pytest.mark.vlm_models(*ENGINES)
@pytest.mark.vlm_one_precision
@pytest.mark.vlm_load(batch=[1, 4])
def test_offline_throughput(vlm_bench: Any) -> None:
    """Offline throughput, as `vllm bench throughput` measures it: batches of 1 and of 4
    requests submitted together; requests/s and output tokens/s per batch."""
    vlm_bench.run(CAPTION_BRIEF, samples=8)
