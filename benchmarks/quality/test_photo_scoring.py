"""Photo scoring on the fixture photos: instagram-fit and aesthetic ratings (1-10), a
caption and at most 8 tags, as JSON constrained by a GBNF grammar.

The vision model sees each photo; the text model reads the photo's hand-written
description from fixtures/photos.jsonl. The results give each model's rating
histograms and how decisive it is (summary.quality.histograms), repeated captions, and
between the two models Kendall's tau and top-k overlap of their rankings (the document's
`agreement`, which pairs benchmarks by task name and dataset).

Measured here: both embedded models give every photo the same rating (gemma3-270m 1,
the tiny VLM, whose vision tower has random weights, 10; top share 1.0), greedy and
sampled at temperature 0.8 alike, so Kendall's tau is absent with that reason and top-k
overlap is what chance gives: a finding about these two models that a decisive pair of
VLMs would not show.

Extended: `make bench-quality`, or `pytest benchmarks/quality --vlm-extended`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.datasets import ManifestDataset
from pytest_vlmbench.tasks import PHOTO_SCORE

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PHOTOS = ManifestDataset(FIXTURES / "photos.jsonl")
PHOTO_SCORE_GBNF = replace(PHOTO_SCORE, grammar_file=FIXTURES / "grammars" / "photo_score.gbnf")


@pytest.mark.vlm_extended
@pytest.mark.vlm_one_precision
@pytest.mark.vlm_slo(min_success_rate=1.0, min_parse_rate=1.0)
def test_photo_scoring(vlm_bench: Any) -> None:
    """Every photo rated once by each model; every answer must parse."""
    vlm_bench.run(PHOTO_SCORE_GBNF, PHOTOS, samples=len(PHOTOS), warmup=1)
