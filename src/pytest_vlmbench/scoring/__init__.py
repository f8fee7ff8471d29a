"""Scorers: quality measured per record, declared by tasks, registered like backends.

A task names its scorers (``scorers = ["counts", "text"]``); each scores every
successful request into ``record["scores"]`` (None: does not apply to this sample),
with the chance level of each score for that sample in ``record["chance"]`` and what it
read from the output in ``record["read_as"]``.

Built-ins: counts, attributes, spatial, scene, mentions (against the synthetic scenes'
truth), text, photo_scores, variants. Third parties add scorers through the
``pytest_vlmbench.scorers`` entry-point group; an entry point names a `Scorer` instance
or a zero-argument factory (a class included)::

    [project.entry-points."pytest_vlmbench.scorers"]
    ocr = "my_pkg.scoring:OcrScorer"

Example::

    scorers = resolve_scorers(["counts", "text"])
    result = score_record(scorers, sample_id="scene-0000", output="two circles",
                          parsed=None, truth=sample.truth, finish_reason="stop")
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_vlmbench.scoring.base import (
    GuardedScorer,
    ScoreInput,
    ScoreKind,
    Scorer,
    ScorerError,
    ScoreResult,
    ScoreSpec,
    TextFieldScorer,
    not_applicable,
)

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "ENTRY_POINT_GROUP",
    "GuardedScorer",
    "ScoreInput",
    "ScoreKind",
    "ScoreResult",
    "ScoreSpec",
    "Scorer",
    "ScorerError",
    "TextFieldScorer",
    "available_scorers",
    "builtin_scorers",
    "get_scorer",
    "register_scorer",
    "resolve_scorers",
    "score_record",
    "specs_of",
    "unregister_scorer",
]

ENTRY_POINT_GROUP = "pytest_vlmbench.scorers"

_REGISTRY: dict[str, Scorer] = {}


@functools.cache
def _builtins() -> dict[str, Scorer]:
    # Imported on first use: the reading rules are not needed to load the plugin.
    from pytest_vlmbench.scoring.spatial import SpatialScorer
    from pytest_vlmbench.scoring.text import TextScorer
    from pytest_vlmbench.scoring.truth import (
        AttributesScorer,
        CountsScorer,
        MentionsScorer,
        SceneScorer,
    )
    from pytest_vlmbench.scoring.values import PhotoScoresScorer, VariantsScorer

    made: list[Scorer] = [CountsScorer(), AttributesScorer(), SpatialScorer(), SceneScorer(),
                          MentionsScorer(), TextScorer(), PhotoScoresScorer(), VariantsScorer()]
    return {scorer.name: scorer for scorer in made}


def builtin_scorers() -> list[Scorer]:
    """The scorers that ship with the package, in a stable order."""
    return list(_builtins().values())


def register_scorer(scorer: Scorer, *, replace: bool = False) -> None:
    """Make ``scorer`` available by its name; refuse to shadow a name silently."""
    existing = _REGISTRY.get(scorer.name) or _builtins().get(scorer.name)
    if existing is not None and existing is not scorer and not replace:
        raise ValueError(f"scorer {scorer.name!r} is already registered ({existing!r}); "
                         f"pass replace=True")
    _REGISTRY[scorer.name] = scorer


def unregister_scorer(name: str) -> None:
    """Forget a registered scorer (built-ins stay)."""
    _REGISTRY.pop(name, None)


def _entry_points() -> dict[str, EntryPoint]:
    # Imported here: importlib.metadata costs ~50 ms and is needed only on lookup.
    # Registered names win over entry points, so a plugin cannot hijack a built-in.
    from pytest_vlmbench.extensions import advertised

    return advertised(ENTRY_POINT_GROUP)


def available_scorers() -> list[str]:
    """Names that `get_scorer` accepts, sorted."""
    return sorted(set(_builtins()) | set(_REGISTRY) | set(_entry_points()))


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name``: registered, built in, or from an entry point (which
    cannot replace a built-in: a plugin must not change what "counts" means)."""
    scorer = _REGISTRY.get(name) or _builtins().get(name)
    if scorer is not None:
        return scorer
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise ScorerError(f"unknown scorer {name!r}; known scorers: "
                          f"{', '.join(available_scorers())}")
    try:
        loaded = entry_point.load()
        is_factory = isinstance(loaded, type) or (callable(loaded)
                                                  and not isinstance(loaded, Scorer))
        made = loaded() if is_factory else loaded
    except Exception as exc:
        raise ScorerError(f"scorer {name!r}: cannot load entry point {entry_point.value!r} "
                          f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(made, Scorer):
        raise ScorerError(f"scorer {name!r}: entry point {entry_point.value!r} gave "
                          f"{type(made).__name__}, not a Scorer (name, specs, score)")
    return made


def resolve_scorers(names: Sequence[str], *, text_field: str | None = None) -> list[Scorer]:
    """The scorers a task names, in order; a scorer that reads a text field
    (`TextFieldScorer`) gets ``text_field``. Two scorers giving the same score name, or
    one named twice, is a `ScorerError`: their scores could not be told apart."""
    scorers: list[Scorer] = []
    owners: dict[str, str] = {}
    for name in names:
        scorer = get_scorer(name)
        if isinstance(scorer, TextFieldScorer):
            scorer = scorer.with_text_field(text_field)
        for spec in scorer.specs:
            if spec.name in owners:
                raise ScorerError(f"scorers {owners[spec.name]!r} and {name!r} both give "
                                  f"the score {spec.name!r}; name only one of them")
            owners[spec.name] = name
        scorers.append(scorer)
    return scorers


def specs_of(scorers: Sequence[Scorer]) -> list[ScoreSpec]:
    """Every score the scorers give, in order."""
    return [spec for scorer in scorers for spec in scorer.specs]


def score_record(scorers: Sequence[Scorer], *, sample_id: str, output: str, parsed: Any,
                 truth: Mapping[str, Any] | None, finish_reason: str | None) -> ScoreResult:
    """One successful request scored by every scorer, merged into one result.

    Only declared scores are kept (a missing one, or one not a finite number, is None:
    the results are JSON), as floats; ``read_as`` is
    ``{scorer name: what it read}``. A scorer that raises (a third party's bug) gives
    None for its scores and its error in ``read_as``: it must not cost the benchmark
    (the summary counts such records as ``errors``, not as not applicable).
    """
    item = ScoreInput(sample_id, output, parsed, truth or {}, finish_reason)
    scores: dict[str, float | None] = {}
    chance: dict[str, float] = {}
    read_as: dict[str, Any] = {}
    for scorer in scorers:
        try:
            result = scorer.score(item)
        except Exception as exc:
            result = not_applicable(scorer.specs, {"error": f"{type(exc).__name__}: {exc}"})
        for spec in scorer.specs:
            value = _finite(result.scores.get(spec.name))
            scores[spec.name] = value
            odds = _finite(result.chance.get(spec.name))
            if value is not None and odds is not None:
                chance[spec.name] = odds
        if result.read_as is not None:
            read_as[scorer.name] = result.read_as
    return ScoreResult(scores, chance, read_as or None)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
