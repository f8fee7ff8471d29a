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

import bisect
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    "quiet",
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

    def positions_in_time(self, start: int, end: int, times: Sequence[float],
                          duration_s: float) -> list[int]:
        """`positions` for frames at the given times (a variable-rate video): the scene's
        start and end frames, and for "middle", N evenly spaced and every:k the frame
        shown at that time (the last one at or before it), each once, sorted."""
        if end - start < 1:
            raise ValueError(f"a scene has at least one frame (got {start}..{end})")
        t0 = times[start]
        t1 = times[end] if end < len(times) else duration_s

        def shown(t: float) -> int:
            return min(end - 1, max(start, bisect.bisect_right(times, t + 1e-9) - 1))

        if self.points:
            found = {"start": start, "middle": shown((t0 + t1) / 2), "end": end - 1}
            chosen = {found[point] for point in self.points}
        elif self.count:
            chosen = {shown(t0 + (i + 0.5) * (t1 - t0) / self.count)
                      for i in range(self.count)}
        else:
            count = max(1, math.ceil((t1 - t0) / self.every_s - 1e-9))
            chosen = {shown(t0 + i * self.every_s) for i in range(count)}
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
    """One video's detection pass: its stream facts, each decoded frame's time and the
    scenes as spans of decoded frames (end exclusive, counted from the first decoded
    frame), or why it could not be decoded.

    Times are the frames' presentation times (OpenCV's ``CAP_PROP_POS_MSEC``, as
    PySceneDetect reads them), from the first frame: in a variable-frame-rate video, or
    one with gaps, frame i is not at i / fps, so scenes, sampled frames and the duration
    are placed by time, never by a count times the average rate."""

    fps: float | None
    frames: int
    width: int | None
    height: int | None
    scenes: tuple[tuple[int, int], ...]
    min_scene_frames: int | None
    detect_ns: int | None
    error: str | None
    times: tuple[float, ...] = ()

    @property
    def frame_s(self) -> float:
        """The average frame duration (1 / fps): how long the last frame is shown."""
        return 1.0 / self.fps if self.fps else 0.0

    def time_of(self, index: int) -> float:
        """When decoded frame `index` is shown (s from the first frame); the end of the
        video for index == frames."""
        if index >= len(self.times):
            return self.duration_s
        return self.times[index]

    @property
    def duration_s(self) -> float:
        """The last frame's time plus one average frame: decoded frames / fps for a
        constant-rate video."""
        return self.times[-1] + self.frame_s if self.times else 0.0

    @functools.cached_property
    def constant_rate(self) -> bool:
        """Every frame within half a frame of i / fps: positions are counted in frames.
        Read once per detection (a pass over every frame's time), not once per scene."""
        step = self.frame_s
        return all(abs(t - i * step) <= step / 2 for i, t in enumerate(self.times))

    def positions(self, sampling: Sampling, index: int) -> list[int]:
        """The decoded frames `sampling` picks from scene `index`: by frame arithmetic
        at a constant rate (`Sampling.positions`), else the frame shown at each time."""
        first, last = self.scenes[index]
        if self.constant_rate:
            return sampling.positions(first, last, self.fps or 0.0)
        return sampling.positions_in_time(first, last, self.times, self.duration_s)


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


def quiet() -> None:
    """Keep the libraries' own chatter about a bad file off the user's terminal: the
    dataset reports it once, as a note and a failed sample. PySceneDetect logs through a
    logger it leaves without handlers (so Python's last-resort handler printed it), and
    FFmpeg prints from C unless OpenCV sets its level (``OPENCV_FFMPEG_LOGLEVEL``; a
    value the user set is kept). OpenCV reads that level when its FFmpeg first runs in the
    process, so everything here that opens a video calls this first (the demo video's
    writer too)."""
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

    quiet()
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
            stamps: list[float] = []
            read = video.read

            def timed_read(decode: bool = True) -> Any:
                frame = read(decode)
                if frame is not False:  # the decoded frame's presentation time
                    stamps.append(float(video.position.seconds))
                return frame

            video.read = timed_read  # the decode thread reads through it
            decoded = int(manager.detect_scenes(video))
            cuts = [float(first.seconds) for first, _ in
                    manager.get_scene_list(start_in_scene=True)]
        finally:
            video.capture.release()
        if decoded < 1 or not stamps or not cuts:
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
    origin = stamps[0]  # times count from the first decoded frame
    times = tuple(t - origin for t in stamps)
    # Each scene starts at the decoded frame shown at its cut's time (nearest: the cut is
    # one of the frames just timed) and ends where the next starts.
    starts = sorted({_nearest(times, cut - origin) for cut in cuts} | {0})
    ends = [*starts[1:], len(times)]
    return Detection(fps=fps, frames=len(times), width=width, height=height,
                     scenes=tuple(zip(starts, ends, strict=True)),
                     min_scene_frames=min_frames, detect_ns=elapsed, error=None,
                     times=times)


def _nearest(times: Sequence[float], t: float) -> int:
    """The index of the time in sorted `times` closest to `t`."""
    right = bisect.bisect_left(times, t)
    if right == 0:
        return 0
    if right == len(times):
        return len(times) - 1
    return right if times[right] - t < t - times[right - 1] else right - 1


class _Undecodable(Exception):
    """A video that opened (or not) but gave no frames; the message is the reason."""


def extract(file: Path, key: DetectKey, sampling: Sampling,
            detection: Detection) -> Extraction:
    with _LOCK:
        found = _EXTRACTIONS.get((key, sampling.text))
        if found is None:
            wanted: set[int] = set()
            for index in range(len(detection.scenes)):
                wanted.update(detection.positions(sampling, index))
            found = _run_extraction(file, wanted, detection)
            _EXTRACTIONS[(key, sampling.text)] = found
            _COUNTS["extractions"] += 1
        return found


_DECODE_ATTEMPTS = 5  # a frame that fails to decode is retried, as PySceneDetect does


def _run_extraction(file: Path, wanted: set[int], detection: Detection) -> Extraction:
    """The wanted frames (decoded-frame indices of the detection pass), found by their
    time, so that a frame that fails to decode costs that frame alone, not every later
    one. The clock stops around the lossless copy kept in memory (a cost of this tool's
    cache, not of a video pipeline's extraction)."""
    import cv2

    quiet()
    start = time.perf_counter_ns()
    keeping = 0
    kept: dict[int, bytes] = {}
    error: str | None = None
    times, half = detection.times, detection.frame_s / 2
    last_time = max(times[i] for i in wanted) if wanted else -1.0
    capture = cv2.VideoCapture(str(file), cv2.CAP_ANY)  # as PySceneDetect opens it
    try:
        if not capture.isOpened():
            raise _Undecodable("cannot open it again to extract frames")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1.0)  # as PySceneDetect's pass does
        origin: float | None = None
        while len(kept) < len(wanted):
            if not any(capture.grab() for _ in range(_DECODE_ATTEMPTS)):
                break  # the end, or nothing more decodes
            now = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            origin = now if origin is None else origin
            t = now - origin
            index = _nearest(times, t)
            if index in wanted and index not in kept and abs(times[index] - t) <= half:
                retrieved, image = capture.retrieve()
                if retrieved:
                    t_keep = time.perf_counter_ns()
                    encoded, png = cv2.imencode(".png", image,
                                                [cv2.IMWRITE_PNG_COMPRESSION, 1])
                    if encoded:
                        kept[index] = png.tobytes()
                    keeping += time.perf_counter_ns() - t_keep
            if t > last_time + half:
                break
    except _Undecodable as exc:
        error = str(exc)
    except Exception as exc:  # cv2.error: this video, not the run
        error = f"cannot decode video ({type(exc).__name__}: {exc})"
    finally:
        capture.release()
    return Extraction(frames=kept, extract_ns=time.perf_counter_ns() - start - keeping,
                      error=error)


