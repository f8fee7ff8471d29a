"""Does the regression gate work? False alarms on unchanged runs, detections of a slowdown.

Measures the `vlmbench compare` gate (docs/compare.md) on real llama.cpp runs of the
default suite's caption task on gemma3-270m, each run a fresh pytest process writing
to a temporary directory (`.vlmbench/` is left alone):

- A/A: the same configuration run R times in a row; every consecutive pair (run i as
  baseline, run i+1 as current; with --all-pairs every i < j) is compared. A gate that
  fires here is a false alarm.
- A/B: K rounds of A (the same configuration) then B, a deliberate slowdown
  (`--vlm-threads` set to --slow-threads, by default 1: half of a 2-core machine); each
  A -> B is compared. A gate that fires here is a detection. The measured effect (p50
  latency and decode-rate ratios, B / A) says how big the slowdown was.

Every comparison uses the default rules plus `p95_latency:+10%`, at --alpha. Printed:
the false-alarm and detection rates with their counts and 95% Clopper-Pearson
intervals, per-metric verdict counts, and the median effects.

    .venv/bin/python tools/gate_experiment.py [--rounds 6] [--ab-rounds 3] [--samples 10]
        [--slow-threads 1] [--alpha 0.01] [--all-pairs] [--json [PATH]]

A measurement, not a test: it always exits 0 (runs that fail are reported and skipped).
Run it on an otherwise idle machine: anything else using the cores during one run shows
up as an A/A "regression" (each run's wall time and the load average at its start are
printed so that such runs can be spotted).
Pass further pytest options with --pytest-arg (repeatable), e.g.
`--pytest-arg=--vlm-power-meter=none`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vlmbench.compare import DEFAULT_RULE_SPECS

ROOT = Path(__file__).resolve().parent.parent
SUITE = "benchmarks/test_default_suite.py"
RULES = (*DEFAULT_RULE_SPECS, "p95_latency:+10%")
EFFECT_METRICS = ("p50_latency", "p95_latency", "tokens_per_s")
VERDICT_ORDER = ("regressed", "improved", "unchanged", "inconclusive")


@dataclass
class Run:
    """One pytest process: its results file, or why there is none."""

    label: str
    results: Path
    threads: int | None
    wall_s: float = 0.0
    load_at_start: float | None = None  # 1-minute load average when the run started
    error: str | None = None


@dataclass
class Verdict:
    """One `vlmbench compare` of two runs."""

    experiment: str  # "A/A" or "A/B"
    baseline: str
    current: str
    exit_status: int
    gated: list[str] = field(default_factory=list)  # gated metrics that regressed
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> verdict data
    error: str | None = None

    @property
    def fired(self) -> bool:
        return self.exit_status == 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_suite(run: Run, args: argparse.Namespace) -> None:
    """Run the caption benchmark once, in a fresh process; fills run.wall_s or run.error."""
    cmd = [
        sys.executable, "-m", "pytest", SUITE, "-k", args.test,
        f"--vlm-models={args.model}", f"--vlm-samples={args.samples}",
        f"--vlm-out={run.results}", "-p", "no:benchmark", "-p", "no:cacheprovider", "-q",
    ]
    if args.warmup is not None:
        cmd.append(f"--vlm-warmup={args.warmup}")
    if run.threads is not None:
        cmd.append(f"--vlm-threads={run.threads}")
    cmd += args.pytest_arg
    if hasattr(os, "getloadavg"):
        run.load_at_start = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    run.wall_s = time.perf_counter() - start
    if proc.returncode != 0 or not run.results.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        run.error = f"pytest exited {proc.returncode}:\n    " + "\n    ".join(tail)


def compare(experiment: str, base: Run, cur: Run, alpha: float) -> Verdict:
    """`vlmbench compare BASE CUR --fail-on ... --format json`, as a CI step would run it."""
    verdict = Verdict(experiment, base.label, cur.label, exit_status=-1)
    if base.error or cur.error:
        verdict.error = "a run failed"
        return verdict
    cmd = [sys.executable, "-m", "pytest_vlmbench.cli", "compare", str(base.results),
           str(cur.results), "--alpha", str(alpha), "--format", "json"]
    for rule in RULES:
        cmd += ["--fail-on", rule]
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    verdict.exit_status = proc.returncode
    if proc.returncode not in (0, 1):
        verdict.error = f"compare exited {proc.returncode}: {proc.stderr.strip()}"
        return verdict
    data = json.loads(proc.stdout)
    verdict.gated = [g["metric"] for g in data["gated"]]
    for pair in data["pairs"]:  # one benchmark per run here
        for m in pair["metrics"]:
            verdict.metrics[m["metric"]] = {
                k: m[k] for k in ("verdict", "gated", "effect", "effect_kind", "ci", "p_value",
                                  "baseline", "current", "n_baseline", "n_current", "note")
            }
    if not data["pairs"]:
        verdict.error = f"nothing comparable: {data['headline']}"
    return verdict


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval of k successes in n trials (by bisection)."""

    def cdf(x: int, p: float) -> float:  # P(X <= x), X ~ Binomial(n, p)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(x + 1))

    def solve(f: Any) -> float:  # f decreasing in p; the p where f crosses 0
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        return (lo + hi) / 2

    tail = (1 - confidence) / 2
    lower = 0.0 if k == 0 else solve(lambda p: tail - (1 - cdf(k - 1, p)))
    upper = 1.0 if k == n else solve(lambda p: cdf(k, p) - tail)
    return lower, upper


def rate_line(name: str, verdicts: list[Verdict]) -> str:
    valid = [v for v in verdicts if v.error is None]
    n, k = len(valid), sum(v.fired for v in valid)
    if n == 0:
        return f"{name}: no valid comparison"
    lo, hi = clopper_pearson(k, n)
    skipped = f", {len(verdicts) - n} skipped" if len(verdicts) > n else ""
    return f"{name}: {k}/{n} = {k / n:.0%} (95% CI {lo:.0%}-{hi:.0%}){skipped}"


def metric_table(verdicts: list[Verdict]) -> list[str]:
    """Per metric: how many comparisons gave each verdict, and whether it is gated."""
    valid = [v for v in verdicts if v.error is None]
    metrics = list(dict.fromkeys(m for v in valid for m in v.metrics))
    lines = [f"    {'metric':18} {'gated':>5}  " + "  ".join(f"{h:>12}" for h in VERDICT_ORDER)]
    for metric in metrics:
        seen = [v.metrics[metric] for v in valid if metric in v.metrics]
        counts = [sum(s["verdict"] == verdict for s in seen) for verdict in VERDICT_ORDER]
        gated = "yes" if any(s["gated"] for s in seen) else "no"
        lines.append(f"    {metric:18} {gated:>5}  " + "  ".join(f"{c:>12}" for c in counts))
    return lines


def effect_lines(verdicts: list[Verdict]) -> list[str]:
    """Median (and range) of the point effect of the main metrics: current / baseline."""
    lines = []
    for metric in EFFECT_METRICS:
        effects = [v.metrics[metric]["effect"] for v in verdicts
                   if v.error is None and metric in v.metrics
                   and v.metrics[metric]["effect"] is not None
                   and v.metrics[metric]["effect_kind"] == "ratio"]
        if effects:
            lines.append(f"    {metric:14} median ratio {statistics.median(effects):.3f} "
                         f"(min {min(effects):.3f}, max {max(effects):.3f}, n={len(effects)})")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6, help="A/A runs (default 6)")
    p.add_argument("--ab-rounds", type=int, default=3, help="A/B rounds (default 3)")
    p.add_argument("--samples", type=int, default=10, help="--vlm-samples per run (default 10)")
    p.add_argument("--warmup", type=int, default=None,
                   help="--vlm-warmup per run (default: the plugin's)")
    p.add_argument("--threads", type=int, default=None,
                   help="--vlm-threads of A (default: the plugin's, every core)")
    p.add_argument("--slow-threads", type=int, default=1,
                   help="--vlm-threads of B, the slowdown (default 1)")
    p.add_argument("--alpha", type=float, default=0.01, help="compare --alpha (default 0.01)")
    p.add_argument("--all-pairs", action="store_true",
                   help="A/A: compare every pair i < j, not only consecutive runs")
    p.add_argument("--model", default="gemma3-270m", help="model id (default gemma3-270m)")
    p.add_argument("--test", default="caption_brief", help="pytest -k (default caption_brief)")
    p.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                   help="an extra pytest argument for every run (repeatable)")
    p.add_argument("--keep", metavar="DIR", help="write the runs to DIR and keep them")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH",
                   help="dump the per-comparison verdicts as JSON to PATH (alone: to stdout, "
                   "and the report goes to stderr)")
    args = p.parse_args(argv)
    if args.rounds < 2 and args.ab_rounds < 1:
        p.error("nothing to do: --rounds below 2 and --ab-rounds below 1")
    return args


def experiment(args: argparse.Namespace, out: Path) -> tuple[list[Run], list[Verdict]]:
    runs: list[Run] = []

    def execute(run: Run) -> Run:
        log(f"run {run.label} (threads {run.threads or 'default'}) ...")
        run_suite(run, args)
        log(f"    {run.error or f'done in {run.wall_s:.0f} s'}")
        runs.append(run)
        return run

    verdicts: list[Verdict] = []
    aa = [execute(Run(f"aa{i + 1:02d}", out / f"aa{i + 1:02d}.json", args.threads))
          for i in range(args.rounds)] if args.rounds >= 2 else []
    pairs = (itertools.combinations(aa, 2) if args.all_pairs else itertools.pairwise(aa))
    verdicts += [compare("A/A", a, b, args.alpha) for a, b in pairs]
    for k in range(args.ab_rounds):
        a = execute(Run(f"ab{k + 1:02d}-A", out / f"ab{k + 1:02d}-A.json", args.threads))
        b = execute(Run(f"ab{k + 1:02d}-B", out / f"ab{k + 1:02d}-B.json", args.slow_threads))
        verdicts.append(compare("A/B", a, b, args.alpha))
    return runs, verdicts


def report(args: argparse.Namespace, runs: list[Run], verdicts: list[Verdict]) -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    aa = [v for v in verdicts if v.experiment == "A/A"]
    ab = [v for v in verdicts if v.experiment == "A/B"]
    lines = [
        f"gate experiment: {args.model}, -k {args.test}, {args.samples} samples a run, "
        f"warm-up {args.warmup if args.warmup is not None else 'default'}, {cores} cores",
        f"rules: {', '.join(RULES)}; alpha {args.alpha}",
        f"A: threads {args.threads or 'default'}; B: threads {args.slow_threads}",
    ]
    for run in runs:
        if run.error:
            lines.append(f"run {run.label} failed: {run.error}")
    lines.append("run wall times: " + ", ".join(
        f"{r.label} {r.wall_s:.0f} s" + ("" if r.load_at_start is None
                                          else f" (load {r.load_at_start:.1f})")
        for r in runs))
    lines += [f"{v.experiment} {v.baseline} -> {v.current} skipped: {v.error}"
              for v in verdicts if v.error]
    if aa:
        pairing = "all pairs i < j" if args.all_pairs else "consecutive pairs"
        lines += ["", rate_line(f"A/A false alarms ({args.rounds} runs, {pairing})", aa)]
        if args.all_pairs:
            lines.append("    (pairs share runs: not independent trials)")
        lines += [f"    {v.baseline} -> {v.current}: gated {', '.join(v.gated)}"
                  for v in aa if v.fired]
        lines += ["  verdicts per metric:", *metric_table(aa)]
        lines += ["  effects (current / baseline):", *effect_lines(aa)]
    if ab:
        lines += ["", rate_line(f"A/B detections ({args.ab_rounds} rounds, "
                                f"threads {args.slow_threads} vs "
                                f"{args.threads or 'default'})", ab)]
        lines += [f"    {v.baseline} -> {v.current}: "
                  f"{'gated ' + ', '.join(v.gated) if v.fired else 'not detected'}"
                  for v in ab if v.error is None]
        lines += ["  verdicts per metric:", *metric_table(ab)]
        lines += ["  slowdown measured (B / A):", *effect_lines(ab)]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vlmbench-gate-") as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        runs, verdicts = experiment(args, out)
        log(f"all runs done in {time.perf_counter() - started:.0f} s")
    to_stdout = args.json == "-"
    for line in report(args, runs, verdicts):
        print(line, file=sys.stderr if to_stdout else sys.stdout)
    if args.json:
        data = {
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "rules": list(RULES),
            "runs": [{"label": r.label, "threads": r.threads, "wall_s": r.wall_s,
                      "load_at_start": r.load_at_start, "error": r.error} for r in runs],
            "comparisons": [{"experiment": v.experiment, "baseline": v.baseline,
                             "current": v.current, "exit_status": v.exit_status,
                             "fired": v.fired, "gated": v.gated, "error": v.error,
                             "metrics": v.metrics} for v in verdicts],
        }
        text = json.dumps(data, indent=2)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
