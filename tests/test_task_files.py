"""Tasks as TOML files: the shipped suite, a user's own file, and every mistake in one.

The shipped files (src/pytest_vlmbench/tasks/data/) load, their schemas can be met and
a valid answer always fits max_tokens, their enums are the synthetic palette; the
prompt version follows every field of a file and not its place; a bad file is one line
naming the file and the key; and a user's file runs end to end with `vlm_bench.run`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.datasets import synthetic
from pytest_vlmbench.plugin import options
from pytest_vlmbench.tasks import (
    CAPTION_BRIEF,
    DATA_DIR,
    PHOTO_SCORE,
    GenerationParams,
    Task,
    TaskError,
    builtin_tasks,
)
from pytest_vlmbench.tasks.files import load_task
from pytest_vlmbench.tasks.structured import ParseOutcome
from tests.bad_input import Case, check_case
from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent
GRAMMAR = REPO / "fixtures" / "grammars" / "photo_score.gbnf"
SHIPPED = {"caption_brief", "caption_detailed", "objects_and_counts", "attributes",
           "spatial_relationships", "scene_context", "photo_score", "caption_variants",
           "scene_caption"}


# -- the shipped files ---------------------------------------------------------------------
def test_every_shipped_task_file_loads_under_its_own_name() -> None:
    tasks = builtin_tasks()
    assert set(tasks) == SHIPPED
    assert {p.stem for p in DATA_DIR.glob("*.toml")} == SHIPPED
    for name, task in tasks.items():
        assert task == load_task(DATA_DIR / f"{name}.toml")
        assert task.system, name
        assert task.scorers, name
        assert task.checks_output == (task.schema is not None), name  # JSON iff a schema
    assert builtin_tasks() is not builtin_tasks()  # the caller's dict, the same tasks
    assert builtin_tasks()["attributes"] is tasks["attributes"]


def test_the_module_names_stay_importable_and_caption_brief_asks_as_before() -> None:
    assert CAPTION_BRIEF is builtin_tasks()["caption_brief"]
    assert PHOTO_SCORE is builtin_tasks()["photo_score"]
    # What shapes caption_brief's output is what it was before tasks were files; only
    # the scorers (which judge, not shape) are new.
    before = Task(name="caption_brief", system="You write brief, factual image captions.",
                  prompt="Describe this image in one short sentence.",
                  params=GenerationParams(max_tokens=48))
    assert replace(CAPTION_BRIEF, scorers=()) == before
    assert CAPTION_BRIEF.scorers == ("mentions", "text")


def test_a_task_without_scorers_keeps_its_prompt_version() -> None:
    """Scorers and text_field enter the hash only when set: a task written before they
    existed keeps the version its baselines were saved with."""
    task = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=8))
    assert task.prompt_version(seed=0, input_mode="image") == "a3578241be305a69"
    scored = replace(task, scorers=("text",))
    assert scored.prompt_version(seed=0, input_mode="image") != "a3578241be305a69"


def _enums(schema: Any, key: str = "") -> list[tuple[str, list[Any]]]:
    """(property name, enum) for every enum in the schema."""
    found: list[tuple[str, list[Any]]] = []
    if isinstance(schema, dict):
        if "enum" in schema:
            found.append((key, schema["enum"]))
        for k, value in schema.items():
            if k == "properties":
                for name, sub in value.items():
                    found.extend(_enums(sub, name))
            elif k == "items":
                found.extend(_enums(value, key))
    return found


def test_the_shipped_enums_and_prompts_are_the_synthetic_palette() -> None:
    """The files are data, written out literally; this keeps them equal to the scenes."""
    colours, shapes = list(synthetic.COLOURS), list(synthetic.SHAPES)
    positions = list(synthetic.POSITIONS)
    expected = {"colour": colours, "background": colours, "shape": shapes,
                "position": positions}
    seen = set()
    for task in builtin_tasks().values():
        for key, enum in _enums(task.schema):
            if key in expected:
                assert enum == expected[key], (task.name, key)
                seen.add(key)
            else:  # the bounded integers: counts, totals, 1-10 scores
                assert all(isinstance(v, int) for v in enum), (task.name, key)
        if any(key in {"colour", "background"} for key, _ in _enums(task.schema)):
            assert ", ".join(colours) in task.prompt, task.name
        if any(key == "position" for key, _ in _enums(task.schema)):
            assert ", ".join(positions) in task.prompt, task.name
    assert seen == set(expected)


def _longest(schema: dict[str, Any], char: str) -> Any:
    """The longest valid value of the shipped schemas' forms (strings of `char`)."""
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v)))
    kind = schema["type"]
    if kind == "object":
        return {k: _longest(v, char) for k, v in schema["properties"].items()}
    if kind == "array":
        return [_longest(schema["items"], char)] * schema["maxItems"]
    if kind == "string":
        return char * schema["maxLength"]
    assert kind == "boolean", schema
    return False


@pytest.mark.parametrize("name", sorted(n for n, t in builtin_tasks().items() if t.schema))
def test_the_longest_valid_answer_is_valid_and_never_cut(name: str) -> None:
    """Every token is at least one byte: max_tokens covers the longest valid answer in
    UTF-8 (four-byte characters) and pretty-printed ASCII, so a valid answer is never
    truncated and a parse failure is the model's, not the budget's."""
    task = builtin_tasks()[name]
    assert task.schema is not None
    checker = task.checker()
    for char in ("x", "\U0001f600"):
        answer = _longest(dict(task.schema), char)
        compact = json.dumps(answer, ensure_ascii=False)
        for text in (compact, json.dumps(answer, indent=2, ensure_ascii=False)):
            assert checker.check(text, "stop").outcome is ParseOutcome.VALID, text
            assert len(text.encode()) <= task.params.max_tokens, (name, len(text.encode()))


VALID = {
    "objects_and_counts": {"counts": {"circle": 2, "square": 0, "triangle": 1}, "total": 3},
    "attributes": {"objects": [{"shape": "circle", "colour": "red"},
                               {"shape": "triangle", "colour": "white"}]},
    "spatial_relationships": {"objects": [{"shape": "square", "colour": "blue",
                                           "position": "top-left"}]},
    "scene_context": {"background": "yellow", "gradient": True, "total": 4},
    "photo_score": {"instagram": 7, "aesthetic": 6, "caption": "Boats at dusk in a quiet "
                    "harbour", "tags": ["sunset", "harbour", "boats"]},
    "caption_variants": ["A red circle on blue.", "Blue ground, one red circle.",
                         "One red disc sits on a blue background."],
}
INVALID = [
    ("objects_and_counts", {"counts": {"circle": 10, "square": 0, "triangle": 0},
                            "total": 10}),
    ("objects_and_counts", {"counts": {"circle": 1, "square": 0}, "total": 1}),
    ("attributes", {"objects": [{"shape": "oval", "colour": "red"}]}),
    ("attributes", {"objects": [{"shape": "circle", "colour": "pink"}]}),
    ("attributes", {"objects": [{"shape": "circle", "colour": "red"}] * 10}),
    ("spatial_relationships", {"objects": [{"shape": "circle", "colour": "red",
                                            "position": "top left"}]}),
    ("scene_context", {"background": "blue", "gradient": "no", "total": 1}),
    ("photo_score", {"score": 7, "caption": "x", "tags": []}),  # the old schema
    ("photo_score", {"instagram": 11, "aesthetic": 6, "caption": "x", "tags": []}),
    ("photo_score", {"instagram": 7, "aesthetic": 6, "caption": "two\nlines", "tags": []}),
    ("photo_score", {"instagram": 7, "aesthetic": 6, "caption": "x" * 49, "tags": []}),
    ("photo_score", {"instagram": 7, "aesthetic": 6, "caption": "x", "tags": ["t"] * 9}),
    ("caption_variants", ["one", "two"]),
    ("caption_variants", ["one", "two", ""]),
]


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_hand_written_answer_is_valid(name: str) -> None:
    check = builtin_tasks()[name].checker().check(json.dumps(VALID[name]), "stop")
    assert check.outcome is ParseOutcome.VALID, check.detail


@pytest.mark.parametrize(("name", "answer"), INVALID, ids=[f"{n}-{i}" for i, (n, _) in
                                                             enumerate(INVALID)])
def test_a_hand_written_wrong_answer_is_a_schema_violation(name: str, answer: Any) -> None:
    check = builtin_tasks()[name].checker().check(json.dumps(answer), "stop")
    assert check.outcome is ParseOutcome.SCHEMA_VIOLATION


def test_every_shipped_constraint_compiles_and_a_constrained_run_parses(
    model_cache: Path,
) -> None:
    """With the real llama.cpp on the tiny random model, sampled hot so it wanders: each
    shipped schema (as llama.cpp's grammar) and the photo_score GBNF give answers the
    task's schema accepts, within max_tokens."""
    import llama_cpp

    from pytest_vlmbench.backends.llama_cpp.constraint import compile_constraint
    from tests.fault_proxy import tiny_weights

    llm = llama_cpp.Llama(str(tiny_weights(model_cache)), n_ctx=2048, verbose=False,
                          seed=1)
    with_grammar = replace(PHOTO_SCORE, grammar_file=GRAMMAR)
    tasks = [t for t in builtin_tasks().values() if t.schema is not None]
    for task in [*tasks, with_grammar]:
        grammar = compile_constraint(task, llm._model.vocab, None)
        checker = task.checker()
        for seed in range(3):
            out: Any = llm.create_completion(
                task.prompt, grammar=grammar, max_tokens=task.params.max_tokens,
                temperature=1.5, top_k=0, seed=seed)
            text, finish = out["choices"][0]["text"], out["choices"][0]["finish_reason"]
            check = checker.check(text, finish)
            assert check.outcome is ParseOutcome.VALID, (task.name, text, check.detail)
            assert finish == "stop", (task.name, text)


def test_the_photo_score_grammar_is_printable_ascii_and_bounded() -> None:
    """The hand-written grammar's reasoning holds for the new schema: its longest answer
    (every optional space taken, every repetition at its bound) is the 239 bytes its
    header states, under max_tokens, and what it allows the schema accepts."""
    text = GRAMMAR.read_text()
    assert text.isascii()
    tags = ", ".join(['"' + "~" * 12 + '"'] * 8)
    longest = (f'{{ "instagram": 10, "aesthetic": 10, "caption": "{"~" * 48}", '
               f'"tags": [ {tags} ] }}')
    assert len(longest) == 239
    assert "at most 239 bytes" in text
    assert PHOTO_SCORE.params.max_tokens >= 239
    check = PHOTO_SCORE.checker().check(longest, "stop")
    assert check.outcome is ParseOutcome.VALID, check.detail


# -- the prompt version follows the file's content, not its place ---------------------------
TASK_FILE = '''
name = "mine"
system = "You count."
prompt = "How many circles?"
scorers = ["counts", "text"]
text_field = "note"
expects_json = true
grammar_file = "mine.gbnf"

[params]
max_tokens = 24
stop = ["}"]

[schema]
type = "object"
required = ["circle", "note"]
properties.circle = { type = "integer" }
properties.note = { type = "string" }
'''
GBNF = 'root ::= "{\\"circle\\": " [0-9] ", \\"note\\": \\"x\\"}"\n'


def _write(folder: Path, text: str = TASK_FILE, grammar: str = GBNF) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.gbnf").write_text(grammar)
    path = folder / "mine.toml"
    path.write_text(text)
    return path


def _version(path: Path, mode: str = "image") -> str:
    return load_task(path).prompt_version(seed=0, input_mode=mode)


def test_a_task_file_reads_every_key(tmp_path: Path) -> None:
    task = load_task(_write(tmp_path / "a"))
    assert task.name == "mine"
    assert task.scorers == ("counts", "text")
    assert task.text_field == "note"
    assert task.params == GenerationParams(max_tokens=24, stop=("}",))
    assert task.grammar_file == (tmp_path / "a" / "mine.gbnf").resolve()
    assert task.schema is not None
    assert task.schema["required"] == ["circle", "note"]
    # Without a name the file's name is the task's; "" reads as no text field.
    bare = tmp_path / "b" / "counting.toml"
    bare.parent.mkdir()
    bare.write_text('prompt = "Count."\ntext_field = ""\n')
    plain = load_task(bare)
    assert (plain.name, plain.text_field, plain.scorers) == ("counting", None, ())
    # A schema file, beside the task file.
    (tmp_path / "b" / "s.json").write_text('{"type": "array"}')
    bare.write_text('prompt = "List."\nschema_file = "s.json"\n')
    assert load_task(bare).schema == {"type": "array"}


CHANGES = [
    ("system", 'system = "You count."', 'system = "You count carefully."'),
    ("prompt", 'prompt = "How many circles?"', 'prompt = "How many circles are there?"'),
    ("schema", 'properties.note = { type = "string" }',
     'properties.note = { type = "string", maxLength = 9 }'),
    ("params", "max_tokens = 24", "max_tokens = 25"),
    ("stop", 'stop = ["}"]', 'stop = ["}", "]"]'),
    ("scorers", 'scorers = ["counts", "text"]', 'scorers = ["counts"]'),
    ("text_field", 'text_field = "note"', 'text_field = "circle"'),
    ("expects_json", "expects_json = true", "expects_json = false"),
]


@pytest.mark.parametrize(("field", "old", "new"), CHANGES, ids=[c[0] for c in CHANGES])
def test_the_prompt_version_changes_with_every_field(
    tmp_path: Path, field: str, old: str, new: str
) -> None:
    before = _version(_write(tmp_path / "a"))
    assert old in TASK_FILE
    assert _version(_write(tmp_path / "b", TASK_FILE.replace(old, new))) != before


def test_the_prompt_version_follows_the_grammar_text_and_template_not_the_place(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path / "a")
    before, text_mode = _version(path), _version(path, "text")
    # Moved (another folder, another depth), or its comments and key order changed:
    # the same version.
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(tmp_path / "a", moved)
    assert _version(moved / "mine.toml") == before
    reordered = "# my task\n" + TASK_FILE.replace('system = "You count."\n', "").replace(
        'grammar_file = "mine.gbnf"', 'grammar_file = "mine.gbnf"\nsystem = "You count."')
    assert _version(_write(tmp_path / "c", reordered)) == before
    # The grammar's text, not its name.
    assert _version(_write(tmp_path / "d", grammar=GBNF.replace("[0-9]", "[0-5]"))) != before
    # The template reaches text models only.
    templated = TASK_FILE.replace('prompt = "How many circles?"',
                                  'prompt = "How many circles?"\n'
                                  'text_template = "Scene: {description}\\n{prompt}"')
    path = _write(tmp_path / "e", templated)
    assert _version(path) == before
    assert _version(path, "text") != text_mode


# -- a bad file: one line naming the file and the key ----------------------------------------
BAD = [
    ("unknown-key", 'promt = "Count."\nprompt = "x"\n',
     r"mine\.toml: unknown key 'promt' \(did you mean 'prompt'\?\); known: name, system, "),
    ("unknown-keys", 'prompt = "x"\ncolour = 1\nseed = 2\n', r"unknown keys 'colour', 'seed'"),
    ("missing-prompt", 'system = "You count."\n', r"mine\.toml: prompt: missing"),
    ("empty-prompt", 'prompt = "  "\n', r"mine\.toml: task 'mine': prompt is empty"),
    ("bad-toml", 'prompt = "x"\nsystem = You count.\n',
     r"mine\.toml: not valid TOML: .*\(at line 2, column 10\)"),
    ("bad-toml-unclosed", 'prompt = """x\n',
     r"mine\.toml: not valid TOML: Unterminated string \(at end of document\)"),
    ("grammar-missing", 'prompt = "x"\ngrammar_file = "g.gbnf"\n',
     r"mine\.toml: grammar_file: 'g\.gbnf' not found \(looked in .*/g\.gbnf\)"),
    ("grammar-empty", 'prompt = "x"\ngrammar_file = "mine.gbnf"\n',
     r"mine\.toml: grammar_file: .*mine\.gbnf is empty"),
    ("prompt-a-number", "prompt = 3\n", r"mine\.toml: prompt: must be a string, got an integer"),
    ("name-a-list", 'prompt = "x"\nname = ["a"]\n', r"name: must be a string, got an array"),
    ("scorers-a-string", 'prompt = "x"\nscorers = "counts"\n',
     r"mine\.toml: scorers: must be an array of scorer names"),
    ("scorers-numbers", 'prompt = "x"\nscorers = [1]\n', r"scorers: must be an array"),
    ("scorers-empty-name", 'prompt = "x"\nscorers = [""]\n',
     r"mine\.toml: task 'mine': scorers must be a list of scorer names"),
    ("scorers-twice", 'prompt = "x"\nscorers = ["text", "text"]\n',
     r"task 'mine': scorers: 'text' is named twice"),
    ("expects-json-a-string", 'prompt = "x"\nexpects_json = "yes"\n',
     r"mine\.toml: expects_json: must be true or false, got a string 'yes'"),
    ("params-not-a-table", 'prompt = "x"\nparams = 3\n', r"mine\.toml: params: must be a table"),
    ("params-unknown", 'prompt = "x"\n[params]\nmax_token = 3\n',
     r"mine\.toml: params: unknown key 'max_token' \(did you mean 'max_tokens'\?\)"),
    ("params-zero", 'prompt = "x"\n[params]\nmax_tokens = 0\n',
     r"mine\.toml: params\.max_tokens: max_tokens must be at least 1, got 0"),
    ("params-temperature-a-string", 'prompt = "x"\n[params]\ntemperature = "hot"\n',
     r"params\.temperature: temperature must be a finite number, got 'hot'"),
    ("schema-not-a-table", 'prompt = "x"\nschema = "object"\n',
     r"mine\.toml: schema: must be a table \(the JSON schema\), got a string"),
    ("schema-twice", 'prompt = "x"\nschema_file = "s.json"\n[schema]\ntype = "object"\n',
     r"mine\.toml: schema_file: give the schema as a \[schema\] table or as schema_file, "
     r"not both"),
    ("schema-file-missing", 'prompt = "x"\nschema_file = "s.json"\n',
     r"mine\.toml: schema_file: 's\.json' not found"),
    ("schema-unsatisfiable", 'prompt = "x"\n[schema]\ntype = "integer"\nminimum = 3\n'
     'maximum = 1\n', r"mine\.toml: task 'mine': schema can never be satisfied: minimum 3 > "),
    ("text-field-without-json", 'prompt = "x"\ntext_field = "caption"\n',
     r"mine\.toml: task 'mine': text_field 'caption' names a JSON field, but the task does "
     r"not parse JSON"),
    ("text-field-not-a-property", 'prompt = "x"\ntext_field = "caption"\n[schema]\n'
     'type = "object"\nproperties.title = { type = "string" }\n',
     r"text_field 'caption' is not a property of the schema \(its properties: title\)"),
    ("template-without-description", 'prompt = "x"\ntext_template = "{prompt}"\n',
     r"mine\.toml: task 'mine': text_template must contain \{description\}"),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_task_file_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text, grammar="")
    with pytest.raises(TaskError, match=message) as caught:
        load_task(path)
    line = str(caught.value)
    assert line.startswith(f"task file {path}: "), line
    assert "\n" not in line, line


def test_a_missing_or_unreadable_task_file(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"^task file .*nope\.toml: not found \(looked in "):
        load_task(tmp_path / "nope.toml")
    (tmp_path / "latin.toml").write_bytes(b'prompt = "caf\xe9"\n')
    with pytest.raises(TaskError, match=r"latin\.toml: not UTF-8 text \(byte 13\)"):
        load_task(tmp_path / "latin.toml")
    (tmp_path / "s.json").write_text("{nope")
    (tmp_path / "j.toml").write_text('prompt = "x"\nschema_file = "s.json"\n')
    with pytest.raises(TaskError, match=r"j\.toml: schema_file: .*s\.json is not valid JSON: "
                       r".*line 1 column 2"):
        load_task(tmp_path / "j.toml")


@pytest.mark.parametrize(("fields", "message"), [
    ({"scorers": "counts"}, r"^task 't': scorers must be a list of scorer names, got 'counts'"),
    ({"scorers": ("counts", 3)}, r"^task 't': scorers must be a list"),
    ({"text_field": ""}, r"^task 't': text_field must be the name of a JSON field"),
    ({"text_field": 3}, r"^task 't': text_field must be the name of a JSON field"),
])
def test_a_task_built_in_python_checks_scorers_and_text_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(TaskError, match=message):
        Task(name="t", prompt="p", **fields)
    listed = Task(name="t", prompt="p", scorers=["counts"])  # type: ignore[arg-type]
    assert listed.scorers == ("counts",)
    hash(listed)


# -- a user's task file, end to end --------------------------------------------------------
USER_TASK = '''
# My own counting task, beside the test that runs it.
name = "my_task"
system = "You count shapes. Answer with JSON only."
prompt = "How many circles, squares and triangles are there?"
scorers = ["counts"]
expects_json = true

[params]
max_tokens = 96

[schema]
type = "object"
required = ["counts", "total"]
additionalProperties = false
properties.total = { type = "integer", enum = [0, 1, 2, 3, 4, 5] }

[schema.properties.counts]
type = "object"
required = ["circle", "square", "triangle"]
additionalProperties = false
properties.circle = { type = "integer", enum = [0, 1, 2, 3] }
properties.square = { type = "integer", enum = [0, 1, 2, 3] }
properties.triangle = { type = "integer", enum = [0, 1, 2, 3] }
'''


def test_a_user_task_file_runs_end_to_end(project: Project) -> None:
    """`vlm_bench.run("my_task.toml")` beside the test (found from the test file's
    folder, not the working directory) and `vlm_bench.run("scene_context")` by name:
    the results name the tasks and the prompt versions the files give."""
    tests = project.pytester.path / "benches"
    tests.mkdir()
    (tests / "my_task.toml").write_text(USER_TASK)
    (tests / "test_mine.py").write_text(
        "def test_mine(vlm_bench):\n"
        "    vlm_bench.run('my_task.toml')\n\n"
        "def test_builtin(vlm_bench):\n"
        "    vlm_bench.run('scene_context', samples=1)\n"
    )
    out = project.run("benches", f"{options.SAMPLES}=2", f"{options.WARMUP}=0",
                      f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(passed=2)
    doc = out.doc()
    by_task = {b["task"]: b for b in doc["benchmarks"]}
    assert set(by_task) == {"my_task", "scene_context"}
    mine = load_task(tests / "my_task.toml")
    assert by_task["my_task"]["prompt_version"] == mine.prompt_version(seed=0,
                                                                       input_mode="text")
    assert by_task["scene_context"]["prompt_version"] == builtin_tasks()[
        "scene_context"].prompt_version(seed=0, input_mode="text")
    records = [r for r in out.records() if r["task"] == "my_task"]
    assert len(records) == 2
    assert {r["parse"] for r in records} == {"valid"}  # the file's schema constrained it
    # The file's scorers judged each answer against the scenes' answer key.
    assert all(0 <= r["scores"]["count_accuracy"] <= 1 for r in records)
    assert by_task["my_task"]["summary"]["quality"]["scorers"] == ["counts"]


RUN_BY_NAME = "def test_bench(vlm_bench):\n    vlm_bench.run({arg}, samples=1, warmup=0)\n"
ONE = ("--vlm-models=tiny-text",)
BY_NAME = [
    Case("unknown-task-name", ONE, files={"test_bench.py": RUN_BY_NAME.format(arg="'counts'")},
         words=("vlm_bench.run: unknown task 'counts'; built-in: attributes, caption_brief, ",
                "or a task file: a path ending .toml, relative to the test file")),
    Case("task-file-missing", ONE, files={"test_bench.py": RUN_BY_NAME.format(
        arg="'tasks/mine.toml'")},
         words=("vlm_bench.run: task file 'tasks/mine.toml' not found (looked in ",
                "/tasks/mine.toml)")),
    Case("task-file-a-path-missing", ONE, files={"test_bench.py": "from pathlib import Path\n"
                                                 + RUN_BY_NAME.format(arg="Path('m.toml')")},
         words=("vlm_bench.run: task file 'm.toml' not found",)),
    Case("task-file-bad", ONE, files={"test_bench.py": RUN_BY_NAME.format(arg="'mine.toml'"),
                                      "mine.toml": 'promt = "Count."\n'},
         words=("mine.toml: unknown key 'promt' (did you mean 'prompt'?)",)),
]


@pytest.mark.parametrize("case", BY_NAME, ids=lambda c: c.id)
def test_a_task_named_wrongly_is_one_line(case: Case, tmp_path: Path,
                                          model_cache: Path) -> None:
    check_case(tmp_path, model_cache, case)
