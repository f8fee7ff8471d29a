"""Tasks: what a benchmark asks the model, how the output is constrained and checked.

A task's prompt version is a hash of everything that shapes the output (system and
user prompt, the text-model template, schema, grammar text, generation parameters) and of
how it is read (the scorers and the text field, when set), so two results are only
compared when they asked the same question the same way and judged it alike.

The built-in tasks are data: one TOML file each in ``tasks/data/`` (read by
`files.load_task`, which a user's own task file goes through too), made on first use.

Tasks and their parameters are checked when they are built (`TaskError`), so nonsense
such as ``max_tokens=0`` (which llama.cpp takes as "until the context is full": 37 s a
request) or an empty prompt fails at once with one line naming the field, before any
model loads; a bad module-level task fails the collection of the module that builds it.
"""

from __future__ import annotations

import hashlib
import json
import math
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_vlmbench.errors import UsageMistake
from pytest_vlmbench.tasks.structured import ConstraintError, OutputChecker, schema_problem

DEFAULT_TEXT_TEMPLATE = "Picture: {description}\n\n{prompt}"


class TaskError(UsageMistake):
    """A task or generation parameter that makes no sense; the message names the task
    (or the `GenerationParams(...)` call) and the field. Known before any request."""

    def __init__(self, message: str, *, field_name: str | None = None, why: str = "") -> None:
        super().__init__(message)
        self.field_name = field_name  # the GenerationParams field at fault, if one is
        self.why = why


def _is_number(value: object) -> bool:
    """A finite int or float; bools are refused (``temperature=True`` is a slip)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _param_problem(params: GenerationParams) -> tuple[str, str] | None:
    """(field, why) for the first nonsensical parameter, or None when all make sense."""
    p = params
    if isinstance(p.max_tokens, bool) or not isinstance(p.max_tokens, int):
        return "max_tokens", f"must be a whole number, got {p.max_tokens!r}"
    if p.max_tokens < 1:
        return "max_tokens", (
            f"must be at least 1, got {p.max_tokens} (0 or less does not mean a short "
            f"answer: llama.cpp generates until the context is full)"
        )
    for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
        if not _is_number(getattr(p, name)):
            return name, f"must be a finite number, got {getattr(p, name)!r}"
    if isinstance(p.top_k, bool) or not isinstance(p.top_k, int):
        return "top_k", f"must be a whole number, got {p.top_k!r}"
    if p.temperature < 0:
        return "temperature", f"must be at least 0 (0: greedy), got {p.temperature}"
    if not 0 < p.top_p <= 1:
        return "top_p", f"must be in (0, 1] (1: off), got {p.top_p}"
    if p.top_k < 0:
        return "top_k", f"must be at least 0 (0: off), got {p.top_k}"
    if not 0 <= p.min_p <= 1:
        return "min_p", f"must be in [0, 1] (0: off), got {p.min_p}"
    if p.repeat_penalty <= 0:
        return "repeat_penalty", f"must be greater than 0 (1: off), got {p.repeat_penalty}"
    if isinstance(p.stop, (str, bytes)):
        return "stop", (
            f"must be a tuple of strings such as ({p.stop!r},), not the bare string "
            f"{p.stop!r}"
        )
    if not isinstance(p.stop, tuple) or not all(isinstance(s, str) and s for s in p.stop):
        return "stop", f"must be a tuple of non-empty strings, got {p.stop!r}"
    return None


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings. Greedy by default so reruns produce the same tokens.

    Checked when built: a nonsensical value raises `TaskError` naming the field.
    """

    max_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.stop, list):  # a list is what people write; keep it hashable
            object.__setattr__(self, "stop", tuple(self.stop))
        problem = _param_problem(self)
        if problem is not None:
            name, why = problem
            value = getattr(self, name)
            raise TaskError(f"GenerationParams({name}={value!r}): {name} {why}",
                            field_name=name, why=why)


_PARAM_NAMES = tuple(f.name for f in fields(GenerationParams))


def _template_problem(template: object) -> str | None:
    """Why a text-model template cannot be used, or None.

    Formatted here with both fields, so a stray brace or an unknown field fails now
    rather than at the first request of a text-only model.
    """
    if not isinstance(template, str):
        return f"must be a string, got {type(template).__name__}"
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        template.format(description="", prompt="")
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        return (f"cannot be formatted ({type(exc).__name__}: {exc}); use {{description}} "
                f"and {{prompt}}, and double other braces")
    if "description" not in names:
        return (f"must contain {{description}} (where the picture's description goes), got "
                f"{template!r}")
    return None


@dataclass(frozen=True)
class Task:
    """A prompt, an optional output constraint, and generation parameters.

    `schema` validates the output (and constrains generation unless `grammar_file` is
    given); `grammar_file` is a GBNF grammar that constrains generation. Text-only
    models receive the sample's description through `text_template` instead of pixels.
    `scorers` names the scorers that judge each output (checked against the scorer
    registry when the benchmark runs); `text_field` is the JSON field whose text the
    ``text`` scorer reads (None: the whole output).
    """

    name: str
    prompt: str
    system: str = ""
    schema: Mapping[str, Any] | None = None
    grammar_file: Path | None = None
    expects_json: bool = False
    params: GenerationParams = field(default_factory=GenerationParams)
    text_template: str = DEFAULT_TEXT_TEMPLATE
    scorers: tuple[str, ...] = ()
    text_field: str | None = None

    def __post_init__(self) -> None:
        # At construction, so a bad module-level task is a collection error of the module
        # that builds it (one line, exit 4), not a failure after the model has loaded.
        if isinstance(self.scorers, list):  # a list is what people write; keep it hashable
            object.__setattr__(self, "scorers", tuple(self.scorers))
        if not isinstance(self.name, str) or not self.name.strip():
            raise TaskError(f"Task(name={self.name!r}): name must be a non-empty string")
        problem = self._problem()
        if problem is not None:
            raise TaskError(f"task {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        """Why this task makes no sense, as "field: why", or None."""
        if not isinstance(self.prompt, str):
            return f"prompt must be a string, got {type(self.prompt).__name__}"
        if not self.prompt.strip():
            return "prompt is empty; the model needs a question to answer"
        if not isinstance(self.system, str):
            return f"system must be a string, got {type(self.system).__name__}"
        if not isinstance(self.params, GenerationParams):
            return (f"params must be a GenerationParams(...), got "
                    f"{type(self.params).__name__}")
        if self.schema is not None and not isinstance(self.schema, Mapping):
            return (f"schema must be a JSON schema as a dict, got "
                    f"{type(self.schema).__name__} {self.schema!r:.40}")
        if self.grammar_file is not None and not isinstance(self.grammar_file, (str, PathLike)):
            return (f"grammar_file must be a path to a GBNF file, got "
                    f"{type(self.grammar_file).__name__}")
        if self.grammar_file is not None and not Path(self.grammar_file).is_file():
            where = Path(self.grammar_file).resolve()
            return f"grammar_file {str(self.grammar_file)!r} not found (looked in {where})"
        if self.schema is not None:
            problem = schema_problem(self.schema)
            if problem is not None:
                return problem
        if not isinstance(self.expects_json, bool):
            return f"expects_json must be True or False, got {self.expects_json!r}"
        template = _template_problem(self.text_template)
        if template is not None:
            return f"text_template {template}"
        return self._scoring_problem()

    def _scoring_problem(self) -> str | None:
        """Why `scorers` or `text_field` cannot be used, or None (scorer names are
        checked against the registry when the benchmark runs, not here)."""
        if not isinstance(self.scorers, tuple) or not all(
            isinstance(s, str) and s.strip() for s in self.scorers
        ):
            return f"scorers must be a list of scorer names, got {self.scorers!r}"
        repeated = sorted({s for s in self.scorers if self.scorers.count(s) > 1})
        if repeated:
            return f"scorers: {repeated[0]!r} is named twice"
        if self.text_field is None:
            return None
        if not isinstance(self.text_field, str) or not self.text_field.strip():
            return (f"text_field must be the name of a JSON field (or unset: the whole "
                    f"output), got {self.text_field!r}")
        if not self.checks_output:
            return (f"text_field {self.text_field!r} names a JSON field, but the task does "
                    f"not parse JSON (set expects_json or a schema)")
        properties = self.schema.get("properties") if self.schema is not None else None
        if isinstance(properties, Mapping) and self.text_field not in properties:
            return (f"text_field {self.text_field!r} is not a property of the schema "
                    f"(its properties: {', '.join(map(str, properties)) or 'none'})")
        return None

    def with_params(self, **changes: Any) -> Task:
        """This task with some generation parameters changed, checked like a new one."""
        unknown = sorted(set(changes) - set(_PARAM_NAMES))
        if unknown:
            raise TaskError(
                f"task {self.name!r}: with_params({unknown[0]}=...): GenerationParams has "
                f"no field {unknown[0]!r}; its fields: {', '.join(_PARAM_NAMES)}"
            )
        try:
            params = replace(self.params, **changes)
        except TaskError as exc:
            name = exc.field_name or "?"
            raise TaskError(
                f"task {self.name!r}: with_params({name}={changes.get(name)!r}): {name} "
                f"{exc.why}", field_name=exc.field_name, why=exc.why,
            ) from None
        return replace(self, params=params)

    def grammar_text(self) -> str | None:
        """The GBNF grammar's text, or None; a missing or empty file is a ConstraintError."""
        if self.grammar_file is None:
            return None
        try:
            text = Path(self.grammar_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConstraintError(
                f"{self.grammar_file}: cannot read GBNF grammar: {exc.strerror}"
            ) from None
        if not text.strip():
            raise ConstraintError(f"{self.grammar_file}: GBNF grammar file is empty")
        return text

    @property
    def checks_output(self) -> bool:
        """Whether outputs are parsed as JSON (and so counted in parse_rate)."""
        return self.expects_json or self.schema is not None

    def checker(self) -> OutputChecker:
        return OutputChecker(
            expects_json=self.expects_json, schema=self.schema, source=f"task {self.name!r}"
        )

    def prompt_version(self, *, seed: int, input_mode: str) -> str:
        """sha256 (16 hex) of everything that shapes this task's output."""
        shape: dict[str, Any] = {
            "system": self.system,
            "prompt": self.prompt,
            "text_template": self.text_template if input_mode == "text" else None,
            "schema": self.schema,
            "grammar": self.grammar_text(),
            "expects_json": self.expects_json,
            "params": asdict(self.params),
            "seed": seed,
            "input_mode": input_mode,
        }
        # Only when set, so a task without scorers keeps the version it had before
        # tasks could name them.
        if self.scorers:
            shape["scorers"] = list(self.scorers)
        if self.text_field is not None:
            shape["text_field"] = self.text_field
        blob = json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def user_text(self, description: str | None) -> str:
        """The user turn for a text-only model (`description`) or a vision model (None)."""
        if description is None:
            return self.prompt
        return self.text_template.format(description=description, prompt=self.prompt)


if TYPE_CHECKING:
    CAPTION_BRIEF: Task
    PHOTO_SCORE: Task
    PHOTO_SCORE_SCHEMA: dict[str, Any]
    BUILTIN_TASKS: dict[str, Task]

DATA_DIR = Path(__file__).resolve().parent / "data"
"""The built-in task files (package data), one ``<name>.toml`` each."""

_BUILTIN: dict[str, Task] = {}


def builtin_tasks() -> dict[str, Task]:
    """The built-in tasks by name, read from `DATA_DIR` on first use (a copy: the tasks
    are frozen, the dict is the caller's).

    Lazily, because a task with a schema checks it with jsonschema when made, and
    importing the plugin (which imports this module) must not import jsonschema (80 ms
    on every pytest start).
    """
    if not _BUILTIN:
        from pytest_vlmbench.tasks.files import load_task

        loaded = {}
        for path in sorted(DATA_DIR.glob("*.toml")):
            task = load_task(path)
            if task.name != path.stem:  # a shipped file is found by its name
                raise TaskError(f"task file {path}: name: {task.name!r} is not the "
                                f"file's name {path.stem!r}")
            loaded[task.name] = task
        _BUILTIN.update(loaded)
    return dict(_BUILTIN)


def __getattr__(name: str) -> Any:
    """CAPTION_BRIEF, PHOTO_SCORE, PHOTO_SCORE_SCHEMA and BUILTIN_TASKS, made on first
    use from the task files (see `builtin_tasks`)."""
    value: Any
    if name == "CAPTION_BRIEF":
        value = builtin_tasks()["caption_brief"]
    elif name == "PHOTO_SCORE":
        value = builtin_tasks()["photo_score"]
    elif name == "PHOTO_SCORE_SCHEMA":
        schema = builtin_tasks()["photo_score"].schema
        value = json.loads(json.dumps(schema))  # a plain dict, the caller's to change
    elif name == "BUILTIN_TASKS":
        value = builtin_tasks()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return value
