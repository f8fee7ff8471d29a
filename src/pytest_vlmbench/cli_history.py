"""`vlmbench history`: list, trend, import, export and check a results history.

    vlmbench history list   [FILTERS]           runs, newest first
    vlmbench history trend  METRIC [FILTERS]    a metric per benchmark over the runs
    vlmbench history import FILE|DIR ...        append results files (oldest first)
    vlmbench history export --out F.csv [FILTERS]   one row per run and benchmark
    vlmbench history check                      the store's consistency

FILTERS: --benchmark PATTERN --model M --device D --precision P --task T --commit SHA
--last N. The history is --history URL, else $VLMBENCH_HISTORY, else the project's
ini `vlm_history` (as pytest reads it: relative to the ini file). A PostgreSQL password
belongs in $PGPASSWORD or ~/.pgpass, not in the URL; where a URL holds one anyway, only
its redacted form is ever printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store imports numpy (compare): only when a subcommand runs
    from pytest_vlmbench.compare.runs import BenchmarkKey
    from pytest_vlmbench.history.store import Filters, History, TrendPoint

from pytest_vlmbench.plugin.options import HISTORY_ENV as ENV

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def resolve(given: str | None) -> tuple[str, Path | None, str]:
    """(the history, what a relative SQLite path is relative to, where it came from)."""
    from pytest_vlmbench.history.store import HistoryError
    from pytest_vlmbench.project import find_project

    if given:
        return given, Path.cwd(), "from --history"
    if os.environ.get(ENV):
        return os.environ[ENV], Path.cwd(), f"from ${ENV}"
    found = find_project().history()
    if found is None:
        raise HistoryError(f"no results history: give --history URL, set ${ENV}, or set "
                           "vlm_history in the project's ini (e.g. .vlmbench/history.sqlite)")
    return found


def open_history(given: str | None, *, create: bool = False) -> History:
    """The history to read (or, with `create`, to append to). Reading a SQLite file that
    does not exist is an error, not a new empty store: a typo must not pass for "no runs"."""
    from pytest_vlmbench.history.store import History, HistoryError
    from pytest_vlmbench.history.urls import parse_url

    text, base, source = resolve(given)
    url = parse_url(text, base)
    if not create and url.dialect == "sqlite" and not Path(url.target).exists():
        raise HistoryError(f"no results history at {url.display} ({source}): nothing was "
                           "ever appended there (vlmbench history import, or pytest "
                           "--vlm-history, creates it)")
    return History.open(url)


def _filters(args: argparse.Namespace) -> Filters:
    from pytest_vlmbench.history.store import Filters

    return Filters(benchmark=args.benchmark, model=args.model, device=args.device,
                   precision=args.precision, task=args.task, commit=args.commit,
                   last=args.last)


def _list(args: argparse.Namespace) -> int:
    with open_history(args.history) as history:
        rows = history.runs(_filters(args))
        print(f"history {history.url.display}: {len(rows)} runs")
    for r in rows:
        state = r.status if r.complete else f"{r.status}, incomplete"
        commit = (r.commit or "-")[:12]
        print(f"{r.run_id}  {r.started_at or '-'}  {state}  commit {commit}  "
              f"{r.device or '-'} on {r.hostname or '-'}  {r.benchmarks} benchmarks, "
              f"{r.records} records")
    return EXIT_OK


def _format(value: float | None, scale: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{scale * value:.4g}"


def trend_lines(metric: str, points: Sequence[TrendPoint], unit: str, proportion: bool,
                higher_is_worse: bool) -> list[str]:
    """Per benchmark: each run's value, then first-to-last change, lowest and highest."""
    scale, shown_unit = (100.0, "%") if proportion else (1.0, unit)
    series: dict[BenchmarkKey, list[TrendPoint]] = {}
    for p in points:
        series.setdefault(p.key, []).append(p)
    better = "lower is better" if higher_is_worse else "higher is better"
    lines: list[str] = []
    for k, items in series.items():
        lines.append(f"{k.id}  [{k.model} {k.precision} {k.device} {k.task}]  "
                     f"{metric} ({shown_unit}, {better})")
        for p in items:
            value = _format(p.value, scale) if p.value is not None \
                else f"- ({p.absent_reason or 'absent'})"
            lines.append(f"  {p.started_at or '-'}  {p.run_id}  commit "
                         f"{(p.commit or '-')[:12]}  n={p.n}  {value}")
        values = [p.value for p in items if p.value is not None and math.isfinite(p.value)]
        if len(values) >= 2 and values[0] > 0:
            change = 100 * (values[-1] / values[0] - 1)
            lines.append(f"  {len(values)} runs: first {_format(values[0], scale)}, last "
                         f"{_format(values[-1], scale)} ({change:+.1f}%), lowest "
                         f"{_format(min(values), scale)}, highest {_format(max(values), scale)}")
    return lines


def _trend(args: argparse.Namespace) -> int:
    from pytest_vlmbench.metrics import registry

    with open_history(args.history) as history:
        points = history.trend(args.metric, _filters(args))
        display = history.url.display
    meta = registry.compared()[args.metric]
    if args.format == "json":
        print(json.dumps([{"run_id": p.run_id, "started_at": p.started_at, "commit": p.commit,
                           "benchmark": p.key.id, "model": p.key.model,
                           "precision": p.key.precision, "device": p.key.device,
                           "task": p.key.task, "metric": args.metric, "value": p.value,
                           "n": p.n, "absent_reason": p.absent_reason} for p in points],
                         indent=2, allow_nan=False))
        return EXIT_OK
    if not points:
        print(f"history {display}: no runs of a matching benchmark")
        return EXIT_OK
    print(f"history {display}: {args.metric} over {len({p.run_id for p in points})} runs")
    for line in trend_lines(args.metric, points, meta.unit, meta.proportion,
                            meta.higher_is_worse):
        print(line)
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from pytest_vlmbench.compare.runs import results_files, when
    from pytest_vlmbench.history.store import HistoryError
    from pytest_vlmbench.history.urls import redact
    from pytest_vlmbench.results.document import ResultsError, load

    files: list[Path] = []
    for item in args.files:
        path = Path(item)
        if path.is_dir():
            found = results_files(path)
            if not found:
                print(f"vlmbench: no results documents in {path}", file=sys.stderr)
                return EXIT_USAGE
            files.extend(found)
        else:
            files.append(path)
    dated: list[tuple[object, Path]] = []
    for path in files:  # oldest first, so the history's order is the runs' order
        try:
            dated.append((when(load(path)["started_at"]), path))
        except ResultsError as exc:
            print(f"vlmbench: {exc}", file=sys.stderr)
            return EXIT_USAGE
    dated.sort(key=lambda item: item[0])  # type: ignore[arg-type, return-value]
    status = EXIT_OK
    with open_history(args.history, create=True) as history:
        for _, path in dated:
            try:
                result = history.import_file(path)
            except (HistoryError, ResultsError) as exc:
                print(f"vlmbench: {path}: {redact(str(exc))}", file=sys.stderr)
                status = EXIT_PROBLEM
                continue
            if result.skipped:
                print(f"skipped {path}: {result.skipped}")
            else:
                print(f"imported {path}: run {result.run_id}, {result.benchmarks} benchmarks, "
                      f"{result.records} records ({result.seconds:.2f} s)"
                      + (f"; {result.left_out}" if result.left_out else ""))
        print(f"history: {history.url.display}")
    return status


def _export(args: argparse.Namespace) -> int:
    import io

    from pytest_vlmbench.results.document import write_text_atomic

    with open_history(args.history) as history:
        buffer = io.StringIO()
        rows = history.export_csv(buffer, _filters(args))
        display = history.url.display
    out = Path(args.out)
    write_text_atomic(out, buffer.getvalue())
    print(f"exported {rows} rows (one per run and benchmark) from {display} to {out}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    with open_history(args.history) as history:
        problems = history.check()
        display = history.url.display
        runs = len(history.runs())
    for p in problems:
        print(f"problem: {p}")
    print(f"history {display}: {runs} runs, "
          f"{'consistent' if not problems else f'{len(problems)} problems'}")
    return EXIT_OK if not problems else EXIT_PROBLEM


def _metric(text: str) -> str:
    from pytest_vlmbench.metrics import registry

    known = registry.compared()
    if text not in known:
        raise argparse.ArgumentTypeError(
            f"unknown metric {text!r}; known: {', '.join(sorted(known))}")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`vlmbench history ...` (cli.build_parser calls this)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--history", metavar="URL",
                        help=f"the results history: a SQLite file (path or sqlite:///path) or "
                        f"postgresql://...; default ${ENV}, else the ini's vlm_history")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--benchmark", metavar="PATTERN",
                         help="benchmark (test) id: a substring, or a glob with * ? [")
    filters.add_argument("--model")
    filters.add_argument("--device")
    filters.add_argument("--precision")
    filters.add_argument("--task")
    filters.add_argument("--commit", metavar="SHA", help="git commit (a prefix)")
    filters.add_argument("--last", type=_positive, metavar="N", help="only the newest N runs")
    p = sub.add_parser("history", help="the results history: list, trend, import, export, "
                       "check", description=__doc__.split("\n\n")[0])
    hsub = p.add_subparsers(dest="history_command", required=True)
    q = hsub.add_parser("list", parents=[common, filters], help="runs, newest first")
    q.set_defaults(func=_wrap(_list))
    q = hsub.add_parser("trend", parents=[common, filters],
                        help="a metric of each benchmark over the runs, oldest first")
    q.add_argument("metric", type=_metric, metavar="METRIC",
                   help="a compared metric: p50_latency, tokens_per_s, parse_rate, ...")
    q.add_argument("--format", choices=("table", "json"), default="table")
    q.set_defaults(func=_wrap(_trend))
    q = hsub.add_parser("import", parents=[common],
                        help="append results files or directories of them (oldest first)")
    q.add_argument("files", nargs="+", metavar="FILE")
    q.set_defaults(func=_wrap(_import))
    q = hsub.add_parser("export", parents=[common, filters],
                        help="write one CSV row per run and benchmark, metrics as columns")
    q.add_argument("--out", required=True, metavar="FILE")
    q.set_defaults(func=_wrap(_export))
    q = hsub.add_parser("check", parents=[common], help="the store's consistency")
    q.set_defaults(func=_wrap(_check))


Handler = Callable[[argparse.Namespace], int]


def _wrap(run: Handler) -> Handler:
    """A handler whose HistoryError (or OSError) is one line and exit 2, never a password."""

    def wrapped(args: argparse.Namespace) -> int:
        from pytest_vlmbench.history.store import HistoryError
        from pytest_vlmbench.history.urls import redact
        from pytest_vlmbench.project import ProjectError

        try:
            return run(args)
        except (HistoryError, ProjectError, OSError) as exc:
            print(f"vlmbench: {redact(str(exc))}", file=sys.stderr)
            return EXIT_USAGE

    return wrapped
