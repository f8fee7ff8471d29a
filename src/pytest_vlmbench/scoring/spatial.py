"""The ``spatial`` scorer: where each shape is, and where shapes are from each other.

JSON answer: ``{"objects": [{"shape": str, "colour": str, "position": str}]}``, the
position in words ("top-left", "top left", "upper left", "centre", "center", "middle"...,
read by `scoring.freetext.normalise_position`); free text otherwise.

Said objects are matched to true shapes one to one, blind to position (so that listing a
shape in every cell earns nothing): each true shape, in reading order, takes the first
unmatched said object (in the order said) of the same shape and colour, else the first
of the same shape. Where an object is said plays no part in choosing which said objects
are matched. Only then, among true shapes that cannot be told apart (same shape and
colour), the said objects matched to them are dealt out by position: each goes to the
one of them whose cell it names, if any, the rest in the order said. This only permutes
a set already chosen blind, so it cannot be gamed, and a right answer listed in any
order scores full marks.

- ``position_accuracy``: matched shapes said at their own cell / max(objects said,
  shapes true).
- ``spatial_accuracy``: (true pairs of shapes whose relation - left / right / same
  column, and above / below / same row - the matched said positions get right / true
  pairs) x len(true) / max(objects said, shapes true); None below 2 shapes. The factor,
  as in ``position_accuracy``, makes extra objects cost: a red circle in each of the 9
  cells against two true circles scores at most 2/9.

Chance: an answer with as many objects as the scene has shapes (the factor is then 1),
each true shape placed uniformly at random in distinct cells (1/9 per shape; pairs by
enumeration, `chance.spatial_pairs`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vlmbench.datasets.synthetic import POSITIONS
from pytest_vlmbench.scoring import chance
from pytest_vlmbench.scoring.base import (
    GuardedScorer,
    ScoreInput,
    ScoreResult,
    ScoreSpec,
    not_applicable,
)
from pytest_vlmbench.scoring.truth import said_objects, truth_shapes


def match(true: Sequence[Mapping[str, Any]], said: Sequence[Mapping[str, Any]]
          ) -> list[int | None]:
    """For each true shape, the index of the said object matched to it (or None)."""
    free = list(range(len(said)))
    result: list[int | None] = []
    for shape in true:
        chosen = None
        for same_colour in (True, False):
            chosen = next((i for i in free if said[i].get("shape") == shape.get("shape")
                           and (not same_colour or said[i].get("colour") == shape.get("colour"))),
                          None)
            if chosen is not None:
                free.remove(chosen)
                break
        result.append(chosen)
    # Deal the said objects matched to indistinguishable true shapes out by cell.
    groups: dict[tuple[Any, Any], list[int]] = {}
    for index, shape in enumerate(true):
        groups.setdefault((shape.get("shape"), shape.get("colour")), []).append(index)
    for members in groups.values():
        pool = sorted(i for m in members if (i := result[m]) is not None)
        if len(members) < 2 or not pool:
            continue
        dealt: dict[int, int | None] = dict.fromkeys(members)
        for m in members:
            at_cell = next((i for i in pool if said[i].get("position") == true[m].get("position")),
                           None)
            if at_cell is not None:
                dealt[m] = at_cell
                pool.remove(at_cell)
        for m in members:
            if dealt[m] is None and pool:
                dealt[m] = pool.pop(0)
        for m in members:
            result[m] = dealt[m]
    return result


class SpatialScorer(GuardedScorer):
    """Positions on the 3x3 grid and the relations between shapes."""

    name = "spatial"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("position_accuracy", "", True, "accuracy",
                  "Shapes said to be in their own cell of the 3x3 grid / the larger of "
                  "objects said and shapes true (chance: 1/9)."),
        ScoreSpec("spatial_accuracy", "", True, "accuracy",
                  "Share of the pairs of shapes whose left/right and above/below relation "
                  "the answer gets right, times shapes true / the larger of objects said "
                  "and shapes true (extra objects cost); under 2 shapes not applicable "
                  "(chance: as many objects as shapes, in random distinct cells)."),
    )

    def read(self, item: ScoreInput) -> ScoreResult:
        shapes = truth_shapes(item.truth)
        if not shapes or any(s.get("position") not in POSITIONS for s in shapes):
            return not_applicable(self.specs)
        true_positions = [str(s["position"]) for s in shapes]
        said = said_objects(item) or []
        matched = match(shapes, said)
        where = [said[i].get("position") if i is not None else None for i in matched]
        at_cell = sum(w == t for w, t in zip(where, true_positions, strict=True))
        scores: dict[str, float | None] = {
            "position_accuracy": at_cell / max(len(said), len(shapes)),
            "spatial_accuracy": None,
        }
        odds = {"position_accuracy": 1 / len(POSITIONS)}
        if len(shapes) >= 2:
            pairs = list(itertools.combinations(range(len(shapes)), 2))
            right = 0
            for a, b in pairs:
                wa, wb = where[a], where[b]
                if wa in POSITIONS and wb in POSITIONS and chance.relation(wa, wb) == \
                        chance.relation(true_positions[a], true_positions[b]):
                    right += 1
            # Extra objects cost, as in position_accuracy: 1 when as many as the truth.
            scale = len(shapes) / max(len(said), len(shapes))
            scores["spatial_accuracy"] = right / len(pairs) * scale
            odds["spatial_accuracy"] = chance.spatial_pairs(true_positions)
        return ScoreResult(scores, odds, {"objects": said, "matched": matched})
