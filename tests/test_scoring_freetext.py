"""The free-text reading rules of scoring/freetext.py, on hand-written outputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.datasets.synthetic import POSITIONS
from pytest_vlmbench.scoring.freetext import (
    as_count,
    normalise_colour,
    normalise_position,
    normalise_shape,
    read_text,
)


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("two circles", {"circle": 2, "square": 0, "triangle": 0}),
        ("2 circles and 1 square", {"circle": 2, "square": 1, "triangle": 0}),
        ("A red circle and a blue circle.", {"circle": 2, "square": 0, "triangle": 0}),
        ("Two red circles and one blue circle", {"circle": 3, "square": 0, "triangle": 0}),
        ("Two circles, one red and one blue.", {"circle": 2, "square": 0, "triangle": 0}),
        ("three small green squares; no triangles", {"circle": 0, "square": 3, "triangle": 0}),
        ("zero triangles, twelve dots", {"circle": 12, "square": 0, "triangle": 0}),
        ("circles: 2, squares: 1, triangles: 0", {"circle": 2, "square": 1, "triangle": 0}),
        ("A disc, a rectangle and a triangle", {"circle": 1, "square": 1, "triangle": 1}),
        ("There are no shapes.", {"circle": 0, "square": 0, "triangle": 0}),
        # Numbered and article phrases of a kind add up: 3 + 1.
        ("three red circles and a blue circle", {"circle": 4, "square": 0, "triangle": 0}),
        # A bare singular is 1 once some kind is counted explicitly; a bare plural is not.
        ("Two squares. The circle is red.", {"circle": 1, "square": 2, "triangle": 0}),
        ("Two squares and some circles.", {"circle": None, "square": 2, "triangle": 0}),
        # Negation: the list after "don't see any" is 0, the next clause's count holds.
        ("I don't see any triangles or squares; there are two circles",
         {"circle": 2, "square": 0, "triangle": 0}),
        ("There are not any triangles, just a circle.", {"circle": 1, "square": 0, "triangle": 0}),
        ("A square without triangles.", {"circle": 0, "square": 1, "triangle": 0}),
        ("It is a square, not a circle.", {"circle": 0, "square": 1, "triangle": 0}),
        ("not a circle", {"circle": 0, "square": 0, "triangle": 0}),
        ("two circles but no squares or triangles", {"circle": 2, "square": 0, "triangle": 0}),
        ("There is no triangle and a circle.", {"circle": 1, "square": 0, "triangle": 0}),
        ("I dont see a triangle, I see 3 squares", {"circle": 0, "square": 3, "triangle": 0}),
    ],
)
def test_counts_from_free_text(text: str, counts: dict[str, int | None]) -> None:
    assert read_text(text).counts() == counts


@pytest.mark.parametrize("text", ["", "I cannot see the image.", "red green blue", "1 2 3"])
def test_an_output_naming_no_shape_is_unreadable(text: str) -> None:
    assert read_text(text).counts() is None


@pytest.mark.parametrize("text", ["I see some shapes.", "five shapes", "There are circles.",
                                  "The circle is red.", "Circles and squares."])
def test_counts_without_an_explicit_count_are_unreadable(text: str) -> None:
    # No kind is counted (a number, an article or a negation): every kind unreadable,
    # not 0 for the kinds never named.
    assert read_text(text).counts() is None


def test_negated_phrases_name_no_object() -> None:
    assert read_text("A red square, not a blue circle.").objects() == [
        {"shape": "square", "colour": "red", "position": None}]


@pytest.mark.parametrize(
    ("text", "total"),
    [("Five shapes: 2 circles and 3 squares.", 5), ("a total of 4", 4), ("3 in total", 3),
     ("two circles", None)],
)
def test_totals(text: str, total: int | None) -> None:
    assert read_text(text).total == total


def test_objects_take_colour_and_position() -> None:
    text = ("A red circle in the top-left corner, a green triangle at the bottom right, "
            "and a small yellow square in the center.")
    assert read_text(text).objects() == [
        {"shape": "circle", "colour": "red", "position": "top-left"},
        {"shape": "triangle", "colour": "green", "position": "bottom-right"},
        {"shape": "square", "colour": "yellow", "position": "centre"},
    ]


def test_position_before_the_shape_in_its_clause() -> None:
    text = "At the top left is a red circle, and at the bottom right a blue square."
    found = read_text(text).objects()
    assert [o["position"] for o in found] == ["top-left", "bottom-right"]


def test_a_relation_is_not_a_position() -> None:
    # "to the left of" places nothing on the grid; "the left of the image" does.
    assert read_text("The circle is to the left of the square.").objects()[0]["position"] \
        is None
    assert read_text("A circle on the left of the image.").objects()[0]["position"] \
        == "middle-left"


def test_a_position_is_not_shared_across_a_later_shape() -> None:
    found = read_text("a red circle and a blue square at the top left").objects()
    assert [o["position"] for o in found] == [None, "top-left"]


def test_referring_back_is_not_a_new_object() -> None:
    found = read_text("A red circle. The red circle is at the top.").objects()
    assert found == [{"shape": "circle", "colour": "red", "position": None}]


@pytest.mark.parametrize(
    ("text", "background", "gradient"),
    [
        ("A blue gradient background with a circle.", "blue", True),
        ("The background is a solid white.", "white", False),
        ("A plain blue background with 2 shapes: a red circle.", "blue", False),
        ("Background colour: dark green, no gradient.", "green", False),
        ("A circle on a purple backdrop that fades to black.", "purple", True),
        ("A red circle.", None, None),
        ("A plain background with a gradient", None, None),  # says both: unreadable
    ],
)
def test_background_and_gradient(text: str, background: str | None,
                                 gradient: bool | None) -> None:
    reading = read_text(text)
    assert (reading.background, reading.gradient) == (background, gradient)


def test_colour_words() -> None:
    reading = read_text("A violet square, a grey circle, a gray dot, a pink and a brown one.")
    assert reading.colours == ["purple", "grey", "grey", "pink", "brown"]
    assert normalise_colour(" Violet ") == "purple"
    assert normalise_colour("navy") is None
    assert normalise_colour(3) is None


@pytest.mark.parametrize(
    ("value", "position"),
    [("top left", "top-left"), ("Upper-Left", "top-left"), ("top-left", "top-left"),
     ("left top", "top-left"), ("center", "centre"), ("middle", "centre"),
     ("middle right", "middle-right"), ("centre-left", "middle-left"),
     ("top middle", "top-centre"), ("bottom", "bottom-centre"), ("lower right", "bottom-right"),
     ("somewhere", None), ("top left and bottom right", None), (None, None)],
)
def test_positions(value: object, position: str | None) -> None:
    assert normalise_position(value) == position


def test_every_grid_cell_reads_back_as_itself() -> None:
    assert [normalise_position(p) for p in POSITIONS] == list(POSITIONS)


@pytest.mark.parametrize(
    ("value", "count"),
    [(2, 2), (2.0, 2), ("2", 2), ("two", 2), (0, 0), (-1, None), (2.5, None), (True, None),
     ("many", None), (None, None), ([2], None)],
)
def test_json_counts(value: object, count: int | None) -> None:
    assert as_count(value) == count


def test_shape_names() -> None:
    assert [normalise_shape(s) for s in ("Circles", "disk", "Square", "triangles", "hexagon")] \
        == ["circle", "circle", "square", "triangle", None]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_reading_never_raises(text: str) -> None:
    reading = read_text(text)
    reading.counts()
    reading.objects()
