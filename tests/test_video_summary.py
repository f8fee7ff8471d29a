"""The video figures (metrics/video.py) from hand-made records and VideoRefs: seconds per
scene and real-time factor per video and per benchmark, every absent figure with its
reason, the invariants on random videos (Hypothesis), and where the figures go: the
schema, compare (judged on scaled latencies, never on a non-video benchmark; the
descriptive figures never), the terminal line and the SLO check before a run."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pytest_vlmbench.backends import Capabilities, Request, Response
from pytest_vlmbench.compare import compare_runs, load_run, parse_rules
from pytest_vlmbench.datasets import ImagePrep, PreparedImage, Sample
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.metrics import registry
from pytest_vlmbench.metrics.summary import METHODS, summarize
from pytest_vlmbench.metrics.video import (
    latency_scale,
    samples_needed,
    video_slo_problem,
    video_summary,
)
from pytest_vlmbench.report.video import video_lines
from pytest_vlmbench.results import document as results
from pytest_vlmbench.run.records import RecordWriter, read_records
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.tasks import GenerationParams, Task
from tests.test_compare import BASE16, Bench, latencies, write_run

S = 1_000_000_000
MS = 1_000_000


def info(vid: str = "clip.mp4", scenes: int = 3, duration_s: float | None = 12.0, *,
         detect_ns: int | None = S // 2, extract_ns: int | None = S // 4,
         error: str | None = None) -> dict[str, Any]:
    """A VideoInfo as datasets/video.py writes it (fps 24)."""
    fps = None if duration_s is None else 24.0
    return {
        "id": vid, "source": f"/videos/{vid}", "sha256": "a" * 64, "fps": fps,
        "frames": 0 if duration_s is None else round(duration_s * 24),
        "duration_s": duration_s, "width": None if error else 320,
        "height": None if error else 180, "scenes": scenes,
        "min_scene_frames": None if error else 12,
        "starts_s": [i * (duration_s or 0) / max(scenes, 1) for i in range(scenes)],
        "detect_ns": detect_ns, "extract_ns": extract_ns, "error": error,
    }


def ref(*videos: dict[str, Any], layout: str = "images") -> dict[str, Any]:
    return {"detector": {"name": "content", "threshold": 27.0, "min_scene_s": 0.5,
                         "library": "scenedetect 0.7.2"},
            "frames": "start,middle", "layout": layout, "layout_chosen_by": "model",
            "videos": list(videos)}


class Seq:
    """Sequence numbers and start times for the records of one test."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n - 1


def rec(seq: int, video: str, index: int, latency_s: float | None, *, frames: int = 2,
        prepare_ms: float | None = 10.0, error: str | None = None,
        phase: str = "measure", repetition: int = 0) -> dict[str, Any]:
    """A record of one scene as runner.Runner writes it: latency None is a sample that
    failed before it was sent (prepare), `error` with a latency a failed request."""
    start = 100 * S * (seq + 1)
    sent = latency_s is not None
    stage = "request" if sent else "prepare"
    return {
        "run_id": "run-1", "benchmark": "bench", "seq": seq, "phase": phase,
        "sample_id": f"{video}/scene-{index:03d}" + (f"#{repetition}" if repetition else ""),
        "model": "m", "precision": "q4_k_m", "backend": "llama_cpp", "device": "cpu",
        "task": "t",
        "t_start_ns": start if sent else None, "t_first_token_ns": None,
        "t_end_ns": start + round(latency_s * S) if latency_s is not None else None,
        "prepare_ns": None if prepare_ms is None else round(prepare_ms * MS),
        "prompt_tokens": None, "completion_tokens": None,
        "finish_reason": None, "output": None if error or not sent else "x",
        "parse": "no_output" if error or not sent else "not_checked", "parse_detail": None,
        "stages_ns": {}, "counts": {}, "images": [],
        "error": None if error is None and sent else
        {"stage": stage, "type": "DatasetError", "message": error or "boom"},
        "scene": {"video": video, "index": index, "start_s": float(index),
                  "end_s": float(index + 1), "duration_s": 1.0,
                  "frames_s": [index + 0.5 * k for k in range(frames)], "layout": "images"},
    }


def validate(summary: dict[str, Any], video_ref: dict[str, Any]) -> None:
    defs = results.schema()["$defs"]
    Draft202012Validator({"$defs": defs, "$ref": "#/$defs/summary/properties/video"}) \
        .validate(summary)
    Draft202012Validator(
        {"$defs": defs, "$ref": "#/$defs/benchmark/properties/dataset/properties/video"}
    ).validate(video_ref)


COMMON = ("duration_s", "scenes", "scenes_measured", "failed_requests", "frames_per_scene",
          "vlm_s", "seconds_per_scene", "real_time_factor", "detection_s", "extraction_s",
          "prepare_s", "pipeline_s", "pipeline_real_time_factor", "absent_reason")


# ----------------------------------------------------------------------------- one video


def test_a_complete_video() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", 0, 9.0, phase="warmup"),  # warm-up: no trace
               *(rec(seq(), "clip.mp4", i, lat) for i, lat in enumerate([1.0, 2.0, 3.0]))]
    r = ref(info())
    s = video_summary(records, r)
    [v] = s["videos"]
    assert v == {
        "id": "clip.mp4", "duration_s": 12.0, "scenes": 3, "scenes_measured": 3,
        "failed_requests": 0, "frames_per_scene": 2.0, "vlm_s": pytest.approx(6.0),
        "seconds_per_scene": pytest.approx(2.0), "real_time_factor": pytest.approx(0.5),
        "detection_s": 0.5, "extraction_s": 0.25, "prepare_s": pytest.approx(0.03),
        "pipeline_s": pytest.approx(6.78), "pipeline_real_time_factor": pytest.approx(0.565),
        "absent_reason": None,
    }
    # one video: the benchmark's figures are the video's
    assert {k: s[k] for k in COMMON} == {k: v[k] for k in COMMON}
    assert s["videos_complete"] == 1
    validate(dict(s), r)


def test_overlapping_requests_leave_the_request_figures_absent() -> None:
    """Under a concurrency level the latencies overlap: their sum is no processing time,
    so the figures that add them are absent, saying why; detection stays."""
    seq = Seq()
    records = [rec(seq(), "clip.mp4", i, lat) for i, lat in enumerate([1.0, 2.0, 3.0])]
    r = ref(info())
    s = video_summary(records, r, overlapped="c4")
    [v] = s["videos"]
    assert v["vlm_s"] is None
    assert v["real_time_factor"] is None
    assert v["pipeline_real_time_factor"] is None
    assert v["detection_s"] == 0.5
    assert v["absent_reason"] is not None
    assert v["absent_reason"].startswith("requests overlapped at load level c4")
    assert s["real_time_factor"] is None
    assert s["absent_reason"] == v["absent_reason"]
    validate(dict(s), r)


def test_repeated_scenes_are_averaged_and_failed_requests_included() -> None:
    seq = Seq()
    records = [
        rec(seq(), "clip.mp4", 0, 1.0), rec(seq(), "clip.mp4", 0, 3.0, repetition=1),
        rec(seq(), "clip.mp4", 1, 4.0, error="server closed the connection"),
        rec(seq(), "clip.mp4", 2, 0.5),
    ]
    v = video_summary(records, ref(info()))["videos"][0]
    assert v["vlm_s"] == pytest.approx(2.0 + 4.0 + 0.5)  # scene 0: mean of 1 and 3
    assert v["failed_requests"] == 1
    assert v["absent_reason"] is None
    assert v["seconds_per_scene"] == pytest.approx(6.5 / 3)


def test_a_scene_that_failed_before_it_was_sent_leaves_the_video_without_figures() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", 0, 1.0), rec(seq(), "clip.mp4", 1, 1.0),
               rec(seq(), "clip.mp4", 2, None, error="clip.mp4: frame 200: cannot decode\n"
                   "more detail")]
    s = video_summary(records, ref(info()))
    v = s["videos"][0]
    assert v["absent_reason"] == "scene 2 failed before it was sent: clip.mp4: frame 200: " \
                                 "cannot decode"
    assert (v["scenes_measured"], v["failed_requests"]) == (3, 1)
    for key in ("vlm_s", "seconds_per_scene", "real_time_factor", "prepare_s", "pipeline_s",
                "pipeline_real_time_factor"):
        assert v[key] is None
    assert (v["detection_s"], v["extraction_s"]) == (0.5, 0.25)  # measured all the same
    assert s["absent_reason"] == v["absent_reason"]
    assert s["videos_complete"] == 0
    assert s["real_time_factor"] is None
    assert s["scenes"] is None


def test_a_scene_sent_once_of_two_tries_counts() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", 0, 1.0), rec(seq(), "clip.mp4", 1, 2.0),
               rec(seq(), "clip.mp4", 2, None), rec(seq(), "clip.mp4", 2, 3.0, repetition=1)]
    v = video_summary(records, ref(info()))["videos"][0]
    assert v["vlm_s"] == pytest.approx(6.0)
    assert v["failed_requests"] == 1
    assert v["prepare_s"] == pytest.approx(0.03)  # scene 2: the mean of both preparations


def test_k_of_n_scenes_is_absent_with_the_samples_to_give() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", 0, 1.0), rec(seq(), "clip.mp4", 1, 1.0)]
    r = ref(info(), info("other.mp4", scenes=2))
    s = video_summary(records, r)
    clip, other = s["videos"]
    assert clip["absent_reason"] == ("only 2 of 3 scenes were measured (give samples= at "
                                     "least 5)")
    assert clip["scenes_measured"] == 2
    assert clip["frames_per_scene"] == 2.0  # what was sent is known
    assert clip["real_time_factor"] is None
    assert other["absent_reason"] == "only 0 of 2 scenes were measured (give samples= at least 5)"
    assert other["frames_per_scene"] is None
    assert s["absent_reason"] == (
        "no video has complete figures (clip.mp4: only 2 of 3 scenes were measured (give "
        "samples= at least 5); other.mp4: only 0 of 2 scenes were measured (give samples= "
        "at least 5))")
    validate(dict(s), r)


def test_an_undecodable_video_beside_a_complete_one() -> None:
    seq = Seq()
    records = [*(rec(seq(), "clip.mp4", i, 1.0) for i in range(3)),
               {**rec(seq(), "broken.mp4", 0, None,
                      error="/videos/broken.mp4: cannot decode: no video stream"),
                "sample_id": "broken.mp4/undecodable", "prepare_ns": 3 * MS}]
    del records[-1]["scene"]  # an undecodable video's sample has no scene
    broken = info("broken.mp4", 0, None, detect_ns=2 * MS, extract_ns=None,
                  error="/videos/broken.mp4: cannot decode: no video stream")
    r = ref(info(), broken)
    assert samples_needed(r) == 4
    s = video_summary(records, r)
    clip, bad = s["videos"]
    assert bad["absent_reason"] == ("the video could not be decoded: /videos/broken.mp4: "
                                    "cannot decode: no video stream")
    assert (bad["failed_requests"], bad["scenes"], bad["duration_s"]) == (1, 0, None)
    assert bad["detection_s"] == 0.002  # the time spent finding out
    assert clip["absent_reason"] is None
    # the benchmark's figures are the complete video's
    assert s["videos_complete"] == 1
    assert s["real_time_factor"] == clip["real_time_factor"]
    assert s["failed_requests"] == 0
    assert s["absent_reason"] is None
    validate(dict(s), r)


def test_two_videos_combined() -> None:
    seq = Seq()
    records = [*(rec(seq(), "a.mp4", i, 2.0) for i in range(3)),
               *(rec(seq(), "b.mp4", i, 0.5, frames=4) for i in range(2))]
    s = video_summary(records, ref(info("a.mp4", 3, 12.0),
                                   info("b.mp4", 2, 6.0, detect_ns=S, extract_ns=S // 2)))
    a, b = s["videos"]
    assert (a["real_time_factor"], b["real_time_factor"]) == (pytest.approx(0.5),
                                                              pytest.approx(1 / 6))
    assert s["vlm_s"] == pytest.approx(7.0)
    assert s["duration_s"] == 18.0
    assert s["scenes"] == 5
    assert s["real_time_factor"] == pytest.approx(7 / 18)  # not the mean of 0.5 and 1/6
    assert s["seconds_per_scene"] == pytest.approx(7 / 5)
    assert s["frames_per_scene"] == pytest.approx((3 * 2 + 2 * 4) / 5)  # over the records
    assert s["detection_s"] == pytest.approx(1.5)
    assert s["extraction_s"] == pytest.approx(0.75)
    assert s["pipeline_s"] == pytest.approx(7.0 + 1.5 + 0.75 + 0.05)
    assert s["videos_complete"] == 2


def test_an_untimed_stage_leaves_only_the_pipeline_absent() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", i, 1.0) for i in range(3)]
    s = video_summary(records, ref(info(extract_ns=None)))
    v = s["videos"][0]
    assert v["real_time_factor"] == pytest.approx(0.25)
    assert v["pipeline_s"] is None
    assert v["absent_reason"] == "pipeline figures absent: extraction not timed"
    assert s["real_time_factor"] == pytest.approx(0.25)
    assert s["pipeline_real_time_factor"] is None
    assert s["absent_reason"] == v["absent_reason"]


def test_no_video_key_for_other_datasets_and_methods_say_it() -> None:
    assert "video" not in summarize([], checks_output=False, load_s=None, peak_rss=None)
    for name in ("vlm_s", "real_time_factor", "pipeline_s", "repeats averaged",
                 "failed requests included"):
        assert name in METHODS["video"]


# ----------------------------------------------------------------------------- property


@st.composite
def videos(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                     dict[tuple[str, int], list[int]]]:
    """Complete videos: every scene 1-3 requests (failed ones timed too)."""
    infos, records = [], []
    latency_ns: dict[tuple[str, int], list[int]] = {}
    seq = Seq()
    for k in range(draw(st.integers(1, 3))):
        vid = f"v{k}.mp4"
        n = draw(st.integers(1, 4))
        infos.append(info(vid, n, draw(st.floats(0.5, 600.0)),
                          detect_ns=draw(st.integers(0, 10 * S)),
                          extract_ns=draw(st.integers(0, 10 * S))))
        for i in range(n):
            for rep in range(draw(st.integers(1, 3))):
                lat = draw(st.integers(1, 20 * S))
                latency_ns.setdefault((vid, i), []).append(lat)
                records.append(rec(seq(), vid, i, lat / S, repetition=rep,
                                   prepare_ms=draw(st.floats(0.0, 50.0)),
                                   error="boom" if draw(st.booleans()) else None))
    return infos, records, latency_ns


@settings(max_examples=150, deadline=None)
@given(videos())
def test_invariants(drawn: tuple[list[dict[str, Any]], list[dict[str, Any]],
                                 dict[tuple[str, int], list[int]]]) -> None:
    infos, records, latency_ns = drawn
    s = video_summary(records, ref(*infos))
    assert s["videos_complete"] == len(infos)
    for v, i in zip(s["videos"], infos, strict=True):
        expected = sum(sum(lat) / len(lat) for (vid, _), lat in latency_ns.items()
                       if vid == i["id"]) / S
        assert v["vlm_s"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert v["vlm_s"] is not None
        assert v["pipeline_s"] is not None
        assert v["pipeline_s"] >= v["vlm_s"]
        assert v["real_time_factor"] * i["duration_s"] == pytest.approx(v["vlm_s"])
        assert v["seconds_per_scene"] * i["scenes"] == pytest.approx(v["vlm_s"])
        assert v["pipeline_real_time_factor"] >= v["real_time_factor"]
    rtfs = [v["real_time_factor"] for v in s["videos"]]
    assert s["real_time_factor"] is not None
    assert min(rtfs) * (1 - 1e-9) <= s["real_time_factor"] <= max(rtfs) * (1 + 1e-9)
    assert s["vlm_s"] == pytest.approx(math.fsum(v["vlm_s"] for v in s["videos"]))
    assert s["failed_requests"] == sum(r["error"] is not None for r in records)
    # the figures do not depend on the order the records completed in
    assert video_summary(records[::-1], ref(*infos)) == s


# ----------------------------------------------------------------------------- compare


def _with_video(path: Path, vid: dict[str, Any] | None = None) -> Path:
    """The run's benchmark made a video benchmark: summary.video from the records'
    latencies as if they were one video's scenes, and dataset.video."""
    doc = json.loads(path.read_text())
    records = [json.loads(line) for line in
               (path.parent / doc["records_file"]).read_text().splitlines()]
    entry = doc["benchmarks"][0]
    measured = [r for r in records if r["phase"] == "measure"]
    the_ref = ref(vid or info("clip.mp4", len(measured), 2.0 * len(measured)))
    scenes = []
    for i, r in enumerate(measured):
        scene = rec(0, "clip.mp4", i, 1.0)
        r["scene"] = scene["scene"]  # in the records file too: compare reads it there
        scenes.append(r)
    entry["summary"]["video"] = video_summary(scenes, the_ref)
    entry["dataset"]["video"] = the_ref
    (path.parent / doc["records_file"]).write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    results.write_atomic(path, doc)
    return path


def _compare(tmp_path: Path, base: Sequence[float], cur: Sequence[float], *,
             video: bool = True, rules: Sequence[str] | None = None,
             cur_info: dict[str, Any] | None = None) -> Any:
    b = write_run(tmp_path, "base", [Bench(base)])
    c = write_run(tmp_path, "cur", [Bench(cur)], started_at="2026-11-23T11:00:00+00:00")
    if video:
        _with_video(b)
        _with_video(c, cur_info)
    comparison = compare_runs(load_run(b), load_run(c),
                              parse_rules(rules) if rules is not None else None,
                              drift_allowance=0.0)
    return {m.metric: m for m in comparison.pairs[0].metrics}


def test_compare_judges_the_video_figures_on_scaled_latencies(tmp_path: Path) -> None:
    slow = latencies(16, 1.3, 0.03, seed=2)
    metrics = _compare(tmp_path, BASE16, slow, rules=["real_time_factor:+10%"])
    mean_b, mean_c = sum(BASE16) / 16, sum(slow) / 16
    rtf = metrics["real_time_factor"]
    # 16 scenes over 32 s of video: each request's latency x 0.5
    assert rtf.baseline == pytest.approx(mean_b / 2, rel=1e-6)
    assert rtf.current == pytest.approx(mean_c / 2, rel=1e-6)
    assert (rtf.verdict, rtf.gated) == ("regressed", True)
    assert metrics["vlm_s"].baseline == pytest.approx(16 * mean_b, rel=1e-6)
    assert metrics["seconds_per_scene"].baseline == pytest.approx(mean_b, rel=1e-6)
    assert metrics["vlm_s"].verdict == "regressed"
    assert not metrics["vlm_s"].gated
    assert rtf.effect == pytest.approx(metrics["mean_latency"].effect)
    for descriptive in ("scenes", "frames_per_scene", "pipeline_s", "detection_s",
                        "pipeline_real_time_factor"):
        assert descriptive not in metrics


def test_compare_leaves_the_video_figures_out_of_other_benchmarks(tmp_path: Path) -> None:
    metrics = _compare(tmp_path, BASE16, BASE16, video=False)
    assert "mean_latency" in metrics
    assert not {"real_time_factor", "seconds_per_scene", "vlm_s"} & set(metrics)


def test_compare_says_why_an_absent_video_figure_is_not_judged(tmp_path: Path) -> None:
    metrics = _compare(tmp_path, BASE16, BASE16,
                       cur_info=info("clip.mp4", 20, 40.0))  # 16 of 20 scenes measured
    rtf = metrics["real_time_factor"]
    assert rtf.verdict == "inconclusive"
    assert rtf.note == ("no real_time_factor in the summary: only 16 of 20 scenes were "
                        "measured (give samples= at least 20)")
    assert metrics["mean_latency"].verdict == "unchanged"  # the latencies are judged


def test_latency_scale() -> None:
    video = {"scenes": 4, "duration_s": 8.0, "real_time_factor": 0.1, "vlm_s": 0.8,
             "seconds_per_scene": 0.2}
    assert latency_scale("real_time_factor", video) == 0.5
    assert latency_scale("vlm_s", video) == 4.0
    assert latency_scale("seconds_per_scene", video) == 1.0
    assert latency_scale("latency", video) is None
    assert latency_scale("real_time_factor", {**video, "real_time_factor": None}) is None
    assert latency_scale("vlm_s", {**video, "scenes": None}) is None


# ----------------------------------------------------------------------------- registry


def test_the_video_metrics() -> None:
    metrics = registry.by_name()
    for name in ("real_time_factor", "seconds_per_scene", "vlm_s"):
        m = metrics[name]
        assert (m.summary, m.sample, m.statistic) == (("video", name), name, "mean")
        assert m.higher_is_worse
    for name in ("pipeline_real_time_factor", "pipeline_s", "detection_s", "extraction_s"):
        assert metrics[name].slo == f"max_{name}"
        assert not metrics[name].sample
    for name in ("scenes", "frames_per_scene"):
        assert metrics[name].slo is None
        assert not metrics[name].sample
        assert metrics[name].column is None
    s = video_summary([rec(i, "clip.mp4", i, 1.0) for i in range(3)],
                      ref(info()))
    summary = {"video": s}
    assert metrics["real_time_factor"].value(summary) == pytest.approx(0.25)
    assert metrics["scenes"].value(summary) == 3.0
    assert metrics["frames_per_scene"].value(summary) == 2.0


# ----------------------------------------------------------------------------- terminal


def _entry(summary_video: dict[str, Any], layout: str = "images") -> dict[str, Any]:
    return {"id": "b", "model": "tiny-vlm", "precision": "q4_k_m", "task": "caption_brief",
            "dataset": {"name": "video", "hash": "h", "video": ref(layout=layout)},
            "summary": {"video": summary_video}}


def test_the_terminal_line_of_a_video() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", i, lat) for i, lat in enumerate([1.72, 1.72, 1.72])]
    s = video_summary(records, ref(info(detect_ns=120 * MS,
                                        extract_ns=4 * MS)))
    assert video_lines([_entry(dict(s))]) == [
        "video clip.mp4 · tiny-vlm q4_k_m caption_brief: 3 scenes, 2 frames/scene (images), "
        "12.0 s of video: VLM 5.16 s, 1.72 s/scene, RTF 0.43; detection 0.12 s, "
        "extraction 0.004 s, pipeline RTF 0.44"]
    assert video_lines([{"summary": {}}]) == []


def test_the_terminal_lines_say_why_a_figure_is_absent() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", 0, 1.0, error="boom"), rec(seq(), "clip.mp4", 1, 1.0)]
    broken = info("broken.mp4", 0, None, detect_ns=None, extract_ns=None,
                  error="broken.mp4: cannot open")
    s = video_summary(records, ref(info(), broken))
    lines = video_lines([_entry(dict(s), "panorama")])
    assert lines == [
        "video clip.mp4 · tiny-vlm q4_k_m caption_brief: 3 scenes, 2 frames/scene "
        "(panorama), 12.0 s of video: figures absent: only 2 of 3 scenes were measured "
        "(give samples= at least 4); detection 0.50 s, extraction 0.25 s",
        "video broken.mp4 · tiny-vlm q4_k_m caption_brief: 0 scenes: figures absent: the "
        "video could not be decoded: broken.mp4: cannot open",
        "video 2 videos (0 complete) · tiny-vlm q4_k_m caption_brief: figures absent: no "
        "video has complete figures (clip.mp4: only 2 of 3 scenes were measured (give "
        "samples= at least 4); broken.mp4: the video could not be decoded: broken.mp4: "
        "cannot open)",
    ]
    for line in lines:
        assert "\n" not in line


# ----------------------------------------------------------------------------- SLO check


class _Videos:
    """A stand-in video dataset (VideoSource): what the check looks at."""

    name = "video"

    def samples(self) -> Iterator[Sample]:
        return iter(())

    def fingerprint(self) -> str:
        return "0" * 64

    def video_ref(self) -> dict[str, Any]:
        return ref(info())


def test_a_video_slo_on_a_dataset_without_videos_is_refused_before_the_run() -> None:
    spec = {"max_latency_p95_s": 2.0, "max_real_time_factor": 1.0}
    problem = video_slo_problem(SyntheticScenes(2), spec, "test_x.py::test_a[m]")
    assert problem == (
        "test_x.py::test_a[m]: SLO max_real_time_factor: dataset 'synthetic' is no video "
        "dataset, so it has no real_time_factor (a video dataset's scenes do: "
        "pytest_vlmbench.datasets.video.VideoScenes)")
    assert video_slo_problem(SyntheticScenes(2), {"max_latency_p95_s": 2.0}, "x") is None
    assert video_slo_problem(_Videos(), spec, "x") is None
    for name in ("max_seconds_per_scene", "max_vlm_s", "max_pipeline_real_time_factor",
                 "max_pipeline_s", "max_detection_s", "max_extraction_s"):
        assert video_slo_problem(SyntheticScenes(2), {name: 1.0}, "x") is not None


def test_records_copied_are_not_changed() -> None:
    seq = Seq()
    records = [rec(seq(), "clip.mp4", i, 1.0) for i in range(3)]
    before = copy.deepcopy(records)
    video_summary(records, ref(info()))
    assert records == before


# ----------------------------------------------------------------------------- runner


class _Model:
    """A vision model taking one image per request, answering in about 5 ms."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.settings: dict[str, Any] = {}
        self.artifacts: list[dict[str, Any]] = []
        self.timings_ns = {"resolve": 0, "load": 1}
        self.capabilities = Capabilities(max_images=1)

    def prepare(self, task: Task) -> None:
        return None

    def generate(self, request: Request) -> Response:
        self.events.append("generate")
        t0 = time.perf_counter_ns()
        time.sleep(0.005)
        t1 = time.perf_counter_ns()
        return Response("ok", "stop", 3, 2, t0, t1, t1, {}, {})

    def close(self) -> None:
        pass


class _Scenes(_Videos):
    """Two scenes of one video, adapted to the model (`for_model`) as VideoScenes is."""

    def __init__(self, events: list[str], layout: str = "auto") -> None:
        self.events, self.layout = events, layout

    def for_model(self, max_images: int | None) -> _Scenes:
        self.events.append(f"for_model {max_images}")
        return _Scenes(self.events, "images" if max_images is None else "panorama")

    def samples(self) -> Iterator[Sample]:
        image = PreparedImage(b"jpeg", "0" * 64, 8, 8, "clip.mp4#scene")
        for i in range(2):
            scene = rec(0, "clip.mp4", i, 1.0)["scene"]
            yield Sample(f"clip.mp4/scene-{i:03d}", f"clip.mp4#scene {i}", None, None, {},
                         duration_s=1.0, prepare=lambda prep: [image], scene=scene)

    def video_ref(self) -> dict[str, Any]:
        self.events.append("video_ref")
        return ref(info("clip.mp4", 2, 2.0), layout=self.layout)


def test_the_runner_adapts_reads_the_videos_before_measuring_and_summarises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    task = Task(name="t", prompt="Describe.", params=GenerationParams(max_tokens=4))
    plan = BenchmarkPlan(benchmark_id="b", test="b", task=task, dataset=_Scenes(events),
                         prep=ImagePrep(long_edge=64), samples=2, warmup=1, seed=0,
                         run_id="r")
    writer = RecordWriter(tmp_path / "r.jsonl")
    runner = Runner(ModelCase("m", "fp32", "cpu", "test", "vision"), _Model(events), plan,
                    writer)
    start = runner._start_measuring
    monkeypatch.setattr(runner, "_start_measuring",
                        lambda: (events.append("start measuring"), start())[1])
    entries: list[dict[str, Any]] = []
    runner.run(entries.append)
    writer.close()
    assert events == ["for_model 1", "video_ref", "start measuring", "generate", "generate",
                      "generate"]
    [entry] = entries
    assert entry["dataset"]["video"]["layout"] == "panorama"
    video = entry["summary"]["video"]
    assert video["videos_complete"] == 1
    records = read_records(tmp_path / "r.jsonl")
    measured = [r for r in records if r["phase"] == "measure"]
    assert video["vlm_s"] == pytest.approx(sum(r["t_end_ns"] - r["t_start_ns"]
                                               for r in measured) / S)
    assert video["real_time_factor"] == pytest.approx(video["vlm_s"] / 2.0)
    validate(video, entry["dataset"]["video"])
    results.validate({**_document(), "benchmarks": [entry]})


def _document() -> dict[str, Any]:
    """The header of a valid results document (the real run's in tests/data)."""
    from tests.test_compare import REAL

    doc = json.loads(REAL.read_text())
    return {k: v for k, v in doc.items() if k != "benchmarks"}


def test_compare_samples_take_only_the_complete_videos_scenes() -> None:
    """The combined figure sums the complete videos only: its compare samples are their
    scenes' latencies, never those of a video with scenes missing."""
    from pytest_vlmbench.compare.samples import columns_of, samples

    seq = Seq()
    records = [*(rec(seq(), "clip.mp4", i, lat) for i, lat in enumerate([1.0, 2.0, 3.0])),
               *(rec(seq(), "other.mp4", i, 10.0) for i in range(2))]  # 2 of 3 scenes
    summary_video = video_summary(records, ref(info("clip.mp4"), info("other.mp4")))
    assert summary_video["videos_complete"] == 1
    entry = {"summary": {"video": summary_video}}
    [cols] = columns_of(records).values()
    got = samples(entry, cols)
    rtf = registry.by_name()["real_time_factor"]
    assert list(got.of(rtf)) == pytest.approx([lat * 3 / 12.0 for lat in (1.0, 2.0, 3.0)])
    assert float(got.of(rtf).mean()) == pytest.approx(summary_video["real_time_factor"])
    assert len(got.values["latency"]) == 5  # latency itself keeps every request
