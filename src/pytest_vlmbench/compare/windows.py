"""Power windows compared between runs, like benchmarks' energy.

A test that measures a stage with `vlm_power.measure(name)` writes one object per
window to the results' `windows` list; measuring the same name several times gives
several windows, each one sample. Windows pair up between baseline and current by
(test id, window name), and each window metric of the registry (applies_to "window":
window_energy, window_duration) is judged by verdicts.judge, as a benchmark's metrics
are: per window with one baseline run, run by run with several. No window metric is
gated unless a rule names it. A side without the figure (no meter: energy absent) makes
that metric inconclusive with the window's reason; the others are still judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from pytest_vlmbench.compare.rules import WINDOW_METRICS, Rule, display_rule
from pytest_vlmbench.compare.runs import Baseline, Run, when
from pytest_vlmbench.compare.verdicts import MetricResult, Settings, Values, judge
from pytest_vlmbench.metrics.registry import Metric

Window = Mapping[str, Any]
"""One object of a results document's `windows` list."""


class WindowKey(NamedTuple):
    """What makes two windows the same: the test that measured them and their name."""

    test: str
    name: str

    @property
    def id(self) -> str:
        """The test id and the window, as the lists of new and vanished items show it."""
        return f"{self.test} [window {self.name}]"

    @property
    def label(self) -> str:
        """`<test name> [window <name>]`, the test without its file, as benchmarks."""
        return f"{self.test.split('::')[-1]} [window {self.name}]"


def windows_in(doc: Mapping[str, Any]) -> list[Window]:
    """A document's windows (none in a document written before there were any)."""
    found = doc.get("windows")
    return [w for w in found if isinstance(w, Mapping)] if isinstance(found, list) else []


@dataclass(frozen=True)
class WindowRun:
    """The windows of one (test, name) in one run: the samples of its metrics."""

    run: Run
    run_id: str
    windows: list[Window]
    newness: tuple[datetime, int]


@dataclass
class WindowPair:
    """A (test, window name) found in both runs, and its verdicts."""

    key: WindowKey
    metrics: list[MetricResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    baselines: list[WindowRun] = field(default_factory=list)
    """Every baseline run compared, newest first."""
    current: WindowRun | None = None


def window_runs(run: Run) -> dict[WindowKey, list[WindowRun]]:
    """The windows of a results document by (test, name) and run, newest run first.

    A merged document holds several runs: its `runs` headers say when each started."""
    doc: Mapping[str, Any] = run.doc
    started = {str(h.get("run_id")): h.get("started_at")
               for h in doc.get("runs") or [] if isinstance(h, Mapping)}
    groups: dict[tuple[WindowKey, str], list[Window]] = {}
    order: dict[str, int] = {}
    for w in windows_in(doc):
        run_id = str(w.get("run_id") or run.run_id)
        order.setdefault(run_id, len(order))
        groups.setdefault((WindowKey(str(w["test"]), str(w["name"])), run_id), []).append(w)
    out: dict[WindowKey, list[WindowRun]] = {}
    for (key, run_id), items in groups.items():
        moment = when(started.get(run_id, doc["started_at"]))
        out.setdefault(key, []).append(WindowRun(run, run_id, items, (moment, order[run_id])))
    for runs in out.values():
        runs.sort(key=lambda r: r.newness, reverse=True)
    return out


def _values(metric: Metric, wr: WindowRun) -> tuple[Values, str | None]:
    """A metric's value in each window of a run, and why there is none when none has it."""
    found = [v for v in (metric.value(w) for w in wr.windows) if v is not None]
    if found:
        return np.array(found, dtype=np.float64), None
    reasons = [str(w["absent_reason"]) for w in wr.windows if w.get("absent_reason")]
    why = reasons[0] if reasons else f"no window has {metric.summary[-1]}"
    return np.empty(0, dtype=np.float64), why


def _judge(metric: Metric, pair: WindowPair, current: WindowRun, rules: Mapping[str, Rule],
           s: Settings, cache: dict[tuple[str, int, int], float]) -> MetricResult:
    ys, why_c = _values(metric, current)
    k = len(pair.baselines)
    per_run: list[Values] = []
    whys: list[str] = []
    for wr in pair.baselines:
        xs, why = _values(metric, wr)
        if why is None:
            per_run.append(xs)
        else:
            whys.append(why)
    unavailable = (f"current: {why_c}" if why_c else None) or \
        (None if per_run else f"baseline: {whys[0]}")
    left_out = (f"{len(whys)} of {k} baseline runs left out: {whys[0]}"
                if whys and per_run and not unavailable else None)
    rule = rules.get(metric.name)
    return judge(metric, rule or display_rule(metric), rule is not None, per_run, ys,
                 unavailable, s, cache, left_out)


def _flags(side: str, wr: WindowRun) -> list[str]:
    flags = []
    if wr.run.doc["status"] == "interrupted":
        flags.append(f"{side} run interrupted")
    failed = sum(1 for w in wr.windows if w.get("slo_passed") is False)
    if failed:
        flags.append(f"{side}: {failed} of {len(wr.windows)} windows failed their SLO")
    return flags


@dataclass
class WindowComparison:
    pairs: list[WindowPair]
    new: list[WindowKey]
    vanished: list[WindowKey]
    notes: list[str]


def compare_windows(baseline: Baseline, current: Run, rules: Mapping[str, Rule],
                    s: Settings) -> WindowComparison:
    """Pair the windows of the baseline runs and the current run and judge each window
    metric; `rules` are the session's (a window has no `fail_on` of its own)."""
    b_groups: dict[WindowKey, list[WindowRun]] = {}
    seen: set[tuple[WindowKey, str]] = set()
    for run in baseline.runs:
        for key, items in window_runs(run).items():
            for wr in items:
                if (key, wr.run_id) not in seen:
                    seen.add((key, wr.run_id))
                    b_groups.setdefault(key, []).append(wr)
    notes: list[str] = []
    c_groups = window_runs(current)
    pairs: list[WindowPair] = []
    for key, items in c_groups.items():
        if len(items) > 1:
            notes.append(f"current: {len(items)} runs of {key.id}; compared the latest, run "
                         f"{items[0].run_id}")
        runs = sorted(b_groups.get(key, []), key=lambda r: r.newness, reverse=True)
        if not runs:
            continue
        if baseline.max_runs is not None and len(runs) > baseline.max_runs:
            notes.append(f"baseline: {len(runs)} runs of {key.id}; compared the newest "
                         f"{baseline.max_runs} (--baseline-runs)")
            runs = runs[:baseline.max_runs]
        pair = WindowPair(key, baselines=runs, current=items[0])
        for wr in runs:
            pair.flags.extend(_flags("baseline" if len(runs) == 1
                                     else f"baseline run {wr.run_id}", wr))
        pair.flags.extend(_flags("current", items[0]))
        cache: dict[tuple[str, int, int], float] = {}
        pair.metrics = [_judge(m, pair, items[0], rules, s, cache)
                        for m in WINDOW_METRICS.values()]
        pairs.append(pair)
    new = [k for k in c_groups if k not in b_groups]
    vanished = [k for k in b_groups if k not in c_groups]
    return WindowComparison(pairs, new, vanished, notes)
