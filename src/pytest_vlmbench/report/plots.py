"""The report's plots: PNG and SVG files drawn with matplotlib (the `report` extra).

matplotlib is imported only when a report draws (never at import), through `Figure`
and the Agg/SVG canvases: no pyplot, no global figure state, no display. Each plot is
drawn only when its data exists; one whose data is absent is left out with a note
saying why, never drawn empty. A bar chart where some configurations lack the value
draws the others and its caption names the missing ones. Every plotted number is a
summary figure (its path is in the caption) or, for the latency distributions, the
records the summaries were computed from.

Readability: configurations are rows of horizontal charts (long labels never collide),
a figure grows with its rows, labels are shortened to `LABEL_CHARS` (`fit_labels`: the
ends stay, and labels stay apart), point labels that would overlap are left off, and a
model keeps its colour in every plot. SVG glyphs are paths (the HTML page renders the
same offline) and the files are reproducible (a fixed hash salt, no dates).

Speed: text is most of a plot's cost (matplotlib 3.11 lays out and renders each text on
its own), so each figure is laid out once for both files, bars carry their values only
up to `MAX_VALUE_LABELS` rows, and a large report shares its plots among processes
(`PARALLEL_FROM`).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pytest_vlmbench.report import figures
from pytest_vlmbench.report.model import Plot
from pytest_vlmbench.report.sources import Config

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

PLOTS_DIR = "plots"
DPI = 120
LABEL_CHARS = 40
"""Longer configuration labels are shortened with an ellipsis (the tables have them
whole)."""
ELLIPSIS = "\u2026"
ROW_IN = 0.26
"""Inches per bar row: a chart grows with its configurations."""
WIDTH_IN = 8.0
MAX_ANNOTATED = 12
"""A scatter labels every point up to this many, else only its Pareto front."""
MAX_PANELS = 8
"""Rating histograms drawn at most (the tables have every score's mean)."""
MAX_VALUE_LABELS = 24
"""Bars are labelled with their values up to this many rows; beyond, the tables have the
values (each label is a text to lay out and draw, and texts are most of a plot's cost)."""
MAX_PRECISION_GROUPS = 16
MAX_SCORE_PANELS = 4
MAX_COMPARISON_ROWS = 40
MAX_COMPARISON_METRICS = 6
INSTALL = "pip install 'pytest-vlmbench[report]'"

STAGES = ("template", "image_encode", "prefill", "decode", "sample", "detokenize", "queue",
          "server_prefill", "server_decode")
"""The latency's disjoint stages in request order (summary.stages_s); `prepare` (image
preparation) is outside the latency and not drawn."""
UNATTRIBUTED = "unattributed"

VERDICT_COLOURS = {"regressed": "#d62728", "improved": "#2ca02c", "unchanged": "#7f7f7f",
                   "inconclusive": "#c7c7c7"}

_STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.titley": 1.0,  # a fixed title place: placing it measures every tick label
    "axes.labelsize": 8.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "svg.hashsalt": "pytest-vlmbench",
    "svg.fonttype": "path",
    "path.simplify": True,
}


@dataclass(frozen=True)
class Samples:
    """What the records give for one configuration (a Config.key): the successful
    measured requests' latencies and TTFTs in seconds, how many measured requests
    failed, and each score's per-request values."""

    latency_s: list[float]
    ttft_s: list[float]
    failed: int
    scores: dict[str, list[float]]


@dataclass(frozen=True)
class Drawn:
    """A plot drawn in memory, not yet written (`draw` writes it; tests measure it)."""

    name: str
    figure: MplFigure
    title: str
    caption: str


Result = tuple["MplFigure", str, str] | str
"""(figure, title, caption), or why the plot is left out."""


def available() -> str | None:
    """None when matplotlib imports; else why the report has no plots."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed: {INSTALL}"
    return None


def draw(configs: Sequence[Config], samples: Mapping[str, Samples], out_dir: Path, *,
         comparison: Mapping[str, Any] | None = None,
         workers: int | None = None) -> tuple[list[Plot], list[str]]:
    """Write every plot whose data exists to `out_dir/plots/<name>.png|svg`. Returns the
    plots (paths relative to `out_dir`) and one note per plot left out. Without
    matplotlib: no plots and one note; it never raises for that.

    `workers`: processes drawing at once, this one included (None: one per CPU from
    `PARALLEL_FROM` configurations on, else 1). The files are the same either way; a
    process that fails leaves its plots to this one, with a note."""
    missing = available()
    if missing is not None:
        return [], [f"plots left out: {missing}"]
    folder = out_dir / PLOTS_DIR
    names = [n for n, _ in PLOTS if comparison is not None or n not in COMPARISON_PLOTS]
    n = _workers(len(configs), len(names)) if workers is None else max(1, workers)
    done: dict[str, Done] = {}
    notes: list[str] = []
    if n > 1:
        done, problem = _shared(n, names, configs, samples, comparison, folder)
        if problem:
            notes.append(f"plots drawn here instead: {problem}")
    if len(done) < len(names):
        ctx = _context(configs, samples, comparison)
        for name in names:
            if name not in done:
                done[name] = _draw_one(ctx, name, folder)
    plots: list[Plot] = []
    for name in names:
        result = done[name]
        if isinstance(result, str):
            notes.append(f"plot {name} left out: {result}")
            for suffix in (".png", ".svg"):  # a previous report's file would be stale
                (folder / f"{name}{suffix}").unlink(missing_ok=True)
        else:
            title, caption = result
            plots.append(Plot(name, title, Path(PLOTS_DIR, f"{name}.png"),
                              Path(PLOTS_DIR, f"{name}.svg"), caption))
    return plots, notes


def render(configs: Sequence[Config], samples: Mapping[str, Samples], *,
           comparison: Mapping[str, Any] | None = None) -> Iterator[Drawn | str]:
    """Each plot drawn in memory (a Drawn), or its note `plot <name> left out: <why>`,
    in the report's order; one at a time, so a large report holds one figure."""
    ctx = _context(configs, samples, comparison)
    for name, _ in PLOTS:
        if name in COMPARISON_PLOTS and comparison is None:
            continue  # a report of results alone: no baseline, nothing to note
        result = _plot(ctx, name)
        if isinstance(result, str):
            yield f"plot {name} left out: {result}"
        else:
            fig, title, caption = result
            yield Drawn(name, fig, title, caption)


Done = tuple[str, str] | str
"""A plot written (its title and caption), or why it is left out."""


def _plot(ctx: _Ctx, name: str) -> Result:
    with _style():
        try:
            return dict(PLOTS)[name](ctx)
        except (ValueError, TypeError, ArithmeticError, KeyError) as exc:
            # a malformed figure in one document costs one plot, not the report
            return f"drawing failed ({type(exc).__name__}: {exc})"


def _draw_one(ctx: _Ctx, name: str, folder: Path) -> Done:
    result = _plot(ctx, name)
    if isinstance(result, str):
        return result
    fig, title, caption = result
    folder.mkdir(parents=True, exist_ok=True)
    _save(Drawn(name, fig, title, caption), folder)
    return title, caption


# --- drawing in several processes ---------------------------------------------------


PARALLEL_FROM = 10
"""Configurations from which the plots are shared among processes. A plot of 50 rows is
about a second of text layout and drawing (matplotlib 3.11 on one core) and the plots
are independent, so the processes divide their time; below this many, starting a
process (a Python importing matplotlib) costs more than it saves."""
MAX_WORKERS = 8
CHILD_TIMEOUT_S = 600.0


def _workers(n_configs: int, n_plots: int) -> int:
    if n_configs < PARALLEL_FROM:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    return max(1, min(cpus, n_plots, MAX_WORKERS))


def _shared(n: int, names: Sequence[str], configs: Sequence[Config],
            samples: Mapping[str, Samples], comparison: Mapping[str, Any] | None,
            folder: Path) -> tuple[dict[str, Done], str | None]:
    """Draw every n-th plot here and the others in n - 1 child processes, each a fresh
    `python -c` reading the configurations from one pickle: no fork of a process with
    threads, and no re-import of the caller's main script (multiprocessing's spawn and
    forkserver run it again). What a child could not draw is left out of the result,
    with why, for the caller to draw here."""
    import json
    import pickle
    import subprocess
    import sys
    import tempfile

    shares = [list(names[i::n]) for i in range(n)]
    done: dict[str, Done] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vlmbench-plots-") as tmp:
        payload = Path(tmp, "payload.pickle")
        with payload.open("wb") as fh:
            pickle.dump((list(configs), dict(samples), comparison, folder,
                         _pickled_filters()), fh, protocol=pickle.HIGHEST_PROTOCOL)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        children = []
        for i, share in enumerate(shares[1:], 1):
            result = Path(tmp, f"{i}.json")
            try:
                child = subprocess.Popen(
                    [sys.executable, "-c", "import sys; from pytest_vlmbench.report.plots "
                     "import _child; _child(*sys.argv[1:])", str(payload), json.dumps(share),
                     str(result)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, env=env)
            except OSError as exc:
                problems.append(f"cannot start a process ({exc})")
                continue
            children.append((child, result))
        ctx = _context(configs, samples, comparison)
        for name in shares[0]:
            done[name] = _draw_one(ctx, name, folder)
        for child, result in children:
            try:
                _, err = child.communicate(timeout=CHILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                _, err = child.communicate()
            if child.returncode == 0 and result.exists():
                for name, value in json.loads(result.read_text(encoding="utf-8")).items():
                    done[name] = value if isinstance(value, str) else (value[0], value[1])
            else:
                tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
                problems.append(f"a drawing process failed (exit {child.returncode}: "
                                f"{tail[0]})")
    return done, "; ".join(problems) or None


def _pickled_filters() -> bytes | None:
    """The caller's warning filters (a test's "error" included), for the children; None
    when a filter names a warning class a child could not import."""
    import pickle

    try:
        return pickle.dumps(list(warnings.filters))
    except (pickle.PicklingError, AttributeError, TypeError):
        return None


def _child(payload: str, names: str, result: str) -> None:
    """A drawing process (`_shared`): draw the plots named (JSON) from the pickled
    configurations and write {name: [title, caption] or why left out} as JSON."""
    import json
    import pickle

    with Path(payload).open("rb") as fh:
        configs, samples, comparison, folder, filters = pickle.load(fh)
    if filters is not None:
        try:
            rules = pickle.loads(filters)
        except (ImportError, AttributeError):
            rules = None
        if rules is not None:
            warnings.resetwarnings()
            for action, message, category, module, lineno in reversed(rules):
                # patterns are compiled, or plain strings (Python's own defaults)
                warnings.filterwarnings(action, getattr(message, "pattern", message) or "",
                                        category, getattr(module, "pattern", module) or "",
                                        lineno)
    ctx = _context(configs, samples, comparison)
    out = {name: _draw_one(ctx, name, folder) for name in json.loads(names)}
    Path(result).write_text(json.dumps(out), encoding="utf-8")


def _context(configs: Sequence[Config], samples: Mapping[str, Samples],
             comparison: Mapping[str, Any] | None) -> _Ctx:
    return _Ctx(list(configs), samples, comparison, _colours(configs))


def _style() -> AbstractContextManager[Any]:
    import matplotlib

    return matplotlib.rc_context(cast(Any, _STYLE))


def _save(drawn: Drawn, folder: Path) -> tuple[Path, Path]:
    """Write the PNG from one Agg draw that also lays the figure out (the layout's text
    measurements serve the drawing), then the SVG with that layout fixed: two draws,
    where `savefig` twice would make five (a layout pass before each file)."""
    import matplotlib.image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    png = folder / f"{drawn.name}.png"
    svg = folder / f"{drawn.name}.svg"
    fig = drawn.figure
    with _style():
        fig.set_dpi(DPI)
        canvas: Any = FigureCanvasAgg(fig)  # (its draw is untyped in matplotlib's stubs)
        canvas.draw()
        no_software: Any = {"Software": None}  # None leaves the key out
        matplotlib.image.imsave(png, canvas.buffer_rgba(), format="png", origin="upper",
                                dpi=DPI, metadata=no_software)
        fig.set_layout_engine(None)  # "none" keeps a placeholder engine: a layout pass
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return png, svg


# --- shared helpers -----------------------------------------------------------------


@dataclass
class _Ctx:
    configs: list[Config]
    samples: Mapping[str, Samples]
    comparison: Mapping[str, Any] | None
    colours: dict[str, str]

    def colour(self, config: Config) -> str:
        return self.colours.get(config.model, "#1f77b4")


def _colours(configs: Sequence[Config]) -> dict[str, str]:
    """A colour per model (tab10, tab20 beyond ten models), the same in every plot."""
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    models = list(dict.fromkeys(c.model for c in configs))
    cmap = mpl.colormaps["tab10" if len(models) <= 10 else "tab20"]
    n = 10 if len(models) <= 10 else 20
    return {m: to_hex(cmap(i % n)) for i, m in enumerate(models)}


def _palette(n: int) -> list[str]:
    """n distinct colours for categories that are not models (tasks, stages, groups)."""
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    size = 10 if n <= 10 else 20
    return [to_hex(cmap(i % size)) for i in range(n)]


def _cap(text: str, limit: int = LABEL_CHARS) -> str:
    """Fit a label in `limit` characters: its longest words lose their middles first
    (`acme-research…1b-instruct q4_k_m`), so that the precision, device and level, short
    words at the end, stay whole and labels that differ in a model's size stay apart."""
    parts = text.split(" ")
    while len(" ".join(parts)) > limit:
        i = max(range(len(parts)), key=lambda k: len(parts[k]))
        word = parts[i]
        if len(word) <= 5:  # short words only: cut the end
            return text[: limit - 1].rstrip() + ELLIPSIS
        keep = max(4, len(word) - (len(" ".join(parts)) - limit) - 1)
        head = keep * 2 // 5
        parts[i] = word[:head] + ELLIPSIS + word[len(word) - (keep - head):]
    return " ".join(parts)


def fit_labels(labels: Sequence[str], limit: int = LABEL_CHARS) -> list[str]:
    """Each label fitted (`_cap`), kept apart: two that would read the same keep their
    ends instead, and a number as the last resort."""
    out = [_cap(t, limit) for t in labels]
    same = {short for short in out if out.count(short) > 1}
    out = [ELLIPSIS + text[-(limit - 1):] if short in same and text != short else short
           for text, short in zip(labels, out, strict=True)]
    counts: dict[str, int] = {}
    for i, short in enumerate(out):
        if out.count(short) > 1:
            counts[short] = counts.get(short, 0) + 1
            out[i] = f"{short[: limit - 4]} #{counts[short]}"
    return out


def _labels(configs: Sequence[Config]) -> list[str]:
    return fit_labels([c.label or c.key for c in configs])


def _names(labels: Sequence[str], limit: int = 10) -> str:
    """`a, b and 3 more`: configurations named in a caption."""
    shown = ", ".join(labels[:limit])
    return shown if len(labels) <= limit else f"{shown} and {len(labels) - limit} more"


def _figure(width: float, height: float) -> MplFigure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, max(2.2, height)), layout="constrained")


def _grid(fig: MplFigure, nrows: int, ncols: int, **kw: Any) -> list[list[Axes]]:
    grid = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return [list(row) for row in grid]


def _height(rows: float, extra: float = 1.0) -> float:
    return extra + ROW_IN * rows


def _direction(better: figures.Better) -> str:
    return {"lower": "; lower is better", "higher": "; higher is better"}.get(str(better), "")


AXIS_LABELS = {
    "p50_s": "p50 latency (s)", "ttft_p50_s": "TTFT p50 (s)",
    "decode_tokens_per_s": "decode tokens/s", "prompt_tokens_per_s": "prompt tokens/s",
    "output_tokens_per_s": "output tokens/s (all requests)", "requests_per_s": "requests/s",
}


def _axis_label(f: figures.Figure) -> str:
    return AXIS_LABELS.get(f.name) or (f"{f.header} ({f.unit})" if f.unit else f.header)


def _unit(f: figures.Figure) -> str:
    return f.unit or "no unit"


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _sorted(rows: list[tuple[Config, float]], better: figures.Better) -> list[tuple[Config, float]]:
    if better is None:
        return rows
    return sorted(rows, key=lambda r: r[1], reverse=better == "higher")


def _bar_row(ax: Axes, ys: Sequence[float], values: Sequence[float], colours: Sequence[str],
             labels: Sequence[str], height: float = 0.7) -> None:
    bars = ax.barh(list(ys), list(values), height=height, color=list(colours))
    if len(ys) <= MAX_VALUE_LABELS:
        ax.bar_label(bars, labels=list(labels), padding=2, fontsize=7)
        ax.margins(x=0.16)
    ax.grid(True, axis="x")


def _rows_axis(ax: Axes, labels: Sequence[str]) -> None:
    ax.set_yticks(range(len(labels)), list(labels))
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first row on top


# --- bar charts of one figure per configuration ---------------------------------------


@dataclass(frozen=True)
class _Panel:
    figure: figures.Figure
    axis: str
    scale: float = 1.0
    """Plotted = summary value * scale (bytes to MB)."""


def _energy_reason(ctx: _Ctx, f: figures.Figure) -> str:
    """Why no configuration has an energy figure: the documents' power.absent_reason."""
    reasons: list[str] = []
    for c in ctx.configs:
        energy = c.summary.get("energy")
        if energy is None:
            why = _get(c.source.doc, "power", "absent_reason")
            reason = f"no energy meter: {why}" if why else "no energy meter"
        else:
            problems = _get(energy, "warnings") or []
            reason = f"the meter gave no figure: {problems[0]}" if problems \
                else "the meter gave no figure"
        if reason not in reasons:
            reasons.append(reason)
    why = "".join(f"; {r}" for r in reasons[:3])
    return f"no benchmark has {f.header} ({f.source}{why})"


def _bars(ctx: _Ctx, title: str, what: str, panels: Sequence[_Panel],
          absent: Callable[[figures.Figure], str] | None = None) -> Result:
    """Horizontal bars, one row per configuration with the first panel's figure, best
    first; further panels share the rows (a missing value there is marked `-`)."""
    first = panels[0].figure
    rows = _sorted([(c, v) for c in ctx.configs if (v := first.value(c.summary)) is not None],
                   first.better)
    if not rows:
        return absent(first) if absent else f"no benchmark has {first.header} ({first.source})"
    fig = _figure(WIDTH_IN if len(panels) == 1 else WIDTH_IN + 2.5 * (len(panels) - 1),
                  _height(len(rows)))
    axes = _grid(fig, 1, len(panels), sharey=True)[0]
    labels = _labels([c for c, _ in rows])
    parts = []
    for ax, panel in zip(axes, panels, strict=True):
        f = panel.figure
        values = [f.value(c.summary) for c, _ in rows]
        ys = [i for i, v in enumerate(values) if v is not None]
        _bar_row(ax, ys, [panel.scale * v for v in values if v is not None],
                 [ctx.colour(rows[i][0]) for i in ys], [f.cell(v) for v in values if v is not None])
        for i, v in enumerate(values):
            if v is None:
                ax.text(0, i, " -", va="center", fontsize=7, color="#777777")
        ax.set_xlabel(panel.axis)
        ax.set_title(_axis_label(f).split(" (")[0] if f.name in AXIS_LABELS else f.header)
        drawn_as = f", drawn as {panel.axis}" if panel.scale != 1 else ""
        part = f"{f.header} ({f.source}, {_unit(f)}{drawn_as}{_direction(f.better)})"
        lacking = [c.label for c in ctx.configs if f.value(c.summary) is None]
        if lacking:
            part += f"; no value for {_names(lacking)}"
        parts.append(part)
    _rows_axis(axes[0], labels)
    fig.suptitle(title)
    order = {"higher": ", highest first", "lower": ", lowest first"}.get(str(first.better), "")
    caption = f"{what} per configuration{order}: " + ". ".join(parts) + "."
    return fig, title, caption


def _tokens_per_s(ctx: _Ctx) -> Result:
    f = figures.by_name()
    panels = [_Panel(f["decode_tokens_per_s"], "decode tokens/s")]
    prompt = f["prompt_tokens_per_s"]
    if any(prompt.value(c.summary) is not None for c in ctx.configs):
        panels.append(_Panel(prompt, "prompt tokens/s"))
    what = "Decode and prompt tokens per second" if len(panels) > 1 else \
        "Decode tokens per second"
    return _bars(ctx, "Token throughput", what, panels)


def _ram_peak(ctx: _Ctx) -> Result:
    return _bars(ctx, "Peak RAM", "Process peak resident memory in MB",
                 [_Panel(figures.by_name()["ram_peak_bytes"], "peak RSS (MB)", 1e-6)])


def _tokens_per_s_per_w(ctx: _Ctx) -> Result:
    f = figures.by_name()["tokens_per_s_per_w"]
    return _bars(ctx, "Energy efficiency", "Generated tokens per second per watt",
                 [_Panel(f, "tokens/s/W")], lambda fig: _energy_reason(ctx, fig))


def _energy_per_token(ctx: _Ctx) -> Result:
    f = figures.by_name()["energy_per_token_j"]
    return _bars(ctx, "Energy per token", "Energy per generated token in joules",
                 [_Panel(f, "J/token")], lambda fig: _energy_reason(ctx, fig))


def _load_time(ctx: _Ctx) -> Result:
    return _bars(ctx, "Model load time", "Model load time in seconds",
                 [_Panel(figures.by_name()["load_s"], "load time (s)")])


def _latency_cv(ctx: _Ctx) -> Result:
    return _bars(ctx, "Latency consistency", "Coefficient of variation of the latency",
                 [_Panel(figures.by_name()["latency_cv"], "CV (stdev / mean)")])


# --- latency --------------------------------------------------------------------------


def _latency_distribution(ctx: _Ctx) -> Result:
    """A box per configuration from its records (quartiles), with the median, p90, p95
    and min-max whiskers of the same records; a configuration without records gets the
    summary's marks (computed alike) and no box."""
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows: list[tuple[Config, dict[str, float], tuple[float, float] | None]] = []
    for c in ctx.configs:
        dist = c.summary.get("latency_s") or {}
        stats = {k: v for k in ("median", "p90", "p95", "min", "max")
                 if (v := _number(dist.get(k))) is not None}
        s = ctx.samples.get(c.key)
        box = None
        if s is not None and s.latency_s:
            values = np.asarray(s.latency_s, dtype=float)
            q1, q2, q3, lo, hi, p90, p95 = np.percentile(values, [25, 50, 75, 0, 100, 90, 95])
            box = (float(q1), float(q3))
            # the records' own figures: the summary's, computed the same way from them
            stats = {"median": float(q2), "min": float(lo), "max": float(hi),
                     "p90": float(p90), "p95": float(p95)}
        if "median" in stats:
            rows.append((c, stats, box))
    if not rows:
        return "no benchmark has a successful measured request (summary.latency_s is empty)"
    rows.sort(key=lambda r: r[1]["median"])
    fig = _figure(WIDTH_IN, _height(len(rows), 1.5))
    ax = _grid(fig, 1, 1)[0][0]
    # one artist per kind of mark, not per row: 50 rows stay cheap to draw
    spans = [(i, st["min"], st["max"]) for i, (_, st, _) in enumerate(rows)
             if "min" in st and "max" in st]
    if spans:
        ys = [y for y, _, _ in spans]
        ax.hlines(ys, [lo for _, lo, _ in spans], [hi for _, _, hi in spans],
                  color="#555555", linewidth=0.9)
        ends = [v for _, lo, hi in spans for v in (lo, hi)]
        ax.vlines(ends, [y - 0.15 for y in ys for _ in (0, 1)],
                  [y + 0.15 for y in ys for _ in (0, 1)], color="#555555", linewidth=0.9)
    boxes = [(i, box, ctx.colour(c)) for i, (c, _, box) in enumerate(rows) if box is not None]
    if boxes:
        ax.barh([i for i, _, _ in boxes], [b[1] - b[0] for _, b, _ in boxes],
                left=[b[0] for _, b, _ in boxes], height=0.6, alpha=0.45, linewidth=1.0,
                color=[col for _, _, col in boxes], edgecolor=[col for _, _, col in boxes])
    ax.vlines([st["median"] for _, st, _ in rows], [i - 0.3 for i in range(len(rows))],
              [i + 0.3 for i in range(len(rows))], color="black", linewidth=1.6)
    for key, marker, colour, size in (("p90", "D", "#222222", 16), ("p95", "^", "#d62728", 24)):
        pts = [(st[key], i) for i, (_, st, _) in enumerate(rows) if key in st]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=size,
                       color=colour, zorder=3, linewidths=0)
    _rows_axis(ax, _labels([c for c, _, _ in rows]))
    spread = [v for _, st, _ in rows for v in (st.get("min"), st.get("max")) if v]
    log = bool(spread) and min(spread) > 0 and max(spread) / min(spread) > 50
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("latency (s)" + (", log scale" if log else ""))
    ax.grid(True, axis="x")
    handles = [Patch(facecolor="#999999", alpha=0.45, edgecolor="#999999",
                     label="middle half (records)"),
               Line2D([], [], color="black", linewidth=1.6, label="median"),
               Line2D([], [], color="#555555", linewidth=0.9, label="min to max"),
               Line2D([], [], marker="D", color="#222222", linestyle="", markersize=4,
                      label="p90"),
               Line2D([], [], marker="^", color="#d62728", linestyle="", markersize=5,
                      label="p95")]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, frameon=False)
    title = "Latency distribution"
    fig.suptitle(title)
    no_box = [c.label for c, _, box in rows if box is None]
    failed = [f"{c.label} ({s.failed})" for c in ctx.configs
              if (s := ctx.samples.get(c.key)) is not None and s.failed]
    absent = [c.label for c in ctx.configs if c.key not in {r[0].key for r in rows}]
    caption = ("Latency of the successful measured requests per configuration, fastest "
               "median first (s; lower is better), from the records: box = the middle half, "
               "whiskers = min to max, with the median, p90 and p95 (as summary.latency_s "
               "has them)" + (", log scale" if log else "") + ".")
    if no_box:
        caption += (f" No records file (summary.latency_s min, max, median, p90 and p95 "
                    f"only, no box): {_names(no_box)}.")
    if failed:
        caption += (f" Failed requests are not drawn ({len(failed)} configuration"
                    f"{'s' if len(failed) > 1 else ''}): {_names(failed, 5)}.")
    if absent:
        caption += f" No successful request: {_names(absent)}."
    return fig, title, caption


def _group_label(parts: Sequence[str]) -> str:
    return " ".join(p for p in parts if p)


def _varying(configs: Sequence[Config], attrs: Sequence[str]) -> list[str]:
    return [a for a in attrs if len({getattr(c, a) for c in configs}) > 1]


def _latency_by_task(ctx: _Ctx) -> Result:
    p50 = figures.by_name()["p50_s"]
    configs = [c for c in ctx.configs if p50.value(c.summary) is not None]
    tasks = list(dict.fromkeys(c.task for c in configs))
    if len(tasks) < 2:
        return (f"needs two tasks with a p50 latency ({p50.source}); "
                f"{'one task' if tasks else 'none'}: {', '.join(tasks) or '-'}")
    vary = _varying(configs, ("backend", "device", "level"))
    groups: dict[tuple[str, ...], dict[str, Config]] = {}
    doubled = []
    for c in configs:
        key = (c.model, c.precision, *(str(getattr(c, a) or "seq") for a in vary))
        cells = groups.setdefault(key, {})
        if c.task in cells:
            doubled.append(c.label)
        else:
            cells[c.task] = c
    single = [key for key, cells in groups.items() if len(cells) < 2]
    groups = {key: cells for key, cells in groups.items() if len(cells) >= 2}
    if not groups:
        return "no configuration ran two tasks (each model, precision and device ran one)"
    tasks = [t for t in tasks if any(t in cells for cells in groups.values())]
    colours = dict(zip(tasks, _palette(len(tasks)), strict=True))
    band = 0.8 / len(tasks)
    fig = _figure(WIDTH_IN, _height(len(groups) * max(1.0, 0.55 * len(tasks)), 1.5))
    ax = _grid(fig, 1, 1)[0][0]
    for j, task in enumerate(tasks):
        ys, values, texts = [], [], []
        for i, cells in enumerate(groups.values()):
            cell = cells.get(task)
            v = None if cell is None else p50.value(cell.summary)
            if v is not None:
                ys.append(i - 0.4 + band * (j + 0.5))
                values.append(v)
                texts.append(p50.cell(v))
        bars = ax.barh(ys, values, height=band * 0.9, color=colours[task], label=task)
        if len(tasks) <= 4 and len(groups) * len(tasks) <= MAX_VALUE_LABELS:
            ax.bar_label(bars, labels=texts, padding=2, fontsize=6.5)
            ax.margins(x=0.14)
    labels = fit_labels([_group_label(key) for key in groups])
    _rows_axis(ax, labels)
    ax.grid(True, axis="x")
    ax.set_xlabel("p50 latency (s)")
    fig.legend(loc="outside lower center", ncols=min(len(tasks), 5), frameon=False,
               title="task")
    title = "Median latency by task"
    fig.suptitle(title)
    caption = (f"p50 latency ({p50.source}, s; lower is better) of each task per model, "
               f"precision{''.join(', ' + a for a in vary)}; a gap: that configuration did "
               "not run the task.")
    if single:
        caption += (f" {len(single)} configuration{'s' if len(single) > 1 else ''} that ran "
                    "one task not drawn (the tables have them).")
    if doubled:
        caption += f" Drawn once (the first run of the same task): {_names(doubled)}."
    return fig, title, caption


def _stage_breakdown(ctx: _Ctx) -> Result:
    rows: list[tuple[Config, list[tuple[str, float]], float | None]] = []
    for c in ctx.configs:
        stages = c.summary.get("stages_s") or {}
        known = [s for s in STAGES if s in stages]
        other = [s for s in stages if s not in STAGES and s not in ("prepare", UNATTRIBUTED)]
        parts = [(s, v) for s in [*known, *other]
                 if (v := _number(_get(stages, s, "mean"))) is not None and v >= 0]
        if not parts:
            continue
        mean = _number(_get(c.summary, "latency_s", "mean"))
        rest = _number(_get(stages, UNATTRIBUTED, "mean"))
        if rest is None and mean is not None:
            rest = mean - sum(v for _, v in parts)
        if rest is not None and rest >= 0:
            parts.append((UNATTRIBUTED, rest))
        rows.append((c, parts, mean))
    if not rows:
        return "no benchmark reports its stages (summary.stages_s is empty)"
    seen = dict.fromkeys(s for _, parts, _ in rows for s, _ in parts)
    order = {s: i for i, s in enumerate(STAGES)}
    names = sorted(seen, key=lambda s: (s == UNATTRIBUTED, order.get(s, len(STAGES))))
    named = [s for s in names if s != UNATTRIBUTED]
    colours = dict(zip(named, _palette(len(named)), strict=True))
    colours[UNATTRIBUTED] = "#d9d9d9"
    rows.sort(key=lambda r: r[2] if r[2] is not None else sum(v for _, v in r[1]))
    fig = _figure(WIDTH_IN, _height(len(rows), 1.6))
    ax = _grid(fig, 1, 1)[0][0]
    for stage in names:
        ys, widths, lefts = [], [], []
        for i, (_, parts, _) in enumerate(rows):
            left = 0.0
            for s, v in parts:
                if s == stage:
                    ys.append(i)
                    widths.append(v)
                    lefts.append(left)
                left += v
        ax.barh(ys, widths, left=lefts, height=0.65, color=colours[stage],
                label=stage.replace("_", " "), edgecolor="white", linewidth=0.4)
    means = [(r[2], i) for i, r in enumerate(rows) if r[2] is not None]
    if means:
        ax.scatter([m for m, _ in means], [i for _, i in means], marker="|", s=160,
                   color="black", zorder=3, label="mean latency")
    _rows_axis(ax, _labels([c for c, _, _ in rows]))
    right = max(max(sum(v for _, v in parts), mean or 0.0) for _, parts, mean in rows)
    ax.set_xlim(0, right * 1.05 or 1.0)
    ax.grid(True, axis="x")
    ax.set_xlabel("mean seconds per request")
    handles, labels = ax.get_legend_handles_labels()
    first = sorted(range(len(labels)), key=lambda i: labels[i] == "mean latency")
    fig.legend([handles[i] for i in first], [labels[i] for i in first],
               loc="outside lower center", ncols=min(len(labels), 6), frameon=False)
    title = "Where the latency goes"
    fig.suptitle(title)
    caption = ("Mean seconds per request in each stage (summary.stages_s.<stage>.mean, s) "
               "stacked in request order, fastest first; unattributed = what the stages "
               "leave of the latency (summary.stages_s.unattributed.mean, else "
               "summary.latency_s.mean minus the stages); | = summary.latency_s.mean. Image "
               "preparation (prepare) happens before the request and is not drawn.")
    over = [c.label for c, parts, mean in rows
            if mean is not None and sum(v for _, v in parts) > mean * 1.01]
    if over:
        caption += (f" Stages adding up to more than the mean latency (they overlap, or "
                    f"fewer requests reported them): {_names(over, 5)}.")
    absent = [c.label for c in ctx.configs if c.key not in {r[0].key for r in rows}]
    if absent:
        caption += f" No stages reported: {_names(absent)}."
    return fig, title, caption


# --- quality --------------------------------------------------------------------------


def _declutter(fig: MplFigure, labels: Sequence[tuple[Axes, Annotation]]) -> int:
    """Remove each point label (in priority order) that would overlap a label kept
    before it or leave its panel; returns how many were removed. Lays the figure out
    once (the labels take no part in the layout, so it stays as measured)."""
    for _, label in labels:
        label.set_in_layout(False)
    fig.draw_without_rendering()
    kept: list[Bbox] = []
    removed = 0
    for ax, label in labels:
        box = label.get_window_extent()
        frame = ax.get_window_extent()
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 \
            and box.y1 <= frame.y1
        if not inside or any(box.overlaps(k) for k in kept):
            label.remove()
            removed += 1
        else:
            kept.append(box)
    return removed


def _pareto(points: Sequence[tuple[float, float]], higher: bool) -> set[int]:
    """Indices of the points no other point beats on both latency (lower) and score."""
    front = set()
    for i, (x, y) in enumerate(points):
        beaten = any((x2 <= x and (y2 >= y if higher else y2 <= y)) and (x2, y2) != (x, y)
                     for x2, y2 in points)
        if not beaten:
            front.add(i)
    return front


def _score_kinds(configs: Sequence[Config]) -> dict[str, str]:
    """Each quality score's kind (accuracy, error, length, value), from the summaries."""
    kinds: dict[str, str] = {}
    for c in configs:
        quality = c.summary.get("quality")
        if isinstance(quality, Mapping):
            for name, score in (quality.get("scores") or {}).items():
                kinds.setdefault(name, str(score.get("kind")))
    return kinds


def _speed_vs_quality(ctx: _Ctx) -> Result:
    from matplotlib.lines import Line2D

    p50 = figures.by_name()["p50_s"]
    kinds = _score_kinds(ctx.configs)
    # a quality axis: accuracies and errors (ratings and lengths have no better direction
    # that means "better answers")
    scores = [f for f in figures.score_figures([c.summary for c in ctx.configs])
              if kinds.get(str(f.metric)) in ("accuracy", "error")]
    drawable = []
    for f in scores:
        pts = [(c, x, y) for c in ctx.configs
               if (x := p50.value(c.summary)) is not None and (y := f.value(c.summary)) is not None]
        if pts:
            drawable.append((f, pts))
    if not drawable:
        return ("no benchmark has a quality score with a latency (summary.quality.scores)"
                if not scores else "no benchmark has both a quality score mean and a p50 latency")
    shown = drawable[:MAX_SCORE_PANELS]
    ncols = 1 if len(shown) == 1 else 2
    nrows = math.ceil(len(shown) / ncols)
    fig = _figure(WIDTH_IN if ncols == 1 else WIDTH_IN + 2, 1.2 + 3.4 * nrows)
    axes = [ax for row in _grid(fig, nrows, ncols) for ax in row]
    pruned = False
    annotations: list[tuple[Axes, Annotation]] = []
    for ax, (f, pts) in zip(axes, shown, strict=False):
        xy = [(x, y) for _, x, y in pts]
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=28,
                   c=[ctx.colour(c) for c, _, _ in pts], zorder=3, edgecolors="white",
                   linewidths=0.5)
        front = _pareto(xy, f.better != "lower")
        order = sorted(range(len(pts)), key=lambda i: i not in front)  # the front first
        if len(pts) > MAX_ANNOTATED:
            order = [i for i in order if i in front]
            pruned = True
        names = _labels([c for c, _, _ in pts])
        middle = (min(p[0] for p in xy) + max(p[0] for p in xy)) / 2
        for i in order:
            right = xy[i][0] > middle and len(pts) > 1  # label towards the panel's centre
            annotations.append((ax, ax.annotate(
                names[i], xy[i], xytext=(-4 if right else 4, 3), textcoords="offset points",
                ha="right" if right else "left", fontsize=6.5, color="#333333")))
        ax.grid(True)
        if kinds.get(str(f.metric)) == "accuracy":  # a proportion: its whole range
            ax.set_ylim(-0.05, 1.05)
        unit = f" ({f.unit})" if f.unit else ""
        ax.set_xlabel("p50 latency (s)")
        ax.set_ylabel(f"{f.header}{unit}")
        ax.set_title(f"{f.header} ({'higher' if f.better == 'higher' else 'lower'} is better)")
        ax.margins(x=0.12, y=0.12)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    models = list(dict.fromkeys(c.model for _, pts in shown for c, _, _ in pts))
    if len(models) <= 20:
        fig.legend(handles=[Line2D([], [], marker="o", linestyle="", color=ctx.colours[m],
                                   label=name)
                            for m, name in zip(models, fit_labels(models, 30), strict=True)],
                   loc="outside lower center", ncols=min(len(models), 4), frameon=False)
    title = "Speed versus quality"
    fig.suptitle(title)
    hidden = _declutter(fig, annotations)
    sources = ", ".join(f.source for f, _ in shown)
    caption = (f"Each configuration's quality score mean ({sources}) against its p50 "
               f"latency ({p50.source}, s; lower is better); colour = model.")
    if pruned:
        caption += (f" Panels with more than {MAX_ANNOTATED} points label only the "
                    "configurations no other beats on both.")
    if hidden:
        caption += (f" {hidden} label{'s' if hidden > 1 else ''} left off where "
                    f"{'they' if hidden > 1 else 'it'} would overlap another.")
    if len(drawable) > len(shown):
        caption += f" Scores not drawn: {', '.join(f.header for f, _ in drawable[len(shown):])}."
    return fig, title, caption


def _score_histograms(ctx: _Ctx) -> Result:
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    panels: list[tuple[Config, str, list[float], list[float], str]] = []
    for c in ctx.configs:
        for name, hist in (_get(c.summary, "quality", "histograms") or {}).items():
            bins = _get(hist, "bins") or {}
            if not isinstance(bins, Mapping) or not sum(int(v) for v in bins.values()):
                continue
            keys = sorted(bins, key=lambda k: float(k))
            panels.append((c, name, [float(k) for k in keys], [float(bins[k]) for k in keys],
                           f"summary.quality.histograms.{name}.bins"))
    source = "summary"
    if not panels:
        source = "records"
        for c in ctx.configs:
            s = ctx.samples.get(c.key)
            for name, values in (s.scores if s else {}).items():
                if len(set(values)) <= 2:
                    continue  # a right/wrong score: its mean says it all
                hist, edges = np.histogram(np.asarray(values, dtype=float), bins=10)
                centres = [float(a + b) / 2 for a, b in itertools.pairwise(edges)]
                panels.append((c, name, centres, [float(n) for n in hist],
                               f"records' {name} scores"))
    if not panels:
        return "no benchmark has a rating histogram (summary.quality.histograms) or " \
               "per-request scores with more than two values"
    shown = panels[:MAX_PANELS]
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = _figure(2.4 * ncols + 0.6, 0.9 + 2.3 * nrows)
    # ratings share their bins: tick labels under the lowest panel of each column only
    axes = [ax for row in _grid(fig, nrows, ncols, sharex=source == "summary") for ax in row]
    for i, ax in enumerate(axes[:len(shown)]):
        if i + ncols >= len(shown):
            ax.xaxis.set_tick_params(labelbottom=True)
    # one short name per configuration (a configuration with two scores has two panels)
    unique = list(dict.fromkeys(c.label or c.key for c, *_ in shown))
    short = dict(zip(unique, fit_labels(unique, 30), strict=True))
    heads = [short[c.label or c.key] for c, *_ in shown]
    for i, (ax, (c, name, xs, counts, _)) in enumerate(zip(axes, shown, strict=False)):
        width = (xs[1] - xs[0]) * 0.85 if len(xs) > 1 else 0.8
        ax.bar(xs, counts, width=width, color=ctx.colour(c))
        if source == "summary":
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{heads[i]}\n{_cap(name, 30)}", fontsize=8)
        if source != "summary" or i + ncols >= len(shown):
            ax.set_xlabel("rating" if source == "summary" else name, fontsize=7.5)
        if i % ncols == 0:
            ax.set_ylabel("requests", fontsize=7.5)
        ax.tick_params(labelsize=7)
        ax.grid(True, axis="y")
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    title = "Score distributions"
    fig.suptitle(title)
    if source == "summary":
        caption = ("Requests per rounded rating (summary.quality.histograms.<score>.bins, "
                   "counts) per configuration and score.")
    else:
        caption = ("Requests per score value, ten equal bins, from the records' per-request "
                   "scores (no rating histograms in the summaries).")
    if len(panels) > len(shown):
        caption += f" {len(panels) - len(shown)} more panels not drawn (the tables have the means)."
    return fig, title, caption


# --- configurations side by side -------------------------------------------------------


def _heat(ax: Axes, grid: list[list[float | None]], rows: Sequence[str], cols: Sequence[str],
          cmap: str, fmt: Callable[[float], str], fig: MplFigure, label: str) -> None:
    import matplotlib as mpl
    import numpy as np

    data = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row]
                                          for row in grid], dtype=float))
    colours = mpl.colormaps[cmap].with_extremes(bad="#f0f0f0")
    image = ax.imshow(data, cmap=colours, aspect="auto")
    lo, hi = float(data.min()), float(data.max())
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v is None:
                ax.text(j, i, "-", ha="center", va="center", fontsize=7, color="#888888")
                continue
            frac = 0.5 if hi == lo else (v - lo) / (hi - lo)
            ax.text(j, i, fmt(v), ha="center", va="center", fontsize=7,
                    color="white" if frac > 0.6 else "black")
    ax.set_xticks(range(len(cols)), list(cols), rotation=30 if max(map(len, cols)) > 8 else 0,
                  ha="right" if max(map(len, cols)) > 8 else "center")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.spines[:].set_visible(False)
    ax.grid(False)
    fig.colorbar(image, ax=ax, label=label, shrink=0.9)


def _device_model_heatmap(ctx: _Ctx) -> Result:
    by = figures.by_name()
    p50, tok = by["p50_s"], by["decode_tokens_per_s"]
    workloads: dict[tuple[str, str, str], list[Config]] = {}
    for c in ctx.configs:
        if p50.value(c.summary) is not None or tok.value(c.summary) is not None:
            workloads.setdefault(c.workload, []).append(c)

    def cells(cs: list[Config]) -> tuple[int, int]:
        devices = len({(c.device, c.backend) for c in cs})
        models = len({(c.model, c.precision) for c in cs})
        return min(devices, models), devices * models

    best = max(workloads.items(), key=lambda kv: cells(kv[1]), default=None)
    if best is None:
        return "no benchmark has a p50 latency or decode rate"
    workload, cs = best
    backends = len({c.backend for c in cs}) > 1
    rows = list(dict.fromkeys(f"{c.model} {c.precision}" for c in cs))
    cols = list(dict.fromkeys(f"{c.device}/{c.backend}" if backends else c.device for c in cs))
    if len(cols) < 2 or len(rows) < 2:
        return ("needs two devices and two models measured on one workload (task, dataset, "
                f"level); the most any workload has: {len(cols)} device"
                f"{'s' if len(cols) != 1 else ''} and {len(rows)} model-precision"
                f"{'s' if len(rows) != 1 else ''} (the bar charts show each)")
    chosen: dict[tuple[int, int], Config] = {}
    doubled = []
    for c in cs:
        key = (rows.index(f"{c.model} {c.precision}"),
               cols.index(f"{c.device}/{c.backend}" if backends else c.device))
        if key in chosen:
            doubled.append(c.label)
        else:
            chosen[key] = c
    panels = [(f, cmap) for f, cmap in ((p50, "YlOrRd"), (tok, "YlGn"))
              if any(f.value(c.summary) is not None for c in cs)]
    fig = _figure(max(WIDTH_IN, 3.2 + len(panels) * (1.6 + 0.9 * len(cols))),
                  1.6 + 0.38 * len(rows))
    axes = _grid(fig, 1, len(panels))[0]
    for ax, (f, cmap) in zip(axes, panels, strict=True):
        grid = [[None if (cell := chosen.get((i, j))) is None else f.value(cell.summary)
                 for j in range(len(cols))] for i in range(len(rows))]
        _heat(ax, grid, fit_labels(rows, 32) if ax is axes[0] else [""] * len(rows),
              fit_labels(cols, 24), cmap, f.cell, fig,
              _axis_label(f))
        ax.set_title(f"{f.header} ({'lower' if f.better == 'lower' else 'higher'} is better)")
    title = "Devices and models"
    fig.suptitle(title)
    task, dataset, level = workload
    caption = (f"{' and '.join(f'{f.header} ({f.source}, {f.unit})' for f, _ in panels)} of "
               f"each model and precision on each device, workload {task} on {dataset} "
               f"({level}); '-': not measured there.")
    others = len(workloads) - 1
    if others:
        caption += (f" {others} other workload{'s' if others > 1 else ''} not drawn (the "
                    "tables have them).")
    if doubled:
        caption += f" Drawn once (the first of several tests): {_names(doubled)}."
    return fig, title, caption


def _precision_panels(ctx: _Ctx) -> Result:
    """Per model (on one device, backend and workload) with two or more precisions: a
    row of bars, one per precision, in a panel per figure (decode rate, p50 latency)."""
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    by = figures.by_name()
    tok, p50 = by["decode_tokens_per_s"], by["p50_s"]
    groups: dict[tuple[str, ...], dict[str, Config]] = {}
    for c in ctx.configs:
        if tok.value(c.summary) is None and p50.value(c.summary) is None:
            continue
        cells = groups.setdefault((c.model, c.device, c.backend, *c.workload), {})
        cells.setdefault(c.precision, c)
    usable = [(k, v) for k, v in groups.items() if len(v) >= 2]
    if not usable:
        return ("no model was measured at two precisions on one device, backend and "
                "workload")
    shown = usable[:MAX_PRECISION_GROUPS]
    metrics = [f for f in (tok, p50) if any(f.value(c.summary) is not None
                                             for _, cells in shown for c in cells.values())]
    precisions = list(dict.fromkeys(p for _, cells in shown for p in cells))
    shades = mpl.colormaps["viridis"]
    colours = {p: to_hex(shades(0.15 + 0.7 * i / max(1, len(precisions) - 1)))
               for i, p in enumerate(precisions)}
    vary = [i for i in range(1, 6) if len({k[i] for k, _ in shown}) > 1]
    bars_per_row = max(len(cells) for _, cells in shown)
    band = 0.8 / bars_per_row
    n_bars = sum(len(cells) for _, cells in shown)
    fig = _figure(WIDTH_IN + (2.0 if len(metrics) > 1 else 0.0),
                  2.0 + len(shown) * (0.2 + 0.22 * bars_per_row))
    axes = _grid(fig, 1, len(metrics), sharey=True)[0]
    for ax, f in zip(axes, metrics, strict=True):
        for precision in precisions:
            ys, values = [], []
            for i, (_, cells) in enumerate(shown):
                cell = cells.get(precision)
                v = None if cell is None else f.value(cell.summary)
                if v is not None:
                    ys.append(i - 0.4 + band * (list(cells).index(precision) + 0.5))
                    values.append(v)
            bars = ax.barh(ys, values, height=band * 0.9, color=colours[precision],
                           label=precision if ax is axes[0] else None)
            if n_bars <= MAX_VALUE_LABELS:
                ax.bar_label(bars, labels=[f.cell(v) for v in values], padding=2, fontsize=6.5)
        if n_bars <= MAX_VALUE_LABELS:
            ax.margins(x=0.16)
        ax.grid(True, axis="x")
        ax.set_title(f"{f.header}{_direction(f.better).replace('; ', ' (')}"
                     + (")" if f.better else ""))
        ax.set_xlabel(_axis_label(f))
    _rows_axis(axes[0], fit_labels([_group_label([key[0], *(key[i] for i in vary)])
                                    for key, _ in shown]))
    fig.legend(loc="outside lower center", ncols=min(len(precisions), 6), frameon=False,
               title="precision")
    title = "Precisions of each model"
    fig.suptitle(title)
    caption = (" and ".join(f"{f.header} ({f.source}, {f.unit}{_direction(f.better)})"
                            for f in metrics)
               + " of each precision of a model on one device, backend and workload.")
    if len(usable) > len(shown):
        caption += f" {len(usable) - len(shown)} more models not drawn (the tables have them)."
    return fig, title, caption


def _level_order(c: Config) -> float:
    load: Mapping[str, Any] = c.entry.get("load") or {}
    for key in ("concurrency", "rate_rps", "batch_size"):
        v = _number(load.get(key))
        if v is not None:
            return v
    return math.inf


def _throughput_vs_latency(ctx: _Ctx) -> Result:
    by = figures.by_name()
    p50, ttft = by["p50_s"], by["ttft_p50_s"]
    groups: dict[tuple[str, ...], list[Config]] = {}
    for c in ctx.configs:
        if c.level is not None:
            groups.setdefault((c.test, c.model, c.precision, c.backend, c.device), []).append(c)
    swept = {k: v for k, v in groups.items() if len(v) >= 2}
    if not swept:
        return ("no benchmark ran at two load levels (a sweep)" if not groups
                else "every load-level benchmark ran at one level (a sweep needs two)")
    x_fig = None
    for name in ("output_tokens_per_s", "requests_per_s"):
        f = by[name]
        if any(sum(f.value(c.summary) is not None for c in cs) >= 2 for cs in swept.values()):
            x_fig = f
            break
    if x_fig is None:
        return "no sweep has a throughput (summary.output_tokens_per_s, .requests_per_s) " \
               "at two levels"
    ys = [f for f in (p50, ttft) if any(f.value(c.summary) is not None
                                        for cs in swept.values() for c in cs)]
    fig = _figure(WIDTH_IN + (2.5 if len(ys) > 1 else 0), 4.2)
    axes = _grid(fig, 1, len(ys))[0]
    colours = _palette(len(swept))
    drawn: list[str] = []
    skipped: list[str] = []
    fields = ("test", "model", "precision", "backend", "device")
    vary = _varying([c for v in swept.values() for c in v], fields[1:])
    for (key, cs), colour in zip(swept.items(), colours, strict=True):
        cs = sorted(cs, key=_level_order)
        named = dict(zip(fields, key, strict=True))
        name = _group_label([named[a] for a in vary] or [key[1], key[2]])
        if len({k[0] for k in swept}) > 1:
            name = f"{name} [{key[0].split('::')[-1]}]"
        name = _cap(name)
        plotted = False
        for ax, f in zip(axes, ys, strict=True):
            pts = [(x, y, c) for c in cs if (x := x_fig.value(c.summary)) is not None
                   and (y := f.value(c.summary)) is not None]
            if len(pts) < 2:
                continue
            plotted = True
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4,
                    color=colour, label=name if ax is axes[0] else None)
            for x, y, c in pts:
                # upper left: above a line that rises to the right
                ax.annotate(c.level or "", (x, y), xytext=(-4, 4), textcoords="offset points",
                            ha="right", fontsize=6.5, color=colour)
                sweep: Mapping[str, Any] = c.entry.get("sweep") or {}
                if sweep.get("best") and sweep.get("best") == c.level:
                    ax.scatter([x], [y], s=110, facecolors="none", edgecolors=colour,
                               linewidths=1.2, zorder=3)
        (drawn if plotted else skipped).append(name)
    if not drawn:
        return "no sweep has a throughput and a latency at two levels"
    for ax, f in zip(axes, ys, strict=True):
        ax.set_xlabel(_axis_label(x_fig))
        ax.set_ylabel(_axis_label(f))
        ax.set_title(_axis_label(f).split(" (")[0])
        ax.margins(0.08)
        ax.grid(True)
    fig.legend(loc="outside lower center", ncols=min(len(drawn), 3), frameon=False)
    title = "Throughput versus latency"
    fig.suptitle(title)
    caption = (f"Each sweep's load levels (labelled) as throughput ({x_fig.source}, "
               f"{x_fig.unit}) against {' and '.join(f'{f.header} ({f.source}, s)' for f in ys)}; "
               "ringed: the sweep's best level (the highest meeting every SLO).")
    if skipped:
        caption += f" Sweeps without figures at two levels: {_names(skipped)}."
    return fig, title, caption


def _video_rtf(ctx: _Ctx) -> Result:
    by = figures.by_name()
    video = [c for c in ctx.configs if isinstance(c.summary.get("video"), Mapping)]
    if not video:
        return "no benchmark ran over video scenes (no summary.video)"
    rtf = by["real_time_factor"]
    if not any(rtf.value(c.summary) is not None for c in video):
        reasons = list(dict.fromkeys(str(_get(c.summary, "video", "absent_reason"))
                                     for c in video))
        return f"no video benchmark has a real-time factor ({'; '.join(reasons[:3])})"
    sub = _Ctx(video, ctx.samples, None, ctx.colours)
    result = _bars(sub, "Video: real-time factor", "Video real-time factor and seconds per scene",
                   [_Panel(rtf, "real-time factor (VLM s / video s)"),
                    _Panel(by["seconds_per_scene"], "seconds per scene")])
    if isinstance(result, str):
        return result
    fig, title, caption = result
    fig.axes[0].axvline(1.0, color="#d62728", linestyle="--", linewidth=0.9,
                        label="real time (1.0)")
    fig.axes[0].legend(loc="lower right", fontsize=7, framealpha=0.9)
    lacking = [f"{c.label} ({_get(c.summary, 'video', 'absent_reason')})" for c in video
               if rtf.value(c.summary) is None and _get(c.summary, "video", "absent_reason")]
    caption += " Dashed line: real time (1.0; below keeps up with the video)."
    if lacking:
        caption += f" Why figures are absent: {_names(lacking, 5)}."
    return fig, title, caption


# --- a comparison of two runs -----------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    benchmark: str
    metric: str
    m: Mapping[str, Any]

    @property
    def verdict(self) -> str:
        return str(self.m.get("verdict") or "inconclusive")

    @property
    def rank(self) -> int:
        order = {"regressed": 0, "improved": 1}
        return order.get(self.verdict, 3 if not self.m.get("gated") else 2)

    def interval_pct(self) -> tuple[float, float] | None:
        """The effect's interval (`ci`) as a change in percent: a ratio's `[0.9, 1.1]` is
        -10%..+10%; a difference (rates, absolute rules) is divided by the baseline."""
        ci, base = self.m.get("ci"), _number(self.m.get("baseline"))
        if not isinstance(ci, list | tuple) or len(ci) != 2:
            return None
        lo, hi = _number(ci[0]), _number(ci[1])
        if lo is None or hi is None:
            return None
        if self.m.get("effect_kind") == "ratio":
            return 100 * (lo - 1), 100 * (hi - 1)
        if base is None or base <= 0:
            return None
        return 100 * lo / base, 100 * hi / base

    def interval_value(self) -> tuple[float, float] | None:
        """The interval as the current value's range, in the metric's unit."""
        pct = self.interval_pct()
        base = _number(self.m.get("baseline"))
        if pct is None or base is None:
            return None
        return base * (1 + pct[0] / 100), base * (1 + pct[1] / 100)


def _comparison_rows(comparison: Mapping[str, Any]) -> list[_Row]:
    rows: list[_Row] = []
    for pair in comparison.get("pairs") or []:
        bench = str(_get(pair, "benchmark", "id") or "?").split("::")[-1]
        rows.extend(_Row(bench, str(m.get("metric")), m) for m in pair.get("metrics") or [])
    for window in comparison.get("windows") or []:
        name = f"{window.get('label') or _get(window, 'window', 'id')} [window]"
        rows.extend(_Row(name, str(m.get("metric")), m) for m in window.get("metrics") or [])
    return rows


def _verdict_text(row: _Row) -> str:
    if row.verdict == "regressed":
        return "REGRESSED" if row.m.get("gated") else "regressed (not gated)"
    return row.verdict


def _verdict_legend(fig: MplFigure, verdicts: Sequence[str], baseline: bool = False) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="white", edgecolor="#636363", label="baseline")] \
        if baseline else []
    handles += [Patch(color=VERDICT_COLOURS.get(v, "#c7c7c7"), label=f"current: {v}"
                      if baseline else v) for v in VERDICT_COLOURS if v in verdicts]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, frameon=False)


def _bench_names(names: Sequence[str]) -> list[str]:
    """Benchmarks by their parameters (`tiny-vlm-q4_k_m-cpu`) when every one is the same
    test function's, else by their whole names."""
    parts = [re.fullmatch(r"([^\[\]]+)\[(.+)\]", n) for n in names]
    if names and all(parts) and len({m.group(1) for m in parts if m}) == 1:
        return [m.group(2) for m in parts if m]
    return list(names)


def _comparison(ctx: _Ctx) -> Result:
    if ctx.comparison is None:
        return "no comparison given"
    rows = [r for r in _comparison_rows(ctx.comparison)
            if _number(r.m.get("change_pct")) is not None]
    if not rows:
        return "the comparison has no metric with a baseline and a current value"
    ranked = {id(r) for r in sorted(rows, key=lambda r: r.rank)[:MAX_COMPARISON_ROWS]}
    kept = [r for r in rows if id(r) in ranked]  # in the comparison's order
    fig = _figure(WIDTH_IN + 1.0, _height(len(kept), 1.6))
    ax = _grid(fig, 1, 1)[0][0]
    changes = [float(r.m["change_pct"]) for r in kept]
    colours = [VERDICT_COLOURS.get(r.verdict, "#c7c7c7") for r in kept]
    ax.barh(range(len(kept)), changes, height=0.6, color=colours)
    for i, r in enumerate(kept):
        interval = r.interval_pct()
        if interval is not None:
            lo, hi = sorted(interval)
            ax.hlines(i, lo, hi, color="black", linewidth=1.0)
            ax.vlines([lo, hi], i - 0.15, i + 0.15, color="black", linewidth=1.0)
    right = max([abs(c) for c in changes]
                + [abs(v) for r in kept if (iv := r.interval_pct()) for v in iv] + [1.0])
    ax.set_xlim(-right * 1.1, right * 1.1)
    for i, r in enumerate(kept):  # beside the panel, in a column of their own
        ax.text(1.02, i, f"{changes[i]:+.1f}% {_verdict_text(r)}", va="center",
                transform=ax.get_yaxis_transform(), fontsize=7, color="#333333",
                fontweight="bold" if r.verdict == "regressed" and r.m.get("gated") else "normal")
    ax.axvline(0, color="black", linewidth=0.8)
    names = _bench_names([r.benchmark for r in kept])
    _rows_axis(ax, fit_labels([f"{n}: {r.metric}" for n, r in zip(names, kept, strict=True)]))
    ax.grid(True, axis="x")
    ax.set_xlabel("change, current vs baseline (%)")
    _verdict_legend(fig, [r.verdict for r in kept])
    title = "Comparison with the baseline"
    fig.suptitle(title)
    conf = _number(_get(ctx.comparison, "settings", "confidence"))
    level = f"{100 * conf:g}% " if conf else ""
    caption = ("Change of each compared metric, current against baseline, in percent "
               "(comparison JSON pairs[].metrics[].change_pct); whiskers: the effect's "
               f"{level}interval (.ci: bootstrap, or the run-level prediction interval with "
               "several baseline runs; a difference is shown relative to the baseline); "
               "colour: the verdict.")
    if len(rows) > len(kept):
        caption += (f" {len(rows) - len(kept)} unchanged or inconclusive metrics not drawn "
                    "(the comparison table has them).")
    return fig, title, caption


def _comparison_values(ctx: _Ctx) -> Result:
    from pytest_vlmbench.metrics import registry

    if ctx.comparison is None:
        return "no comparison given"
    rows = [r for r in _comparison_rows(ctx.comparison)
            if _number(r.m.get("baseline")) is not None and _number(r.m.get("current")) is not None]
    if not rows:
        return "the comparison has no metric with a baseline and a current value"
    by_metric: dict[str, list[_Row]] = {}
    for r in rows:
        by_metric.setdefault(r.metric, []).append(r)
    ranked = sorted(by_metric, key=lambda m: min(r.rank for r in by_metric[m]))
    shown = ranked[:MAX_COMPARISON_METRICS]
    known = registry.ruled()
    heights = [0.7 + 0.42 * len(by_metric[m]) for m in shown]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN + 1.0, 1.0 + sum(heights)), layout="constrained")
    axes = fig.subplots(len(shown), 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, metric in zip(axes, shown, strict=True):
        items = by_metric[metric]
        meta = known.get(metric)
        scale, unit = (100.0, "%") if meta is not None and meta.proportion else \
            (1.0, meta.unit if meta is not None else "")
        ys = list(range(len(items)))
        base = [scale * float(r.m["baseline"]) for r in items]
        cur = [scale * float(r.m["current"]) for r in items]
        ax.barh([y - 0.2 for y in ys], base, height=0.38, color="white", edgecolor="#636363",
                linewidth=0.8, label="baseline")
        ax.barh([y + 0.2 for y in ys], cur, height=0.38,
                color=[VERDICT_COLOURS.get(r.verdict, "#c7c7c7") for r in items],
                label="current")
        top = max([*base, *cur])
        for y, r in zip(ys, items, strict=True):
            iv = r.interval_value()
            if iv is not None:
                lo, hi = sorted(scale * v for v in iv)
                top = max(top, hi)
                ax.hlines(y + 0.2, lo, hi, color="black", linewidth=1.0)
                ax.vlines([lo, hi], y + 0.08, y + 0.32, color="black", linewidth=1.0)
        for y, r, b, c in zip(ys, items, base, cur, strict=True):
            ax.text(1.02, y, f"{b:.4g} \u2192 {c:.4g}  {_verdict_text(r)}",
                    transform=ax.get_yaxis_transform(), va="center", fontsize=7,
                    color="#333333")
        ax.set_xlim(0, top * 1.05)
        _rows_axis(ax, fit_labels(_bench_names([r.benchmark for r in items])))
        ax.grid(True, axis="x")
        direction = "" if meta is None else \
            (" (lower is better)" if meta.higher_is_worse else " (higher is better)")
        ax.set_title(f"{metric}{direction}", fontsize=8.5)
        ax.set_xlabel(unit or "value", fontsize=7.5)
    _verdict_legend(fig, [r.verdict for m in shown for r in by_metric[m]], baseline=True)
    title = "Baseline and current values"
    fig.suptitle(title)
    caption = ("Each compared metric's baseline (outlined; the geometric mean of several "
               "baseline runs) and current value (coloured by verdict) per benchmark "
               "(comparison JSON pairs[].metrics[].baseline, .current), whiskers: the "
               "effect's interval (.ci) around the current value; rates in percent.")
    if len(ranked) > len(shown):
        caption += f" Metrics not drawn: {', '.join(ranked[len(shown):])}."
    return fig, title, caption


PLOTS: tuple[tuple[str, Callable[[_Ctx], Result]], ...] = (
    ("tokens_per_s", _tokens_per_s),
    ("ram_peak", _ram_peak),
    ("tokens_per_s_per_w", _tokens_per_s_per_w),
    ("energy_per_token", _energy_per_token),
    ("load_time", _load_time),
    ("latency_distribution", _latency_distribution),
    ("latency_cv", _latency_cv),
    ("latency_by_task", _latency_by_task),
    ("stage_breakdown", _stage_breakdown),
    ("speed_vs_quality", _speed_vs_quality),
    ("device_model_heatmap", _device_model_heatmap),
    ("precision_panels", _precision_panels),
    ("score_histograms", _score_histograms),
    ("throughput_vs_latency", _throughput_vs_latency),
    ("video_rtf", _video_rtf),
    ("comparison", _comparison),
    ("comparison_values", _comparison_values),
)
"""Every plot in the report's order: its file name and how it is drawn."""
COMPARISON_PLOTS = frozenset({"comparison", "comparison_values"})
"""Drawn only when the report compares against a baseline."""
