"""The `vlmbench` command: look at catalogs, devices and results files.

    vlmbench models [--catalog FILE]     the catalog's models, precisions and sources
                                          (default: the catalog pytest would use here)
    vlmbench devices                      device profiles, and what this machine is
    vlmbench validate FILE...             check results files (and their records) against the schema
    vlmbench show FILE                    the summary table of a results file (and its
                                          power windows table)
    vlmbench merge OUT INPUT... [--force] merge runs (devices, days) into one results file
    vlmbench compare BASELINE... CURRENT  regressions against one or several baseline runs
                                          (see docs/compare.md)
    vlmbench report RESULTS... --out DIR  markdown, HTML, CSV and plots from results files
                                          (see docs/report.md)
    vlmbench history list|trend|import|export|check
                                          the results history (see docs/history.md)

Exit status: 0 ok, 1 a file failed validation, 2 usage error (bad arguments, unreadable file).
compare: 0 no regression, 1 a gated regression, 2 usage error or bad input, 3 nothing comparable.
report: 0 written, 2 usage error or an input it cannot read.

The subcommands read the project as pytest started here would (project.py): its ini
file's vlm_catalog and vlm_out, so `vlmbench models` lists the catalog the benchmarks
use and `latest` is the directory the runs went to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_vlmbench.models import devices
from pytest_vlmbench.models.catalog import CatalogError, load_catalog
from pytest_vlmbench.plugin.options import (
    DEFAULT_BASELINE_RUNS,
    DEFAULT_DRIFT_ALLOWANCE,
    allowance,
    float_at_least,
    int_at_least,
)
from pytest_vlmbench.project import ProjectError, Resolved, find_project
from pytest_vlmbench.report import table
from pytest_vlmbench.results import naming
from pytest_vlmbench.results.document import ResultsError, load, records_path, validate_record
from pytest_vlmbench.run import machine_load
from pytest_vlmbench.run.records import read_records

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _catalog(args: argparse.Namespace) -> Resolved:
    """--catalog (relative to the current directory), else the project's catalog."""
    if args.catalog is not None:
        return Resolved(Path(args.catalog).expanduser().absolute(), "from --catalog")
    return find_project().catalog()


def _models(args: argparse.Namespace) -> int:
    from pytest_vlmbench.backends import available  # names only: no backend is imported

    try:
        chosen = _catalog(args)
        # the backends pytest would accept: a catalog error it reports is reported here
        catalog = load_catalog(chosen.path, backends=frozenset(available()))
    except (CatalogError, ProjectError) as exc:
        print(f"vlmbench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"catalog: {chosen.path} ({chosen.source})")
    for spec in catalog.models.values():
        flag = "default" if spec.default else "opt-in"
        print(f"{spec.id}  [{spec.backend}, {spec.modality}, {flag}]  {spec.description}")
        for precision, source in spec.precisions.items():
            print(f"    {precision}: {source}")
        if spec.projector:
            print(f"    projector: {spec.projector}")
    return EXIT_OK


def _devices(_args: argparse.Namespace) -> int:
    detection = devices.detect()
    for p in devices.PROFILES.values():
        mark = "*" if p.name == detection.profile else " "
        bw = f"{p.bandwidth_gbs:g} GB/s" if p.bandwidth_gbs else "bandwidth n/a"
        mem = f"{p.memory_gb:g} GB" if p.memory_gb else "memory: host"
        print(f"{mark} {p.name:10} {p.description}; {mem}, {bw}, meter {p.power_meter}")
        print(f"    precisions: {', '.join(p.precisions)}")
    print(f"this machine: {detection.profile} ({detection.evidence})")
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for name in args.files:
        path = Path(name)
        try:
            doc = load(path)
            rpath = records_path(path, doc)
            records = read_records(rpath) if rpath.exists() else []
            for i, record in enumerate(records, 1):
                validate_record(record, f"{rpath}:{i}")
        except (ResultsError, ValueError) as exc:
            print(f"invalid: {exc}", file=sys.stderr)
            status = EXIT_INVALID
            continue
        note = f"{len(records)} records" if rpath.exists() else f"records file {rpath} missing"
        print(f"ok: {path} ({len(doc['benchmarks'])} benchmarks, {note})")
    return status


def _show(args: argparse.Namespace) -> int:
    try:
        doc = load(Path(args.file))
    except ResultsError as exc:
        print(f"vlmbench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    dev = doc["device"]
    print(f"run {doc['run_id']} ({doc['status']}) on {dev['name']}: {doc['environment']['cpu']}")
    for line in table.render(doc["benchmarks"]):
        print(line)
    windows: Any = doc.get("windows")  # what vlm_power.measure wrote; older documents: none
    for line in table.render_windows(windows if isinstance(windows, list) else []):
        print(line)
    for b in doc["benchmarks"]:  # timings taken on a busy machine say so, old documents too
        warning = machine_load.busy_warning(b["id"], b.get("machine"))
        if warning is not None:
            print(f"warning: {warning}")
    return EXIT_OK


def _merge(args: argparse.Namespace) -> int:
    from pytest_vlmbench.results.merge import merge_files  # only this subcommand needs it

    out = Path(args.out)
    try:
        merged = merge_files(
            [Path(p) for p in args.inputs], out, shared_run_id=args.shared_run_ids,
            force=args.force,
        )
    except (ResultsError, OSError) as exc:
        print(f"vlmbench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for note in merged.warnings:
        print(f"vlmbench: warning: {note}", file=sys.stderr)
    doc = merged.document
    print(f"merged {len(merged.run_ids)} runs, {len(doc['benchmarks'])} benchmarks, "
          f"{len(merged.records)} records -> {out}")
    return EXIT_OK


def _redacted(exc: BaseException) -> str:
    """An error's text with any URL password replaced (a history URL may hold one)."""
    from pytest_vlmbench.history.urls import redact

    return redact(str(exc))


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _compare(args: argparse.Namespace) -> int:
    from pytest_vlmbench import compare  # numpy is needed only by this subcommand

    if len(args.runs) < 2:
        print("vlmbench: compare needs a BASELINE and a CURRENT (BASELINE... CURRENT)",
              file=sys.stderr)
        return compare.EXIT_USAGE
    *baselines, current_spec = args.runs
    try:
        rules = compare.parse_rules(args.fail_on) if args.fail_on else None
        # `latest` is where pytest started here writes its runs; the ini is read only
        # then, so a broken ini never stands in the way of comparing named files
        out_dir, latest_from = Path(naming.DEFAULT_OUT_DIR), None
        if compare.LATEST in args.runs:
            out = find_project().out_dir()
            out_dir, latest_from = out.path, f"the output directory, {out.source}"
        current = compare.load_run(current_spec, out_dir, latest_from=latest_from)
        if any(b.partition(":")[0] == "history" and ":" in b for b in baselines):
            baseline = _history_baseline(baselines, current, args.history,
                                         args.baseline_runs)
        else:
            baseline = compare.load_baseline(baselines, out_dir, runs=args.baseline_runs,
                                             exclude_run_id=current.run_id,
                                             latest_from=latest_from)
        comparison = compare.compare_runs(
            baseline, current, rules, alpha=args.alpha, min_samples=args.min_samples,
            drift_allowance=args.drift_allowance,
        )
    except (ResultsError, compare.RuleError, ProjectError) as exc:
        print(f"vlmbench: {_redacted(exc)}", file=sys.stderr)
        return compare.EXIT_USAGE
    if args.format == "json":
        print(json.dumps(compare.to_json(comparison), indent=2, allow_nan=False))
    elif args.format == "markdown":
        print(compare.render_markdown(comparison))
    else:
        for line in compare.render_table(comparison):
            print(line)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    target = step_summary or args.summary_file
    if target:
        try:  # GitHub's step summary collects every step's output: append to it
            with Path(target).open("a" if step_summary else "w", encoding="utf-8") as fh:
                fh.write(compare.render_markdown(comparison) + "\n")
        except OSError as exc:
            print(f"vlmbench: cannot write the summary to {target} ({exc.strerror})",
                  file=sys.stderr)
            return compare.EXIT_USAGE
    return comparison.exit_status


def _history_baseline(specs: Sequence[str], current: Any, history: str | None,
                      default_runs: int) -> Any:
    """`history:N` as the baseline: the last N complete runs of each of the current run's
    benchmarks in the results history (--history, $VLMBENCH_HISTORY or vlm_history).
    ResultsError for anything wrong, with the history named without its password."""
    from pytest_vlmbench.cli_history import open_history
    from pytest_vlmbench.history import HistoryError
    from pytest_vlmbench.plugin.gate import GateError, history_runs

    if len(specs) != 1:
        raise ResultsError("history:N is the whole baseline: give it alone, before CURRENT")
    try:
        n = history_runs(specs[0], default_runs)
        assert n is not None
        with open_history(history) as store:
            return store.baseline(current.doc, n, exclude_run_id=current.run_id)
    except (HistoryError, GateError) as exc:
        raise ResultsError(str(exc)) from None


def _slo(text: str) -> tuple[str, float]:
    name, sep, limit = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(limit)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=LIMIT, e.g. max_latency_p95_s=2.0") from None


def _report(args: argparse.Namespace) -> int:
    from pytest_vlmbench.history.urls import HistoryError
    from pytest_vlmbench.report import cost
    from pytest_vlmbench.report.build import ReportOptions, build
    from pytest_vlmbench.report.recommend import check_slos

    inputs: list[str | Path] = []
    try:
        for item in args.results:
            if item == "latest":  # the newest run pytest started here wrote
                from pytest_vlmbench.compare import load_run

                out = find_project().out_dir()
                inputs.append(load_run("latest", out.path,
                                       latest_from=f"the output directory, {out.source}").path)
            else:
                inputs.append(item)
        prices = cost.Prices(
            cost.DEFAULT_ELECTRICITY_PRICE if args.electricity_price is None
            else args.electricity_price, args.currency,
            [cost.parse_api_price(p) for p in args.api_price or []],
            electricity_given=args.electricity_price is not None)
        slos = dict(args.slo) if args.slo else None
        if slos:
            check_slos(slos)
        history = base = None
        if args.history or any(b.partition(":")[0] == "history" and ":" in b
                               for b in args.baseline or ()):
            from pytest_vlmbench.cli_history import open_history, resolve

            open_history(args.history).close()  # there, readable, and not a typo
            history, base, _ = resolve(args.history)
        result = build(inputs, Path(args.out), ReportOptions(
            prices=prices, slos=slos, baseline=args.baseline or (), plots=not args.no_plots,
            title=args.title, history=history, history_base=base))
    except (ResultsError, ProjectError, ValueError, OSError, HistoryError) as exc:
        print(f"vlmbench: {_redacted(exc)}", file=sys.stderr)
        return EXIT_USAGE
    for note in result.notes:
        print(f"note: {note}")
    print(f"report: {result.out_dir / 'report.html'}, report.md, {len(result.files)} files "
          f"({result.configs} configurations from {result.entries} benchmark entries, "
          f"{result.seconds:.1f} s)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmbench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the models of a catalog")
    p.add_argument("--catalog", metavar="FILE",
                   help="a catalog TOML, relative to the current directory (default: the one "
                   "pytest would load here: vlm_catalog of the ini file, else "
                   "benchmarks/models.toml under the rootdir if it exists, else the "
                   "embedded one)")
    p.set_defaults(func=_models)
    p = sub.add_parser("devices", help="list device profiles and detect this machine")
    p.set_defaults(func=_devices)
    p = sub.add_parser("validate", help="validate results files against the schema")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_validate)
    p = sub.add_parser("show", help="print the summary table of a results file")
    p.add_argument("file")
    p.set_defaults(func=_show)
    p = sub.add_parser("merge", help="merge results files (several runs) into one")
    p.add_argument("out", metavar="OUT", help="the merged results file to write")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="results files to merge")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--shared-run-ids", action="store_true",
                   help="allow one run id in several inputs (pytest-xdist workers' partials)")
    p.set_defaults(func=_merge)
    p = sub.add_parser(
        "compare", help="compare a run with one or several baseline runs; fail on a credible "
        "regression", usage="vlmbench compare BASELINE [BASELINE ...] CURRENT [options]")
    p.add_argument("runs", metavar="RUN", nargs="+",
                   help="BASELINE... CURRENT, the last being the current run. Each is a results "
                   "file, a directory of saved runs (results documents found by content, "
                   "whatever their names) or 'latest' (the output directory pytest would "
                   f"write to here: vlm_out's directory, else {naming.DEFAULT_OUT_DIR}/ under the "
                   "rootdir); a baseline "
                   "directory gives its newest --baseline-runs finished runs of the newest "
                   "one's commit, the current one its newest run")
    p.add_argument("--fail-on", action="append", metavar="SPEC",
                   help="gate rule, e.g. p95_latency:+10%% or parse_rate:-0.01 (repeatable or "
                   "comma-separated); overrides the default rule of the metrics it names, "
                   "METRIC:off drops one, 'none' drops them all")
    p.add_argument("--baseline-runs", type=int_at_least(1), default=DEFAULT_BASELINE_RUNS,
                   metavar="N", help="per benchmark, compare with at most the newest N "
                   f"baseline runs (default {DEFAULT_BASELINE_RUNS}); with 2 or more, timing "
                   "metrics are judged against their measured drift between runs")
    p.add_argument("--drift-allowance", type=allowance, default=DEFAULT_DRIFT_ALLOWANCE,
                   metavar="X", help="with one baseline run, timing metrics gate only beyond "
                   "their limit plus X (relative: 0.25 or 25%%; default "
                   f"{DEFAULT_DRIFT_ALLOWANCE:g}, the drift measured between runs)")
    p.add_argument("--alpha", type=_probability, default=0.01,
                   help="significance level of the tests (default 0.01)")
    p.add_argument("--min-samples", type=int_at_least(1), default=5,
                   help="fewer successful requests a side is inconclusive (default 5)")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--summary-file", metavar="PATH",
                   help="write the markdown summary here (when $GITHUB_STEP_SUMMARY is unset)")
    p.add_argument("--history", metavar="URL",
                   help="the results history a BASELINE of history:N is taken from (default "
                   "$VLMBENCH_HISTORY, else the ini's vlm_history): per benchmark, its last "
                   "N complete runs on its device")
    p.set_defaults(func=_compare)
    p = sub.add_parser(
        "report", help="write a report (markdown, HTML, CSV, plots) of results files",
        usage="vlmbench report RESULTS [RESULTS ...] --out DIR [options]")
    p.add_argument("results", metavar="RESULTS", nargs="+",
                   help="results files, directories of them (every results document inside, "
                   "found by content) or 'latest' (the newest run in the output directory "
                   "pytest would write to here); several devices or runs make one report")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the directory to write report.md, report.html, *.csv and plots/ into")
    p.add_argument("--electricity-price", type=float_at_least(0.0, strict=False), metavar="PRICE",
                   help="electricity price per kWh for the cost section (default 0.30, "
                   "stated as a default in the report)")
    p.add_argument("--currency", default="USD", help="the prices' currency (default USD)")
    p.add_argument("--api-price", action="append", metavar="NAME=IN/OUT",
                   help="a hosted API's price per million input and output tokens, e.g. "
                   "provider-x=2.5/10: the cost section prices the same token counts "
                   "(repeatable)")
    p.add_argument("--slo", action="append", type=_slo, metavar="NAME=LIMIT",
                   help="a limit for the 'best under an SLO' recommendation, by SLO name, "
                   "e.g. max_latency_p95_s=2.0 or min_parse_rate=0.99 (repeatable; default: "
                   "each benchmark's own SLO verdict)")
    p.add_argument("--baseline", action="append", metavar="RUN",
                   help="compare the newest input run with this baseline (a results file or "
                   "a directory of saved runs, as in vlmbench compare) and chart it")
    p.add_argument("--no-plots", action="store_true", help="write no plots")
    p.add_argument("--title", default="pytest-vlmbench report", help="the report's title")
    p.add_argument("--history", metavar="URL",
                   help="a results history (SQLite file or postgresql://...): adds a trend "
                   "plot per metric of the report's benchmarks, and lets --baseline be "
                   "history:N")
    p.set_defaults(func=_report)
    from pytest_vlmbench.cli_history import add_parser as add_history

    add_history(sub)
    return parser


EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:  # Ctrl-C in a long compare or merge: one line, no traceback
        print("vlmbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
