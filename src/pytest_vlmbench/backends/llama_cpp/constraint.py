"""A task's output constraint (GBNF grammar, or JSON schema made into one), compiled and
checked by llama.cpp once per task, before any request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_vlmbench.backends.native_log import (
    error_mark,
    errors_since,
    native_stderr_to,
    sigint_deferred,
)
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ConstraintError

import llama_cpp  # isort: skip  # the backend's modules are imported only when used
from llama_cpp.llama_grammar import LlamaGrammar  # isort: skip


def check_grammar(grammar: LlamaGrammar, source: str, vocab: Any,
                  log_path: Path | None) -> LlamaGrammar:
    """Parse the grammar with llama.cpp now, once.

    llama-cpp-python 0.3.36's LlamaGrammar.from_string only stores the text; the parse
    happens when a request builds its sampler, and a grammar llama.cpp rejects then
    crashes the process (seen: `root ::= answer` segfaulted). So we build the grammar
    sampler here, where a NULL is a clear error, and free it again.
    """
    mark = error_mark()
    with native_stderr_to(log_path, f"grammar check {source}") as capture, sigint_deferred():
        sampler = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"),
        )
    if not sampler:
        # llama.cpp prints the parse error itself (fd 2, so the log) and logs the
        # rest; with --vlm-backend-logs only the logged part can be quoted.
        said = (capture.text(max_lines=4).replace("\n", "; ")
                or "; ".join(errors_since(mark)[:4]))
        raise ConstraintError(
            f"{source}: invalid GBNF grammar" + (f" (llama.cpp: {said})" if said else "")
        )
    llama_cpp.llama_sampler_free(sampler)
    return grammar


def compile_constraint(task: Task, vocab: Any, log_path: Path | None) -> LlamaGrammar | None:
    """The task's grammar (its own, else its JSON schema's), checked; None when it has
    neither. A bad one is a ConstraintError, which fails the test."""
    grammar_text = task.grammar_text()
    if grammar_text is not None:
        return check_grammar(LlamaGrammar.from_string(grammar_text, verbose=False),
                             str(task.grammar_file), vocab, log_path)
    if task.schema is None:
        return None
    try:
        grammar = LlamaGrammar.from_json_schema(json.dumps(task.schema), verbose=False)
    except Exception as exc:  # the converter raises Assertion/Type/Key/ValueError
        raise ConstraintError(
            f"task {task.name!r}: llama.cpp cannot turn its JSON schema into a grammar ({exc})"
        ) from None
    return check_grammar(grammar, f"task {task.name!r} (from its JSON schema)", vocab, log_path)
