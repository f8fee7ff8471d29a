"""The scorer interface: what a scorer is given, what it declares, what it returns.

Kept apart from the registry (``scoring/__init__.py``) so that the built-in scorer
modules can import these types without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pytest_vlmbench.errors import UsageMistake

ScoreKind = Literal["accuracy", "error", "length", "value"]
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


class ScorerError(UsageMistake):
    """An unknown scorer name, or two scorers of one task that give the same score.

    Known before any request (a task names its scorers), so a `UsageMistake`: one line
    and exit status 4, not a benchmark spent on scores that cannot be told apart.
    """


@dataclass(frozen=True)
class ScoreSpec:
    """One score a scorer writes per record, as the results and the metrics show it.

    ``kind``: accuracy in [0, 1] (0 for a wrong or unreadable answer, mean); error >= 0
    (mean); length (mean); value, a number the model gave (a 1-10 rating: histogram,
    mean, top share, and ranked between models).
    """

    name: str
    unit: str
    higher_is_better: bool
    kind: ScoreKind
    description: str

    def __post_init__(self) -> None:
        # A score name becomes a metric and an SLO name (min_<name>): keep it plain.
        if not _NAME.match(self.name):
            raise ValueError(f"score name {self.name!r}: use lower-case letters, digits, _")


@dataclass(frozen=True)
class ScoreInput:
    """One successful request, as a scorer sees it."""

    sample_id: str
    output: str
    parsed: Any  # the JSON value when the task checks JSON and it parsed, else None
    truth: Mapping[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass(frozen=True)
class ScoreResult:
    """A scorer's scores for one record (None: does not apply to this sample), the
    chance level of those that have one, and what it read from the output."""

    scores: dict[str, float | None]
    chance: dict[str, float] = field(default_factory=dict)
    read_as: Any = None


@runtime_checkable
class Scorer(Protocol):
    """Scores one record. Must not raise on any model output: an output it cannot
    read is a wrong answer (0) for accuracies, never an exception."""

    name: str
    specs: tuple[ScoreSpec, ...]

    def score(self, item: ScoreInput) -> ScoreResult: ...


@runtime_checkable
class TextFieldScorer(Protocol):
    """Optional for a scorer: one that reads a task's text field (``text_field``, e.g.
    "caption" of a JSON answer) returns a copy configured for it."""

    def with_text_field(self, text_field: str | None) -> Scorer: ...


class GuardedScorer:
    """Base of the built-in scorers: `score` never raises on model output.

    A reading rule that trips on some output (a bug of ours) must not cost a benchmark:
    the output is then scored as an unreadable answer (an empty one), and if even that
    fails, every score is None with the error in ``read_as``.
    """

    name: str = ""
    specs: tuple[ScoreSpec, ...] = ()

    def score(self, item: ScoreInput) -> ScoreResult:
        try:
            return self.read(item)
        except Exception as exc:
            try:
                empty = ScoreInput(item.sample_id, "", None, item.truth, item.finish_reason)
                result = self.read(empty)
            except Exception:
                return not_applicable(self.specs, {"error": f"{type(exc).__name__}: {exc}"})
            return ScoreResult(result.scores, result.chance,
                               {"error": f"{type(exc).__name__}: {exc}"})

    def read(self, item: ScoreInput) -> ScoreResult:
        raise NotImplementedError


def not_applicable(specs: tuple[ScoreSpec, ...], read_as: Any = None) -> ScoreResult:
    """Every score None and no chance: the sample lacks what the scorer needs."""
    return ScoreResult({spec.name: None for spec in specs}, {}, read_as)
