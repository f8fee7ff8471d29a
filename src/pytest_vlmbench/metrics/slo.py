"""Service-level objectives: limits on a benchmark's summary that fail the test.

Names say the direction: `max_*` limits must not be exceeded, `min_*` must be met.
A breach fails the test with one line naming the metric, the limit and the measured
value. A metric that could not be measured (no successful request) is a breach: a
run that produced nothing does not meet a latency objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# SLO name -> (summary path, operator, unit for messages)
METRICS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "max_latency_p50_s": (("latency_s", "median"), "<=", "s"),
    "max_latency_p90_s": (("latency_s", "p90"), "<=", "s"),
    "max_latency_p95_s": (("latency_s", "p95"), "<=", "s"),
    "max_latency_p99_s": (("latency_s", "p99"), "<=", "s"),
    "max_latency_mean_s": (("latency_s", "mean"), "<=", "s"),
    "max_ttft_p50_s": (("ttft_s", "median"), "<=", "s"),
    "max_ttft_p95_s": (("ttft_s", "p95"), "<=", "s"),
    "min_decode_tokens_per_s": (("decode_tokens_per_s",), ">=", "tokens/s"),
    "min_prompt_tokens_per_s": (("prompt_tokens_per_s",), ">=", "tokens/s"),
    "min_stream_tokens_per_s": (("stream_tokens_per_s",), ">=", "tokens/s"),
    "min_requests_per_s": (("requests_per_s",), ">=", "requests/s"),
    "min_parse_rate": (("parse_rate",), ">=", ""),
    "min_success_rate": (("success_rate",), ">=", ""),
    "max_energy_per_token_j": (("energy", "energy_per_token_j"), "<=", "J/token"),
    "max_above_idle_energy_per_token_j": (
        ("energy", "above_idle_energy_per_token_j"), "<=", "J/token"),
    "max_energy_per_request_j": (("energy", "energy_per_request_j"), "<=", "J/request"),
    "min_tokens_per_s_per_w": (("energy", "tokens_per_s_per_w"), ">=", "tokens/s/W"),
    "max_avg_power_w": (("energy", "avg_power_w"), "<=", "W"),
    "max_peak_power_w": (("energy", "peak_power_w"), "<=", "W"),
}


ENERGY_SLOS = frozenset(name for name, (path, _op, _u) in METRICS.items() if path[0] == "energy")


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


def _lookup(summary: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = summary
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, int | float) else None


def evaluate(spec: Mapping[str, float], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    verdicts = []
    for name, limit in spec.items():
        path, op, _unit = METRICS[name]
        measured = _lookup(summary, path)
        if measured is None:
            passed = False
        else:
            passed = measured <= limit if op == "<=" else measured >= limit
        verdicts.append(
            {"metric": name, "op": op, "limit": limit, "measured": measured, "passed": passed}
        )
    return verdicts


def breach_message(verdicts: list[dict[str, Any]], n: int) -> str | None:
    """One line for all breaches, or None when every objective is met."""
    parts = []
    for v in verdicts:
        if v["passed"]:
            continue
        unit = METRICS[v["metric"]][2]
        suffix = f" {unit}" if unit else ""
        if v["measured"] is not None:
            shown = f"{v['measured']:.4g}{suffix}"
        elif v["metric"] in ENERGY_SLOS:
            shown = "not measured (no energy reading: see power in the results)"
        else:
            shown = "not measured"
        bad_op = ">" if v["op"] == "<=" else "<"
        parts.append(
            f"{v['metric']} = {shown} {bad_op} limit {v['limit']:.4g}{suffix}"
        )
    if not parts:
        return None
    return f"SLO breached (n={n}): " + "; ".join(parts)
