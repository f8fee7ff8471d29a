"""Numbers the model gives and lists it writes: photo scores and caption variants.

JSON answers:

- ``photo_scores``: ``{"instagram": int, "aesthetic": int, "caption": str, "tags":
  [str]}``; a rating is a whole number 1..10 (7, 7.0, "7" and "7/10" read as 7); any
  other value, or none, is None: a rating has no right answer, so a missing one is
  counted as not applicable (and shows in the summary's counts), not as 0. Free text:
  "instagram" (or "aesthetic") followed within 30 characters on its line by the number.
- ``variants``: a JSON array of strings (``caption_variants``): how many strings it
  holds (blank ones not counted), and their mean length in characters. An output that
  is not such an array gives 0 variants (the model delivered none usable) and no mean
  length. When the task does not check JSON, the output itself is tried as JSON (a
  fenced ```json block too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pytest_vlmbench.scoring.base import GuardedScorer, ScoreInput, ScoreResult, ScoreSpec

RATING_RANGE = range(1, 11)
_RATING_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def rating(value: object) -> int | None:
    """A 1..10 rating as a whole number, or None."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _RATING_TEXT.fullmatch(value)
        number = float(match.group(1)) if match else None
    if number is None or not number.is_integer() or int(number) not in RATING_RANGE:
        return None
    return int(number)


def _rating_in_text(text: str, key: str) -> int | None:
    match = re.search(rf"{key}\w*[^\d\n]{{0,30}}?(\d+(?:\.\d+)?)(?:\s*/\s*10)?", text.lower())
    return rating(match.group(1)) if match else None


class PhotoScoresScorer(GuardedScorer):
    """The instagram-fit and aesthetic ratings a photo_score answer gives."""

    name = "photo_scores"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("instagram", "points", True, "value",
                  "The model's instagram-fit rating of the photo, 1-10."),
        ScoreSpec("aesthetic", "points", True, "value",
                  "The model's aesthetic rating of the photo, 1-10."),
    )

    def read(self, item: ScoreInput) -> ScoreResult:
        said: dict[str, int | None] = {}
        for key in ("instagram", "aesthetic"):
            if item.parsed is not None:
                value = item.parsed.get(key) if isinstance(item.parsed, Mapping) else None
                said[key] = rating(value)
            else:
                said[key] = _rating_in_text(item.output, key)
        return ScoreResult({k: None if v is None else float(v) for k, v in said.items()},
                           {}, said)


def json_array(output: str, parsed: Any) -> list[Any] | None:
    """The answer as a JSON array, or None."""
    value = parsed
    if value is None:
        text = output.strip()
        fenced = _FENCE.match(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            return None
    return value if isinstance(value, list) else None


class VariantsScorer(GuardedScorer):
    """How many caption variants a text model wrote, and how long they are."""

    name = "variants"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("variants", "count", True, "length",
                  "Non-blank strings in the JSON array the model answered (0 when the "
                  "answer is not a JSON array)."),
        ScoreSpec("variant_chars", "chars", False, "length",
                  "Mean characters per variant string."),
    )

    def read(self, item: ScoreInput) -> ScoreResult:
        array = json_array(item.output, item.parsed) or []
        texts = [v for v in array if isinstance(v, str) and v.strip()]
        return ScoreResult(
            {"variants": float(len(texts)),
             "variant_chars": sum(map(len, texts)) / len(texts) if texts else None},
            {}, {"variants": texts},
        )
