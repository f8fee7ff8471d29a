"""Structured-output checking: is a completion valid JSON, and does it obey the schema?

Outcomes are distinguished because they have different causes: `truncated` means the
token budget ran out (raise max_tokens), `invalid_json` means the model or grammar
produced something unparseable, `schema_violation` means well-formed JSON of the wrong
shape. The validator is compiled once per task, never per request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from pytest_vlmbench.errors import UserInputError


class ParseOutcome(StrEnum):
    VALID = "valid"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    TRUNCATED = "truncated"
    NOT_CHECKED = "not_checked"  # the task expects free text
    NO_OUTPUT = "no_output"  # the request failed before producing output


class ConstraintError(UserInputError):
    """A JSON schema or grammar that cannot be used; the message names its source."""


@dataclass(frozen=True)
class OutputCheck:
    outcome: ParseOutcome
    detail: str | None = None  # first schema error or JSON error, for the record

    @property
    def parsed_ok(self) -> bool:
        return self.outcome is ParseOutcome.VALID


class OutputChecker:
    """Checks completions of one task; build once, call per request."""

    def __init__(self, *, expects_json: bool, schema: Mapping[str, Any] | None, source: str):
        self.expects_json = expects_json or schema is not None
        self._validator: Draft202012Validator | None = None
        if schema is not None:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ConstraintError(f"{source}: invalid JSON schema: {exc.message}") from None
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
