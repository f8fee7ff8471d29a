"""Match the benchmarks (and power windows) of a baseline and a current run, and judge
every metric."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_vlmbench.compare.rules import (
    DEFAULT_RULES,
    METRICS,
    Rule,
    RuleError,
    display_rule,
    parse_rules,
)
from pytest_vlmbench.compare.runs import Baseline, BenchmarkKey, Instance, Run, instances
from pytest_vlmbench.compare.samples import Samples, samples
from pytest_vlmbench.compare.verdicts import (
    DEFAULT_ALPHA,
    DEFAULT_DRIFT_ALLOWANCE,
    DEFAULT_MIN_SAMPLES,
    MetricResult,
    Settings,
    Values,
    Verdict,
    judge,
)
from pytest_vlmbench.compare.windows import WindowKey, WindowPair, compare_windows
from pytest_vlmbench.metrics import noise
from pytest_vlmbench.metrics.registry import Metric
from pytest_vlmbench.metrics.video import BLOCK as VIDEO
from pytest_vlmbench.results.document import ResultsError
from pytest_vlmbench.results.models import BenchmarkEntry

EXIT_OK = 0
"""No gated metric regressed."""
EXIT_REGRESSION = 1
"""At least one gated metric of a comparable benchmark regressed."""
EXIT_USAGE = 2
"""Bad arguments or bad input (unreadable, foreign or corrupt files, a bad rule)."""
EXIT_NOTHING_COMPARABLE = 3
"""No benchmark matched in both runs with the same prompt and dataset, and no power
window in both: nothing was gated."""


@dataclass
class Pair:
    """A benchmark found in both runs."""

    key: BenchmarkKey
    baseline: BenchmarkEntry
    """The newest baseline run's entry."""
    current: BenchmarkEntry
    metrics: list[MetricResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    reason: str | None = None
    """Why the pair is not comparable (None when it is)."""
    baselines: list[Instance] = field(default_factory=list)
    """Every baseline run compared, newest first."""

    @property
    def comparable(self) -> bool:
        return self.reason is None

    @property
    def k(self) -> int:
        """How many baseline runs of this benchmark were compared."""
        return len(self.baselines)


@dataclass
class Comparison:
    """Everything `vlmbench compare` reports, and the exit status it implies."""

    baseline: Baseline
    current: Run
    pairs: list[Pair]
    not_comparable: list[Pair]
    new: list[BenchmarkKey]
    vanished: list[BenchmarkKey]
    notes: list[str]
    settings: Settings
    windows: list[WindowPair] = field(default_factory=list)
    """Power windows found in both runs (compare/windows.py)."""
    new_windows: list[WindowKey] = field(default_factory=list)
    vanished_windows: list[WindowKey] = field(default_factory=list)

    @property
    def gated(self) -> list[tuple[Pair | WindowPair, MetricResult]]:
        """Regressions in gated metrics: the ones that fail the build."""
        return [(p, m) for p in self.judged for m in p.metrics
                if m.gated and m.verdict == "regressed"]

    @property
    def judged(self) -> list[Pair | WindowPair]:
        """The benchmarks, then the power windows, found in both runs."""
        return [*self.pairs, *self.windows]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for p in self.judged for m in p.metrics if m.verdict == verdict)

    @property
    def exit_status(self) -> int:
        if self.gated:
            return EXIT_REGRESSION
        if not self.pairs and not self.windows:
            return EXIT_NOTHING_COMPARABLE
        return EXIT_OK

    @property
    def headline(self) -> str:
        n, m, w = len(self.gated), len(self.pairs), len(self.windows)
        windows = f", {w} window{'s' if w != 1 else ''}" if w else ""
        return (f"{n} regression{'s' if n != 1 else ''} / {m} benchmark{'s' if m != 1 else ''}"
                f"{windows}")


def _not_comparable_reason(b: Mapping[str, Any], c: Mapping[str, Any]) -> str | None:
    reasons = []
    if b["prompt_version"] != c["prompt_version"]:
        reasons.append(f"prompt_version changed ({b['prompt_version']} -> {c['prompt_version']})")
    bd, cd = b["dataset"], c["dataset"]
    if bd["hash"] != cd["hash"]:
        reasons.append(f"dataset changed ({bd['name']} {bd['hash'][:12]} -> "
                       f"{cd['name']} {cd['hash'][:12]})")
    return "; ".join(reasons) or None


def _busy(side: str, entry: Mapping[str, Any]) -> str | None:
    """A flag when the runner saw the machine busy (entry["machine"]; absent: unknown)."""
    machine = entry.get("machine")
    if not isinstance(machine, dict) or machine.get("busy") is not True:
        return None
    from pytest_vlmbench.run.machine_load import describe

    amount = describe(machine)  # "other processes took 45% of 2 CPUs (0.9 CPU), steal 0%"
    details = [amount] if amount else [
        label.format(machine[name])
        for name, label in (("other_cpu_fraction", "other CPU {:.0%}"),
                            ("steal_fraction", "steal {:.0%}"))
        if isinstance(machine.get(name), int | float)
    ]
    if isinstance(machine.get("loadavg_1m"), int | float):
        details.append(f"load {machine['loadavg_1m']:.2f}")
    return f"{side}: machine busy" + (f" ({', '.join(details)})" if details else "")


def _flags(side: str, run: Run, entry: Mapping[str, Any], n_measured: int) -> list[str]:
    flags = []
    if entry["status"] != "complete":
        error = f": {entry['error']}" if entry.get("error") else ""
        flags.append(f"{side} benchmark {entry['status']}{error}")
    if run.doc["status"] == "interrupted":
        flags.append(f"{side} run interrupted")
    if n_measured == 0:
        flags.append(f"{side} has no measured records")
    busy = _busy(side, entry)
    if busy:
        flags.append(busy)
    return flags


def _effective_rules(base: Mapping[str, Rule], entry: Mapping[str, Any],
                     run: Run) -> dict[str, Rule]:
    if not entry.get("fail_on"):
        return dict(base)
    try:
        return parse_rules(entry["fail_on"], base=base)
    except RuleError as exc:
        raise ResultsError(f"{run.path}: benchmark {entry['id']}: fail_on: {exc}") from None


BATCH_SAMPLES = ("batch_requests_per_s", "batch_output_tokens_per_s")
"""Samples of a batch level only (metrics/throughput.py): one value per batch."""


def _sources(s: Samples) -> str:
    return "+".join(sorted(s.decode_source))


def _left_out(metric: Metric, sb: Samples, sc: Samples) -> str | None:
    """Why a baseline run cannot be compared with the current run on this metric."""
    name = metric.name
    if name in sb.unavailable:
        return sb.unavailable[name]
    if name == "parse_rate" and sb.checks_output != sc.checks_output:
        return "output checked in only one of the runs"
    if name == "tokens_per_s" and sb.decode_source and sc.decode_source \
            and sb.decode_source != sc.decode_source:
        return f"decode rate measured differently ({_sources(sb)} vs {_sources(sc)})"
    return None


def _runs_for(metric: Metric, bs: list[Samples],
              sc: Samples) -> tuple[list[Values], str | None, str | None]:
    """The baseline runs' values of a metric, why it cannot be compared at all (or
    None), and a note on the runs left out for measuring it differently."""
    whys = [_left_out(metric, sb, sc) for sb in bs]
    usable = [sb for sb, why in zip(bs, whys, strict=True) if why is None]
    reason = sc.unavailable.get(metric.name) or (None if usable else whys[0])
    left = [why for why in whys if why is not None]
    note = (f"{len(left)} of {len(bs)} baseline runs left out: {left[0]}"
            if left and usable and not reason else None)
    return [sb.of(metric) for sb in (usable or bs)], reason, note


def _compare_pair(pair: Pair, current: Run, rules: Mapping[str, Rule], s: Settings) -> None:
    k = len(pair.baselines)
    bs = []
    for inst in pair.baselines:
        cols = inst.columns
        bs.append(samples(inst.entry, cols))
        side = "baseline" if k == 1 else f"baseline run {inst.run_id}"
        pair.flags.extend(_flags(side, inst.run, inst.entry, cols.measured if cols else 0))
    c_cols = current.columns.get((str(pair.current.get("run_id") or current.run_id),
                                  pair.current["id"]))
    sc = samples(pair.current, c_cols)
    pair.flags.extend(_flags("current", current, pair.current, sc.measured))
    effective = _effective_rules(rules, pair.current, current)
    cache: dict[tuple[str, int, int], float] = {}
    # A busy machine (others' CPU time on our CPUs, measured by the runner) slows every
    # timing; nothing the benchmarked code does can make other processes busy, so
    # leaving busy runs out of a timing verdict cannot hide a regression of ours.
    current_busy = _busy("current", pair.current)
    quiet = [sb for sb, inst in zip(bs, pair.baselines, strict=True)
             if _busy("", inst.entry) is None]
    timing_bs = quiet or bs
    busy_note = None
    if quiet and len(quiet) < len(bs):
        n = len(bs) - len(quiet)
        busy_note = f"{n} busy baseline run{'s' if n > 1 else ''} left out"
    elif not quiet and any(_busy("", inst.entry) for inst in pair.baselines):
        busy_note = "every baseline run was busy"
    baseline_entries = [inst.entry for inst in pair.baselines]
    for metric in METRICS.values():
        if metric.name == "parse_rate" and not (sc.checks_output
                                                or any(b.checks_output for b in bs)):
            continue  # a free-text task: there is no parse rate to compare
        if metric.sample in BATCH_SAMPLES and not (
                len(sc.of(metric)) or any(len(b.of(metric)) for b in bs)):
            continue  # not a batch level: no offline throughput to compare
        if metric.sample in ("prompt_tokens_per_s", "itl") and not (
                len(sc.of(metric)) or any(len(b.of(metric)) for b in bs)):
            continue  # a backend that reports no prefill counts, or no streamed chunks
        if not metric.machine_bound and not (
                len(sc.of(metric)) or any(len(b.of(metric)) for b in bs)):
            continue  # a score of a task neither side's records were scored by
        if metric.summary[0] == VIDEO and not any(
                VIDEO in e["summary"] for e in (pair.current, *baseline_entries)):
            continue  # not a video benchmark: it has no scenes to judge
        timing = metric.timing
        per_run, unavailable, left_out = _runs_for(metric, timing_bs if timing else bs, sc)
        if timing and current_busy and not unavailable:
            unavailable = (f"the machine was busy during the current run: its timings describe "
                           f"the machine; rerun on a quiet one ({current_busy})")
        if timing and busy_note:
            left_out = f"{left_out}; {busy_note}" if left_out else busy_note
        rule = effective.get(metric.name)
        pair.metrics.append(judge(metric, rule or display_rule(metric), rule is not None,
                                  per_run, sc.of(metric), unavailable, s, cache, left_out))


def _baseline_instances(baseline: Baseline) -> dict[BenchmarkKey, list[Instance]]:
    """Every baseline run of every benchmark, newest first, each run once."""
    groups: dict[BenchmarkKey, list[Instance]] = {}
    seen: set[tuple[str, str]] = set()
    for run in baseline.runs:
        for key, items in instances(run).items():
            for inst in items:
                if (inst.run_id, key.id) not in seen:
                    seen.add((inst.run_id, key.id))
                    groups.setdefault(key, []).append(inst)
    for items in groups.values():
        items.sort(key=lambda it: it.newness, reverse=True)
    return groups


def compare_runs(
    baseline: Baseline | Run, current: Run, rules: Mapping[str, Rule] | None = None, *,
    alpha: float = DEFAULT_ALPHA, min_samples: int = DEFAULT_MIN_SAMPLES,
    resamples: int = noise.DEFAULT_RESAMPLES, confidence: float = noise.DEFAULT_CONFIDENCE,
    seed: int = 0, drift_allowance: float = DEFAULT_DRIFT_ALLOWANCE,
) -> Comparison:
    """Match the runs' benchmarks and give every metric of every comparable pair a verdict.

    `rules` are the rules in force (parse_rules gives the defaults edited by the user's);
    None means DEFAULT_RULES. A benchmark's own `fail_on` (in the current document) edits
    them for that benchmark. Raises ResultsError for a bad `fail_on` in the current
    document.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    if not drift_allowance >= 0.0:
        raise ValueError(f"drift_allowance must be >= 0, got {drift_allowance}")
    base = baseline if isinstance(baseline, Baseline) else Baseline.of(baseline)
    s = Settings(alpha, min_samples, resamples, confidence, seed, drift_allowance)
    base_rules = DEFAULT_RULES if rules is None else rules
    b_groups = _baseline_instances(base)
    notes = [*base.notes, *current.notes]
    c_entries: dict[BenchmarkKey, Instance] = {}
    for key, items in instances(current).items():
        c_entries[key] = items[0]
        if len(items) > 1:
            notes.append(f"current: {len(items)} runs of {key.id} in {current.path.name}; "
                         f"compared the latest, run {items[0].run_id}")
    if any(r.path.resolve() == current.path.resolve() for r in base.runs):
        notes.append("baseline and current are the same results file")
    pairs: list[Pair] = []
    not_comparable: list[Pair] = []
    for key, inst in c_entries.items():
        if key not in b_groups:
            continue
        runs = b_groups[key]
        usable = [b for b in runs if _not_comparable_reason(b.entry, inst.entry) is None]
        if not usable:
            not_comparable.append(Pair(key, runs[0].entry, inst.entry,
                                       reason=_not_comparable_reason(runs[0].entry, inst.entry)))
            continue
        if len(usable) < len(runs):
            notes.append(f"baseline: {len(runs) - len(usable)} of {len(runs)} runs of {key.id} "
                         "measured another prompt or dataset; left out")
        if base.max_runs is not None and len(usable) > base.max_runs:
            notes.append(f"baseline: {len(usable)} runs of {key.id}; compared the newest "
                         f"{base.max_runs} (--baseline-runs)")
            usable = usable[:base.max_runs]
        pair = Pair(key, usable[0].entry, inst.entry, baselines=usable)
        _compare_pair(pair, current, base_rules, s)
        pairs.append(pair)
    windows = compare_windows(base, current, base_rules, s)
    notes.extend(windows.notes)
    judged: list[Pair | WindowPair] = [*pairs, *windows.pairs]
    if any(m.mode == "one-run" and m.verdict != "inconclusive" for p in judged for m in p.metrics):
        notes.append(f"one baseline run: give several (--baseline-runs) to gate on measured "
                     f"drift; timing metrics gate only beyond their limit plus a drift "
                     f"allowance of +{100 * drift_allowance:g}%")
    few = sorted({m.k for p in judged for m in p.metrics if m.mode == "runs" and 2 <= m.k < 4})
    if few:
        notes.append(f"{' or '.join(map(str, few))} baseline runs: a run-level test with "
                     f"{few[0] - 1} degree{'s' if few[0] > 2 else ''} of freedom detects only "
                     "large changes (see the MDE column); give 5 or more")
    new = [k for k in c_entries if k not in b_groups]
    vanished = [k for k in b_groups if k not in c_entries]
    return Comparison(base, current, pairs, not_comparable, new, vanished, notes, s,
                      windows.pairs, windows.new, windows.vanished)
