"""Tests for results.py, records.py and environment.py: the files a run leaves behind."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench import environment, results
from pytest_vlmbench.records import RecordWriter, read_records
from pytest_vlmbench.results import (
    KIND,
    SCHEMA_VERSION,
    ResultsError,
    load,
    records_path,
    validate,
    validate_record,
    write_atomic,
)
from pytest_vlmbench.summary import METHODS, summarize


def record(seq: int, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": "20250101-000000-abcd", "benchmark": "test_caption[m-q4_k_m-cpu]",
        "seq": seq, "phase": "measure", "sample_id": f"img-{seq}", "model": "m",
        "precision": "q4_k_m", "backend": "llama_cpp", "device": "cpu", "task": "caption",
        "t_start_ns": 1_000_000_000 * seq, "t_first_token_ns": 1_000_000_000 * seq + 100,
        "t_end_ns": 1_000_000_000 * seq + 500_000_000, "prepare_ns": 1234,
        "prompt_tokens": 12, "completion_tokens": 8, "finish_reason": "stop",
        "output": '{"caption": "a cat"}', "parse": "valid", "parse_detail": None,
        "stages_ns": {"prefill": 10, "decode": 20}, "counts": {"image_tokens": 64},
        "images": [{"source": "cat.jpg", "sha256": "ab" * 32, "width": 448, "height": 336}],
        "error": None,
    }
    base.update(overrides)
    return base


def benchmark_entry(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A benchmark entry shaped like runner.Runner._entry's."""
    return {
        "id": "test_caption[m-q4_k_m-cpu]", "test": "benchmarks/test_x.py::test_caption",
        "model": "m", "backend": "llama_cpp", "precision": "q4_k_m", "device": "cpu",
        "task": "caption", "prompt_version": "0123456789abcdef", "input_mode": "image",
        "dataset": {"name": "synthetic", "hash": "f" * 16,
                    "prep": {"long_edge": 448, "jpeg_quality": 90}},
        "samples": len(records), "warmup": {"requests": 1, "latency_s": [0.7]},
        "status": "complete", "error": None,
        "summary": summarize(records, checks_output=True, load_s=0.5, peak_rss=10**9),
        "slo": [{"metric": "max_latency_p95_s", "op": "<=", "limit": 1.0, "measured": 0.5,
                 "passed": True}],
        "slo_passed": True, "warnings": [],
        "records": {"file": "run.records.jsonl", "measured": len(records), "warmup": 0},
        "settings": {"n_threads": 2}, "started_at": "2025-01-01T00:00:00+00:00",
    }


def minimal_doc() -> dict[str, Any]:
    return {
        "kind": KIND, "schema_version": SCHEMA_VERSION,
        "tool": {"name": "pytest-vlmbench", "version": "0.1.0"},
        "run_id": "20250101-000000-abcd", "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": None, "status": "running", "command": ["pytest", "benchmarks/"],
        "settings": {}, "environment": {},
        "device": {"name": "cpu", "detected": "cpu", "evidence": "no GPU"},
        "methods": dict(METHODS), "loads": [], "benchmarks": [],
        "records_file": "run.records.jsonl",
    }


def full_doc() -> dict[str, Any]:
    doc = minimal_doc()
    doc["benchmarks"] = [benchmark_entry([record(i) for i in range(3)])]
    doc["loads"] = [{
        "model": "m", "precision": "q4_k_m", "backend": "llama_cpp", "device": "cpu",
        "load_s": 0.5, "resolve_s": 0.01, "rss_before_bytes": 1, "rss_after_bytes": 2,
        "artifacts": [{"path": "/x/m.gguf", "source": "path:m.gguf", "sha256": "0" * 64,
                       "bytes": 1234}],
        "settings": {}, "count": 1, "error": None,
    }]
    doc["status"] = "complete"
    doc["finished_at"] = "2025-01-01T00:01:00+00:00"
    return doc


def test_hand_built_documents_are_valid() -> None:
    validate(minimal_doc())
    validate(full_doc())


# --- round trip ----------------------------------------------------------------------------

texts = st.text(max_size=20)
numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**12), 10**12)
json_leaf = st.none() | st.booleans() | numbers | texts
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc = full_doc()
    doc["run_id"] = draw(texts)
    doc["command"] = draw(st.lists(texts, max_size=4))
    doc["status"] = draw(st.sampled_from(["running", "complete", "interrupted"]))
    doc["finished_at"] = draw(st.none() | texts)
    doc["settings"] = draw(st.dictionaries(texts, json_value, max_size=4))
    doc["environment"] = draw(st.dictionaries(texts, json_value, max_size=4))
    doc["methods"] = draw(st.dictionaries(texts, texts, max_size=4))
    bench = doc["benchmarks"][0]
    bench["model"] = draw(texts)
    bench["warnings"] = draw(st.lists(texts, max_size=3))
    bench["warmup"]["latency_s"] = draw(st.lists(st.none() | numbers, max_size=4))
    bench["settings"] = draw(st.dictionaries(texts, json_value, max_size=3))
    summary = bench["summary"]
    summary["load_s"] = draw(st.none() | numbers)
    summary["peak_rss_bytes"] = draw(st.none() | st.integers(0, 2**62))
    summary["latency_s"]["p95"] = draw(st.none() | numbers)
    summary["decode_tokens_per_s"] = draw(st.none() | numbers)
    bench["slo"][0]["measured"] = draw(st.none() | numbers)
    bench["slo"][0]["limit"] = draw(numbers)
    bench["slo"][0]["passed"] = draw(st.booleans())
    doc["benchmarks"] = doc["benchmarks"] * draw(st.integers(0, 2))
    return doc


@settings(max_examples=40, deadline=None)
@given(doc=documents())
def test_write_then_load_round_trips(doc: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub" / "results.json"
        write_atomic(path, doc)
        assert load(path) == doc
        # Writing again replaces the file in place and leaves no temporary file behind.
        write_atomic(path, doc)
        assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_records_path_is_beside_the_document(tmp_path: Path) -> None:
    doc = minimal_doc()
    assert records_path(tmp_path / "out" / "results.json", doc) == (
        tmp_path / "out" / "run.records.jsonl"
    )


# --- records -------------------------------------------------------------------------------


record_values = st.fixed_dictionaries({
    "phase": st.sampled_from(["warmup", "measure"]),
    "sample_id": texts,
    "output": st.none() | texts,
    "parse": st.sampled_from(
        ["valid", "invalid_json", "schema_violation", "truncated", "not_checked", "no_output"]
    ),
    "completion_tokens": st.none() | st.integers(0, 10**6),
    "stages_ns": st.dictionaries(texts, st.integers(0, 10**15), max_size=3),
    "error": st.none() | st.fixed_dictionaries({
        "stage": st.sampled_from(["prepare", "request", "check"]), "type": texts,
        "message": texts,
    }),
})


@settings(max_examples=40, deadline=None)
@given(overrides=st.lists(record_values, max_size=8))
def test_record_writer_round_trips(overrides: list[dict[str, Any]]) -> None:
    written = [record(i, **o) for i, o in enumerate(overrides)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deep" / "run.records.jsonl"
        writer = RecordWriter(path)
        for r in written:
            writer.write(r)
        assert writer.count == len(written)
        writer.close()
        if not written:
            assert not path.exists()  # opened lazily: no records, no file
            return
        back = read_records(path)
    assert back == written
    for i, r in enumerate(back):
        validate_record(r, f"record {i}")


def test_record_writer_flushes_each_record(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RecordWriter(path)
    writer.write(record(0))
    # Readable before close: a crash after this line loses nothing already written.
    assert read_records(path) == [record(0)]
    writer.write(record(1))
    assert len(path.read_text().splitlines()) == 2
    writer.close()
    writer.close()  # idempotent


def test_record_writer_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    for seq in range(2):
        writer = RecordWriter(path)
        writer.write(record(seq))
        writer.close()
    assert [r["seq"] for r in read_records(path)] == [0, 1]


def test_read_records_names_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record(0)) + "\n\n" + json.dumps(record(1))[:40])
    with pytest.raises(ValueError, match=r"r\.jsonl:3: not a JSON record"):
        read_records(path)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"phase": "cooldown"}, "at phase"),
        ({"seq": -1}, "at seq"),
        ({"t_start_ns": 1.5}, "at t_start_ns"),
        ({"stages_ns": {"prefill": -3}}, "at stages_ns/prefill"),
        ({"error": {"stage": "somewhere", "type": "X", "message": "m"}}, "at error"),
        ({"extra": 1}, "(root)"),
    ],
)
def test_validate_record_names_the_field(change: dict[str, Any], where: str) -> None:
    with pytest.raises(ResultsError) as info:
        validate_record({**record(0), **change}, "run.records.jsonl:1")
    message = str(info.value)
    assert message.startswith("run.records.jsonl:1: not a valid record ")
    assert where in message


def test_validate_record_missing_field() -> None:
    bad = record(0)
    del bad["parse"]
    with pytest.raises(ResultsError, match="'parse' is a required property"):
        validate_record(bad)


# --- load errors ---------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ResultsError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "no such results file" in str(info.value)


def test_load_truncated_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(full_doc(), indent=2)[:200])
    with pytest.raises(ResultsError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "not JSON" in str(info.value)


@pytest.mark.parametrize("content", ['{"a": 1}', "[1, 2]", '"results"', '{"kind": "other"}'])
def test_load_foreign_json(tmp_path: Path, content: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ResultsError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "not a pytest-vlmbench results document" in str(info.value)


def test_load_other_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    doc = full_doc()
    doc["schema_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultsError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    assert "schema_version 99" in message
    assert f"reads {SCHEMA_VERSION}" in message


@pytest.mark.parametrize(
    ("path_to", "value", "where"),
    [
        (("benchmarks", 0, "summary", "requests"), "three", "at benchmarks/0/summary/requests"),
        (("benchmarks", 0, "summary", "latency_s", "p95"), "fast",
         "at benchmarks/0/summary/latency_s/p95"),
        (("benchmarks", 0, "prompt_version"), "not-hex", "at benchmarks/0/prompt_version"),
        (("loads", 0, "count"), -1, "at loads/0/count"),
        (("status",), "done", "at status"),
        (("command",), "pytest benchmarks/", "at command"),
    ],
)
def test_load_wrong_typed_field_names_the_path(
    tmp_path: Path, path_to: tuple[Any, ...], value: Any, where: str
) -> None:
    doc = full_doc()
    target: Any = doc
    for key in path_to[:-1]:
        target = target[key]
    target[path_to[-1]] = value
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultsError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    assert where in message


# --- atomic writes -------------------------------------------------------------------------


def test_write_atomic_refuses_an_invalid_document_and_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.json"
    good = full_doc()
    write_atomic(path, good)
    before = path.read_bytes()
    bad = copy.deepcopy(good)
    bad["benchmarks"][0]["summary"]["requests"] = -1
    with pytest.raises(ResultsError, match="benchmarks/0/summary/requests"):
        write_atomic(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    assert load(path) == good


def test_write_atomic_cleans_up_when_serialising_fails(tmp_path: Path) -> None:
    # NaN passes the schema ("number") but not json.dump(allow_nan=False): the write
    # fails half-way, after the temporary file exists.
    path = tmp_path / "results.json"
    write_atomic(path, full_doc())
    before = path.read_bytes()
    bad = full_doc()
    bad["settings"] = {"x": float("nan")}
    with pytest.raises((ResultsError, ValueError), match=r"(?i)nan|json"):
        write_atomic(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_atomic_invalid_document_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new" / "results.json"
    with pytest.raises(ResultsError):
        write_atomic(path, {"kind": KIND})
    assert not path.exists()


def test_schema_ships_with_the_package() -> None:
    schema = results.schema()
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert schema["properties"]["kind"]["const"] == KIND


# --- environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pytest", "--api-key=sk-123"], ["pytest", "--api-key=***"]),
        (["pytest", "--token", "abc", "-q"], ["pytest", "--token", "***", "-q"]),
        (["--openai-api-key=sk-xyz", "x"], ["--openai-api-key=***", "x"]),
        (["--vlm-api_key", "k"], ["--vlm-api_key", "***"]),
        (["--HF-TOKEN=hf_abc"], ["--HF-TOKEN=***"]),
        (["--password=p", "--secret", "s"], ["--password=***", "--secret", "***"]),
        (
            ["pytest", "benchmarks/", "--vlm-device=cpu", "-k", "caption", "-n", "2"],
            ["pytest", "benchmarks/", "--vlm-device=cpu", "-k", "caption", "-n", "2"],
        ),
        # Words that merely look like secrets are not options and stay as they are.
        (["tests/test_token.py", "api-key"], ["tests/test_token.py", "api-key"]),
        ([], []),
    ],
)
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    assert environment.redact_argv(argv) == expected


def test_redact_argv_never_leaks_the_value() -> None:
    argv = ["pytest", "--api-key=SEKRIT1", "--auth-token", "SEKRIT2", "--token=SEKRIT3"]
    assert "SEKRIT" not in " ".join(environment.redact_argv(argv))
    assert argv[1] == "--api-key=SEKRIT1"  # the input is not modified


def test_capture_records_machine_and_packages(tmp_path: Path) -> None:
    env = environment.capture(tmp_path)
    assert set(env) == {
        "hostname", "os", "machine", "cpu", "cpu_threads_available", "memory_bytes",
        "python", "packages", "git",
    }
    assert env["cpu_threads_available"] >= 1
    assert env["packages"]["pytest"] == pytest.__version__
    assert env["packages"]["pytest-vlmbench"] is not None
    assert env["git"] is None  # tmp_path is not in a git repository
    json.dumps(env)  # serialisable as it stands


def test_capture_git_commit_of_the_repository() -> None:
    repo = Path(__file__).resolve().parent.parent
    git = environment.capture(repo)["git"]
    if git is None:
        pytest.skip("git is not available here")
    assert len(git["commit"]) == 40
    assert isinstance(git["dirty"], bool)
