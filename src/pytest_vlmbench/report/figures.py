"""The report's figures: each one's name, unit, direction, definition and the path of
its value in a benchmark's summary, so every number the report shows is one summary
value that a reader (and tests/test_report_trace.py) can find and recompute.

Figures that are registry metrics take their definition and direction from the registry
(metrics/registry.py); the others (counts, min/max, RAM, load time, output length) are
declared here. Quality scores are read per benchmark from `summary.quality.scores`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_vlmbench.metrics import registry

Better = Literal["lower", "higher"] | None


def _mb(v: float) -> str:
    return f"{v / 1e6:.0f}"


def _pct(v: float) -> str:
    """A proportion as a percentage: whole, except where rounding would show 0% or 100%
    for a value that is neither."""
    text = f"{100 * v:.0f}%"
    return f"{100 * v:.1f}%" if text in ("0%", "100%") and 0 < v < 1 else text


@dataclass(frozen=True)
class Figure:
    """One column of the report's tables: `path` is where its value sits in a
    benchmark's summary (dotted in the report: `latency_s.median`)."""

    name: str
    header: str
    unit: str
    better: Better
    path: tuple[str, ...]
    description: str
    fmt: Callable[[float], str]
    metric: str | None = None
    """The registry metric it is (compare and SLOs call it that), if any."""

    @property
    def source(self) -> str:
        return "summary." + ".".join(self.path)

    def value(self, summary: Mapping[str, Any]) -> float | None:
        return registry.summary_value(summary, self.path)

    def cell(self, value: float | None) -> str:
        return "-" if value is None else self.fmt(value)


def fixed(spec: str) -> Callable[[float], str]:
    return lambda v: format(v, spec)


def _from_registry(metric: str, name: str, header: str, fmt: Callable[[float], str],
                   unit: str | None = None) -> Figure:
    """A registry metric as a column (`unit`: the unit shown, where the cell converts)."""
    m = registry.by_name()[metric]
    return Figure(name, header, m.unit if unit is None else unit,
                  "higher" if not m.higher_is_worse else "lower", m.summary, m.description,
                  fmt, metric)


def headline() -> list[Figure]:
    """The headline table's columns, in order (quality scores are added per report)."""
    return [
        Figure("requests", "n", "requests", None, ("requests",),
               "measured requests (warm-up and cold excluded)", fixed(".0f")),
        _from_registry("success_rate", "success_rate", "success", _pct),
        _from_registry("parse_rate", "parse_rate", "parse", _pct),
        _from_registry("p50_latency", "p50_s", "p50 s", fixed(".3f")),
        _from_registry("p95_latency", "p95_s", "p95 s", fixed(".3f")),
        Figure("min_s", "min s", "s", "lower", ("latency_s", "min"),
               "fastest successful measured request", fixed(".3f")),
        Figure("max_s", "max s", "s", "lower", ("latency_s", "max"),
               "slowest successful measured request", fixed(".3f")),
        Figure("latency_cv", "CV", "", "lower", ("latency_s", "cv"),
               "coefficient of variation of the successful requests' latency "
               "(stdev / mean): lower is more consistent", fixed(".3f")),
        _from_registry("p50_ttft", "ttft_p50_s", "TTFT p50 s", fixed(".3f")),
        _from_registry("prompt_tokens_per_s", "prompt_tokens_per_s", "pp tok/s",
                       fixed(".0f")),
        _from_registry("tokens_per_s", "decode_tokens_per_s", "decode tok/s", fixed(".1f")),
        _from_registry("tokens_per_s_per_w", "tokens_per_s_per_w", "tok/s/W", fixed(".3g")),
        _from_registry("energy_per_token", "energy_per_token_j", "J/token", fixed(".3g")),
        # no best: the high-water mark includes every model loaded before in the process,
        # so it follows the order the benchmarks ran in as much as the model
        Figure("ram_peak_bytes", "RAM peak MB", "bytes", None, ("peak_rss_bytes",),
               "process resident-set high-water mark (VmHWM) when the benchmark ended; "
               "includes every model loaded so far in the process, so it is not marked "
               "best or compared", _mb),
        Figure("load_s", "load s", "s", "lower", ("load_s",),
               "model load time (weights to first request ready), measured once per load",
               fixed(".2f")),
        Figure("output_tokens_mean", "out tokens", "tokens", None,
               ("completion_tokens_mean",),
               "mean completion tokens of the successful measured requests", fixed(".1f")),
    ]


EXTRA = (
    "energy_per_request_j", "requests_per_s", "output_tokens_per_s", "p50_tpot_s",
    "goodput_rps",
)


def extra() -> list[Figure]:
    """Figures in the CSV, the load-level and cost tables, not in the headline table."""
    return [
        _from_registry("energy_per_request", "energy_per_request_j", "J/request",
                       fixed(".3g")),
        _from_registry("requests_per_s", "requests_per_s", "req/s", fixed(".2f")),
        _from_registry("output_tokens_per_s", "output_tokens_per_s", "out tok/s",
                       fixed(".1f")),
        _from_registry("p50_tpot", "p50_tpot_s", "TPOT p50 ms", lambda v: f"{1000 * v:.1f}",
                       "ms"),
        _from_registry("goodput", "goodput_rps", "goodput r/s", fixed(".2f")),
        _from_registry("avg_power", "avg_power_w", "avg W", fixed(".3g")),
        Figure("prompt_tokens_mean", "in tokens", "tokens", None, ("prompt_tokens_mean",),
               "mean prompt tokens (image tokens included) of the successful measured "
               "requests", fixed(".1f")),
        Figure("output_chars_mean", "out chars", "characters", None, ("output_chars_mean",),
               "mean output length in characters of the successful measured requests",
               fixed(".0f")),
        _from_registry("seconds_per_scene", "seconds_per_scene", "s/scene", fixed(".3f")),
        _from_registry("real_time_factor", "real_time_factor", "RTF", fixed(".3f")),
        _from_registry("pipeline_real_time_factor", "pipeline_real_time_factor",
                       "pipeline RTF", fixed(".3f")),
    ]


def all_figures() -> list[Figure]:
    return [*headline(), *extra()]


def by_name() -> dict[str, Figure]:
    return {f.name: f for f in all_figures()}


def score_figures(summaries: Sequence[Mapping[str, Any]]) -> list[Figure]:
    """One figure per quality score any of these summaries has (`summary.quality.scores`),
    in the order first seen; its direction is the score's own (`higher_is_better`)."""
    seen: dict[str, Figure] = {}
    for s in summaries:
        quality = s.get("quality")
        if not isinstance(quality, Mapping):
            continue
        for name, score in (quality.get("scores") or {}).items():
            if name in seen:
                continue
            unit = str(score.get("unit") or "")
            fmt = _pct if score.get("kind") == "accuracy" else fixed(".3g")
            kind = score.get("kind")
            better: Better = None if kind in ("length", "value") else (
                "higher" if score.get("higher_is_better", True) else "lower")
            seen[name] = Figure(
                f"score_{name}", name, unit, better,
                ("quality", "scores", name, "mean"),
                f"{score.get('description') or name}: mean over the scored requests",
                fmt, name,
            )
    return list(seen.values())


def winners(values: Sequence[float | None], better: Better, *, digits: int = 3) -> set[int]:
    """The indices of the best value of a column (every one tied at `digits` significant
    figures: the precision the tables show); none when the column has no direction or
    fewer than two values."""
    if better is None:
        return set()
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(present) < 2:
        return set()
    best = (min if better == "lower" else max)(v for _, v in present)
    return {i for i, v in present if same(v, best, digits)}


def same(a: float, b: float, digits: int = 3) -> bool:
    """Equal at `digits` significant figures (how a tie is defined in the report)."""
    return float(f"{a:.{digits}g}") == float(f"{b:.{digits}g}")
