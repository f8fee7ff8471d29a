"""Video benchmarks on real runs: generated videos with known cuts, split by
PySceneDetect, their frames sent through llama.cpp's multimodal path on the tiny random
VLM, and the results document's per-video figures recomputed from its records.

The tiny model's words are noise; its image tokens, stages and timings are real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.datasets.video_synth import Segment, write_video
from pytest_vlmbench.plugin import options
from tests.conftest import Project

FPS = 24
# Three scenes with hard cuts at frames 24 and 60: 1.0 s, 1.5 s and 1.0 s.
SEGMENTS = [Segment((200, 30, 30), 24), Segment((30, 30, 200), 36), Segment((30, 200, 30), 24)]
DURATION_S = 84 / FPS

BENCH = """
import pytest
from pytest_vlmbench.datasets.video import VideoScenes

@pytest.mark.vlm_slo({slo})
def test_images(vlm_bench):
    vlm_bench.run("scene_caption", VideoScenes("clips", frames=3, layout="images"), warmup=0)

def test_middle(vlm_bench):
    vlm_bench.run("scene_caption", VideoScenes("clips", layout="middle"), warmup=0)

def test_panorama(vlm_bench):
    vlm_bench.run("scene_caption", VideoScenes("clips", frames=3, layout="panorama"),
                  warmup=0)
"""


def _clip(project: Project, name: str = "a.mp4") -> Path:
    path = project.pytester.path / "clips" / name
    path.parent.mkdir(exist_ok=True)
    cuts = write_video(path, SEGMENTS, fps=FPS, size=(160, 90))
    assert cuts == [24, 60]
    return path


def _measured(records: list[dict[str, Any]], benchmark: str) -> list[dict[str, Any]]:
    return [r for r in records if r["benchmark"] == benchmark and r["phase"] == "measure"]


def _entry(doc: dict[str, Any], test: str) -> dict[str, Any]:
    [entry] = [e for e in doc["benchmarks"] if f"::{test}[" in e["id"]]
    return entry


@pytest.fixture
def video_run(project: Project) -> tuple[Project, Any]:
    _clip(project)
    project.pytester.makepyfile(test_bench=BENCH.format(slo=""))
    out = project.run(f"{options.MODELS}=tiny-vision")
    return project, out


def test_each_video_has_its_scenes_frames_and_real_time_factor(
        video_run: tuple[Project, Any]) -> None:
    _, out = video_run
    out.run.assert_outcomes(passed=3)
    out.run.stdout.fnmatch_lines([
        "video a.mp4 · tiny-vision * scene_caption: 3 scenes, 3 frames/scene (images), "
        "3.5 s of video: VLM * s, * s/scene, RTF *; detection * s, extraction * s, "
        "pipeline RTF *"])
    doc, records = out.doc(), out.records()
    entry = _entry(doc, "test_images")
    ref = entry["dataset"]["video"]
    assert ref["layout"] == "images"
    assert ref["layout_chosen_by"] == "user"
    assert ref["frames"] == "3"
    assert ref["detector"]["name"] == "content"
    [info] = ref["videos"]
    assert info["error"] is None
    assert info["scenes"] == 3
    assert info["starts_s"] == pytest.approx([0.0, 1.0, 2.5])
    assert info["duration_s"] == pytest.approx(DURATION_S)
    assert info["detect_ns"] > 0
    assert info["extract_ns"] > 0
    # One measured request per scene without samples=: the whole video, once.
    measured = _measured(records, entry["id"])
    assert [r["scene"]["index"] for r in measured] == [0, 1, 2]
    assert entry["samples"] == 3
    for r in measured:
        assert r["error"] is None
        scene = r["scene"]
        assert len(r["images"]) == 3 == len(scene["frames_s"])
        assert scene["start_s"] <= scene["frames_s"][0] < scene["frames_s"][-1] < scene["end_s"]
        # Stages never overlap and fit in the latency; preparation is outside it.
        latency = r["t_end_ns"] - r["t_start_ns"]
        assert sum(r["stages_ns"].values()) <= latency
        assert r["prepare_ns"] > 0
    figures = entry["summary"]["video"]
    vlm_s = sum((r["t_end_ns"] - r["t_start_ns"]) / 1e9 for r in measured)
    assert figures["vlm_s"] == pytest.approx(vlm_s)
    assert figures["real_time_factor"] == pytest.approx(vlm_s / DURATION_S)
    assert figures["seconds_per_scene"] == pytest.approx(vlm_s / 3)
    assert figures["detection_s"] == pytest.approx(info["detect_ns"] / 1e9)
    prepare_s = sum(r["prepare_ns"] for r in measured) / 1e9
    assert figures["pipeline_s"] == pytest.approx(
        (info["detect_ns"] + info["extract_ns"]) / 1e9 + prepare_s + vlm_s)
    assert figures["pipeline_real_time_factor"] > figures["real_time_factor"]
    assert figures["frames_per_scene"] == 3


def test_image_tokens_rise_with_the_frames_sent(video_run: tuple[Project, Any]) -> None:
    """Three frames as three images cost three times the middle frame's image tokens; a
    panorama of the same three frames is one image (the projector resizes it)."""
    _, out = video_run
    records = out.records()
    tokens = {
        test: {r["counts"]["image_tokens"] for r in _measured(records, _entry(out.doc(),
                                                                            test)["id"])}
        for test in ("test_images", "test_middle", "test_panorama")
    }
    [one] = tokens["test_middle"]
    assert one > 0
    assert tokens["test_images"] == {3 * one}
    assert tokens["test_panorama"] == {one}
    middle = _measured(records, _entry(out.doc(), "test_middle")["id"])
    assert all(len(r["images"]) == 1 == len(r["scene"]["frames_s"]) for r in middle)
    panorama = _measured(records, _entry(out.doc(), "test_panorama")["id"])
    for r in panorama:
        [image] = r["images"]
        assert (image["width"], image["height"]) == (3 * 160, 90)


def test_an_undecodable_video_is_one_failed_request_and_the_run_goes_on(
        project: Project) -> None:
    _clip(project)
    bad = project.pytester.path / "clips" / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    project.pytester.makepyfile(test_bench="""
from pytest_vlmbench.datasets.video import VideoScenes

def test_scenes(vlm_bench):
    vlm_bench.run("scene_caption", VideoScenes("clips"), warmup=0)
""")
    out = project.run(f"{options.MODELS}=tiny-vision")
    out.run.assert_outcomes(passed=1)
    out.run.stdout.fnmatch_lines(["*broken.mp4*"])
    [entry] = out.doc()["benchmarks"]
    measured = _measured(out.records(), entry["id"])
    failed = [r for r in measured if r["error"] is not None]
    [bad_record] = failed
    assert bad_record["error"]["stage"] == "prepare"
    assert bad_record["error"]["message"].startswith("clips/broken.mp4: cannot decode video")
    assert bad_record["sample_id"] == "broken.mp4/undecodable"
    assert len(measured) == 4  # three scenes of a.mp4, one failed sample of broken.mp4
    videos = {v["id"]: v for v in entry["summary"]["video"]["videos"]}
    assert videos["a.mp4"]["real_time_factor"] is not None
    assert videos["broken.mp4"]["real_time_factor"] is None
    assert "could not be decoded" in videos["broken.mp4"]["absent_reason"]
    assert entry["summary"]["video"]["real_time_factor"] == videos["a.mp4"]["real_time_factor"]
    assert any("broken.mp4" in w for w in entry["warnings"])


def test_the_real_time_factor_is_an_slo(project: Project) -> None:
    _clip(project)
    project.pytester.makepyfile(test_bench=BENCH.format(slo="max_real_time_factor=1e-6"))
    out = project.run(f"{options.MODELS}=tiny-vision", "-k", "test_images")
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines(["*SLO breached (n=3): max_real_time_factor = * > limit 1e-06*"])


def test_a_video_slo_on_images_fails_before_any_request(project: Project) -> None:
    project.pytester.makepyfile(test_bench="""
import pytest
from tiny_tasks import CAPTION

@pytest.mark.vlm_slo(max_real_time_factor=1.0)
def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=1, warmup=0)
""")
    out = project.run(f"{options.MODELS}=tiny-vision")
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines(["*SLO max_real_time_factor: dataset 'synthetic' is no video "
                                  "dataset*"])
    assert not out.out.with_name("results.records.jsonl").exists() \
        or not out.records()


def test_the_vlm_video_fixture_takes_the_command_line(project: Project) -> None:
    """--vlm-video names the videos, the scene options how they are split and shown;
    --vlm-samples below the scene count leaves the real-time factor absent, saying why."""
    _clip(project, "mine.mp4")
    project.pytester.makepyfile(test_bench="""
def test_video(vlm_bench, vlm_video):
    vlm_bench.run("scene_caption", vlm_video, warmup=0)
""")
    out = project.run(f"{options.MODELS}=tiny-vision", "--vlm-video=clips/mine.mp4",
                      "--vlm-scene-detector=adaptive", "--vlm-video-layout=panorama",
                      "--vlm-video-frames=start,end", "--vlm-samples=2")
    out.run.assert_outcomes(passed=1)
    [entry] = out.doc()["benchmarks"]
    ref = entry["dataset"]["video"]
    assert ref["detector"]["name"] == "adaptive"
    assert ref["detector"]["threshold"] == 3.0
    assert (ref["layout"], ref["layout_chosen_by"], ref["frames"]) == \
        ("panorama", "user", "start,end")
    assert ref["videos"][0]["scenes"] == 3
    measured = _measured(out.records(), entry["id"])
    assert len(measured) == 2
    assert all(len(r["images"]) == 1 and len(r["scene"]["frames_s"]) == 2 for r in measured)
    figures = entry["summary"]["video"]
    assert figures["real_time_factor"] is None
    assert "only 2 of 3 scenes were measured" in json.dumps(figures)


def test_the_demo_video_is_the_default(project: Project) -> None:
    """Without --vlm-video the fixture generates the demo video into the cache: six
    scenes over 12 s, the layout chosen by the model (llama.cpp takes several images)."""
    project.pytester.makepyfile(test_bench="""
def test_video(vlm_bench, vlm_video):
    vlm_bench.run("scene_caption", vlm_video, samples=1, warmup=0)
""")
    out = project.run(f"{options.MODELS}=tiny-vision")
    out.run.assert_outcomes(passed=1)
    [entry] = out.doc()["benchmarks"]
    ref = entry["dataset"]["video"]
    assert (ref["layout"], ref["layout_chosen_by"]) == ("images", "model")
    [info] = ref["videos"]
    assert (info["scenes"], info["duration_s"]) == (6, pytest.approx(12.0))


SINGLE_IMAGE = """
[[model]]
id = "tiny-single"
backend = "llama_cpp"
modality = "vision"
chat_format = "model"
max_images = 1
precisions = { fp32 = "generated:llama-tiny" }
projector = "generated:mlp-tiny"
"""


@pytest.mark.parametrize("mode", ["bench", "staged", "together"])
def test_a_single_image_model_gets_a_panorama(project: Project, mode: str) -> None:
    """layout="auto" sends a model whose catalog says max_images = 1 one panorama per
    scene, in a benchmark and as a pipeline's first stage (whose records, dataset hash
    and stage-2 provenance all follow the adapted layout)."""
    _clip(project)
    catalog = project.pytester.path / "models.toml"
    catalog.write_text(catalog.read_text() + SINGLE_IMAGE)
    if mode == "bench":
        body = 'vlm_bench.run("scene_caption", VideoScenes("clips"), warmup=0)'
        args = "vlm_bench"
    else:
        body = (f'vlm_pipeline.run(Stage("tiny-single", "scene_caption"), '
                f'Stage("tiny-text", CAPTION), VideoScenes("clips"), warmup=0, '
                f'mode="{mode}")')
        args = "vlm_pipeline"
    project.pytester.makepyfile(test_bench=f"""
from pytest_vlmbench.datasets.video import VideoScenes
from pytest_vlmbench.pipeline import Stage
from tiny_tasks import CAPTION

def test_single({args}):
    {body}
""")
    out = project.run(f"{options.MODELS}=tiny-single,tiny-text")
    # the benchmark's tiny-text cell is skipped: video scenes have no text descriptions
    out.run.assert_outcomes(passed=1, skipped=int(mode == "bench"))
    doc = out.doc()
    entry = next(e for e in doc["benchmarks"] if e["model"] == "tiny-single")
    assert entry["dataset"]["video"]["layout"] == "panorama"
    assert entry["dataset"]["video"]["layout_chosen_by"] == "model"
    measured = _measured(out.records(), entry["id"])
    assert len(measured) == 3
    for r in measured:
        assert r["error"] is None
        assert r["scene"]["layout"] == "panorama"
        [image] = r["images"]
        assert (image["width"], image["height"]) == (2 * 160, 90)
