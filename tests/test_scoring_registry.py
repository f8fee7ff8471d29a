"""The scorer registry: names, entry points, resolving a task's scorers, merging their
results, and scorers that never raise on model output."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.errors import UsageMistake
from pytest_vlmbench.scoring import (
    ENTRY_POINT_GROUP,
    ScoreInput,
    Scorer,
    ScorerError,
    ScoreResult,
    ScoreSpec,
    available_scorers,
    builtin_scorers,
    get_scorer,
    register_scorer,
    resolve_scorers,
    score_record,
    specs_of,
    unregister_scorer,
)
from pytest_vlmbench.scoring.text import TextScorer

BUILTIN = ["attributes", "counts", "mentions", "photo_scores", "scene", "spatial", "text",
           "variants"]
TRUTH = {"background": "blue", "gradient": True,
         "shapes": [{"shape": "circle", "colour": "red", "position": "top-left"},
                    {"shape": "triangle", "colour": "red", "position": "centre"}]}


class Echo:
    """A third party's scorer: the output's length."""

    name = "echo"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("echo_chars", "chars", False, "length", "Characters."),)

    def score(self, item: ScoreInput) -> ScoreResult:
        return ScoreResult({"echo_chars": len(item.output)})


class Broken:
    name = "broken"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("broken_score", "", True, "accuracy", "Never works."),)

    def score(self, item: ScoreInput) -> ScoreResult:
        raise RuntimeError("a bug")


class Clash:
    name = "clash"
    specs: tuple[ScoreSpec, ...] = (
        ScoreSpec("count_accuracy", "", True, "accuracy", "The same name as counts."),)

    def score(self, item: ScoreInput) -> ScoreResult:
        return ScoreResult({"count_accuracy": 1.0})


@pytest.fixture
def registered() -> Iterator[None]:
    scorers: list[Scorer] = [Echo(), Broken(), Clash()]
    for scorer in scorers:
        register_scorer(scorer)
    yield
    for name in ("echo", "broken", "clash"):
        unregister_scorer(name)


def test_builtins_are_known() -> None:
    assert [s.name for s in builtin_scorers()] == ["counts", "attributes", "spatial", "scene",
                                                   "mentions", "text", "photo_scores",
                                                   "variants"]
    assert set(BUILTIN) <= set(available_scorers())
    names = [spec.name for spec in specs_of(builtin_scorers())]
    assert len(names) == len(set(names))  # no two built-ins share a score name


def test_unknown_scorer_is_a_usage_mistake() -> None:
    with pytest.raises(ScorerError, match="unknown scorer 'nope'; known scorers: attributes"):
        get_scorer("nope")
    assert issubclass(ScorerError, UsageMistake)


def test_register_refuses_to_shadow() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_scorer(TextScorer())


def test_resolve_configures_the_text_field_and_refuses_clashes(registered: None) -> None:
    scorers = resolve_scorers(["counts", "text", "echo"], text_field="caption")
    assert [s.name for s in scorers] == ["counts", "text", "echo"]
    assert isinstance(scorers[1], TextScorer)
    assert scorers[1].text_field == "caption"
    assert [s.name for s in specs_of(scorers)] == [
        "count_accuracy", "count_abs_error", "total_accuracy", "output_chars", "output_words",
        "echo_chars"]
    with pytest.raises(ScorerError, match="'counts' and 'clash' both give the score "
                                          "'count_accuracy'"):
        resolve_scorers(["counts", "clash"])
    with pytest.raises(ScorerError, match="both give"):
        resolve_scorers(["text", "text"])


def test_score_record_merges_and_survives_a_broken_scorer(registered: None) -> None:
    scorers = resolve_scorers(["counts", "echo", "broken"])
    result = score_record(scorers, sample_id="scene-0000", output="a circle and a triangle",
                          parsed=None, truth=TRUTH, finish_reason="stop")
    assert result.scores == {"count_accuracy": 1.0, "count_abs_error": 0.0,
                             "total_accuracy": 1.0, "echo_chars": 23.0, "broken_score": None}
    assert set(result.chance) == {"count_accuracy", "count_abs_error", "total_accuracy"}
    assert result.read_as["counts"] == {"counts": {"circle": 1, "square": 0, "triangle": 1},
                                        "total": 2}
    assert result.read_as["broken"] == {"error": "RuntimeError: a bug"}
    none = score_record(scorers, sample_id="x", output="", parsed=None, truth=None,
                        finish_reason=None)
    assert none.scores["count_accuracy"] is None
    assert none.chance == {}


def test_scorer_errors_are_counted_apart(registered: None) -> None:
    from pytest_vlmbench.scoring.aggregate import quality_summary

    scorers = resolve_scorers(["counts", "broken"])
    records: list[dict[str, Any]] = []
    for sample, output, truth in (("s1", "a circle and a triangle", TRUTH),
                                  ("s2", "two circles", None), ("s3", None, TRUTH)):
        record: dict[str, Any] = {"sample_id": sample, "phase": "measure", "output": output,
                                  "error": None if output else {"type": "X"}}
        if output is not None:
            result = score_record(scorers, sample_id=sample, output=output, parsed=None,
                                  truth=truth, finish_reason="stop")
            record |= {"scores": result.scores, "chance": result.chance,
                       "read_as": result.read_as}
        records.append(record)
    quality = quality_summary(records, text_field=None, scorers=scorers)
    assert quality is not None
    # 3 measured: s3 failed; broken raised on s1 and s2: 2 errors, none "not applicable".
    broken = quality["scores"]["broken_score"]
    assert (broken["n"], broken["not_applicable"], broken["failed"], broken["errors"]) == (
        0, 0, 1, 2)
    # counts: s1 scored, s2 has no truth (not applicable), s3 failed, no error.
    counts = quality["scores"]["count_accuracy"]
    assert (counts["n"], counts["not_applicable"], counts["failed"], counts["errors"]) == (
        1, 1, 1, 0)
    for figure in quality["scores"].values():
        assert figure["n"] + figure["not_applicable"] + figure["failed"] + \
            figure["errors"] == 3


def _fake_entry_points(*entries: metadata.EntryPoint) -> Any:
    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [e for e in entries if e.group == group]

    return entry_points


ECHO_INSTANCE = Echo()


def test_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    here = __name__
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(
        metadata.EntryPoint("echo", f"{here}:Echo", ENTRY_POINT_GROUP),
        metadata.EntryPoint("echo2", f"{here}:ECHO_INSTANCE", ENTRY_POINT_GROUP),
        metadata.EntryPoint("counts", f"{here}:Clash", ENTRY_POINT_GROUP),
        metadata.EntryPoint("gone", "no_such_module:X", ENTRY_POINT_GROUP),
        metadata.EntryPoint("notone", f"{here}:BUILTIN", ENTRY_POINT_GROUP),
    ))
    assert {"echo", "echo2", "gone"} <= set(available_scorers())
    assert isinstance(get_scorer("echo"), Echo)  # a class: called
    assert get_scorer("echo2") is cast(Scorer, ECHO_INSTANCE)  # an instance: used as is
    assert get_scorer("counts").name == "counts"  # cannot replace a built-in
    with pytest.raises(ScorerError, match="cannot load entry point 'no_such_module:X'"):
        get_scorer("gone")
    with pytest.raises(ScorerError, match="not a Scorer"):
        get_scorer("notone")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), json_values)
def test_no_builtin_scorer_raises_on_any_output(output: str, parsed: Any) -> None:
    for scorer in builtin_scorers():
        for item in (ScoreInput("s", output, parsed, TRUTH, None),
                     ScoreInput("s", output, None, TRUTH, None)):
            result = scorer.score(item)
            assert set(result.scores) == {spec.name for spec in scorer.specs}
            for spec in scorer.specs:
                value = result.scores[spec.name]
                if spec.kind == "accuracy" and value is not None:
                    assert 0.0 <= value <= 1.0
