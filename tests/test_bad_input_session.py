"""The bad-input table for options, the catalog, the matrix, the output path and
`vlm_bench.run()` arguments: each case is a real inner pytest session in a subprocess,
its exit status and the words its one line must contain (harness: tests/bad_input.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_input import FAILED, USAGE, Case, check_case, make_project
from tests.conftest import TINY_CATALOG


def bench(call: str, *, imports: str = "from tiny_tasks import CAPTION") -> dict[str, str]:
    """A test_bench.py whose one benchmark makes `call` on vlm_bench."""
    return {"test_bench.py": f"{imports}\n\ndef test_b(vlm_bench):\n    {call}\n"}


TYPO_CATALOG = TINY_CATALOG.replace('precisions = { fp32 = "generated:llama-tiny" }\n'
                                    'projector', 'precisions = { q4_kk = "generated:llama-tiny" }'
                                    '\nprojector')

NO_JSON_GRAMMAR = 'root ::= "\\"no\\""\n'
OBJECT_TASK = """
from pathlib import Path
from pytest_vlmbench.tasks import GenerationParams, Task

# A grammar that can only say the JSON string "no", and a schema that wants an object:
# every output is valid JSON and violates the schema.
NEVER = Task(name="never", prompt="Answer.", expects_json=True,
             schema={"type": "object", "required": ["answer"]},
             grammar_file=Path(__file__).with_name("no.gbnf"),
             params=GenerationParams(max_tokens=8))
"""

CASES = [
    # -- the output path: refused before the first request ---------------------------
    Case("out-is-a-directory", args=("--vlm-out=outdir",), files={"outdir/keep.txt": ""},
         words=("--vlm-out=", "outdir is a directory; name a file in it")),
    Case("out-under-a-file", args=("--vlm-out=blocker/results.json",),
         files={"blocker": "a file"}, words=("--vlm-out=", "cannot write there")),
    Case("out-in-an-unwritable-place", args=("--vlm-out=/proc/vlmbench/results.json",),
         words=("--vlm-out=/proc/vlmbench/results.json: cannot write there",)),
    # -- precisions and the matrix ------------------------------------------------------
    Case("catalog-precision-typo", files={"models.toml": TYPO_CATALOG},
         words=("model 'tiny-vision': precision 'q4_kk' is not one any device profile knows",
                "did you mean", "'q4_k_m'")),
    Case("precision-option-exists-nowhere", args=("--vlm-precisions=fp64",),
         words=("--vlm-precisions: 'fp64' is not a precision any device profile knows",)),
    Case("precision-the-catalog-lacks", args=("--vlm-precisions=q8_0",),
         words=("the model matrix selects nothing to run here",
                "tiny-text has no q8_0 variant in models.toml (it has fp32)")),
    Case("unknown-model", args=("--vlm-models=nope",), words=("--vlm-models:", "no model 'nope'")),
    # -- vlm_bench.run() arguments ----------------------------------------------------------
    Case("samples-zero", files=bench("vlm_bench.run(CAPTION, samples=0)"),
         words=("vlm_bench.run(samples=0): must be at least 1",)),
    Case("warmup-negative", files=bench("vlm_bench.run(CAPTION, warmup=-1)"),
         words=("vlm_bench.run(warmup=-1): must be at least 0",)),
    Case("unknown-task-name", files=bench("vlm_bench.run('captionn')", imports=""),
         words=("unknown task 'captionn'", "caption_brief")),
    Case("dataset-is-a-path", files=bench("vlm_bench.run(CAPTION, 'photos/')"),
         words=("vlm_bench.run: dataset 'photos/' is a path; wrap it: "
                "FolderDataset('photos/')",)),
    Case("dataset-is-a-class", files=bench(
        "vlm_bench.run(CAPTION, FolderDataset)",
        imports="from tiny_tasks import CAPTION\n"
                "from pytest_vlmbench.datasets import FolderDataset"),
         words=("dataset must be a dataset", "FolderDataset (a class; call it)")),
    Case("task-is-a-dict", files=bench("vlm_bench.run({'prompt': 'Describe.'})", imports=""),
         words=("vlm_bench.run: task must be a pytest_vlmbench.tasks.Task",)),
    Case("usage-mistake-under-xdist", args=("-n", "2", "--vlm-models=tiny-text"),
         files=bench("vlm_bench.run(CAPTION, samples=0)"),
         words=("vlm_bench.run(samples=0): must be at least 1",)),
    Case("grammar-file-missing",
         files={"t.py": OBJECT_TASK.replace('"no.gbnf"', '"gone.gbnf"'),
                **bench("vlm_bench.run(NEVER)", imports="from t import NEVER")},
         words=("task 'never': grammar_file", "gone.gbnf", "not found")),
    Case("schema-invalid", files={"t.py": OBJECT_TASK.replace('"object"', '"objekt"'),
                                  "no.gbnf": NO_JSON_GRAMMAR,
                                  **bench("vlm_bench.run(NEVER)", imports="from t import NEVER")},
         words=("task 'never': invalid JSON schema",)),
    # -- a schema no output satisfies: a failed test, one line -------------------------------
    Case("every-output-violates-the-schema", exit=FAILED, args=("--vlm-models=tiny-text",),
         files={"never_task.py": OBJECT_TASK, "no.gbnf": NO_JSON_GRAMMAR,
                **bench("vlm_bench.run(NEVER, samples=2, warmup=0)",
                        imports="from never_task import NEVER")},
         words=("task 'never': none of the 2 outputs passed its output check",
                "schema_violation")),
    # -- what already behaved, kept so --------------------------------------------------------
    Case("samples-option-zero", args=("--vlm-samples=0",), words=("--vlm-samples", ">= 1")),
    Case("samples-ini-not-a-number", ini="vlm_samples = many",
         words=("vlm_samples", "'many'")),
    Case("unknown-device", args=("--vlm-device=tpu9",), words=("tpu9",)),
    Case("unknown-power-meter", args=("--vlm-power-meter=wattmeter",),
         words=("unknown power meter 'wattmeter'",)),
    Case("bad-gate-rule", args=("--vlm-fail-on=p95_latency:lots",), words=("--vlm-fail-on",)),
    Case("catalog-not-toml", files={"models.toml": "[[model]\nid="},
         words=("models.toml: not valid TOML",)),
    Case("catalog-missing-field", files={"models.toml": TINY_CATALOG.replace(
        'backend = "llama_cpp"\nmodality = "text"', 'modality = "text"')},
         words=("model 'tiny-text': missing required field 'backend'",)),
    Case("catalog-duplicate-id", files={"models.toml": TINY_CATALOG.replace(
        'id = "tiny-vision"', 'id = "tiny-text"')}, words=("'tiny-text' is defined twice",)),
    Case("catalog-named-but-missing", args=("--vlm-catalog=missing.toml",),
         words=("missing.toml: model catalog not found",)),
    Case("compare-baseline-missing", args=("--vlm-compare=nowhere.json",),
         words=("nowhere.json",)),
    Case("unknown-slo", exit=FAILED,
         files=bench("vlm_bench.run(CAPTION, samples=1, warmup=0, slo={'max_latency_p97_s': 1})"),
         words=("max_latency_p97_s",)),
    Case("bad-grammar-file", exit=FAILED, args=("--vlm-models=tiny-text",),
         files={"bad_task.py": OBJECT_TASK.replace("NEVER", "BAD").replace(
             '"no.gbnf"', '"bad.gbnf"'), "bad.gbnf": "root ::= [unclosed\n",
                **bench("vlm_bench.run(BAD, samples=1, warmup=0)",
                        imports="from bad_task import BAD")},
         words=("bad.gbnf",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, model_cache: Path) -> None:
    check_case(tmp_path, model_cache, case)
    if case.exit == USAGE and "outdir/keep.txt" not in case.files:
        assert not (tmp_path / "out" / "results.records.jsonl").exists()  # nothing ran


def test_run_id_in_the_output_name_keeps_every_run(tmp_path: Path, model_cache: Path) -> None:
    """A fixed --vlm-out is overwritten by the next run; `{run_id}` keeps each."""
    case = Case("run-id-placeholder", args=("--vlm-out=runs/nightly-{run_id}.json",
                                            "--vlm-models=tiny-text"), exit=0)
    check_case(tmp_path, model_cache, case)
    check_case(tmp_path, model_cache, case)
    runs = sorted((tmp_path / "runs").glob("nightly-*.json"))
    assert len(runs) == 2, runs
    assert all("{run_id}" not in p.name for p in runs)
    assert len(list((tmp_path / "runs").glob("nightly-*.records.jsonl"))) == 2


def test_a_reused_output_name_starts_its_files_afresh(tmp_path: Path, model_cache: Path) -> None:
    """Records and the backend log of a fixed --vlm-out belong to the run that wrote the
    results document, not to every run that ever used the name."""
    case = Case("same-name-twice", args=("--vlm-models=tiny-text",), exit=0)
    check_case(tmp_path, model_cache, case)
    check_case(tmp_path, model_cache, case)
    out = tmp_path / "out"
    doc = json.loads((out / "results.json").read_text())
    lines = (out / "results.records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["run_id"] for r in records} == {doc["run_id"]}
    assert (out / "results.backend.log").read_text().count("== load ") == 1


def test_masked_test_ids_stay_distinct() -> None:
    from pytest_vlmbench.plugin.bench import _masked_id

    a = _masked_id("t.py::test_b[tiny-text-fp32-cpu-sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123]")
    b = _masked_id("t.py::test_b[tiny-text-fp32-cpu-sk-proj-ZyXwVuTsRqPoNmLkJiHgFeDc9876]")
    assert a != b
    assert "AbCd" not in a
    assert "ZyXw" not in b
    assert a == _masked_id("t.py::test_b[tiny-text-fp32-cpu-sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123]")
    assert _masked_id("t.py::test_b[tiny-text-fp32-cpu]") == "t.py::test_b[tiny-text-fp32-cpu]"


def test_an_output_path_from_the_ini_is_blamed_on_the_ini(tmp_path: Path,
                                                          model_cache: Path) -> None:
    case = Case("out-from-the-ini", ini="vlm_out = outdir", files={"outdir/keep.txt": ""})
    make_project(tmp_path, model_cache, case)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == USAGE, done.stdout + done.stderr
    assert "vlm_out (pytest.ini)=" in done.stderr
    assert "outdir is a directory" in done.stderr
