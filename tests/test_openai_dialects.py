"""Structured output in each server's dialect (issue 12, item 2).

Real servers where they run here: llama-cpp-python's server (a JSON schema, a GBNF
grammar, on the chat and the completions API; a dialect it rejects; one it ignores) and
llama.cpp's llama-server when built. vLLM, Ollama and OpenAI: replays of exchanges
written from their documented formats (tests/data/replay/*.json, each naming its
sources), served after the body was checked for the dialect's fields.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_vlmbench.backends.openai_http import (
    ClientConfig,
    Constraint,
    ConstraintRejected,
    OpenAIModel,
    constraint_was_sent,
)
from pytest_vlmbench.backends.openai_http.dialects import (
    DIALECTS,
    constraint_for,
    ignored_params,
    sampling_fields,
)
from pytest_vlmbench.tasks import GenerationParams, Task
from pytest_vlmbench.tasks.structured import ConstraintError
from tests.fault_proxy import (
    LcpServer,
    LlamaServer,
    ReplayServer,
    ask,
    body_problem,
    check_timing,
    load_case,
    needs_llama_server,
    shared,
    tiny_lcp_models,
    tiny_weights,
)

REPLAYS = sorted((Path(__file__).parent / "data" / "replay").glob("*.json"))
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "ok": {"type": "boolean"}},
    "required": ["answer", "ok"],
    "additionalProperties": False,
}
GRAMMAR = 'root ::= "yes" | "no"\n'
GRAMMAR_OUTPUT = re.compile(r"(yes|no)")


def schema_task() -> Task:
    return Task(name="yes_no", prompt="Is it a dog?", schema=SCHEMA, expects_json=True,
                params=GenerationParams(max_tokens=32))


def grammar_task(tmp_path: Path) -> Task:
    path = tmp_path / "yes_no.gbnf"
    path.write_text(GRAMMAR)
    return Task(name="yes_no_grammar", prompt="Is it a dog?", grammar_file=path,
                params=GenerationParams(max_tokens=32))


@pytest.fixture(scope="session")
def lcp(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> LcpServer:
    weights = tiny_weights(model_cache)
    server: LcpServer = shared("lcp", lambda: LcpServer(
        tiny_lcp_models(weights), tmp_path_factory.mktemp("lcp")))
    return server


def run(base_url: str, task: Task, *, dialect: str, max_tokens: int = 64,
        **fields: Any) -> tuple[Any, Any]:
    """(constraint, response) of one request for `task` through a fresh client."""
    fields.setdefault("model", "tiny")
    model = OpenAIModel(ClientConfig(base_url=base_url, dialect=dialect, **fields))
    try:
        constraint = model.prepare(task)
        request = ask(task.prompt, max_tokens=max_tokens, constraint=constraint)
        return constraint, model.generate(request)
    finally:
        model.close()


# -- llama-cpp-python's server, for real -------------------------------------------------
@pytest.mark.parametrize("chat_format", ["gemma", "completion"])
def test_llama_cpp_python_json_schema_is_obeyed(lcp: LcpServer, chat_format: str) -> None:
    """Chat: response_format json_object + schema. Completions: the schema as GBNF (its
    completions endpoint takes only `grammar`). The tiny random model obeys either way."""
    constraint, response = run(lcp.base_url, schema_task(), dialect="llama-cpp-python",
                               chat_format=chat_format)
    field = "response_format" if chat_format == "gemma" else "grammar"
    assert list(constraint.fields) == [field]
    assert response.finish_reason == "stop"
    jsonschema.validate(json.loads(response.text), SCHEMA)
    assert response.counts == {"constrained": 1}
    check_timing(response)


def test_llama_cpp_python_grammar_is_obeyed(lcp: LcpServer, tmp_path: Path) -> None:
    constraint, response = run(lcp.base_url, grammar_task(tmp_path), dialect="llama-cpp-python")
    assert constraint.fields == {"grammar": GRAMMAR}
    assert GRAMMAR_OUTPUT.fullmatch(response.text), response.text
    assert response.finish_reason == "stop"


@pytest.mark.parametrize("dialect", ["vllm", "openai", "ollama"])
def test_a_dialect_the_server_rejects_is_one_clear_error(lcp: LcpServer, dialect: str) -> None:
    """llama-cpp-python's server validates response_format and refuses a json_schema
    type, with status 500 (its error handler answers every validation error so): not
    retried, since the message names the constraint's field."""
    with pytest.raises(ConstraintRejected) as caught:
        run(lcp.base_url, schema_task(), dialect=dialect)
    message = str(caught.value)
    assert "\n" not in message
    assert f"server {lcp.base_url}/chat/completions (dialect {dialect}) rejected the " \
           "constraint (500)" in message
    assert "response_format" in message
    assert "Input should be 'text' or 'json_object'" in message
    assert message.endswith("check [model.endpoint] dialect")


def test_a_constraint_the_server_ignores_is_sent_and_marked(lcp: LcpServer,
                                                           tmp_path: Path) -> None:
    """vLLM's grammar field means nothing to llama-cpp-python's server: status 200 and
    unconstrained text. The response says a constraint was sent, so the runner can tell
    the server ignored it from the model failing it."""
    task = grammar_task(tmp_path)
    constraint, response = run(lcp.base_url, task, dialect="vllm", max_tokens=12)
    assert constraint.fields == {"structured_outputs": {"grammar": GRAMMAR}}
    assert response.counts["constrained"] == 1
    assert not GRAMMAR_OUTPUT.fullmatch(response.text)


# -- llama.cpp's llama-server, for real --------------------------------------------------
@needs_llama_server
@pytest.mark.parametrize("chat_format", ["gemma", "completion"])
def test_llama_server_json_schema_is_obeyed(llama_server: LlamaServer,
                                            chat_format: str) -> None:
    # llama.cpp's schema grammar allows up to two newlines and 20 blanks between tokens, and
    # the random tiny model takes them: bounded, but longer than 64 tokens.
    constraint, response = run(llama_server.base_url, schema_task(), dialect="llama-server",
                               chat_format=chat_format, max_tokens=512)
    assert list(constraint.fields) == ["json_schema"]
    jsonschema.validate(json.loads(response.text), SCHEMA)
    assert response.tokens_source == "usage"
    check_timing(response)


@needs_llama_server
def test_llama_server_grammar_is_obeyed(llama_server: LlamaServer, tmp_path: Path) -> None:
    constraint, response = run(llama_server.base_url, grammar_task(tmp_path),
                               dialect="llama-server")
    assert constraint.fields == {"grammar": GRAMMAR}
    assert GRAMMAR_OUTPUT.fullmatch(response.text), response.text


# -- replays of the servers we cannot run here --------------------------------------------
@pytest.mark.parametrize("path", REPLAYS, ids=[p.stem for p in REPLAYS])
def test_replayed_dialect(path: Path, tmp_path: Path) -> None:
    case = load_case(path)
    assert case["format_source"]  # every replay says where its format came from
    task = schema_task() if case["task"] == "json_schema" else grammar_task(tmp_path)
    server = ReplayServer(case)
    chat_format = "completion" if case["api"] == "completions" else "model"
    expect = case["expect"]
    try:
        if "error" in expect:
            with pytest.raises(ConstraintRejected, match=expect["match"]) as caught:
                run(server.base_url, task, dialect=case["dialect"], chat_format=chat_format,
                    max_tokens=32)
            assert "\n" not in str(caught.value)
            return
        constraint, response = run(server.base_url, task, dialect=case["dialect"],
                                   chat_format=chat_format, max_tokens=32)
    finally:
        server.close()
    assert body_problem(server.received[0], case) is None
    assert isinstance(constraint, Constraint)
    assert response.counts == {"constrained": 1}
    assert response.text == expect["text"]
    assert response.finish_reason == expect["finish_reason"]
    assert response.completion_tokens == expect["completion_tokens"]
    assert response.tokens_source == expect["tokens_source"]
    assert response.prompt_tokens == expect["prompt_tokens"]
    assert len(response.chunk_ns) == expect["chunks"]
    check_timing(response)
    if case["task"] == "json_schema":
        jsonschema.validate(json.loads(response.text), SCHEMA)


def test_replay_bodies_are_checked() -> None:
    """The replay server's check is itself checked: a body in vLLM's removed dialect."""
    case = load_case(REPLAYS[0].with_name("vllm_chat_json_schema.json"))
    old = {"guided_json": SCHEMA, "response_format": {"type": "json_object"}}
    assert body_problem(old, case) is not None


# -- the dialect table ----------------------------------------------------------------
def test_a_grammar_needs_a_dialect_that_has_one(tmp_path: Path) -> None:
    task = grammar_task(tmp_path)
    for dialect in ("openai", "ollama"):
        with pytest.raises(ConstraintError, match=f"cannot be sent to a {dialect} server"):
            constraint_for(task, dialect, "chat")
    assert constraint_for(task, "vllm", "chat") is not None


def test_no_constraint_on_completions_where_the_server_has_none() -> None:
    for dialect in ("openai", "ollama"):
        with pytest.raises(ConstraintError, match="no JSON schema on /v1/completions"):
            constraint_for(schema_task(), dialect, "completions")
        model = OpenAIModel(ClientConfig(base_url="http://127.0.0.1:9/v1", model="m",
                                         dialect=dialect, chat_format="completion"))
        model.close()  # declared before any request: the runner refuses the task
        assert not model.capabilities.json_schema
        assert not model.capabilities.grammar


def test_each_dialect_writes_the_schema_its_own_way() -> None:
    fields = {d: dict(constraint_for(schema_task(), d, "chat").fields)  # type: ignore[union-attr]
              for d in DIALECTS}
    assert fields["llama-server"] == {"json_schema": SCHEMA}
    assert fields["llama-cpp-python"] == {
        "response_format": {"type": "json_object", "schema": SCHEMA}}
    named = {"name": "yes_no", "schema": SCHEMA}
    assert fields["vllm"] == fields["ollama"] == {
        "response_format": {"type": "json_schema", "json_schema": named}}
    assert fields["openai"] == {
        "response_format": {"type": "json_schema", "json_schema": {**named, "strict": True}}}


def test_sampling_fields_per_dialect() -> None:
    params = GenerationParams(max_tokens=9, top_k=0, repeat_penalty=1.1, stop=("END",))
    vllm = sampling_fields("vllm", params, 3)
    assert (vllm["top_k"], vllm["repetition_penalty"], vllm["stop"]) == (-1, 1.1, ["END"])
    assert sampling_fields("llama-server", params, 3)["repeat_penalty"] == 1.1
    assert set(sampling_fields("openai", params, 3)) == {
        "max_tokens", "temperature", "top_p", "seed", "stop"}
    assert ignored_params("openai", params) == ["repeat_penalty"]
    assert ignored_params("openai", GenerationParams()) == []  # greedy: top_k changes nothing


def test_constraint_was_sent() -> None:
    assert not constraint_was_sent(ask())
    constraint = constraint_for(schema_task(), "vllm", "chat")
    assert constraint_was_sent(ask(constraint=constraint))
