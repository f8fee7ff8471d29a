"""Video scenes: videos split into scenes by PySceneDetect, a few frames of each sent
to a model, so a benchmark measures what a video pipeline pays per scene.

Decoding is OpenCV's (headless) through PySceneDetect's ``opencv`` backend; both come
with the ``video`` extra and are imported inside the functions that decode, so
``import pytest_vlmbench.datasets`` stays cheap. Each video is decoded at most twice per
process, each pass timed on its own with ``perf_counter_ns`` and cached: the detection
pass (every frame through the detector) and the extraction pass (one sequential
``cv2.VideoCapture`` pass that grabs every frame up to the last sampled one and
retrieves only the sampled ones). Neither runs inside a request: the runner asks for
`VideoScenes.video_ref` before measuring. The passes and the sampling rule live in
video_decode.py; the layouts in frames.py.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
import math
import os
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from pytest_vlmbench.datasets import (
    DatasetArgumentError,
    ImageError,
    ImagePrep,
    PreparedImage,
    Sample,
    Selection,
)
from pytest_vlmbench.datasets.frames import LAYOUTS, Layout, lay_out
from pytest_vlmbench.datasets.images import file_digest, match_glob, some_of
from pytest_vlmbench.datasets.video_decode import (
    DEFAULT_FRAMES,
    Detection,
    DetectKey,
    Extraction,
    clear_cache,
    decode_counts,
    detect,
    extract,
    frame_positions,
    parse_frames,
)

if TYPE_CHECKING:
    from pytest_vlmbench.results.models import SceneRef, VideoInfo, VideoRef

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DETECTORS",
    "FRAMES_VERSION",
    "VideoScenes",
    "clear_cache",
    "decode_counts",
    "frame_positions",
]

# Bump when the same video, detector settings, sampling and layout would show a model
# different pixels (another sampling rule, another layout drawing).
FRAMES_VERSION = 1

DETECTORS: Mapping[str, float] = {"content": 27.0, "adaptive": 3.0}
"""The detectors and their default thresholds (PySceneDetect's own defaults)."""

# Containers OpenCV's FFmpeg reads in a stock wheel; pass extensions= for others.
DEFAULT_EXTENSIONS = (".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm",
                      ".wmv")

_MAGIC = ("*", "?", "[")
_NAMED = 3


# --- the dataset -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Video:
    id: str
    file: Path


@functools.cache
def _library() -> str:
    """The detector and the decoder as recorded (both decide the scenes and the pixels,
    and so are in the fingerprint): ``scenedetect 0.7.2, opencv-python-headless 5.1.0.95``."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for names in (("scenedetect",), ("opencv-python-headless", "opencv-python")):
        for name in names:
            try:
                found.append(f"{name} {version(name)}")
                break
            except PackageNotFoundError:
                continue
        else:
            found.append(f"{names[0]} (version unknown)")
    return ", ".join(found)


class VideoScenes:
    """The scenes of one video, a folder of videos or a glob, one sample per scene.

    ``path``: a video file (any extension), a folder (its videos by ``extensions``,
    sorted; ``recursive`` as `FolderDataset`; hidden files skipped) or a glob such as
    ``clips/**/*.mp4`` (its folders up to the first wildcard are the root). A video's id
    is its file name, or its path relative to the root where two names clash.

    Scenes: PySceneDetect's ``content`` detector (``threshold`` on the mean HSV change
    between consecutive frames, default 27) or ``adaptive`` one (``threshold`` on that
    change relative to its neighbours, default 3), with no scene shorter than
    ``min_scene_s`` (converted to frames at each video's rate, rounded up). A video
    without a cut is one scene covering all of it.

    Gradual transitions, measured on generated dissolves (`video_synth`: colour fields
    with moving shapes, 64x48 to 320x180, 1 to 12 frames): a dissolve of d frames
    starting at frame s, when it is cut at all, is cut once (while ``min_scene_s`` is
    longer than the dissolve, as by default) at a frame from s to s + d: inside the
    dissolve or on the first frame after it, never further, by either detector. With
    the content detector at its default threshold, a dissolve of up to 2 frames between
    shots whose hard cut scores at least 75 (about 2.8x the threshold; black to white
    scores 79) is always cut; longer dissolves may be missed, and the two shots are then
    one scene (black to white over 4 frames or more is). Fades between a dark shot and a
    saturated one (red, blue, yellow) are cut at every length tested (4, 8, 12 frames),
    from dark on the dissolve's first frame, because saturation jumps there. The
    adaptive detector finds a different set of dissolves.

    ``frames``: which frames of a scene are sent (`frame_positions`): ``"start"``,
    ``"middle"``, ``"end"`` or a combination (``"start,middle"``, the default), a number
    N of evenly spaced frames, or ``"every:2s"``. ``layout``: how they are sent
    (`frames.lay_out`): ``"images"`` (one image per frame), ``"panorama"``, ``"grid"``,
    ``"middle"`` (the scene's middle frame alone, whatever ``frames`` says, so it takes
    only the default or ``"middle"``), or ``"auto"``: `for_model` chooses images for a
    model taking enough images and a panorama otherwise (before that, images).

    Each video is decoded once per process for detection and once for extraction
    (cached by path, size, mtime and settings; `video_ref` runs both and reports their
    times). The sampled frames are kept in memory as lossless PNG (compression level 1)
    at the source resolution, so preparing a request decodes a PNG, never the video. A
    video that cannot be decoded gives one sample, ``<id>/undecodable``, whose request
    fails with a line starting with the file's path; the others go on, and `notes` says
    so.

    Example::

        VideoScenes("clips/", frames=4, layout="grid")
    """

    name: str = "video"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        detector: str = "content",
        threshold: float | None = None,
        min_scene_s: float = 0.5,
        frames: str | int = DEFAULT_FRAMES,
        layout: str = "auto",
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        recursive: bool = True,
    ) -> None:
        given = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
        call = f"VideoScenes({given!r})"
        if not isinstance(path, (str, os.PathLike)):
            raise DatasetArgumentError(
                f"{call}: path must be a video file, a folder or a glob (a str or a Path), "
                f"got {type(path).__name__}")
        if not isinstance(detector, str) or detector not in DETECTORS:
            raise DatasetArgumentError(
                f"VideoScenes({given!r}, detector={detector!r}): detector must be one of "
                f"{', '.join(DETECTORS)}")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold) or threshold <= 0):
            raise DatasetArgumentError(
                f"VideoScenes({given!r}, threshold={threshold!r}): threshold must be a "
                f"positive number (or None for the detector's default)")
        if (isinstance(min_scene_s, bool) or not isinstance(min_scene_s, (int, float))
                or not math.isfinite(min_scene_s) or min_scene_s < 0):
            raise DatasetArgumentError(
                f"VideoScenes({given!r}, min_scene_s={min_scene_s!r}): min_scene_s must be "
                f"a number of seconds, 0 or more")
        try:
            sampling = parse_frames(frames)
        except ValueError as exc:
            raise DatasetArgumentError(
                f"VideoScenes({given!r}, frames={frames!r}): {exc}") from None
        if not isinstance(layout, str) or (layout != "auto" and layout not in LAYOUTS):
            raise DatasetArgumentError(
                f"VideoScenes({given!r}, layout={layout!r}): layout must be auto, "
                f"{', '.join(LAYOUTS)}")
        if layout == "middle":
            if sampling.text not in (DEFAULT_FRAMES, "middle"):
                raise DatasetArgumentError(
                    f"VideoScenes({given!r}, frames={frames!r}, layout='middle'): the "
                    f"middle layout sends the scene's middle frame alone; leave frames out")
            sampling = parse_frames("middle")
        missing = [name for name in ("cv2", "numpy", "scenedetect")
                   if importlib.util.find_spec(name) is None]
        if missing:
            raise DatasetArgumentError(
                f"{call}: video scenes need OpenCV and PySceneDetect ({', '.join(missing)} "
                f"missing): pip install 'pytest-vlmbench[video]' && pip install --no-deps "
                f"scenedetect==0.7.2")
        self.path = Path(path)
        self.given = str(given)
        self.detector = detector
        self.threshold = float(DETECTORS[detector] if threshold is None else threshold)
        self.min_scene_s = float(min_scene_s)
        self.sampling = sampling.text
        """The frames sent per scene, as recorded (``"middle"`` for the middle layout)."""
        self.layout = layout
        """The layout asked for; `resolved_layout` is the one used."""
        self.recursive = recursive
        self._sampling = sampling
        self._chosen: Layout | None = None if layout == "auto" else cast("Layout", layout)
        self._by_model = layout == "auto"
        self._extensions = _extensions(extensions, call)
        self.videos, self.skipped = _list_videos(
            self.path, self.given, self._extensions, recursive, call)
        self._digests: dict[str, str] = {}
        self._keys: dict[str, DetectKey] = {}

    def __repr__(self) -> str:
        return (f"VideoScenes({self.given!r}, detector={self.detector!r}, "
                f"threshold={self.threshold!r}, min_scene_s={self.min_scene_s!r}, "
                f"frames={self.sampling!r}, layout={self.resolved_layout!r})")

    def __len__(self) -> int:
        return sum(1 for _ in self.samples())

    @property
    def label(self) -> str:
        """How messages name this dataset: ``video:PATH`` (see `dataset_label`)."""
        return f"{self.name}:{self.given}"

    @property
    def resolved_layout(self) -> Layout:
        """The layout used: the one asked for, or what `for_model` chose for ``auto``
        (``images`` before it is called)."""
        return self._chosen or "images"

    def with_layout(self, layout: str) -> VideoScenes:
        """The same videos, detector and frames, laid out another way (a benchmark file
        that sends the scenes both as several images and as a panorama); detection and
        extraction are shared through the cache. ``"middle"`` samples the middle frame."""
        other = VideoScenes(
            self.path, detector=self.detector, threshold=self.threshold,
            min_scene_s=self.min_scene_s,
            frames="middle" if layout == "middle" else self.sampling, layout=layout,
            extensions=self._extensions, recursive=self.recursive)
        other._digests, other._keys = self._digests, self._keys  # the same files
        return other

    def for_model(self, max_images: int | None) -> VideoScenes:
        """This dataset for a model taking at most ``max_images`` images per request
        (None: no known limit): with ``layout="auto"``, images when every scene's frames
        fit, else one panorama; an explicit layout is kept (`ModelAdapted`)."""
        if not self._by_model:
            return self
        most = self._sampling.most
        if most is None:  # every:Ns: as many as the longest scene gets
            most = max((len(self._positions(video, index))
                        for video, index in self._scenes()), default=1)
        adapted = copy.copy(self)
        adapted._chosen = "images" if max_images is None or max_images >= most \
            else "panorama"
        return adapted

    # -- decoding --

    def _key(self, video: _Video) -> DetectKey:
        """The video's cache key, read once per dataset (each scene's preparation asks
        for it; a file edited in place is another key for the next dataset made)."""
        key = self._keys.get(video.id)
        if key is None:
            resolved = video.file.resolve()
            try:
                stat = resolved.stat()
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:
                size, mtime = -1, -1
            key = self._keys[video.id] = (str(resolved), size, mtime, self.detector,
                                          self.threshold, self.min_scene_s)
        return key

    def _detection(self, video: _Video) -> Detection:
        return detect(video.file, self._key(video))

    def _extraction(self, video: _Video) -> Extraction:
        detection = self._detection(video)
        if detection.error is not None:
            raise ValueError("no extraction for an undecodable video")
        return extract(video.file, self._key(video), self._sampling, detection)

    def _scenes(self) -> Iterator[tuple[_Video, int]]:
        for video in self.videos:
            for index in range(len(self._detection(video).scenes)):
                yield video, index

    def _positions(self, video: _Video, index: int) -> list[int]:
        return self._detection(video).positions(self._sampling, index)

    # -- samples --

    def samples(self) -> Iterator[Sample]:
        """One sample per scene, video by video in id order, scenes in time order (each
        video's detection runs on first use, once per process)."""
        for video in self.videos:
            detection = self._detection(video)
            if detection.error is not None:
                yield Sample(
                    id=f"{video.id}/undecodable", source=str(video.file), load_image=None,
                    description=None, truth={},
                    prepare=functools.partial(_fail, str(video.file), detection.error))
                continue
            for index, (first, last) in enumerate(detection.scenes):
                start_s, end_s = detection.time_of(first), detection.time_of(last)
                scene: SceneRef = {
                    "video": video.id, "index": index, "start_s": round(start_s, 6),
                    "end_s": round(end_s, 6), "duration_s": round(end_s - start_s, 6),
                    "frames_s": [round(detection.time_of(p), 6)
                                 for p in self._positions(video, index)],
                    "layout": self.resolved_layout,
                }
                yield Sample(
                    id=f"{video.id}/scene-{index:03d}",
                    source=f"{video.file}#scene {index} ({start_s:.3f}-{end_s:.3f} s)",
                    load_image=None, description=None, truth={},
                    duration_s=scene["duration_s"],
                    prepare=functools.partial(self._prepare, video, index), scene=scene)

    def _prepare(self, video: _Video, index: int, prep: ImagePrep) -> list[PreparedImage]:
        extraction = self._extraction(video)
        if extraction.error is not None:
            raise ImageError(str(video.file), f"cannot decode video: {extraction.error}")
        detection = self._detection(video)
        positions = self._positions(video, index)
        missing = [p for p in positions if p not in extraction.frames]
        if missing:  # a frame that did not decode costs its scene, not the video
            raise ImageError(str(video.file), f"scene {index}: the frame at "
                             f"{detection.time_of(missing[0]):.3f} s could not be decoded")
        return lay_out([extraction.frames[p] for p in positions],
                       [detection.time_of(p) for p in positions], self.resolved_layout, prep,
                       video=video.id, scene=index)

    def selection(self) -> Selection:
        """Every scene, in the order yielded (`DatasetSelection`): no seed, no limit."""
        return {"seed": 0, "limit": None, "ids": [sample.id for sample in self.samples()]}

    def notes(self) -> list[str]:
        """One line for the videos that cannot be decoded (each gives one failed sample)
        and one for files skipped for their extension (`DatasetNotes`)."""
        lines = []
        bad = [(video, self._detection(video).error) for video in self.videos]
        failed = tuple(f"{video.file} ({error})" for video, error in bad if error is not None)
        if failed:
            videos = "video" if len(self.videos) == 1 else "videos"
            lines.append(f"video {self.given}: {len(failed)} of {len(self.videos)} {videos} "
                         f"cannot be decoded, each gives one failed sample: "
                         f"{some_of(failed, _NAMED)}")
        if self.skipped:
            files = "file" if len(self.skipped) == 1 else "files"
            lines.append(f"video {self.given}: skipped {len(self.skipped)} {files} whose "
                         f"extension is not a video one: {some_of(self.skipped, _NAMED)}")
        return lines

    # -- identity --

    def _digest(self, video: _Video) -> str:
        digest = self._digests.get(video.id)
        if digest is None:
            digest = self._digests[video.id] = file_digest(video.file)
        return digest

    def fingerprint(self) -> str:
        """Hash each video's bytes (by id, not location), the detector settings, the
        sampling, the layout used and `FRAMES_VERSION`, so a copy of the same videos on
        another machine with the same settings is the same dataset. The encoder is not
        hashed: the bytes are."""
        payload = {
            "dataset": self.name,
            "frames_version": FRAMES_VERSION,
            "library": _library(),
            "detector": self.detector,
            "threshold": self.threshold,
            "min_scene_s": self.min_scene_s,
            "frames": self.sampling,
            "layout": self.resolved_layout,
            "videos": [[video.id, self._digest(video)] for video in self.videos],
        }
        encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()

    def video_ref(self) -> VideoRef:
        """The detector, sampling, layout and every video with its two passes' times,
        decoding each video now if it has not been (`VideoSource`)."""
        videos: list[VideoInfo] = []
        for video in self.videos:
            detection = self._detection(video)
            extraction = self._extraction(video) if detection.error is None else None
            fps = detection.fps
            videos.append({
                "id": video.id,
                "source": str(video.file),
                "sha256": self._digest(video),
                "fps": fps,
                "frames": detection.frames,
                "duration_s": round(detection.duration_s, 6) if fps else None,
                "width": detection.width,
                "height": detection.height,
                "scenes": len(detection.scenes),
                "min_scene_frames": detection.min_scene_frames,
                "starts_s": [round(detection.time_of(first), 6)
                             for first, _ in detection.scenes],
                "detect_ns": detection.detect_ns,
                "extract_ns": None if extraction is None else extraction.extract_ns,
                "error": _error_line(video, detection, extraction),
            })
        return {
            "detector": {"name": cast("Literal['content', 'adaptive']", self.detector),
                         "threshold": self.threshold, "min_scene_s": self.min_scene_s,
                         "library": _library()},
            "frames": self.sampling,
            "layout": self.resolved_layout,
            "layout_chosen_by": "model" if self._by_model else "user",
            "videos": videos,
        }


def _fail(source: str, reason: str, prep: ImagePrep) -> Sequence[PreparedImage]:
    raise ImageError(source, f"cannot decode video: {reason}")


def _error_line(video: _Video, detection: Detection,
                extraction: Extraction | None) -> str | None:
    """`VideoInfo.error`: the line the video's failed requests carry, or None."""
    reason = detection.error if extraction is None else extraction.error
    return None if reason is None else str(ImageError(str(video.file),
                                                      f"cannot decode video: {reason}"))


def _extensions(extensions: object, call: str) -> tuple[str, ...]:
    """Sorted lower-case suffixes with their dot; a bare string is refused (iterating
    ``".mp4"`` gives ``. m p 4``)."""
    if isinstance(extensions, (str, bytes)) or not isinstance(extensions, (tuple, list)):
        raise DatasetArgumentError(
            f"{call}: extensions must be a tuple of suffixes such as ('.mp4', '.mov'), "
            f"got {extensions!r}")
    suffixes = set()
    for item in extensions:
        if not isinstance(item, str) or not item.strip(" ."):
            raise DatasetArgumentError(
                f"{call}: each extension must be a suffix such as '.mp4', got {item!r}")
        suffix = item.strip().lower()
        suffixes.add(suffix if suffix.startswith(".") else f".{suffix}")
    if not suffixes:
        raise DatasetArgumentError(f"{call}: extensions is empty, so no video can be chosen")
    return tuple(sorted(suffixes))


def _list_videos(path: Path, given: str, extensions: tuple[str, ...], recursive: bool,
                 call: str) -> tuple[tuple[_Video, ...], tuple[str, ...]]:
    """The videos ``path`` names (a file, a folder, a glob), sorted by id, and the
    files skipped for their extension; errors start with ``call``."""
    pattern: str | None = None
    if path.is_file():
        return (_Video(unicodedata.normalize("NFC", path.name), path),), ()
    if not path.exists():
        if not any(magic in given for magic in _MAGIC):
            raise DatasetArgumentError(
                f"{call}: no such video file or folder (looked for {path.absolute()})")
        parts = path.parts
        first = next(i for i, part in enumerate(parts) if any(m in part for m in _MAGIC))
        path, pattern = Path(*parts[:first]) if first else Path(), "/".join(parts[first:])
        if not path.is_dir():
            raise DatasetArgumentError(
                f"{call}: the glob's folder {path.absolute()} does not exist")
        recursive = True  # the pattern says how deep
    candidates = path.rglob("*") if recursive else path.iterdir()
    found: dict[str, Path] = {}
    skipped: list[str] = []
    for file in candidates:
        relative = unicodedata.normalize("NFC", file.relative_to(path).as_posix())
        if any(part.startswith(".") for part in relative.split("/")) or not file.is_file():
            continue
        if pattern is not None and not match_glob(relative, pattern):
            continue
        if file.suffix.lower() in extensions:
            found[relative] = file
        else:
            skipped.append(relative)
    if not found:
        matching = "" if pattern is None else f" matching {pattern!r}"
        raise DatasetArgumentError(
            f"{call}: no videos found in {path}{matching} (no {' '.join(extensions)} files"
            f"{'' if not skipped else f'; found {len(skipped)} other, e.g. {min(skipped)}'})")
    names = [relative.rsplit("/", 1)[-1] for relative in found]
    clash = len(set(names)) != len(names)
    videos = tuple(_Video(relative if clash else relative.rsplit("/", 1)[-1], file)
                   for relative, file in sorted(found.items()))
    return tuple(sorted(videos, key=lambda v: v.id)), tuple(sorted(skipped))
