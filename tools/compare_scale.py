"""How fast and how big is `vlmbench compare` on large runs? A measurement, not a test.

Writes, into a temporary directory, results documents that the real schema accepts (the
header and entries of tests/data/results-*.json, summaries by summary.summarize) with
their records JSONL: a current run and one or more baseline runs, each of --records
measured requests spread over --benchmarks benchmarks (plus one warm-up each), with
lognormal latencies (CV about 7%), 1% failed requests (timed, as the runner records
them) and a JSON-checked task on every other benchmark. Then it compares them:

- in-process: a fresh `python` child loads the runs and compares them through the API
  (`load_run`/`load_baseline`, `compare_runs`, the three renderers), printing the wall
  time of each step, the CPU time of them all (less disturbed by other processes on a
  shared machine) and its peak RSS (resource.getrusage, ru_maxrss);
- CLI: `python -m pytest_vlmbench.cli compare ... --format json` as a child, its wall
  time (interpreter start and imports included) and peak RSS (os.wait4's rusage).

    .venv/bin/python tools/compare_scale.py [--records 100000] [--benchmarks 4]
        [--baseline-runs 1] [--slowdown 0.0] [--keep DIR | --reuse DIR] [--repeat 1]

--keep DIR writes the runs there and keeps them; --reuse DIR measures the runs a
previous --keep wrote (results-base*.json, then results-cur.json) without writing.

Goal (issue "Trustworthy numbers, round two"): 100,000 records a side, 4 benchmarks,
under 1 s and a few hundred MB in-process. The machine this runs on is shared: read the
minimum over --repeat runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pytest_vlmbench.metrics.summary import summarize
from pytest_vlmbench.results import document as results

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = next((ROOT / "tests" / "data").glob("results-*[0-9a-f].json"))


def _records(run_id: str, bench_id: str, n: int, checks: bool, scale: float,
             rng: np.random.Generator, template: dict[str, Any]) -> list[dict[str, Any]]:
    latency = scale * rng.lognormal(0.0, 0.07, n + 1)
    failed = rng.random(n + 1) < 0.01
    failed[0] = False
    invalid = rng.random(n + 1) < 0.02
    out = []
    t = 10**12
    for seq in range(n + 1):
        lat_ns = int(latency[seq] * 1e9)
        prefill = lat_ns // 8
        r = dict(template)
        r.update(run_id=run_id, benchmark=bench_id, seq=seq,
                 phase="warmup" if seq == 0 else "measure", sample_id=f"s-{seq % 100:04d}",
                 t_start_ns=t, t_end_ns=t + lat_ns)
        if failed[seq]:
            r.update(t_first_token_ns=None, completion_tokens=None, finish_reason=None,
                     output=None, parse="no_output", stages_ns={}, counts={},
                     error={"stage": "request", "type": "RuntimeError", "message": "boom"})
        else:
            parse = ("invalid_json" if invalid[seq] else "valid") if checks else "not_checked"
            r.update(t_first_token_ns=t + prefill, parse=parse, error=None,
                     stages_ns={"prefill": prefill, "decode": lat_ns - prefill - 1000},
                     counts={"prefill_tokens": 62, "decode_evals": 47, "decode_tokens": 47})
        out.append(r)
        t += lat_ns + 1000
    return out


def write_run(directory: Path, run_id: str, started_at: str, n_records: int,
              n_benchmarks: int, scale: float, seed: int) -> Path:
    """One results document and its records, valid against the shipped schema."""
    real = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    rec_template = json.loads(
        TEMPLATE.with_suffix(".records.jsonl").read_text(encoding="utf-8").splitlines()[0]
    )
    rng = np.random.default_rng(seed)
    entries = []
    rpath = directory / f"results-{run_id}.records.jsonl"
    with rpath.open("w", encoding="utf-8") as fh:
        for b in range(n_benchmarks):
            entry = copy.deepcopy(real["benchmarks"][b % len(real["benchmarks"])])
            bench_id = f"{entry['id'][:-1]}-{b}]"
            checks = b % 2 == 1
            n = n_records // n_benchmarks + (1 if b < n_records % n_benchmarks else 0)
            recs = _records(run_id, bench_id, n, checks, scale, rng, rec_template)
            for r in recs:
                fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
            measured = [r for r in recs if r["phase"] == "measure"]
            summary = summarize(recs, checks_output=checks, load_s=0.5, peak_rss=10**8)
            summary["energy"] = {
                "energy_j": 0.0,
                "per_request": [{"seq": r["seq"], "energy_j": 0.002 * (r["t_end_ns"] -
                                 r["t_start_ns"]) / 1e6, "tokens": 48} for r in measured
                                if r["error"] is None],
            }
            entry.update(id=bench_id, test=bench_id, run_id=run_id, samples=len(measured),
                         summary=summary, started_at=started_at,
                         records={"file": rpath.name, "measured": len(measured), "warmup": 1})
            entries.append(entry)
    doc = {**real, "run_id": run_id, "started_at": started_at, "finished_at": started_at,
           "status": "complete", "benchmarks": entries, "records_file": rpath.name}
    path = directory / f"results-{run_id}.json"
    results.write_atomic(path, doc)
    return path


_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from pytest_vlmbench import compare
t_import = time.perf_counter() - t0
baselines, current = sys.argv[1:-1], sys.argv[-1]
t, cpu = time.perf_counter(), time.process_time()
cur = compare.load_run(current)
if hasattr(compare, "load_baseline"):  # (an older checkout, for "before" figures, has not)
    base = compare.load_baseline(baselines, exclude_run_id=cur.run_id)
else:
    base = compare.load_run(baselines[0], exclude_run_id=cur.run_id)
t_load = time.perf_counter() - t
t = time.perf_counter()
comparison = compare.compare_runs(base, cur)
t_compare = time.perf_counter() - t
t = time.perf_counter()
compare.render_table(comparison); compare.render_markdown(comparison)
json.dumps(compare.to_json(comparison), allow_nan=False)
t_render = time.perf_counter() - t
cpu = time.process_time() - cpu
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
floor = time.process_time()  # the least any reader that parses every record must spend
from pathlib import Path
from pytest_vlmbench.results.document import loads
for doc in [*baselines, current]:
    with Path(doc).with_suffix(".records.jsonl").open("rb") as fh:
        for line in fh:
            loads(line)
floor = time.process_time() - floor
print(json.dumps({"import_s": t_import, "load_s": t_load, "compare_s": t_compare, "cpu_s": cpu,
                  "parse_floor_s": floor,
                  "render_s": t_render, "total_s": t_load + t_compare + t_render,
                  "peak_rss_bytes": rss, "headline": comparison.headline,
                  "exit_status": comparison.exit_status}))
"""


def _child(argv: list[str]) -> tuple[float, int, str]:
    """Run a child python; its wall time, peak RSS (bytes) and stdout."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss * 1024, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000,
                        help="measured records per run (default 100000)")
    parser.add_argument("--benchmarks", type=int, default=4)
    parser.add_argument("--baseline-runs", type=int, default=1,
                        help="baseline runs, each its own document (default 1)")
    parser.add_argument("--slowdown", type=float, default=0.0,
                        help="current run slower by this fraction (default 0: unchanged)")
    parser.add_argument("--keep", metavar="DIR", help="write the runs here and keep them")
    parser.add_argument("--reuse", metavar="DIR", help="measure the runs kept in DIR")
    parser.add_argument("--repeat", type=int, default=1, help="measure this many times")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlmbench-scale-") as tmp:
        t = time.perf_counter()
        if args.reuse:
            directory = Path(args.reuse)
            bases = sorted(directory.glob("results-base*.json"))
            cur = directory / "results-cur.json"
            what = "found"
        else:
            directory = Path(args.keep) if args.keep else Path(tmp)
            directory.mkdir(parents=True, exist_ok=True)
            bases = [write_run(directory, f"base{i}", f"2026-11-23T1{i}:00:00+00:00",
                               args.records, args.benchmarks, 1.0 + 0.03 * (i % 3), seed=i)
                     for i in range(args.baseline_runs)]
            cur = write_run(directory, "cur", "2026-11-24T00:00:00+00:00", args.records,
                            args.benchmarks, 1.0 + args.slowdown, seed=99)
            what = "wrote"
        size = sum(p.stat().st_size + p.with_suffix(".records.jsonl").stat().st_size
                   for p in [*bases, cur])
        print(f"{what} {len(bases)} baseline run(s) and a current run ({size / 2**20:.0f} MiB "
              f"with records) in {time.perf_counter() - t:.1f} s: {directory}")
        paths = [str(p) for p in [*bases, cur]]
        for i in range(args.repeat):
            _wall, _rss, out = _child(["-c", _CHILD, *paths])
            m = json.loads(out)
            print(f"[{i + 1}] in-process: load {m['load_s']:.3f} s, compare "
                  f"{m['compare_s']:.3f} s, render {m['render_s']:.3f} s, total "
                  f"{m['total_s']:.3f} s wall, {m['cpu_s']:.3f} s CPU (imports "
                  f"{m['import_s']:.3f} s; parsing every record line alone: "
                  f"{m['parse_floor_s']:.3f} s CPU); peak RSS "
                  f"{m['peak_rss_bytes'] / 2**20:.0f} MiB; {m['headline']}, exit "
                  f"{m['exit_status']}")
            wall, rss, _out = _child(["-m", "pytest_vlmbench.cli", "compare", *paths,
                                      "--format", "json"])
            print(f"[{i + 1}] CLI: vlmbench compare {wall:.3f} s wall (interpreter start "
                  f"and imports included), peak RSS {rss / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
