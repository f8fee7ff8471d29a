"""How fast is the results history at scale? A measurement, not a test.

Fills a history with --runs runs of --benchmarks benchmarks x --records measured records
(plus one warm-up each), every run through History.append (the fill is the real path):
documents and records built from the real run in tests/data (its first measured record
the template, latencies lognormal from a seeded generator; tests/history_db.py
synthetic_run). Then measures, with perf_counter:

- appending one more run;
- trend("p95_latency"), over every run, and filtered to one benchmark;
- `history:20`: History.baseline(current, 20) for a current run of --benchmarks
  benchmarks, then compare_runs on it;

and prints them with the store's size.

    .venv/bin/python tools/history_scale.py [--url URL | --postgres] [--runs 1000]
        [--benchmarks 50] [--records 100] [--keep]

Without --url the history is a SQLite file in a temporary directory; --postgres starts
a throwaway PostgreSQL cluster (tests/history_db.py; as root through runuser). A --url
that already holds runs is measured as it is, filled up to --runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.history_db import bench_id, postgres, synthetic_run, template  # noqa: E402

from pytest_vlmbench.compare.core import compare_runs  # noqa: E402
from pytest_vlmbench.compare.runs import Run  # noqa: E402
from pytest_vlmbench.history import Filters, History  # noqa: E402

T = TypeVar("T")


def stamp(i: int) -> str:
    """Run i's start: an hour after run i-1's."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(1_780_000_000 + 3600 * i))


def timed(label: str, fn: Callable[[], T]) -> T:
    t = time.perf_counter()
    out = fn()
    print(f"  {label:<44} {time.perf_counter() - t:8.3f} s")
    return out


def measure(url: str, runs: int, benchmarks: int, records: int) -> None:
    base = template()
    with History.open(url) as history:
        print(f"history {history.url.display}")
        have = len(history.runs())
        t = time.perf_counter()
        slowest = 0.0
        for i in range(have, runs):
            doc, recs = synthetic_run(f"run{i:05d}", stamp(i), benchmarks=benchmarks,
                                      records=records, seed=i, scale=1.0 + 0.05 * (i % 4),
                                      commit=f"{i // 10:012x}", summaries=False, base=base)
            result = history.append(doc, recs, source="history_scale")
            slowest = max(slowest, result.seconds)
            if (i + 1) % 100 == 0 or i + 1 == runs:
                print(f"  filled {i + 1} runs in {time.perf_counter() - t:.1f} s "
                      f"(slowest append {slowest:.3f} s)", flush=True)
        print(f"{runs} runs x {benchmarks} benchmarks x {records} records "
              f"(+1 warm-up each); measuring:")
        doc, recs = synthetic_run("extra", stamp(runs), benchmarks=benchmarks,
                                  records=records, seed=runs, summaries=False, base=base)
        result = history.append(doc, recs, source="history_scale")
        print(f"  {'append one more run':<44} {result.seconds:8.3f} s")
        points = timed("trend p95_latency (every run)", lambda: history.trend("p95_latency"))
        print(f"    {len(points)} points")
        one = Filters(benchmark=bench_id(7))
        points = timed("trend p95_latency (one benchmark)",
                       lambda: history.trend("p95_latency", one))
        print(f"    {len(points)} points")
        cur_doc, cur_recs = synthetic_run("current", stamp(runs + 1), benchmarks=benchmarks,
                                          records=records, seed=runs + 1, scale=1.1,
                                          summaries=False, base=base)
        current = Run.from_records(Path("current.json"), cur_doc, cur_recs)
        t = time.perf_counter()
        baseline = history.baseline(cur_doc, 20, exclude_run_id="current")
        t_base = time.perf_counter() - t
        comparison = compare_runs(baseline, current)
        t_all = time.perf_counter() - t
        print(f"  {'history:20 baseline':<44} {t_base:8.3f} s ({len(baseline.runs)} runs)")
        print(f"  {'history:20 baseline + compare_runs':<44} {t_all:8.3f} s "
              f"({comparison.headline})")
        print(f"    {baseline.notes[0]}")
        size = history.size_bytes() or 0
        print(f"  store size {size / 2**20:.0f} MiB ({size / max(1, runs + 1) / 1024:.0f} KiB "
              "a run)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the history (default: SQLite in a temporary directory)")
    parser.add_argument("--postgres", action="store_true",
                        help="a throwaway PostgreSQL cluster (tests/history_db.py)")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--benchmarks", type=int, default=50)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the temporary SQLite file")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.url:
            url = args.url
        elif args.postgres:
            cluster = stack.enter_context(postgres())
            url = cluster.create_database("scale")
        else:
            directory = tempfile.mkdtemp(prefix="vlm-history-") if args.keep else \
                stack.enter_context(tempfile.TemporaryDirectory(prefix="vlm-history-"))
            url = f"sqlite:///{directory}/history.db"
        measure(url, args.runs, args.benchmarks, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
