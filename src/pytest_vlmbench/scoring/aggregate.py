"""A benchmark's quality: its records' scores summarised (``summary.quality``).

Only measured records count (phase "measure"). Failed requests are not scored: each
score's entry counts them (``failed``) beside the scored ones (``n``), those the score
does not apply to (``not_applicable``) and those whose scorer raised (``errors``: no
score, and ``read_as[scorer]["error"]`` says why), so that ``n + not_applicable +
failed + errors`` is the number of measured requests and a model that fails half its
requests cannot look accurate by omission. A built-in scorer whose reading rules trip
scores the output as an empty (unreadable) answer, noting the error: that record has a
score, so counts in ``n``. ``chance`` is the mean of the per-record chance levels over
the ``n`` records scored, to be read beside ``mean``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vlmbench.results.models import (
    Histogram,
    QualitySummary,
    RepeatedGroup,
    ScoreFigure,
    TextSummary,
)
from pytest_vlmbench.scoring.base import Scorer
from pytest_vlmbench.scoring.text import TextScorer, distinct_n, repeated, text_of
from pytest_vlmbench.scoring.values import RATING_RANGE

__all__ = [
    "Histogram",
    "QualitySummary",
    "RepeatedGroup",
    "ScoreFigure",
    "TextSummary",
    "quality_summary",
]


def _failed(record: Mapping[str, Any]) -> bool:
    return record.get("error") is not None or not isinstance(record.get("output"), str)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _score(record: Mapping[str, Any], name: str, table: str = "scores") -> float | None:
    values = record.get(table)
    value = values.get(name) if isinstance(values, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _scorer_error(record: Mapping[str, Any], scorer: str) -> bool:
    read_as = record.get("read_as")
    mine = read_as.get(scorer) if isinstance(read_as, Mapping) else None
    return isinstance(mine, Mapping) and mine.get("error") is not None


def histogram(values: Sequence[float]) -> Histogram:
    """Bins 1..10 (values rounded to whole points), mean, and the shares of the highest
    value given (``top_share``) and of the most common one (``mode_share``). A value
    outside 1..10 once rounded (a third-party value score) is in ``n`` and the mean but
    in no bin: ``out_of_range`` counts it, so the bins sum to ``n - out_of_range``."""
    bins = {str(v): 0 for v in RATING_RANGE}
    out_of_range = 0
    for value in values:
        key = str(round(value))
        if key in bins:
            bins[key] += 1
        else:
            out_of_range += 1
    if not values:
        return Histogram(bins=bins, n=0, out_of_range=0, mean=None, top_share=None,
                         mode_share=None)
    counted = Counter(values)
    return Histogram(bins=bins, n=len(values), out_of_range=out_of_range, mean=_mean(values),
                     top_share=counted[max(values)] / len(values),
                     mode_share=max(counted.values()) / len(values))


def text_summary(records: Sequence[Mapping[str, Any]], field: str | None) -> TextSummary:
    """Length, distinct-n and repeats over the records' texts (``field`` of the JSON
    answer, or the whole output)."""
    pairs: list[tuple[str, str]] = []
    for record in records:
        text = text_of(record.get("output"), None, field)
        if text is not None:
            pairs.append((str(record.get("sample_id")), text))
    texts = [text for _, text in pairs]
    count, groups = repeated(pairs)
    return TextSummary(
        field=field or "output", n=len(texts),
        chars_mean=_mean([float(len(t)) for t in texts]),
        words_mean=_mean([float(len(t.split())) for t in texts]),
        distinct_1=distinct_n(texts, 1), distinct_2=distinct_n(texts, 2),
        repeated_outputs=count,
        repeated_groups=[RepeatedGroup(text=g["text"], samples=g["samples"]) for g in groups],
    )


def quality_summary(records: Sequence[Mapping[str, Any]], *, text_field: str | None,
                    scorers: Sequence[Scorer]) -> QualitySummary | None:
    """The quality section of a benchmark's summary; None when its task has no scorers.

    Example::

        quality_summary(records, text_field="caption", scorers=resolve_scorers(names))
    """
    if not scorers:
        return None
    measured = [r for r in records if r.get("phase") == "measure"]
    scored = [r for r in measured if not _failed(r)]
    failed = len(measured) - len(scored)
    scores: dict[str, ScoreFigure] = {}
    histograms: dict[str, Histogram] = {}
    for scorer in scorers:
        for spec in scorer.specs:
            values = [v for r in scored if (v := _score(r, spec.name)) is not None]
            odds = [c for r in scored if _score(r, spec.name) is not None
                    and (c := _score(r, spec.name, "chance")) is not None]
            errors = sum(_score(r, spec.name) is None and _scorer_error(r, scorer.name)
                         for r in scored)
            scores[spec.name] = ScoreFigure(
                mean=_mean(values), n=len(values),
                not_applicable=len(scored) - len(values) - errors,
                failed=failed, errors=errors, chance=_mean(odds), unit=spec.unit,
                higher_is_better=spec.higher_is_better, kind=spec.kind,
                description=spec.description,
            )
            if spec.kind == "value":
                histograms[spec.name] = histogram(values)
    text_scorers = [s for s in scorers if isinstance(s, TextScorer) or s.name == "text"]
    field = text_field or next((s.text_field for s in text_scorers
                                if isinstance(s, TextScorer) and s.text_field), None)
    return QualitySummary(
        scorers=[s.name for s in scorers], scores=scores,
        text=text_summary(scored, field) if text_scorers else None,
        histograms=histograms,
    )
