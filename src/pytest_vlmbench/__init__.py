"""pytest-vlmbench: benchmark vision-language models as ordinary pytest tests.

The pytest plugin lives in `pytest_vlmbench.plugin` (entry point `pytest11`); this
package root stays import-light so that loading the plugin never imports a backend.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-vlmbench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
