"""The report's trend plots: each metric of the report's benchmarks over the history's runs.

Drawn when a results history is given (`vlmbench report --history URL`, or a pytest run
with --vlm-report and --vlm-history). One plot per metric, one line per benchmark of the
report (matched by compare's key: entry id, model, precision, device, task), over that
benchmark's newest `MAX_RUNS` runs in the history, oldest on the left. Every value is
the one `vlmbench compare` computes from a run's records (the history stores it at
append), so a trend and a comparison never disagree about a run. A metric with no value
in the history for any of the report's benchmarks is left out with a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vlmbench.report import plots
from pytest_vlmbench.report.model import Plot
from pytest_vlmbench.report.sources import Config

if TYPE_CHECKING:
    from pytest_vlmbench.compare.runs import BenchmarkKey
    from pytest_vlmbench.history import TrendPoint

METRICS = ("p50_latency", "p95_latency", "p50_ttft", "tokens_per_s", "prompt_tokens_per_s",
           "success_rate", "parse_rate", "energy_per_token")
"""The metrics drawn, in this order (each only where the history has values)."""
MAX_RUNS = 60
"""Runs per benchmark drawn at most: the newest."""
RECENT_RUNS = 4 * MAX_RUNS
"""History runs read per metric (the newest): room for runs of other benchmarks."""
MAX_LINES = 12
"""Benchmarks per plot at most (the most recently run first); the CSV export has all."""


def draw_trends(history: str, base: Path | None, configs: Sequence[Config],
                out_dir: Path) -> tuple[list[Plot], list[str]]:
    """Write `plots/trend_<metric>.png|svg` for each metric with history values; returns
    the plots and one note per metric left out (or why there are none)."""
    missing = plots.available()
    if missing is not None:
        return [], [f"trend plots left out: {missing}"]
    from pytest_vlmbench.compare.runs import key_of
    from pytest_vlmbench.history import Filters, History, HistoryError
    from pytest_vlmbench.metrics import registry

    keys = {key_of(c.entry): c for c in configs}
    known = registry.compared()
    out: list[Plot] = []
    notes: list[str] = []
    try:
        with History.open(history, base) as store:
            display = store.url.display
            for metric in METRICS:
                if metric not in known:
                    continue
                # the newest runs only: a history of 1,000 runs need not be read whole
                points = [p for p in store.trend(metric, Filters(last=RECENT_RUNS))
                          if p.key in keys and p.value is not None]
                if not points:
                    notes.append(f"trend plot of {metric} left out: the history {display} has "
                                 "no value of it for this report's benchmarks")
                    continue
                drawn = _draw(metric, points, keys, display)
                folder = out_dir / plots.PLOTS_DIR
                folder.mkdir(parents=True, exist_ok=True)
                with plots._style():
                    plots._save(drawn, folder)
                out.append(Plot(drawn.name, drawn.title, Path(plots.PLOTS_DIR, f"{drawn.name}.png"),
                                Path(plots.PLOTS_DIR, f"{drawn.name}.svg"), drawn.caption))
    except HistoryError as exc:
        return [], [f"trend plots left out: {exc}"]
    return out, notes


def _draw(metric: str, points: Sequence[TrendPoint], keys: dict[BenchmarkKey, Config],
          display: str) -> plots.Drawn:
    """One metric's lines: x is the run's place among the runs drawn (start order)."""
    from pytest_vlmbench.metrics import registry

    meta = registry.compared()[metric]
    series: dict[BenchmarkKey, list[TrendPoint]] = {}
    for p in points:
        series.setdefault(p.key, []).append(p)
    for key, items in series.items():
        items.sort(key=lambda p: (p.started_at or "", p.run_id))
        series[key] = items[-MAX_RUNS:]
    newest = sorted(series, key=lambda k: series[k][-1].started_at or "", reverse=True)
    shown = newest[:MAX_LINES]
    runs = sorted({(p.started_at or "", p.run_id) for k in shown for p in series[k]})
    place = {run: i for i, run in enumerate(runs)}
    scale, unit = (100.0, "%") if meta.proportion else (1.0, meta.unit)
    labels = plots.fit_labels([keys[k].label or k.label for k in shown])
    colours = plots._palette(len(shown))
    fig = plots._figure(plots.WIDTH_IN, 3.4 + 0.18 * len(shown))
    ax = plots._grid(fig, 1, 1)[0][0]
    for key, label, colour in zip(shown, labels, colours, strict=True):
        items = series[key]
        xs = [place[(p.started_at or "", p.run_id)] for p in items]
        ys = [scale * float(p.value) for p in items if p.value is not None]
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.1, color=colour, label=label)
        ax.plot(xs[-1:], ys[-1:], marker="o", markersize=7, color=colour, linestyle="none")
    ticks = sorted({0, len(runs) - 1, *range(0, len(runs), max(1, len(runs) // 8))})
    ax.set_xticks(ticks, [_when(*runs[i]) for i in ticks], rotation=30, ha="right")
    ax.grid(True)
    better = "lower is better" if meta.higher_is_worse else "higher is better"
    ax.set_ylabel(f"{metric} ({unit}, {better})" if unit else f"{metric} ({better})")
    ax.set_xlabel("runs in the history, oldest to newest (start, UTC)")
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    title = f"Trend: {metric}"
    fig.suptitle(title)
    caption = (f"{metric} of each benchmark over its newest {MAX_RUNS} runs at most in the "
               f"history {display}: the value `vlmbench compare` computes from each run's "
               "records, stored when the run was appended; large marker: the benchmark's "
               "newest run.")
    if len(series) > len(shown):
        caption += (f" {len(series) - len(shown)} less recently run benchmarks not drawn "
                    "(`vlmbench history export` has them).")
    return plots.Drawn(f"trend_{metric}", fig, title, caption)


def _when(started_at: str, run_id: str) -> str:
    """A run's tick: `2026-12-03 00:12` (the stored start is ISO UTC), else its id."""
    if len(started_at) >= 16 and started_at[10] == "T":
        return f"{started_at[:10]} {started_at[11:16]}"
    return started_at[:10] or run_id[:15]
