"""The project a `vlmbench` command runs in, found the way pytest finds it.

`vlmbench models` and `vlmbench compare latest` must read the catalog and the output
directory that `pytest` started in the same place would use, or they describe another
project than the one benchmarked. pytest has no public API for its ini discovery
(`_pytest.config.findpaths` is private), so the small part we need is repeated here,
in pytest's order and with its parsers (iniconfig, tomllib):

- walk up from the starting directory; in each directory the first of `pytest.toml`,
  `.pytest.toml`, `pytest.ini`, `.pytest.ini` (always the ini file, even without a
  section), `pyproject.toml` with `[tool.pytest.ini_options]` or `[tool.pytest]`,
  `tox.ini` with `[pytest]`, `setup.cfg` with `[tool:pytest]` is the ini file, and its
  directory the rootdir (the other config files of that directory are parsed too, as
  pytest does, so one it cannot parse is an error here as well);
- else the first `pyproject.toml` seen (without pytest settings) is the ini file;
- else the first directory upward with a `setup.py` is the rootdir; else the start.

Not repeated: pytest's `-c`, `--rootdir`, `-o` and PYTEST_ADDOPTS, and rootdirs
derived from test paths given on pytest's command line (we start from one directory).

Paths in ini values are relative to the ini file's directory (`~` to the home), as
`Options.from_config` reads them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import iniconfig

from pytest_vlmbench.errors import UserInputError
from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG, PROJECT_CATALOG
from pytest_vlmbench.results.naming import DEFAULT_OUT_DIR

CATALOG_KEY = "vlm_catalog"
OUT_KEY = "vlm_out"
HISTORY_KEY = "vlm_history"


class ProjectError(UserInputError):
    """An ini file pytest would also refuse (unparsable, a misplaced section)."""


Settings = dict[str, object]


def _ini(path: Path) -> iniconfig.IniConfig:
    try:
        return iniconfig.IniConfig(str(path))
    except iniconfig.ParseError as exc:
        raise ProjectError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read ({exc})") from None


def _toml(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read ({exc})") from None


def _section(path: Path, name: str) -> Settings | None:
    config = _ini(path)
    return dict(config[name].items()) if name in config else None


def _pytest_ini(path: Path) -> Settings | None:
    return _section(path, "pytest") or {}


def _tox_ini(path: Path) -> Settings | None:
    return _section(path, "pytest")


def _setup_cfg(path: Path) -> Settings | None:
    config = _ini(path)
    if "tool:pytest" in config:
        return dict(config["tool:pytest"].items())
    if "pytest" in config:  # pytest refuses it too
        raise ProjectError(f"{path}: [pytest] section in setup.cfg files is no longer "
                           "supported, change to [tool:pytest] instead")
    return None


def _pytest_toml(path: Path) -> Settings | None:
    table = _toml(path).get("pytest")
    return dict(table) if isinstance(table, dict) else {}


def _pyproject(path: Path) -> Settings | None:
    tool = _toml(path).get("tool")
    pytest_table = tool.get("pytest") if isinstance(tool, dict) else None
    if not isinstance(pytest_table, dict):
        return None
    native = {k: v for k, v in pytest_table.items() if k != "ini_options"}
    ini_options = pytest_table.get("ini_options")
    if native and ini_options is not None:
        raise ProjectError(f"{path}: cannot use both [tool.pytest] and "
                           "[tool.pytest.ini_options]")
    if native:
        return native
    return dict(ini_options) if isinstance(ini_options, dict) else None


#: pytest's config files, in its order of precedence within one directory (pytest 9).
LOADERS: dict[str, Callable[[Path], Settings | None]] = {
    "pytest.toml": _pytest_toml,
    ".pytest.toml": _pytest_toml,
    "pytest.ini": _pytest_ini,
    ".pytest.ini": _pytest_ini,
    "pyproject.toml": _pyproject,
    "tox.ini": _tox_ini,
    "setup.cfg": _setup_cfg,
}


@dataclass(frozen=True)
class Resolved:
    """A path and where it came from, said to the user: a wrong catalog is found fast
    when the output names its origin."""

    path: Path
    source: str
    """e.g. `from pytest.ini vlm_catalog`, `embedded`."""


@dataclass(frozen=True)
class Project:
    """pytest's rootdir and ini file for a session started in one directory."""

    rootdir: Path
    inipath: Path | None
    settings: Mapping[str, object] = field(default_factory=dict)
    """The ini file's pytest settings (strings, or native TOML values)."""

    def value(self, key: str) -> str | None:
        """An ini value as text; None when unset or empty (as Options reads it)."""
        raw = self.settings.get(key)
        if raw is None:
            return None
        text = str(raw).strip()
        return text or None

    def _ini_path(self, key: str) -> Resolved | None:
        text = self.value(key)
        if text is None or self.inipath is None:
            return None
        path = Path(text).expanduser()
        return Resolved(self.inipath.parent / path, f"from {self.inipath.name} {key}")

    def history(self) -> tuple[str, Path, str] | None:
        """vlm_history as pytest would read it: (the value, the directory a relative
        SQLite path is relative to, where it came from); None when unset."""
        text = self.value(HISTORY_KEY)
        if text is None:
            return None
        base = self.inipath.parent if self.inipath is not None else self.rootdir
        name = self.inipath.name if self.inipath is not None else "ini"
        return text, base, f"from {name} {HISTORY_KEY}"

    def catalog(self) -> Resolved:
        """The catalog pytest would load: vlm_catalog, else the rootdir's
        benchmarks/models.toml if it exists, else the one the package ships."""
        configured = self._ini_path(CATALOG_KEY)
        if configured is not None:
            return configured
        own = self.rootdir / PROJECT_CATALOG
        if own.exists():
            return Resolved(own, f"the project's {PROJECT_CATALOG.as_posix()}")
        return Resolved(EMBEDDED_CATALOG, "embedded")

    def out_dir(self) -> Resolved:
        """Where pytest writes results: vlm_out's directory, else .vlmbench under the
        rootdir."""
        configured = self._ini_path(OUT_KEY)
        if configured is not None:
            return Resolved(configured.path.parent, configured.source)
        return Resolved(self.rootdir / DEFAULT_OUT_DIR,
                        f"the default {DEFAULT_OUT_DIR}/ under the rootdir")


def find_project(start: Path | None = None) -> Project:
    """The project pytest would see if started (without arguments) in `start`, the
    current directory by default. ProjectError for an ini file pytest would refuse."""
    here = (start or Path.cwd()).absolute()
    first_pyproject: Path | None = None
    names = list(LOADERS)
    for base in (here, *here.parents):
        for index, (name, loader) in enumerate(LOADERS.items()):
            candidate = base / name
            if not candidate.is_file():
                continue
            if name == "pyproject.toml" and first_pyproject is None:
                first_pyproject = candidate
            settings = loader(candidate)
            if settings is not None:
                for other in names[index + 1:]:  # pytest parses these too (to name
                    if (base / other).is_file():  # them as ignored): their errors stop it
                        LOADERS[other](base / other)
                return Project(base, candidate, settings)
    if first_pyproject is not None:
        return Project(first_pyproject.parent, first_pyproject, {})
    for base in (here, *here.parents):
        if (base / "setup.py").is_file():
            return Project(base, None, {})
    return Project(here, None, {})
