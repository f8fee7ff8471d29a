"""Scores on real runs: the task's scorers fill each record, the summary's `quality`
is recomputed from the records, a score is an SLO, a compare metric and a gate rule like
latency, two models' ratings agree or not in the document, and the extended suites are
skipped unless asked for.

Inner sessions run the tiny random GGUF models: their answers are noise, so their
accuracies sit near chance, which is itself the check that well-formed JSON does not
fool the scorers.
"""

from __future__ import annotations

import json
import math
import shutil
from typing import Any

import pytest

from pytest_vlmbench.compare import compare_runs, load_run
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.plugin import options
from pytest_vlmbench.scoring import resolve_scorers, score_record
from pytest_vlmbench.scoring.agreement import kendall_tau_b
from tests.conftest import Project, write_png

SCENE_BENCH = """
import pytest
from pytest_vlmbench.datasets import SyntheticScenes

@pytest.mark.vlm_slo({slo})
def test_counts(vlm_bench):
    vlm_bench.run("objects_and_counts", SyntheticScenes(4, seed=3, difficulty="mixed"),
                  samples=4, warmup=0)
"""


def _measured(records: list[dict[str, Any]], benchmark: str) -> list[dict[str, Any]]:
    return [r for r in records if r["benchmark"] == benchmark and r["phase"] == "measure"]


def test_scores_fill_records_and_the_summary_recomputes_from_them(project: Project) -> None:
    project.pytester.makepyfile(test_bench=SCENE_BENCH.format(slo=""))
    out = project.run(f"{options.MODELS}=tiny-vision,tiny-text")
    out.run.assert_outcomes(passed=2)
    out.run.stdout.fnmatch_lines(["quality: *test_counts*: count_accuracy * (chance 0.1*, n=4)*"])
    doc, records = out.doc(), out.records()
    scenes = {s.id: s.truth for s in SyntheticScenes(4, seed=3, difficulty="mixed").samples()}
    for entry in doc["benchmarks"]:
        quality = entry["summary"]["quality"]
        assert quality["scorers"] == ["counts"]
        measured = _measured(records, entry["id"])
        ok = [r for r in measured if r["error"] is None]
        assert len(ok) == 4
        for name in ("count_accuracy", "count_abs_error", "total_accuracy"):
            figure = quality["scores"][name]
            values = [r["scores"][name] for r in ok]
            assert figure["n"] + figure["not_applicable"] + figure["failed"] \
                + figure["errors"] == len(measured)
            assert figure["mean"] == pytest.approx(sum(values) / len(values))
            assert figure["chance"] == pytest.approx(
                sum(r["chance"][name] for r in ok) / len(ok))
        # Each record's scores are what the scorer gives its output against its scene.
        [scorer] = resolve_scorers(["counts"])
        for r in ok:
            again = score_record([scorer], sample_id=r["sample_id"], output=r["output"],
                                 parsed=json.loads(r["output"]), truth=scenes[r["sample_id"]],
                                 finish_reason=r["finish_reason"])
            assert again.scores == r["scores"]
            assert 0.0 <= r["scores"]["count_accuracy"] <= 1.0
        # Chance is a number a reader can check: 1/(most shapes + 1) per kind.
        assert 0.09 < quality["scores"]["count_accuracy"]["chance"] < 0.17


def test_a_score_is_an_slo_naming_the_metric(project: Project) -> None:
    project.pytester.makepyfile(test_bench=SCENE_BENCH.format(slo="min_count_accuracy=1.0"))
    out = project.run(f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines(["*SLO breached (n=4): min_count_accuracy = * < limit 1*"])
    [entry] = out.doc()["benchmarks"]
    [verdict] = entry["slo"]
    assert verdict["metric"] == "min_count_accuracy"
    assert verdict["passed"] is False


def test_a_score_is_compared_and_gated_like_latency(project: Project) -> None:
    pt = project.pytester
    pt.makepyfile(test_bench=SCENE_BENCH.format(slo=""))
    first = project.run(f"{options.MODELS}=tiny-text")
    first.run.assert_outcomes(passed=1)
    saved = pt.path / "baseline"
    saved.mkdir()
    for name in ("results.json", "results.records.jsonl"):
        shutil.copy(first.out.with_name(name), saved / name)
    second = project.run(f"{options.MODELS}=tiny-text",
                         f"--vlm-compare={saved / 'results.json'}",
                         "--vlm-fail-on=none,count_accuracy:-0.5")
    second.run.assert_outcomes(passed=1)  # greedy decoding: the same answers
    second.run.stdout.fnmatch_lines(["*count_accuracy*"])
    comparison = compare_runs(load_run(saved / "results.json"), load_run(second.out))
    [pair] = comparison.pairs
    names = {m.metric for m in pair.metrics}
    assert {"count_accuracy", "count_abs_error", "total_accuracy"} <= names
    assert "colour_accuracy" not in names  # a score this task's scorers do not give
    judged = {m.metric: m for m in pair.metrics}["count_accuracy"]
    assert judged.verdict in ("unchanged", "inconclusive")


RATE_BENCH = """
import pytest
from pytest_vlmbench.datasets import ManifestDataset
from pytest_vlmbench.tasks import GenerationParams, Task

RATE = Task(
    name="rate", prompt="Rate this photo.", expects_json=True, scorers=("photo_scores",),
    schema={{"type": "object", "required": ["instagram", "aesthetic"],
             "additionalProperties": False,
             # an enum: llama.cpp's schema conversion lets integers past minimum/maximum
             "properties": {{"instagram": {{"enum": list(range(1, 11))}},
                            "aesthetic": {{"enum": list(range(1, 11))}}}}}},
    params=GenerationParams(max_tokens=48))

def test_rate(vlm_bench):
    vlm_bench.run(RATE, ManifestDataset("photos.jsonl"), samples={n}, warmup=0)
"""


def test_two_models_ratings_agreement_is_in_the_document(project: Project) -> None:
    pt = project.pytester
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (90, 90, 90)]
    lines = []
    for i, colour in enumerate(colours):
        write_png(pt.path / "photos" / f"p{i}.png", colour)
        lines.append(json.dumps({"image": f"photos/p{i}.png", "id": f"p{i}",
                                 "description": f"A flat square of colour {colour}."}))
    (pt.path / "photos.jsonl").write_text("\n".join(lines) + "\n")
    pt.makepyfile(test_bench=RATE_BENCH.format(n=len(colours)))
    out = project.run(f"{options.MODELS}=tiny-vision,tiny-text")
    out.run.assert_outcomes(passed=2)
    out.run.stdout.fnmatch_lines(["agreement: rate instagram: tiny-* vs tiny-*: Kendall's "
                                  "tau-b *, top-1 *, top-3 * (n=5)"])
    doc, records = out.doc(), out.records()
    by_model = {e["model"]: e for e in doc["benchmarks"]}
    for entry in by_model.values():
        histogram = entry["summary"]["quality"]["histograms"]["instagram"]
        assert sum(histogram["bins"].values()) == histogram["n"] == len(colours)
    agreements = [a for a in doc["agreement"] if a["score"] == "instagram"]
    [found] = agreements
    assert {found["a"]["model"], found["b"]["model"]} == {"tiny-vision", "tiny-text"}
    assert found["n"] == len(colours)
    ratings = {side: {r["sample_id"]: r["scores"]["instagram"]
                      for r in _measured(records, found[side]["benchmark"])}
               for side in ("a", "b")}
    ids = sorted(ratings["a"])
    tau = kendall_tau_b([ratings["a"][i] for i in ids], [ratings["b"][i] for i in ids])
    if tau is None:
        assert found["kendall_tau_b"] is None
    else:
        assert math.isclose(found["kendall_tau_b"], tau)
    assert set(found["top_k"]) == {"1", "3"}


def test_extended_benchmarks_are_skipped_unless_asked(project: Project) -> None:
    project.pytester.makepyfile(test_bench="""
        import pytest

        @pytest.mark.vlm_extended
        def test_long(vlm_bench):
            vlm_bench.run("objects_and_counts", samples=1, warmup=0)
    """)
    skipped = project.run(f"{options.MODELS}=tiny-text", "-rs")
    skipped.run.assert_outcomes(skipped=1)
    skipped.run.stdout.fnmatch_lines(["*extended suite*--vlm-extended*"])
    ran = project.run(f"{options.MODELS}=tiny-text", "--vlm-extended")
    ran.run.assert_outcomes(passed=1)


def test_an_unknown_scorer_is_one_line_and_a_usage_error(project: Project) -> None:
    project.pytester.makepyfile(test_bench="""
        from pytest_vlmbench.tasks import Task

        def test_bad(vlm_bench):
            vlm_bench.run(Task(name="t", prompt="Describe.", scorers=("nope",)), samples=1)
    """)
    out = project.run(f"{options.MODELS}=tiny-text")
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stdout.fnmatch_lines(["*nope*"])


def test_an_slo_on_a_score_the_task_does_not_give_fails_before_any_request(
        project: Project) -> None:
    project.pytester.makepyfile(test_bench=SCENE_BENCH.format(slo="min_colour_accuracy=0.5"))
    out = project.run(f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(failed=1)
    assert ("SLO min_colour_accuracy: task 'objects_and_counts' gives no colour_accuracy "
            "score (its scorers ['counts'] give: count_abs_error, count_accuracy, "
            "total_accuracy)") in out.run.stdout.str()
    assert not out.out.with_name("results.records.jsonl").exists() or not out.records()


class _Closing:
    """A loaded model whose close() is recorded, and raises when asked to."""

    def __init__(self, log: list[str], name: str, fails: bool) -> None:
        self.log, self.name, self.fails = log, name, fails

    def close(self) -> None:
        self.log.append(self.name)
        if self.fails:
            raise RuntimeError(f"{self.name} would not close")


def test_a_model_that_fails_to_close_does_not_keep_the_others_open() -> None:
    from types import SimpleNamespace

    from pytest_vlmbench.plugin.pool import LoadedHandle, ModelPool
    from pytest_vlmbench.run.runner import ModelCase

    closed: list[str] = []
    pool = ModelPool(SimpleNamespace(log_path=None))  # type: ignore[arg-type]
    cases = [ModelCase(name, "fp32", "cpu", "llama_cpp", "text") for name in "abc"]
    handles = [LoadedHandle(c, None, _Closing(closed, c.model, c.model == "a"))  # type: ignore[arg-type]
               for c in cases]
    pool._current, pool._also = (cases[0], handles[0]), list(zip(cases[1:], handles[1:],
                                                                  strict=True))
    with pytest.raises(RuntimeError, match="a would not close"):
        pool.release()
    assert closed == ["a", "b", "c"]
    assert pool.held() == []
