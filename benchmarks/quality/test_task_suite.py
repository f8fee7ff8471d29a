"""The VLM task suite on synthetic scenes that know their answers.

Each scene task (objects_and_counts, attributes, spatial_relationships, scene_context,
caption_brief, caption_detailed) runs on both embedded models over the same seeded scenes
of every difficulty; the results give each task's ground-truth accuracies per model beside
their chance levels (summary.quality.scores[...].chance), and for captions the length,
distinct-n and repeated outputs.

The tiny VLM sees through a random-weight vision tower: its accuracies should sit near
chance, which checks that the scorers are not fooled by well-formed answers. The text
model reads each scene's description (input_mode "text"), so it is tested on reading,
not seeing.

Extended (a few minutes on 2 cores): `make bench-quality`, or
`pytest benchmarks/quality --vlm-extended`.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_vlmbench.datasets import SyntheticScenes

SCENES = SyntheticScenes(9, seed=14, difficulty="mixed")
SCENE_TASKS = ("objects_and_counts", "attributes", "spatial_relationships", "scene_context")
CAPTION_TASKS = ("caption_brief", "caption_detailed")

pytestmark = [pytest.mark.vlm_extended, pytest.mark.vlm_one_precision]


@pytest.mark.parametrize("task", SCENE_TASKS)
@pytest.mark.vlm_slo(min_success_rate=1.0, min_parse_rate=1.0)
def test_scene_task(vlm_bench: Any, task: str) -> None:
    """A structured answer per scene, scored against the scene's answer key; the JSON
    schema constrains generation, so every answer must parse."""
    vlm_bench.run(task, SCENES, samples=len(SCENES), warmup=1)


@pytest.mark.parametrize("task", CAPTION_TASKS)
def test_caption_task(vlm_bench: Any, task: str) -> None:
    """Free-text captions: which colours and shapes they name (against the answer key),
    their length, distinct-n and repeats."""
    vlm_bench.run(task, SCENES, samples=len(SCENES), warmup=1)
