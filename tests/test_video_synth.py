"""The video generator (datasets/video_synth.py): known cuts, deterministic frames,
atomic writes and the cached demo video, read back with OpenCV's real decoder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy
import pytest

from pytest_vlmbench.datasets.video_synth import (
    DEMO_SEGMENTS,
    GENERATOR_VERSION,
    Segment,
    demo_video,
    render_frame,
    write_video,
)

RED, BLUE = (200, 40, 40), (30, 90, 210)


def read_frames(path: Path) -> list[numpy.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_write_video_returns_the_cuts_and_writes_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    cuts = write_video(path, [Segment(RED, 10), Segment(BLUE, 7), Segment(RED, 5)],
                       fps=12, size=(64, 48))
    assert cuts == [10, 17]
    frames = read_frames(path)
    assert len(frames) == 22
    assert frames[0].shape == (48, 64, 3)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12)
    capture.release()
    # The background (a corner, away from the shapes) is the segment's colour (BGR).
    assert numpy.abs(frames[0][2, 2].astype(int) - RED[::-1]).max() < 12
    assert numpy.abs(frames[12][2, 2].astype(int) - BLUE[::-1]).max() < 12
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_frames_within_a_segment_move() -> None:
    first = render_frame(RED, 0, 24, (64, 48))
    later = render_frame(RED, 12, 24, (64, 48))
    assert first.shape == (48, 64, 3)
    assert (first != later).any()
    assert (first == render_frame(RED, 0, 24, (64, 48))).all()


def test_a_dissolve_blends_the_two_segments(tmp_path: Path) -> None:
    path = tmp_path / "fade.avi"  # MJPG: close to the drawn pixels
    write_video(path, [Segment((0, 0, 0), 4), Segment((240, 240, 240), 6, dissolve=3)],
                size=(64, 48))
    corner = [int(frame[2, 2, 0]) for frame in read_frames(path)]
    assert corner[:4] == pytest.approx([0] * 4, abs=6)
    assert corner[4:7] == pytest.approx([60, 120, 180], abs=8)
    assert corner[7:] == pytest.approx([240] * 3, abs=6)


def test_bad_segments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a frame"):
        Segment(RED, 0)
    with pytest.raises(ValueError, match="dissolve"):
        Segment(RED, 4, dissolve=4)
    with pytest.raises(ValueError, match="RGB"):
        Segment((300, 0, 0), 4)
    with pytest.raises(ValueError, match="nothing to dissolve from"):
        write_video(tmp_path / "x.mp4", [Segment(RED, 4, dissolve=2)])
    with pytest.raises(ValueError, match="at least one segment"):
        write_video(tmp_path / "x.mp4", [])


def test_demo_video_is_written_once_and_reused(tmp_path: Path) -> None:
    path = demo_video(tmp_path / "cache")
    assert path.name == f"vlmbench-demo-v{GENERATOR_VERSION}.mp4"
    written = path.stat().st_mtime_ns
    assert demo_video(tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == written
    assert len(read_frames(path)) == sum(s.frames for s in DEMO_SEGMENTS) == 288
