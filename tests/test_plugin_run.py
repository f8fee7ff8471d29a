"""Real benchmark runs in inner sessions, on tiny generated GGUF models.

Each test asserts on the inner session's outcome and on the files it wrote: the
results document (validated against the shipped schema on load) and the records.
"""

from __future__ import annotations

import math

import pytest

from pytest_vlmbench.metrics.summary import stage_violations
from pytest_vlmbench.plugin import options
from pytest_vlmbench.results.document import load, validate_record
from pytest_vlmbench.run.records import read_records
from tests.conftest import Project, interrupt_after, recompute_latency_p95, write_png

RUN_BOTH_TASKS = """
from tiny_tasks import CAPTION, YES_NO

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)

def test_yes_no(vlm_bench):
    vlm_bench.run(YES_NO)
"""


def test_real_run_writes_a_valid_document_and_every_record(project: Project) -> None:
    project.pytester.makepyfile(test_bench=RUN_BOTH_TASKS)
    out = project.run(f"{options.SAMPLES}=3", f"{options.WARMUP}=1")
    out.run.assert_outcomes(passed=4)
    doc = out.doc()  # validates against the schema
    assert doc["status"] == "complete"
    assert {(b["model"], b["task"]) for b in doc["benchmarks"]} == {
        ("tiny-text", "caption"), ("tiny-text", "yes_no"),
        ("tiny-vision", "caption"), ("tiny-vision", "yes_no"),
    }
    records = out.records()
    assert len(records) == 4 * (3 + 1)
    for record in records:
        validate_record(record)
    for bench in doc["benchmarks"]:
        mine = [r for r in records if r["benchmark"] == bench["id"]]
        assert [r["phase"] for r in mine] == ["warmup", "measure", "measure", "measure"]
        summary = bench["summary"]
        assert summary["requests"] == bench["records"]["measured"] == 3
        assert summary["success_rate"] == 1.0
        assert summary["completion_tokens_mean"] > 0
        assert math.isclose(summary["latency_s"]["p95"], recompute_latency_p95(mine))
        assert bench["input_mode"] == ("image" if bench["model"] == "tiny-vision" else "text")
        assert bench["settings"]["n_threads"] >= 1
        assert bench["settings"]["flash_attn"] is True
    vision = [r for r in records if r["model"] == "tiny-vision"]
    assert all(r["counts"]["image_tokens"] == 16 and "image_encode" in r["stages_ns"]
               for r in vision)
    # Stage invariants on real llama.cpp runs (text and vision path, free and constrained):
    # disjoint stages within the latency, prompt stages within the TTFT, and the
    # image tokens counted in the prefill.
    for record in records:
        assert stage_violations(record) == [], record
        stages = record["stages_ns"]
        assert {"template", "prefill", "decode", "sample", "detokenize"} <= set(stages)
        assert record["counts"]["prefill_tokens"] >= record["prompt_tokens"] > 0
    for record in vision:
        assert record["counts"]["prefill_tokens"] >= 16 + 1
    for bench in doc["benchmarks"]:
        assert bench["summary"]["prompt_tokens_per_s"] > 0
        assert "unattributed" in bench["summary"]["stages_s"]
        assert not [w for w in bench["warnings"] if "stage timings" in w]
    assert all(r["images"] and r["prepare_ns"] > 0 for r in vision)
    yes_no = [r for r in records if r["task"] == "yes_no"]
    assert {r["parse"] for r in yes_no} == {"valid"}
    # One load per (model, precision) for the whole session.
    assert sorted((e["model"], e["count"]) for e in doc["loads"]) == [
        ("tiny-text", 1), ("tiny-vision", 1)
    ]
    out.run.stdout.fnmatch_lines(["*measure 3/3*", "*pytest-vlmbench*"])


def test_slo_breach_fails_with_one_line(project: Project) -> None:
    project.pytester.makepyfile(
        test_bench="""
import pytest
from tiny_tasks import CAPTION

@pytest.mark.vlm_slo(max_latency_p95_s=1e-9, min_success_rate=1.0)
def test_too_strict(vlm_bench):
    vlm_bench.run(CAPTION)
"""
    )
    out = project.run(f"{options.SAMPLES}=2", f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines(
        ["SLO breached (n=2): max_latency_p95_s = * s > limit 1e-09 s"]
    )
    bench = out.doc()["benchmarks"][0]
    assert bench["slo_passed"] is False
    verdicts = {v["metric"]: v["passed"] for v in bench["slo"]}
    assert verdicts == {"max_latency_p95_s": False, "min_success_rate": True}


def test_slo_met_passes(project: Project) -> None:
    project.pytester.makepyfile(
        test_bench="""
import pytest
from tiny_tasks import YES_NO

@pytest.mark.vlm_slo(max_latency_p95_s=60.0)
def test_fine(vlm_bench):
    vlm_bench.run(YES_NO, slo={"min_parse_rate": 1.0})
"""
    )
    out = project.run(f"{options.SAMPLES}=2", f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(passed=1)
    bench = out.doc()["benchmarks"][0]
    assert bench["slo_passed"] is True
    assert {v["metric"] for v in bench["slo"]} == {"max_latency_p95_s", "min_parse_rate"}


def test_unknown_slo_name_is_a_clear_error(project: Project) -> None:
    project.pytester.makepyfile(
        test_bench="""
import pytest
from tiny_tasks import CAPTION

@pytest.mark.vlm_slo(p95=1.0)
def test_typo(vlm_bench):
    vlm_bench.run(CAPTION)
"""
    )
    out = project.run(f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines(
        ["*@pytest.mark.vlm_slo: unknown SLO 'p95'; known: max_latency_p50_s*"]
    )
    assert out.doc()["benchmarks"] == []  # nothing ran, nothing recorded
    assert not out.out.with_name("results.records.jsonl").exists()


def test_corrupt_image_is_an_error_record_and_the_run_goes_on(project: Project) -> None:
    images = project.pytester.path / "imgs"
    write_png(images / "a-good.png")
    (images / "b-corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    write_png(images / "c-good.png", (10, 200, 10))
    project.pytester.makepyfile(
        test_bench=f"""
from pytest_vlmbench.datasets.images import FolderDataset
from tiny_tasks import CAPTION

def test_folder(vlm_bench):
    vlm_bench.run(CAPTION, FolderDataset({str(images)!r}))
"""
    )
    out = project.run(
        f"{options.SAMPLES}=3", f"{options.WARMUP}=0", f"{options.MODELS}=tiny-vision"
    )
    out.run.assert_outcomes(passed=1)
    records = out.records()
    assert [r["error"] is None for r in records] == [True, False, True]
    bad = records[1]
    assert bad["error"]["stage"] == "prepare"
    assert "b-corrupt.jpg" in bad["error"]["message"]
    summary = out.doc()["benchmarks"][0]["summary"]
    assert (summary["requests"], summary["succeeded"], summary["failed"]) == (3, 2, 1)
    assert summary["latency_s"]["n"] == 2
    out.run.stdout.fnmatch_lines(["*warning:*1 of 3 requests failed*"])


def test_all_requests_failing_fails_the_test(project: Project) -> None:
    images = project.pytester.path / "imgs"
    images.mkdir()
    (images / "broken.png").write_bytes(b"")
    project.pytester.makepyfile(
        test_bench=f"""
from pytest_vlmbench.datasets.images import FolderDataset
from tiny_tasks import CAPTION

def test_folder(vlm_bench):
    vlm_bench.run(CAPTION, FolderDataset({str(images)!r}))
"""
    )
    out = project.run(
        f"{options.SAMPLES}=2", f"{options.WARMUP}=0", f"{options.MODELS}=tiny-vision"
    )
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines(["all 2 requests failed; first: *broken.png*"])
    assert len(out.records()) == 2


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ("root ::= answer", "*bad.gbnf: invalid GBNF grammar*"),
        (None, "*task 'caption': grammar_file '*bad.gbnf' not found*"),
    ],
)
def test_bad_grammar_fails_naming_the_file(
    project: Project, grammar: str | None, message: str
) -> None:
    if grammar is not None:
        (project.pytester.path / "bad.gbnf").write_text(grammar)
    project.pytester.makepyfile(
        test_bench="""
from dataclasses import replace
from pathlib import Path
from tiny_tasks import CAPTION

def test_grammar(vlm_bench):
    vlm_bench.run(replace(CAPTION, grammar_file=Path(__file__).parent / "bad.gbnf"))
"""
    )
    out = project.run(f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines([message])
    assert "Traceback" not in out.run.stdout.str()


def test_missing_model_file_errors_once_with_a_clear_message(project: Project) -> None:
    (project.pytester.path / "models.toml").write_text(
        """
[[model]]
id = "ghost"
backend = "llama_cpp"
modality = "text"
default = true
precisions = { q4_k_m = "path:weights/ghost.gguf" }
"""
    )
    project.pytester.makepyfile(
        test_bench="""
from tiny_tasks import CAPTION

def test_one(vlm_bench):
    vlm_bench.run(CAPTION)

def test_two(vlm_bench):
    vlm_bench.run(CAPTION)
"""
    )
    out = project.run()
    out.run.assert_outcomes(errors=2)
    (load,) = out.doc()["loads"]  # the failure is in the results document too
    assert load["count"] == 0
    assert "model file not found" in load["error"]
    out.run.stdout.fnmatch_lines(
        [
            "model 'ghost' (q4_k_m): path:weights/ghost.gguf: "
            "model file not found at */weights/ghost.gguf"
        ]
    )
    assert "Traceback" not in out.run.stdout.str()


def test_ctrl_c_keeps_completed_records_and_a_valid_document(project: Project) -> None:
    """A real SIGINT to a real pytest process in the middle of a benchmark."""
    project.pytester.makepyfile(
        test_bench="""
from tiny_tasks import CAPTION

def test_long(vlm_bench):
    vlm_bench.run(CAPTION)

def test_never_reached(vlm_bench):
    vlm_bench.run(CAPTION)
"""
    )
    out = project.pytester.path / "out" / "results.json"
    records_file = out.with_name("results.records.jsonl")
    returncode, output = interrupt_after(
        project, out, f"{options.SAMPLES}=100000", f"{options.WARMUP}=0",
        f"{options.MODELS}=tiny-text", "-q")
    assert returncode == pytest.ExitCode.INTERRUPTED, output
    records = read_records(records_file)  # every line is whole JSON
    assert len(records) >= 5
    assert [r["seq"] for r in records] == list(range(len(records)))
    doc = load(out)
    assert doc["status"] == "interrupted"
    (bench,) = doc["benchmarks"]
    assert bench["status"] == "interrupted"
    assert bench["summary"]["requests"] == len(records)
    assert "Traceback" not in output


def test_text_models_get_the_scene_description(project: Project) -> None:
    project.pytester.makepyfile(test_bench=RUN_BOTH_TASKS)
    out = project.run(f"{options.SAMPLES}=2", f"{options.MODELS}=tiny-text", "-k", "caption")
    out.run.assert_outcomes(passed=1)
    (bench,) = out.doc()["benchmarks"]
    assert bench["input_mode"] == "text"
    assert all(r["images"] == [] and r["prepare_ns"] is None for r in out.records())


def test_prompt_version_changes_with_the_prompt(project: Project) -> None:
    project.pytester.makepyfile(
        test_bench="""
from dataclasses import replace
from tiny_tasks import CAPTION

def test_a(vlm_bench):
    vlm_bench.run(CAPTION)

def test_b(vlm_bench):
    vlm_bench.run(replace(CAPTION, prompt="Describe it differently."))

def test_c(vlm_bench):
    vlm_bench.run(CAPTION)
"""
    )
    out = project.run(
        f"{options.SAMPLES}=1", f"{options.WARMUP}=0", f"{options.MODELS}=tiny-text"
    )
    out.run.assert_outcomes(passed=3)
    a, b, c = (bench["prompt_version"] for bench in out.doc()["benchmarks"])
    assert a == c != b


def test_native_output_stays_out_of_the_terminal_and_captures(project: Project) -> None:
    """llama.cpp's own chatter goes to the backend log, with progress lines on (default).

    Regression: resuming pytest's capture after a progress line took fd 2 back, so
    mtmd's output from the second request on leaked into the test's captured stderr.
    """
    project.pytester.makepyfile(test_bench=RUN_BOTH_TASKS)
    out = project.run(
        f"{options.SAMPLES}=3", f"{options.MODELS}=tiny-vision", "-k", "caption", "-rA"
    )
    out.run.assert_outcomes(passed=1)
    assert "Captured stderr" not in out.run.stdout.str()
    log = out.out.with_name("results.backend.log").read_text()
    assert log.count("== benchmark ") == 1
    assert log.count("encoding image") >= 4  # warm-up + 3 measured requests


def test_hub_weights_without_hub_access_fail_with_a_clear_message(project: Project) -> None:
    """Opt-in entries fetch from the Hugging Face hub; here there is no client or network."""
    repo = "hf:ggml-org/SmolVLM2-500M-Video-Instruct-GGUF"
    (project.pytester.path / "models.toml").write_text(
        f"""
[[model]]
id = "smolvlm2-500m"
backend = "llama_cpp"
modality = "vision"
default = true
precisions = {{ q8_0 = "{repo}/SmolVLM2-500M-Video-Instruct-Q8_0.gguf" }}
projector = "{repo}/mmproj-SmolVLM2-500M-Video-Instruct-Q8_0.gguf"
"""
    )
    project.pytester.makepyfile(test_bench=RUN_BOTH_TASKS)
    out = project.run("-k", "caption")
    out.run.assert_outcomes(errors=1)
    text = out.run.stdout.str()
    assert "Traceback" not in text
    # Either the hub client is missing, or it is there and the hub cannot be reached.
    assert (
        "needs the Hugging Face hub client: pip install 'pytest-vlmbench[hub]'" in text
        or "cannot fetch hf:ggml-org/SmolVLM2-500M-Video-Instruct-GGUF/" in text
    )
