"""The same benchmark through three backends: llama.cpp in-process, a managed
llama-cpp-python server and a managed llama.cpp llama-server, all serving the same
gemma3-270m Q4_K_M file on this machine, side by side in one results document.

What differs and why (README, "The cross-backend suite"): the servers add HTTP and
JSON per request and per streamed token; all three render the same Gemma prompt (the
servers are given the in-process template); through a server the stages are the
server's own clock, and llama-server reuses cached prompt prefixes; llama-server
decodes several requests in one batch (`n_parallel` slots), which the concurrency
sweep shows.

Run it alone: pytest benchmarks/test_cross_backend.py
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.tasks import CAPTION_BRIEF, PHOTO_SCORE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PHOTO_SCORE_GBNF = replace(PHOTO_SCORE, grammar_file=FIXTURES / "grammars" / "photo_score.gbnf")
BACKENDS = ("gemma3-270m", "gemma3-270m-lcp", "gemma3-270m-llama-server",
            "tiny-vlm", "tiny-vlm-lcp", "tiny-vlm-llama-server")


@pytest.mark.vlm_models(*BACKENDS)
@pytest.mark.vlm_one_precision
@pytest.mark.vlm_slo(min_success_rate=1.0, min_parse_rate=1.0)
def test_photo_score_across_backends(vlm_bench: Any) -> None:
    """Photo scoring as JSON under a GBNF grammar, sent through each backend: every
    output must parse, whichever way the grammar reached the sampler (in-process, the
    llama-cpp-python server's `grammar` field, llama-server's `grammar` field)."""
    vlm_bench.run(PHOTO_SCORE_GBNF, samples=4)


@pytest.mark.vlm_models("gemma3-270m-llama-server")
@pytest.mark.vlm_load(concurrency=[1, 2, 4])
@pytest.mark.vlm_slo(min_success_rate=1.0, max_latency_p95_s=5.0)
def test_caption_concurrency_sweep(vlm_bench: Any) -> None:
    """One-sentence captions at 1, 2 and 4 concurrent streams against the managed
    llama-server (4 slots): requests/s, output tokens/s, TTFT, TPOT, ITL, the client's
    lag and goodput per level; the sweep names the highest level whose p95 latency met
    5 s (goodput counts the requests that finished within 5 s). A sweep fails only when
    no level meets its SLOs."""
    vlm_bench.run(CAPTION_BRIEF, samples=8)
