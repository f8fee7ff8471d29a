"""The results history: runs appended to a SQLite file or a PostgreSQL database, for
trends across runs and baselines of the newest N runs (`--vlm-compare=history:N`).

    from pytest_vlmbench.history import Filters, History
    with History.open("postgresql://ci@db/bench") as history:
        history.import_file(Path(".vlmbench/results.json"))
        history.trend("p95_latency", Filters(benchmark="caption"))

Modules: urls (where the history is, and keeping its password out of every message),
schema (the tables, as versioned migrations), db (one connection, either dialect),
store (History: append, runs, trend, baseline, export, check).
"""

from __future__ import annotations

from pytest_vlmbench.history.store import (
    AppendResult,
    Filters,
    History,
    RunRow,
    TrendPoint,
)
from pytest_vlmbench.history.urls import HistoryError, HistoryURL, parse_url, redact

__all__ = ["AppendResult", "Filters", "History", "HistoryError", "HistoryURL", "RunRow",
           "TrendPoint", "parse_url", "redact"]
