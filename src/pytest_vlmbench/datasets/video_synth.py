"""Generated videos with known cuts: the shipped demo video and the tests' clips.

A video is a list of `Segment`s, each a plain background colour with a circle and a
square moving across it in a contrasting colour, so that frames within a scene differ
(a detector that cut on any change would be caught) while the cuts stay where the
segments meet. A segment may start with a dissolve: a cross-fade from the previous
segment, whose shapes keep moving under it, as an editor's dissolve does.

Frames are drawn with OpenCV (no anti-aliasing, integer positions), so the same
segments give the same pixels everywhere; the file is written by OpenCV's encoder
("mp4v" in ``.mp4``), whose bytes may differ between OpenCV/FFmpeg builds. cv2 and
numpy are imported inside the functions: they come with the ``video`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy

__all__ = [
    "DEMO_FPS",
    "DEMO_SEGMENTS",
    "DEMO_SIZE",
    "GENERATOR_VERSION",
    "Segment",
    "demo_video",
    "render_frame",
    "write_video",
]

# Bump whenever the same segments would draw different frames (or the demo changes).
GENERATOR_VERSION = 1

DEMO_FPS = 24
DEMO_SIZE = (320, 180)


@dataclass(frozen=True)
class Segment:
    """A stretch of one background colour (RGB): ``frames`` long, its first ``dissolve``
    frames a cross-fade from the previous segment (counted inside this segment, so the
    cut's known frame is the segment's first frame either way)."""

    colour: tuple[int, int, int]
    frames: int
    dissolve: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"Segment(frames={self.frames!r}): a segment needs a frame")
        if not 0 <= self.dissolve < self.frames:
            raise ValueError(
                f"Segment(dissolve={self.dissolve!r}): a dissolve is 0 to frames-1 frames "
                f"long (the segment has {self.frames})")
        if len(self.colour) != 3 or any(not 0 <= c <= 255 for c in self.colour):
            raise ValueError(f"Segment(colour={self.colour!r}): colour is RGB, 0-255 each")


# Six hard cuts' worth of contrasting backgrounds, about 12 s at 24 fps.
DEMO_SEGMENTS: tuple[Segment, ...] = (
    Segment((200, 40, 40), 48),     # red, 2.0 s
    Segment((30, 90, 210), 36),     # blue, 1.5 s
    Segment((240, 210, 40), 60),    # yellow, 2.5 s
    Segment((30, 150, 70), 42),     # green, 1.75 s
    Segment((40, 40, 40), 54),      # near black, 2.25 s
    Segment((235, 235, 235), 48),   # near white, 2.0 s
)


def _contrast(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (Rec. 601 luma)."""
    red, green, blue = colour
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue >= 128 else (255, 255, 255)


def render_frame(colour: tuple[int, int, int], index: int, length: int,
                 size: tuple[int, int]) -> numpy.ndarray[Any, Any]:
    """Frame ``index`` of a ``length``-frame segment of ``colour`` (RGB), as a BGR array
    (OpenCV's order): the circle moves left to right along the upper third, the square
    right to left along the lower third, each across 60% of the width over the segment
    (and on past it, for a dissolve's outgoing frames)."""
    import cv2
    import numpy

    width, height = size
    frame = numpy.empty((height, width, 3), numpy.uint8)
    frame[:] = colour[::-1]
    ink = _contrast(colour)[::-1]
    side = max(2, height // 5)
    travel = width * 0.6 * index / max(1, length)
    circle_x = round(width * 0.2 + travel)
    square_x = round(width * 0.8 - travel)
    cv2.circle(frame, (circle_x, height // 3), side // 2, ink, -1, cv2.LINE_8)
    top = 2 * height // 3 - side // 2
    cv2.rectangle(frame, (square_x - side // 2, top), (square_x + side // 2, top + side),
                  ink, -1, cv2.LINE_8)
    return frame


def _frames(segments: Sequence[Segment], size: tuple[int, int]) -> list[numpy.ndarray[Any, Any]]:
    import numpy

    frames: list[numpy.ndarray[Any, Any]] = []
    previous: Segment | None = None
    for segment in segments:
        for index in range(segment.frames):
            frame = render_frame(segment.colour, index, segment.frames, size)
            if previous is not None and index < segment.dissolve:
                # Linear cross-fade: weight (index + 1) / (dissolve + 1) on the new frame, so
                # neither end of the dissolve is a pure frame of either segment.
                outgoing = render_frame(previous.colour, previous.frames + index,
                                        previous.frames, size)
                weight = (index + 1) / (segment.dissolve + 1)
                blend = outgoing * (1.0 - weight) + frame * weight
                frame = numpy.rint(blend).astype(numpy.uint8)
            frames.append(frame)
        previous = segment
    return frames


def write_video(path: str | os.PathLike[str], segments: Sequence[Segment], *, fps: int = 24,
                size: tuple[int, int] = (320, 180)) -> list[int]:
    """Write ``segments`` to ``path`` (".mp4": "mp4v"; ".avi": "MJPG") atomically
    (a temporary file beside it, then a rename) and return the known cut frames: the
    first frame of every segment after the first.

    Example::

        cuts = write_video("clip.mp4", [Segment((255, 0, 0), 24), Segment((0, 0, 255), 24)])
        assert cuts == [24]
    """
    from pytest_vlmbench.datasets.video_decode import quiet

    quiet()  # before OpenCV's FFmpeg first runs: it reads its log level once
    import cv2

    if not segments:
        raise ValueError("write_video: give at least one segment")
    if segments[0].dissolve:
        raise ValueError("write_video: the first segment has nothing to dissolve from")
    target = Path(path)
    fourcc = "MJPG" if target.suffix.lower() == ".avi" else "mp4v"
    # The temporary name keeps the suffix: OpenCV picks the container from it.
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter.fourcc(*fourcc),
                                 float(fps), size)
        try:
            if not writer.isOpened():
                raise OSError(f"{target}: OpenCV cannot write {fourcc} video here")
            for frame in _frames(segments, size):
                writer.write(frame)
        finally:
            writer.release()
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    cuts, start = [], 0
    for segment in segments[:-1]:
        start += segment.frames
        cuts.append(start)
    return cuts


def demo_video(cache_dir: str | os.PathLike[str]) -> Path:
    """The shipped benchmark's video (`DEMO_SEGMENTS`: 6 scenes, 12 s at 24 fps,
    320x180, hard cuts at 2.0, 3.5, 6.0, 7.75 and 10.0 s), written once under
    ``cache_dir`` and reused.

    Its frames are the same everywhere; its bytes (and so the dataset fingerprint) are
    the same only between machines whose OpenCV encodes "mp4v" alike, since the file is
    encoded here rather than shipped.
    """
    folder = Path(cache_dir)
    path = folder / f"vlmbench-demo-v{GENERATOR_VERSION}.mp4"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_video(path, DEMO_SEGMENTS, fps=DEMO_FPS, size=DEMO_SIZE)
    return path
