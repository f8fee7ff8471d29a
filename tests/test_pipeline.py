"""Two-stage pipelines (vlm_pipeline, plugin/pipeline.py) on the tiny GGUF models.

Inner sessions run a vision model's caption into a text model's JSON array of variants,
in both modes, and check on the real runs: each stage is an ordinary benchmark entry,
every record carries lineage and every stage-2 record points to the stage-1 record of
the same sample, a stage-1 failure (a corrupt image) gives a stage-2 error record that
names it, the document and records fit the schema, staged mode never held two models
(the pool's load/close events) while together mode held both, and the end-to-end
latency is what its definition says: in together mode at least stage 1 + stage 2 for
each lineage, stage 2 starting after stage 1 ended.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.metrics.per_request import latency_s
from pytest_vlmbench.plugin import options
from pytest_vlmbench.results.document import validate_record
from tests.conftest import Project, write_png

PIPELINE_TESTS = '''
import json
import pathlib

from pytest_vlmbench.datasets import FolderDataset, SyntheticScenes
from pytest_vlmbench.pipeline import Stage
from pytest_vlmbench.plugin.fixtures import session_of
from pytest_vlmbench.tasks import GenerationParams, Task
from tiny_tasks import CAPTION

# caption_variants' shape with answers a random-weight model cannot run long with:
# a JSON array of exactly 3 strings, each from an enum.
VARIANTS = Task(
    name="variants3", system="Answer with JSON only.",
    prompt="Rewrite the caption above as 3 variants.",
    text_template="Caption: {description}\\n\\n{prompt}",
    schema={"type": "array", "items": {"enum": ["a", "bb", "ccc"]},
            "minItems": 3, "maxItems": 3},
    expects_json=True, params=GenerationParams(max_tokens=32),
)


def _events(request, name):
    events = session_of(request.config).pool.events
    pathlib.Path(name).write_text(json.dumps(events))


def test_pipe(vlm_pipeline, request):
    vlm_pipeline.run(Stage("tiny-vision", CAPTION), Stage("tiny-text", VARIANTS),
                     SyntheticScenes(n=3, seed=1), mode=MODE)
    _events(request, "events.json")
'''

AFTER = '''

def test_after(vlm_bench, request):
    vlm_bench.run(CAPTION)
    _events(request, "events_after.json")
'''


def _run(project: Project, mode: str, *extra: str, body: str = PIPELINE_TESTS,
         warmup: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    project.pytester.makepyfile(test_pipe=body.replace("MODE", repr(mode)) + "".join(extra))
    out = project.run(f"{options.SAMPLES}=3", f"{options.WARMUP}={warmup}")
    out.run.assert_outcomes(passed=1 + 2 * len(extra))
    doc = out.doc()  # validated against the schema on load
    records = out.records()
    for record in records:
        validate_record(record)
    return doc, records


def _held_max(events: list[list[str]]) -> int:
    held = peak = 0
    for kind, _ in events:
        held += 1 if kind == "load" else -1
        peak = max(peak, held)
    return peak


def _check_lineage(doc: dict[str, Any], records: list[dict[str, Any]],
                   mode: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pipeline entry, its two benchmark entries and every record's lineage; returns
    (stage-1 records, stage-2 records)."""
    (pipe,) = doc["pipelines"]
    pid = "test_pipe.py::test_pipe"
    assert pipe["id"] == pid
    assert pipe["mode"] == mode
    assert pipe["samples"] == 3
    assert [(s["name"], s["benchmark"], s["model"], s["task"]) for s in pipe["stages"]] == [
        ("caption", f"{pid}::caption", "tiny-vision", "caption"),
        ("variants3", f"{pid}::variants3", "tiny-text", "variants3"),
    ]
    entries = {b["id"]: b for b in doc["benchmarks"]}
    one, two = entries[f"{pid}::caption"], entries[f"{pid}::variants3"]
    assert one["input_mode"] == "image"
    assert two["input_mode"] == "text"
    assert one["summary"]["requests"] == two["summary"]["requests"] == 3
    assert two["dataset"]["name"] == "pipeline-stage-outputs"
    first = [r for r in records if r["benchmark"] == one["id"]]
    second = [r for r in records if r["benchmark"] == two["id"]]
    assert len(first) == len(second) == 3 + one["warmup"]["requests"]
    for record in first:
        assert record["lineage"] == {"pipeline": pid, "stage": 1, "stage_name": "caption",
                                     "from": None}
    by_seq = {r["seq"]: r for r in first}
    for record in second:
        lineage = record["lineage"]
        assert (lineage["pipeline"], lineage["stage"], lineage["stage_name"]) == (
            pid, 2, "variants3")
        source = lineage["from"]
        assert source["benchmark"] == one["id"]
        fed = by_seq[source["seq"]]  # an existing stage-1 record...
        assert fed["sample_id"] == source["sample_id"] == record["sample_id"]  # ...same sample
        assert fed["phase"] == record["phase"]
    # every stage-1 record fed exactly one stage-2 record
    assert sorted(r["lineage"]["from"]["seq"] for r in second) == sorted(by_seq)
    return first, second


def _check_figures(pipe: dict[str, Any], first: list[dict[str, Any]],
                   second: list[dict[str, Any]], mode: str) -> None:
    by_seq = {r["seq"]: r for r in first}
    measured = [r for r in second if r["phase"] == "measure"]
    e2e = []
    for r2 in measured:
        r1 = by_seq[r2["lineage"]["from"]["seq"]]
        l1, l2 = latency_s(r1), latency_s(r2)
        assert l1 is not None
        assert l2 is not None
        assert r2["t_start_ns"] >= r1["t_end_ns"]  # stage 2 starts after stage 1 ended
        if mode == "staged":
            e2e.append(l1 + l2)
        else:
            whole = (r2["t_end_ns"] - r1["t_start_ns"]) / 1e9
            assert whole >= l1 + l2  # the handoff is inside it
            e2e.append(whole)
    block = pipe["end_to_end"]
    assert block["n"] == 3
    assert block["failed"] == 0
    assert mode in block["definition"]
    assert math.isclose(block["latency_s"]["mean"], sum(e2e) / len(e2e), rel_tol=1e-9)
    assert block["handoff_s"]["min"] >= 0
    assert set(pipe["per_stage"]) == {"caption", "variants3"}
    for figures in pipe["per_stage"].values():
        assert figures["latency_s"]["n"] == 3
        assert figures["completion_tokens_mean"] > 0
    # The enum-constrained arrays hold exactly 3 strings each.
    assert pipe["variants"] == {**pipe["variants"], "total": 9, "not_arrays": 0}
    assert pipe["variants"]["per_request"]["mean"] == 3
    chars = [len(r["output"]) for r in measured]
    assert pipe["response_chars"]["mean"] == pytest.approx(sum(chars) / len(chars))


def test_staged_pipeline_holds_one_model_at_a_time(project: Project) -> None:
    doc, records = _run(project, "staged")
    first, second = _check_lineage(doc, records, "staged")
    (pipe,) = doc["pipelines"]
    _check_figures(pipe, first, second, "staged")
    assert pipe["models_held_max"] == 1
    events = json.loads((project.pytester.path / "events.json").read_text())
    assert _held_max(events) == 1
    assert events == [["load", "tiny-vision-fp32-cpu"], ["close", "tiny-vision-fp32-cpu"],
                      ["load", "tiny-text-fp32-cpu"]]
    # stage 1 over every sample before stage 2's first request
    assert min(r["t_start_ns"] for r in second) >= max(r["t_end_ns"] for r in first)
    assert not any("together mode" in w for b in doc["benchmarks"] for w in b["warnings"])


def test_together_pipeline_holds_both_and_interleaves(project: Project) -> None:
    doc, records = _run(project, "together", AFTER)
    first, second = _check_lineage(doc, records, "together")
    (pipe,) = doc["pipelines"]
    _check_figures(pipe, first, second, "together")
    assert pipe["models_held_max"] == 2
    events = json.loads((project.pytester.path / "events.json").read_text())
    assert events == [["load", "tiny-vision-fp32-cpu"], ["load", "tiny-text-fp32-cpu"],
                      ["close", "tiny-vision-fp32-cpu"], ["close", "tiny-text-fp32-cpu"]]
    # each sample through stage 1 then straight into stage 2: stage 1's next request
    # starts after stage 2 answered the previous one
    pairs = sorted((r["t_start_ns"], r["t_end_ns"], r["benchmark"]) for r in first + second)
    assert [p[2].rsplit("::", 1)[1] for p in pairs] == ["caption", "variants3"] * 4
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(pairs))
    for entry in doc["benchmarks"]:
        if entry["id"].startswith("test_pipe.py::test_pipe::"):
            assert any("together mode" in w for w in entry["warnings"])
    # The pool is sane afterwards: ordinary benchmarks load one model at a time again.
    after = json.loads((project.pytester.path / "events_after.json").read_text())
    assert _held_max(after[4:]) == 1
    assert "test_pipe.py::test_after[tiny-text-fp32-cpu]" in {b["test"] for b in doc["benchmarks"]}


@pytest.mark.parametrize("mode", ["staged", "together"])
def test_a_stage_one_failure_is_a_stage_two_error_record(project: Project, mode: str) -> None:
    photos = project.pytester.path / "photos"
    write_png(photos / "a.png")
    (photos / "b.png").write_bytes(b"not a png at all")
    write_png(photos / "c.png", (10, 200, 30))
    body = PIPELINE_TESTS.replace("SyntheticScenes(n=3, seed=1)",
                                  "FolderDataset(pathlib.Path('photos'))")
    doc, records = _run(project, mode, body=body, warmup=0)
    first, second = _check_lineage(doc, records, mode)
    (bad1,) = [r for r in first if r["error"] is not None]
    assert bad1["sample_id"] == "b.png"
    assert bad1["error"]["stage"] == "prepare"
    (bad2,) = [r for r in second if r["error"] is not None]
    assert bad2["sample_id"] == "b.png"
    assert bad2["lineage"]["from"]["seq"] == bad1["seq"]
    error = bad2["error"]
    assert error["type"] == "UpstreamStageFailed"
    assert "stage 1 (caption) failed for sample b.png" in error["message"]
    assert bad1["error"]["message"] in error["message"]
    assert bad2["t_start_ns"] is None  # nothing was sent
    (pipe,) = doc["pipelines"]
    assert pipe["end_to_end"]["n"] == 2
    assert pipe["end_to_end"]["failed"] == 1
    assert pipe["variants"]["total"] == 6
    entries = {b["id"]: b for b in doc["benchmarks"]}
    assert entries["test_pipe.py::test_pipe::variants3"]["summary"]["failed"] == 1


BUILTIN = '''
from pytest_vlmbench.datasets import SyntheticScenes
from pytest_vlmbench.pipeline import Stage

def test_pipe(vlm_pipeline):
    vlm_pipeline.run(Stage("tiny-vision", "caption_brief"),
                     Stage("tiny-text", "caption_variants", name="variants"),
                     SyntheticScenes(n=1, seed=1), mode="together", samples=1, warmup=0)
'''


def test_the_builtin_tasks_by_name(project: Project) -> None:
    """caption_brief into caption_variants, the shipped pair: stage 2 is scored by its
    task's `variants` scorer like any benchmark, and the pipeline counts its array."""
    project.pytester.makepyfile(test_pipe=BUILTIN)
    out = project.run()
    out.run.assert_outcomes(passed=1)
    (pipe,) = out.doc()["pipelines"]
    assert [s["task"] for s in pipe["stages"]] == ["caption_brief", "caption_variants"]
    (second,) = [r for r in out.records() if r["task"] == "caption_variants"]
    assert second["lineage"]["from"]["sample_id"] == second["sample_id"] == "scene-0000"
    assert second["parse"] == "valid"
    assert second["scores"]["variants"] == 3
    assert pipe["variants"]["total"] == 3


MISTAKES = '''
from pytest_vlmbench.datasets import SyntheticScenes
from pytest_vlmbench.pipeline import Stage
from tiny_tasks import CAPTION

def test_same_names(vlm_pipeline):
    vlm_pipeline.run(Stage("tiny-vision", CAPTION), Stage("tiny-text", CAPTION))

def test_unknown_task(vlm_pipeline):
    vlm_pipeline.run(Stage("tiny-vision", "no_such_task"), Stage("tiny-text", CAPTION,
                                                                  name="two"))

def test_unknown_model(vlm_pipeline):
    vlm_pipeline.run(Stage("nope", CAPTION), Stage("tiny-text", CAPTION, name="two"))

def test_bad_mode(vlm_pipeline):
    vlm_pipeline.run(Stage("tiny-vision", CAPTION), Stage("tiny-text", CAPTION, name="two"),
                     mode="parallel")
'''


def test_mistakes_are_one_line_before_any_model_loads(project: Project) -> None:
    project.pytester.makepyfile(test_mistakes=MISTAKES)
    out = project.run()
    out.run.assert_outcomes(failed=4)
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    text = out.run.stdout.str()
    assert "both stages are named 'caption'" in text
    assert "unknown task 'no_such_task'" in text
    assert "Stage('nope')" in text
    assert "mode must be one of ('staged', 'together'), got 'parallel'" in text
    assert "Traceback" not in text
    assert not Path(out.out).exists() or "pipelines" not in out.doc()
