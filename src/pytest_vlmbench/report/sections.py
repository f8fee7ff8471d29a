"""The report's descriptive sections: sources, headline tables per modality, the
per-task, load-level and video tables, notes on what is missing, and the definitions.

Every figure is one value of one benchmark entry's summary (report/figures.py says
which); each row names its source (`S1`) and run, and the Sources section names the
files and run ids, so any number can be traced to the records it was computed from.
Winners are marked per column among configurations of one workload (the same task,
dataset and load level): only those did the same work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_vlmbench.report.figures import Figure, headline, score_figures, winners
from pytest_vlmbench.report.model import Bullets, Cell, Paragraph, Section, Table
from pytest_vlmbench.report.sources import Config, Source

MODALITY_TITLES = {"image": "Image benchmarks", "text": "Text benchmarks",
                   "video": "Video-scene benchmarks"}


def run_ref(c: Config) -> str:
    """How a row names its run: the source label and the run id."""
    return f"{c.source.label} {c.run_id}"


def _name_cell(c: Config) -> Cell:
    status = "" if c.complete else f" ({c.entry['status']})"
    return Cell(c.label + status, c.label, title=f"{c.entry['id']} ({c.backend}, {c.device})")


def _best(configs: Sequence[Config], peers: Sequence[Config],
          figures: Sequence[Figure]) -> set[tuple[int, int]]:
    """(row, column) of each best value: per workload among the complete `peers` (every
    configuration the report shows, wherever its table is), for the rows here."""
    groups: dict[tuple[str, str, str], list[Config]] = {}
    for c in peers:
        if c.complete:
            groups.setdefault(c.workload, []).append(c)
    best: set[tuple[int, int]] = set()
    for col, f in enumerate(figures):
        won: set[str] = set()
        for members in groups.values():
            won.update(members[j].key for j in
                       winners([f.value(m.summary) for m in members], f.better))
        best.update((i, col) for i, c in enumerate(configs) if c.key in won)
    return best


def figure_table(table_id: str, caption: str, configs: Sequence[Config],
                 figures: Sequence[Figure], *, lead: Sequence[tuple[str, Callable[[Config], str]]]
                 = (), peers: Sequence[Config] | None = None) -> Table:
    """A table of `figures` (columns without a value in any row are dropped and named in
    the notes); best values marked per column within each workload, among `peers` (the
    report's configurations; default: this table's)."""
    shown = [f for f in figures if any(f.value(c.summary) is not None for c in configs)]
    empty = [f.header for f in figures if f not in shown]
    headers = ["configuration", *(h for h, _ in lead), *(f.header for f in shown), "run"]
    best = _best(configs, configs if peers is None else peers, shown)
    rows: list[list[Cell]] = []
    for i, c in enumerate(configs):
        row = [_name_cell(c), *(Cell(fn(c), fn(c)) for _, fn in lead)]
        for col, f in enumerate(shown):
            v = f.value(c.summary)
            row.append(Cell(f.cell(v), v, (i, col) in best, f"{f.source} of {c.entry['id']}"))
        row.append(Cell(run_ref(c), run_ref(c)))
        rows.append(row)
    first = 1 + len(lead)
    notes = []
    if best:
        notes.append("bold marks the best value of a column among complete configurations "
                     "of the same workload (task, dataset, load level); equal at 3 "
                     "significant figures is a tie")
    if empty:
        notes.append(f"no configuration here has {', '.join(empty)}: columns left out")
    return Table(table_id, caption, headers, rows, set(range(first, first + len(shown))),
                 notes)


def headline_sections(configs: Sequence[Config]) -> list[Section]:
    """One headline table per modality (image, text, video), in that order."""
    out = []
    for modality in ("image", "text", "video"):
        group = [c for c in configs if c.modality == modality]
        if not group:
            continue
        figures = [*headline(), *score_figures([c.summary for c in group])]
        table = figure_table(f"headline-{modality}", f"{MODALITY_TITLES[modality]}: "
                             "one row per configuration (newest run)", group, figures,
                             lead=[("backend", lambda c: c.backend),
                                   ("device", lambda c: c.device)], peers=configs)
        out.append(Section(f"headline-{modality}", MODALITY_TITLES[modality], [table]))
    return out


def task_section(configs: Sequence[Config]) -> Section | None:
    """Per task: reliability, latency, length and that task's quality scores."""
    tasks: dict[str, list[Config]] = {}
    for c in configs:
        tasks.setdefault(c.task, []).append(c)
    if not tasks:
        return None
    base = {f.name: f for f in headline()}
    names = ("requests", "success_rate", "parse_rate", "p50_s", "p95_s", "output_tokens_mean")
    blocks: list[Any] = []
    for task, group in tasks.items():
        figures = [base[n] for n in names] + score_figures([c.summary for c in group])
        blocks.append(figure_table(f"task-{task}", f"task {task}", group, figures,
                                   lead=[("dataset", lambda c: c.workload[1])]))
    return Section("tasks", "By task", blocks)


def _level_order(c: Config) -> tuple[float, str]:
    load = c.entry.get("load")
    if load is None:
        return (0.0, "")
    value = load.get("concurrency") or load.get("rate_rps") or load.get("batch_size") or 0
    return (float(value), load["label"])


def level_section(configs: Sequence[Config], by_name: Mapping[str, Figure]) -> Section | None:
    """Load levels (concurrency, rate, batch) and sweeps: throughput, TTFT, TPOT,
    goodput per level, and the highest level of each sweep that met its SLOs."""
    levelled = [c for c in configs if c.level is not None]
    if not levelled:
        return None
    groups: dict[tuple[str, ...], list[Config]] = {}
    for c in levelled:
        groups.setdefault((c.test.split("[")[0], c.model, c.precision, c.backend, c.device),
                          []).append(c)
    names = ("requests_per_s", "output_tokens_per_s", "ttft_p50_s", "p50_tpot_s",
             "goodput_rps", "p50_s", "p95_s", "success_rate")
    figures = [by_name[n] for n in names]
    blocks: list[Any] = []
    summary: list[str] = []
    for (test, model, precision, backend, device), group in groups.items():
        group.sort(key=_level_order)
        table = figure_table(
            f"levels-{len(blocks) + 1}", f"{test}: {model} {precision} ({backend}, {device})",
            group, figures, lead=[("level", lambda c: c.level or "seq"),
                                  ("SLO", _slo_text)])
        blocks.append(table)
        sweep = group[-1].entry.get("sweep")
        met = [c for c in group if c.entry.get("slo_passed") is True]
        name = f"{test}, {model} {precision}"
        if sweep is not None and sweep.get("best"):
            summary.append(f"{name}: highest level meeting every SLO: {sweep['best']}")
        elif met:
            summary.append(f"{name}: highest level meeting every SLO: {met[-1].level}")
        elif any(c.entry.get("slo_passed") is not None for c in group):
            summary.append(f"{name}: no level met every SLO")
        elif len(group) > 1:
            summary.append(f"{name}: no SLOs given, so no level is marked as meeting them")
    if summary:
        blocks.insert(0, Bullets(summary))
    return Section("levels", "Load levels", blocks)


def _slo_text(c: Config) -> str:
    passed = c.entry.get("slo_passed")
    return "-" if passed is None else ("pass" if passed else "FAIL")


def video_section(configs: Sequence[Config], by_name: Mapping[str, Figure]) -> Section | None:
    """Video scenes: seconds per scene and real-time factors, with why where absent."""
    group = [c for c in configs if isinstance(c.summary.get("video"), Mapping)]
    if not group:
        return None
    names = ("seconds_per_scene", "real_time_factor", "pipeline_real_time_factor")
    table = figure_table("video", "video scenes: VLM seconds per scene and real-time factor "
                         "(below 1 keeps up with the video)", group,
                         [by_name[n] for n in names],
                         lead=[("videos", _videos), ("scenes", _scenes),
                               ("frames/scene", _frames), ("layout", _layout)])
    for c in group:
        why = c.summary["video"].get("absent_reason")
        if why:
            table.notes.append(f"{c.label}: figures absent: {why}")
    return Section("video", "Video scenes", [table])


def _videos(c: Config) -> str:
    v = c.summary["video"]
    return f"{v.get('videos_complete', 0)}/{len(v.get('videos') or [])}"


def _scenes(c: Config) -> str:
    scenes = c.summary["video"].get("scenes")
    return "-" if scenes is None else str(scenes)


def _frames(c: Config) -> str:
    f = c.summary["video"].get("frames_per_scene")
    return "-" if f is None else f"{f:.1f}"


def _layout(c: Config) -> str:
    ref = c.entry["dataset"].get("video")
    return "-" if ref is None else str(ref.get("layout"))


def sources_section(sources: Sequence[Source], shown: Sequence[Config],
                    every: Sequence[Config]) -> Section:
    """The files and runs every figure comes from."""
    rows = []
    for s in sources:
        doc = s.doc
        for run_id in s.run_ids:
            header = s.header_of(run_id)
            env: Mapping[str, Any] = header.get("environment") or {}
            git = env.get("git") if isinstance(env.get("git"), Mapping) else None
            device = header.get("device") or {}
            rows.append([
                Cell(s.label, s.number), Cell(str(s.path), str(s.path)),
                Cell(run_id, run_id), Cell(str(device.get("name", "-")), None),
                Cell(str(header.get("started_at", "-")), str(header.get("started_at", ""))),
                Cell(str(header.get("status", doc["status"])), None),
                Cell(str(git.get("commit", "-"))[:12] if git else "-", None),
                Cell(str(s.records) if s.records else "missing", None),
            ])
    table = Table("sources", "results documents read", ["source", "file", "run id",
                  "device", "started", "status", "commit", "records"], rows)
    n_records = sum(c.entry["records"]["measured"] for c in every)
    blocks: list[Any] = [
        Paragraph(f"{len(sources)} results document(s), {len(every)} benchmark entries "
                  f"({n_records} measured requests); {len(shown)} configurations shown "
                  "(the newest run of each). Each row's `run` column names its source and "
                  "run; summary.csv has every entry and records.csv every record, keyed by "
                  "the same `row`."),
        table,
    ]
    return Section("sources", "Sources", blocks)


def notes_section(sources: Sequence[Source], shown: Sequence[Config],
                  extra: Sequence[str]) -> Section:
    """What is missing and why: no meter, failed configurations, stages a backend does
    not split, records not on disk, older runs left out, plots not drawn."""
    notes: list[str] = []
    for s in sources:
        for run_id in s.run_ids:
            entries = [e for e in s.doc["benchmarks"]
                       if (e.get("run_id") or s.doc["run_id"]) == run_id]
            energy = [e["summary"].get("energy") for e in entries]
            if not entries or any(isinstance(x, Mapping) and x.get("energy_j") is not None
                                  for x in energy):
                continue
            # the run's own power block (a merged document's top one is null when its
            # runs used different meters)
            power: Any = s.header_of(run_id).get("power") or s.doc.get("power") or {}
            why = power.get("absent_reason") if isinstance(power, Mapping) else None
            notes.append(f"{s.label} run {run_id}: no energy figures (J/token, tokens/s/W, "
                         f"energy cost): {why or 'no power meter'}")
        if s.records is None:
            notes.append(f"{s.label}: records file missing ({s.doc['records_file']}); "
                         "distributions and records.csv have nothing from it")
    for c in shown:
        if not c.complete:
            why = c.entry.get("error") or "no error message"
            notes.append(f"{c.label}: {c.entry['status']}: {why}")
        failed = c.summary.get("failed") or 0
        if failed:
            notes.append(f"{c.label}: {failed} of {c.summary['requests']} measured requests "
                         "failed; latency figures are over the successful ones, success "
                         "rate counts them")
    split = {c.backend for c in shown if c.summary.get("stages_s")}
    for backend in sorted({c.backend for c in shown} - split):
        notes.append(f"backend {backend}: reports no stage timings (prefill, decode...), so "
                     "its requests have no stage breakdown")
    older = [o for c in shown for o in c.superseded]
    if older:
        notes.append(f"{len(older)} older run(s) of configurations shown are left out of the "
                     "tables and plots (in summary.csv with shown=false)")
    notes.extend(extra)
    return Section("notes", "What is missing", [Bullets(notes or ["nothing: every figure "
                                                                   "was measured"])])


def definitions_section(figures: Sequence[Figure]) -> Section:
    """Each column's definition and where its value is in a benchmark's summary."""
    rows = [[Cell(f.header, f.header), Cell(f.unit or "-", None), Cell(f.description, None),
             Cell(f.source, f.source)] for f in figures]
    return Section("definitions", "Definitions", [
        Table("definitions", "what each column is", ["column", "unit", "definition",
                                                      "value in the results"], rows)])
