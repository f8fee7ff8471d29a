"""A task's output constraint (JSON schema or GBNF grammar), compiled once per task by
xgrammar against the model's tokenizer, and the logits processor that enforces it.

transformers has no grammar sampler of its own; xgrammar (the library vLLM uses) turns a
grammar into a token mask per step. Its own `xgrammar.contrib.hf.LogitsProcessor` is
not used: it masks a batch row that has finished with a stale mask (all -inf: NaN when
sampling) and cannot mix constrained and free rows. `GrammarMask` here keeps one matcher
per batch row, masks only the rows still inside their grammar, and times its own work as
the `sample` stage (see request.py).

JSON schemas are compiled with `any_whitespace=False`: one line, separators ", " and
": ", so a model cannot pad an answer with whitespace until max_tokens (llama.cpp's
converter allows up to 20 spaces between elements; the parsed JSON is the same).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_vlmbench.backends import BackendError
from pytest_vlmbench.backends.hf_transformers.timing import StepClock
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ConstraintError

import transformers  # isort: skip  # the backend's modules are imported only when used
import xgrammar  # isort: skip

# xgrammar's C++ errors start with "[07:26:17] /project/cpp/grammar_parser.cc:820: ".
_CPP_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


def _reason(exc: BaseException) -> str:
    """xgrammar's message, first line, without its time stamp and source location."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return _CPP_PREFIX.sub("", lines[0]) if lines else type(exc).__name__


@dataclass(frozen=True)
class Constraint:
    """What `prepare` returns: a grammar compiled for this model's tokenizer."""

    compiled: Any  # xgrammar.CompiledGrammar
    kind: str  # "grammar" (GBNF) or "schema" (JSON schema)
    source: str  # for messages: the grammar file or the task


class ConstraintCompiler:
    """Compiles constraints for one loaded model; the tokenizer's vocabulary is read once,
    at the first constrained task (about 0.5 s for a 150k-token vocabulary)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_ids = list(stop_token_ids)
        self._compiler: Any = None

    def _get(self) -> Any:
        if self._compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self._tokenizer, vocab_size=self._vocab_size,
                stop_token_ids=self._stop_ids or None)
            self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
        return self._compiler

    def compile(self, task: Task) -> Constraint | None:
        """The task's grammar (its own, else its JSON schema's) compiled; None when it has
        neither. A bad one is a ConstraintError, which fails the test in one line."""
        grammar_text = task.grammar_text()
        if grammar_text is not None:
            source = str(task.grammar_file)
            try:
                compiled = self._get().compile_grammar(grammar_text)
            except (RuntimeError, ValueError) as exc:
                raise ConstraintError(
                    f"{source}: invalid GBNF grammar (xgrammar: {_reason(exc)})") from None
            return Constraint(compiled, "grammar", source)
        if task.schema is None:
            return None
        source = f"task {task.name!r}"
        try:
            compiled = self._get().compile_json_schema(
                json.dumps(task.schema), any_whitespace=False)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ConstraintError(
                f"{source}: xgrammar cannot compile its JSON schema ({_reason(exc)})"
            ) from None
        return Constraint(compiled, "schema", source)


class GrammarMask(transformers.LogitsProcessor):  # type: ignore[misc]  # untyped library
    """Masks the tokens each constrained row's grammar forbids, step by step.

    One per generate call (matchers hold the state of one generation). `rows[i]` is row
    i's constraint or None (free); a row that ended without its grammar's end (a stop
    string, in a batch that goes on) is padded by generate and left alone. `step_ns[k]`
    is the time spent here choosing step k's token (k = 0: the first token, inside the
    prefill's window), so a batch row that ended at step e is charged
    `sum(step_ns[:e + 1])`."""

    def __init__(self, rows: Sequence[Constraint | None], vocab_size: int, clock: StepClock,
                 sync: Callable[[], None], pad_id: int) -> None:
        self._rows = list(rows)
        self._pad_id = pad_id
        self._vocab_size = vocab_size
        self._clock = clock
        self._sync = sync
        self._matchers: list[Any] = []
        self._bitmask: Any = None
        self.step_ns: list[int] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self._sync()
        t0 = time.perf_counter_ns()
        if not self._matchers:
            self._matchers = [None if c is None else xgrammar.GrammarMatcher(c.compiled)
                              for c in self._rows]
            self._bitmask = xgrammar.allocate_token_bitmask(len(self._rows), self._vocab_size)
        else:
            last = input_ids[:, -1].tolist()
            for i, (matcher, row, token) in enumerate(zip(self._matchers, self._rows, last,
                                                          strict=True)):
                if matcher is None or row is None or matcher.is_terminated():
                    continue
                if matcher.accept_token(token):
                    continue
                if token == self._pad_id:  # the row ended (a stop string): generate pads it
                    self._matchers[i] = None
                    continue
                raise BackendError(f"{row.source}: xgrammar refused token {token} that its "
                                   "own mask allowed")
        active = [i for i, m in enumerate(self._matchers)
                  if m is not None and not m.is_terminated()]
        for i in active:
            self._matchers[i].fill_next_token_bitmask(self._bitmask, i)
        if active:
            xgrammar.apply_token_bitmask_inplace(
                scores, self._bitmask.to(scores.device), vocab_size=self._vocab_size,
                indices=active)
        self._sync()
        dt = time.perf_counter_ns() - t0
        step = len(self._clock.steps_ns)  # the step whose token this call helps choose
        self.step_ns.extend([0] * (step + 1 - len(self.step_ns)))
        self.step_ns[step] += dt
        return scores

    def spent_ns(self, last_step: int) -> tuple[int, int]:
        """(first step's time, later steps' time up to `last_step`)."""
        first = self.step_ns[0] if self.step_ns else 0
        return first, sum(self.step_ns[1:last_step + 1])
