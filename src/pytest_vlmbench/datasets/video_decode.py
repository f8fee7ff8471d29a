"""Which frames of a scene are sampled, and the decoding passes that find scenes and
extract those frames, once per video per process (datasets/video.py builds on them).

Each pass is timed on its own with ``perf_counter_ns`` and cached under the video's
resolved path, size and mtime and the detector's settings (extraction also under the
sampling): the detection pass runs every frame through PySceneDetect's detector; the
extraction pass is one sequential ``cv2.VideoCapture`` pass that grabs every frame up to
the last sampled one and retrieves only the sampled ones, kept as lossless PNG. cv2 and
scenedetect are imported inside the passes (the ``video`` extra).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_vlmbench.datasets import DatasetArgumentError

__all__ = [
    "DEFAULT_FRAMES",
    "POINTS",
    "DetectKey",
    "Detection",
    "Extraction",
    "Sampling",
    "clear_cache",
    "decode_counts",
    "detect",
    "extract",
    "frame_positions",
    "parse_frames",
]

POINTS = ("start", "middle", "end")
DEFAULT_FRAMES = "start,middle"


# --- sampling ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampling:
    """A parsed ``frames=`` spec: named points, N evenly spaced, or one every k seconds."""

    text: str
    points: tuple[str, ...] = ()
    count: int = 0
    every_s: float = 0.0

    def positions(self, start: int, end: int, fps: float) -> list[int]:
        length = end - start
        if length < 1:
            raise ValueError(f"a scene has at least one frame (got {start}..{end})")
        if self.points:
            found = {"start": start, "middle": start + length // 2, "end": end - 1}
            chosen = {found[point] for point in self.points}
        elif self.count:
            chosen = {start + (2 * i + 1) * length // (2 * self.count)
                      for i in range(self.count)}
        else:
            if not fps > 0:
                raise ValueError(f"every:{self.every_s}s needs the video's frame rate")
            step = self.every_s * fps
            if step <= 1:
                return list(range(start, end))
            chosen = {start + math.floor(i * step + 1e-9)
                      for i in range(math.ceil(length / step))}
            chosen = {p for p in chosen if p < end}
        return sorted(chosen)

    @property
    def most(self) -> int | None:
        """The most frames a scene can get, where known without the scenes."""
        return len(self.points) if self.points else self.count or None


def parse_frames(spec: object) -> Sampling:
    """Parse ``frames=``; ValueError with the reason for a bad spec."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise ValueError("frames must be 'start', 'middle', 'end' or a combination such as "
                         "'start,middle', a number of frames, or 'every:2s'")
    if isinstance(spec, int) or spec.strip().isdigit():
        count = int(spec)
        if count < 1:
            raise ValueError("frames as a number must be at least 1")
        return Sampling(text=str(count), count=count)
    text = spec.strip().lower()
    if text.startswith("every:"):
        value = text.removeprefix("every:").strip()
        try:
            seconds = float(value.removesuffix("s"))
        except ValueError:
            seconds = math.nan
        if not value.endswith("s") or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError("frames='every:<seconds>s' takes a positive number of seconds, "
                             "e.g. 'every:2s' or 'every:0.5s'")
        shown = str(int(seconds)) if seconds.is_integer() else repr(seconds)
        return Sampling(text=f"every:{shown}s", every_s=seconds)
    words = [word.strip() for word in text.split(",")]
    unknown = [word for word in words if word not in POINTS]
    if unknown or not words:
        raise ValueError(f"unknown frame {unknown[0]!r}: use 'start', 'middle', 'end' or a "
                         f"combination such as 'start,middle', a number of evenly spaced "
                         f"frames, or 'every:2s'")
    if len(set(words)) != len(words):
        raise ValueError("each of start, middle and end may be named once")
    points = tuple(point for point in POINTS if point in words)
    return Sampling(text=",".join(points), points=points)


def frame_positions(spec: str | int, start_frame: int, end_frame: int,
                    fps: float) -> list[int]:
    """The frames sampled from a scene ``[start_frame, end_frame)`` at ``fps``, sorted,
    each once:

    - ``"start"``: ``start_frame``; ``"end"``: ``end_frame - 1``; ``"middle"``: the frame
      shown at the scene's midpoint in time, ``start_frame + (end_frame - start_frame)
      // 2``; a combination (``"start,middle"``, ``"start,middle,end"``) gives those, in
      time order whatever order they are written in;
    - ``N`` (an int or its digits): the centres of N equal parts of the scene,
      ``start_frame + floor((i + 0.5) * length / N)`` for i in 0..N-1;
    - ``"every:2s"`` / ``"every:0.5s"``: ``start_frame + floor(i * k * fps)`` for
      i = 0, 1, ... while inside the scene.

    A frame named twice (a 1-frame scene's start and end, more parts than frames) is
    kept once. A bad spec is a `DatasetArgumentError` naming it.

    Example::

        frame_positions("start,middle", 48, 84, 24.0)  # [48, 66]
    """
    try:
        sampling = parse_frames(spec)
    except ValueError as exc:
        raise DatasetArgumentError(f"frames={spec!r}: {exc}") from None
    return sampling.positions(start_frame, end_frame, fps)


# --- decoding, once per process ----------------------------------------------------------

@dataclass(frozen=True)
class Detection:
    """One video's detection pass: its stream facts and scenes (frame spans, end
    exclusive, counted from its first decoded frame), or why it could not be decoded."""

    fps: float | None
    frames: int
    width: int | None
    height: int | None
    scenes: tuple[tuple[int, int], ...]
    min_scene_frames: int | None
    detect_ns: int | None
    error: str | None


@dataclass(frozen=True)
class Extraction:
    """The sampled frames (position -> lossless PNG at the source resolution)."""

    frames: Mapping[int, bytes]
    extract_ns: int
    error: str | None


DetectKey = tuple[str, int, int, str, float, float]
_LOCK = threading.Lock()
_DETECTIONS: dict[DetectKey, Detection] = {}
_EXTRACTIONS: dict[tuple[DetectKey, str], Extraction] = {}
_COUNTS = {"detections": 0, "extractions": 0}


def decode_counts() -> dict[str, int]:
    """How many detection and extraction passes this process has run (the cache's
    misses): a second `samples()` or `video_ref()` adds none."""
    with _LOCK:
        return dict(_COUNTS)


def clear_cache() -> None:
    """Forget every decoded video (tests; a long-lived process that edits videos in place
    needs nothing: a changed size or mtime is another key)."""
    with _LOCK:
        _DETECTIONS.clear()
        _EXTRACTIONS.clear()


def _quiet() -> None:
    """Keep the libraries' own chatter about a bad file off the user's terminal: the
    dataset reports it once, as a note and a failed sample. PySceneDetect logs through a
    logger it leaves without handlers (so Python's last-resort handler printed it), and
    FFmpeg prints from C unless OpenCV sets its level (``OPENCV_FFMPEG_LOGLEVEL``; a
    value the user set is kept)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    library = logging.getLogger("pyscenedetect")
    if not library.handlers:
        library.addHandler(logging.NullHandler())


def detect(file: Path, key: DetectKey) -> Detection:
    with _LOCK:
        found = _DETECTIONS.get(key)
        if found is None:
            found = _DETECTIONS[key] = _run_detection(file, key[3], key[4], key[5])
            _COUNTS["detections"] += 1
        return found


def _run_detection(file: Path, detector: str, threshold: float,
                   min_scene_s: float) -> Detection:
    # Imported before the clock starts: the first import costs ~1 s, not the video's.
    import scenedetect

    _quiet()
    start = time.perf_counter_ns()
    fps: float | None = None
    error: str | None = None
    try:
        if file.stat().st_size == 0:
            raise _Undecodable("file is empty (0 bytes)")
        video = scenedetect.open_video(str(file), backend="opencv")
        try:
            fps = float(video.frame_rate)
            width, height = video.frame_size
            min_frames = max(0, math.ceil(min_scene_s * fps - 1e-9))
            manager = scenedetect.SceneManager()
            if detector == "content":
                manager.add_detector(scenedetect.ContentDetector(
                    threshold=threshold, min_scene_len=min_frames))
            else:
                manager.add_detector(scenedetect.AdaptiveDetector(
                    adaptive_threshold=threshold, min_scene_len=min_frames))
            decoded = int(manager.detect_scenes(video))
            spans = [(int(first.frame_num), int(last.frame_num))
                     for first, last in manager.get_scene_list(start_in_scene=True)]
        finally:
            video.capture.release()
        if decoded < 1 or not spans:
            raise _Undecodable("no frame could be decoded")
    except _Undecodable as exc:
        error = str(exc)
    except scenedetect.VideoOpenFailure:
        error = ("cannot open it as a video (not a video, truncated, or a codec this "
                 "OpenCV build lacks)")
    except OSError as exc:
        error = f"cannot read file ({exc.strerror or exc})"
    except Exception as exc:  # cv2.error, a detector's failure: this video, not the run
        error = f"cannot decode video ({type(exc).__name__}: {exc})"
    elapsed = time.perf_counter_ns() - start
    if error is not None:
        return Detection(fps=None, frames=0, width=None, height=None, scenes=(),
                          min_scene_frames=None, detect_ns=elapsed, error=error)
    origin = spans[0][0]  # positions count from the first decoded frame, as grab() does
    return Detection(fps=fps, frames=decoded, width=width, height=height,
                      scenes=tuple((a - origin, b - origin) for a, b in spans),
                      min_scene_frames=min_frames, detect_ns=elapsed, error=None)


class _Undecodable(Exception):
    """A video that opened (or not) but gave no frames; the message is the reason."""


def extract(file: Path, key: DetectKey, sampling: Sampling,
             detection: Detection) -> Extraction:
    with _LOCK:
        found = _EXTRACTIONS.get((key, sampling.text))
        if found is None:
            wanted: set[int] = set()
            assert detection.fps is not None
            for first, last in detection.scenes:
                wanted.update(sampling.positions(first, last, detection.fps))
            found = _run_extraction(file, wanted, detection.frames)
            _EXTRACTIONS[(key, sampling.text)] = found
            _COUNTS["extractions"] += 1
        return found


def _run_extraction(file: Path, wanted: set[int], frames: int) -> Extraction:
    import cv2

    _quiet()
    start = time.perf_counter_ns()
    kept: dict[int, bytes] = {}
    error: str | None = None
    last = max(wanted)
    capture = cv2.VideoCapture(str(file), cv2.CAP_ANY)  # as PySceneDetect opens it
    try:
        if not capture.isOpened():
            raise _Undecodable("cannot open it again to extract frames")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1.0)  # as PySceneDetect's pass does
        for position in range(last + 1):
            if not capture.grab():
                raise _Undecodable(
                    f"the extraction pass decoded only {position} frames of the {frames} "
                    f"the detection pass did")
            if position in wanted:
                retrieved, image = capture.retrieve()
                if not retrieved:
                    raise _Undecodable(f"cannot decode frame {position}")
                encoded, png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                if not encoded:
                    raise _Undecodable(f"cannot keep frame {position} as PNG")
                kept[position] = png.tobytes()
    except _Undecodable as exc:
        error = str(exc)
    except Exception as exc:  # cv2.error: this video, not the run
        error = f"cannot decode video ({type(exc).__name__}: {exc})"
    finally:
        capture.release()
    return Extraction(frames=kept, extract_ns=time.perf_counter_ns() - start, error=error)
