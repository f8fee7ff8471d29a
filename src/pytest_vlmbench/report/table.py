"""Tables: the one renderer for text tables, and the end-of-session benchmark table.

`aligned` and `markdown` lay out any table (the terminal summary's and compare's use
them). `render` is the benchmark table: one row per benchmark, a column per metric the
registry shows in the table (metrics/registry.py), so a metric declared by a plugin
gets its column too. `ok/n` is successful over measured requests: the latency, TTFT
and token columns are computed over the successful ones only. The serving columns
(level, TPOT, ITL, output tokens/s, goodput, cold request: `Column.optional`) appear
only in a table with a benchmark that ran under a load pattern or against a server, so
the table of in-process runs stays as it was. `render_windows` is the
power windows table: the stages a test measured with `vlm_power.measure(name)`.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from typing import Any

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
SERVING_KEYS = ("itl_s", "cold", "server", "client_lag_s")
"""Summary keys only a server backend or a load pattern gives."""


def _serving(benchmarks: Sequence[BenchmarkEntry]) -> bool:
    return any("load" in b or any(k in b["summary"] for k in SERVING_KEYS)
               for b in benchmarks)


def _columns(benchmarks: Sequence[BenchmarkEntry]) -> list[registry.Metric]:
    """The registry's table columns; an optional one only in a serving table (above)
    where some benchmark has its figure."""
    serving = _serving(benchmarks)
    return [m for m in registry.columns() if m.column and (not m.column.optional or (
        serving and any(m.value(b["summary"]) is not None for b in benchmarks)))]


def _level(benchmarks: Sequence[BenchmarkEntry]) -> bool:
    return any("load" in b for b in benchmarks)


def headers(benchmarks: Sequence[BenchmarkEntry] = ()) -> tuple[str, ...]:
    """The header row; with no benchmarks, the columns every table has."""
    level = ("level",) if _level(benchmarks) else ()
    return (*LEADING, *level, *(m.column.header for m in _columns(benchmarks) if m.column),
            "SLO")


def rows(benchmarks: Sequence[BenchmarkEntry]) -> list[tuple[str, ...]]:
    columns = _columns(benchmarks)
    level = _level(benchmarks)
    out: list[tuple[str, ...]] = []
    for b in benchmarks:
        s = b["summary"]
        slo = "-" if b.get("slo_passed") is None else ("pass" if b["slo_passed"] else "FAIL")
        name = b["id"].split("::")[-1]
        load = b.get("load")
        out.append((
            name if b["status"] == "complete" else f"{name} ({b['status']})",
            b["model"], b["precision"], f"{s['succeeded']}/{s['requests']}",
            *((load["label"] if load else "seq",) if level else ()),
            *(m.column.cell(m.value(s)) for m in columns if m.column), slo,
        ))
    return out


def render(benchmarks: Sequence[BenchmarkEntry]) -> list[str]:
    """The benchmark table's lines: names and models left-aligned, figures right."""
    head = headers(benchmarks)
    start = 5 if _level(benchmarks) else 4  # ok/n onwards; the level is a name
    return aligned(head, rows(benchmarks), right={3, *range(start, len(head))})


# ------------------------------------------------------------------- power windows

WINDOW_HEADERS = ("test", "window", "n", "duration s", "energy J", "avg W", "peak W",
                  "above-idle J", "SLO")
"""One row per (test, window name); a name measured several times is n windows. The
figures are the median over those windows (duration, energy, average power, above-idle
energy) and the highest reading (peak); `-` where no window has the figure."""


def _median(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(found) if found else None


def _figure(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _window_slo(windows: Sequence[Mapping[str, Any]]) -> str:
    passed = [w.get("slo_passed") for w in windows if w.get("slo_passed") is not None]
    if not passed:
        return "-"
    failed = sum(1 for p in passed if p is False)
    return f"FAIL {failed}/{len(passed)}" if failed else "pass"


def render_windows(windows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The power windows table (the results' `windows`, as vlm_power wrote them): a
    title, the rows, and for windows without energy a line saying why it is absent.
    No lines when there are no windows."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for w in windows:
        groups.setdefault((str(w["test"]), str(w["name"])), []).append(w)
    if not groups:
        return []
    rows: list[tuple[str, ...]] = []
    absent: dict[str, list[str]] = {}
    for (test, name), items in groups.items():
        peaks = [w.get("peak_power_w") for w in items]
        peak = max((p for p in peaks if isinstance(p, int | float)), default=None)
        rows.append((
            test.split("::")[-1], name, str(len(items)),
            _figure(_median([w.get("duration_s") for w in items]), ".3f"),
            _figure(_median([w.get("energy_j") for w in items]), ".4g"),
            _figure(_median([w.get("avg_power_w") for w in items]), ".3g"),
            _figure(peak, ".3g"),
            _figure(_median([w.get("above_idle_energy_j") for w in items]), ".4g"),
            _window_slo(items),
        ))
        for w in items:
            if w.get("energy_j") is None:
                why = str(w.get("absent_reason") or "the window has no energy figure")
                label = f"{test.split('::')[-1]} [window {name}]"
                if label not in absent.setdefault(why, []):
                    absent[why].append(label)
    lines = [f"power windows ({len(windows)} measured):",
             *aligned(WINDOW_HEADERS, rows, right=range(2, len(WINDOW_HEADERS)))]
    for why, labels in absent.items():
        lines.append(f"energy absent, not zero, in {', '.join(labels)}: {why}")
    return lines
