"""What the history hands back: runs, trend points, append results, and the filters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_vlmbench.compare.runs import BenchmarkKey


@dataclass(frozen=True)
class Filters:
    """Which runs and benchmarks a listing, trend or export covers."""

    benchmark: str | None = None
    """A substring of the entry id, or a glob (of the whole id) when it has * ? [."""
    model: str | None = None
    device: str | None = None
    precision: str | None = None
    task: str | None = None
    commit: str | None = None
    """A prefix of environment.git.commit."""
    last: int | None = None
    """Only the newest N runs (after the other filters)."""


EVERYTHING = Filters()
"""No filter: every run and benchmark."""


@dataclass(frozen=True)
class RunRow:
    """One run in the history."""

    run_id: str
    started_at: str | None
    finished_at: str | None
    status: str
    complete: bool
    commit: str | None
    branch: str | None
    device: str | None
    hostname: str | None
    source: str | None
    appended_at: str
    benchmarks: int
    records: int


@dataclass(frozen=True)
class TrendPoint:
    """One benchmark's value of a metric in one run."""

    run_id: str
    started_at: str | None
    commit: str | None
    key: BenchmarkKey
    value: float | None
    n: int
    absent_reason: str | None


@dataclass(frozen=True)
class AppendResult:
    run_id: str
    benchmarks: int
    records: int
    seconds: float
    skipped: str | None = None
    """Why nothing was written (the run is in the history already)."""
    left_out: str | None = None
    """What was not written because the history held it already (some entries)."""


def run_row(row: Sequence[Any]) -> RunRow:
    return RunRow(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7],
                  row[8], row[9], row[10], int(row[11]), int(row[12]))
