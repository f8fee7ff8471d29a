"""Each server's own words for a constraint and for the sampling parameters.

OpenAI-compatible servers agree on messages and streaming, not on structured output
(JSON schema on the chat API; GBNF grammar):

- llama-server: `json_schema: {schema}`; grammar `grammar: "..."` (llama.cpp
  tools/server/README.md, its OpenAI-compatible chat endpoint reads both fields).
- llama-cpp-python: `response_format: {type: "json_object", schema}`; grammar `grammar`
  (llama_cpp/server/types.py, CreateChatCompletionRequest, 0.3.36).
- vllm: `response_format: {type: "json_schema", json_schema: {name, schema}}`; grammar
  `structured_outputs: {grammar}` (docs.vllm.ai, features/structured_outputs).
- ollama: `response_format: {type: "json_schema", json_schema: {name, schema}}`, which its
  /v1 turns into the native `format` (docs.ollama.com api/openai-compatibility, ollama
  openai/openai.go); no grammar.
- openai: `response_format: {type: "json_schema", json_schema: {name, schema, strict:
  true}}` (platform.openai.com, structured outputs); no grammar.

vLLM removed `guided_json`/`guided_grammar` in 0.12 and its server ignores unknown fields,
so an old-dialect request is answered unconstrained with status 200: that is why the
dialect is the catalog's choice and why an ignored constraint is detected downstream.

On `/v1/completions` (text models with chat_format "completion"): llama-server takes
`json_schema`/`grammar` there too; llama-cpp-python's completions take only `grammar`, so
a schema is turned into GBNF with llama-cpp-python's own converter (the same one its chat
endpoint uses for `response_format`); vLLM takes `structured_outputs: {json}`; Ollama and
OpenAI have no constraint on completions (ConstraintError).

Sampling: `max_tokens`, `temperature`, `top_p`, `seed` and `stop` go to every server;
`top_k`, `min_p` and the repeat penalty only where the server reads them (OpenAI answers
400 to fields it does not know). What is not sent is recorded in the settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_vlmbench.models.endpoints import APIS, DIALECTS  # the catalog's, one list
from pytest_vlmbench.tasks import GenerationParams, Task
from pytest_vlmbench.tasks.structured import ConstraintError

__all__ = ["APIS", "DIALECTS", "GRAMMAR_DIALECTS", "Constraint", "constraint_for",
           "ignored_params", "params_not_sent", "sampling_fields", "schema_name",
           "supports_grammar", "supports_schema"]

GRAMMAR_DIALECTS = frozenset({"llama-server", "llama-cpp-python", "vllm"})

# Sampling fields beyond the common ones, per dialect: GenerationParams name -> body name.
_EXTRA_SAMPLING: dict[str, dict[str, str]] = {
    "llama-server": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
    "llama-cpp-python": {"top_k": "top_k", "min_p": "min_p",
                         "repeat_penalty": "repeat_penalty"},
    "vllm": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"},
    "ollama": {},
    "openai": {},
}
_NEUTRAL = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}  # "off" in GenerationParams


@dataclass(frozen=True)
class Constraint:
    """A task's constraint in one dialect: the body fields that carry it."""

    kind: str  # "json_schema" | "grammar"
    source: str  # where it came from, for messages
    dialect: str
    fields: Mapping[str, Any]

    def describe(self) -> str:
        return f"{self.kind} as {', '.join(self.fields)} ({self.dialect})"


def supports_grammar(dialect: str) -> bool:
    """Whether the dialect can constrain with a GBNF grammar."""
    return dialect in GRAMMAR_DIALECTS


def supports_schema(dialect: str, api: str) -> bool:
    """Whether the dialect can constrain with a JSON schema on `api` (Ollama's and
    OpenAI's /v1/completions have no field for one)."""
    return api == "chat" or dialect not in ("ollama", "openai")


def schema_name(task_name: str) -> str:
    """A `json_schema.name` OpenAI accepts: [a-zA-Z0-9_-], at most 64 characters."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", task_name)[:64] or "output"


def constraint_for(task: Task, dialect: str, api: str) -> Constraint | None:
    """The task's grammar (else its schema) as body fields of `dialect` on `api`; None
    when the task constrains nothing; ConstraintError when the server cannot take it."""
    grammar = task.grammar_text()
    if grammar is not None:
        source = str(task.grammar_file)
        if not supports_grammar(dialect):
            raise ConstraintError(
                f"{source}: a GBNF grammar cannot be sent to a {dialect} server (it has no "
                f"grammar field; dialects with one: {', '.join(sorted(GRAMMAR_DIALECTS))}); "
                "give the task a JSON schema instead"
            )
        fields: dict[str, Any] = (
            {"structured_outputs": {"grammar": grammar}} if dialect == "vllm"
            else {"grammar": grammar}
        )
        return Constraint("grammar", source, dialect, fields)
    if task.schema is None:
        return None
    schema = dict(task.schema)
    source = f"task {task.name!r} (its JSON schema)"
    return Constraint("json_schema", source, dialect,
                      _schema_fields(schema, task.name, dialect, api, source))


def _schema_fields(schema: dict[str, Any], name: str, dialect: str, api: str,
                   source: str) -> dict[str, Any]:
    if dialect == "llama-server":
        return {"json_schema": schema}
    if dialect == "llama-cpp-python":
        if api == "chat":
            return {"response_format": {"type": "json_object", "schema": schema}}
        return {"grammar": _gbnf_from_schema(schema, source)}
    if api == "completions":
        if dialect == "vllm":
            return {"structured_outputs": {"json": schema}}
        raise ConstraintError(
            f"{source}: a {dialect} server takes no JSON schema on /v1/completions; use "
            "api = \"chat\" (a chat_format other than \"completion\")"
        )
    spec: dict[str, Any] = {"name": schema_name(name), "schema": schema}
    if dialect == "openai":
        spec["strict"] = True
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


def _gbnf_from_schema(schema: dict[str, Any], source: str) -> str:
    """llama-cpp-python's own schema-to-GBNF converter (its chat endpoint uses it for
    `response_format`), for its completions endpoint, which takes only `grammar`."""
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError:
        raise ConstraintError(
            f"{source}: a llama-cpp-python server's /v1/completions takes only a GBNF "
            "grammar, and turning the schema into one needs llama-cpp-python here "
            "(pip install 'pytest-vlmbench[server]'), or use api = \"chat\""
        ) from None
    try:
        text: str = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises Assertion/Type/Key/ValueError
        raise ConstraintError(
            f"{source}: llama-cpp-python cannot turn the JSON schema into a grammar ({exc})"
        ) from None
    return text


def sampling_fields(dialect: str, params: GenerationParams, seed: int) -> dict[str, Any]:
    """The request's sampling parameters in the dialect's names."""
    body: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": seed,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    for ours, theirs in _EXTRA_SAMPLING[dialect].items():
        value = getattr(params, ours)
        if dialect == "vllm" and ours == "top_k" and value == 0:
            value = -1  # vLLM's "off" (older servers refuse 0)
        body[theirs] = value
    return body


def params_not_sent(dialect: str) -> list[str]:
    """GenerationParams fields this dialect has no field for (recorded in the settings:
    the server uses its own default for them)."""
    return sorted(set(_NEUTRAL) - set(_EXTRA_SAMPLING[dialect]))


def ignored_params(dialect: str, params: GenerationParams) -> list[str]:
    """The not-sent parameters whose value is not neutral: asked for, not applied."""
    greedy = params.temperature == 0  # top_k and min_p cannot change a greedy choice
    return [name for name in params_not_sent(dialect)
            if getattr(params, name) != _NEUTRAL[name]
            and not (greedy and name in ("top_k", "min_p"))]
