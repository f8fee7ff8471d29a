"""The rules that gate `vlmbench compare` and `--vlm-compare`.

The metrics are the registry's (metrics/registry.py: those with a `sample`): how each
request gives a value, which statistic summarises a run, which way is worse. A rule
`METRIC:LIMIT` says how much worse the metric may get. Rules are edits of the default
set: `METRIC:LIMIT` sets or replaces the rule for METRIC, `METRIC:off` drops it, `none`
drops every rule so far.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_vlmbench.metrics import registry
from pytest_vlmbench.metrics.registry import Metric as Metric  # compare.rules.Metric

DEFAULT_RULE_SPECS = (
    "p50_latency:+10%", "tokens_per_s:-10%", "parse_rate:-0.05", "success_rate:-0.01",
    "energy_per_token:+10%",
)
CLEAR = "none"
"""The rule token that drops every rule before it (the defaults included)."""
OFF = "off"
"""`METRIC:off` drops the rule for METRIC."""


class RuleError(ValueError):
    """A --fail-on rule that cannot be parsed."""


METRICS: Mapping[str, Metric] = registry.View(registry.compared)
"""The metrics compare judges on benchmarks (those of the registry with per-request
samples), live."""
WINDOW_METRICS: Mapping[str, Metric] = registry.View(registry.window_compared)
"""The metrics compare judges on power windows (one sample per window), live."""
RULED: Mapping[str, Metric] = registry.View(registry.ruled)
"""Every metric a rule may name: METRICS, then WINDOW_METRICS. No window metric has a
default rule: a window gates only when a rule names it (`window_energy:+10%`)."""


@dataclass(frozen=True)
class Rule:
    """A gate: the metric may get worse by at most `threshold` (relative or absolute)."""

    metric: str
    threshold: float
    relative: bool
    text: str

    @property
    def limit(self) -> str:
        """The limit as the user writes it, signed in the worse direction."""
        sign = "+" if RULED[self.metric].higher_is_worse else "-"
        if self.relative:
            return f"{sign}{100 * self.threshold:g}%"
        return f"{sign}{self.threshold:g}"


def display_rule(metric: Metric) -> Rule:
    """The limit a metric without a rule is judged against (it never gates)."""
    return Rule(metric.name, metric.display, not metric.proportion, "(display)")


_AMOUNT = re.compile(r"^([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(%?)$")


def _metric(text: str, metric: str) -> str:
    if metric not in RULED:
        raise RuleError(f"rule {text!r}: unknown metric {metric!r}; one of {', '.join(RULED)}")
    return metric


def parse_rule(text: str) -> Rule:
    """`METRIC:+10%`, `METRIC:-5%`, `METRIC:10%` (worse direction), `parse_rate:-0.01`."""
    spec = text.strip()
    metric, sep, amount = spec.partition(":")
    metric, amount = metric.strip(), amount.strip().replace(" ", "")
    if not sep or not metric or not amount:
        raise RuleError(
            f"rule {text!r}: expected METRIC:LIMIT, e.g. p50_latency:+10% or parse_rate:-0.01 "
            f"(or METRIC:{OFF} to drop a rule, {CLEAR} to drop them all)"
        )
    m = RULED[_metric(text, metric)]
    match = _AMOUNT.match(amount)
    if match is None:
        raise RuleError(
            f"rule {text!r}: limit {amount!r} is not a number or a percentage "
            f"(write +10%, -5%, an absolute -0.01, or {OFF})"
        )
    sign, number, percent = match.groups()
    worse_sign = "+" if m.higher_is_worse else "-"
    if sign and sign != worse_sign:
        direction = "rises" if m.higher_is_worse else "falls"
        raise RuleError(
            f"rule {text!r}: {metric} gets worse as it {direction}, so its limit is "
            f"{worse_sign}{number}{percent} (or {number}{percent} without a sign)"
        )
    if percent and m.proportion:
        raise RuleError(
            f"rule {text!r}: {metric} is a rate; give its limit as a difference, e.g. "
            f"{metric}:-{float(number) / 100:g} for {number} percentage points"
        )
    threshold = float(number) / (100.0 if percent else 1.0)
    if not math.isfinite(threshold):
        raise RuleError(f"rule {text!r}: limit {amount!r} is not finite")
    return Rule(metric, threshold, bool(percent), spec)


def parse_rules(specs: Iterable[str], base: Mapping[str, Rule] | None = None) -> dict[str, Rule]:
    """The rules in force: `base` (DEFAULT_RULES when None) edited by specs, in order.

    Each spec holds one or more comma-separated tokens: `METRIC:LIMIT` sets the rule for
    METRIC (replacing the base's), `METRIC:off` drops it, `none` drops every rule so far.
    So `p95_latency:+10%` adds a gate and keeps the defaults' others, and
    `none,p95_latency:+10%` gates on p95 latency alone. RuleError names a bad token.
    """
    rules = dict(DEFAULT_RULES if base is None else base)
    for spec in specs:
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise RuleError(f"rule {spec!r}: empty; expected METRIC:LIMIT, e.g. p50_latency:+10%")
        for part in parts:
            metric, sep, amount = part.partition(":")
            if part.lower() == CLEAR:
                rules.clear()
            elif sep and amount.strip().lower() == OFF:
                rules.pop(_metric(part, metric.strip()), None)
            else:
                rule = parse_rule(part)
                rules[rule.metric] = rule
    return rules


DEFAULT_RULES: dict[str, Rule] = parse_rules(DEFAULT_RULE_SPECS, base={})
