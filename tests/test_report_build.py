"""The report over several documents and runs: which run of a configuration is shown,
which configurations compete, labels, best values across tables, files of an earlier
report in a reused directory, and bad records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.report.build import build as build_report
from pytest_vlmbench.report.figures import headline
from pytest_vlmbench.report.sections import headline_sections
from pytest_vlmbench.report.sources import (
    ReportInputError,
    configs_of,
    iter_records,
    load_sources,
    newest,
)
from pytest_vlmbench.results.document import write_atomic
from tests.report_data import DATA, entry


def write(tmp_path: Path, name: str, run_id: str, started: str,
          *entries: dict[str, Any]) -> Path:
    doc = json.loads(DATA.read_text())
    records = DATA.with_suffix(".records.jsonl").read_text().splitlines()
    for e in entries:
        e.update(started_at=started, run_id=run_id)
    doc.update(run_id=run_id, started_at=started, benchmarks=list(entries),
               records_file=f"{name}.records.jsonl")
    path = tmp_path / f"{name}.json"
    write_atomic(path, doc)
    lines = []
    for e in entries:  # the real records, re-labelled for this run and entry
        for line in records:
            r = json.loads(line)
            r.update(run_id=run_id, benchmark=e["id"])
            lines.append(json.dumps(r))
    (tmp_path / f"{name}.records.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_the_newest_complete_run_is_shown_and_a_newer_failed_one_listed(tmp_path: Path) -> None:
    a = write(tmp_path, "day1", "run-day1", "2026-11-01T00:00:00+00:00",
              entry("m", latency_s__median=1.0))
    b = write(tmp_path, "day2", "run-day2", "2026-11-02T00:00:00+00:00",
              entry("m", status="error", latency_s__median=9.0))
    [shown] = newest(configs_of(load_sources([a, b])))
    assert shown.run_id == "run-day1"
    assert [c.run_id for c in shown.superseded] == ["run-day2"]


def test_a_newer_complete_run_replaces_an_older_one(tmp_path: Path) -> None:
    a = write(tmp_path, "day1", "run-day1", "2026-11-01T00:00:00+00:00", entry("m"))
    b = write(tmp_path, "day2", "run-day2", "2026-11-02T00:00:00+00:00", entry("m"))
    [shown] = newest(configs_of(load_sources([a, b])))
    assert shown.run_id == "run-day2"


def test_different_prompt_versions_are_different_workloads(tmp_path: Path) -> None:
    one, two = entry("a"), entry("b")
    two["prompt_version"] = "f" * 16
    path = write(tmp_path, "r", "run-1", "2026-11-01T00:00:00+00:00", one, two)
    a, b = newest(configs_of(load_sources([path])))
    assert a.workload != b.workload
    assert "prompt" in a.workload[1]


def test_labels_are_unique_when_only_the_dataset_differs(tmp_path: Path) -> None:
    one, two = entry("m"), entry("m")
    two["dataset"] = {"name": "coco", "hash": "1" * 64}
    two["id"] = two["test"] = one["id"] + "-coco"
    path = write(tmp_path, "r", "run-1", "2026-11-01T00:00:00+00:00", one, two)
    configs = newest(configs_of(load_sources([path])))
    assert len({c.label for c in configs}) == 2


def test_best_values_are_marked_across_the_modality_tables(tmp_path: Path) -> None:
    """One workload split over the image and the text table: the best is the best of
    both, not of each table."""
    text = entry("t", decode_tokens_per_s=29.9)
    image = entry("i", decode_tokens_per_s=30.6)
    image["input_mode"] = "image"
    path = write(tmp_path, "r", "run-1", "2026-11-01T00:00:00+00:00", text, image)
    configs = newest(configs_of(load_sources([path])))
    for c in configs:
        c.variant = ""  # force one workload: the rule under test is the tables'
    tables = {s.id: s.blocks[0] for s in headline_sections(configs)}
    col = tables["headline-text"].headers.index("decode tok/s")  # type: ignore[union-attr]
    assert not tables["headline-text"].rows[0][col].best  # type: ignore[union-attr]
    col = tables["headline-image"].headers.index("decode tok/s")  # type: ignore[union-attr]
    assert tables["headline-image"].rows[0][col].best  # type: ignore[union-attr]


def test_reused_directory_loses_an_earlier_reports_files(tmp_path: Path) -> None:
    path = write(tmp_path, "r", "run-1", "2026-11-01T00:00:00+00:00", entry("a"))
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    (out / "videos.csv").write_text("stale\n")
    (out / "plots" / "video_rtf.png").write_bytes(b"stale")
    build_report([path], out)
    assert not (out / "videos.csv").exists()
    assert not (out / "plots" / "video_rtf.png").exists()
    markdown = (out / "report.md").read_text()
    definitions = markdown.split("## Definitions")[1]
    for f in headline():  # each column defined once
        assert definitions.count(f"| {f.header} |") == 1, f.header


def test_a_record_without_its_keys_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "r", "run-1", "2026-11-01T00:00:00+00:00", entry("a"))
    (tmp_path / "r.records.jsonl").write_text('{"seq": 1}\n')
    [source] = load_sources([path])
    with pytest.raises(ReportInputError, match=r"r\.records\.jsonl:1: not a record"):
        list(iter_records(source))
