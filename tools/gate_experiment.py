"""Does the regression gate tell the machine's drift from a real slowdown? Measured.

Two phases, so that the runs (slow: spaced minutes apart) can be re-judged by a newer
gate without running them again:

1. collect: the default suite (`pytest benchmarks/`, default sample count) run once per
   letter of --schedule, each a fresh pytest process, starts spaced at least --spacing-s
   apart (default 300 s). "A" is the unchanged configuration; "B" is a real slowdown,
   `--vlm-threads=1` (half of a 2-core machine). Results go to DIR/run-NN-A.json etc.;
   DIR/runs.json lists them with wall time, load average and the runs' own busy flags.
2. evaluate: every comparison a CI gate would make, each through `vlmbench compare ...
   --format json` (the real CLI, default rules, --alpha):
   - A/A, several-run baseline: each A run against the --baseline-runs most recent
     earlier A runs (at least --min-baseline of them; with --pairing nearest, the nearest
     other A runs on either side, so every A run is judged once). A gate that fires is a
     false alarm.
   - A/B, several-run baseline: each B run against the most recent earlier A runs. A gate
     that fires is a detection.
   - the same two with a ONE-run baseline (the previous A run), for contrast: that mode
     cannot estimate the drift and gates timing only beyond threshold + drift allowance.
   Printed: false-alarm and detection rates with 95% Clopper-Pearson intervals, which
   metric fired where, the measured slowdown (B / A), and per benchmark and gated metric
   the minimum detectable change that compare reports for a several-run baseline.

    .venv/bin/python tools/gate_experiment.py collect DIR [--schedule AAAAABAABAABAAAA]
        [--spacing-s 300] [--pytest-arg ARG ...]
    .venv/bin/python tools/gate_experiment.py evaluate DIR [--baseline-runs 5]
        [--min-baseline 3] [--alpha 0.01] [--json PATH] [--history]

With --history the same runs are judged as a history-based gate would judge them: each
against `history:K` of a history holding the A runs before it (imported one by one).

A measurement, not a test: it exits 0 whatever the gate did (failed runs are reported
and left out). Anything else using the cores during a run shows up in its busy flag.
While a run is going, DIR/RUNNING exists; a run does not start while DIR/HOLD exists, so
other work on the machine can wait for a gap (`while [ -f DIR/RUNNING ]; do sleep 5;
done; touch DIR/HOLD; ...; rm DIR/HOLD`) instead of disturbing a run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLOW_THREADS = 1


@dataclass
class Comparison:
    """One `vlmbench compare` call and what it said."""

    experiment: str
    baselines: list[str]
    current: str
    exit_status: int = -1
    gated: list[str] = field(default_factory=list)  # "benchmark metric" that fired
    metrics: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def fired(self) -> bool:
        return self.exit_status == 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- collect


def collect(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "runs.json"
    runs: list[dict[str, Any]] = json.loads(index.read_text()) if index.exists() else []
    next_start = time.monotonic()
    for n, letter in enumerate(args.schedule.upper(), start=1):
        if letter not in "AB":
            raise SystemExit(f"--schedule: letters A and B only, got {letter!r}")
        label = f"run-{n:02d}-{letter}"
        results = out / f"{label}.json"
        if results.exists():
            log(f"{label}: already there, skipped")
            continue
        wait = next_start - time.monotonic()
        if wait > 0:
            log(f"{label}: waiting {wait:.0f} s (runs start {args.spacing_s:.0f} s apart)")
            time.sleep(wait)
        while (out / "HOLD").exists():  # someone asked for the cores (see --help)
            time.sleep(5)
        next_start = time.monotonic() + args.spacing_s
        (out / "RUNNING").write_text(label)
        cmd = [sys.executable, "-m", "pytest", "benchmarks/", f"--vlm-out={results}",
               "-p", "no:benchmark", "-p", "no:cacheprovider", "-q", *args.pytest_arg]
        if letter == "B":
            cmd.append(f"--vlm-threads={SLOW_THREADS}")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        log(f"{label}: {' '.join(cmd[2:])}")
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=args.root, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        (out / "RUNNING").unlink(missing_ok=True)
        error = None
        if proc.returncode != 0 or not results.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
            error = f"pytest exited {proc.returncode}: " + " | ".join(tail)
        busy = []
        if results.exists():
            doc = json.loads(results.read_text())
            busy = [f"{b['id'].split('::')[-1]}: {b['machine']['note']}"
                    for b in doc["benchmarks"] if (b.get("machine") or {}).get("busy")]
        runs.append({"label": label, "letter": letter, "results": results.name,
                     "wall_s": wall, "loadavg_at_start": load, "error": error, "busy": busy,
                     "started": time.strftime("%H:%M:%S")})  # written when it ended
        index.write_text(json.dumps(runs, indent=1) + "\n")
        log(f"    {error or f'done in {wall:.0f} s'}" + (f"; busy: {busy}" if busy else ""))
    return 0


# --------------------------------------------------------------------------- evaluate


def run_compare(c: Comparison, args: list[str]) -> Comparison:
    """`vlmbench compare ARGS --format json`, as a CI step would run it; fills `c`."""
    cmd = [sys.executable, "-m", "pytest_vlmbench.cli", "compare", *args, "--format", "json"]
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    c.exit_status = proc.returncode
    if proc.returncode not in (0, 1):
        c.error = f"compare exited {proc.returncode}: {proc.stderr.strip()[:300]}"
        return c
    data = json.loads(proc.stdout)
    c.gated = [f"{g['benchmark'].split('::')[-1]} {g['metric']}" for g in data["gated"]]
    for pair in data["pairs"]:
        label = pair["benchmark"]["id"].split("::")[-1]
        c.flags += [f"{label}: {f}" for f in pair["flags"]]
        for m in pair["metrics"]:
            c.metrics.append({"benchmark": label, **m})
    if not data["pairs"]:
        c.error = f"nothing comparable: {data['headline']}"
    return c


def compare(experiment: str, out: Path, baselines: list[dict[str, Any]],
            current: dict[str, Any], args: argparse.Namespace) -> Comparison:
    """`vlmbench compare BASE... CURRENT`: the baseline runs named as files."""
    c = Comparison(experiment, [b["label"] for b in baselines], current["label"])
    return run_compare(c, [*[str(out / b["results"]) for b in baselines],
                           str(out / current["results"]), "--alpha", str(args.alpha)])


def compare_history(experiment: str, db: Path, out: Path, k: int, current: dict[str, Any],
                    appended: list[dict[str, Any]], args: argparse.Namespace) -> Comparison:
    """`vlmbench compare history:K CURRENT --history DB`: the baseline is what the
    history holds (the A runs appended so far), as a CI gate with --vlm-compare=history:K
    would see it."""
    c = Comparison(experiment, [f"history:{k}<{appended[-1]['label']}"], current["label"])
    return run_compare(c, [f"history:{k}", str(out / current["results"]), "--history",
                           str(db), "--alpha", str(args.alpha)])


def history_comparisons(out: Path, runs: list[dict[str, Any]],
                        args: argparse.Namespace) -> list[Comparison]:
    """Each run against history:K of a fresh SQLite history (DIR/history.sqlite) into
    which the A runs are imported one by one, in run order, after being judged."""
    db = out / "history.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    comparisons: list[Comparison] = []
    appended: list[dict[str, Any]] = []
    for run in runs:
        kind = "A/A" if run["letter"] == "A" else "A/B"
        if len(appended) >= args.min_baseline:
            log(f"{kind} history:{args.baseline_runs} ({len(appended)} A runs in it) -> "
                f"{run['label']}")
            comparisons.append(compare_history(f"{kind} history", db, out, args.baseline_runs,
                                               run, appended, args))
        if run["letter"] == "A":
            cmd = [sys.executable, "-m", "pytest_vlmbench.cli", "history", "import",
                   str(out / run["results"]), "--history", str(db)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"history import of {run['label']} failed: {proc.stderr}")
            appended.append(run)
    return comparisons


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


def rate_line(name: str, comparisons: list[Comparison]) -> str:
    valid = [c for c in comparisons if c.error is None]
    n, k = len(valid), sum(c.fired for c in valid)
    if n == 0:
        return f"{name}: no valid comparison"
    lo, hi = clopper_pearson(k, n)
    skipped = f", {len(comparisons) - n} skipped" if len(comparisons) > n else ""
    return f"{name}: fired in {k}/{n} = {k / n:.0%} (95% CI {lo:.0%}-{hi:.0%}){skipped}"


def ratios(comparisons: list[Comparison], metric: str) -> list[float]:
    """current / baseline of one metric across every benchmark of the comparisons."""
    out = []
    for c in comparisons:
        for m in c.metrics:
            if m["metric"] == metric and m.get("baseline") and m.get("current") is not None:
                out.append(m["current"] / m["baseline"])
    return out


def evaluate(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    runs = [r for r in json.loads((out / "runs.json").read_text())
            if r["error"] is None and (out / r["results"]).exists()
            and not (args.skip_busy and r["busy"])]
    comparisons: list[Comparison] = []
    seen_a: list[dict[str, Any]] = []
    a_runs = [r for r in runs if r["letter"] == "A"]
    if args.history:
        comparisons = history_comparisons(out, runs, args)
        runs_loop: list[dict[str, Any]] = []
    else:
        runs_loop = runs
    for n, run in enumerate(runs_loop):
        if args.pairing == "nearest":  # the K other A runs nearest in time, either side
            others = sorted((r for r in a_runs if r is not run),
                            key=lambda r: abs(runs.index(r) - n))[:args.baseline_runs]
            previous = sorted(others, key=runs.index)
        else:  # what CI has: the most recent earlier A runs
            previous = seen_a[-args.baseline_runs:]
        kind = "A/A" if run["letter"] == "A" else "A/B"
        if len(previous) >= args.min_baseline:
            log(f"{kind} {[b['label'] for b in previous]} -> {run['label']}")
            comparisons.append(compare(f"{kind} several", out, previous, run, args))
        if seen_a:
            comparisons.append(compare(f"{kind} one", out, seen_a[-1:], run, args))
        if run["letter"] == "A":
            seen_a.append(run)
    which = ("most recent earlier" if args.pairing == "rolling"
             else "nearest other (either side)")
    lines = [f"gate experiment over {len(runs)} runs in {out} "
             f"(alpha {args.alpha}, several = the {args.baseline_runs} {which} A "
             f"runs, at least {args.min_baseline})"]
    lines += [f"  {r['label']} ended {r['started']}: {r['wall_s']:.0f} s, load "
              f"{r['loadavg_at_start'] or 0:.1f}" + (f", BUSY {len(r['busy'])}" if r["busy"]
                                                      else "") for r in runs]
    for kind in ("A/A history", "A/B history", "A/A several", "A/B several", "A/A one",
                 "A/B one"):
        chosen = [c for c in comparisons if c.experiment == kind]
        if not chosen:
            continue
        what = "false alarms" if kind.startswith("A/A") else "detections"
        lines += ["", rate_line(f"{kind}-run baseline, {what}", chosen)]
        for c in chosen:
            if c.error:
                lines.append(f"    {c.current}: skipped: {c.error}")
            elif c.fired or kind.startswith("A/B"):
                lines.append(f"    {'+'.join(c.baselines)} -> {c.current}: "
                             + (f"gated {', '.join(c.gated)}" if c.fired else "not detected"))
        for metric in ("p50_latency", "tokens_per_s"):
            rs = ratios(chosen, metric)
            if rs:
                lines.append(f"    {metric} current/baseline: median {statistics.median(rs):.3f}"
                             f", min {min(rs):.3f}, max {max(rs):.3f} (n={len(rs)})")
    several = [c for c in comparisons if c.experiment in ("A/A several", "A/A history")
               and c.error is None]
    if several:
        last = several[-1]
        size = (f"history:{args.baseline_runs}" if last.experiment.endswith("history")
                else f"{len(last.baselines)}-run")
        lines += ["", f"minimum detectable change, {size} baseline "
                      f"({'+'.join(last.baselines)}), per gated metric:"]
        for m in last.metrics:
            if m.get("gated") and m.get("mde") is not None:
                lines.append(f"    {m['benchmark']:48} {m['metric']:16} {m['mde_text']} "
                             f"({m['mode']}; {m.get('note') or ''})")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [c.__dict__ for c in comparisons], indent=1, default=str) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="phase", required=True)
    c = sub.add_parser("collect", help="run the suite on a schedule")
    c.add_argument("dir")
    c.add_argument("--schedule", default="AAAAABAABAABAAAA",
                   help="A = unchanged, B = --vlm-threads=1; one run per letter")
    c.add_argument("--spacing-s", type=float, default=300.0)
    c.add_argument("--root", default=str(ROOT), help="the checkout whose benchmarks/ run")
    c.add_argument("--pytest-arg", action="append", default=[], metavar="ARG")
    e = sub.add_parser("evaluate", help="judge the collected runs with vlmbench compare")
    e.add_argument("dir")
    e.add_argument("--baseline-runs", type=int, default=5)
    e.add_argument("--min-baseline", type=int, default=3)
    e.add_argument("--alpha", type=float, default=0.01)
    e.add_argument("--pairing", choices=("rolling", "nearest"), default="rolling",
                   help="several-run baselines: the most recent earlier A runs (rolling, "
                   "what CI has) or the nearest other A runs on either side (nearest: one "
                   "A/A comparison per A run)")
    e.add_argument("--history", action="store_true",
                   help="judge each run with `vlmbench compare history:K` against a SQLite "
                   "history (DIR/history.sqlite, made afresh) into which the A runs are "
                   "imported one by one after being judged: what a CI gate with "
                   "--vlm-compare=history:K and --vlm-history sees (K: --baseline-runs)")
    e.add_argument("--json", metavar="PATH")
    e.add_argument("--skip-busy", action="store_true",
                   help="leave out runs in which any benchmark was flagged busy")
    args = p.parse_args(argv)
    return collect(args) if args.phase == "collect" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
