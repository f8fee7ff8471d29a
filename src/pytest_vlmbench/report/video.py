"""The video figures in the terminal: one line per video of each benchmark over video
scenes (and one for the benchmark's videos together when it has several), so a run says
whether each model keeps up with the video, not only its request latency (the results
file holds every figure: summary.video, dataset.video)."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_vlmbench.results.models import BenchmarkEntry, VideoFigures, VideoSummary


def _number(value: float | None) -> str:
    """Two decimals, or two significant digits below 0.1 (a detection of 4 ms is not
    `0.00`); `-` when absent."""
    if value is None:
        return "-"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _figures(fig: VideoFigures | VideoSummary, layout: str | None) -> str:
    """What was shown, the VLM's figures (or why they are absent), then the pipeline's."""
    shown = []
    if fig["scenes"] is not None:
        shown.append(_plural(fig["scenes"], "scene"))
    if fig["frames_per_scene"] is not None:
        shown.append(f"{fig['frames_per_scene']:.3g} frames/scene"
                     + (f" ({layout})" if layout else ""))
    if fig["duration_s"] is not None:
        shown.append(f"{fig['duration_s']:.1f} s of video")
    head = ", ".join(shown)
    failed = fig["failed_requests"]
    if fig["vlm_s"] is None:
        vlm = f"figures absent: {fig['absent_reason']}"
    else:
        vlm = (f"VLM {_number(fig['vlm_s'])} s, {_number(fig['seconds_per_scene'])} s/scene, "
               f"RTF {_number(fig['real_time_factor'])}"
               + (f" ({_plural(failed, 'failed request')} included)" if failed else ""))
    stages = []
    if fig["detection_s"] is not None or fig["extraction_s"] is not None:
        stages.append(f"detection {_number(fig['detection_s'])} s, extraction "
                      f"{_number(fig['extraction_s'])} s")
    if fig["vlm_s"] is not None:
        rtf = f"pipeline RTF {_number(fig['pipeline_real_time_factor'])}"
        if fig["pipeline_real_time_factor"] is None and fig["absent_reason"]:
            rtf += f" ({fig['absent_reason']})"
        stages.append(rtf)
    body = f"{head}: {vlm}" if head else vlm
    return "; ".join([body, ", ".join(stages)]) if stages else body


def video_lines(benchmarks: Sequence[BenchmarkEntry]) -> list[str]:
    """`video clip.mp4 · tiny-vlm q4_k_m caption_brief: 6 scenes, 2 frames/scene (images),
    12.0 s of video: VLM 5.10 s, 0.85 s/scene, RTF 0.43; detection 0.12 s, extraction
    0.05 s, pipeline RTF 0.45`, per video of each video benchmark."""
    lines = []
    for entry in benchmarks:
        video = entry["summary"].get("video")
        if video is None:
            continue
        ref = entry["dataset"].get("video")
        layout = ref["layout"] if ref is not None else None
        who = f"{entry['model']} {entry['precision']} {entry['task']}"
        level = entry.get("load")
        if level is not None:
            who += f" @{level['label']}"
        for fig in video["videos"]:
            lines.append(f"video {fig['id']} · {who}: {_figures(fig, layout)}")
        if len(video["videos"]) > 1:
            n = len(video["videos"])
            lines.append(f"video {n} videos ({video['videos_complete']} complete) · {who}: "
                         f"{_figures(video, layout)}")
    return lines
