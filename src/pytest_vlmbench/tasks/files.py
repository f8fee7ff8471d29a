"""Task files: a task written as TOML, the form the built-in tasks ship in
(``tasks/data/``) and the one a user copies and edits.

```toml
name = "my_task"              # optional: the file's name without .toml
system = "You answer with JSON only."
prompt = "How many circles are there?"      # the only required key
scorers = ["counts"]          # optional: scorer names (see pytest_vlmbench.scoring)
text_field = "caption"        # optional: the JSON field the `text` scorer reads
expects_json = true           # optional: parse the output as JSON (a schema implies it)
text_template = "Picture: {description}\\n\\n{prompt}"   # optional: text-only models
grammar_file = "my_task.gbnf" # optional: GBNF, relative to this file's folder
schema_file = "my_task.json"  # optional: a JSON schema file, or an inline [schema] table

[params]                      # optional: GenerationParams fields
max_tokens = 96

[schema]                      # optional: the JSON schema, written as TOML tables
type = "object"
```

Everything in the file that shapes or judges the output enters the task's prompt
version (the grammar's and schema file's text, not their paths), so moving the folder
keeps the version and changing any of it makes a new one. Every mistake is a `TaskError`
of one line naming the file and the key: an unknown key (a typo such as ``promt`` would
otherwise be silently ignored), a wrong type, a missing prompt, TOML that does not parse
(with its line), a grammar or schema file that is not there.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from pytest_vlmbench.tasks import (
    _PARAM_NAMES,
    DEFAULT_TEXT_TEMPLATE,
    GenerationParams,
    Task,
    TaskError,
)

_STRING_KEYS = ("name", "system", "prompt", "text_template", "text_field", "grammar_file",
                "schema_file")
_KEYS = (*_STRING_KEYS, "scorers", "expects_json", "params", "schema")


def _unknown(keys: list[str], known: tuple[str, ...]) -> str:
    """"unknown key 'promt' (did you mean 'prompt'?); known: ...": a typo would otherwise
    be ignored and the task run without what it meant to say."""
    import difflib

    named = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1)
        named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return (f"unknown key{'s' if len(keys) > 1 else ''} {', '.join(named)}; known: "
            f"{', '.join(known)}")


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _read_toml(path: Path) -> dict[str, Any]:
    where = f"task file {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TaskError(f"{where}: not found (looked in {path.resolve()})") from None
    except OSError as exc:
        raise TaskError(f"{where}: cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message ends "(at line 3, column 9)": the line is the useful part.
        raise TaskError(f"{where}: not valid TOML: {exc}") from None


def _beside(path: Path, key: str, value: str) -> Path:
    """`value` (a path in the file) resolved against the file's folder; must be a file."""
    target = path.resolve().parent / value
    if not target.is_file():
        raise TaskError(f"task file {path}: {key}: {value!r} not found (looked in {target})")
    return target


def _schema(path: Path, data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    where = f"task file {path}"
    if "schema" in data and "schema_file" in data:
        raise TaskError(f"{where}: schema_file: give the schema as a [schema] table or as "
                        f"schema_file, not both")
    if "schema" in data:
        schema = data["schema"]
        if not isinstance(schema, dict):
            raise TaskError(f"{where}: schema: must be a table (the JSON schema), got "
                            f"{_type_name(schema)}")
        return schema
    if "schema_file" not in data:
        return None
    target = _beside(path, "schema_file", data["schema_file"])
    try:
        loaded = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"{where}: schema_file: {target} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TaskError(f"{where}: schema_file: {target} is not valid JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise TaskError(f"{where}: schema_file: {target} must hold a JSON object (the "
                        f"schema), got {type(loaded).__name__}")
    return loaded


def _params(path: Path, data: Mapping[str, Any]) -> GenerationParams:
    where = f"task file {path}"
    table = data.get("params", {})
    if not isinstance(table, dict):
        raise TaskError(f"{where}: params: must be a table ([params]), got "
                        f"{_type_name(table)}")
    unknown = [k for k in table if k not in _PARAM_NAMES]
    if unknown:
        raise TaskError(f"{where}: params: {_unknown(unknown, _PARAM_NAMES)}")
    values = dict(table)
    if isinstance(values.get("stop"), list):
        values["stop"] = tuple(values["stop"])
    try:
        return GenerationParams(**values)
    except TaskError as exc:
        raise TaskError(f"{where}: params.{exc.field_name}: {exc.field_name} {exc.why}",
                        field_name=exc.field_name, why=exc.why) from None


def load_task(path: str | PathLike[str]) -> Task:
    """The task a TOML task file describes (see the module docstring for its keys).

    Raises `TaskError`, one line naming the file and the key, for any mistake in it.
    """
    path = Path(path)
    where = f"task file {path}"
    data = _read_toml(path)
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise TaskError(f"{where}: {_unknown(unknown, _KEYS)}")
    for key in _STRING_KEYS:
        if key in data and not isinstance(data[key], str):
            raise TaskError(f"{where}: {key}: must be a string, got {_type_name(data[key])} "
                            f"{data[key]!r:.40}")
    if "prompt" not in data:
        raise TaskError(f"{where}: prompt: missing; the model needs a question to answer")
    scorers = data.get("scorers", [])
    if not isinstance(scorers, list) or not all(isinstance(s, str) for s in scorers):
        raise TaskError(f"{where}: scorers: must be an array of scorer names such as "
                        f"[\"counts\"], got {scorers!r:.60}")
    expects_json = data.get("expects_json", False)
    if not isinstance(expects_json, bool):
        raise TaskError(f"{where}: expects_json: must be true or false, got "
                        f"{_type_name(expects_json)} {expects_json!r}")
    schema = _schema(path, data)
    params = _params(path, data)
    grammar: Path | None = None
    if "grammar_file" in data:
        grammar = _beside(path, "grammar_file", data["grammar_file"])
        try:
            empty = not grammar.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TaskError(f"{where}: grammar_file: {grammar} cannot be read: "
                            f"{exc}") from None
        if empty:
            raise TaskError(f"{where}: grammar_file: {grammar} is empty")
    text_field = data.get("text_field") or None  # "" reads as unset: the whole output
    try:
        return Task(
            name=data.get("name", path.stem),
            prompt=data["prompt"],
            system=data.get("system", ""),
            schema=schema,
            grammar_file=grammar,
            expects_json=expects_json,
            params=params,
            text_template=data.get("text_template", DEFAULT_TEXT_TEMPLATE),
            scorers=tuple(scorers),
            text_field=text_field,
        )
    except TaskError as exc:
        raise TaskError(f"{where}: {exc}", field_name=exc.field_name, why=exc.why) from None
