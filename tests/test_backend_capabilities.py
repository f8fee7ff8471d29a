"""A backend's capabilities are data the runs must agree with.

On real llama.cpp runs of the tiny generated models (text, and vision with its
projector): every response reports only the stages and counts its model declares, the
results' roofline shows the decode bytes per token the model declares, and the runner
refuses, in one line and before any request, a constrained task on a model whose
capabilities say it cannot constrain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends import BackendError, LoadContext, Request, get_backend
from pytest_vlmbench.datasets import ImagePrep
from pytest_vlmbench.datasets.images import prepare_image
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.models.catalog import load_catalog
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.plugin import options
from pytest_vlmbench.run.records import RecordWriter, read_records
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.tasks import GenerationParams, Task
from pytest_vlmbench.tasks.structured import ConstraintError
from tests.conftest import TINY_CATALOG, Project

MODELS = ("tiny-text", "tiny-vision")
BANDWIDTH_GBS = 100.0
YES_NO = Task(
    name="yes_no", prompt="Answer as JSON.", expects_json=True,
    schema={"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
            "required": ["answer"], "additionalProperties": False},
    params=GenerationParams(max_tokens=16),
)
CAPTION = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=6))


@pytest.fixture(scope="module")
def loaded(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[str, Any]]:
    """Both tiny models, loaded once for this module by the real backend."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "models.toml").write_text(TINY_CATALOG)
    catalog = load_catalog(root / "models.toml")
    ctx = LoadContext(device=PROFILES["cpu"], cache_dir=model_cache, threads=1)
    models = {name: get_backend("llama_cpp").load(catalog.get(name), "fp32", ctx)
              for name in MODELS}
    yield models
    for model in models.values():
        model.close()


def _run(tmp_path: Path, name: str, model: Any, task: Task,
         samples: int = 2) -> tuple[dict[str, Any], list[Any]]:
    case = ModelCase(name, "fp32", "cpu", "llama_cpp",
                     "vision" if name == "tiny-vision" else "text")
    plan = BenchmarkPlan(
        benchmark_id=f"{name}-{task.name}", test="t", task=task,
        dataset=SyntheticScenes(4, size=64), prep=ImagePrep(long_edge=64), samples=samples,
        warmup=1, seed=0, run_id="r", bandwidth_gbs=BANDWIDTH_GBS, bandwidth_source="test",
    )
    path = tmp_path / f"{name}-{task.name}.jsonl"
    writer = RecordWriter(path)
    entries: list[dict[str, Any]] = []
    try:
        Runner(case, model, plan, writer, tick_s=None).run(entries.append)
    finally:
        writer.close()
    return entries[0], read_records(path)


def _assert_within(records: list[Any], declared: Any) -> None:
    assert records
    for record in records:
        assert record["error"] is None, record["error"]
        assert set(record["stages_ns"]) <= set(declared.stages), record["stages_ns"]
        assert set(record["counts"]) <= set(declared.counts), record["counts"]


def test_declared_capabilities_follow_what_was_loaded(loaded: dict[str, Any]) -> None:
    text, vision = loaded["tiny-text"].capabilities, loaded["tiny-vision"].capabilities
    assert (text.images, vision.images) == (False, True)  # images only with a projector
    assert ("image_encode" in text.stages, "image_encode" in vision.stages) == (False, True)
    assert ("image_tokens" in text.counts, "image_tokens" in vision.counts) == (False, True)
    # mtmd takes any number of images a request; the catalog gives no max_images here.
    assert (text.max_images, vision.max_images) == (None, None)
    for declared in (text, vision):
        assert (declared.streaming, declared.grammar, declared.json_schema) == (True,) * 3
        assert (declared.concurrency, declared.batch) == (1, False)
        assert declared.decode_bytes_per_token is not None
        assert declared.decode_bytes_per_token > 0
        assert declared.decode_bytes_source
    # The same GGUF serves both: the text model's bytes, the projector not counted.
    assert text.decode_bytes_per_token == vision.decode_bytes_per_token


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("task", [CAPTION, YES_NO], ids=["free", "schema"])
def test_every_response_stays_within_the_declared_capabilities(
    tmp_path: Path, loaded: dict[str, Any], name: str, task: Task,
) -> None:
    model = loaded[name]
    declared = model.capabilities
    entry, records = _run(tmp_path, name, model, task)
    assert [r["phase"] for r in records] == ["warmup", "measure", "measure"]
    _assert_within(records, declared)
    if declared.images:  # the vision path does report what it declares
        assert all("image_encode" in r["stages_ns"] and r["counts"]["image_tokens"] > 0
                   for r in records)
    roof = entry["summary"]["roofline"]
    assert roof["bytes_per_token"] == declared.decode_bytes_per_token
    assert roof["bytes_source"] == declared.decode_bytes_source
    assert roof["bound_tokens_per_s"] == BANDWIDTH_GBS * 1e9 / declared.decode_bytes_per_token


def test_a_text_model_refuses_images_as_it_declares(loaded: dict[str, Any]) -> None:
    sample = next(iter(SyntheticScenes(1, size=64).samples()))
    prepared = prepare_image(sample, ImagePrep(long_edge=64))
    request = Request(system="", user="Describe.", images=[prepared], seed=0,
                      params=GenerationParams(max_tokens=2))
    with pytest.raises(BackendError, match=r"^model 'tiny-text' is a text model; it cannot "
                       r"take images$"):
        loaded["tiny-text"].generate(request)


def test_a_constraint_the_model_cannot_apply_is_one_line_before_any_request(
    tmp_path: Path, loaded: dict[str, Any],
) -> None:
    """The real model, its declaration narrowed: the runner goes by the declaration."""
    model = loaded["tiny-text"]
    declared = model.capabilities
    model.capabilities = dataclasses.replace(declared, json_schema=False)
    try:
        with pytest.raises(ConstraintError, match=(
                r"^task 'yes_no' constrains generation with a JSON schema; backend "
                r"'llama_cpp' cannot \(model 'tiny-text', its capabilities\)$")):
            _run(tmp_path, "tiny-text", model, YES_NO)
    finally:
        model.capabilities = declared
    assert not (tmp_path / "tiny-text-yes_no.jsonl").exists()  # not one record written


RUN_BOTH = """
from tiny_tasks import CAPTION, YES_NO

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)

def test_yes_no(vlm_bench):
    vlm_bench.run(YES_NO)
"""


def test_a_plugin_run_reports_what_the_models_declare(
    project: Project, loaded: dict[str, Any],
) -> None:
    """Through the plugin and the results document: the inner session loads the same
    generated files, so it declares what the models loaded here declare."""
    project.pytester.makepyfile(test_bench=RUN_BOTH)
    out = project.run(f"{options.SAMPLES}=2", f"{options.WARMUP}=1",
                      f"{options.BANDWIDTH}={BANDWIDTH_GBS}")
    out.run.assert_outcomes(passed=4)
    doc, records = out.doc(), out.records()
    assert {b["model"] for b in doc["benchmarks"]} == set(MODELS)
    for bench in doc["benchmarks"]:
        declared = loaded[bench["model"]].capabilities
        _assert_within([r for r in records if r["benchmark"] == bench["id"]], declared)
        roof = bench["summary"]["roofline"]
        assert roof["bytes_per_token"] == declared.decode_bytes_per_token
        assert roof["bound_tokens_per_s"] == pytest.approx(
            BANDWIDTH_GBS * 1e9 / declared.decode_bytes_per_token)
