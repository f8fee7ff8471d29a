"""The figures of a benchmark over video scenes: seconds per scene and real-time factor.

A video pipeline team asks two things of a model: how long it takes per scene, and
whether it keeps up with the video (real-time factor = processing time / video time; below
1 it does). Both come from the measured records (each names its scene: record `scene`)
and the dataset's `dataset.video` entry (each video's duration, scene count and the
detection and extraction times, measured once per video outside every request).

Like summary.py nothing here reads a clock: `video_summary` is a function of the records
and the VideoRef, so a reader can recompute it. A figure that cannot be measured is None
with `absent_reason`, never 0: a video that could not be decoded, one with only some of
its scenes measured (its real-time factor would describe part of the video), one with a
scene that failed before it was sent (no time was spent on it). METHODS, written into
every results document, states each definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_vlmbench.metrics.per_request import span_ns
from pytest_vlmbench.results.models import Record, VideoFigures, VideoInfo, VideoRef, VideoSummary

if TYPE_CHECKING:
    from pytest_vlmbench.datasets import Dataset

BLOCK = "video"
"""The summary's key of these figures; a registry metric whose path starts with it is a
video figure (video_slo_problem)."""

UNDECODABLE = "/undecodable"
"""The sample id suffix of a video that could not be decoded (datasets/video.py): its one
sample has no scene, and its failed request is counted as the video's."""

METHODS = {
    "video": "figures of a benchmark over video scenes (summary.video, metrics/video.py), "
    "per video from its measured records (record scene.video = the video's id) and its "
    "benchmark.dataset.video entry: scenes = the scenes the detector found; "
    "scenes_measured = distinct scene indices with a measured record; failed_requests = "
    "its measured records with an error (any stage; an undecodable video's one sample "
    "included); frames_per_scene = mean len(scene.frames_s) over its measured records; "
    "vlm_s = sum over its scenes of the mean (t_end_ns - t_start_ns) of that scene's "
    "measured requests (repeats averaged; failed requests included: their time was spent); "
    "seconds_per_scene = vlm_s / scenes; real_time_factor = vlm_s / duration_s (duration_s "
    "= the last decoded frame's presentation time + 1 / fps, decoded frames / fps at a "
    "constant rate; below 1 the model keeps up with the video); detection_s = "
    "detect_ns (decoding and the scene detector, once per video per session); extraction_s "
    "= extract_ns (decoding up to the last sampled frame, frames found by their time; the "
    "lossless copy kept in memory is outside it); prepare_s = sum over its scenes of the mean "
    "prepare_ns of the scene's measured records (frames fitted and laid out; outside the "
    "latency); pipeline_s = "
    "detection_s + extraction_s + prepare_s + vlm_s; pipeline_real_time_factor = "
    "pipeline_s / duration_s. A video's request figures are null, with absent_reason, when "
    "it could not be decoded, when only k of its n scenes were measured, or when every "
    "measured request of a scene failed before it was sent, or when its requests ran "
    "concurrently (a concurrency, rate or batch load level: overlapping latencies do not "
    "add up to processing time); its pipeline figures are null "
    "when detection, extraction or preparation was not timed. The benchmark's figures "
    "combine the videos whose figures are complete: counts, seconds and durations summed, "
    "real_time_factor = sum vlm_s / sum duration_s, seconds_per_scene = sum vlm_s / sum "
    "scenes, frames_per_scene over their records; null with absent_reason when no video is "
    "complete. Compare judges real_time_factor, seconds_per_scene and vlm_s on each "
    "successful measured request's latency times sum scenes / sum duration_s, 1 and sum "
    "scenes (the mean of each is the figure when every scene is measured equally often)",
}


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sum(values: Sequence[float | None]) -> float | None:
    """The sum, or None when a part is unknown."""
    known = [v for v in values if v is not None]
    return math.fsum(known) if len(known) == len(values) else None


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9


def _base_id(sample_id: str) -> str:
    """A record's sample id without the `#N` of a repeated sample (run/requests.py)."""
    head, sep, tail = sample_id.rpartition("#")
    return head if sep and tail.isdigit() else sample_id


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def samples_needed(ref: VideoRef) -> int:
    """Measured requests that show every scene once: one per scene, one per video that
    could not be decoded (its one sample)."""
    return sum(1 if info["error"] is not None else info["scenes"] for info in ref["videos"])


def _unsent(scene: int, records: Sequence[Record]) -> str:
    error = next((r["error"] for r in records if r["error"] is not None), None)
    why = f": {_first_line(error['message'])}" if error is not None else ""
    return f"scene {scene} failed before it was sent{why}"


def _request_figures(info: VideoInfo, by_scene: Mapping[int, list[Record]],
                     needed: int) -> tuple[float | None, float | None, str | None]:
    """(vlm_s, prepare_s, why they are absent) of one video."""
    n = info["scenes"]
    if info["error"] is not None:
        return None, None, f"the video could not be decoded: {_first_line(info['error'])}"
    if n == 0:
        return None, None, "the detector found no scene in it"
    measured = sum(1 for i in range(n) if by_scene.get(i))
    if measured < n:
        return None, None, (f"only {measured} of {n} scenes were measured (give samples= "
                            f"at least {needed})")
    latency: list[float] = []
    prepare: list[float | None] = []
    for i in range(n):
        spans = [s for s in map(span_ns, by_scene[i]) if s is not None]
        if not spans:
            return None, None, _unsent(i, by_scene[i])
        latency.append(_mean([end - start for start, end in spans]))
        prepared = [r["prepare_ns"] for r in by_scene[i] if r["prepare_ns"] is not None]
        prepare.append(_mean(prepared) if prepared else None)
    total = _sum(prepare)
    return math.fsum(latency) / 1e9, None if total is None else total / 1e9, None


def video_figures(info: VideoInfo, records: Sequence[Record], needed: int,
                  overlapped: str | None = None) -> VideoFigures:
    """One video's figures from its measured records (those naming it in `scene`, and an
    undecodable video's one sample) and its VideoInfo; `needed`: the samples= that
    measures every scene of the dataset (said when scenes are missing); `overlapped`: the
    load level whose requests ran concurrently (their latencies overlap, so their sum is
    no processing time: the request figures are absent, saying so)."""
    by_scene: dict[int, list[Record]] = {}
    failed = 0
    frames: list[int] = []
    undecodable = info["id"] + UNDECODABLE
    for r in records:
        scene = r.get("scene")
        if scene is None:
            if r["error"] is not None and _base_id(r["sample_id"]) == undecodable:
                failed += 1
            continue
        if scene["video"] != info["id"]:
            continue
        by_scene.setdefault(scene["index"], []).append(r)
        frames.append(len(scene["frames_s"]))
        if r["error"] is not None:
            failed += 1
    duration = info["duration_s"]
    vlm_s, prepare_s, reason = _request_figures(info, by_scene, needed)
    if reason is None and overlapped is not None:
        vlm_s, prepare_s, reason = None, None, (
            f"requests overlapped at load level {overlapped}: their latencies do not add "
            f"up to processing time (see requests_per_s for the throughput)")
    if reason is None and not duration:
        vlm_s, prepare_s, reason = None, None, "its duration is unknown (no frame rate)"
    detection_s, extraction_s = _seconds(info["detect_ns"]), _seconds(info["extract_ns"])
    pipeline_s = _sum([detection_s, extraction_s, prepare_s, vlm_s])
    if reason is None and pipeline_s is None:
        untimed = [name for name, value in (("detection", detection_s),
                                            ("extraction", extraction_s),
                                            ("preparation", prepare_s)) if value is None]
        reason = f"pipeline figures absent: {' and '.join(untimed)} not timed"
    return {
        "id": info["id"],
        "duration_s": duration,
        "scenes": info["scenes"],
        "scenes_measured": sum(1 for i in by_scene if 0 <= i < info["scenes"]),
        "failed_requests": failed,
        "frames_per_scene": _mean(frames) if frames else None,
        "vlm_s": vlm_s,
        "seconds_per_scene": _ratio(vlm_s, info["scenes"]),
        "real_time_factor": _ratio(vlm_s, duration),
        "detection_s": detection_s,
        "extraction_s": extraction_s,
        "prepare_s": prepare_s,
        "pipeline_s": pipeline_s,
        "pipeline_real_time_factor": _ratio(pipeline_s, duration),
        "absent_reason": reason,
    }


def _combined_reason(videos: Sequence[VideoFigures]) -> str:
    if not videos:
        return "the dataset has no video"
    if len(videos) == 1:
        reason = videos[0]["absent_reason"]
        assert reason is not None
        return reason
    first = videos[0]
    more = f"; {len(videos) - 1} more" if len(videos) > 2 else \
        f"; {videos[1]['id']}: {videos[1]['absent_reason']}"
    return (f"no video has complete figures ({first['id']}: {first['absent_reason']}"
            f"{more})")


def video_summary(records: Sequence[Record], ref: VideoRef,
                  overlapped: str | None = None) -> VideoSummary:
    """summary.video: each video's figures, and the benchmark's over the videos whose
    request figures are complete (METHODS["video"]); `overlapped`: the label of a load
    level whose requests ran concurrently (then no video's request figures are complete:
    per-scene latencies sum to processing time only when requests run one at a time)."""
    measured = [r for r in records if r["phase"] == "measure"]
    needed = samples_needed(ref)
    by_video: dict[str, list[Record]] = {}  # one pass: a video's records, then its figures
    for r in measured:
        scene = r.get("scene")
        video = scene["video"] if scene is not None else \
            _base_id(r["sample_id"]).removesuffix(UNDECODABLE)
        by_video.setdefault(video, []).append(r)
    videos = [video_figures(info, by_video.get(info["id"], []), needed, overlapped)
              for info in ref["videos"]]
    complete = [v for v in videos if v["vlm_s"] is not None]
    ids = {v["id"] for v in complete}
    frames = [len(scene["frames_s"]) for r in measured
              if (scene := r.get("scene")) is not None and scene["video"] in ids]
    duration = _sum([v["duration_s"] for v in complete]) if complete else None
    scenes = sum(v["scenes"] for v in complete) if complete else None
    vlm_s = _sum([v["vlm_s"] for v in complete]) if complete else None
    pipeline_s = _sum([v["pipeline_s"] for v in complete]) if complete else None
    reason = None
    if not complete:
        reason = _combined_reason(videos)
    elif pipeline_s is None:
        reason = next(v["absent_reason"] for v in complete if v["pipeline_s"] is None)
    return {
        "videos": videos,
        "videos_complete": len(complete),
        "duration_s": duration,
        "scenes": scenes,
        "scenes_measured": sum(v["scenes_measured"] for v in complete) if complete else None,
        "failed_requests": sum(v["failed_requests"] for v in complete) if complete else None,
        "frames_per_scene": _mean(frames) if frames else None,
        "vlm_s": vlm_s,
        "seconds_per_scene": _ratio(vlm_s, scenes),
        "real_time_factor": _ratio(vlm_s, duration),
        "detection_s": _sum([v["detection_s"] for v in complete]) if complete else None,
        "extraction_s": _sum([v["extraction_s"] for v in complete]) if complete else None,
        "prepare_s": _sum([v["prepare_s"] for v in complete]) if complete else None,
        "pipeline_s": pipeline_s,
        "pipeline_real_time_factor": _ratio(pipeline_s, duration),
        "absent_reason": reason,
    }


def latency_scale(sample: str, video: Mapping[str, Any]) -> float | None:
    """What compare multiplies each request's latency by to judge a video figure on
    per-request samples (the mean of the products is the figure when every scene is
    measured equally often): scenes / duration_s for real_time_factor, scenes for vlm_s,
    1 for seconds_per_scene. None when the summary has no such figure, or for a sample
    that is not a video figure's."""
    scenes, duration = video.get("scenes"), video.get("duration_s")
    if video.get(sample) is None or not isinstance(scenes, int) or scenes <= 0 \
            or not isinstance(duration, int | float) or duration <= 0:
        return None
    return {"real_time_factor": scenes / duration, "seconds_per_scene": 1.0,
            "vlm_s": float(scenes)}.get(sample)


def video_slo_problem(dataset: Dataset, spec: Mapping[str, float], where: str) -> str | None:
    """Why an SLO names a video figure on a dataset that is no video dataset (it would
    only say "not measured" after the run), or None. One line, like a score SLO whose
    task gives no such score (plugin/bench.py score_slo_problem)."""
    from pytest_vlmbench.datasets import VideoSource, dataset_label
    from pytest_vlmbench.metrics.registry import slos

    if isinstance(dataset, VideoSource):
        return None
    known = slos()
    for name in spec:
        metric = known.get(name)
        if metric is not None and metric.summary[0] == BLOCK:
            return (f"{where}: SLO {name}: dataset {dataset_label(dataset)!r} is no video "
                    f"dataset, so it has "
                    f"no {metric.name} (a video dataset's scenes do: "
                    "pytest_vlmbench.datasets.video.VideoScenes)")
    return None
