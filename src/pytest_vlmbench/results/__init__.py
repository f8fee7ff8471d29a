"""The results document on disk: its schema (the authority), writing and loading it
(document.py), typed read models of its entries and records (models.py), file naming
(naming.py) and merging pytest-xdist workers' documents (merge.py).

Import-light: pytest loads naming.py at start-up, so document.py (orjson, jsonschema
on first validation) is imported only when `ResultsError` is asked for here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ResultsError"]


def __getattr__(name: str) -> Any:
    if name == "ResultsError":
        from pytest_vlmbench.results.document import ResultsError

        return ResultsError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
