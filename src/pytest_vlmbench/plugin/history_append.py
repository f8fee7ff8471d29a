"""--vlm-history: append the finished run to the results history.

The run is appended once, at the end of the session, by whoever holds the whole run:
a plain session, or the pytest-xdist controller after merging its workers (never a
worker). It is read back from the results file on disk, so the history holds exactly
what `vlmbench history import` of that file would. The append is one transaction: an
interrupted append leaves nothing, and an interrupted run (Ctrl-C) is appended whole,
marked incomplete, so it is never a baseline. A history that cannot be written is one
red line; the results file is on disk already and the exit status is the benchmarks'.
"""

from __future__ import annotations

from pathlib import Path

from pytest_vlmbench.plugin.options import Options


def append_run(options: Options, results_path: Path) -> tuple[str, bool]:
    """Append the results file to the history; (the line for the terminal, failed)."""
    from pytest_vlmbench.history import History, HistoryError
    from pytest_vlmbench.history.urls import redact
    from pytest_vlmbench.results.document import ResultsError, load_with_records

    assert options.history is not None
    try:
        doc, records = load_with_records(results_path, "the results history")
        with History.open(options.history, options.history_base) as history:
            result = history.append(doc, records, source=f"pytest: {results_path}")
            where = history.url.display
    except (HistoryError, ResultsError, OSError) as exc:
        return f"history not written: {redact(str(exc))}", True
    except Exception as exc:  # a database driver's own error: still one line, no password
        return f"history not written: {type(exc).__name__}: {redact(str(exc))}", True
    if result.skipped:
        return f"history: {where}: {result.skipped}", False
    return (f"history: appended run {result.run_id} ({_count(result.benchmarks, 'benchmark')}, "
            f"{_count(result.records, 'record')}) to {where} in {result.seconds:.2f} s"
            + (f"; {result.left_out}" if result.left_out else "")), False


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
