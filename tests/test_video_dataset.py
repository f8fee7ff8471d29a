"""The video-scenes dataset (datasets/video.py) on generated videos with known cuts,
encoded and decoded by the real OpenCV, split by the real PySceneDetect.

Videos are tiny (64x48, or 160x90 where the dissolve measurements were made) and
written once per module; the decode cache is per process, so tests that count decodes
compare before and after.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pytest_vlmbench.datasets import (
    DatasetArgumentError,
    DatasetError,
    ImageError,
    ImagePrep,
    ModelAdapted,
    Sample,
    VideoSource,
    available_datasets,
    dataset_for_model,
    dataset_hash,
    dataset_notes,
    dataset_selection,
    get_dataset,
)
from pytest_vlmbench.datasets.video import (
    DETECTORS,
    VideoScenes,
    _library,
    decode_counts,
    frame_positions,
)
from pytest_vlmbench.datasets.video_synth import Segment, write_video

FPS = 24
SMALL = (64, 48)
PALETTE = {
    "red": (200, 40, 40), "blue": (30, 90, 210), "yellow": (240, 210, 40),
    "green": (30, 150, 70), "black": (20, 20, 20), "white": (235, 235, 235),
}
# Five scenes, every one longer than the default min_scene_s (0.5 s = 12 frames).
CUT_SEGMENTS = [Segment(PALETTE[name], frames) for name, frames in
                [("red", 24), ("blue", 18), ("yellow", 30), ("green", 14), ("white", 20)]]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The module's videos: cuts (known cut frames), single (no cut), and a folder with
    a good video beside junk bytes and an empty file, both named .mp4."""
    root = tmp_path_factory.mktemp("videos")
    made = {"cuts": root / "cuts.mp4", "single": root / "single.mp4"}
    write_video(made["cuts"], CUT_SEGMENTS, fps=FPS, size=SMALL)
    write_video(made["single"], [Segment(PALETTE["blue"], 36)], fps=FPS, size=SMALL)
    mixed = root / "mixed"
    mixed.mkdir()
    shutil.copy(made["cuts"], mixed / "good.mp4")
    (mixed / "junk.mp4").write_bytes(bytes(range(256)) * 20)
    (mixed / "empty.mp4").write_bytes(b"")
    made["mixed"] = mixed
    return made


def starts(dataset: VideoScenes) -> list[int]:
    """Each scene's first frame, from the samples' scene records."""
    return [round(s.scene["start_s"] * FPS) for s in dataset.samples() if s.scene]


def colour_at(jpeg: bytes, x: int, y: int) -> tuple[int, ...]:
    with Image.open(io.BytesIO(jpeg)) as image:
        pixel = image.convert("RGB").getpixel((x, y))
    assert isinstance(pixel, tuple)
    return pixel


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 20) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


# --- detection against known cuts --------------------------------------------------------

@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_hard_cuts_are_found_at_exactly_the_known_frames(videos: dict[str, Path],
                                                         detector: str) -> None:
    known = [0, 24, 42, 72, 86]
    dataset = VideoScenes(videos["cuts"], detector=detector)
    assert starts(dataset) == known
    (info,) = dataset.video_ref()["videos"]
    assert info["starts_s"] == [round(k / FPS, 6) for k in known]
    assert info["frames"] == 106
    assert info["duration_s"] == pytest.approx(106 / FPS)
    assert (info["fps"], info["width"], info["height"]) == (24.0, 64, 48)
    assert info["min_scene_frames"] == 12
    assert info["scenes"] == 5
    assert info["error"] is None


def test_a_video_without_cuts_is_one_scene_covering_it(videos: dict[str, Path]) -> None:
    dataset = VideoScenes(videos["single"])
    (sample,) = dataset.samples()
    assert sample.id == "single.mp4/scene-000"
    assert sample.scene is not None
    assert (sample.scene["start_s"], sample.scene["end_s"]) == (0.0, 1.5)
    assert sample.duration_s == 1.5
    assert sample.scene["frames_s"] == [0.0, 0.75]
    assert dataset.video_ref()["videos"][0]["starts_s"] == [0.0]


@pytest.mark.parametrize(("min_scene_s", "expected"), [(0.5, [0, 24]), (0.2, [0, 24, 30]),
                                                       (0.0, [0, 24, 30])])
def test_min_scene_s_drops_shorter_scenes(tmp_path: Path, min_scene_s: float,
                                          expected: list[int]) -> None:
    path = tmp_path / "short.mp4"
    write_video(path, [Segment(PALETTE["red"], 24), Segment(PALETTE["blue"], 6),
                       Segment(PALETTE["yellow"], 24)], fps=FPS, size=SMALL)
    dataset = VideoScenes(path, min_scene_s=min_scene_s)
    assert starts(dataset) == expected
    assert dataset.video_ref()["videos"][0]["min_scene_frames"] == round(min_scene_s * FPS)


# --- gradual transitions: the tolerance VideoScenes' docstring states --------------------

DISSOLVE_SIZE = (160, 90)
LEAD = 24  # frames of the first shot; the dissolve starts at frame LEAD
STRONG = [("black", "white"), ("white", "black"), ("red", "white"), ("blue", "black"),
          ("yellow", "black"), ("green", "white")]
FADES = [("black", "red"), ("black", "blue"), ("black", "yellow"), ("red", "black"),
         ("blue", "black"), ("yellow", "black")]
OTHERS = [("red", "blue"), ("blue", "red"), ("white", "blue"), ("red", "green"),
          ("black", "white"), ("green", "white")]
LONG = (4, 8, 12)


def dissolve_cases() -> set[tuple[str, str, int]]:
    cases = {(a, b, d) for a, b in STRONG for d in (0, 1, 2)}
    cases |= {(a, b, d) for a, b in FADES + OTHERS for d in LONG}
    return cases


@pytest.fixture(scope="module")
def dissolves(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, int], Path]:
    """One 160x90 video per (from, to, dissolve frames): LEAD frames of the first shot,
    then the second, whose first d frames fade in from the first."""
    root = tmp_path_factory.mktemp("dissolves")
    made = {}
    for a, b, d in sorted(dissolve_cases()):
        path = root / f"{a}-{b}-{d}.mp4"
        write_video(path, [Segment(PALETTE[a], LEAD), Segment(PALETTE[b], d + 16, dissolve=d)],
                    fps=FPS, size=DISSOLVE_SIZE)
        made[(a, b, d)] = path
    return made


def cuts(path: Path, detector: str = "content") -> list[int]:
    return starts(VideoScenes(path, detector=detector))[1:]


def hard_cut_score(path: Path) -> float:
    """The content detector's score on the cut frame (its mean HSV change)."""
    import scenedetect

    manager = scenedetect.SceneManager(scenedetect.StatsManager())
    manager.add_detector(scenedetect.ContentDetector())
    manager.detect_scenes(scenedetect.open_video(str(path)))
    (score,) = manager.stats_manager.get_metrics(LEAD, ["content_val"])
    return float(score)


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_a_dissolve_is_cut_at_most_once_inside_it_or_on_the_frame_after(
        dissolves: dict[tuple[str, str, int], Path], detector: str) -> None:
    for (a, b, d), path in dissolves.items():
        found = cuts(path, detector)
        assert len(found) <= 1, (a, b, d, found)
        assert all(LEAD <= cut <= LEAD + d for cut in found), (a, b, d, found)


@pytest.mark.parametrize(("a", "b"), STRONG)
def test_short_dissolves_between_strongly_contrasting_shots_are_cut(
        dissolves: dict[tuple[str, str, int], Path], a: str, b: str) -> None:
    assert hard_cut_score(dissolves[(a, b, 0)]) >= 75
    assert cuts(dissolves[(a, b, 0)]) == [LEAD]
    for d in (1, 2):
        (cut,) = cuts(dissolves[(a, b, d)])
        assert LEAD <= cut <= LEAD + d


def test_long_dissolves_may_be_missed(dissolves: dict[tuple[str, str, int], Path]) -> None:
    """Black to white over 4 frames or more is one scene: each frame changes too little."""
    for d in LONG:
        assert cuts(dissolves[("black", "white", d)]) == [], d


@pytest.mark.parametrize(("a", "b"), FADES)
def test_fades_from_or_to_a_dark_shot_are_cut_at_any_length(
        dissolves: dict[tuple[str, str, int], Path], a: str, b: str) -> None:
    for d in LONG:
        # From dark: on the first dissolve frame; to dark: somewhere in the bound above.
        (cut,) = cuts(dissolves[(a, b, d)])
        assert cut == LEAD if a == "black" else LEAD <= cut <= LEAD + d


# --- undecodable videos ------------------------------------------------------------------

def test_an_undecodable_video_is_one_failing_sample_and_the_rest_go_on(
        videos: dict[str, Path]) -> None:
    dataset = VideoScenes(videos["mixed"])
    samples = {s.id: s for s in dataset.samples()}
    assert sorted(samples) == ["empty.mp4/undecodable", *[f"good.mp4/scene-{i:03d}"
                                                         for i in range(5)],
                               "junk.mp4/undecodable"]
    reasons = {"empty.mp4": "file is empty (0 bytes)", "junk.mp4": "cannot open it as a video"}
    for name, reason in reasons.items():
        sample = samples[f"{name}/undecodable"]
        assert sample.scene is None
        assert sample.prepare is not None
        with pytest.raises(ImageError) as caught:
            sample.prepare(ImagePrep())
        assert isinstance(caught.value, DatasetError)
        message = str(caught.value)
        assert message.startswith(f"{videos['mixed'] / name}: cannot decode video: {reason}")
        assert "\n" not in message
    good = samples["good.mp4/scene-001"]
    assert good.prepare is not None
    assert len(good.prepare(ImagePrep())) == 2
    (line,) = dataset.notes()
    assert line.startswith(f"video {videos['mixed']}: 2 of 3 videos cannot be decoded")
    assert "empty.mp4 (file is empty (0 bytes))" in line
    assert "junk.mp4 (cannot open it as a video" in line
    assert dataset_notes(dataset) == [line]
    infos = {info["id"]: info for info in dataset.video_ref()["videos"]}
    assert infos["good.mp4"]["error"] is None
    assert infos["good.mp4"]["scenes"] == 5
    for name, reason in reasons.items():
        info = infos[name]
        assert (info["scenes"], info["frames"], info["fps"], info["extract_ns"]) == \
            (0, 0, None, None)
        assert info["error"] is not None
        assert info["error"].startswith(f"{videos['mixed'] / name}: cannot decode video: "
                                        f"{reason}")


# --- frame sampling ----------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("start", [48]), ("middle", [66]), ("end", [83]),
    ("start,middle", [48, 66]), ("middle,start", [48, 66]), ("Start, Middle, End", [48, 66, 83]),
    (1, [66]), ("3", [54, 66, 78]), (4, [52, 61, 70, 79]),
    ("every:0.5s", [48, 60, 72]), ("every:1s", [48, 72]), ("every:2s", [48]),
])
def test_frame_positions(spec: str | int, expected: list[int]) -> None:
    assert frame_positions(spec, 48, 84, 24.0) == expected


def test_frame_positions_of_tiny_scenes_keep_each_frame_once() -> None:
    assert frame_positions("start,middle,end", 7, 8, 24.0) == [7]
    assert frame_positions("start,middle", 7, 9, 24.0) == [7, 8]
    assert frame_positions(5, 0, 3, 24.0) == [0, 1, 2]
    assert frame_positions("every:0.01s", 10, 14, 24.0) == [10, 11, 12, 13]
    assert frame_positions("every:0.5s", 0, 90, 29.97) == [0, 14, 29, 44, 59, 74, 89]


@pytest.mark.parametrize("spec", ["", "first", "start,start", "0", 0, -1, "every:", "every:0s",
                                  "every:2", "every:-1s", "every:nans", True, 2.5, None])
def test_a_bad_frames_spec_names_itself(spec: object) -> None:
    with pytest.raises(DatasetArgumentError, match=r"^frames="):
        frame_positions(spec, 0, 10, 24.0)  # type: ignore[arg-type]


SPECS = st.one_of(
    st.sampled_from(["start", "middle", "end", "start,middle", "middle,end", "start,end",
                     "start,middle,end"]),
    st.integers(min_value=1, max_value=40),
    st.sampled_from([0.04, 0.1, 0.25, 0.5, 1.0, 2.0, 3.5]).map(lambda s: f"every:{s}s"),
)


@given(spec=SPECS, start=st.integers(min_value=0, max_value=10_000),
       length=st.integers(min_value=1, max_value=2_000),
       fps=st.sampled_from([12.0, 23.976, 24.0, 25.0, 29.97, 30.0, 60.0]))
def test_frame_positions_are_sorted_unique_and_inside_the_scene(
        spec: str | int, start: int, length: int, fps: float) -> None:
    positions = frame_positions(spec, start, start + length, fps)
    assert positions
    assert positions == sorted(set(positions))
    assert all(start <= p < start + length for p in positions)
    if isinstance(spec, int):
        assert len(positions) == min(spec, length)
    if isinstance(spec, str) and spec.startswith("start"):
        assert positions[0] == start
    if isinstance(spec, str) and spec.endswith("end"):
        assert positions[-1] == start + length - 1


# --- what a model is sent ----------------------------------------------------------------

def test_samples_carry_their_scene(videos: dict[str, Path]) -> None:
    dataset = VideoScenes(videos["cuts"], frames="start,middle,end")
    sample = list(dataset.samples())[1]
    assert isinstance(sample, Sample)
    assert sample.id == "cuts.mp4/scene-001"
    assert sample.source == f"{videos['cuts']}#scene 1 (1.000-1.750 s)"
    assert (sample.load_image, sample.description, dict(sample.truth)) == (None, None, {})
    assert sample.duration_s == 0.75
    assert sample.scene == {"video": "cuts.mp4", "index": 1, "start_s": 1.0, "end_s": 1.75,
                            "duration_s": 0.75, "frames_s": [1.0, 1.375, 1.708333],
                            "layout": "images"}


def test_prepared_frames_are_the_scene_s_frames_in_time_order(videos: dict[str, Path]) -> None:
    dataset = VideoScenes(videos["cuts"], frames=3, layout="images")
    samples = list(dataset.samples())
    for sample, segment in zip(samples, CUT_SEGMENTS, strict=True):
        assert sample.prepare is not None
        assert sample.scene is not None
        images = sample.prepare(ImagePrep(long_edge=64))
        assert [i.source for i in images] == [f"cuts.mp4@{t:.3f}s"
                                              for t in sample.scene["frames_s"]]
        for image in images:
            assert (image.width, image.height) == SMALL
            assert near(colour_at(image.jpeg, 2, 2), segment.colour)


@pytest.mark.parametrize(("layout", "size"), [("panorama", (3 * 32, 24)),
                                              ("grid", (2 * 32, 2 * 24)),
                                              ("middle", (32, 24))])
def test_composite_layouts_of_a_real_scene(videos: dict[str, Path], layout: str,
                                           size: tuple[int, int]) -> None:
    frames = "middle" if layout == "middle" else 3
    dataset = VideoScenes(videos["cuts"], frames=frames, layout=layout)
    sample = list(dataset.samples())[2]
    assert sample.prepare is not None
    assert sample.scene is not None
    (image,) = sample.prepare(ImagePrep(long_edge=32))
    assert (image.width, image.height) == size
    assert sample.scene["layout"] == layout
    assert near(colour_at(image.jpeg, 1, 1), CUT_SEGMENTS[2].colour)
    if layout == "middle":
        assert sample.scene["frames_s"] == [2.375]  # frame 42 + 30 // 2 = 57
        assert image.source == "cuts.mp4@2.375s"
    else:
        assert image.source == f"cuts.mp4#scene 2 {layout} of 3 frames"


def test_panorama_order_follows_time(tmp_path: Path) -> None:
    """A one-scene video whose colour changes slowly from black to white: the left
    cell is the earliest frame, the darkest."""
    path = tmp_path / "ramp.avi"
    ramp = [Segment((v, v, v), 1, dissolve=0) for v in range(0, 250, 10)]
    write_video(path, ramp, fps=FPS, size=SMALL)
    dataset = VideoScenes(path, frames=4, layout="panorama", min_scene_s=0.0, threshold=200)
    (sample,) = dataset.samples()
    assert sample.prepare is not None
    (image,) = sample.prepare(ImagePrep(long_edge=64))
    lightness = [colour_at(image.jpeg, 64 * cell + 2, 2)[0] for cell in range(4)]
    assert lightness == sorted(lightness)
    assert lightness[-1] - lightness[0] > 100


# --- the decode cache --------------------------------------------------------------------

def test_detection_and_extraction_run_once_per_video(videos: dict[str, Path],
                                                     tmp_path: Path) -> None:
    path = tmp_path / "cached.mp4"
    shutil.copy(videos["cuts"], path)
    before = decode_counts()
    dataset = VideoScenes(path)
    list(dataset.samples())
    assert decode_counts()["detections"] == before["detections"] + 1
    assert decode_counts()["extractions"] == before["extractions"]  # not needed yet
    first = dataset.video_ref()
    once = decode_counts()
    assert once["extractions"] == before["extractions"] + 1
    list(dataset.samples())
    again = VideoScenes(path)  # a re-open of the same file shares the cache
    assert again.video_ref() == first
    for sample in again.samples():
        assert sample.prepare is not None
        sample.prepare(ImagePrep())
    assert decode_counts() == once
    (info,) = first["videos"]
    assert info["detect_ns"] is not None
    assert info["detect_ns"] > 0
    assert info["extract_ns"] is not None
    assert info["extract_ns"] > 0
    # Another sampling extracts again, but does not detect again.
    VideoScenes(path, frames=4).video_ref()
    assert decode_counts() == {"detections": once["detections"],
                               "extractions": once["extractions"] + 1}
    # A changed file is another video.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    list(VideoScenes(path).samples())
    assert decode_counts()["detections"] == once["detections"] + 1


# --- identity ----------------------------------------------------------------------------

def test_fingerprint_follows_settings_not_the_opening(videos: dict[str, Path],
                                                      tmp_path: Path) -> None:
    path = videos["cuts"]
    base = VideoScenes(path).fingerprint()
    assert VideoScenes(path).fingerprint() == base
    assert VideoScenes(str(path), detector="content", threshold=27.0).fingerprint() == base
    variants = [
        VideoScenes(path, detector="adaptive"),
        VideoScenes(path, threshold=30),
        VideoScenes(path, min_scene_s=1.0),
        VideoScenes(path, frames="start"),
        VideoScenes(path, frames=4),
        VideoScenes(path, layout="panorama"),
        VideoScenes(path, layout="grid"),
    ]
    prints = [v.fingerprint() for v in variants]
    assert base not in prints
    assert len(set(prints)) == len(prints)
    # What the model is shown decides, not who chose it.
    assert VideoScenes(path).for_model(None).fingerprint() == base
    assert VideoScenes(path).for_model(1).fingerprint() == variants[5].fingerprint()
    # Same bytes elsewhere, same dataset; other bytes, another.
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(path, moved / "cuts.mp4")
    assert VideoScenes(moved / "cuts.mp4").fingerprint() == base
    (moved / "cuts.mp4").write_bytes(videos["single"].read_bytes())
    assert VideoScenes(moved / "cuts.mp4").fingerprint() != base
    prep = ImagePrep()
    assert dataset_hash(VideoScenes(path), prep) != dataset_hash(
        VideoScenes(path, layout="panorama"), prep)


def test_selection_label_and_len(videos: dict[str, Path]) -> None:
    dataset = VideoScenes(videos["cuts"])
    ids = [f"cuts.mp4/scene-{i:03d}" for i in range(5)]
    assert dataset_selection(dataset) == {"seed": 0, "limit": None, "ids": ids}
    assert len(dataset) == 5
    assert dataset.label == f"video:{videos['cuts']}"
    assert "VideoScenes(" in repr(dataset)


def test_for_model_chooses_images_or_a_panorama(videos: dict[str, Path]) -> None:
    auto = VideoScenes(videos["cuts"], frames="start,middle")
    assert isinstance(auto, ModelAdapted)
    assert isinstance(auto, VideoSource)
    assert auto.resolved_layout == "images"  # before for_model
    choices = {None: "images", 2: "images", 8: "images", 1: "panorama"}
    for max_images, layout in choices.items():
        adapted = dataset_for_model(auto, max_images)
        assert isinstance(adapted, VideoScenes)
        assert adapted.resolved_layout == layout
        ref = adapted.video_ref()
        assert (ref["layout"], ref["layout_chosen_by"]) == (layout, "model")
        assert {s.scene["layout"] for s in adapted.samples() if s.scene} == {layout}
    assert auto.resolved_layout == "images"  # the original is unchanged
    assert VideoScenes(videos["cuts"], frames=3).for_model(2).resolved_layout == "panorama"
    assert VideoScenes(videos["cuts"], frames="every:0.25s").for_model(6).resolved_layout \
        == "images"  # the longest scene (30 frames) gets 5
    assert VideoScenes(videos["cuts"], frames="every:0.25s").for_model(4).resolved_layout \
        == "panorama"
    user = VideoScenes(videos["cuts"], layout="grid")
    assert user.for_model(1) is user
    assert user.video_ref()["layout_chosen_by"] == "user"
    first = next(iter(auto.for_model(1).samples()))
    assert first.prepare is not None
    (panorama,) = first.prepare(ImagePrep(long_edge=64))
    assert (panorama.width, panorama.height) == (128, 48)


def test_video_ref_describes_the_detector_and_sampling(videos: dict[str, Path]) -> None:
    ref = VideoScenes(videos["single"], detector="adaptive", frames="every:0.5s",
                      layout="grid").video_ref()
    assert ref["detector"] == {"name": "adaptive", "threshold": DETECTORS["adaptive"],
                               "min_scene_s": 0.5,
                               "library": _library()}
    assert (ref["frames"], ref["layout"], ref["layout_chosen_by"]) == ("every:0.5s", "grid",
                                                                        "user")
    (info,) = ref["videos"]
    assert info["id"] == "single.mp4"
    assert info["source"] == str(videos["single"])
    assert len(info["sha256"]) == 64
    json.dumps(ref)  # plain JSON


# --- paths and arguments -----------------------------------------------------------------

def test_registered_as_video(videos: dict[str, Path]) -> None:
    assert "video" in available_datasets()
    dataset = get_dataset("video", path=str(videos["single"]), frames="middle")
    assert isinstance(dataset, VideoScenes)
    assert dataset.sampling == "middle"


def test_folders_globs_and_clashing_names(videos: dict[str, Path], tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(videos["single"], tmp_path / folder / "clip.mp4")
    (tmp_path / "a" / "notes.txt").write_text("not a video")
    (tmp_path / "a" / ".hidden.mp4").write_bytes(b"")
    dataset = VideoScenes(tmp_path)
    assert [v.id for v in dataset.videos] == ["a/clip.mp4", "b/clip.mp4"]
    assert [s.id for s in dataset.samples()] == ["a/clip.mp4/scene-000",
                                                 "b/clip.mp4/scene-000"]
    assert dataset.notes() == [f"video {tmp_path}: skipped 1 file whose extension is not a "
                               f"video one: a/notes.txt"]
    assert [v.id for v in VideoScenes(tmp_path / "a").videos] == ["clip.mp4"]
    assert [v.id for v in VideoScenes(f"{tmp_path}/*/clip.mp4").videos] == ["a/clip.mp4",
                                                                            "b/clip.mp4"]
    assert [v.id for v in VideoScenes(f"{tmp_path}/b/*.mp4").videos] == ["clip.mp4"]
    with pytest.raises(DatasetArgumentError, match="no videos found"):
        VideoScenes(tmp_path, recursive=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"detector": "histogram"}, r"^VideoScenes\('.*', detector='histogram'\): detector must"),
    ({"threshold": 0}, r"^VideoScenes\('.*', threshold=0\): threshold must be a positive"),
    ({"threshold": True}, r"threshold must be a positive"),
    ({"min_scene_s": -1}, r"^VideoScenes\('.*', min_scene_s=-1\): min_scene_s must"),
    ({"frames": "first"}, r"^VideoScenes\('.*', frames='first'\): unknown frame 'first'"),
    ({"frames": 0}, r"frames as a number must be at least 1"),
    ({"layout": "mosaic"}, r"^VideoScenes\('.*', layout='mosaic'\): layout must be auto"),
    ({"frames": 4, "layout": "middle"}, r"middle layout sends the scene's middle frame"),
    ({"extensions": ".mp4"}, r"extensions must be a tuple"),
    ({"extensions": ()}, r"extensions is empty"),
])
def test_bad_arguments_are_one_line_usage_mistakes(videos: dict[str, Path],
                                                   kwargs: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(DatasetArgumentError, match=message) as caught:
        VideoScenes(videos["single"], **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_a_missing_path_or_a_folder_without_videos_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetArgumentError, match=r"^VideoScenes\('nowhere/x.mp4'\): no such "
                                                   r"video file or folder"):
        VideoScenes("nowhere/x.mp4")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DatasetArgumentError,
                       match=r"^VideoScenes\('.*'\): no videos found in .*found 1 other, e.g. "
                             r"readme.txt"):
        VideoScenes(str(tmp_path))
    with pytest.raises(DatasetArgumentError, match=r"no videos found in .* matching '\*.mov'"):
        VideoScenes(f"{tmp_path}/*.mov")
    with pytest.raises(DatasetArgumentError, match=r"the glob's folder .* does not exist"):
        VideoScenes(f"{tmp_path}/missing/*.mp4")


def test_importing_the_datasets_decodes_nothing() -> None:
    code = ("import sys, pytest_vlmbench.datasets as d; d.get_dataset; "
            "print(sorted(m for m in ('cv2', 'numpy', 'scenedetect', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# --- time, not frame counts: variable frame rates and frames that do not decode ----------

_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _mp4_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield start, size, kind
        start += size


def _retime(data: bytes, start: int, end: int, slow_from: int) -> bytes:
    """The MP4 with its sample durations (`stts`) rewritten: every frame from
    `slow_from` on is shown twice as long, as a variable-frame-rate recording's are."""
    out = b""
    for at, size, kind in _mp4_boxes(data, start, end):
        body = data[at + 8:at + size]
        if kind in _MP4_CONTAINERS:
            body = _retime(data, at + 8, at + size, slow_from)
        elif kind == b"stts":
            _version, entries, count, delta = struct.unpack(">IIII", body[:16])
            assert entries == 1
            body = struct.pack(">IIIIII", 0, 2, slow_from, delta, count - slow_from, 2 * delta)
        out += struct.pack(">I4s", 8 + len(body), kind) + body
    return out


def test_a_variable_frame_rate_video_is_placed_by_time(tmp_path: Path) -> None:
    """Frames 24 on are shown for 2/24 s: the average rate is no longer any frame's, so
    scenes, sampled frames and the duration come from the frames' times. Each scene's
    frames are its own colour (counting frames at the average rate sent later scenes
    the frames of earlier ones)."""
    segments = [Segment(PALETTE["red"], 24), Segment(PALETTE["blue"], 12),
                Segment(PALETTE["yellow"], 12), Segment(PALETTE["green"], 48)]
    plain = tmp_path / "plain.mp4"
    write_video(plain, segments, fps=FPS, size=(160, 90))
    data = plain.read_bytes()
    kinds = [kind for _, _, kind in _mp4_boxes(data, 0, len(data))]
    assert kinds.index(b"moov") > kinds.index(b"mdat")  # chunk offsets stay valid
    vfr = tmp_path / "vfr.mp4"
    vfr.write_bytes(_retime(data, 0, len(data), slow_from=24))
    # The container still says 4 s (only the sample durations were rewritten): OpenCV
    # decodes the frames shown in those 4 s, green's first 12.
    dataset = VideoScenes(vfr, frames="start,middle,end", layout="images")
    samples = list(dataset.samples())
    # Cuts at frames 24, 36, 48 are shown at 1 s, 1 + 12 * 2/24 = 2 s and 3 s.
    assert [s.scene["start_s"] for s in samples if s.scene] == pytest.approx([0, 1, 2, 3])
    [info] = dataset.video_ref()["videos"]
    assert info["frames"] == 24 + 12 + 12 + 12
    assert info["fps"] is not None
    assert info["duration_s"] == pytest.approx(3 + 11 * 2 / FPS + 1 / info["fps"])
    assert info["duration_s"] != pytest.approx(info["frames"] / info["fps"])
    for sample, segment in zip(samples, segments, strict=True):
        assert sample.prepare is not None
        assert sample.scene is not None
        start, middle, end = sample.scene["frames_s"]
        assert sample.scene["start_s"] == start < middle < end < sample.scene["end_s"]
        for image in sample.prepare(ImagePrep(long_edge=64)):
            assert near(colour_at(image.jpeg, 2, 2), segment.colour)


def test_a_frame_that_does_not_decode_costs_that_frame_alone(tmp_path: Path) -> None:
    """One MJPEG frame's data zeroed: the frames after it keep their places (they are
    found by time) and every scene still gets its own frames."""
    segments = [Segment(PALETTE["red"], 24), Segment(PALETTE["blue"], 24),
                Segment(PALETTE["yellow"], 24)]
    source = tmp_path / "src.avi"
    write_video(source, segments, fps=FPS, size=(160, 90))
    data = bytearray(source.read_bytes())
    frames = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(frames) == 72
    broken = 30  # inside the second scene, not one of its sampled frames
    data[frames[broken] + 2:frames[broken + 1] - 8] = bytes(
        frames[broken + 1] - 8 - frames[broken] - 2)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    dataset = VideoScenes(bad, layout="images")
    samples = list(dataset.samples())
    assert [round(s.scene["start_s"] * FPS) for s in samples if s.scene] == [0, 24, 48]
    for sample, segment in zip(samples, segments, strict=True):
        assert sample.prepare is not None
        for image in sample.prepare(ImagePrep(long_edge=64)):
            assert near(colour_at(image.jpeg, 2, 2), segment.colour)
    [info] = dataset.video_ref()["videos"]
    assert info["error"] is None
