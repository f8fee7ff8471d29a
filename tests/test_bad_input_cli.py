"""Bad input and first use of the `vlmbench` command: one line and exit 2 for a file it
cannot use (1 for `validate` of an invalid one), and the project's own settings read
the way pytest reads them (the ini file's vlm_catalog and vlm_out).

The runs that `compare latest` finds are real results documents, written by two real
inner pytest sessions on the tiny generated models (module fixture `runs`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pytest_vlmbench.results.document import KIND
from tests.bad_input import OK, Case, check_case, make_project, run_case
from tests.conftest import TINY_CATALOG

EXIT_INVALID = 1  # vlmbench validate: a file failed validation
EXIT_USAGE = 2  # vlmbench: usage error, bad input
DATA = Path(__file__).with_name("data")
REAL = DATA / "results-20261123T102147Z-ba1e6b.json"
REAL_RECORDS = REAL.with_name(REAL.stem + ".records.jsonl")

RUNNING = json.dumps({"kind": KIND, "schema_version": 1, "run_id": "r-now",
                      "started_at": "2026-11-23T10:00:00+00:00", "status": "running"})
"""A run still in progress: its header is all a directory scan reads before skipping it."""

BAD_BACKEND = TINY_CATALOG.replace('backend = "llama_cpp"\nmodality = "vision"',
                                   'backend = "llama-cpp"\nmodality = "vision"')
assert BAD_BACKEND != TINY_CATALOG

NEEDS_RUNS = "needs-runs"
"""A case whose project also gets the two real runs (runs/a.json, runs/b.json)."""


CASES = [
    # --- compare: files it cannot use
    Case(id="compare-missing-file", cli=True, exit=EXIT_USAGE,
         args=("compare", "base.json", "missing.json"),
         words=("missing.json: no such results file",)),
    Case(id="compare-not-json", cli=True, exit=EXIT_USAGE,
         args=("compare", "half.json", "half.json"),
         files={"half.json": '{"kind": "pytest-vlmbench-res'},
         words=("half.json: not JSON", "truncated or not a results file?")),
    Case(id="compare-another-kind", cli=True, exit=EXIT_USAGE,
         args=("compare", "package.json", "package.json"),
         files={"package.json": '{"name": "left-pad", "version": "1.3.0"}'},
         words=("package.json: not a pytest-vlmbench results document",)),
    Case(id="compare-directory-of-unfinished-runs", cli=True, exit=EXIT_USAGE,
         args=("compare", "saved", str(REAL)),
         files={"saved/results-r-now.json": RUNNING, "saved/notes.json": '{"a": 1}'},
         words=("no finished results document", " in saved")),
    Case(id="compare-directory-without-results", cli=True, exit=EXIT_USAGE,
         args=("compare", "saved", str(REAL)),
         files={"saved/notes.json": '{"kind": "something else"}', "saved/backend.log": "x"},
         words=("no results-*.json in ", "nor another results document")),
    Case(id="compare-latest-without-runs", cli=True, exit=EXIT_USAGE,
         args=("compare", str(REAL), "latest"),
         words=(".vlmbench: no such directory of results",
                "latest: the output directory, the default .vlmbench/ under the rootdir")),
    Case(id="compare-latest-without-runs-in-vlm-out", cli=True, exit=EXIT_USAGE,
         args=("compare", str(REAL), "latest"), ini="vlm_out = runs/mine.json",
         files={"runs/README": "runs go here"},
         words=("no results-*.json in ", "runs",
                "latest: the output directory, from pytest.ini vlm_out")),
    # --- show, validate
    Case(id="show-missing-file", cli=True, exit=EXIT_USAGE, args=("show", "nope.json"),
         words=("nope.json: no such results file",)),
    Case(id="validate-truncated-records", cli=True, exit=EXIT_INVALID,
         args=("validate", REAL.name),
         files={REAL.name: REAL.read_text(),
                REAL_RECORDS.name: REAL_RECORDS.read_text()[:-40]},
         words=("invalid: ", REAL_RECORDS.name)),
    # --- models: the catalog pytest would load here
    Case(id="models-lists-the-ini-catalog", cli=True, exit=OK, args=("models",),
         words=("(from pytest.ini vlm_catalog)", "models.toml", "tiny-text", "tiny-vision"),
         absent=("gemma3-270m",)),
    Case(id="models-catalog-option-wins", cli=True, exit=OK,
         args=("models", "--catalog", "other.toml"),
         files={"other.toml": "[[model]]" + TINY_CATALOG.split("[[model]]")[1]},
         words=("other.toml (from --catalog)", "tiny-text"), absent=("tiny-vision",)),
    Case(id="models-missing-catalog", cli=True, exit=EXIT_USAGE,
         args=("models", "--catalog", "nowhere.toml"),
         words=("nowhere.toml: model catalog not found",)),
    Case(id="models-unreadable-catalog", cli=True, exit=EXIT_USAGE,
         args=("models", "--catalog", "cat.toml"), files={"cat.toml/inside": ""},
         words=("cat.toml: cannot read model catalog",)),
    Case(id="models-catalog-not-toml", cli=True, exit=EXIT_USAGE, args=("models",),
         files={"models.toml": "[[model]\nid = 1"},
         words=("models.toml: not valid TOML",)),
    Case(id="models-catalog-entry-error", cli=True, exit=EXIT_USAGE, args=("models",),
         files={"models.toml": BAD_BACKEND},
         words=("models.toml: model 'tiny-vision': field 'backend' 'llama-cpp' is not a "
                "known backend",)),
    Case(id="models-broken-ini", cli=True, exit=EXIT_USAGE, args=("models",),
         ini="vlm_device = cpu",  # a second one: pytest refuses the file too
         words=("pytest.ini:", "duplicate name 'vlm_device'")),
    # --- latest and directories follow vlm_out (real runs: runs/a.json, runs/b.json)
    Case(id=f"compare-latest-follows-vlm-out-{NEEDS_RUNS}", cli=True, exit=OK,
         args=("compare", "latest", "latest", "--min-samples", "1", "--fail-on", "none"),
         ini="vlm_out = runs/mine.json",
         words=("runs/a.json", "runs/b.json", "2 benchmarks compared")),
    Case(id=f"compare-directory-by-content-{NEEDS_RUNS}", cli=True, exit=OK,
         args=("compare", "runs", "runs/b.json", "--min-samples", "1", "--fail-on", "none"),
         files={"runs/notes.json": '{"kind": "notes"}', "runs/backend.log": "llama"},
         words=("runs/a.json", "runs/b.json", "2 benchmarks compared")),
    Case(id=f"pytest-compare-latest-follows-vlm-out-{NEEDS_RUNS}", exit=OK,
         args=("--vlm-out=runs/c.json", "--vlm-compare=latest", "--vlm-fail-on=none"),
         words=("baseline: the 2 newest finished runs in ", "/runs\n",
                "2 benchmarks compared", "2 passed")),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, str]:
    """Two real runs of the default one-request benchmark, saved under names that are
    not the plugin's default (runs/a.json then runs/b.json), and their records."""
    root = tmp_path_factory.mktemp("runs")
    make_project(root, model_cache, Case(id="runs"))
    files: dict[str, str] = {}
    for name in ("a", "b"):
        done = run_case(root, Case(id=name, args=(f"--vlm-out=runs/{name}.json",)))
        assert done.returncode == OK, done.stdout[-3000:] + done.stderr[-3000:]
        for path in (root / "runs").glob(f"{name}.*"):
            if path.suffix in (".json", ".jsonl"):
                files[f"runs/{path.name}"] = path.read_text()
    assert {"runs/a.json", "runs/a.records.jsonl", "runs/b.json",
            "runs/b.records.jsonl"} <= set(files)
    return files


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, model_cache: Path,
                   request: pytest.FixtureRequest) -> None:
    if NEEDS_RUNS in case.id:
        saved: dict[str, str] = request.getfixturevalue("runs")
        case = dataclasses.replace(case, files={**saved, **case.files})
    check_case(tmp_path, model_cache, case)


def test_models_outside_any_project_lists_the_embedded_catalog(tmp_path: Path) -> None:
    """A folder with no ini file anywhere above: the catalog the package ships."""
    case = Case(id="embedded", cli=True, args=("models",))
    done = run_case(tmp_path, case)
    output = done.stdout + done.stderr
    assert done.returncode == OK, output
    header = output.splitlines()[0]
    assert header.startswith("catalog: "), header
    assert header.endswith(" (embedded)"), header
    assert "pytest_vlmbench" in header
    assert "gemma3-270m" in output
    assert "tiny-vlm" in output
    assert "Traceback" not in output



def test_ctrl_c_in_a_subcommand_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_vlmbench import cli
    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_show", interrupted)
    assert cli.main(["show", "any.json"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "vlmbench: interrupted\n"
