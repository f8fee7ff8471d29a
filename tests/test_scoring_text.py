"""Text scores, distinct-n, repeated outputs, photo scores, variants and the benchmark's
quality summary."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_vlmbench.scoring import ScoreInput, resolve_scorers
from pytest_vlmbench.scoring.aggregate import histogram, quality_summary
from pytest_vlmbench.scoring.text import TextScorer, distinct_n, normalise, repeated
from pytest_vlmbench.scoring.values import PhotoScoresScorer, VariantsScorer, rating


def _item(output: str, parsed: Any = None) -> ScoreInput:
    return ScoreInput("p1", output, parsed, {}, "stop")


def test_text_scorer_whole_output_and_field() -> None:
    assert TextScorer().score(_item("Lost in the tiles.")).scores == {
        "output_chars": 18.0, "output_words": 4.0}
    caption = TextScorer("caption")
    answer = '{"caption": "A quiet street", "instagram": 7}'
    assert caption.score(_item(answer)).scores == {"output_chars": 14.0, "output_words": 3.0}
    assert caption.score(_item("x", {"caption": "two words"})).scores["output_words"] == 2.0
    assert caption.score(_item("not json")).scores == {"output_chars": None,
                                                       "output_words": None}
    assert caption.score(_item("", {"caption": 3})).scores["output_chars"] is None


def test_distinct_n_by_hand() -> None:
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran: 4 distinct of 6; bigrams: the-cat, cat-sat,
    # the-cat, cat-ran: 3 distinct of 4.
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["The CAT.", "the cat"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["one"], 2) is None
    assert distinct_n([], 1) is None


def test_repeated_outputs_the_real_case() -> None:
    # A photo-ranking run captioned two unrelated photos "Lost in the tiles".
    items = [("IMG_0001", "Lost in the tiles"), ("IMG_0420", "lost in  the tiles."),
             ("IMG_0002", "A dog on a beach"), ("IMG_0002", "A dog on a beach"),
             ("IMG_0003", ""), ("IMG_0004", "")]
    count, groups = repeated(items)
    # The same sample answered the same way twice is not a repeat; empty texts neither.
    assert count == 2
    assert groups == [{"text": "lost in the tiles", "samples": ["IMG_0001", "IMG_0420"]}]
    assert normalise("  Lost   in the Tiles!!  ") == "lost in the tiles"


def test_repeated_groups_largest_first_and_at_most_five() -> None:
    items = [(f"s{i}", f"text {i % 7}") for i in range(40)]
    count, groups = repeated(items)
    assert count == 40
    assert len(groups) == 5
    sizes = [len(g["samples"]) for g in groups]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, 7), (7.0, 7), ("7", 7), ("7/10", 7), (" 8 / 10 ", 8), (10, 10), (0, None),
     (11, None), (7.5, None), (True, None), ("seven", None), (None, None)],
)
def test_ratings(value: object, expected: int | None) -> None:
    assert rating(value) == expected


def test_photo_scores() -> None:
    scorer = PhotoScoresScorer()
    parsed = {"instagram": 8, "aesthetic": "6/10", "caption": "x", "tags": []}
    assert scorer.score(_item("", parsed)).scores == {"instagram": 8.0, "aesthetic": 6.0}
    assert scorer.score(_item("", {"instagram": 12})).scores == {"instagram": None,
                                                                "aesthetic": None}
    assert scorer.score(_item("", [8, 6])).scores == {"instagram": None, "aesthetic": None}
    text = "Instagram fit: 9/10\nAesthetics - 7"
    assert scorer.score(_item(text)).scores == {"instagram": 9.0, "aesthetic": 7.0}


def test_variants() -> None:
    scorer = VariantsScorer()
    assert scorer.score(_item("", ["abc", "de", "", 4])).scores == {
        "variants": 2.0, "variant_chars": 2.5}
    assert scorer.score(_item('```json\n["one", "two", "six"]\n```')).scores == {
        "variants": 3.0, "variant_chars": 3.0}
    assert scorer.score(_item("1. a caption\n2. another")).scores == {
        "variants": 0.0, "variant_chars": None}
    assert scorer.score(_item("", {"variants": ["a"]})).scores["variants"] == 0.0


def test_histogram_by_hand() -> None:
    # Ratings 7, 7, 7, 8, 3: top value 8 given once (1/5), mode 7 (3/5), mean 32/5.
    figure = histogram([7.0, 7.0, 7.0, 8.0, 3.0])
    assert figure["bins"] == {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0, "6": 0, "7": 3, "8": 1,
                              "9": 0, "10": 0}
    assert (figure["n"], figure["top_share"], figure["mode_share"]) == (5, 0.2, 0.6)
    assert figure["mean"] == pytest.approx(6.4)
    assert figure["out_of_range"] == 0
    assert histogram([])["top_share"] is None
    assert histogram([])["out_of_range"] == 0


def test_histogram_counts_values_outside_the_bins() -> None:
    # 0, 11 and 10.6 (rounds to 11) fall in no bin of 1..10; 0.6 rounds to 1, in bin 1.
    # n 5, bins hold 2 = n - 3; mean (0 + 11 + 10.6 + 0.6 + 5) / 5 = 27.2 / 5 = 5.44.
    figure = histogram([0.0, 11.0, 10.6, 0.6, 5.0])
    assert (figure["n"], figure["out_of_range"], sum(figure["bins"].values())) == (5, 3, 2)
    assert (figure["bins"]["1"], figure["bins"]["5"]) == (1, 1)
    assert figure["mean"] == pytest.approx(5.44)


def _record(sample: str, output: str | None, scores: dict[str, Any] | None = None,
            chance: dict[str, float] | None = None, phase: str = "measure",
            error: Any = None) -> dict[str, Any]:
    return {"sample_id": sample, "output": output, "phase": phase, "error": error,
            "scores": scores or {}, "chance": chance or {}}


def test_quality_summary() -> None:
    scorers = resolve_scorers(["counts", "text", "photo_scores"])
    records = [
        _record("a", "two circles", {"count_accuracy": 1.0, "count_abs_error": 0.0,
                                     "total_accuracy": 1.0, "instagram": 8.0},
                {"count_accuracy": 1 / 6, "total_accuracy": 1 / 6}),
        _record("b", "Two circles.", {"count_accuracy": 0.0, "count_abs_error": 2.0,
                                      "total_accuracy": None, "instagram": 8.0},
                {"count_accuracy": 0.5}),
        _record("c", None, error={"stage": "request", "type": "X", "message": "m"}),
        _record("a", "warm-up text", {"count_accuracy": 0.0}, phase="warmup"),
    ]
    quality = quality_summary(records, text_field=None, scorers=scorers)
    assert quality is not None
    assert quality["scorers"] == ["counts", "text", "photo_scores"]
    accuracy = quality["scores"]["count_accuracy"]
    assert (accuracy["mean"], accuracy["n"], accuracy["not_applicable"], accuracy["failed"],
            accuracy["errors"]) == (0.5, 2, 0, 1, 0)
    assert accuracy["chance"] == pytest.approx((1 / 6 + 0.5) / 2)
    assert (accuracy["unit"], accuracy["kind"], accuracy["higher_is_better"]) == (
        "", "accuracy", True)
    total = quality["scores"]["total_accuracy"]
    assert (total["n"], total["not_applicable"]) == (1, 1)
    assert total["chance"] == pytest.approx(1 / 6)
    assert quality["scores"]["aesthetic"]["mean"] is None
    text = quality["text"]
    assert text is not None
    assert (text["field"], text["n"], text["repeated_outputs"]) == ("output", 2, 2)
    assert text["repeated_groups"] == [{"text": "two circles", "samples": ["a", "b"]}]
    assert text["distinct_1"] == pytest.approx(2 / 4)
    assert set(quality["histograms"]) == {"instagram", "aesthetic"}
    assert quality["histograms"]["instagram"]["top_share"] == 1.0


def test_quality_summary_text_field_and_none() -> None:
    assert quality_summary([], text_field=None, scorers=[]) is None
    scorers = resolve_scorers(["text"], text_field="caption")
    records = [_record("a", '{"caption": "Lost in the tiles"}'),
               _record("b", '{"caption": "Lost in the tiles."}'), _record("c", "oops")]
    quality = quality_summary(records, text_field="caption", scorers=scorers)
    assert quality is not None
    assert quality["text"] is not None
    assert (quality["text"]["field"], quality["text"]["n"],
            quality["text"]["repeated_outputs"]) == ("caption", 2, 2)
    counts_only = quality_summary(records, text_field=None,
                                  scorers=resolve_scorers(["counts"]))
    assert counts_only is not None
    assert counts_only["text"] is None
