"""The results document on disk: its schema (the authority), writing and loading it,
typed read models of its entries and records, file naming, and merging pytest-xdist
workers' documents."""

from pytest_vlmbench.results.document import ResultsError

__all__ = ["ResultsError"]
