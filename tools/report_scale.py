"""How fast and how big is `vlmbench report` on a large run? A measurement, not a test.

Writes, into a temporary directory, one results document the real schema accepts (the
header and entries of tests/data/results-*.json, summaries by summary.summarize) with
its records: --benchmarks benchmarks over 10 models x 3 precisions x 2 devices and two
tasks, --records measured requests in all (lognormal latencies, 1% failed requests, a
JSON-checked task on every other benchmark, as tools/compare_scale.py writes them).
These are GENERATED figures for timing the report, energy included (a made-up 20 W
average) so that the energy tables and plots are drawn too; nothing here is a
measurement of a model.

Then a fresh `python` child builds the whole report (markdown, HTML, CSV, every plot)
through `pytest_vlmbench.report.build.build`, and the script prints its wall time, CPU
time and peak RSS (the child's ru_maxrss, and the largest of the plot workers it starts),
with the size of what it wrote.

    .venv/bin/python tools/report_scale.py [--records 100000] [--benchmarks 50]
        [--keep DIR] [--no-plots] [--repeat 1]

Goal (issue "Reports people would rather look at"): 50 benchmarks and 100,000 records
in under 15 s with plots, on this 2-core machine. It is shared: read the minimum over
--repeat runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pytest_vlmbench.metrics.summary import summarize
from pytest_vlmbench.results import document as results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from compare_scale import TEMPLATE, _child, _records  # noqa: E402  (tools/ is no package)

PRECISIONS = ("q4_k_m", "q8_0", "f16")
DEVICES = ("cpu", "orin")


def write_run(directory: Path, n_records: int, n_benchmarks: int, seed: int) -> Path:
    real = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    rec_template = json.loads(
        TEMPLATE.with_suffix(".records.jsonl").read_text(encoding="utf-8").splitlines()[0])
    rng = np.random.default_rng(seed)
    run_id = "scale"
    rpath = directory / f"results-{run_id}.records.jsonl"
    entries = []
    with rpath.open("w", encoding="utf-8") as fh:
        for b in range(n_benchmarks):
            entry = copy.deepcopy(real["benchmarks"][b % len(real["benchmarks"])])
            model = f"model-{b % 10}"
            precision = PRECISIONS[(b // 20) % 3]
            device = DEVICES[(b // 40) % 2]
            task = ("caption_brief", "photo_score")[(b // 10) % 2]
            bench_id = f"benchmarks/test_scale.py::test_{task}[{model}-{precision}-{device}]"
            n = n_records // n_benchmarks + (1 if b < n_records % n_benchmarks else 0)
            scale = 0.4 + 0.1 * (b % 10) * (1 + PRECISIONS.index(precision) * 0.3)
            recs: list[dict[str, Any]] = _records(run_id, bench_id, n, task == "photo_score", scale,
                                                  rng, rec_template)
            for r in recs:
                r.update(model=model, precision=precision, device=device, task=task)
                fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
            measured = [r for r in recs if r["phase"] == "measure"]
            summary: dict[str, Any] = dict(summarize(recs, checks_output=task == "photo_score",
                                                     load_s=0.5 + 0.1 * (b % 10),
                                                     peak_rss=(3 + b % 10) * 10**8))
            tokens = sum(r["completion_tokens"] or 0 for r in measured if r["error"] is None)
            energy_j = 20.0 * (summary["wall_s"] or 0.0)  # GENERATED: 20 W, not measured
            summary["energy"] = {
                "energy_j": energy_j, "avg_power_w": 20.0,
                "energy_per_token_j": energy_j / tokens if tokens else None,
                "energy_per_request_j": energy_j / len(measured),
                "tokens_per_s_per_w": tokens / energy_j if energy_j else None,
            }
            entry.update(id=bench_id, test=bench_id, run_id=run_id, model=model,
                         precision=precision, device=device, task=task, samples=len(measured),
                         summary=summary,
                         records={"file": rpath.name, "measured": len(measured), "warmup": 1})
            entries.append(entry)
    doc = {**real, "run_id": run_id, "benchmarks": entries, "records_file": rpath.name,
           "status": "complete"}
    path = directory / f"results-{run_id}.json"
    results.write_atomic(path, doc)
    return path


_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from pytest_vlmbench.report.build import ReportOptions, build
t_import = time.perf_counter() - t0
t, cpu = time.perf_counter(), time.process_time()
result = build([sys.argv[1]], Path(sys.argv[2]), ReportOptions(plots=sys.argv[3] == "1"))
wall = time.perf_counter() - t
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the plot workers (report/plots.py)
print(json.dumps({"import_s": t_import, "build_s": wall, "cpu_s": time.process_time() - cpu,
                  "children_cpu_s": kids.ru_utime + kids.ru_stime,
                  "children_peak_rss_bytes": kids.ru_maxrss * 1024,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "files": len(result.files), "configs": result.configs,
                  "notes": result.notes}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--benchmarks", type=int, default=50)
    parser.add_argument("--keep", metavar="DIR", help="write the run and report here")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlmbench-report-scale-") as tmp:
        directory = Path(args.keep) if args.keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        doc = write_run(directory, args.records, args.benchmarks, seed=1)
        size = doc.stat().st_size + doc.with_suffix(".records.jsonl").stat().st_size
        print(f"wrote {args.benchmarks} benchmarks, {args.records} records "
              f"({size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s: {doc}")
        for i in range(args.repeat):
            out = directory / f"report-{i}"
            child_wall, _rss, text = _child(
                ["-c", _CHILD, str(doc), str(out), "0" if args.no_plots else "1"])
            if not text.strip():  # the child prints its figures last: it failed before
                print("the report failed", file=sys.stderr)
                return 1
            data = json.loads(text)
            written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(f"run {i + 1}: build {data['build_s']:.2f} s wall, {data['cpu_s']:.2f} s CPU "
                  f"+ {data['children_cpu_s']:.2f} s in plot workers (imports "
                  f"{data['import_s']:.2f} s; the child process {child_wall:.2f} s in all); "
                  f"peak RSS {data['peak_rss_bytes'] / 2**20:.0f} MiB (largest plot worker "
                  f"{data['children_peak_rss_bytes'] / 2**20:.0f} MiB); "
                  f"{data['files']} files, {written / 2**20:.1f} MiB; "
                  f"{data['configs']} configurations")
            for note in data["notes"]:
                print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
