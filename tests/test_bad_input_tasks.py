"""The bad-input table for datasets, tasks and schemas: each mistake is one line naming
its culprit (the `FolderDataset(...)` call, the task and field), raised before any request
(harness: tests/bad_input.py), plus the unit checks of `Task` and `GenerationParams`.

Mistakes knowable before the first request are usage mistakes (exit 4): a dataset
argument, a task parameter, wherever they are written (a test body, or module level,
where they stop the module's collection), and so is a schema nothing can satisfy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.errors import UsageMistake
from pytest_vlmbench.tasks import (
    BUILTIN_TASKS,
    DEFAULT_TEXT_TEMPLATE,
    GenerationParams,
    Task,
    TaskError,
)
from tests.bad_input import Case, check_case

IMPORTS = """
from pytest_vlmbench.datasets import FolderDataset, SyntheticScenes
from pytest_vlmbench.tasks import GenerationParams, Task
from tiny_tasks import CAPTION
"""


def bench(body: str, *, module: str = "") -> dict[str, str]:
    """A test_bench.py whose one benchmark runs `body` (module-level code first)."""
    return {"test_bench.py": f"{IMPORTS}\n{module}\n\ndef test_b(vlm_bench):\n    {body}\n"}


def run(dataset: str) -> dict[str, str]:
    return bench(f"vlm_bench.run(CAPTION, {dataset}, samples=1, warmup=0)")


EMPTY_DATASET = """
class Nothing:
    name = "nothing"

    def samples(self):
        return iter(())

    def fingerprint(self):
        return "0" * 64
"""

SCORE_TASK = """
SCORE = Task(name="score", prompt="Rate.", expects_json=True,
             schema={"type": "object", "required": ["score"],
                     "properties": {"score": {"type": "integer", "minimum": 10, "maximum": 1}}},
             params=GenerationParams(max_tokens=8))
"""

ONE = ("--vlm-models=tiny-vision",)  # one matrix cell is enough to show the line

CASES = [
    # -- datasets: the constructor call and what is wrong with it ------------------------------
    Case("folder-empty", ONE, files={**run("FolderDataset('photos/')"), "photos/.keep": ""},
         words=("FolderDataset('photos/'): folder is empty (no .bmp .gif .jpeg .jpg",)),
    Case("folder-missing", ONE, files=run("FolderDataset('nowhere/')"),
         words=("FolderDataset('nowhere/'): folder not found (looked in ", "/nowhere)")),
    Case("folder-is-a-file", ONE, files={**run("FolderDataset('cat.jpg')"), "cat.jpg": "x"},
         words=("FolderDataset('cat.jpg'): is a file, not a folder",)),
    Case("folder-limit-zero", ONE, files={**run("FolderDataset('photos', limit=0)"),
                                          "photos/a.jpg": "x"},
         words=("FolderDataset('photos', limit=0): limit must be a whole number of at least 1",)),
    Case("folder-extensions-match-nothing", ONE,
         files={**run("FolderDataset('photos', extensions=('.heic',))"),
                "photos/notes.txt": "x"},
         words=("FolderDataset('photos', extensions=('.heic',)): no images found (no .heic "
                "files; found 1 other file, e.g. notes.txt)",)),
    Case("folder-extensions-a-string", ONE,
         files={**run("FolderDataset('photos', extensions='.png')"), "photos/a.png": "x"},
         words=("extensions must be a tuple of suffixes such as ('.jpg', '.png'), not the "
                "string '.png'",)),
    Case("synthetic-n-zero", ONE, files=run("SyntheticScenes(n=0)"),
         words=("SyntheticScenes(n=0): n must be a whole number of at least 1",)),
    Case("synthetic-size-zero", ONE, files=run("SyntheticScenes(4, size=0)"),
         words=("SyntheticScenes(size=0): size must be a whole number of at least 24 px",)),
    Case("folder-missing-at-module-level", ONE,
         files=bench("vlm_bench.run(CAPTION, PHOTOS)", module="PHOTOS = FolderDataset('gone')"),
         words=("test_bench.py: FolderDataset('gone'): folder not found",)),
    Case("dataset-without-samples", ONE,
         files=bench("vlm_bench.run(CAPTION, Nothing(), samples=1, warmup=0)",
                     module=EMPTY_DATASET),
         words=("dataset 'nothing' yields no samples",)),
    # -- tasks: the task (or the GenerationParams call) and the field ----------------------------
    Case("max-tokens-zero-in-a-tasks-module", ONE,
         files={"my_tasks.py": IMPORTS + "CAP = Task(name='cap', prompt='Describe.', "
                "params=GenerationParams(max_tokens=0))\n",
                **bench("vlm_bench.run(CAP)", module="from my_tasks import CAP")},
         words=("GenerationParams(max_tokens=0): max_tokens must be at least 1, got 0",
                "until the context is full")),
    Case("empty-prompt-at-module-level", ONE,
         files=bench("vlm_bench.run(CAP)", module="CAP = Task(name='cap', prompt='  ')"),
         words=("test_bench.py: task 'cap': prompt is empty",)),
    Case("with-params-negative-max-tokens", ONE,
         files=bench("vlm_bench.run(CAPTION.with_params(max_tokens=-1))"),
         words=("task 'caption': with_params(max_tokens=-1): max_tokens must be at least 1",)),
    Case("stop-a-bare-string", ONE,
         files=bench("vlm_bench.run(CAPTION.with_params(stop='\\n'))"),
         words=("task 'caption': with_params(stop='\\n'): stop must be a tuple of strings",)),
    Case("top-p-above-one", ONE,
         files=bench("vlm_bench.run(Task(name='t', prompt='p', "
                     "params=GenerationParams(top_p=1.5)))"),
         words=("GenerationParams(top_p=1.5): top_p must be in (0, 1]",)),
    Case("template-without-description", ONE,
         files=bench("vlm_bench.run(Task(name='t', prompt='p', text_template='{prompt}'))"),
         words=("task 't': text_template must contain {description}",)),
    # -- a schema no output can satisfy: refused before the first request --------------------------
    Case("schema-never-satisfiable", args=ONE,
         files=bench("vlm_bench.run(SCORE, samples=2, warmup=0)", module=SCORE_TASK),
         words=("task 'score': schema can never be satisfied: properties.score: minimum 10 > "
                "maximum 1",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, model_cache: Path) -> None:
    done = check_case(tmp_path, model_cache, case)
    output = done.stdout + done.stderr
    records = tmp_path / "out" / "results.records.jsonl"
    assert not records.exists() or not records.read_text().strip(), output  # no request ran


# --- Task and GenerationParams on their own ---------------------------------------------------

PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"max_tokens": 0}, r"^GenerationParams\(max_tokens=0\): max_tokens must be at least 1"),
    ({"max_tokens": -5}, r"max_tokens must be at least 1, got -5"),
    ({"max_tokens": 8.0}, r"max_tokens must be a whole number, got 8\.0"),
    ({"max_tokens": True}, r"max_tokens must be a whole number"),
    ({"temperature": -0.1}, r"^GenerationParams\(temperature=-0\.1\): temperature must be at "
                            r"least 0"),
    ({"temperature": float("nan")}, r"temperature must be a finite number"),
    ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
    ({"top_k": -1}, r"top_k must be at least 0"),
    ({"min_p": -0.5}, r"min_p must be in \[0, 1\]"),
    ({"min_p": 2}, r"min_p must be in \[0, 1\]"),
    ({"repeat_penalty": 0}, r"repeat_penalty must be greater than 0"),
    ({"stop": "</s>"}, r"stop must be a tuple of strings such as \('</s>',\), not the bare "
                       r"string '</s>'"),
    ({"stop": ("a", "")}, r"stop must be a tuple of non-empty strings"),
    ({"stop": ("a", 3)}, r"stop must be a tuple of non-empty strings"),
]


@pytest.mark.parametrize(("changes", "message"), PARAMS, ids=[m for _, m in PARAMS])
def test_nonsense_generation_params_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskError, match=message):
        GenerationParams(**changes)
    field = next(iter(changes))
    with pytest.raises(TaskError, match=rf"^task 'caption_brief': with_params\({field}=") as e:
        BUILTIN_TASKS["caption_brief"].with_params(**changes)
    assert e.value.field_name == field
    assert isinstance(e.value, UsageMistake)


@pytest.mark.parametrize("changes", [
    {"max_tokens": 1}, {"temperature": 0}, {"temperature": 1.7}, {"top_p": 1}, {"top_p": 0.01},
    {"top_k": 0}, {"min_p": 0}, {"min_p": 1}, {"repeat_penalty": 0.5}, {"stop": ("\n", "###")},
])
def test_sensible_edges_are_accepted(changes: dict[str, Any]) -> None:
    GenerationParams(**changes)


def test_a_stop_list_becomes_a_tuple() -> None:
    params = GenerationParams(stop=["\n"])  # type: ignore[arg-type]
    assert params.stop == ("\n",)
    hash(params)  # still hashable, like every frozen dataclass here


def test_with_params_names_an_unknown_field() -> None:
    with pytest.raises(TaskError, match=r"^task 'photo_score': with_params\(max_token=\.\.\.\): "
                       r"GenerationParams has no field 'max_token'; its fields: max_tokens, "):
        BUILTIN_TASKS["photo_score"].with_params(max_token=10)


TASKS: list[tuple[dict[str, Any], str]] = [
    ({"name": ""}, r"^Task\(name=''\): name must be a non-empty string$"),
    ({"name": "  "}, r"^Task\(name='  '\): name must be"),
    ({"prompt": ""}, r"^task 't': prompt is empty"),
    ({"prompt": " \n\t"}, r"^task 't': prompt is empty"),
    ({"prompt": None}, r"^task 't': prompt must be a string, got NoneType$"),
    ({"system": None}, r"^task 't': system must be a string"),
    ({"params": {"max_tokens": 5}}, r"^task 't': params must be a GenerationParams\(\.\.\.\), "
                                    r"got dict$"),
    ({"schema": '{"type": "object"}'}, r"^task 't': schema must be a JSON schema as a dict, "
                                       r"got str"),
    ({"grammar_file": 3}, r"^task 't': grammar_file must be a path"),
    ({"expects_json": "yes"}, r"^task 't': expects_json must be True or False"),
    ({"text_template": "{prompt}"}, r"^task 't': text_template must contain \{description\}"),
    ({"text_template": "{description} {"}, r"^task 't': text_template cannot be formatted"),
    ({"text_template": "{description} {picture}"}, r"cannot be formatted \(KeyError: 'picture'\)"),
    ({"text_template": "{0} {description}"}, r"cannot be formatted \(IndexError"),
]


@pytest.mark.parametrize(("fields", "message"), TASKS, ids=[m for _, m in TASKS])
def test_nonsense_tasks_are_refused_naming_the_task_and_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(TaskError, match=message) as caught:
        Task(**{"name": "t", "prompt": "Describe.", **fields})
    assert "\n" not in str(caught.value)


def test_builtin_and_sensible_tasks_are_accepted(tmp_path: Path) -> None:
    assert BUILTIN_TASKS  # built at import: they pass their own checks
    Task(name="t", prompt="p", text_template="{description}")
    Task(name="t", prompt="p", text_template="Scene: {description}. {{literal}} {prompt}")
    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= "yes"\n')
    Task(name="t", prompt="p", grammar_file=str(grammar))  # type: ignore[arg-type]
    assert "{description}" in DEFAULT_TEXT_TEMPLATE
