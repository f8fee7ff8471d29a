"""The ground-truth scorers on hand-checked scenes and hand-written answers, adversarial
ones included, with their chance levels computed by hand."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.scoring import ScoreInput, ScoreResult
from pytest_vlmbench.scoring.spatial import SpatialScorer
from pytest_vlmbench.scoring.truth import (
    AttributesScorer,
    CountsScorer,
    MentionsScorer,
    SceneScorer,
)


def _shape(shape: str, colour: str, position: str) -> dict[str, Any]:
    return {"shape": shape, "colour": colour, "position": position, "bbox": [0, 0, 1, 1],
            "small": False}


# A hand-made version-2 truth: blue background, two red circles, a green square.
SCENE: dict[str, Any] = {
    "background": "blue", "gradient": False, "size": [448, 448], "difficulty": "easy",
    "shapes": [_shape("circle", "red", "top-left"), _shape("square", "green", "centre"),
               _shape("circle", "red", "bottom-right")],
    "counts": {"circle": 2, "square": 1, "triangle": 0}, "total": 3,
    "colours": ["green", "red"], "distractors": [],
}
# Two red circles only, at the top-left and bottom-right cells.
TWO_CIRCLES: dict[str, Any] = dict(
    SCENE, shapes=[_shape("circle", "red", "top-left"), _shape("circle", "red", "bottom-right")],
    counts={"circle": 2, "square": 0, "triangle": 0}, total=2, colours=["red"])
# The same scene as version 1 wrote it: no counts, total, colours.
SCENE_V1 = {k: SCENE[k] for k in ("background", "gradient", "size", "shapes")}


def _score(scorer: Any, output: str = "", parsed: Any = None,
           truth: dict[str, Any] | None = None) -> ScoreResult:
    result: ScoreResult = scorer.score(
        ScoreInput("scene-0000", output, parsed, SCENE if truth is None else truth, "stop"))
    return result


# --- counts ---------------------------------------------------------------------------

def test_counts_right_in_json() -> None:
    result = _score(CountsScorer(), parsed={"counts": {"circle": 2, "square": 1,
                                                       "triangle": 0}, "total": 3})
    assert result.scores == {"count_accuracy": 1.0, "count_abs_error": 0.0,
                             "total_accuracy": 1.0}
    # Chance, U uniform on 0..5: P(U = c) = 1/6 for each kind; E|U - c| is
    # c=2: (2+1+0+1+2+3)/6 = 9/6, c=1: (1+0+1+2+3+4)/6 = 11/6, c=0: 15/6; mean 35/18.
    assert result.chance["count_accuracy"] == pytest.approx(1 / 6)
    assert result.chance["count_abs_error"] == pytest.approx(35 / 18)
    assert result.chance["total_accuracy"] == pytest.approx(1 / 6)


def test_count_written_as_a_word() -> None:
    result = _score(CountsScorer(), "I see two circles and one square.")
    assert result.scores == {"count_accuracy": 1.0, "count_abs_error": 0.0,
                             "total_accuracy": 1.0}
    assert result.read_as == {"counts": {"circle": 2, "square": 1, "triangle": 0}, "total": 3}


def test_no_triangles_is_zero() -> None:
    result = _score(CountsScorer(), "Two circles, a square, and no triangles.")
    assert result.scores["count_accuracy"] == 1.0


def test_number_attached_to_the_wrong_shape() -> None:
    # circle said 1 (true 2), square said 2 (true 1), triangle 0 right: 1/3; errors 1, 1, 0.
    result = _score(CountsScorer(), "one circle and two squares")
    assert result.scores["count_accuracy"] == pytest.approx(1 / 3)
    assert result.scores["count_abs_error"] == pytest.approx(2 / 3)
    assert result.scores["total_accuracy"] == 1.0  # 3 shapes in all, by luck


@pytest.mark.parametrize("output", ["I see some shapes.", "five shapes", "There are circles."])
def test_saying_nothing_countable_earns_no_count(output: str) -> None:
    # Two red circles: read as 0/0/0 these used to get square and triangle right (2/3).
    # Now every kind is unreadable: 0 right; error the worst on 0..5: max(2, 3) = 3,
    # max(0, 5) = 5 twice: (3 + 5 + 5) / 3 = 13/3.
    result = _score(CountsScorer(), output, truth=TWO_CIRCLES)
    assert result.scores["count_accuracy"] == 0.0
    assert result.scores["count_abs_error"] == pytest.approx(13 / 3)
    assert result.read_as["counts"] == {"circle": None, "square": None, "triangle": None}
    # "five shapes" still says a total (5, true 2): wrong either way here.
    assert result.scores["total_accuracy"] == 0.0


def test_counts_add_up_and_negations_are_zero() -> None:
    # circle 3 + 1 = 4 (true 2), square 0, triangle 0 (no number said: never named, 0
    # because circles were counted): 2 of 3 right; errors 2, 1, 0: mean 1.
    added = _score(CountsScorer(), "three red circles and a blue circle")
    assert added.read_as["counts"] == {"circle": 4, "square": 0, "triangle": 0}
    assert added.scores["count_accuracy"] == pytest.approx(1 / 3)
    assert added.scores["count_abs_error"] == pytest.approx(1.0)
    negated = _score(CountsScorer(), "I don't see any triangles or squares; there are two "
                     "circles", truth=TWO_CIRCLES)
    assert negated.read_as == {"counts": {"circle": 2, "square": 0, "triangle": 0},
                               "total": 2}
    assert negated.scores == {"count_accuracy": 1.0, "count_abs_error": 0.0,
                              "total_accuracy": 1.0}


def test_json_with_extra_and_missing_keys() -> None:
    # "hexagon" ignored, "circles" read as circle, triangle missing: wrong (worst error 5).
    parsed = {"counts": {"circles": 2, "square": 1, "hexagon": 4}, "colour": "red"}
    result = _score(CountsScorer(), parsed=parsed)
    assert result.scores["count_accuracy"] == pytest.approx(2 / 3)
    assert result.scores["count_abs_error"] == pytest.approx(5 / 3)
    assert result.scores["total_accuracy"] == 0.0  # the total is missing


@pytest.mark.parametrize("parsed", [[1, 2, 3], {"circle": 2, "square": 1}, "3", 3,
                                    {"counts": [2, 1, 0], "total": 3}])
def test_json_of_the_wrong_shape_is_wrong_not_a_crash(parsed: Any) -> None:
    result = _score(CountsScorer(), parsed=parsed)
    assert result.scores["count_accuracy"] == 0.0
    # The worst answer on 0..5 per kind: max(c, 5 - c) = 3, 4, 5: mean 4.
    assert result.scores["count_abs_error"] == pytest.approx(4.0)


def test_empty_output_is_a_wrong_answer() -> None:
    result = _score(CountsScorer(), "")
    assert result.scores == {"count_accuracy": 0.0, "count_abs_error": 4.0,
                             "total_accuracy": 0.0}


def test_counts_of_version_1_truth_and_of_no_truth() -> None:
    assert _score(CountsScorer(), "two circles, one square", truth=SCENE_V1).scores[
        "count_accuracy"] == 1.0
    photo = _score(CountsScorer(), "two circles", truth={})
    assert photo.scores == {"count_accuracy": None, "count_abs_error": None,
                            "total_accuracy": None}
    assert photo.chance == {}


# --- attributes -----------------------------------------------------------------------

def test_attributes_right() -> None:
    parsed = {"objects": [{"shape": "circle", "colour": "red"},
                          {"shape": "Square", "colour": "Green"},
                          {"shape": "circle", "color": "red"}]}
    result = _score(AttributesScorer(), parsed=parsed)
    assert result.scores == {"colour_accuracy": 1.0, "shape_accuracy": 1.0}
    # Chance: 3 colours uniform over the 7 non-background colours, truth [red, red, green]:
    # X_red ~ Bin(3, 1/7): E[min(X, 2)] = 108/343 + 2*18/343 + 2*1/343 = 146/343;
    # E[min(X_green, 1)] = 1 - (6/7)^3 = 127/343; (146 + 127) / 343 / 3 = 13/49.
    assert result.chance["colour_accuracy"] == pytest.approx(13 / 49)
    # Shapes [circle, circle, square], 3 kinds: E[min(Bin(3,1/3), 2)] = 12/27 + 2*6/27 +
    # 2*1/27 = 26/27; E[min(.,1)] = 1 - 8/27 = 19/27; (26 + 19) / 27 / 3 = 5/9.
    assert result.chance["shape_accuracy"] == pytest.approx(5 / 9)


def test_an_answer_listing_every_colour_scores_low() -> None:
    every = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    parsed = {"objects": [{"shape": "circle", "colour": c} for c in every]}
    # Overlap: red 1 (of 2), green 1: 2 / max(8, 3) = 1/4.
    assert _score(AttributesScorer(), parsed=parsed).scores["colour_accuracy"] == 0.25
    text = "There are " + ", ".join(f"a {c} circle" for c in every) + "."
    assert _score(AttributesScorer(), text).scores["colour_accuracy"] == 0.25


def test_a_colour_the_scene_does_not_hold() -> None:
    result = _score(AttributesScorer(), "Two grey circles and a green square.")
    assert result.scores == {"colour_accuracy": pytest.approx(1 / 3), "shape_accuracy": 1.0}


def test_attributes_unreadable() -> None:
    for output, parsed in (("", None), ("", {"items": []}), ("", {"objects": "red"})):
        assert _score(AttributesScorer(), output, parsed).scores == {
            "colour_accuracy": 0.0, "shape_accuracy": 0.0}
    mixed = {"objects": ["red circle", {"shape": "square", "colour": "green"}]}
    # The string entry counts as an object said, matching nothing: 1 / max(2, 3).
    assert _score(AttributesScorer(), parsed=mixed).scores["colour_accuracy"] == \
        pytest.approx(1 / 3)


# --- spatial --------------------------------------------------------------------------

def test_spatial_right_in_any_order() -> None:
    parsed = {"objects": [
        {"shape": "circle", "colour": "red", "position": "bottom right"},
        {"shape": "square", "colour": "green", "position": "center"},
        {"shape": "circle", "colour": "red", "position": "Top-Left"},
    ]}
    result = _score(SpatialScorer(), parsed=parsed)
    assert result.scores == {"position_accuracy": 1.0, "spatial_accuracy": 1.0}
    # Every one of the 8 relations holds for 9 of the 72 ordered pairs of distinct
    # cells (3 x 3 ways), so the pair chance is 1/8 whatever the scene.
    assert result.chance == {"position_accuracy": pytest.approx(1 / 9),
                             "spatial_accuracy": pytest.approx(1 / 8)}


def test_spatial_free_text_partly_right() -> None:
    text = ("A red circle at the top left, a green square at the top right, and a red "
            "circle at the bottom right.")
    result = _score(SpatialScorer(), text)
    # 2 of 3 in their cell. Pairs: (TL circle, square): true right+below, said right+same
    # row: wrong; (TL, BR circles): right; (square, BR circle): true right+below, said
    # same column+below: wrong. 1 of 3.
    assert result.scores["position_accuracy"] == pytest.approx(2 / 3)
    assert result.scores["spatial_accuracy"] == pytest.approx(1 / 3)


def test_listing_a_shape_in_every_cell_earns_little() -> None:
    cells = ["top-left", "top-centre", "top-right", "middle-left", "centre", "middle-right",
             "bottom-left", "bottom-centre", "bottom-right"]
    parsed = {"objects": [{"shape": s, "colour": c, "position": p}
                          for p in cells for s, c in (("circle", "red"), ("square", "green"))]}
    # Matching is blind to position: the circles (top-left, bottom-right) take the first
    # two red circles said (top-left, top-centre), dealt out by cell: top-left to the
    # top-left circle, top-centre to the other; the square takes the top-left square.
    # 1 at its cell / max(18 said, 3 true) = 1/18. Pairs: (TL circle, square) true
    # right+below, said same cell: wrong; (TL, BR circles) true right+below, said
    # right+same row: wrong; (square, BR circle) true right+below, said right+same row:
    # wrong. 0/3 x 3/18 = 0.
    scores = _score(SpatialScorer(), parsed=parsed).scores
    assert scores["position_accuracy"] == pytest.approx(1 / 18)
    assert scores["spatial_accuracy"] == 0.0


CELLS = ["top-left", "top-centre", "top-right", "middle-left", "centre", "middle-right",
         "bottom-left", "bottom-centre", "bottom-right"]


@pytest.mark.parametrize("cells", [CELLS, CELLS[::-1], CELLS[4:] + CELLS[:4]])
def test_a_red_circle_in_every_cell_scores_low(cells: list[str]) -> None:
    parsed = {"objects": [{"shape": "circle", "colour": "red", "position": p} for p in cells]}
    result = _score(SpatialScorer(), parsed=parsed, truth=TWO_CIRCLES)
    # Truth: red circles at top-left (TL) and bottom-right (BR); BR is right+below of TL.
    # Whatever the order, only the first two said are matched (blind to position), so at
    # best 2 at their cell and the pair right, x 2 true / 9 said = 2/9.
    # Reading order: first two said top-left, top-centre; TL gets top-left (its cell),
    # BR gets top-centre: position 1/9; pair said right+same row: wrong, 0.
    # Reversed: bottom-right, bottom-centre; BR gets bottom-right, TL bottom-centre:
    # position 1/9; pair said right+same row: wrong, 0.
    # From the centre: centre, middle-right; neither at a true cell: 0; pair said
    # right+same row: wrong, 0.
    expected = {tuple(CELLS): (1 / 9, 0.0), tuple(CELLS[::-1]): (1 / 9, 0.0),
                tuple(CELLS[4:] + CELLS[:4]): (0.0, 0.0)}[tuple(cells)]
    assert (result.scores["position_accuracy"], result.scores["spatial_accuracy"]) == \
        pytest.approx(expected)
    # Chance: the one pair's relation (right+below) holds for 9 of 72 ordered pairs of
    # distinct cells: 1/8.
    assert result.chance["spatial_accuracy"] == pytest.approx(1 / 8)
    assert max(expected) < 2 / 9 + 1e-9


def test_extra_objects_cost_spatial_accuracy() -> None:
    # Both circles right, then 2 extra: pair right 1/1 x 2 true / 4 said = 1/2;
    # position 2 / 4 = 1/2.
    parsed = {"objects": [{"shape": "circle", "colour": "red", "position": p}
                          for p in ("bottom-right", "top-left", "centre", "top-right")]}
    scores = _score(SpatialScorer(), parsed=parsed, truth=TWO_CIRCLES).scores
    assert scores == {"position_accuracy": 0.5, "spatial_accuracy": 0.5}


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), (1, 0, 2)])
def test_a_right_answer_in_any_order_scores_one(order: tuple[int, int, int]) -> None:
    objects = [{"shape": "circle", "colour": "red", "position": "top-left"},
               {"shape": "square", "colour": "green", "position": "centre"},
               {"shape": "circle", "colour": "red", "position": "bottom-right"}]
    parsed = {"objects": [objects[i] for i in order]}
    assert _score(SpatialScorer(), parsed=parsed).scores == {"position_accuracy": 1.0,
                                                             "spatial_accuracy": 1.0}


def test_spatial_one_shape_and_no_truth() -> None:
    one = dict(SCENE, shapes=[_shape("circle", "red", "centre")])
    result = _score(SpatialScorer(), "a red circle in the middle", truth=one)
    assert result.scores == {"position_accuracy": 1.0, "spatial_accuracy": None}
    assert "spatial_accuracy" not in result.chance
    assert _score(SpatialScorer(), "x", truth={}).scores == {
        "position_accuracy": None, "spatial_accuracy": None}
    assert _score(SpatialScorer(), "").scores == {"position_accuracy": 0.0,
                                                  "spatial_accuracy": 0.0}


# --- scene and mentions -----------------------------------------------------------------

def test_scene_json_and_text() -> None:
    right = _score(SceneScorer(), parsed={"background": "Blue", "gradient": False,
                                          "total": 3})
    assert right.scores == {"background_accuracy": 1.0, "gradient_accuracy": 1.0,
                            "scene_total_accuracy": 1.0}
    # Total: uniform on 0..5 (easy), 1/6.
    assert right.chance == {"background_accuracy": 1 / 8, "gradient_accuracy": 0.5,
                            "scene_total_accuracy": pytest.approx(1 / 6)}
    wrong = _score(SceneScorer(), parsed={"background": "navy", "gradient": "no",
                                          "total": 30})
    assert wrong.scores == {"background_accuracy": 0.0, "gradient_accuracy": 0.0,
                            "scene_total_accuracy": 0.0}
    text = _score(SceneScorer(), "Three shapes on a plain blue background.")
    assert text.scores == {"background_accuracy": 1.0, "gradient_accuracy": 1.0,
                           "scene_total_accuracy": 1.0}
    summed = _score(SceneScorer(), "Two circles and a square on a blue gradient.")
    assert summed.scores["scene_total_accuracy"] == 1.0  # 2 + 1 + 0, every kind read
    assert _score(SceneScorer(), "").scores == {"background_accuracy": 0.0,
                                                "gradient_accuracy": 0.0,
                                                "scene_total_accuracy": 0.0}
    # Hard: 0..9, 1/10; a photo without truth: not applicable.
    hard = _score(SceneScorer(), parsed={"total": 3}, truth=dict(SCENE, difficulty="hard"))
    assert hard.chance["scene_total_accuracy"] == pytest.approx(1 / 10)
    assert _score(SceneScorer(), parsed={"total": 3}, truth={}).scores[
        "scene_total_accuracy"] is None


def test_mentions() -> None:
    caption = "Two red circles and a green square on a blue background."
    result = _score(MentionsScorer(), caption)
    assert result.scores == {"colour_precision": 1.0, "shape_recall": 1.0,
                             "shape_precision": 1.0}
    # The scene holds 3 of the 8 palette colours (red, green, blue). Kinds named: a
    # random non-empty subset of 3 (7 of them); a kind is in 4: recall 4/7. Precision,
    # 2 kinds present (circle, square): per kind, subsets holding it are {c} (1/1), two
    # of size 2 (1/2 each), one of size 3 (1/3): (1 + 1 + 1/3) / 7 = 1/3; x 2 = 2/3.
    assert result.chance == {"colour_precision": 3 / 8, "shape_recall": pytest.approx(4 / 7),
                             "shape_precision": pytest.approx(2 / 3)}
    every = "A red, green, blue, yellow, purple, orange, white and black picture of circles."
    listed = _score(MentionsScorer(), every)
    assert listed.scores == {"colour_precision": 3 / 8, "shape_recall": 0.5,
                             "shape_precision": 1.0}
    pink = _score(MentionsScorer(), "A pink triangle on a blue background.")
    assert pink.scores == {"colour_precision": 0.5, "shape_recall": 0.0,
                           "shape_precision": 0.0}
    empty = _score(MentionsScorer(), "")
    assert empty.scores == {"colour_precision": None, "shape_recall": 0.0,
                            "shape_precision": None}
    assert empty.chance == {"shape_recall": pytest.approx(4 / 7)}


def test_naming_every_shape_kind_costs_precision() -> None:
    # Two red circles only: every kind named: recall 1/1, precision 1 of 3 named = 1/3;
    # chance precision with 1 kind present: 1/3.
    result = _score(MentionsScorer(), "Circles, squares and triangles.", truth=TWO_CIRCLES)
    assert result.scores["shape_recall"] == 1.0
    assert result.scores["shape_precision"] == pytest.approx(1 / 3)
    assert result.chance["shape_precision"] == pytest.approx(1 / 3)
    # Saying a kind is absent is not naming it: "no squares" leaves circle, 1 of 1.
    honest = _score(MentionsScorer(), "Two circles and no squares.", truth=TWO_CIRCLES)
    assert honest.scores["shape_precision"] == 1.0


# --- real scenes ------------------------------------------------------------------------

def _describe(truth: dict[str, Any]) -> dict[str, Any]:
    return {"objects": [{"shape": s["shape"], "colour": s["colour"],
                         "position": s["position"]} for s in truth["shapes"]]}


@pytest.mark.parametrize("index", range(6))
def test_a_perfect_answer_scores_full_marks_on_generated_scenes(index: int) -> None:
    truth = dict(SyntheticScenes(6, seed=3).sample(index).truth)
    counts = {k: sum(s["shape"] == k for s in truth["shapes"])
              for k in ("circle", "square", "triangle")}
    checks = [
        (CountsScorer(), {"counts": counts, "total": len(truth["shapes"])}),
        (AttributesScorer(), _describe(truth)),
        (SpatialScorer(), _describe(truth)),
        (SceneScorer(), {"background": truth["background"], "gradient": truth["gradient"],
                         "total": len(truth["shapes"])}),
    ]
    for scorer, parsed in checks:
        scores = _score(scorer, parsed=parsed, truth=truth).scores
        assert all(v in (None, 1.0, 0.0) for v in scores.values())
        assert {k: v for k, v in scores.items() if k != "count_abs_error" and v is not None} \
            == dict.fromkeys([k for k, v in scores.items()
                              if k != "count_abs_error" and v is not None], 1.0)


def test_the_scene_description_reads_back_as_its_truth() -> None:
    # describe() is what text-only models are shown: the free-text rules read it fully.
    for sample in SyntheticScenes(8, seed=11).samples():
        truth = dict(sample.truth)
        assert sample.description is not None
        for scorer in (CountsScorer(), AttributesScorer(), SpatialScorer(), SceneScorer()):
            scores = _score(scorer, sample.description, truth=truth).scores
            # A plain background is described as "plain": gradient read as false.
            skip = {"count_abs_error"}
            got = {k: v for k, v in scores.items() if v is not None and k not in skip}
            assert set(got.values()) <= {1.0}, (sample.description, scorer.name, scores)


def test_count_chance_follows_the_difficulty() -> None:
    # Hard scenes hold up to 9 shapes: counts uniform on 0..9, P(right) = 1/10;
    # E|U - 2| = (2+1+0+1+2+3+4+5+6+7)/10 = 31/10, c=1: 37/10, c=0: 45/10: mean 113/30.
    hard = dict(SCENE, difficulty="hard")
    result = _score(CountsScorer(), "", truth=hard)
    assert result.chance["count_accuracy"] == pytest.approx(1 / 10)
    assert result.chance["count_abs_error"] == pytest.approx(113 / 30)
    # Unreadable: the worst error on 0..9, max(c, 9 - c) = 7, 8, 9: mean 8.
    assert result.scores["count_abs_error"] == pytest.approx(8.0)


def test_a_stripe_colour_is_in_the_image() -> None:
    striped = dict(SCENE, distractors=[{"colour": "yellow", "kind": "stripe",
                                        "bbox": [0, 0, 8, 200]}])
    caption = "Red circles, a green square and a yellow stripe on blue."
    result = _score(MentionsScorer(), caption, truth=striped)
    assert result.scores["colour_precision"] == 1.0
    assert result.chance["colour_precision"] == 4 / 8
    # ...but a stripe is not a shape: counted as one, the answer is wrong.
    counts = _score(CountsScorer(), "two circles, a square and a yellow square", truth=striped)
    assert counts.scores["count_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("difficulty", ["medium", "hard"])
def test_descriptions_of_harder_scenes_read_back(difficulty: str) -> None:
    for sample in SyntheticScenes(6, seed=5, size=448, difficulty=difficulty).samples():
        truth = dict(sample.truth)
        assert sample.description is not None
        for scorer in (CountsScorer(), AttributesScorer(), SpatialScorer()):
            scores = _score(scorer, sample.description, truth=truth).scores
            got = {k: v for k, v in scores.items() if v is not None and k != "count_abs_error"}
            assert set(got.values()) <= {1.0}, (sample.description, scorer.name, scores)
