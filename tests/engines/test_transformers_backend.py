"""The transformers backend on the tiny generated models (generated:hf-tiny-llama,
generated:hf-tiny-llava): real `model.generate` calls, every figure checked against its
definition (never against a speed). torch runs on 1 thread: the tests share 2 cores.
"""

from __future__ import annotations

import io
import json
import shutil
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from pytest_vlmbench.backends import (
    BackendError,
    LoadContext,
    Request,
    Response,
    get_backend,
)
from pytest_vlmbench.backends.hf_transformers import TransformersBackend, precision_problem
from pytest_vlmbench.backends.hf_transformers.constraint import GrammarMask
from pytest_vlmbench.backends.hf_transformers.model import TransformersModel
from pytest_vlmbench.backends.hf_transformers.timing import StepClock, no_sync
from pytest_vlmbench.datasets import PreparedImage
from pytest_vlmbench.metrics.summary import stage_violations
from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG, ModelSpec, WeightSource, load_catalog
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.plugin import options
from pytest_vlmbench.results.document import validate_record
from pytest_vlmbench.results.models import Record
from pytest_vlmbench.tasks import GenerationParams, Task
from pytest_vlmbench.tasks.structured import ConstraintError, ParseOutcome
from tests.conftest import Project

YES_NO = Task(
    name="yes_no", prompt="Answer as JSON.",
    schema={"type": "object",
            "properties": {"answer": {"enum": ["yes", "no"]}, "ok": {"type": "boolean"}},
            "required": ["answer", "ok"], "additionalProperties": False},
    expects_json=True, params=GenerationParams(max_tokens=32),
)
FREE = GenerationParams(max_tokens=6)


def spec_of(model_id: str) -> ModelSpec:
    return load_catalog(EMBEDDED_CATALOG).get(model_id)


def context(cache: Path) -> LoadContext:
    return LoadContext(device=PROFILES["cpu"], cache_dir=cache, threads=1)


def load(model_id: str, precision: str, cache: Path) -> TransformersModel:
    model = TransformersBackend().load(spec_of(model_id), precision, context(cache))
    assert isinstance(model, TransformersModel)
    return model


@pytest.fixture(scope="module")
def text_model(model_cache: Path) -> Iterator[TransformersModel]:
    model = load("tiny-llama-hf", "fp32", model_cache)
    yield model
    model.close()


@pytest.fixture(scope="module")
def vision_model(model_cache: Path) -> Iterator[TransformersModel]:
    model = load("tiny-llava-hf", "fp32", model_cache)
    yield model
    model.close()


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (96, 72)) -> PreparedImage:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return PreparedImage(jpeg=buf.getvalue(), sha256="-", width=size[0], height=size[1],
                         source="test")


def ask(user: str = "Describe the picture.", *, images: tuple[PreparedImage, ...] = (),
        params: GenerationParams = FREE, constraint: Any = None, seed: int = 0) -> Request:
    return Request(system="You are brief.", user=user, images=images, params=params,
                   seed=seed, constraint=constraint)


def as_record(response: Response) -> Record:
    """The fields of a record that stage_violations reads."""
    fields = {"error": None, "t_start_ns": response.t_start_ns, "t_end_ns": response.t_end_ns,
              "t_first_token_ns": response.t_first_token_ns, "stages_ns": response.stages_ns}
    return cast("Record", fields)


def assert_well_formed(model: TransformersModel, response: Response) -> None:
    """What every response of this backend says, by definition."""
    caps = model.capabilities
    assert response.tokens_source == "engine"
    assert response.ttft_source == "stream"
    assert response.t_first_token_ns is not None
    assert response.t_start_ns < response.t_first_token_ns <= response.t_end_ns
    assert stage_violations(as_record(response)) == []
    assert set(response.stages_ns) <= set(caps.stages)
    assert set(response.counts) <= set(caps.counts)
    assert all(v >= 0 for v in response.stages_ns.values())
    assert {"template", "prefill", "decode"} <= set(response.stages_ns)
    assert response.counts["prefill_tokens"] == response.prompt_tokens
    assert response.completion_tokens is not None
    assert len(response.chunk_ns) == response.completion_tokens  # one step per token
    assert response.chunk_ns == sorted(response.chunk_ns)
    if response.chunk_ns:
        assert response.chunk_ns[0] == response.t_first_token_ns
        assert response.chunk_ns[-1] <= response.t_end_ns
    assert response.finish_reason in ("stop", "length")
    if response.finish_reason == "length":
        assert response.counts["decode_tokens"] == response.completion_tokens - 1
    else:  # the end-of-generation token is a step, not a completion token
        assert response.counts["decode_tokens"] == response.completion_tokens


# -- precision and dtype ------------------------------------------------------------
@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16),
                                                  ("fp16", torch.float16)])
def test_parameters_have_the_precisions_dtype(model_cache: Path, precision: str,
                                              dtype: Any) -> None:
    model = load("tiny-llama-hf", precision, model_cache)
    try:
        params = list(model._engine.model.parameters())
        assert {p.dtype for p in params} == {dtype}
        assert model.settings["dtype"] == str(dtype).removeprefix("torch.")
        response = model.generate(ask())
        assert_well_formed(model, response)
    finally:
        model.close()


def test_fp32_model_is_fp32_and_settings_are_recorded(text_model: TransformersModel) -> None:
    assert {p.dtype for p in text_model._engine.model.parameters()} == {torch.float32}
    settings = text_model.settings
    assert settings["dtype"] == "float32"
    assert settings["device"] == "cpu"
    assert settings["threads"] == torch.get_num_threads() == 1
    assert settings["attn_implementation"] == "sdpa"
    assert settings["torch"] == torch.__version__
    assert settings["transformers"]
    caps = text_model.capabilities
    assert caps.streaming
    assert caps.batch
    assert caps.grammar
    assert caps.json_schema
    assert not caps.images
    assert caps.decode_bytes_per_token == sum(
        p.numel() * 4 for p in text_model._engine.model.parameters())
    assert text_model.timings_ns["load"] > 0


@pytest.mark.parametrize("precision", ["int8", "nf4", "int4"])
def test_bitsandbytes_precisions_say_why_they_cannot_load(model_cache: Path,
                                                          precision: str) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bitsandbytes is installed here: the missing-library message is moot")
    problem = precision_problem(precision, PROFILES["cpu"])
    assert problem is not None
    assert "bitsandbytes" in problem
    assert "cannot be imported" in problem
    spec = replace(spec_of("tiny-llama-hf"),
                   precisions={precision: WeightSource("generated", "hf-tiny-llama")})
    with pytest.raises(BackendError, match=rf"^model 'tiny-llama-hf' \({precision}\): .*"
                                           r"bitsandbytes") as info:
        TransformersBackend().load(spec, precision, context(model_cache))
    assert "\n" not in str(info.value)


def test_unknown_precision_is_refused(model_cache: Path) -> None:
    spec = replace(spec_of("tiny-llama-hf"),
                   precisions={"q4_k_m": WeightSource("generated", "hf-tiny-llama")})
    with pytest.raises(BackendError, match=r"precision 'q4_k_m' is not one the transformers"):
        TransformersBackend().load(spec, "q4_k_m", context(model_cache))


def test_check_device() -> None:
    backend = get_backend("transformers")
    assert backend.check_device(PROFILES["cpu"]) is None
    problem = backend.check_device(PROFILES["h200"])
    if torch.cuda.is_available():
        assert problem is None
    else:
        assert problem is not None
        assert "torch.cuda.is_available() is False" in problem
        assert "\n" not in problem


# -- load failures --------------------------------------------------------------------
def _path_spec(path: Path) -> ModelSpec:
    return replace(spec_of("tiny-llama-hf"), precisions={"fp32": WeightSource("path", str(path))})


def test_missing_directory_names_model_precision_and_path(model_cache: Path,
                                                          tmp_path: Path) -> None:
    gone = tmp_path / "no-such-model"
    with pytest.raises(BackendError, match=r"^model 'tiny-llama-hf' \(fp32\): .*no-such-model"):
        TransformersBackend().load(_path_spec(gone), "fp32", context(model_cache))


def test_directory_without_config_is_refused(model_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(BackendError, match=r"^model 'tiny-llama-hf' \(fp32\): .*config\.json"):
        TransformersBackend().load(_path_spec(tmp_path), "fp32", context(model_cache))


def test_corrupt_weights_are_one_line_with_transformers_reason(
        text_model: TransformersModel, model_cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(text_model._weights.path, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BackendError) as info:
        TransformersBackend().load(_path_spec(broken), "fp32", context(model_cache))
    message = str(info.value)
    assert message.startswith("model 'tiny-llama-hf' (fp32): transformers could not load ")
    assert str(broken) in message
    assert "\n" not in message


def test_settings_are_checked(model_cache: Path) -> None:
    spec = replace(spec_of("tiny-llama-hf"), settings={"n_threads": 2})
    with pytest.raises(BackendError, match=r"unknown transformers setting\(s\) 'n_threads'"):
        TransformersBackend().load(spec, "fp32", context(model_cache))
    spec = replace(spec_of("tiny-llama-hf"), settings={"attn_implementation": "fast"})
    with pytest.raises(BackendError, match=r"settings\.attn_implementation' must be one of"):
        TransformersBackend().load(spec, "fp32", context(model_cache))


# -- requests -------------------------------------------------------------------------
def test_text_request(text_model: TransformersModel) -> None:
    response = text_model.generate(ask())
    assert_well_formed(text_model, response)
    assert "image_encode" not in response.stages_ns
    assert "sample" not in response.stages_ns  # no constraint: no grammar work
    assert "detokenize" in response.stages_ns


def test_output_is_what_a_bare_generate_makes(text_model: TransformersModel) -> None:
    """Greedy tokens and text equal model.generate's on the same prompt."""
    engine = text_model._engine
    response = text_model.generate(ask(params=GenerationParams(max_tokens=12)))
    messages = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": "Describe the picture."}]
    inputs = engine.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = engine.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = [k for k, t in enumerate(ids) if t in engine.eos_ids]
    kept = ids[:eos[0]] if eos else ids
    assert response.prompt_tokens == inputs["input_ids"].shape[1]
    assert response.completion_tokens == len(kept)
    assert response.text == engine.tokenizer.decode(kept, skip_special_tokens=True)


def test_stop_string_ends_the_answer(text_model: TransformersModel) -> None:
    free = text_model.generate(ask(params=GenerationParams(max_tokens=8)))
    assert len(free.text) >= 2
    stop = free.text[1]
    response = text_model.generate(ask(params=GenerationParams(max_tokens=8, stop=(stop,))))
    assert response.finish_reason == "stop"
    assert stop not in response.text
    assert free.text.startswith(response.text)


def test_sampling_follows_the_seed(text_model: TransformersModel) -> None:
    hot = GenerationParams(max_tokens=8, temperature=1.5, top_k=0)
    first = text_model.generate(ask(params=hot, seed=7)).text
    assert text_model.generate(ask(params=hot, seed=7)).text == first


def test_text_model_refuses_images(text_model: TransformersModel) -> None:
    with pytest.raises(BackendError, match="is a text model; it cannot take images"):
        text_model.generate(ask(images=(jpeg((1, 2, 3)),)))


def test_vision_request_separates_the_vision_encoder(vision_model: TransformersModel) -> None:
    assert vision_model.capabilities.images
    assert vision_model.settings["vision_modules"] == ["CLIPVisionModel",
                                                       "LlavaMultiModalProjector"]
    response = vision_model.generate(ask(images=(jpeg((200, 30, 30)),)))
    assert_well_formed(vision_model, response)
    assert response.stages_ns["image_encode"] > 0
    assert response.counts["image_tokens"] == 16  # 64x64 px in 16 px patches
    assert response.counts["prefill_tokens"] >= 16 + 1
    # The language model's bytes: every parameter outside the vision tower and projector.
    engine = vision_model._engine
    vision = {id(p) for m in engine.vision for p in m.parameters()}
    assert vision_model.capabilities.decode_bytes_per_token == sum(
        p.numel() * 4 for p in engine.model.parameters() if id(p) not in vision)


def test_several_images_in_one_request(vision_model: TransformersModel) -> None:
    frames = (jpeg((200, 30, 30)), jpeg((30, 200, 30)))
    response = vision_model.generate(ask(images=frames))
    assert_well_formed(vision_model, response)
    assert response.counts["image_tokens"] == 32


def test_vision_model_answers_text_only_requests(vision_model: TransformersModel) -> None:
    response = vision_model.generate(ask())
    assert_well_formed(vision_model, response)
    assert "image_encode" not in response.stages_ns
    assert "image_tokens" not in response.counts


# -- constraints ------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["text", "vision"])
def test_json_schema_constraint_gives_valid_json(which: str, text_model: TransformersModel,
                                                 vision_model: TransformersModel) -> None:
    model = text_model if which == "text" else vision_model
    images = (jpeg((10, 10, 200)),) if which == "vision" else ()
    constraint = model.prepare(YES_NO)
    response = model.generate(ask(images=images, params=YES_NO.params, constraint=constraint))
    assert_well_formed(model, response)
    assert response.finish_reason == "stop"
    check = YES_NO.checker().check(response.text, response.finish_reason)
    assert check.outcome is ParseOutcome.VALID, (response.text, check.detail)
    assert response.counts["constrained"] == 1
    assert response.stages_ns["sample"] > 0


def test_gbnf_grammar_constrains(text_model: TransformersModel, tmp_path: Path) -> None:
    grammar = tmp_path / "answer.gbnf"
    grammar.write_text('root ::= "yes" | "no"\n')
    task = Task(name="g", prompt="p", grammar_file=grammar, params=GenerationParams(max_tokens=8))
    response = text_model.generate(ask(params=task.params, constraint=text_model.prepare(task)))
    assert response.text in ("yes", "no")
    assert response.finish_reason == "stop"


def test_bad_grammar_is_one_line_naming_the_file(text_model: TransformersModel,
                                                 tmp_path: Path) -> None:
    grammar = tmp_path / "bad.gbnf"
    grammar.write_text("root ::= answer\n")
    task = Task(name="g", prompt="p", grammar_file=grammar)
    with pytest.raises(ConstraintError) as info:
        text_model.prepare(task)
    message = str(info.value)
    assert message.startswith(f"{grammar}: invalid GBNF grammar (xgrammar: ")
    assert '"answer" is not defined' in message
    assert "\n" not in message


def test_task_without_constraint_prepares_none(text_model: TransformersModel) -> None:
    assert text_model.prepare(Task(name="free", prompt="p")) is None


def test_grammar_mask_leaves_a_row_that_ended_alone(text_model: TransformersModel,
                                                    tmp_path: Path) -> None:
    """In a batch, a row stopped by a stop string is padded while the others go on: its
    matcher must not be fed the padding (xgrammar refuses it) nor its logits masked."""
    grammar = tmp_path / "answer.gbnf"
    grammar.write_text('root ::= "yes" | "no"\n')
    constraint = text_model.prepare(Task(name="g", prompt="p", grammar_file=grammar))
    engine = text_model._engine
    clock = StepClock()
    mask = GrammarMask([constraint, constraint], engine.vocab_size, clock, no_sync,
                       engine.pad_id)
    scores = mask(torch.zeros((2, 3), dtype=torch.long),
                  torch.zeros((2, engine.vocab_size)))
    allowed = int(torch.nonzero(torch.isfinite(scores[1]))[0])
    assert not torch.isfinite(scores[0, engine.pad_id])  # the grammar forbids padding
    clock.put(torch.zeros(1))  # the prompt
    clock.put(torch.zeros(2))  # step 0
    ids = torch.tensor([[0, 0, 0, engine.pad_id], [0, 0, 0, allowed]])
    scores = mask(ids, torch.zeros((2, engine.vocab_size)))
    assert bool(torch.isfinite(scores[0]).all())  # the ended row: no mask
    assert not bool(torch.isfinite(scores[1]).all())  # the other: still constrained
    assert len(mask.step_ns) == 2
    assert all(ns > 0 for ns in mask.step_ns)


# -- offline batch ------------------------------------------------------------------------
def test_batch_one_result_per_request_in_order(text_model: TransformersModel) -> None:
    prompts = ["Describe.", "Describe the picture in one sentence, please.", "Why?"]
    params = GenerationParams(max_tokens=8)
    singles = [text_model.generate(ask(p, params=params)) for p in prompts]
    batch = text_model.generate_batch(
        [ask(p, params=params) for p in prompts[:2]]
        + [ask("with a picture", params=params, images=(jpeg((1, 1, 1)),))]
        + [ask(prompts[2], params=params)])
    assert len(batch) == 4
    assert isinstance(batch[2], BackendError)  # its own failure; the others ran
    done = [r for r in batch if isinstance(r, Response)]
    assert len(done) == 3
    assert len({r.t_start_ns for r in done}) == 1  # the batch's submit time
    assert len({r.t_first_token_ns for r in done}) == 1  # its first step
    for single, response in zip(singles, done, strict=True):
        assert_well_formed(text_model, response)
        assert response.prompt_tokens == single.prompt_tokens  # padding not counted
        assert response.completion_tokens == single.completion_tokens
        assert "detokenize" not in response.stages_ns


def test_batch_with_images_and_constraint(vision_model: TransformersModel) -> None:
    constraint = vision_model.prepare(YES_NO)
    requests = [ask("Is it red?" * n, images=(jpeg((200, 10 * n, 10)),),
                    params=YES_NO.params, constraint=constraint) for n in (1, 2, 3)]
    responses = vision_model.generate_batch(requests)
    for response in responses:
        assert isinstance(response, Response)
        assert_well_formed(vision_model, response)
        assert response.counts["image_tokens"] == 16
        check = YES_NO.checker().check(response.text, response.finish_reason)
        assert check.outcome is ParseOutcome.VALID, (response.text, check.detail)


def test_batch_image_that_does_not_decode_fails_alone(vision_model: TransformersModel) -> None:
    broken = replace(jpeg((9, 9, 9)), jpeg=b"not a jpeg")
    responses = vision_model.generate_batch([ask(images=(jpeg((200, 0, 0)),)),
                                             ask(images=(broken,)),
                                             ask(images=(jpeg((0, 0, 200)),))])
    assert isinstance(responses[1], Exception)
    assert "cannot identify image file" in str(responses[1])
    for response in (responses[0], responses[2]):
        assert isinstance(response, Response)
        assert_well_formed(vision_model, response)


def test_batch_needs_one_set_of_parameters(text_model: TransformersModel) -> None:
    with pytest.raises(BackendError, match="one set of generation parameters"):
        text_model.generate_batch([ask(params=FREE),
                                   ask(params=GenerationParams(max_tokens=3))])


def test_close_frees_the_model(model_cache: Path) -> None:
    model = load("tiny-llama-hf", "fp32", model_cache)
    ref = weakref.ref(model._engine.model)
    model.close()
    assert ref() is None
    model.close()  # twice is harmless


# -- a real plugin run ----------------------------------------------------------------------
HF_CATALOG = """
[[model]]
id = "tiny-llama-hf"
backend = "transformers"
modality = "text"
chat_format = "model"
default = true
precisions = { fp32 = "generated:hf-tiny-llama" }

[[model]]
id = "tiny-llava-hf"
backend = "transformers"
modality = "vision"
chat_format = "model"
default = true
precisions = { fp32 = "generated:hf-tiny-llava" }
"""

RUN_TASKS = """
from tiny_tasks import CAPTION, YES_NO

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)

def test_yes_no(vlm_bench):
    vlm_bench.run(YES_NO)
"""


def test_plugin_run_on_both_tiny_models(project: Project) -> None:
    (project.pytester.path / "models.toml").write_text(HF_CATALOG)
    project.pytester.makepyfile(test_bench=RUN_TASKS)
    out = project.run(f"{options.SAMPLES}=2", f"{options.WARMUP}=1", f"{options.THREADS}=1")
    out.run.assert_outcomes(passed=4)
    doc = out.doc()  # validated against the schema on load
    records = out.records()
    assert len(records) == 4 * 3
    for record in records:
        validate_record(record)
        assert record["error"] is None
        assert stage_violations(cast("Record", record)) == [], record
        assert record["tokens_source"] == "engine"
        assert record["ttft_source"] == "stream"
        assert len(record["chunks_ns"]) == record["completion_tokens"]
        assert record["t_first_token_ns"] is not None
    for bench in doc["benchmarks"]:
        assert bench["settings"]["dtype"] == "float32"
        assert bench["settings"]["threads"] == 1
        assert not [w for w in bench["warnings"] if "stage timings" in w]
        assert bench["summary"]["itl_s"] is not None
    vision = [r for r in records if r["model"] == "tiny-llava-hf"]
    assert vision
    assert all(r["counts"]["image_tokens"] == 16 and "image_encode" in r["stages_ns"]
                          for r in vision)
    assert {r["parse"] for r in records if r["task"] == "yes_no"} == {"valid"}
    assert sorted((e["model"], e["count"]) for e in doc["loads"]) == [
        ("tiny-llama-hf", 1), ("tiny-llava-hf", 1)]
    assert json.dumps(doc)  # the document is plain JSON
