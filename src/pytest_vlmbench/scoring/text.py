"""Free text as text: length, diversity (distinct-n) and repeated outputs.

The ``text`` scorer measures the task's text: the whole output, or with a ``text_field``
(e.g. "caption" of a photo_score answer) that field of the JSON answer (a string); an
answer without it (not JSON, or no such string field) has no text: None, counted as not
applicable in the summary.

Across a benchmark (`quality_summary`): distinct-n = distinct n-grams / all n-grams over
all its texts (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
Conversation Models"), on lower-cased word tokens; and repeated outputs, records whose
normalised text equals that of a record of a *different* sample (a real photo-ranking
run captioned two unrelated photos "Lost in the tiles"). Normalised: lower-case,
whitespace collapsed, trailing punctuation stripped. The same sample answered twice the
same way is consistency, not a repeat.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_vlmbench.scoring.base import GuardedScorer, ScoreInput, ScoreResult, ScoreSpec

_WORD = re.compile("\\w+(?:['\u2019]\\w+)*")
_TRAILING = re.compile("[\\s.,;:!?\u2026'\"\u2019\u201d)\\]]+$")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes)."""
    return _WORD.findall(text.lower())


def normalise(text: str) -> str:
    """Lower-case, whitespace collapsed, trailing punctuation stripped."""
    return _TRAILING.sub("", " ".join(text.lower().split()))


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Distinct n-grams / total n-grams over all texts; None when there is no n-gram."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = words(text)
        for i in range(len(tokens) - n + 1):
            seen.add(tuple(tokens[i:i + n]))
            total += 1
    return len(seen) / total if total else None


def repeated(items: Sequence[tuple[str, str]], *, limit: int = 5
             ) -> tuple[int, list[dict[str, Any]]]:
    """(records whose normalised text is also that of another sample's record, the
    largest groups first: ``{"text": str, "samples": [ids]}``, at most ``limit``).

    ``items``: (sample id, text) per record. Empty texts are not repeats: an empty
    answer is measured by the accuracy and length scores already.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for sample_id, text in items:
        key = normalise(text)
        if key:
            groups[key].append(sample_id)
    shared = {text: ids for text, ids in groups.items() if len(set(ids)) > 1}
    count = sum(len(ids) for ids in shared.values())
    ranked = sorted(shared.items(), key=lambda kv: (-len(set(kv[1])), -len(kv[1]), kv[0]))
    return count, [{"text": text, "samples": sorted(set(ids))} for text, ids in ranked[:limit]]


def text_of(output: str | None, parsed: Any, text_field: str | None) -> str | None:
    """The text a task's text scores read; None when the answer has none."""
    if output is None:
        return None
    if not text_field:
        return output
    value = parsed
    if value is None:
        try:
            value = json.loads(output)
        except ValueError:
            return None
    if isinstance(value, Mapping) and isinstance(value.get(text_field), str):
        return str(value[text_field])
    return None


class TextScorer(GuardedScorer):
    """Characters and words of the task's text (the output, or a JSON field of it)."""

    name = "text"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("output_chars", "chars", False, "length",
                  "Characters of the task's text (the output, or its text field)."),
        ScoreSpec("output_words", "words", False, "length",
                  "Words of the task's text (the output, or its text field), split at "
                  "whitespace."),
    )

    def __init__(self, text_field: str | None = None) -> None:
        self.text_field = text_field or None

    def __repr__(self) -> str:
        return f"TextScorer(text_field={self.text_field!r})"

    def with_text_field(self, text_field: str | None) -> TextScorer:
        return TextScorer(text_field)

    def read(self, item: ScoreInput) -> ScoreResult:
        text = text_of(item.output, item.parsed, self.text_field)
        if text is None:
            return ScoreResult({"output_chars": None, "output_words": None})
        return ScoreResult({"output_chars": float(len(text)),
                            "output_words": float(len(text.split()))})
