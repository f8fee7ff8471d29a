"""The default suite: what `pytest benchmarks/` runs on any machine.

Two tasks over the catalog's default models (on a CPU: gemma3-270m and the tiny VLM).
Text-only models get each synthetic scene's description instead of its pixels.

On your own photos: `pytest benchmarks/ --vlm-images=fixtures/images --vlm-limit=3
--vlm-seed=42` (the same three on every machine, one measured request each). Photos have
no descriptions, so text-only models are skipped, saying so, unless the images come
from a manifest (.jsonl, .csv) that gives a description per photo.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.tasks import CAPTION_BRIEF, PHOTO_SCORE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Generation follows the hand-written GBNF grammar; PHOTO_SCORE's JSON schema validates.
PHOTO_SCORE_GBNF = replace(PHOTO_SCORE, grammar_file=FIXTURES / "grammars" / "photo_score.gbnf")


def test_caption_brief(vlm_bench: Any) -> None:
    """A one-sentence caption per image: latency, TTFT and decode speed."""
    vlm_bench.run(CAPTION_BRIEF)


@pytest.mark.vlm_slo(min_success_rate=1.0, min_parse_rate=1.0)
@pytest.mark.vlm_one_precision
def test_photo_score(vlm_bench: Any) -> None:
    """Photo scoring as JSON (score 1-10, caption, at most 8 tags).

    Generation is constrained by a GBNF grammar that encodes the task's JSON schema, so
    every answer must parse and validate; anything less is a bug worth a red test.
    Most of its time is grammar-constrained sampling (the `sample` stage), which the
    weights' precision does not change, so it runs at one precision per model and the
    suite stays within a few minutes; the precision axis is caption_brief's.
    """
    vlm_bench.run(PHOTO_SCORE_GBNF)
