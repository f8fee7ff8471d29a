"""Scorers against the synthetic scenes' ground truth: counts, attributes, scene, mentions.

JSON answers they read (when the task checks JSON and it parsed; free text otherwise, by
the rules of `scoring.freetext`):

- ``counts``: ``{"counts": {"circle": int, "square": int, "triangle": int}, "total": int}``
  (shape keys read like shape words: "circles" is circle; extra keys ignored; a missing
  kind or total, or a value that is not a whole number >= 0, is a wrong answer for it);
- ``attributes``: ``{"objects": [{"shape": str, "colour": str}]}`` ("color" accepted);
- ``scene``: ``{"background": str, "gradient": bool, "total": int}`` (the total as
  ``scene_total_accuracy``, apart from the ``counts`` scorer's ``total_accuracy``, so
  that a task may name both); free text: the background and gradient rules of
  `scoring.freetext` ("plain", "solid"... say no gradient) and its total (a "total of
  N", "N in total", "N shapes", else the sum of the kinds' counts when all are read);
- ``mentions`` reads the whole output as text (free captions); the colours a scene
  holds are its shapes', its background's and its distractor stripes' (a caption that
  names a stripe's colour is right about the image).

A JSON answer of another shape is an unreadable answer: 0 on every accuracy, and for
``count_abs_error`` the worst error the answer space allows. Chance levels: see
`scoring.chance` (counts uniform over 0..the most shapes a scene of the sample's
difficulty can hold: 0..5 per kind and for the total at easy, 0..7 medium, 0..9 hard;
not the wider range a task's JSON schema allows, 0..9 per kind and 0..30 in all).
Truth of version 1 (no ``counts`` / ``colours`` / ``total``) is read by deriving them
from ``shapes``; a truth without what a score needs (a photo with no truth) makes that
score None, not 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vlmbench.datasets.synthetic import COLOURS, SHAPES
from pytest_vlmbench.scoring import chance
from pytest_vlmbench.scoring.base import (
    GuardedScorer,
    ScoreInput,
    ScoreResult,
    ScoreSpec,
    not_applicable,
)
from pytest_vlmbench.scoring.freetext import (
    as_count,
    normalise_colour,
    normalise_shape,
    read_text,
)


def truth_shapes(truth: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The scene's shapes (dicts with shape, colour, position), or None without them."""
    shapes = truth.get("shapes")
    if not isinstance(shapes, list) or not all(isinstance(s, Mapping) for s in shapes):
        return None
    return shapes


def truth_counts(truth: Mapping[str, Any]) -> dict[str, int] | None:
    """``counts`` (version 2), else counted from ``shapes`` (version 1)."""
    counts = truth.get("counts")
    if isinstance(counts, Mapping):
        return {kind: int(counts.get(kind, 0)) for kind in SHAPES}
    shapes = truth_shapes(truth)
    if shapes is None:
        return None
    return {kind: sum(s.get("shape") == kind for s in shapes) for kind in SHAPES}


def overlap_share(said: Sequence[str | None], true: Sequence[str]) -> float:
    """Multiset overlap / max(len said, len true): naming everything scores low."""
    if not said and not true:
        return 1.0
    common = Counter(s for s in said if s is not None) & Counter(true)
    return sum(common.values()) / max(len(said), len(true))


def json_objects(parsed: Any) -> list[dict[str, Any]] | None:
    """``{"objects": [...]}`` read into shape/colour/position per entry; None if not
    that shape. An entry that is not an object still counts as one object said."""
    from pytest_vlmbench.scoring.freetext import normalise_position

    if not isinstance(parsed, Mapping) or not isinstance(parsed.get("objects"), list):
        return None
    found: list[dict[str, Any]] = []
    for entry in parsed["objects"]:
        if not isinstance(entry, Mapping):
            found.append({"shape": None, "colour": None, "position": None})
            continue
        colour = entry.get("colour", entry.get("color"))
        found.append({"shape": normalise_shape(entry.get("shape")),
                      "colour": normalise_colour(colour),
                      "position": normalise_position(entry.get("position"))})
    return found


def said_objects(item: ScoreInput) -> list[dict[str, Any]] | None:
    """The objects an answer lists (JSON or free text); None when unreadable."""
    if item.parsed is not None:
        return json_objects(item.parsed)
    return read_text(item.output).objects() or None


class CountsScorer(GuardedScorer):
    """How many of each shape kind, and in all."""

    name = "counts"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("count_accuracy", "", True, "accuracy",
                  "Share of the 3 shape kinds whose count the answer gets exactly right "
                  "(chance: each count uniform over 0..(most shapes a scene of this "
                  "difficulty can hold: 5 easy, 7 medium, 9 hard), not the schema's "
                  "range)."),
        ScoreSpec("count_abs_error", "count", False, "error",
                  "Mean over the 3 shape kinds of |count said - true count| (an "
                  "unreadable count: the worst error on 0..(most shapes a scene of this "
                  "difficulty can hold); chance: counts uniform over that range)."),
        ScoreSpec("total_accuracy", "", True, "accuracy",
                  "1 when the total number of shapes said is right (chance: uniform over "
                  "0..(most shapes a scene of this difficulty can hold: 5 easy, 7 medium, "
                  "9 hard), not the schema's range)."),
    )

    def read(self, item: ScoreInput) -> ScoreResult:
        true = truth_counts(item.truth)
        if true is None:
            return not_applicable(self.specs)
        true_total = item.truth.get("total")
        if not isinstance(true_total, int):
            true_total = sum(true.values())
        said, said_total = self._said(item)
        space = chance.count_answers(item.truth.get("difficulty"))
        right = [said[k] == true[k] for k in SHAPES]
        errors = [chance.worst_abs_error(true[k], space) if (n := said[k]) is None
                  else abs(n - true[k]) for k in SHAPES]
        return ScoreResult(
            {"count_accuracy": sum(right) / len(SHAPES),
             "count_abs_error": sum(errors) / len(SHAPES),
             "total_accuracy": float(said_total == true_total)},
            {"count_accuracy": sum(chance.count_exact(true[k], space) for k in SHAPES)
             / len(SHAPES),
             "count_abs_error": sum(chance.count_abs_error(true[k], space) for k in SHAPES)
             / len(SHAPES),
             "total_accuracy": chance.count_exact(true_total, space)},
            {"counts": said, "total": said_total},
        )

    @staticmethod
    def _said(item: ScoreInput) -> tuple[dict[str, int | None], int | None]:
        unread: dict[str, int | None] = dict.fromkeys(SHAPES)
        if item.parsed is not None:
            parsed = item.parsed
            if not isinstance(parsed, Mapping) or not isinstance(parsed.get("counts"), Mapping):
                return unread, None
            for key, value in parsed["counts"].items():
                kind = normalise_shape(key) if isinstance(key, str) else None
                if kind is not None and unread[kind] is None:
                    unread[kind] = as_count(value)
            return unread, as_count(parsed.get("total"))
        reading = read_text(item.output)
        counts = reading.counts()
        if counts is None:
            return unread, reading.total
        total = reading.total
        if total is None and all(v is not None for v in counts.values()):
            total = sum(v for v in counts.values() if v is not None)
        return counts, total


class AttributesScorer(GuardedScorer):
    """Which colours and shapes the scene holds, as multisets."""

    name = "attributes"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("colour_accuracy", "", True, "accuracy",
                  "Overlap of the shape colours said and true (as multisets) / the larger "
                  "of the two numbers of objects: listing every colour scores low (chance: "
                  "as many objects, colours uniform over the palette minus background)."),
        ScoreSpec("shape_accuracy", "", True, "accuracy",
                  "Overlap of the shape kinds said and true (as multisets) / the larger of "
                  "the two numbers of objects (chance: as many objects, kinds uniform)."),
    )

    def read(self, item: ScoreInput) -> ScoreResult:
        shapes = truth_shapes(item.truth)
        if not shapes:
            return not_applicable(self.specs)
        true_colours = [str(s.get("colour")) for s in shapes]
        true_kinds = [str(s.get("shape")) for s in shapes]
        said = said_objects(item) or []
        palette = [c for c in COLOURS if c != item.truth.get("background")]
        return ScoreResult(
            {"colour_accuracy": overlap_share([o["colour"] for o in said], true_colours),
             "shape_accuracy": overlap_share([o["shape"] for o in said], true_kinds)},
            {"colour_accuracy": chance.multiset_overlap(true_colours, palette),
             "shape_accuracy": chance.multiset_overlap(true_kinds, SHAPES)},
            {"objects": said},
        )


class SceneScorer(GuardedScorer):
    """The background's colour, whether it is a gradient, and how many shapes in all."""

    name = "scene"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("background_accuracy", "", True, "accuracy",
                  "1 when the background colour said is the scene's (chance: uniform over "
                  "the palette)."),
        ScoreSpec("gradient_accuracy", "", True, "accuracy",
                  "1 when the answer says rightly whether the background is a gradient "
                  "(chance: 1/2)."),
        ScoreSpec("scene_total_accuracy", "", True, "accuracy",
                  "1 when the total number of shapes said is right (chance: uniform over "
                  "0..(most shapes a scene of this difficulty can hold: 5 easy, 7 medium, "
                  "9 hard), not the schema's range)."),
    )

    def read(self, item: ScoreInput) -> ScoreResult:
        background, gradient, total = self._said(item)
        scores: dict[str, float | None] = {"background_accuracy": None, "gradient_accuracy": None,
                                           "scene_total_accuracy": None}
        odds: dict[str, float] = {}
        if isinstance(item.truth.get("background"), str):
            scores["background_accuracy"] = float(background == item.truth["background"])
            odds["background_accuracy"] = 1 / len(COLOURS)
        if isinstance(item.truth.get("gradient"), bool):
            scores["gradient_accuracy"] = float(gradient is item.truth["gradient"])
            odds["gradient_accuracy"] = 0.5
        true_total = item.truth.get("total")
        if not isinstance(true_total, int) or isinstance(true_total, bool):
            counts = truth_counts(item.truth)
            true_total = sum(counts.values()) if counts is not None else None
        if true_total is not None:
            scores["scene_total_accuracy"] = float(total == true_total)
            odds["scene_total_accuracy"] = chance.count_exact(
                true_total, chance.count_answers(item.truth.get("difficulty")))
        return ScoreResult(scores, odds,
                           {"background": background, "gradient": gradient, "total": total})

    @staticmethod
    def _said(item: ScoreInput) -> tuple[str | None, bool | None, int | None]:
        if item.parsed is not None:
            if not isinstance(item.parsed, Mapping):
                return None, None, None
            gradient = item.parsed.get("gradient")
            return (normalise_colour(item.parsed.get("background")),
                    gradient if isinstance(gradient, bool) else None,
                    as_count(item.parsed.get("total")))
        reading = read_text(item.output)
        total = reading.total
        counts = reading.counts()
        if total is None and counts is not None and all(v is not None for v in counts.values()):
            total = sum(v for v in counts.values() if v is not None)
        return reading.background, reading.gradient, total


class MentionsScorer(GuardedScorer):
    """What a free caption names: right colours, and the shape kinds present.

    Shape kinds are scored both ways, so that naming every kind ("Circles, squares and
    triangles.") cannot pass: ``shape_recall`` (kinds present that are named / kinds
    present) and ``shape_precision`` (kinds named that are present / kinds named; None
    when none named). A kind said to be absent ("no triangles") is not named. Chance: the
    caption names a uniformly random non-empty subset of the 3 kinds (one of 7). A
    given kind is in 4 of the 7, so recall's chance is 4/7 whatever the scene; precision
    is the sum over present kinds c of E[1(c named) / kinds named] = (1 + 2 x 1/2 + 1/3)
    / 7 = 1/3 each, so p/3 for a scene with p kinds present.
    """

    name = "mentions"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("colour_precision", "", True, "accuracy",
                  "Distinct colours the caption names that the scene holds (shapes, "
                  "background or distractor stripes) / distinct colours named; none named: "
                  "not applicable (chance: the share of the palette the scene holds)."),
        ScoreSpec("shape_recall", "", True, "accuracy",
                  "Share of the shape kinds present that the caption names (chance: 4/7, "
                  "a uniformly random non-empty subset of the 3 kinds)."),
        ScoreSpec("shape_precision", "", True, "accuracy",
                  "Shape kinds the caption names that the scene holds / kinds named; none "
                  "named: not applicable (chance: (kinds present)/3, a uniformly random "
                  "non-empty subset of the 3 kinds)."),
    )

    def read(self, item: ScoreInput) -> ScoreResult:
        shapes = truth_shapes(item.truth)
        if not shapes:
            return not_applicable(self.specs)
        scene = {str(s.get("colour")) for s in shapes}
        if isinstance(item.truth.get("background"), str):
            scene.add(item.truth["background"])
        # A stripe's colour is in the image too: naming it is not a hallucination.
        distractors = item.truth.get("distractors")
        if isinstance(distractors, list):
            scene |= {str(d.get("colour")) for d in distractors if isinstance(d, Mapping)}
        reading = read_text(item.output)
        named = sorted(set(reading.colours))
        kinds = sorted({p.kind for p in reading.phrases
                        if p.kind is not None and p.quantity != 0})
        present = {str(s.get("shape")) for s in shapes}
        scores: dict[str, float | None] = {
            "colour_precision": (len(scene & set(named)) / len(named)) if named else None,
            "shape_recall": len(present & set(kinds)) / len(present),
            "shape_precision": (len(present & set(kinds)) / len(kinds)) if kinds else None,
        }
        odds = {"shape_recall": chance.SHAPE_RECALL}
        if kinds:
            odds["shape_precision"] = chance.shape_precision(len(present & set(SHAPES)))
        if named:
            odds["colour_precision"] = len(scene & set(COLOURS)) / len(COLOURS)
        return ScoreResult(scores, odds, {"colours": named, "shapes": kinds})
