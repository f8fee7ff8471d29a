"""Tables: the one renderer for text tables, and the end-of-session benchmark table.

`aligned` and `markdown` lay out any table (the terminal summary's and compare's use
them). `render` is the benchmark table: one row per benchmark, a column per metric the
registry shows in the table (metrics/registry.py), so a metric declared by a plugin
gets its column too. `ok/n` is successful over measured requests: the latency, TTFT
and token columns are computed over the successful ones only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from pytest_vlmbench.metrics import registry
from pytest_vlmbench.results.models import BenchmarkEntry

Row = Sequence[str]


def aligned(headers: Row, rows: Sequence[Row], *, right: Collection[int],
            marks: Sequence[str] | None = None) -> list[str]:
    """Text lines: the header, a rule of dashes, then the rows; columns padded to their
    widest cell, those in `right` right-aligned. `marks` (one per row) prefix each row
    with a two-character flag column (compare's `!!`)."""
    table = [headers, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    prefix = [""] if marks is None else ["   ", *(f"{m:2} " for m in marks)]
    lines = []
    for n, row in enumerate(table):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append(prefix[n if marks is not None else 0] + "  ".join(cells).rstrip())
        if n == 0:
            lines.append(prefix[0] + "  ".join("-" * w for w in widths))
    return lines


def markdown(headers: Row, rows: Sequence[Row], *, right: Collection[int]) -> list[str]:
    """A GitHub-flavoured markdown table (cells are written as given: escape `|`)."""
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


LEADING = ("benchmark", "model", "precision", "ok/n")


def headers() -> tuple[str, ...]:
    columns = registry.columns()
    return (*LEADING, *(m.column.header for m in columns if m.column), "SLO")


def rows(benchmarks: Sequence[BenchmarkEntry]) -> list[tuple[str, ...]]:
    columns = [m for m in registry.columns() if m.column]
    out: list[tuple[str, ...]] = []
    for b in benchmarks:
        s = b["summary"]
        slo = "-" if b.get("slo_passed") is None else ("pass" if b["slo_passed"] else "FAIL")
        name = b["id"].split("::")[-1]
        out.append((
            name if b["status"] == "complete" else f"{name} ({b['status']})",
            b["model"], b["precision"], f"{s['succeeded']}/{s['requests']}",
            *(m.column.cell(m.value(s)) for m in columns if m.column), slo,
        ))
    return out


def render(benchmarks: Sequence[BenchmarkEntry]) -> list[str]:
    """The benchmark table's lines: names and models left-aligned, figures right."""
    head = headers()
    return aligned(head, rows(benchmarks), right=range(3, len(head)))
