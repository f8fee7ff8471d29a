"""`vlmbench report` and `--vlm-report`: read results documents, write the report.

Into one directory: report.md, report.html (self-contained: plots inlined, tables
sortable, no network), summary.csv, records.csv, videos.csv (when a benchmark ran on
video scenes) and plots/*.png|svg (with the `report` extra). The content is built once
as a `ReportDoc` and written as markdown and HTML.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vlmbench.report import cost, html, markdown, plots, recommend, sections, tidy
from pytest_vlmbench.report.figures import all_figures, by_name, headline, score_figures
from pytest_vlmbench.report.model import Cell, Paragraph, ReportDoc, Section, Table
from pytest_vlmbench.report.sources import Config, Source, configs_of, load_sources, newest
from pytest_vlmbench.results.document import write_text_atomic


@dataclass
class ReportOptions:
    """What a report is asked for: prices for the cost section, SLO limits for the
    "best under an SLO" rule, baseline runs to compare the newest input with, plots."""

    prices: cost.Prices = field(default_factory=lambda: cost.Prices(
        cost.DEFAULT_ELECTRICITY_PRICE, cost.DEFAULT_CURRENCY, [], electricity_given=False))
    slos: Mapping[str, float] | None = None
    baseline: Sequence[str] = ()
    plots: bool = True
    title: str = "pytest-vlmbench report"
    history: str | None = None
    """A results history (URL or SQLite file): adds a trend plot per metric."""
    history_base: Path | None = None
    """What a relative SQLite path in `history` is relative to (None: the current
    directory)."""


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path]
    notes: list[str]
    configs: int
    entries: int
    records: int
    seconds: float


def _comparison(baseline: Sequence[str], current: Source,
                options: ReportOptions) -> tuple[dict[str, Any], list[str]]:
    """compare's JSON for the newest input against the baseline runs (compare's default
    rules and settings); `history:N` takes them from the report's history."""
    from pytest_vlmbench import compare

    run = compare.load_run(current.path)
    if len(baseline) == 1 and baseline[0].startswith("history:"):
        from pytest_vlmbench.history import History, HistoryError
        from pytest_vlmbench.plugin.gate import GateError, history_runs

        if options.history is None:
            raise ValueError("--baseline history:N needs a results history (--history URL)")
        try:
            n = history_runs(baseline[0], compare.DEFAULT_BASELINE_RUNS)
            assert n is not None
            with History.open(options.history, options.history_base) as store:
                base = store.baseline(run.doc, n, exclude_run_id=run.run_id)
        except (HistoryError, GateError) as exc:
            raise ValueError(str(exc)) from None
    else:
        base = compare.load_baseline(list(baseline), exclude_run_id=run.run_id)
    comparison = compare.compare_runs(base, run, None)
    return compare.to_json(comparison), list(comparison.notes)


def _comparison_section(data: Mapping[str, Any]) -> Section:
    rows = []
    for pair in data.get("pairs") or []:
        bench = pair["benchmark"]
        name = bench.get("id", str(bench)) if isinstance(bench, Mapping) else str(bench)
        for m in pair["metrics"]:
            ci = m.get("ci")
            change = m.get("change_pct")
            rows.append([
                Cell(name.split("::")[-1], name), Cell(m["metric"], m["metric"]),
                Cell(_num(m.get("baseline")), m.get("baseline")),
                Cell(_num(m.get("current")), m.get("current")),
                Cell("-" if change is None else f"{change:+.1f}%", change),
                Cell("-" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]", None),
                Cell(str(m["verdict"]) + (" (gated)" if m.get("gated") else ""),
                     str(m["verdict"])),
            ])
    table = Table("comparison", f"current run {data['current']['run_id']} against "
                  f"{len(data['baseline']['runs'])} baseline run(s)",
                  ["benchmark", "metric", "baseline", "current", "change", "interval",
                   "verdict"], rows, {2, 3, 4})
    table.notes.append("interval: compare's confidence interval of the effect "
                       "(docs/compare.md says how each metric is judged)")
    return Section("comparison", "Against the baseline", [
        Paragraph(f"{data['headline']}"), table])


def _num(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.4g}"


def build(inputs: Sequence[str | Path], out_dir: Path,
          options: ReportOptions | None = None) -> ReportResult:
    """Write the report of `inputs` (results files or directories) into out_dir."""
    options = options or ReportOptions()
    t0 = time.perf_counter()
    sources = load_sources(inputs)
    every = configs_of(sources)
    shown = newest(every)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    notes: list[str] = []

    figures = [*all_figures(), *score_figures([c.summary for c in every])]
    tidy.write_summary(out_dir / "summary.csv", every, shown, figures)
    files.append(out_dir / "summary.csv")
    samples = tidy.scan(out_dir / "records.csv", sources, every, shown)
    files.append(out_dir / "records.csv")
    if tidy.write_videos(out_dir / "videos.csv", shown):
        files.append(out_dir / "videos.csv")
    else:  # a reused directory: an earlier report's file would be taken for this one's
        (out_dir / "videos.csv").unlink(missing_ok=True)

    comparison: dict[str, Any] | None = None
    if options.baseline:
        newest_source = max(sources, key=lambda s: s.doc["started_at"])
        comparison, compare_notes = _comparison(options.baseline, newest_source, options)
        notes += [f"compare: {n}" for n in compare_notes]

    drawn: list[Any] = []
    if options.plots:
        drawn, plot_notes = plots.draw(shown, samples, out_dir, comparison=comparison)
        notes += plot_notes
        for p in drawn:
            files += [out_dir / p.png, out_dir / p.svg]
    else:
        notes.append("plots not drawn (asked not to)")
    trend_plots: list[Any] = []
    if options.history is not None and options.plots:
        from pytest_vlmbench.report.trends import draw_trends

        trend_plots, trend_notes = draw_trends(options.history, options.history_base, shown,
                                               out_dir)
        notes += trend_notes
        for p in trend_plots:
            files += [out_dir / p.png, out_dir / p.svg]
    kept = {p.name for p in [*drawn, *trend_plots]}
    stale = [*(n for n, _ in plots.PLOTS),
             *(p.stem for p in (out_dir / plots.PLOTS_DIR).glob("trend_*.png"))]
    for name in stale:  # an earlier report's plots are not this one's
        if name not in kept:
            for suffix in (".png", ".svg"):
                (out_dir / plots.PLOTS_DIR / f"{name}{suffix}").unlink(missing_ok=True)

    doc = ReportDoc(options.title)
    doc.sections += sections.headline_sections(shown)
    doc.sections.append(recommend.section(shown, slos=options.slos))
    named = by_name()
    for extra in (sections.task_section(shown), sections.level_section(shown, named),
                  sections.video_section(shown, named)):
        if extra is not None:
            doc.sections.append(extra)
    doc.sections.append(cost.section(shown, options.prices))
    if comparison is not None:
        doc.sections.append(_comparison_section(comparison))
    if drawn:
        doc.sections.append(Section("plots", "Plots", list(drawn)))
    if trend_plots:
        doc.sections.append(Section("trends", "Trends in the history", list(trend_plots)))
    doc.sections.append(sections.notes_section(sources, shown, notes))
    doc.sections.append(sections.sources_section(sources, shown, every))
    doc.sections.append(sections.definitions_section(
        [*headline(), *(f for f in all_figures()
                        if f.name not in {h.name for h in headline()}),
         *score_figures([c.summary for c in shown])]))

    write_text_atomic(out_dir / "report.md", markdown.render(doc))
    write_text_atomic(out_dir / "report.html", html.render(doc, out_dir))
    files[:0] = [out_dir / "report.md", out_dir / "report.html"]
    n_records = sum(int(c.entry["records"]["measured"]) + int(c.entry["records"]["warmup"])
                    for c in every)
    return ReportResult(out_dir, files, notes, len(shown), len(every), n_records,
                        time.perf_counter() - t0)


__all__ = ["Config", "ReportOptions", "ReportResult", "build"]
