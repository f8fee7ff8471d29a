"""Tasks: what a benchmark asks the model, how the output is constrained and checked.

A task's prompt version is a hash of everything that shapes the output (system and
user prompt, the text-model template, schema, grammar text, generation parameters), so
two results are only compared when they asked the same question the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_vlmbench.structured import ConstraintError, OutputChecker

DEFAULT_TEXT_TEMPLATE = "Picture: {description}\n\n{prompt}"


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings. Greedy by default so reruns produce the same tokens."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """A prompt, an optional output constraint, and generation parameters.

    `schema` validates the output (and constrains generation unless `grammar_file` is
    given); `grammar_file` is a GBNF grammar that constrains generation. Text-only
    models receive the sample's description through `text_template` instead of pixels.
    """

    name: str
    prompt: str
    system: str = ""
    schema: Mapping[str, Any] | None = None
    grammar_file: Path | None = None
    expects_json: bool = False
    params: GenerationParams = field(default_factory=GenerationParams)
    text_template: str = DEFAULT_TEXT_TEMPLATE

    def with_params(self, **changes: Any) -> Task:
        return replace(self, params=replace(self.params, **changes))

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
        shape = {
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
        blob = json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def user_text(self, description: str | None) -> str:
        """The user turn for a text-only model (`description`) or a vision model (None)."""
        if description is None:
            return self.prompt
        return self.text_template.format(description=description, prompt=self.prompt)


PHOTO_SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "caption": {"type": "string", "minLength": 1, "maxLength": 48},
        "tags": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 12},
            "maxItems": 8,
        },
    },
    "required": ["score", "caption", "tags"],
    "additionalProperties": False,
}

CAPTION_BRIEF = Task(
    name="caption_brief",
    system="You write brief, factual image captions.",
    prompt="Describe this image in one short sentence.",
    params=GenerationParams(max_tokens=48),
)

PHOTO_SCORE = Task(
    name="photo_score",
    system="You rate photographs for a photo-ranking app. Answer with JSON only.",
    prompt=(
        "Rate this photo from 1 (poor) to 10 (excellent). Reply as JSON with keys "
        '"score" (integer 1-10), "caption" (short) and "tags" (at most 8 short words).'
    ),
    schema=PHOTO_SCORE_SCHEMA,
    expects_json=True,
    # Every token is at least one character and a valid answer is under 256 characters
    # (ASCII, see fixtures/grammars/photo_score.gbnf), so a grammar answer is never cut.
    params=GenerationParams(max_tokens=256),
)

BUILTIN_TASKS: dict[str, Task] = {t.name: t for t in (CAPTION_BRIEF, PHOTO_SCORE)}
