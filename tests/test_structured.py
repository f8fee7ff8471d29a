"""Tests for structured.py: how a completion is classified against a JSON schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.results import document as results
from pytest_vlmbench.tasks.structured import ConstraintError, OutputChecker, ParseOutcome

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


# --- schemas no output can satisfy: refused before the first request ---------------------


def _schema_for(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """A schema that `value` satisfies, as tight as possible (bounds equal to the value),
    dressed at random in the keywords the unsatisfiability check looks into."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([True, {}, {"const": value}, {"enum": [value, "x", 0]}]))
    if value is None:
        schema: dict[str, Any] = {"type": draw(st.sampled_from(["null", ["null", "string"]]))}
    elif isinstance(value, bool):
        schema = {"type": "boolean"}
    elif isinstance(value, int):
        schema = draw(st.sampled_from([
            {"type": "integer", "minimum": value, "maximum": value},
            {"type": "integer", "exclusiveMinimum": value - 1, "exclusiveMaximum": value + 1},
            {"type": "number", "minimum": value, "exclusiveMaximum": value + 1},
            {"type": ["integer", "string"], "maximum": value, "minLength": 3, "maxLength": 1},
        ]))
    elif isinstance(value, float):
        schema = {"type": "number", "minimum": value, "maximum": value}
    elif isinstance(value, str):
        schema = {"type": "string", "minLength": len(value), "maxLength": len(value)}
    elif isinstance(value, list):
        parts = [_schema_for(draw, item, depth + 1) for item in value]
        schema = {"type": "array", "minItems": len(value), "maxItems": len(value)}
        if value:  # the metaschema wants prefixItems non-empty
            schema.update(prefixItems=parts, items=False, contains=parts[0])
    else:
        schema = {
            "type": "object",
            "properties": {k: _schema_for(draw, v, depth + 1) for k, v in value.items()},
            "required": list(value), "additionalProperties": False,
            "minProperties": len(value), "maxProperties": len(value),
        }
    wrap = draw(st.integers(0, 5))
    if wrap == 1:
        return {"allOf": [schema, {"type": schema.get("type", "null")}]}
    if wrap == 2:
        return {"anyOf": [{"type": "string", "minLength": 2, "maxLength": 1}, schema]}
    if wrap == 3:
        return {"oneOf": [schema, False]}
    if wrap == 4 and depth == 0:
        return {"$defs": {"it": schema}, "$ref": "#/$defs/it"}
    return schema


@st.composite
def value_and_schema(draw: st.DrawFn) -> tuple[Any, Any]:
    value = draw(json_values.filter(lambda v: v == v))  # NaN equals nothing
    return value, _schema_for(draw, value)


@settings(max_examples=300, deadline=None)
@given(value_and_schema())
def test_a_schema_some_value_satisfies_is_never_flagged(case: tuple[Any, Any]) -> None:
    from jsonschema import Draft202012Validator

    from pytest_vlmbench.tasks.structured import unsatisfiable

    value, schema = case
    Draft202012Validator.check_schema(schema)
    assert Draft202012Validator(schema).is_valid(value)  # the generator's own promise
    assert unsatisfiable(schema) is None
    OutputChecker(expects_json=True, schema=schema, source="s")  # and it is accepted


CONTRADICTIONS: list[tuple[Any, str]] = [
    ({"type": "integer", "minimum": 10, "maximum": 1}, "minimum 10 > maximum 1"),
    ({"type": "number", "exclusiveMinimum": 2, "exclusiveMaximum": 2},
     "exclusiveMinimum 2 >= exclusiveMaximum 2"),
    ({"type": "number", "minimum": 3, "exclusiveMaximum": 3}, "minimum 3 >= exclusiveMaximum 3"),
    ({"type": "integer", "minimum": 0.2, "maximum": 0.8}, "no integer lies between"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength 5 > maxLength 2"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems 3 > maxItems 1"),
    ({"type": "object", "minProperties": 2, "maxProperties": 1},
     "minProperties 2 > maxProperties 1"),
    ({"type": "object", "required": ["a", "b"], "maxProperties": 1},
     "required names 2 properties > maxProperties 1"),
    ({"enum": []}, "enum is empty"),
    ({"type": "integer", "const": "ten"}, "const \"ten\" fails"),
    ({"type": "string", "enum": [1, 2]}, "every enum value fails"),
    ({"type": []}, "type is an empty list"),
    (False, "the schema is false"),
    ({"not": {}}, "rejects every value"),
    ({"allOf": [{"type": "string"}, {"type": "boolean"}]}, "nothing in common"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"],
      "additionalProperties": False},
     "required property 'b' is not in properties and additionalProperties is false"),
    ({"type": "object", "properties": {"a": False}, "required": ["a"]},
     "properties.a: the schema is false ('a' is required)"),
    ({"type": "array", "minItems": 1, "items": {"enum": []}}, "items: enum is empty"),
    ({"anyOf": [{"enum": []}, {"type": "string", "minLength": 2, "maxLength": 1}]},
     "no anyOf branch can be satisfied (first: anyOf[0]: enum is empty)"),
    ({"$defs": {"score": {"type": "integer", "minimum": 5, "maximum": 4}},
      "type": "object", "properties": {"s": {"$ref": "#/$defs/score"}}, "required": ["s"]},
     "properties.s -> #/$defs/score: minimum 5 > maximum 4"),
]


@pytest.mark.parametrize(("schema", "reason"), CONTRADICTIONS,
                         ids=[r for _, r in CONTRADICTIONS])
def test_each_contradiction_is_named(schema: Any, reason: str) -> None:
    from pytest_vlmbench.tasks.structured import unsatisfiable

    found = unsatisfiable(schema)
    assert found is not None
    assert reason in found


# Embeddable anywhere: no root-relative $ref.
MOVABLE = [(schema, reason) for schema, reason in CONTRADICTIONS if "$defs" not in str(schema)]


@settings(max_examples=200, deadline=None)
@given(value_and_schema(), st.sampled_from(MOVABLE), st.integers(0, 3))
def test_a_contradiction_where_a_value_is_required_is_always_caught(
    case: tuple[Any, Any], contradiction: tuple[Any, str], where: int
) -> None:
    """Wherever a contradiction must hold (alongside, in a required property, in the
    items of a non-empty array, in every anyOf branch), the schema is refused; where it
    need not (an optional property, one anyOf branch of two), it is not."""
    from pytest_vlmbench.tasks.structured import unsatisfiable

    _, fine = case
    bad, _ = contradiction
    required: Any = [
        {"allOf": [fine, bad]},
        {"type": "object", "properties": {"p": bad, "q": fine}, "required": ["p"]},
        {"type": "array", "minItems": 1, "items": bad},
        {"anyOf": [bad, {"allOf": [bad, fine]}]},
    ][where]
    optional: Any = [
        {"anyOf": [bad, fine]},
        {"type": "object", "properties": {"p": bad, "q": fine}},
        {"type": "array", "items": bad},
        {"oneOf": [fine, bad]},
    ][where]
    assert unsatisfiable(required) is not None
    assert unsatisfiable(optional) is None


schema_parts = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["integer", "number", "string", "array", "object", "null",
                             ["integer", "string"]]),
    "minimum": st.integers(-3, 3), "maximum": st.integers(-3, 3),
    "exclusiveMinimum": st.integers(-3, 3), "exclusiveMaximum": st.integers(-3, 3),
    "minLength": st.integers(0, 3), "maxLength": st.integers(0, 3),
    "minItems": st.integers(0, 2), "maxItems": st.integers(0, 2),
    "minProperties": st.integers(0, 2), "maxProperties": st.integers(0, 2),
    "enum": st.lists(st.sampled_from([None, 0, 1, 2.5, "a", "ab", [], {}]), max_size=3),
    "required": st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True),
    "additionalProperties": st.booleans(),
})
random_schemas = st.recursive(
    schema_parts,
    lambda inner: st.one_of(
        st.builds(lambda s, p: {**s, "properties": {"a": p}}, schema_parts, inner),
        st.builds(lambda s, i: {**s, "items": i}, schema_parts, inner),
        st.builds(lambda b: {"anyOf": b}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda b: {"allOf": b}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=4,
)
small_values = st.recursive(
    st.none() | st.booleans() | st.integers(-4, 4) | st.sampled_from([0.5, -2.5, "", "a",
                                                                     "ab", "abc"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(random_schemas, st.lists(small_values, min_size=1, max_size=30))
def test_a_flagged_schema_rejects_every_value_tried(schema: Any, values: list[Any]) -> None:
    """Soundness on random schemas: when any value validates, the schema is not flagged."""
    from jsonschema import Draft202012Validator

    from pytest_vlmbench.tasks.structured import unsatisfiable

    validator = Draft202012Validator(schema)
    if any(validator.is_valid(v) for v in values):
        assert unsatisfiable(schema) is None, schema


def test_an_unsatisfiable_task_schema_fails_in_one_line_naming_the_path() -> None:
    from copy import deepcopy

    from pytest_vlmbench.tasks import PHOTO_SCORE_SCHEMA

    schema = deepcopy(PHOTO_SCORE_SCHEMA)
    schema["properties"]["instagram"] = {"type": "integer", "minimum": 10, "maximum": 1}
    with pytest.raises(ConstraintError) as caught:
        OutputChecker(expects_json=True, schema=schema, source="task 'photo_score'")
    assert str(caught.value) == (
        "task 'photo_score': schema can never be satisfied: properties.instagram: minimum "
        "10 > maximum 1 ('instagram' is required)")
    assert "\n" not in str(caught.value)
    OutputChecker(expects_json=True, schema=PHOTO_SCORE_SCHEMA, source="task 'photo_score'")
