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

from pytest_vlmbench.metrics.summary import METHODS, summarize
from pytest_vlmbench.results import document as results
from pytest_vlmbench.results.document import (
    KIND,
    SCHEMA_VERSION,
    ResultsError,
    load,
    records_path,
    validate,
    validate_record,
    write_atomic,
)
from pytest_vlmbench.run import environment
from pytest_vlmbench.run.records import RecordWriter, read_records


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


def test_record_writer_starts_a_reused_file_afresh(tmp_path: Path) -> None:
    """A fixed --vlm-out name: the second run's records replace the first's."""
    path = tmp_path / "r.jsonl"
    for seq in range(2):
        writer = RecordWriter(path)
        writer.write(record(seq))
        writer.write(record(seq + 10))
        writer.close()
    assert [r["seq"] for r in read_records(path)] == [1, 11]


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


# --- redaction by value --------------------------------------------------------------------

# (prefix as written, mask it leaves, body alphabet, minimum body length)
TOKEN_SHAPES: list[tuple[str, str, str, int]] = [
    ("sk-", "sk-***", "-_", 20),
    ("sk-proj-", "sk-proj-***", "-_", 20),
    ("sk-ant-api03-", "sk-ant-***", "-_", 20),
    ("sk-svcacct-", "sk-svcacct-***", "-_", 20),
    ("hf_", "hf_***", "", 34),
    ("ghp_", "ghp_***", "", 36),
    ("gho_", "gho_***", "", 36),
    ("ghu_", "ghu_***", "", 36),
    ("ghs_", "ghs_***", "", 36),
    ("ghr_", "ghr_***", "", 36),
    ("github_pat_", "github_pat_***", "_", 22),
    ("glpat-", "glpat-***", "-_", 20),
    ("xoxb-", "xoxb-***", "-", 24),
    ("xoxp-", "xoxp-***", "-", 24),
    ("xapp-", "xapp-***", "-", 24),
    ("sk_live_", "sk_live_***", "", 24),
    ("rk_live_", "rk_live_***", "", 24),
]
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Where a token may sit: after anything that is not a letter or a digit.
_SEPARATORS = st.sampled_from([" ", "=", ":", "/", "[", "(", '"', "'", ",", ";", "\n", "-",
                               "_", "@", "\t", "|"])


@st.composite
def secret_bodies(draw: st.DrawFn, extra: str, min_size: int) -> str:
    """A generated secret's body: `min_size`+ characters, upper, lower and digits."""
    body = draw(st.text(_ALNUM + extra, min_size=min_size, max_size=min_size + 40))
    return draw(st.sampled_from("ABCXYZ")) + body + draw(st.sampled_from("abcxyz")) + "7"


@settings(max_examples=300, deadline=None)
@given(data=st.data(), left=st.text(max_size=30), right=st.text(max_size=30),
       sep=_SEPARATORS)
def test_redact_text_masks_every_prefix_in_any_text(
    data: st.DataObject, left: str, right: str, sep: str,
) -> None:
    prefix, _mask, extra, size = data.draw(st.sampled_from(TOKEN_SHAPES))
    body = data.draw(secret_bodies(extra, size))
    token = prefix + body
    text = left + sep + token + " " + right
    out = environment.redact_text(text)
    assert body not in out
    assert body[-12:] not in out  # nor its end
    # (The prefix is kept, unless random-looking text glued to it was masked with it.)
    assert "***" in out


@pytest.mark.parametrize("shape", TOKEN_SHAPES,
                         ids=lambda s: s[0])
def test_redact_text_keeps_the_prefix(shape: tuple[str, str, str, int]) -> None:
    prefix, mask, _extra, size = shape
    body = ("Ab3" * size)[:size]
    for context in ("{}", "--junit-prefix={}", "tests/test_x.py::test_t[m-q8_0-cpu-{}]",
                    "env OPENAI_API_KEY='{}' pytest", "-o suite={}"):
        out = environment.redact_text(context.format(prefix + body))
        assert out == context.format(mask), out


@pytest.mark.parametrize(
    "token",
    [
        "AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "sk-ant-api03-Qw9Er8Ty7Ui6Op5As4Df3Gh2Jk1LzXcVbNm-_AbCdEfGhIjKl",
        "https://user:hunter2pass@example.com/v1",
        "https://api.example.com/v1?api_key=Zz9Yy8Xx7&x=1",
        "https://api.example.com/v1?x=1&token=abc.def-ghi",
        "Authorization: Bearer abcDEF123456ghiJKL",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Zx8Qp2Lm9Vt4Rk7Ws1Yn6Hb3Jc5Df0GaXe",  # no prefix, random-looking, 34 chars
    ],
)
def test_redact_text_masks_shapes(token: str) -> None:
    out = environment.redact_text(f"--x={token} tail")
    secret = {"https://user:hunter2pass@example.com/v1": "hunter2pass",
              "https://api.example.com/v1?api_key=Zz9Yy8Xx7&x=1": "Zz9Yy8Xx7",
              "https://api.example.com/v1?x=1&token=abc.def-ghi": "abc.def-ghi",
              "Authorization: Bearer abcDEF123456ghiJKL": "abcDEF123456ghiJKL",
              "Basic dXNlcjpwYXNzd29yZA==": "dXNlcjpwYXNzd29yZA"}.get(token, token[5:])
    assert secret not in out, out
    assert "***" in out
    assert out.endswith(" tail")


ORDINARY = [
    "tests/test_x.py::test_y[tiny-vlm-q4_k_m-cpu]",
    "benchmarks/test_default.py::test_photo_score[gemma3-270m-q4_k_m-cpu]#caption",
    "20261201T235121Z-a1b2c3",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "123e4567-e89b-12d3-a456-426614174000",
    "p95_latency:+10%", "tokens_per_s:-10%", "--vlm-fail-on=energy_per_token:+10%",
    "--vlm-out=.vlmbench/results-20261201T235121Z-a1b2c3.json",
    "/home/runner/work/MyProject2024/MyProject2024/benchmarks/test_vision.py",
    "/tmp/pytest-of-user/pytest-123/test_bad_input_secrets_canary_0/out/results.json",
    "ggml-org/SmolVLM2-500M-Video-Instruct-GGUF",
    "mmproj-SmolVLM2-500M-Video-Instruct-Q8_0.gguf",
    "bartowski/Qwen2-VL-7B-Instruct-GGUF/Qwen2-VL-7B-Instruct-Q4_K_M.gguf",
    "unsloth/gemma-3-4b-it-GGUF/gemma-3-4b-it-Q4_K_M.gguf",
    "OpenGVLab/InternVL3-2B-Instruct-GGUF-Q8_0-mmproj",
    "quantized:q8_0:generated:gemma3-tiny@7", "generated:llama-tiny",
    "LlavaNextForConditionalGeneration", "Gemma3ForConditionalGeneration2024",
    "MiniCPMV26ChatHandlerLlava15ChatHandler",
    "CUDA_VISIBLE_DEVICES=0-NVIDIA_H100_80GB_HBM3-SXM5",
    "VLMBENCH_LLAMA_FLAVOUR=cuda-CMAKE_ARGS=-DGGML_CUDA=on",
    "test_task_skip-something-long-enough-to-matter", "desk-lamp-photos-2024-collection",
    "basic usage", "a basic benchmark", "bearer of news",
    "-k", "caption and not photo", "--vlm-threads=fit", "-n", "2",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_redact_text_leaves_ordinary_strings(text: str) -> None:
    assert environment.redact_text(text) == text


_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
_lower_id = st.lists(_word, min_size=1, max_size=4).map("-".join)


@settings(max_examples=200, deadline=None)
@given(
    module=st.lists(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
                    min_size=1, max_size=4).map("/".join),
    test=st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=30),
    model=_lower_id, precision=st.sampled_from(["q4_k_m", "q8_0", "f16", "bf16", "fp32"]),
    device=st.sampled_from(["cpu", "cpu-fallback", "h100-pcie", "orin-nano", "rtx-4090"]),
    digest=st.binary(min_size=1, max_size=64),
    stamp=st.datetimes(),
    suffix=st.text("0123456789abcdef", min_size=6, max_size=6),
)
def test_redact_text_leaves_generated_ids(
    module: str, test: str, model: str, precision: str, device: str, digest: bytes,
    stamp: Any, suffix: str,
) -> None:
    import hashlib

    node_id = f"{module}.py::test_{test}[{model}-{precision}-{device}]"
    run_id = f"{stamp:%Y%m%dT%H%M%SZ}-{suffix}"
    sha = hashlib.sha256(digest).hexdigest()
    for text in (node_id, run_id, sha, model, f"{node_id} {run_id} sha256={sha}"):
        assert environment.redact_text(text) == text


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(
    st.text(),
    st.lists(st.one_of(st.text(max_size=8), st.sampled_from(
        ["sk-", "sk-ant-", "hf_", "ghp_", "AKIA", "AIza", "eyJ", ".eyJ", "Bearer ", "basic ",
         "https://", "u:p@", "?token=", "&key=", "***", "=", "-", "_", "Zx8Qp2Lm9Vt4Rk7Ws1Y",
         "n6Hb3Jc5Df0GaXeAbC", "aB3", "xoxb-"])), max_size=20).map("".join),
))
def test_redact_text_is_idempotent(text: str) -> None:
    once = environment.redact_text(text)
    assert environment.redact_text(once) == once


def test_entropy_rule_masks_random_strings_and_not_names() -> None:
    """Uniformly random base62 / base64 strings of 32+ characters are masked (all but a
    few percent, by design of the thresholds); none of the ordinary names are."""
    import random

    rng = random.Random(20261201)
    for alphabet in (_ALNUM, _ALNUM + "-_", _ALNUM + "+/"):
        masked = 0
        for _ in range(1000):
            token = "".join(rng.choice(alphabet) for _ in range(rng.randint(32, 80)))
            masked += environment.redact_text(f"x {token} y") == "x *** y"
        assert masked >= 960, (alphabet, masked)
    assert not any(environment.looks_random(t) for t in ORDINARY)


def test_redact_argv_masks_by_value() -> None:
    canary = "sk-canary-cmdline-555aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    argv = ["pytest", f"--junit-prefix={canary}", "-o", f"junit_suite_name={canary}",
            f"tests/test_x.py::test_tag[tiny-text-fp32-cpu-{canary}]", "--vlm-threads=fit",
            "--token", "plain", "--hf-token", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"]
    out = environment.redact_argv(argv)
    assert canary not in " ".join(out)
    assert out[:5] == ["pytest", "--junit-prefix=sk-***", "-o", "junit_suite_name=sk-***",
                       "tests/test_x.py::test_tag[tiny-text-fp32-cpu-sk-***]"]
    assert out[5:] == ["--vlm-threads=fit", "--token", "***", "--hf-token", "***"]
    assert environment.redact_argv(out) == out


def test_redact_value_walks_nested_documents() -> None:
    canary = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    doc = {"command": ["pytest", f"--x={canary}"], "n": 3, "ok": True, "none": None,
           "nested": [{"id": f"t[{canary}]", "sha256": "ab" * 32}], canary: 1.5}
    out = environment.redact_value(doc)
    assert canary not in json.dumps(out)
    assert out["command"] == ["pytest", "--x=ghp_***"]
    assert out["nested"] == [{"id": "t[ghp_***]", "sha256": "ab" * 32}]
    assert out["ghp_***"] == 1.5
    assert (out["n"], out["ok"], out["none"]) == (3, True, None)
    assert doc["command"][1] == f"--x={canary}"  # the input is not modified


# --- file modes ------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077, 0o027])
def test_every_file_we_write_gets_one_mode(tmp_path: Path, umask: int) -> None:
    """Results (atomic, via a temporary file), records, power trace and merged outputs
    are created 0666 less the umask, as open() creates them: tempfile's 0600 made the
    results file private beside public records."""
    import os
    import stat

    from pytest_vlmbench.power.sampler import Sampler

    old = os.umask(umask)
    try:
        results_file = tmp_path / "results.json"
        results_file.write_text("{}")
        results_file.chmod(0o600)  # a results file from before: replaced, mode and all
        write_atomic(results_file, full_doc())
        results.write_text_atomic(tmp_path / "merged.records.jsonl", "{}\n")  # merge's path
        writer = RecordWriter(tmp_path / "results.records.jsonl")
        writer.write(record(1))
        writer.close()
        sampler = Sampler(None, 0.05, tmp_path / "results.power.jsonl")
        sampler.start()
        sampler.stop()
        plain = tmp_path / "plain.txt"
        with plain.open("w"):  # what open() gives under this umask
            pass
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(modes, oct(expected))
    assert sorted(modes) == ["merged.records.jsonl", "plain.txt", "results.json",
                             "results.power.jsonl", "results.records.jsonl"]
