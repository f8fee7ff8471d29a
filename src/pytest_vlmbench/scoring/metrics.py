"""The scorers' figures as metrics of the registry: summary, SLOs, compare and the gate
read scores the way they read latency.

Every `ScoreSpec` of kind accuracy, error or length becomes a `Metric` named like the
score, its value the mean at ``summary.quality.scores[name].mean``, its SLO
``min_<name>`` (higher is better) or ``max_<name>``, and compare's per-request sample
the record's ``scores[name]``. A "value" score (a 1-10 rating the model gave) has no
better direction: it is summarised as a histogram and ranked between models instead.

Accuracies are proportions (compare judges them by differences in percentage points,
with Fisher's exact test on the rounded sum of per-request accuracies); no score is
moved by the machine's speed (`machine_bound=False`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pytest_vlmbench.metrics.registry import Metric, PerRequest


def _reader(name: str) -> PerRequest:
    def per_request(record: Mapping[str, Any]) -> float | None:
        value = (record.get("scores") or {}).get(name)
        return None if value is None else float(value)

    return per_request


def metric_of(spec: Any) -> Metric:
    """The metric of one score (a `ScoreSpec` of kind accuracy, error or length)."""
    better = "min_" if spec.higher_is_better else "max_"
    accuracy = spec.kind == "accuracy"
    return Metric(
        spec.name, spec.unit, not spec.higher_is_better,
        f"{spec.description} (mean over the scored requests; the task's scorers)",
        summary=("quality", "scores", spec.name, "mean"), slo=better + spec.name,
        sample=spec.name, statistic="mean", proportion=accuracy,
        display=0.05 if accuracy else 0.10, per_request=_reader(spec.name),
        machine_bound=False,
    )


@functools.cache
def _built_in() -> tuple[Metric, ...]:
    from pytest_vlmbench.scoring import builtin_scorers

    seen: dict[str, Metric] = {}
    for scorer in builtin_scorers():
        for spec in scorer.specs:
            if spec.kind != "value" and spec.name not in seen:
                seen[spec.name] = metric_of(spec)
    return tuple(seen.values())


def score_metrics() -> list[Metric]:
    """The built-in scorers' metrics (a third party's scorer declares its own metrics
    with `metrics.registry.register(metric_of(spec))`)."""
    return list(_built_in())
