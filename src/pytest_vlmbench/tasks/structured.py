"""Structured-output checking: is a completion valid JSON, and does it obey the schema?

Outcomes are distinguished because they have different causes: `truncated` means the
token budget ran out (raise max_tokens), `invalid_json` means the model or grammar
produced something unparseable, `schema_violation` means well-formed JSON of the wrong
shape. The validator is compiled once per task, never per request.

A schema no output can satisfy (``minimum 10`` with ``maximum 1``, an empty enum, a
required property whose schema is ``false``...) is refused when the checker is built,
before the first request, with one line naming where the contradiction is: otherwise
every request would be spent on a parse rate of 0 (or on a grammar llama.cpp cannot
build).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

from pytest_vlmbench.errors import UsageMistake, UserInputError


class ParseOutcome(StrEnum):
    VALID = "valid"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    TRUNCATED = "truncated"
    NOT_CHECKED = "not_checked"  # the task expects free text
    NO_OUTPUT = "no_output"  # the request failed before producing output
    # A server answered 200 with text its constraint could not have produced (it ended
    # on its own, not truncated): the server ignored the constraint it was sent.
    CONSTRAINT_IGNORED = "constraint_ignored"


class ConstraintError(UserInputError):
    """A JSON schema or grammar that cannot be used; the message names its source."""


class BadSchema(ConstraintError, UsageMistake):
    """A task's schema that is invalid or that no output can satisfy: known before the
    first request, so a usage error (exit 4) as well as a one-line test failure."""


@dataclass(frozen=True)
class OutputCheck:
    outcome: ParseOutcome
    detail: str | None = None  # first schema error or JSON error, for the record

    @property
    def parsed_ok(self) -> bool:
        return self.outcome is ParseOutcome.VALID


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why a task's schema cannot be used: invalid per its metaschema, or provably never
    satisfied (see `unsatisfiable`); None when it can."""
    from jsonschema import Draft202012Validator  # 80 ms: not at plugin start-up
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"invalid JSON schema: {exc.message}"
    try:
        reason = unsatisfiable(schema)
    except (TypeError, ValueError, RecursionError):  # a shape the prover does not follow
        return None
    return None if reason is None else f"schema can never be satisfied: {reason}"


class OutputChecker:
    """Checks completions of one task; build once, call per request."""

    def __init__(self, *, expects_json: bool, schema: Mapping[str, Any] | None, source: str):
        self.expects_json = expects_json or schema is not None
        self._validator: Draft202012Validator | None = None
        if schema is not None:
            problem = schema_problem(schema)
            if problem is not None:
                raise BadSchema(f"{source}: {problem}")
            from jsonschema import Draft202012Validator

            self._validator = Draft202012Validator(schema)

    def check(self, text: str, finish_reason: str | None) -> OutputCheck:
        if not self.expects_json:
            return OutputCheck(ParseOutcome.NOT_CHECKED)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if finish_reason == "length":
                return OutputCheck(ParseOutcome.TRUNCATED, f"token limit reached: {exc.msg}")
            return OutputCheck(ParseOutcome.INVALID_JSON, f"{exc.msg} at char {exc.pos}")
        if self._validator is not None:
            error = next(iter(self._validator.iter_errors(value)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                return OutputCheck(ParseOutcome.SCHEMA_VIOLATION, f"{where}: {error.message}")
        return OutputCheck(ParseOutcome.VALID)


# --- schemas no output can satisfy -------------------------------------------------------

_ALL_TYPES = frozenset({"null", "boolean", "number", "integer", "string", "array", "object"})
_MAX_DEPTH = 64  # deeper than any hand-written schema; guards $ref cycles with the seen set


def _num(value: object) -> TypeGuard[int | float]:
    """A finite JSON number (bools are not numbers in JSON Schema)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _fmt(value: object) -> str:
    return json.dumps(value) if isinstance(value, (str, list, dict)) else str(value)


def _at(path: str, reason: str) -> str:
    return f"{path}: {reason}" if path else reason


class _Unsatisfiable:
    """Cheap, sound checks for a schema that no JSON value can satisfy.

    Sound means: it never calls a satisfiable schema unsatisfiable (it says nothing
    when unsure: multipleOf, patterns, formats, if/then/else with a satisfiable
    branch, unevaluated*). It catches the contradictions people write: bounds the
    wrong way round, an empty enum, a const or enum that contradicts the type, a
    required property that cannot be present, `false` where a value is required,
    an anyOf whose every branch is impossible.
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        # Under a nested $id, "#/..." means that resource, not the root: follow no $ref
        # and validate no enum there rather than risk reading the wrong target.
        self.nested_ids = _has_nested_id(root)
        from jsonschema import Draft202012Validator

        try:
            self.validator: Draft202012Validator | None = Draft202012Validator(root)
        except Exception:  # a checker that cannot be built proves nothing
            self.validator = None

    def reason(self, schema: Any, path: str = "", depth: int = 0,
               seen: frozenset[str] = frozenset()) -> str | None:
        """Why ``schema`` (at ``path``) can never be satisfied, or None if it may be."""
        if schema is False:
            return _at(path, "the schema is false")
        if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref not in seen and not self.nested_ids:
            target = self._local(ref)
            if target is not None:
                where = f"{path} -> {ref}" if path else ref
                found = self.reason(target, where, depth + 1, seen | {ref})
                if found is not None:
                    return found
        for check in (self._types, self._finite, self._combinators):
            found = check(schema, path, depth, seen)
            if found is not None:
                return found
        return None

    def _local(self, ref: str) -> Any:
        """The target of a local ``#/...`` reference, or None (remote refs: unknown)."""
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            return None
        node: Any = self.root
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def _allowed_types(self, schema: Mapping[str, Any]) -> tuple[set[str], str | None]:
        """The types an instance may have (its own `type` and its allOf branches')."""
        allowed = set(_ALL_TYPES)
        for node in [schema, *[b for b in _branches(schema, "allOf") if isinstance(b, Mapping)]]:
            declared = node.get("type")
            if not isinstance(declared, (str, list)):
                continue  # absent (or malformed: check_schema's business)
            names = {declared} if isinstance(declared, str) else {str(t) for t in declared}
            if not names:
                return set(), "type is an empty list"
            if "number" in names:
                names.add("integer")  # every integer is a number
            allowed &= names
        if not allowed:
            return allowed, "the types required (type and allOf) have nothing in common"
        return allowed, None

    def _types(self, schema: Mapping[str, Any], path: str, depth: int,
               seen: frozenset[str]) -> str | None:
        allowed, problem = self._allowed_types(schema)
        if problem is not None:
            return _at(path, problem)
        why: list[str] = []
        for kind in ("null", "boolean", "number", "integer", "string", "array", "object"):
            if kind not in allowed:
                continue
            if kind == "number" or (kind == "integer" and "number" not in allowed):
                found = self._numbers(schema, integer=kind == "integer")
            elif kind == "string":
                found = _pair(schema, "minLength", "maxLength")
            elif kind == "array":  # a reason is never empty: `or` tries the next check
                found = (_pair(schema, "minItems", "maxItems")
                         or self._array(schema, path, depth, seen))
            elif kind == "object":
                found = (_pair(schema, "minProperties", "maxProperties")
                         or self._object(schema, path, depth, seen))
            elif kind == "integer":
                continue  # covered by "number"
            else:
                return None  # null and boolean: nothing above constrains them
            if found is None:
                return None
            why.append(found)
        if not why:
            return None
        return _at(path, why[0] if len(why) == 1 else "no type can match: " + "; ".join(why))

    @staticmethod
    def _numbers(schema: Mapping[str, Any], *, integer: bool) -> str | None:
        """Do the bounds leave any number (any integer) in between?"""
        low = [(schema[k], k, k == "exclusiveMinimum") for k in ("minimum", "exclusiveMinimum")
               if _num(schema.get(k))]
        high = [(schema[k], k, k == "exclusiveMaximum")
                for k in ("maximum", "exclusiveMaximum") if _num(schema.get(k))]
        if not low or not high:
            return None
        # The tightest bound; at a tie the exclusive one is tighter.
        lo = max(low, key=lambda b: (b[0], b[2]))
        hi = min(high, key=lambda b: (b[0], not b[2]))
        (lo_v, lo_k, lo_x), (hi_v, hi_k, hi_x) = lo, hi
        if lo_v > hi_v or (lo_v == hi_v and (lo_x or hi_x)):
            op = ">" if lo_v > hi_v else ">="
            return f"{lo_k} {_fmt(lo_v)} {op} {hi_k} {_fmt(hi_v)}"
        if integer:
            first = math.floor(lo_v) + 1 if lo_x else math.ceil(lo_v)
            last = math.ceil(hi_v) - 1 if hi_x else math.floor(hi_v)
            if first > last:
                return (f"type integer, but no integer lies between {lo_k} {_fmt(lo_v)} and "
                        f"{hi_k} {_fmt(hi_v)}")
        return None

    def _array(self, schema: Mapping[str, Any], path: str, depth: int,
               seen: frozenset[str]) -> str | None:
        """What minItems requires of prefixItems, items and contains."""
        min_items = int(schema.get("minItems", 0)) if _num(schema.get("minItems")) else 0
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        for index, item in enumerate(prefix[:min_items]):
            found = self.reason(item, _join(path, f"prefixItems[{index}]"), depth + 1, seen)
            if found is not None:
                return f"{found} (minItems {min_items} requires it)"
        if min_items > len(prefix) and "items" in schema:
            found = self.reason(schema["items"], _join(path, "items"), depth + 1, seen)
            if found is not None:
                return f"{found} (minItems {min_items} requires an item)"
        if "contains" in schema:
            min_contains = schema.get("minContains", 1)
            if _num(min_contains) and min_contains >= 1:
                found = self.reason(schema["contains"], _join(path, "contains"), depth + 1,
                                    seen)
                if found is not None:
                    return found
            found = _pair(schema, "minContains", "maxContains")
            if found is not None:
                return found
        return None

    def _object(self, schema: Mapping[str, Any], path: str, depth: int,
                seen: frozenset[str]) -> str | None:
        """What the required names need of properties, patterns and propertyNames."""
        required = [r for r in schema.get("required", ()) if isinstance(r, str)]
        required = list(dict.fromkeys(required))
        most = schema.get("maxProperties")
        if _num(most) and len(required) > most:
            return f"required names {len(required)} properties > maxProperties {most}"
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        patterns = schema.get("patternProperties")
        patterns = patterns if isinstance(patterns, Mapping) else {}
        for name in required:
            where = _join(path, f"properties.{name}")
            if name in properties:
                found = self.reason(properties[name], where, depth + 1, seen)
                if found is not None:
                    return f"{found} ({name!r} is required)"
            matching = [p for p in patterns if _matches(p, name)]
            for pattern in matching:
                found = self.reason(patterns[pattern], _join(path, f"patternProperties.{pattern}"),
                                    depth + 1, seen)
                if found is not None:
                    return f"{found} (required {name!r} matches it)"
            if name in properties or matching:
                continue
            if any(_matches(p, name) is None for p in patterns):
                continue  # a pattern Python cannot read may match: say nothing
            extra = schema.get("additionalProperties", True)
            if extra is False:
                return (f"required property {name!r} is not in properties and "
                        f"additionalProperties is false")
            found = self.reason(extra, _join(path, "additionalProperties"), depth + 1, seen)
            if found is not None:
                return f"{found} (required {name!r} is not in properties)"
        if required and "propertyNames" in schema:
            found = self.reason(schema["propertyNames"], _join(path, "propertyNames"),
                                depth + 1, seen)
            if found is not None:
                return f"{found} ({required[0]!r} is required)"
        return None

    def _finite(self, schema: Mapping[str, Any], path: str, depth: int,
                seen: frozenset[str]) -> str | None:
        """const and enum list every value allowed: is any of them valid here?"""
        if "enum" in schema and isinstance(schema["enum"], list) and not schema["enum"]:
            return _at(path, "enum is empty")
        candidates: list[Any]
        if "const" in schema:
            candidates, what = [schema["const"]], f"const {_fmt(schema['const'])}"
        elif isinstance(schema.get("enum"), list):
            candidates, what = list(schema["enum"]), "every enum value"
        else:
            return None
        if self.validator is None or (self.nested_ids and schema is not self.root):
            return None
        first: str | None = None
        here = self.validator.evolve(schema=schema)  # $refs still resolve against the root
        for value in candidates:
            try:
                error = next(iter(here.iter_errors(value)), None)
            except Exception:  # an unresolvable $ref, say: unknown
                return None
            if error is None:
                return None
            first = first or error.message
        return _at(path, f"{what} fails the schema's other keywords ({first})")

    def _combinators(self, schema: Mapping[str, Any], path: str, depth: int,
                     seen: frozenset[str]) -> str | None:
        for index, branch in enumerate(_branches(schema, "allOf")):
            found = self.reason(branch, _join(path, f"allOf[{index}]"), depth + 1, seen)
            if found is not None:
                return found
        for key in ("anyOf", "oneOf"):
            branches = _branches(schema, key)
            if not branches:
                continue
            reasons = [self.reason(b, _join(path, f"{key}[{i}]"), depth + 1, seen)
                       for i, b in enumerate(branches)]
            if all(r is not None for r in reasons):
                return _at(path, f"no {key} branch can be satisfied (first: {reasons[0]})")
        negated = schema.get("not")
        if negated is True or (isinstance(negated, Mapping) and not negated):
            return _at(path, "not: {} rejects every value")
        if "if" in schema and "then" in schema and "else" in schema:
            then = self.reason(schema["then"], _join(path, "then"), depth + 1, seen)
            other = self.reason(schema["else"], _join(path, "else"), depth + 1, seen)
            if then is not None and other is not None:
                return _at(path, f"neither then nor else can be satisfied ({then})")
        return None


def _has_nested_id(node: Any, root: bool = True) -> bool:
    """Whether any subschema below the root declares its own ``$id``."""
    if isinstance(node, Mapping):
        if not root and "$id" in node:
            return True
        return any(_has_nested_id(value, False) for value in node.values())
    if isinstance(node, list):
        return any(_has_nested_id(value, False) for value in node)
    return False


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _branches(schema: Mapping[str, Any], key: str) -> list[Any]:
    value = schema.get(key)
    return list(value) if isinstance(value, list) else []


def _pair(schema: Mapping[str, Any], low: str, high: str) -> str | None:
    """"minX 3 > maxX 1" when both are given the wrong way round."""
    lo, hi = schema.get(low), schema.get(high)
    if _num(lo) and _num(hi) and lo > hi:
        return f"{low} {lo} > {high} {hi}"
    return None


def _matches(pattern: str, name: str) -> bool | None:
    """Whether a patternProperties regex matches ``name``; None when Python cannot read it
    (JSON Schema regexes are ECMA-262: unsure is "may match")."""
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return None


def unsatisfiable(schema: Any) -> str | None:
    """Why no JSON value can ever satisfy ``schema``, in one line with the path to the
    contradiction (``properties.score: minimum 10 > maximum 1``); None when it may be
    satisfiable. Sound, not complete: see `_Unsatisfiable`."""
    return _Unsatisfiable(schema).reason(schema)
