"""Video scenes: the suite a video-pipeline team runs, on any machine.

The video is split into scenes (PySceneDetect's content detector), two frames are
sampled per scene (its start and middle) and each scene is one request: the frames as
several images to a model that takes several, or as one side-by-side panorama to a
single-image model. Per model and video the results hold the scenes, frames per scene,
the VLM time, seconds per scene and the real-time factor (VLM time / video duration,
model load excluded), with scene detection and frame extraction timed on their own and
the whole pipeline's real-time factor beside it.

By default the video is generated here, deterministically: coloured scenes with hard
cuts and moving shapes (datasets/video_synth.py). On your own videos:

    pytest benchmarks/video/ --vlm-video=clips/ --vlm-scene-detector=adaptive \\
        --vlm-video-frames=start,middle,end --vlm-video-layout=panorama

Each video is decoded and split once per session; one request per scene is measured
unless --vlm-samples says otherwise.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.vlm_modality("vision")
@pytest.mark.vlm_slo(min_success_rate=1.0)
def test_scene_captions(vlm_bench: Any, vlm_video: Any) -> None:
    """One sentence per scene from its sampled frames, laid out as --vlm-video-layout
    says (auto: several images where the model takes them, else a panorama)."""
    vlm_bench.run("scene_caption", vlm_video)


@pytest.mark.vlm_modality("vision")
@pytest.mark.vlm_one_precision
@pytest.mark.vlm_slo(min_success_rate=1.0)
def test_scene_captions_panorama(vlm_bench: Any, vlm_video: Any) -> None:
    """The same scenes as one panorama per scene (frames side by side, in time order),
    as a single-image model gets them: one image's tokens instead of one per frame."""
    vlm_bench.run("scene_caption", vlm_video.with_layout("panorama"))
