"""Tests for project.py: the ini file, rootdir, catalog and output directory that a
`vlmbench` command reads must be the ones pytest started in the same place reads.

Each layout is checked against pytest itself (`pytester.parseconfig()`: its public
`rootpath` and `inipath`), so a difference from pytest's discovery fails here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG
from pytest_vlmbench.project import Project, ProjectError, find_project

LAYOUTS: dict[str, tuple[Mapping[str, str], str, str, str | None]] = {
    # id: (files, where to start, expected rootdir, expected ini file)
    "pytest.ini-wins-over-pyproject": (
        {"pyproject.toml": "[tool.pytest.ini_options]\nvlm_out = 'a.json'\n",
         "pytest.ini": "[pytest]\nvlm_out = b.json\n"}, ".", ".", "pytest.ini"),
    "pytest.ini-without-section": (
        {"pytest.ini": "", "tox.ini": "[pytest]\n"}, ".", ".", "pytest.ini"),
    "hidden-pytest.ini": ({".pytest.ini": "[pytest]\n"}, ".", ".", ".pytest.ini"),
    "pytest.toml": ({"pytest.toml": "[pytest]\nvlm_out = 'a.json'\n",
                     "pytest.ini": "[pytest]\n"}, ".", ".", "pytest.toml"),
    "walks-up": ({"pytest.ini": "[pytest]\n", "sub/deeper/x.txt": ""}, "sub/deeper", ".",
                 "pytest.ini"),
    "nearest-wins": ({"pytest.ini": "[pytest]\n", "sub/tox.ini": "[pytest]\n"}, "sub",
                     "sub", "sub/tox.ini"),
    "tox.ini-without-section-is-skipped": (
        {"setup.cfg": "[tool:pytest]\n", "sub/tox.ini": "[flake8]\n"}, "sub", ".",
        "setup.cfg"),
    "pyproject-without-pytest-is-the-fallback": (
        {"sub/pyproject.toml": "[project]\nname = 'x'\n"}, "sub", "sub",
        "sub/pyproject.toml"),
    "pyproject-native-tool.pytest": (
        {"pyproject.toml": "[tool.pytest]\nvlm_out = 'a.json'\n"}, ".", ".",
        "pyproject.toml"),
    "setup.py-marks-the-rootdir": ({"setup.py": "", "sub/x.txt": ""}, "sub", ".", None),
    "nothing-the-start": ({"sub/x.txt": ""}, "sub", "sub", None),
}


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_the_same_ini_and_rootdir_as_pytest(
    layout: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, start, rootdir, inifile = LAYOUTS[layout]
    root = pytester.path
    _write(root, files)
    monkeypatch.chdir(root / start)
    project = find_project()
    assert project.rootdir == root / rootdir
    assert project.inipath == (None if inifile is None else root / inifile)
    config = pytester.parseconfig()  # pytest itself, started in the same directory
    assert (config.rootpath, config.inipath) == (project.rootdir, project.inipath)


def test_ini_paths_are_relative_to_the_ini_file(tmp_path: Path) -> None:
    _write(tmp_path, {"pyproject.toml": """\
        [tool.pytest.ini_options]
        vlm_catalog = "conf/models.toml"
        vlm_out = "runs/mine.json"
        """, "sub/x.txt": ""})
    project = find_project(tmp_path / "sub")
    catalog = project.catalog()
    assert catalog.path == tmp_path / "conf" / "models.toml"
    assert catalog.source == "from pyproject.toml vlm_catalog"
    out = project.out_dir()
    assert out.path == tmp_path / "runs"
    assert out.source == "from pyproject.toml vlm_out"


def test_a_tilde_is_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _write(tmp_path, {"pytest.ini": "[pytest]\nvlm_catalog = ~/cat.toml\n"})
    assert find_project(tmp_path).catalog().path == tmp_path / "home" / "cat.toml"


def test_defaults_without_settings(tmp_path: Path) -> None:
    """No vlm_catalog: benchmarks/models.toml under the rootdir when it exists, else the
    embedded catalog; no vlm_out: .vlmbench under the rootdir. An empty value is unset."""
    _write(tmp_path, {"pytest.ini": "[pytest]\nvlm_catalog =\n", "sub/x.txt": ""})
    project = find_project(tmp_path / "sub")
    assert project.catalog().path == EMBEDDED_CATALOG
    assert project.catalog().source == "embedded"
    assert project.out_dir().path == tmp_path / ".vlmbench"
    _write(tmp_path, {"benchmarks/models.toml": ""})
    assert project.catalog().path == tmp_path / "benchmarks" / "models.toml"
    assert project.catalog().source == "the project's benchmarks/models.toml"


def test_native_toml_values_are_text() -> None:
    project = Project(Path("/p"), Path("/p/pytest.toml"), {"vlm_out": 7, "vlm_catalog": ""})
    assert project.value("vlm_out") == "7"
    assert project.value("vlm_catalog") is None
    assert project.value("vlm_models") is None


@pytest.mark.parametrize(("files", "says"), [
    ({"pytest.ini": "[pytest\n"}, "pytest.ini"),
    ({"pyproject.toml": "[tool.pytest.ini_options\n"}, "pyproject.toml"),
    ({"setup.cfg": "[pytest]\n"}, "change to [tool:pytest]"),
    ({"pytest.ini": "[pytest]\n", "pyproject.toml": "[tool.pytest\n"}, "pyproject.toml"),
    ({"pyproject.toml": "[tool.pytest]\na = '1'\n[tool.pytest.ini_options]\nb = '2'\n"},
     "cannot use both"),
], ids=["ini", "toml", "setup.cfg-pytest", "ignored-one-too", "both-toml-tables"])
def test_an_ini_file_pytest_refuses_is_an_error(
    tmp_path: Path, files: Mapping[str, str], says: str
) -> None:
    _write(tmp_path, files)
    with pytest.raises(ProjectError) as info:
        find_project(tmp_path)
    assert says in str(info.value)
    assert "\n" not in str(info.value).strip()
