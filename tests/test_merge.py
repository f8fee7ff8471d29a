"""Tests for merge.py and `vlmbench merge`: runs combined without losing or doubling records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench import cli
from pytest_vlmbench.metrics.summary import METHODS, summarize
from pytest_vlmbench.results import document as results
from pytest_vlmbench.results.document import KIND, SCHEMA_VERSION, ResultsError
from pytest_vlmbench.results.merge import (
    MergeError,
    MergeWarning,
    merge_documents,
    merge_files,
    merge_loaded,
    read_input,
)
from pytest_vlmbench.results.naming import records_name
from pytest_vlmbench.run.records import read_records

CPU = {"name": "cpu", "description": "a CPU, no accelerator", "accelerator": "cpu",
       "memory_gb": None, "bandwidth_gbs": None, "precisions": ["fp32", "q4_k_m"],
       "power_meter": "rapl", "detected": "cpu", "evidence": "no Jetson and no NVIDIA GPU seen"}
H100 = {"name": "h100", "description": "NVIDIA H100", "accelerator": "cuda",
        "memory_gb": 80, "bandwidth_gbs": 3350, "precisions": ["fp16", "q4_k_m"],
        "power_meter": "nvml", "detected": "h100", "evidence": "nvidia-smi: NVIDIA H100"}

Key = tuple[str, str, int]


def bench_id(task: str, model: str, device: str) -> str:
    return f"benchmarks/test_default_suite.py::test_{task}[{model}-q4_k_m-{device}]"


def make_record(run_id: str, benchmark: str, seq: int, device: str) -> dict[str, Any]:
    """A record shaped like the real ones in .vlmbench/*.records.jsonl."""
    t0 = 1_000_000_000 * (seq + 1)
    return {
        "run_id": run_id, "benchmark": benchmark, "seq": seq,
        "phase": "warmup" if seq == 0 else "measure", "sample_id": f"scene-{seq:04d}",
        "model": "tiny-vlm", "precision": "q4_k_m", "backend": "llama_cpp", "device": device,
        "task": "caption_brief", "t_start_ns": t0, "t_first_token_ns": t0 + 150_000_000,
        "t_end_ns": t0 + 900_000_000, "prepare_ns": 66_000_000, "prompt_tokens": 141,
        "completion_tokens": 62, "finish_reason": "stop", "output": "a red square",
        "parse": "not_checked", "parse_detail": None,
        "stages_ns": {"prefill": 600_000, "decode": 1_400_000},
        "counts": {"prefill_tokens": 141, "decode_evals": 62, "image_tokens": 64},
        "images": [{"source": "synthetic:seed=0/index=0", "sha256": "4e" * 32, "width": 448,
                    "height": 448}],
        "error": None,
    }


def make_entry(run_id: str, benchmark: str, device: str, records: list[dict[str, Any]],
               records_file: str, with_run_id: bool = True) -> dict[str, Any]:
    """A benchmark entry shaped like runner.Runner._entry's (see a real document)."""
    measured = [r for r in records if r["phase"] == "measure"]
    entry: dict[str, Any] = {
        "id": benchmark, "test": benchmark, "model": "tiny-vlm", "backend": "llama_cpp",
        "precision": "q4_k_m", "device": device, "task": "caption_brief",
        "prompt_version": "5b33d2c35c4ea5d2", "input_mode": "image",
        "dataset": {"name": "synthetic", "hash": "cf" * 32,
                    "prep": {"long_edge": 448, "jpeg_quality": 90}},
        "samples": len(measured), "warmup": {"requests": 1, "latency_s": [0.9]},
        "status": "complete", "error": None,
        "summary": summarize(records, checks_output=False, load_s=1.1, peak_rss=570_077_184),
        "slo": [], "slo_passed": None, "warnings": [],
        "records": {"file": records_file, "measured": len(measured), "warmup": 1},
        "settings": {"n_ctx": 2048, "n_threads": 2},
        "started_at": "2026-11-23T10:18:27+00:00",
    }
    if with_run_id:
        entry["run_id"] = run_id
    return entry


def write_run(
    directory: Path, run_id: str, device: dict[str, Any] = CPU,
    benchmarks: tuple[str, ...] = ("caption_brief",), *, status: str = "complete",
    started_at: str = "2026-11-23T10:18:25+00:00",
    finished_at: str | None = "2026-11-23T10:19:20+00:00", name: str | None = None,
    samples: int = 3, extra_records: list[dict[str, Any]] | None = None,
    entry_run_id: bool = True,
) -> Path:
    """Write a valid results document and its records file for one run; return its path."""
    path = directory / (name or f"results-{run_id}.json")
    rname = path.name.removesuffix(".json") + ".records.jsonl"
    all_records: list[dict[str, Any]] = []
    entries = []
    for task in benchmarks:
        bid = bench_id(task, "tiny-vlm", device["name"])
        recs = [make_record(run_id, bid, seq, device["name"]) for seq in range(samples + 1)]
        all_records += recs
        entries.append(make_entry(run_id, bid, device["name"], recs, rname, entry_run_id))
    all_records += extra_records or []
    doc = {
        "kind": KIND, "schema_version": SCHEMA_VERSION,
        "tool": {"name": "pytest-vlmbench", "version": "0.1.0"},
        "run_id": run_id, "started_at": started_at,
        "finished_at": None if status == "running" else finished_at, "status": status,
        "command": [".venv/bin/pytest", "benchmarks/", f"--vlm-device={device['name']}"],
        "settings": {"device": device["name"], "samples": samples, "warmup": 1, "seed": 0},
        "environment": {"hostname": f"host-{device['name']}", "cpu": "AMD EPYC",
                        "python": "3.11.7"},
        "device": dict(device),
        "methods": dict(METHODS),
        "power": {"requested": "auto", "meter": None, "absent_reason": "a virtual machine"},
        "power_trace_file": None,
        "loads": [{"model": "tiny-vlm", "precision": "q4_k_m", "backend": "llama_cpp",
                   "device": device["name"], "count": 1, "error": None, "load_s": 1.1}],
        "benchmarks": entries,
        "records_file": rname,
    }
    results.write_atomic(path, doc)  # validates
    (directory / rname).write_text(
        "".join(json.dumps(r) + "\n" for r in all_records), encoding="utf-8"
    )
    return path


def keys_of(records: list[dict[str, Any]]) -> list[Key]:
    return [(r["run_id"], r["benchmark"], r["seq"]) for r in records]


def input_keys(*paths: Path) -> list[Key]:
    out: list[Key] = []
    for p in paths:
        doc = results.load(p)
        out += keys_of(read_records(results.records_path(p, doc)))
    return out


def merged_records(out: Path) -> list[dict[str, Any]]:
    return read_records(out.with_name(records_name(out)))


@pytest.fixture
def two_devices(tmp_path: Path) -> tuple[Path, Path]:
    a = write_run(tmp_path, "20261123T101825Z-aaaaaa", CPU, ("caption_brief", "photo_score"))
    b = write_run(tmp_path, "20261124T090000Z-bbbbbb", H100, ("caption_brief",),
                  started_at="2026-11-24T09:00:00+00:00",
                  finished_at="2026-11-24T09:05:00+00:00")
    return a, b


def test_helper_writes_valid_runs(two_devices: tuple[Path, Path]) -> None:
    for path in two_devices:
        _, doc, records = read_input(path)
        results.validate(doc)
        for r in records:
            results.validate_record(r)


def test_two_devices_merge_into_one_valid_document(
    tmp_path: Path, two_devices: tuple[Path, Path]
) -> None:
    a, b = two_devices
    out = tmp_path / "merged" / "all.json"
    doc = merge_documents([a, b], out)

    results.validate(doc)
    assert results.load(out) == doc
    assert doc["run_id"].startswith("merged-")
    assert doc["status"] == "complete"
    assert doc["records_file"] == "all.records.jsonl"
    assert doc["started_at"] == "2026-11-23T10:18:25+00:00"
    assert doc["finished_at"] == "2026-11-24T09:05:00+00:00"
    assert [(e["run_id"], e["device"]) for e in doc["benchmarks"]] == [
        ("20261123T101825Z-aaaaaa", "cpu"), ("20261123T101825Z-aaaaaa", "cpu"),
        ("20261124T090000Z-bbbbbb", "h100"),
    ]
    assert {e["records"]["file"] for e in doc["benchmarks"]} == {"all.records.jsonl"}
    assert [ld["run_id"] for ld in doc["loads"]] == [
        "20261123T101825Z-aaaaaa", "20261124T090000Z-bbbbbb"
    ]
    # every record, exactly once
    got, want = keys_of(merged_records(out)), input_keys(a, b)
    assert len(got) == len(want) == 12
    assert set(got) == set(want)
    assert len(set(got)) == len(got)
    # one header per run, with what the run was
    assert [(h["run_id"], h["source"], h["device"]["name"]) for h in doc["runs"]] == [
        ("20261123T101825Z-aaaaaa", a.name, "cpu"), ("20261124T090000Z-bbbbbb", b.name, "h100"),
    ]
    for h in doc["runs"]:
        assert {"started_at", "finished_at", "status", "command", "settings",
                "environment"} <= set(h)
    # devices differ: the first one's, with the mix spelled out; name stays a string
    assert doc["device"]["name"] == "cpu"
    assert doc["device"]["mixed"] == ["cpu", "h100"]
    assert "mixed" in doc["device"]["evidence"]
    assert "h100" in doc["device"]["evidence"]
    assert doc["environment"] == results.load(a)["environment"]
    # nothing half-written left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["all.json", "all.records.jsonl"]


def test_same_device_has_no_mixed_note(tmp_path: Path) -> None:
    a = write_run(tmp_path, "run-a")
    b = write_run(tmp_path, "run-b")
    doc = merge_documents([a, b], tmp_path / "m.json")
    assert doc["device"] == results.load(a)["device"]


def test_status_is_the_weakest(tmp_path: Path) -> None:
    a = write_run(tmp_path, "run-a")
    b = write_run(tmp_path, "run-b", status="interrupted")
    c = write_run(tmp_path, "run-c", status="running")
    assert merge_documents([a, b], tmp_path / "ab.json")["status"] == "interrupted"
    doc = merge_documents([a, b, c], tmp_path / "abc.json")
    assert (doc["status"], doc["finished_at"]) == ("running", None)


def test_entries_without_run_id_get_the_documents(tmp_path: Path) -> None:
    a = write_run(tmp_path, "old-run", entry_run_id=False)
    doc = merge_documents([a], tmp_path / "m.json")
    assert [e["run_id"] for e in doc["benchmarks"]] == ["old-run"]


def test_same_file_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path, "run-a")
    with pytest.raises(MergeError, match="given twice"):
        merge_documents([a, a], tmp_path / "m.json")
    copy = tmp_path / "copy.json"
    shutil.copy(a, copy)
    code = cli.main(["merge", str(tmp_path / "m.json"), str(a), str(copy)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vlmbench: run run-a is in both")
    assert str(copy) in err
    assert err.count("\n") == 1
    assert not (tmp_path / "m.json").exists()


def test_shared_run_id_needs_permission_and_keeps_the_run_id(tmp_path: Path) -> None:
    """pytest-xdist workers: one run id, different benchmarks."""
    w0 = write_run(tmp_path, "run-x", name="results-run-x.gw0.json")
    w1 = write_run(tmp_path, "run-x", name="results-run-x.gw1.json", benchmarks=("photo_score",))
    with pytest.raises(MergeError, match=r"run run-x is in both .*gw0.json and .*gw1.json"):
        merge_documents([w0, w1], tmp_path / "m.json")
    doc = merge_documents([w0, w1], tmp_path / "m.json", shared_run_id=True)
    assert doc["run_id"] == "run-x"
    assert [h["source"] for h in doc["runs"]] == [w0.name, w1.name]
    assert len(merged_records(tmp_path / "m.json")) == 8


def test_shared_run_id_still_refuses_duplicate_entries(tmp_path: Path) -> None:
    w0 = write_run(tmp_path, "run-x", name="results-run-x.gw0.json")
    w1 = write_run(tmp_path, "run-x", name="results-run-x.gw1.json")
    with pytest.raises(MergeError) as info:
        merge_documents([w0, w1], tmp_path / "m.json", shared_run_id=True)
    message = str(info.value)
    assert "test_caption_brief" in message
    assert "run-x" in message
    assert str(w0) in message
    assert str(w1) in message
    assert not (tmp_path / "m.json").exists()


def test_shared_run_id_still_refuses_duplicate_records(tmp_path: Path) -> None:
    stray = make_record("run-x", bench_id("photo_score", "tiny-vlm", "cpu"), 2, "cpu")
    w0 = write_run(tmp_path, "run-x", name="results-run-x.gw0.json", extra_records=[stray])
    w1 = write_run(tmp_path, "run-x", name="results-run-x.gw1.json", benchmarks=("photo_score",))
    with pytest.raises(MergeError, match=r"record seq 2 of benchmark .*photo_score.* run run-x"):
        merge_documents([w0, w1], tmp_path / "m.json", shared_run_id=True)


def test_merge_loaded_works_in_memory(tmp_path: Path) -> None:
    a = write_run(tmp_path, "run-a")
    b = write_run(tmp_path, "run-b", H100)
    merged = merge_loaded([read_input(a), read_input(b)], records_file="x.records.jsonl",
                          run_id="given", command=["x"])
    assert (merged.document["run_id"], merged.document["command"]) == ("given", ["x"])
    assert merged.run_ids == ["run-a", "run-b"]
    assert set(keys_of(merged.records)) == set(input_keys(a, b))
    assert not list(tmp_path.glob("x.*"))


def test_records_without_entry_are_kept_with_a_warning(tmp_path: Path) -> None:
    orphan = bench_id("photo_score", "tiny-vlm", "cpu")  # interrupted before its entry
    extra = [make_record("run-a", orphan, seq, "cpu") for seq in range(2)]
    a = write_run(tmp_path, "run-a", extra_records=extra, status="interrupted")
    with pytest.warns(MergeWarning, match=r"kept 2 records of 1 benchmark"):
        doc = merge_documents([a], tmp_path / "m.json")
    assert len(merged_records(tmp_path / "m.json")) == 6
    assert doc["runs"][0]["records_without_entry"] == 2


def test_missing_records_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path, "run-a")
    b = write_run(tmp_path, "run-b")
    rfile = tmp_path / "results-run-b.records.jsonl"
    rfile.unlink()
    with pytest.raises(MergeError, match=r"records file .*results-run-b\.records\.jsonl"):
        merge_documents([a, b], tmp_path / "m.json")
    assert cli.main(["merge", str(tmp_path / "m.json"), str(a), str(b)]) == 2
    assert str(rfile) in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "not-results", "bad-record"])
def test_corrupt_input_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    a = write_run(tmp_path, "run-a")
    b = write_run(tmp_path, "run-b")
    if damage == "truncate":
        b.write_text(b.read_text()[:200])
        expected = "not JSON"
    elif damage == "not-results":
        b.write_text('{"hello": 1}')
        expected = "not a pytest-vlmbench results document"
    else:
        rfile = tmp_path / "results-run-b.records.jsonl"
        rfile.write_text(rfile.read_text() + '{"run_id": "run-b", "benchm')
        expected = "not a JSON record"
    with pytest.raises(ResultsError, match=expected):
        merge_documents([a, b], tmp_path / "m.json")
    assert cli.main(["merge", str(tmp_path / "m.json"), str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlmbench: ")
    assert expected in err
    assert err.count("\n") == 1
    assert not (tmp_path / "m.json").exists()


def test_existing_out_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path, "run-a")
    out = tmp_path / "m.json"
    out.write_text("precious")
    assert cli.main(["merge", str(out), str(a)]) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert cli.main(["merge", "--force", str(out), str(a)]) == 0
    assert results.load(out)["benchmarks"][0]["run_id"] == "run-a"


def test_out_equal_to_an_input_is_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path, "run-a")
    b = write_run(tmp_path, "run-b")
    before = a.read_text()
    with pytest.raises(MergeError, match="is an input and the output"):
        merge_files([a, b], a, force=True)
    assert a.read_text() == before


def test_merged_document_merges_again(tmp_path: Path, two_devices: tuple[Path, Path]) -> None:
    a, b = two_devices
    c = write_run(tmp_path, "20261125T080000Z-cccccc", H100, ("photo_score",),
                  status="interrupted")
    first = tmp_path / "first.json"
    merge_documents([a, b], first)
    doc = merge_documents([first, c], tmp_path / "second.json")

    results.validate(doc)
    assert [(h["run_id"], h["source"]) for h in doc["runs"]] == [
        ("20261123T101825Z-aaaaaa", a.name), ("20261124T090000Z-bbbbbb", b.name),
        ("20261125T080000Z-cccccc", c.name),
    ]
    assert doc["status"] == "interrupted"
    assert doc["device"]["mixed"] == ["cpu", "h100"]
    assert doc["device"]["evidence"].count("mixed") == 1
    got, want = keys_of(merged_records(tmp_path / "second.json")), input_keys(a, b, c)
    assert len(got) == len(want) == 16
    assert set(got) == set(want)
    assert len(doc["benchmarks"]) == 4
    # a run already inside the merged document is refused
    with pytest.raises(MergeError, match=r"run 20261123T101825Z-aaaaaa is in both"):
        merge_documents([first, a], tmp_path / "third.json")


def test_different_methods_are_noted_in_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path, "run-a")
    b = write_run(tmp_path, "run-b")
    doc = results.load(b)
    doc["methods"]["latency"] = "something else"
    results.write_atomic(b, doc)
    merged = merge_documents([a, b], tmp_path / "m.json")
    assert merged["methods"] == results.load(a)["methods"]
    assert "methods_differ" not in merged["runs"][0]
    assert merged["runs"][1]["methods_differ"] == {"latency": "something else"}
    assert "latency" in merged["runs"][1]["notes"][0]


def test_cli_merge_summary_and_validate(
    tmp_path: Path, two_devices: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_devices
    out = tmp_path / "m.json"
    assert cli.main(["merge", str(out), str(a), str(b)]) == 0
    assert capsys.readouterr().out == f"merged 2 runs, 3 benchmarks, 12 records -> {out}\n"
    assert cli.main(["validate", str(out)]) == 0
    assert capsys.readouterr().out == f"ok: {out} (3 benchmarks, 12 records)\n"
