"""Tests for structured.py: how a completion is classified against a JSON schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench import results
from pytest_vlmbench.structured import ConstraintError, OutputChecker, ParseOutcome

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["objects"],
    "properties": {
        "objects": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "count"],
                "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
            },
        },
    },
}


@pytest.fixture
def checker() -> OutputChecker:
    return OutputChecker(expects_json=True, schema=SCHEMA, source="tasks/objects.json")


def test_valid(checker: OutputChecker) -> None:
    check = checker.check('{"objects": [{"name": "cat", "count": 2}]}', "stop")
    assert check.outcome is ParseOutcome.VALID
    assert check.detail is None
    assert check.parsed_ok


def test_invalid_json(checker: OutputChecker) -> None:
    check = checker.check("The image shows a cat.", "stop")
    assert check.outcome is ParseOutcome.INVALID_JSON
    assert check.detail is not None
    assert "at char 0" in check.detail
    assert not check.parsed_ok


def test_schema_violation_names_the_path(checker: OutputChecker) -> None:
    check = checker.check('{"objects": [{"name": "cat", "count": 2}, '
                          '{"name": "dog", "count": "two"}]}', "stop")
    assert check.outcome is ParseOutcome.SCHEMA_VIOLATION
    assert check.detail is not None
    assert check.detail.startswith("objects/1/count: ")
    assert "'two'" in check.detail
    assert not check.parsed_ok


def test_schema_violation_at_root(checker: OutputChecker) -> None:
    check = checker.check('{"things": []}', "stop")
    assert check.outcome is ParseOutcome.SCHEMA_VIOLATION
    assert check.detail == "(root): 'objects' is a required property"


def test_wrong_top_level_type_is_a_violation_not_invalid_json(checker: OutputChecker) -> None:
    assert checker.check("[1, 2]", "stop").outcome is ParseOutcome.SCHEMA_VIOLATION


def test_truncated_when_token_limit_cut_it_off(checker: OutputChecker) -> None:
    check = checker.check('{"objects": [{"name": "ca', "length")
    assert check.outcome is ParseOutcome.TRUNCATED
    assert check.detail is not None
    assert "token limit" in check.detail


def test_unparseable_without_length_is_invalid_not_truncated(checker: OutputChecker) -> None:
    assert checker.check('{"objects": [{"name": "ca', "stop").outcome is ParseOutcome.INVALID_JSON
    assert checker.check('{"objects": [{"name": "ca', None).outcome is ParseOutcome.INVALID_JSON


def test_complete_json_at_the_token_limit_is_judged_on_content(checker: OutputChecker) -> None:
    assert checker.check('{"objects": []}', "length").outcome is ParseOutcome.VALID
    assert checker.check("{}", "length").outcome is ParseOutcome.SCHEMA_VIOLATION


def test_not_checked_for_free_text() -> None:
    checker = OutputChecker(expects_json=False, schema=None, source="caption")
    assert not checker.expects_json
    check = checker.check("not json at all {", "length")
    assert check.outcome is ParseOutcome.NOT_CHECKED
    assert not check.parsed_ok


def test_json_without_schema_only_needs_to_parse() -> None:
    checker = OutputChecker(expects_json=True, schema=None, source="json-object")
    assert checker.check('"just a string"', "stop").outcome is ParseOutcome.VALID
    assert checker.check("{bad", "stop").outcome is ParseOutcome.INVALID_JSON


def test_a_schema_implies_json() -> None:
    checker = OutputChecker(expects_json=False, schema={"type": "object"}, source="s")
    assert checker.expects_json
    assert checker.check("[]", "stop").outcome is ParseOutcome.SCHEMA_VIOLATION


@pytest.mark.parametrize(
    "schema", [{"type": "nonsense"}, {"required": "objects"}, {"minItems": -1}]
)
def test_bad_schema_names_its_source(schema: dict[str, Any]) -> None:
    with pytest.raises(ConstraintError, match=r"fixtures/schemas/bad\.json: invalid JSON schema"):
        OutputChecker(expects_json=True, schema=schema, source="fixtures/schemas/bad.json")


def test_outcome_values_match_the_record_schema() -> None:
    enum = results.schema()["$defs"]["record"]["properties"]["parse"]["enum"]
    assert sorted(enum) == sorted(o.value for o in ParseOutcome)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(value=json_values, finish=st.sampled_from(["stop", "length", None]))
def test_any_json_is_valid_without_schema(value: Any, finish: str | None) -> None:
    checker = OutputChecker(expects_json=True, schema=None, source="s")
    assert checker.check(json.dumps(value), finish).outcome is ParseOutcome.VALID


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=30), finish=st.sampled_from(["stop", "length", None]))
def test_classification_is_consistent_with_json_loads(text: str, finish: str | None) -> None:
    checker = OutputChecker(expects_json=True, schema=None, source="s")
    outcome = checker.check(text, finish).outcome
    try:
        json.loads(text)
    except json.JSONDecodeError:
        expected = ParseOutcome.TRUNCATED if finish == "length" else ParseOutcome.INVALID_JSON
    else:
        expected = ParseOutcome.VALID
    assert outcome is expected
