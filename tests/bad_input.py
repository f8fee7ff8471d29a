"""The bad-input regression table's harness: one case = a command, its exit status and
the words its message must contain.

Each `tests/test_bad_input_*.py` holds a table of `Case`s for one area (options,
catalog, backend, datasets and tasks, the `vlmbench` command...) and parametrises
`check_case` over it, so every mistake a user was once seen to make stays one clear
line with the right outcome. Inner pytest sessions run in a subprocess (real exit
status, real stderr, no state shared with the outer session) in a project with the
tiny generated models.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import pytest_vlmbench
from tests.conftest import TINY_CATALOG, TINY_TASKS

SRC = Path(pytest_vlmbench.__file__).resolve().parents[1]
"""The package under test: inner processes import it, not another install of it."""

USAGE = int(pytest.ExitCode.USAGE_ERROR)  # 4
FAILED = int(pytest.ExitCode.TESTS_FAILED)  # 1
NO_TESTS = int(pytest.ExitCode.NO_TESTS_COLLECTED)  # 5
OK = int(pytest.ExitCode.OK)

DEFAULT_BENCH = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=1, warmup=0)
"""


@dataclass(frozen=True)
class Case:
    """One bad input: what is run, with which files, and what must come back."""

    id: str
    args: tuple[str, ...] = ()
    exit: int = USAGE
    words: tuple[str, ...] = ()
    """Each must appear in the output (stdout + stderr), case-sensitive."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Files written into the project (relative path -> text); `test_bench.py` defaults
    to a one-request caption benchmark on the tiny models."""
    ini: str = ""
    """Extra lines for the project's [pytest] ini section."""
    cli: bool = False
    """Run the `vlmbench` command with `args` instead of pytest."""
    absent: tuple[str, ...] = ()
    """Words that must NOT appear in the output (e.g. a secret canary)."""
    timeout: float = 300
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables for the inner run."""


def make_project(root: Path, model_cache: Path, case: Case) -> None:
    ini = "\n".join(["[pytest]", "vlm_catalog = models.toml", f"vlm_cache_dir = {model_cache}",
                     "vlm_device = cpu", "vlm_idle_s = 0", case.ini, ""])
    (root / "pytest.ini").write_text(ini)
    (root / "models.toml").write_text(TINY_CATALOG)
    (root / "tiny_tasks.py").write_text(TINY_TASKS)
    files = {"test_bench.py": DEFAULT_BENCH, **case.files}
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_case(root: Path, case: Case) -> subprocess.CompletedProcess[str]:
    if case.cli:
        command = [sys.executable, "-m", "pytest_vlmbench.cli", *case.args]
    else:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                   "--vlm-out=out/results.json", *case.args]
    # The project, then the package this session tests (a work tree's src/ wins over
    # another editable install of it).
    env = {**os.environ, **case.env,
           "PYTHONPATH": os.pathsep.join([str(root), str(SRC)])}
    return subprocess.run(command, cwd=root, capture_output=True, text=True,
                          timeout=case.timeout, env=env, check=False)


def check_case(root: Path, model_cache: Path, case: Case) -> subprocess.CompletedProcess[str]:
    """Run the case and assert its exit status, its words, and that no traceback or
    source dump reached the user."""
    make_project(root, model_cache, case)
    done = run_case(root, case)
    output = done.stdout + done.stderr
    shown = f"\n--- exit {done.returncode}; output:\n{output[-6000:]}"
    assert done.returncode == case.exit, shown
    for word in case.words:
        assert word in output, f"missing {word!r}{shown}"
    for word in case.absent:
        assert word not in output, f"{word!r} must not appear{shown}"
    assert "Traceback" not in output, shown
    # pytest's source dump marks the failing line with '>' and its own frames with 'src/'
    dumped = [line for line in output.splitlines()
              if line.startswith(">   ") or ("pytest_vlmbench/" in line and ".py:" in line)]
    assert not dumped, f"source or traceback lines shown: {dumped[:3]}{shown}"
    return done
