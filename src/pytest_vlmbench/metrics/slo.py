"""Service-level objectives: limits on a benchmark's summary that fail the test.

The objectives are the metric registry's (registry.py: each metric's `slo` name).
Names say the direction: `max_*` limits must not be exceeded, `min_*` must be met.
A breach fails the test with one line naming the metric, the limit and the measured
value. A metric that could not be measured (no successful request) is a breach: a
run that produced nothing does not meet a latency objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal

from pytest_vlmbench.metrics import registry
from pytest_vlmbench.results.models import SloResult


def _slo_table() -> dict[str, tuple[tuple[str, ...], str, str]]:
    return {name: (m.summary, m.op, m.unit) for name, m in registry.slos().items()}


METRICS: Mapping[str, tuple[tuple[str, ...], str, str]] = registry.View(_slo_table)
"""SLO name -> (summary path, operator, unit), made from the metric registry and live:
a metric registered later is an SLO too."""


class SLOError(Exception):
    """An SLO that names an unknown metric or a non-numeric limit."""


def limits(slo: Mapping[str, Any], where: str, known: Collection[str],
           kind: str = "SLO") -> dict[str, float]:
    """The spec as floats, every name in `known`; SLOError names the first bad entry.
    Shared by benchmark SLOs (`check_spec`) and vlm_power windows' (`kind`: the word
    the message uses)."""
    spec: dict[str, float] = {}
    for name, limit in slo.items():
        if name not in known:
            raise SLOError(f"{where}: unknown {kind} {name!r}; known: {', '.join(known)}")
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise SLOError(f"{where}: {kind} {name!r} needs a number, got {limit!r}")
        if not math.isfinite(limit):
            raise SLOError(f"{where}: {kind} {name!r} needs a finite number, got {limit!r}")
        spec[name] = float(limit)
    return spec


def check_spec(slo: Mapping[str, Any], where: str) -> dict[str, float]:
    return limits(slo, where, METRICS)


def verdict(name: str, op: Literal["<=", ">="], limit: float,
            measured: float | None) -> SloResult:
    """One objective against its measured figure; an unmeasured figure is a breach."""
    passed = measured is not None and (measured <= limit if op == "<=" else measured >= limit)
    return {"metric": name, "op": op, "limit": limit, "measured": measured, "passed": passed}


def evaluate(spec: Mapping[str, float], summary: Mapping[str, Any]) -> list[SloResult]:
    slos = registry.slos()
    return [verdict(name, slos[name].op, limit, slos[name].value(summary))
            for name, limit in spec.items()]


def breach_line(head: str, verdicts: Sequence[SloResult], unit: Callable[[str], str],
                unmeasured: Callable[[str], str]) -> str | None:
    """`SLO breached (<head>): ...`, one part per breach (its figure, or what
    `unmeasured` says of it, against the limit); None when every objective is met."""
    parts = []
    for v in verdicts:
        if v["passed"]:
            continue
        suffix = f" {unit(v['metric'])}" if unit(v["metric"]) else ""
        shown = f"{v['measured']:.4g}{suffix}" if v["measured"] is not None \
            else unmeasured(v["metric"])
        bad_op = ">" if v["op"] == "<=" else "<"
        parts.append(f"{v['metric']} = {shown} {bad_op} limit {v['limit']:.4g}{suffix}")
    return f"SLO breached ({head}): " + "; ".join(parts) if parts else None


def breach_message(verdicts: Sequence[SloResult], n: int) -> str | None:
    """One line for all of a benchmark's breaches, or None when every objective is met."""
    slos = registry.slos()

    def unmeasured(name: str) -> str:
        metric = slos[name]
        if metric.summary[0] == "energy":
            return "not measured (no energy reading: see power in the results)"
        if metric.summary[0] == "metrics":
            return f"not measured (summary.metrics.{metric.name}.absent_reason says why)"
        if metric.summary[0] == "video":
            return "not measured (summary.video.absent_reason says why)"
        return "not measured"

    return breach_line(f"n={n}", verdicts, lambda name: slos[name].unit, unmeasured)
