"""The verdict on one metric of one benchmark, and the evidence behind it.

Three ways to judge, by what the baseline can tell (docs/compare.md):
- "runs": a timing metric with k >= 2 baseline runs. The current run's statistic
  against a Student t prediction interval for one new run of the baseline's runs, on a
  log scale: the between-run spread measures the machine's drift.
- "one-run": a timing metric with one baseline run. Its drift cannot be measured, so a
  change must exceed the rule's limit plus a drift allowance (and the per-request test).
- "requests": a rate (parse_rate, success_rate), which the machine's speed does not
  move: Fisher's exact test on the requests of every baseline run against the current.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from pytest_vlmbench.compare.rules import Rule
from pytest_vlmbench.metrics import noise
from pytest_vlmbench.metrics.noise import Effect, RunLevel
from pytest_vlmbench.metrics.registry import Metric

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_SAMPLES = 5
DEFAULT_DRIFT_ALLOWANCE = 0.25  # options.DEFAULT_DRIFT_ALLOWANCE
"""This machine's measured between-run drift of timing (caption p50 0.77-0.95 s over
five runs of one commit): what one baseline run cannot rule out."""
_EPS = 1e-12  # so that 0.99 - 1.0 is not "beyond" a 0.01 limit by rounding

Verdict = Literal["improved", "unchanged", "regressed", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("improved", "unchanged", "regressed", "inconclusive")
Mode = Literal["runs", "one-run", "requests"]
Values = NDArray[np.float64]


@dataclass(frozen=True)
class Settings:
    alpha: float = DEFAULT_ALPHA
    min_samples: int = DEFAULT_MIN_SAMPLES
    resamples: int = noise.DEFAULT_RESAMPLES
    confidence: float = noise.DEFAULT_CONFIDENCE
    seed: int = 0
    drift_allowance: float = DEFAULT_DRIFT_ALLOWANCE


@dataclass(frozen=True)
class MetricResult:
    """The verdict on one metric of one benchmark, with the evidence behind it."""

    metric: str
    verdict: Verdict
    gated: bool
    rule: Rule
    baseline: float | None
    """The baseline's statistic; with several runs, the geometric mean of theirs."""
    current: float | None
    n_baseline: int
    n_current: int
    effect: float | None
    effect_kind: Effect
    ci: tuple[float, float] | None
    """The bootstrap interval of the effect; run level: the prediction-based interval."""
    p_value: float | None
    test: str | None
    note: str | None = None
    mode: Mode = "requests"
    k: int = 1
    """Baseline runs behind the baseline value."""
    runs: RunLevel | None = None
    request_p_value: float | None = None
    """Run level: the per-request Mann-Whitney p of all baseline requests against the
    current ones, shown as supporting evidence; it does not gate."""
    mde: float | None = None
    """The smallest change the gate can call a regression, in the effect's terms (a
    fraction for ratios, the metric's unit or a rate difference otherwise)."""
    allowance: float = 0.0
    """The drift allowance added to the limit (one baseline run)."""

    @property
    def change_pct(self) -> float | None:
        """Relative change current/baseline - 1, in percent (None without a positive baseline)."""
        if self.baseline is None or self.current is None or self.baseline <= 0:
            return None
        return 100.0 * (self.current / self.baseline - 1.0)


def _decide(metric: Metric, effect: float, none: float, interval: tuple[float, float],
            p: float, threshold: float, alpha: float) -> tuple[Verdict, bool | None]:
    """(a) beyond the threshold, (b) p < alpha, (c) the interval on the same side of no
    change. Credible is None when the effect is within the threshold."""
    worse = metric.worse * (effect - none)  # > 0: worse than the baseline
    bounds = sorted(metric.worse * (bound - none) for bound in interval)
    if worse > threshold + _EPS:
        credible = p < alpha and bounds[0] > 0
        return ("regressed" if credible else "unchanged"), credible
    if -worse > threshold + _EPS:
        credible = p < alpha and bounds[1] < 0
        return ("improved" if credible else "unchanged"), credible
    return "unchanged", None


def _kind(metric: Metric, rule: Rule) -> Effect:
    return "ratio" if rule.relative and not metric.proportion else "difference"


def evaluate_requests(metric: Metric, rule: Rule, gated: bool, xs: Values, ys: Values,
                      unavailable: str | None, s: Settings, request_p: Callable[[], float],
                      *, mode: Mode = "requests", k: int = 1) -> MetricResult:
    """Per request: Fisher for rates; for timing with one baseline run ("one-run"),
    Mann-Whitney and the limit plus s.drift_allowance."""
    kind = _kind(metric, rule)
    b = noise.statistic(xs, metric.statistic) if len(xs) else None
    c = noise.statistic(ys, metric.statistic) if len(ys) else None
    allowance = s.drift_allowance if mode == "one-run" else 0.0

    def result(verdict: Verdict, note: str | None, effect: float | None = None,
               ci: tuple[float, float] | None = None, p: float | None = None,
               test: str | None = None, mde: float | None = None) -> MetricResult:
        return MetricResult(metric.name, verdict, gated, rule, b, c, len(xs), len(ys), effect,
                            kind, ci, p, test, note, mode, k, None, None, mde, allowance)

    if unavailable:
        return result("inconclusive", unavailable)
    if len(xs) < s.min_samples or len(ys) < s.min_samples:
        return result("inconclusive", f"too few samples (n={len(xs)} vs {len(ys)}, "
                                      f"need {s.min_samples} on each side)")
    effect = noise.effect(xs, ys, metric.statistic, kind)
    if effect is None or b is None:
        return result("inconclusive", "baseline value is 0: no ratio")
    ci = noise.bootstrap_ci(xs, ys, metric.statistic, kind, resamples=s.resamples,
                            confidence=s.confidence, seed=s.seed)
    extra = allowance if kind == "ratio" else allowance * abs(b)
    if metric.proportion:
        test = "fisher"
        successes = round(float(xs.sum()))
        p = noise.fisher_exact(successes, len(xs), round(float(ys.sum())), len(ys))
        drop = noise.fisher_detectable_drop(successes, len(xs), len(ys), s.alpha)
        mde = None if drop is None else max(rule.threshold, drop)
    else:
        test = "mann-whitney"
        p = request_p()
        mde = rule.threshold + extra
    if ci is None:
        return result("inconclusive", "no bootstrap interval", effect, None, p, test, mde)
    none = 1.0 if kind == "ratio" else 0.0
    verdict, credible = _decide(metric, effect, none, ci, p, rule.threshold + extra, s.alpha)
    note = None
    if credible is False:
        note = (f"beyond threshold but within noise, p={p:.2g}" if p >= s.alpha else
                f"beyond threshold but the {100 * s.confidence:g}% CI includes no change")
    elif credible is None and abs(effect - none) > rule.threshold + _EPS:
        note = (f"beyond threshold but within the drift allowance of one baseline run "
                f"(+{100 * allowance:g}%)")
    return result(verdict, note, effect, ci, p, test, mde)


def evaluate_runs(metric: Metric, rule: Rule, gated: bool, per_run: Sequence[Values],
                  ys: Values, s: Settings, request_p: Callable[[], float]) -> MetricResult:
    """Run level: the current run's statistic against k >= 2 baseline runs' statistics."""
    kind = _kind(metric, rule)
    k = len(per_run)
    values = [noise.statistic(v, metric.statistic) for v in per_run]
    c = noise.statistic(ys, metric.statistic) if len(ys) else None
    positive = all(v > 0 for v in values)
    center = math.exp(math.fsum(math.log(v) for v in values) / k) if positive else None
    n_b = sum(len(v) for v in per_run)

    def result(verdict: Verdict, note: str | None, effect: float | None = None,
               ci: tuple[float, float] | None = None, rl: RunLevel | None = None,
               request: float | None = None, mde: float | None = None) -> MetricResult:
        return MetricResult(metric.name, verdict, gated, rule, center, c, n_b, len(ys), effect,
                            kind, ci, rl.p_value if rl else None, "run-level t" if rl else None,
                            note, "runs", k, rl, request, mde)

    if len(ys) < s.min_samples or c is None:
        return result("inconclusive", f"too few samples (n={len(ys)} in the current run, "
                                      f"need {s.min_samples})")
    if not positive or c <= 0:
        return result("inconclusive", "a value of 0: no run-level ratio")
    rl = noise.run_level(values, c, alpha=s.alpha, confidence=s.confidence)
    assert center is not None
    if kind == "ratio":
        effect, none = rl.ratio, 1.0
        lo, hi = rl.interval
        detect = math.expm1(rl.detectable) if metric.higher_is_worse \
            else -math.expm1(-rl.detectable)
    else:
        effect, none = c - center, 0.0
        lo = c - center * math.exp(rl.half_width)
        hi = c - center * math.exp(-rl.half_width)
        detect = center * (math.expm1(rl.detectable) if metric.higher_is_worse
                           else -math.expm1(-rl.detectable))
    mde = max(rule.threshold, detect)
    request = request_p()
    verdict, credible = _decide(metric, effect, none, (lo, hi), rl.p_value, rule.threshold,
                                s.alpha)
    note = None
    if credible is False:
        note = (f"beyond threshold but within the between-run drift, p={rl.p_value:.2g}"
                if rl.p_value >= s.alpha else f"beyond threshold but the "
                f"{100 * s.confidence:g}% prediction interval includes no change")
    return result(verdict, note, effect, (lo, hi), rl, request, mde)


def judge(metric: Metric, rule: Rule, gated: bool, per_run: Sequence[Values], ys: Values,
          unavailable: str | None, s: Settings, cache: dict[tuple[str, int, int], float],
          left_out: str | None = None) -> MetricResult:
    """The verdict by the mode the metric and the baseline allow (module docstring).
    `per_run`: the baseline runs' values, newest first; `cache` holds Mann-Whitney
    p-values by (sample, sizes), shared by the metrics of one sample (five latencies)."""

    def pooled(runs: Sequence[Values]) -> Values:
        return runs[0] if len(runs) == 1 else np.concatenate(runs) if runs else ys[:0]

    def request_p(xs: Values) -> Callable[[], float]:
        def p() -> float:
            key = (metric.sample, len(xs), len(ys))
            if key not in cache:
                cache[key] = noise.mann_whitney_u(xs, ys).p_value
            return cache[key]
        return p

    if unavailable or metric.proportion:
        xs = pooled(per_run)
        result = evaluate_requests(metric, rule, gated, xs, ys, unavailable, s, request_p(xs),
                                   mode="requests" if metric.proportion
                                   else "runs" if len(per_run) > 1 else "one-run",
                                   k=len(per_run))
    else:
        usable = [v for v in per_run if len(v) >= s.min_samples]
        if len(usable) < len(per_run) and len(per_run) > 1:
            few = len(per_run) - len(usable)
            left_out = (f"{few} baseline run{'s' if few > 1 else ''} with fewer than "
                        f"{s.min_samples} samples left out")
        if len(usable) >= 2:
            result = evaluate_runs(metric, rule, gated, usable, ys, s, request_p(pooled(usable)))
        else:
            xs = usable[0] if usable else pooled(per_run)
            result = evaluate_requests(metric, rule, gated, xs, ys, None, s, request_p(xs),
                                       mode="one-run", k=max(1, len(usable)))
    if left_out:
        result = replace(result, note=f"{result.note}; {left_out}" if result.note else left_out)
    return result
