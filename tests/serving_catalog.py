"""Inner benchmark sessions against server-backed models: catalogs with `[[server]]`
tables serving the tiny random GGUF models, tasks small enough for two busy cores, and
a project that runs the real plugin (pytester, in-process) and reads what it wrote.

Catalog text is assembled from blocks (`server`, `model`) so that each test says which
servers and models its session has; every model serves `generated:llama-tiny` (about
0.4 MB, generated once per test session into the shared cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_vlmbench.results import document as results
from pytest_vlmbench.run.records import read_records

SERVING_TASKS = '''
from pytest_vlmbench.tasks import GenerationParams, Task

CAPTION = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=8))
LONG_CAPTION = Task(name="long_caption", prompt="Describe.",
                    params=GenerationParams(max_tokens=120))
# The tiny random model answers unconstrained with newlines: stopped at the first one,
# the server ends the output itself (finish_reason "stop") with text no JSON schema
# allows, which is how a server that ignored the constraint shows.
YES_NO = Task(
    name="yes_no",
    prompt="Answer as JSON.",
    schema={"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
            "required": ["answer"], "additionalProperties": False},
    expects_json=True,
    params=GenerationParams(max_tokens=32, stop=("\\n",)),
)
'''

IN_PROCESS = """
[[model]]
id = "tiny-text"
backend = "llama_cpp"
modality = "text"
chat_format = "gemma"
default = true
precisions = { fp32 = "generated:llama-tiny" }
"""


def server(server_id: str, kind: str, *, settings: str = "n_ctx = 512, n_threads = 1",
           extra: str = "") -> str:
    """A `[[server]]` table."""
    return (f'\n[[server]]\nid = "{server_id}"\nkind = "{kind}"\n'
            f"settings = {{ {settings} }}\n{extra}\n")


def model(model_id: str, endpoint: str, *, weights: str = "generated:llama-tiny",
          precision: str = "fp32", chat_format: str = "gemma") -> str:
    """An openai `[[model]]` (a default model) with its `[model.endpoint]` lines."""
    return (f'\n[[model]]\nid = "{model_id}"\nbackend = "openai"\nmodality = "text"\n'
            "default = true\n"
            f'chat_format = "{chat_format}"\nprecisions = {{ {precision} = "{weights}" }}\n'
            f"[model.endpoint]\n{endpoint.strip()}\n")


@dataclass
class Outcome:
    """An inner session's result and the files it wrote."""

    run: pytest.RunResult
    out: Path

    def doc(self) -> dict[str, Any]:
        return cast(dict[str, Any], results.load(self.out))  # validated by the schema

    def records(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], read_records(self.records_path))

    @property
    def records_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".records.jsonl")

    def entries(self) -> dict[str, dict[str, Any]]:
        """The benchmark entries by id."""
        return {b["id"]: b for b in self.doc()["benchmarks"]}

    def text(self) -> str:
        return "\n".join(self.run.outlines + self.run.errlines)

    def failure_lines(self, test: str) -> list[str]:
        """The lines of the failure report of `test` (pytest's `___ test ___` section)."""
        lines = self.run.outlines
        start = next(i for i, line in enumerate(lines)
                     if line.startswith("_") and f" {test} " in line)
        body = []
        for line in lines[start + 1:]:
            if line.startswith(("___", "===")):  # the next report, or the next section
                break
            body.append(line)
        return [line for line in body if line.strip()]


@dataclass
class ServingProject:
    """A benchmark project inside pytester's directory, with a catalog of servers."""

    pytester: pytest.Pytester

    def catalog(self, *blocks: str) -> Path:
        path = self.pytester.path / "models.toml"
        path.write_text("".join(blocks))
        return path

    def tests(self, text: str) -> None:
        self.pytester.makepyfile(test_bench=text)

    def run(self, *args: str) -> Outcome:
        out = self.pytester.path / "out" / "results.json"
        run = self.pytester.runpytest("-p", "no:cacheprovider",
                                      f"--vlm-out={out}", *args)
        return Outcome(run, out)


def make_project(pytester: pytest.Pytester, model_cache: Path) -> ServingProject:
    pytester.makeini(
        f"""
        [pytest]
        vlm_catalog = models.toml
        vlm_cache_dir = {model_cache}
        vlm_device = cpu
        vlm_idle_s = 0
        """
    )
    pytester.makepyfile(serving_tasks=SERVING_TASKS)
    pytester.syspathinsert()
    return ServingProject(pytester)


def files_under(directory: Path) -> dict[Path, str]:
    """Every file under `directory`, as text."""
    return {p: p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(directory.rglob("*")) if p.is_file()}

