"""The report's CSV files, loadable by pandas without options (a header row, commas,
RFC 4180 quoting, empty cells for absent values, full-precision numbers):

- summary.csv: one row per benchmark entry of every run read (`shown` false for an
  older run of a configuration the tables show), every report figure by name;
- records.csv: one row per record (tidy): ids, phase, latency, TTFT, tokens, parse,
  error, one column per stage and per score, the scene of a video sample;
- videos.csv: one row per (benchmark, video) with that video's figures.

`scan` writes records.csv in one streaming pass over each source's records and collects,
for the configurations shown, what the plots draw from the records (`Samples`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pytest_vlmbench.report.figures import Figure
from pytest_vlmbench.report.plots import Samples
from pytest_vlmbench.report.sources import Config, Source, iter_records, record_key

RECORD_COLUMNS = (
    "row", "source", "run_id", "benchmark", "seq", "phase", "level", "sample_id", "model",
    "precision", "backend", "device", "task", "ok", "t_start_ns", "t_first_token_ns",
    "t_end_ns", "latency_s", "ttft_s", "prepare_s", "prompt_tokens", "completion_tokens",
    "finish_reason", "parse", "error_stage", "error_type", "error_message",
)
SCENE_COLUMNS = ("scene_video", "scene_index", "scene_start_s", "scene_duration_s",
                 "scene_layout")
ENTRY_COLUMNS = ("row", "shown", "source", "source_file", "run_id", "benchmark", "test",
                 "model", "backend", "device", "precision", "task", "dataset", "modality",
                 "level", "status", "slo_passed", "started_at")


def _cell(value: Any) -> Any:
    """None as an empty cell; bools as true/false (pandas reads them as bool)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _writer(fh: IO[str]) -> Any:
    return csv.writer(fh, lineterminator="\n")


def write_summary(path: Path, every: Sequence[Config], shown: Sequence[Config],
                  figures: Sequence[Figure]) -> None:
    """summary.csv: every entry of every run, each figure's summary value as is."""
    shown_keys = {c.key for c in shown}
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = _writer(fh)
        w.writerow([*ENTRY_COLUMNS, *(f.name for f in figures)])
        for c in every:
            e = c.entry
            w.writerow([_cell(v) for v in (
                c.key, c.key in shown_keys, c.source.label, str(c.source.path), c.run_id,
                e["id"], e["test"], c.model, c.backend, c.device, c.precision, c.task,
                e["dataset"]["name"], c.modality, c.level, e["status"], e.get("slo_passed"),
                e["started_at"],
                *(f.value(c.summary) for f in figures),
            )])


def write_videos(path: Path, shown: Sequence[Config]) -> bool:
    """videos.csv (per benchmark and video); False, and no file, when no video."""
    rows = []
    keys = ("duration_s", "scenes", "scenes_measured", "failed_requests", "frames_per_scene",
            "vlm_s", "seconds_per_scene", "real_time_factor", "detection_s", "extraction_s",
            "prepare_s", "pipeline_s", "pipeline_real_time_factor", "absent_reason")
    for c in shown:
        video = c.summary.get("video")
        if not isinstance(video, Mapping):
            continue
        for v in video.get("videos") or []:
            rows.append([c.key, c.label, v.get("id"), *(v.get(k) for k in keys)])
    if not rows:
        return False
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = _writer(fh)
        w.writerow(["row", "configuration", "video", *keys])
        w.writerows([[_cell(x) for x in r] for r in rows])
    return True


class _Collect:
    """Per shown configuration: successful latencies, TTFTs, failures, scores."""

    def __init__(self) -> None:
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.failed = 0
        self.scores: dict[str, list[float]] = {}

    def add(self, r: Mapping[str, Any], latency: float | None, ttft: float | None) -> None:
        if r.get("error") is not None:
            self.failed += 1
            return
        if latency is not None:
            self.latency.append(latency)
        if ttft is not None:
            self.ttft.append(ttft)
        for name, value in (r.get("scores") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.scores.setdefault(name, []).append(float(value))

    def samples(self) -> Samples:
        return Samples(self.latency, self.ttft, self.failed, self.scores)


def _columns_of(configs: Iterable[Config]) -> tuple[list[str], list[str]]:
    """Stage and score names, from the summaries (each lists what its records have)."""
    stages: dict[str, None] = {}
    scores: dict[str, None] = {}
    for c in configs:
        # the records' own stages (the summary adds unattributed, and prepare is a column)
        stages.update(dict.fromkeys(s for s in c.summary.get("stages_s") or {}
                                    if s not in ("unattributed", "prepare")))
        quality = c.summary.get("quality")
        if isinstance(quality, Mapping):
            scores.update(dict.fromkeys(quality.get("scores") or {}))
    return list(stages), list(scores)


def scan(path: Path, sources: Sequence[Source], every: Sequence[Config],
         shown: Sequence[Config]) -> dict[str, Samples]:
    """Write records.csv (every record of every source) and return, per shown config's
    key, its measured records' Samples."""
    by_key = {c.key: c for c in every}
    collect = {c.key: _Collect() for c in shown}
    stages, scores = _columns_of(every)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = _writer(fh)
        w.writerow([*RECORD_COLUMNS, *(f"stage_{s}_s" for s in stages),
                    *(f"score_{s}" for s in scores), *SCENE_COLUMNS, "output"])
        for src in sources:
            for r in iter_records(src):
                key = record_key(src, r)
                c = by_key.get(key)
                start, first, end = r.get("t_start_ns"), r.get("t_first_token_ns"), \
                    r.get("t_end_ns")
                latency = None if start is None or end is None else (end - start) / 1e9
                ttft = None if start is None or first is None else (first - start) / 1e9
                if r.get("phase") == "measure" and key in collect:
                    collect[key].add(r, latency, ttft)
                err: Mapping[str, Any] = r.get("error") or {}
                prepare = r.get("prepare_ns")
                st = r.get("stages_ns") or {}
                sc = r.get("scores") or {}
                scene: Mapping[str, Any] = r.get("scene") or {}
                w.writerow([_cell(v) for v in (
                    key if c is not None else "", src.label, r.get("run_id"),
                    r.get("benchmark"), r.get("seq"), r.get("phase"), r.get("level"),
                    r.get("sample_id"), r.get("model"), r.get("precision"), r.get("backend"),
                    r.get("device"), r.get("task"), r.get("error") is None, start, first, end,
                    latency, ttft, None if prepare is None else prepare / 1e9,
                    r.get("prompt_tokens"), r.get("completion_tokens"), r.get("finish_reason"),
                    r.get("parse"), err.get("stage"), err.get("type"), err.get("message"),
                    *(None if st.get(s) is None else st[s] / 1e9 for s in stages),
                    *(sc.get(s) for s in scores),
                    scene.get("video"), scene.get("index"), scene.get("start_s"),
                    scene.get("duration_s"), scene.get("layout"), r.get("output"),
                )])
    return {k: v.samples() for k, v in collect.items()}
