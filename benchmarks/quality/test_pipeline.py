"""A two-stage pipeline, as hackathon and product teams build them: the vision model
captions each image, then the text model rewrites the caption as three variants (a JSON
array), both from the catalog.

Per stage and end to end the results give latency, tokens, response length, variants per
request and in total (the document's `pipelines`), and every stage-2 record names the
stage-1 record that fed it (`lineage`). Staged mode holds one model at a time (for
models that do not fit in memory together); together mode holds both and sends each
sample straight through, so its end-to-end latency includes the handoff.

Extended: `make bench-quality`, or `pytest benchmarks/quality --vlm-extended`.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_vlmbench.datasets import SyntheticScenes
from pytest_vlmbench.pipeline import Stage

SCENES = SyntheticScenes(6, seed=14, difficulty="mixed")


@pytest.mark.vlm_extended
@pytest.mark.parametrize("mode", ["staged", "together"])
def test_caption_then_variants(vlm_pipeline: Any, mode: str) -> None:
    """tiny-vlm captions each scene; gemma3-270m writes three variants of the caption."""
    vlm_pipeline.run(
        Stage("tiny-vlm", "caption_brief", name="caption"),
        Stage("gemma3-270m", "caption_variants", name="variants"),
        dataset=SCENES, mode=mode, samples=len(SCENES), warmup=1,
    )
