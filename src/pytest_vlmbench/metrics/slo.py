"""Service-level objectives: limits on a benchmark's summary that fail the test.

The objectives are the metric registry's (registry.py: each metric's `slo` name).
Names say the direction: `max_*` limits must not be exceeded, `min_*` must be met.
A breach fails the test with one line naming the metric, the limit and the measured
value. A metric that could not be measured (no successful request) is a breach: a
run that produced nothing does not meet a latency objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vlmbench.metrics import registry
from pytest_vlmbench.results.models import SloResult


def _slo_table() -> dict[str, tuple[tuple[str, ...], str, str]]:
    return {name: (m.summary, m.op, m.unit) for name, m in registry.slos().items()}


METRICS: Mapping[str, tuple[tuple[str, ...], str, str]] = registry.View(_slo_table)
"""SLO name -> (summary path, operator, unit), made from the metric registry and live:
a metric registered later is an SLO too."""


class SLOError(Exception):
    """An SLO that names an unknown metric or a non-numeric limit."""


def check_spec(slo: Mapping[str, Any], where: str) -> dict[str, float]:
    spec: dict[str, float] = {}
    for name, limit in slo.items():
        if name not in METRICS:
            raise SLOError(f"{where}: unknown SLO {name!r}; known: {', '.join(METRICS)}")
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise SLOError(f"{where}: SLO {name!r} needs a number, got {limit!r}")
        if not math.isfinite(limit):
            raise SLOError(f"{where}: SLO {name!r} needs a finite number, got {limit!r}")
        spec[name] = float(limit)
    return spec


def evaluate(spec: Mapping[str, float], summary: Mapping[str, Any]) -> list[SloResult]:
    verdicts: list[SloResult] = []
    slos = registry.slos()
    for name, limit in spec.items():
        metric = slos[name]
        measured, op = metric.value(summary), metric.op
        if measured is None:
            passed = False
        else:
            passed = measured <= limit if op == "<=" else measured >= limit
        verdicts.append(
            {"metric": name, "op": op, "limit": limit, "measured": measured, "passed": passed}
        )
    return verdicts


def breach_message(verdicts: Sequence[SloResult], n: int) -> str | None:
    """One line for all breaches, or None when every objective is met."""
    parts = []
    slos = registry.slos()
    for v in verdicts:
        if v["passed"]:
            continue
        metric = slos[v["metric"]]
        suffix = f" {metric.unit}" if metric.unit else ""
        if v["measured"] is not None:
            shown = f"{v['measured']:.4g}{suffix}"
        elif metric.summary[0] == "energy":
            shown = "not measured (no energy reading: see power in the results)"
        elif metric.summary[0] == "metrics":
            shown = f"not measured (summary.metrics.{metric.name}.absent_reason says why)"
        else:
            shown = "not measured"
        bad_op = ">" if v["op"] == "<=" else "<"
        parts.append(
            f"{v['metric']} = {shown} {bad_op} limit {v['limit']:.4g}{suffix}"
        )
    if not parts:
        return None
    return f"SLO breached (n={n}): " + "; ".join(parts)
