"""What pytest-vlmbench costs a session that runs no benchmark: pytest imports the
plugin at every start wherever it is installed, so a plain session must import the
standard library, pytest and our own light modules only (STYLE.md, "lazy heavy
imports"; Hypothesis's tests/pytest/test_pytest_detection.py does the same check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("numpy", "PIL", "jsonschema", "orjson", "llama_cpp", "torch")

PYTEST_OWN = frozenset({
    "_pytest", "pytest", "pluggy", "iniconfig", "packaging", "py", "exceptiongroup",
    "tomli", "pygments",
})
"""pytest and what pytest itself imports (exceptiongroup and tomli before Python 3.11)."""

PLAIN = """
import sys
from pathlib import Path

def test_plain():
    Path("modules.txt").write_text("\\n".join(sorted(sys.modules)))
"""


def interpreter_start() -> set[str]:
    """What a bare interpreter of this environment has imported before any code runs
    (site and .pth files: `_distutils_hack` from setuptools): not the plugin's doing."""
    out = subprocess.run([sys.executable, "-c", "import sys; print(*sys.modules)"],
                         check=True, capture_output=True, text=True).stdout
    return {name.split(".")[0] for name in out.split()}


def plain_session(pytester: pytest.Pytester, *args: str) -> set[str]:
    """The top-level modules imported by a session of one trivial test, in a child."""
    pytester.makepyfile(test_plain=PLAIN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    modules = (pytester.path / "modules.txt").read_text().split()
    assert "pytest_vlmbench.plugin" in modules  # the plugin was loaded: the check means it
    return {name.split(".")[0] for name in modules}


def test_a_plain_session_imports_the_standard_library_and_pytest_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # no other plugin's imports
    top = plain_session(pytester, "-p", "pytest_vlmbench.plugin")
    assert not top & set(HEAVY), sorted(top & set(HEAVY))
    allowed = set(sys.stdlib_module_names) | PYTEST_OWN | {"pytest_vlmbench", "test_plain"}
    foreign = top - allowed - interpreter_start()
    assert not foreign, sorted(foreign)


def test_a_plain_session_with_every_installed_plugin_imports_nothing_heavy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As users have it: the plugin from its entry point, beside pytest-benchmark,
    pytest-xdist and Hypothesis."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    top = plain_session(pytester)
    assert not top & set(HEAVY), sorted(top & set(HEAVY))


def test_the_plugin_module_alone_imports_nothing_heavy() -> None:
    """`import pytest_vlmbench.plugin` in a fresh interpreter: what pytest pays before
    any hook runs."""
    code = ("import sys, pytest; before = set(sys.modules); import pytest_vlmbench.plugin; "
            "print(*sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).parent).stdout
    added = {name.split(".")[0] for name in out.split()}
    assert "pytest_vlmbench" in added
    foreign = added - set(sys.stdlib_module_names) - PYTEST_OWN - {"pytest_vlmbench"}
    assert not foreign, sorted(foreign)
