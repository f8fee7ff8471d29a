"""Every figure a benchmark reports, declared once: the metric registry.

A `Metric` says what the figure is called, its unit and which way is worse, where the
benchmark's summary holds it, and which of the plugin's consumers use it: an SLO
(`vlm_slo(max_latency_p95_s=...)`), a compare/gate rule (`p95_latency:+10%`, judged
on per-request samples), a column of the terminal table. The summary (summary.py), the
SLOs (slo.py), compare (compare/) and the table (report/table.py) all read this list,
so adding a figure is one declaration here plus its computation.

The built-in figures are computed by summary.py in one pass over the records, and
compare's per-request samples by compare/samples.py (one streaming pass, fast at
100,000 records). A metric declared elsewhere (a conftest, a pytest plugin, an entry
point in the `pytest_vlmbench.metrics` group) brings its own computation: `per_request`
gives a request's value from its record and `statistic` summarises a benchmark's
values; its figure is written to the results under `summary.metrics[name]`.

This module imports only the standard library: pytest loads it at start-up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, Literal, TypeVar

ENTRY_POINT_GROUP = "pytest_vlmbench.metrics"

Statistic = Literal["median", "mean", "p90", "p95", "p99"]
AppliesTo = Literal["benchmark", "window"]
"""What a metric describes: a benchmark (its summary, records and table row) or a
power window a test measured with `vlm_power.measure(name)` (one value per window)."""
STATISTICS: tuple[Statistic, ...] = ("median", "mean", "p90", "p95", "p99")

PerRequest = Callable[[Mapping[str, Any]], float | None]
"""A request's value from its record (a successful measured one); None: it has none."""


def fixed(fmt: str) -> Callable[[float | None], str]:
    """A table cell formatter: `format(value, fmt)`, `-` for an absent figure."""
    return lambda value: "-" if value is None else format(value, fmt)


def percent(value: float | None) -> str:
    """A proportion as a whole percentage: `95%`."""
    return "-" if value is None else f"{100 * value:.0f}%"


def millis(value: float | None) -> str:
    """Seconds as milliseconds with one decimal (per-token times): `12.3`."""
    return "-" if value is None else f"{1000 * value:.1f}"


def megabytes(value: float | None) -> str:
    """Bytes as whole megabytes; an absent or zero count is `-` (nothing was counted)."""
    return "-" if not value else f"{value / 1e6:.0f}"


@dataclass(frozen=True)
class Column:
    """How a metric appears in the terminal table. An `optional` column (the serving
    figures) is shown only in a table with a benchmark that ran under a load pattern or
    against a server, and only when some benchmark there has its figure."""

    header: str
    cell: Callable[[float | None], str]
    optional: bool = False


@dataclass(frozen=True)
class Metric:
    """One figure: its name, unit and direction, and who uses it.

    `name` is what compare and the gate call it (`p95_latency:+10%`). `summary` is the
    path of its value in a benchmark's summary (("latency_s", "p95")); a metric with a
    `per_request` computation lives at ("metrics", name, "value"). `slo` is its SLO
    name (max_* for metrics where higher is worse, min_* otherwise), None for a figure
    that is no objective. `sample` names the per-request values compare judges it on
    (several latency percentiles share "latency"), "" for a figure compare does not
    judge; `statistic` summarises those values for a run. `applies_to` "window": a
    figure of the power windows of the results' `windows` list, `summary` being its path
    in one window (("energy_j",)); each window is one sample, and the window metrics are
    judged only on windows (registry.window_compared), never among a benchmark's.
    """

    name: str
    unit: str
    higher_is_worse: bool
    description: str
    summary: tuple[str, ...] = ()
    slo: str | None = None
    sample: str = ""
    statistic: Statistic = "median"
    proportion: bool = False
    """A rate in [0, 1] (parse, success): judged by differences in percentage points
    with Fisher's exact test; never moved by the machine's speed."""
    display: float = 0.10
    """Threshold for compare's verdict when no rule gates the metric (relative, or
    absolute for proportions)."""
    column: Column | None = None
    per_request: PerRequest | None = field(default=None, compare=False)
    applies_to: AppliesTo = "benchmark"
    machine_bound: bool = True
    """Moved by the machine's speed; False for a figure of what the model answered (a
    score): compare judges it on every baseline run, busy or quiet."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"metric name {self.name!r}: lower-case letters, digits and _")
        if self.statistic not in STATISTICS:
            raise ValueError(f"metric {self.name!r}: statistic {self.statistic!r} is not one "
                             f"of {', '.join(STATISTICS)}")
        if self.slo is not None and not self.slo.startswith(self.slo_prefix):
            raise ValueError(f"metric {self.name!r}: its SLO name must start with "
                             f"{self.slo_prefix!r} (higher_is_worse={self.higher_is_worse})")
        if self.per_request is not None and not self.summary:
            object.__setattr__(self, "summary", ("metrics", self.name, "value"))
            if not self.sample:
                object.__setattr__(self, "sample", self.name)
        if not self.summary:
            raise ValueError(f"metric {self.name!r}: give its summary path or a per_request "
                             "computation")
        if self.applies_to == "window" and (self.per_request is not None or self.column
                                            or self.slo or not self.sample):
            raise ValueError(f"metric {self.name!r}: a window metric is read from each window "
                             "(a sample name and a summary path; no per_request, column or SLO)")

    @property
    def slo_prefix(self) -> str:
        return "max_" if self.higher_is_worse else "min_"

    @property
    def op(self) -> Literal["<=", ">="]:
        """The SLO comparison a measured value must satisfy against its limit."""
        return "<=" if self.higher_is_worse else ">="

    @property
    def worse(self) -> int:
        return 1 if self.higher_is_worse else -1

    @property
    def timing(self) -> bool:
        """Moved by the machine's speed (every metric but the rates): judged run by run
        when the baseline has several runs."""
        return self.machine_bound and not self.proportion

    @property
    def declared(self) -> bool:
        """A figure with a per_request computation of its own written to the summary's
        `metrics` (a score's lives in `quality`, computed by its scorer's summary)."""
        return self.per_request is not None and self.summary[0] == "metrics"

    @property
    def builtin(self) -> bool:
        """Computed by summary.py and compare/samples.py, not by `per_request`."""
        return self.per_request is None

    def value(self, summary: Mapping[str, Any]) -> float | None:
        """The metric's figure in a benchmark's summary; None when it is absent."""
        return summary_value(summary, self.summary)


def summary_value(summary: Mapping[str, Any], path: Iterable[str]) -> float | None:
    """The finite number at `path` in a summary; None when it is absent (missing, null,
    not a number, infinite or NaN)."""
    found: Any = summary
    for key in path:
        if not isinstance(found, Mapping):
            return None
        found = found.get(key)
    if isinstance(found, bool) or not isinstance(found, int | float):
        return None
    return float(found) if math.isfinite(found) else None


def _latency(stat: Statistic, label: str, slo: str, column: str | None = None) -> Metric:
    name = ("p50" if stat == "median" else stat) + "_latency"
    return Metric(name, "s", True, f"{label} request latency", ("latency_s", stat), slo,
                  "latency", stat, column=Column(column, fixed(".3f")) if column else None)


BUILTIN: tuple[Metric, ...] = (
    _latency("median", "median", "max_latency_p50_s", "p50 s"),
    _latency("p90", "90th percentile", "max_latency_p90_s"),
    _latency("p95", "95th percentile", "max_latency_p95_s", "p95 s"),
    _latency("p99", "99th percentile", "max_latency_p99_s"),
    _latency("mean", "mean", "max_latency_mean_s"),
    Metric("p50_ttft", "s", True, "median time to first token", ("ttft_s", "median"),
           "max_ttft_p50_s", "ttft", "median", column=Column("TTFT p50 s", fixed(".3f"))),
    Metric("p95_ttft", "s", True, "95th percentile time to first token", ("ttft_s", "p95"),
           "max_ttft_p95_s", "ttft", "p95"),
    Metric("prompt_tokens_per_s", "tokens/s", False,
           "prompt-processing rate (per_request.prefill: prefill tokens / prefill time); "
           "the summary's is over all requests, compare's the median per request",
           ("prompt_tokens_per_s",), "min_prompt_tokens_per_s", "prompt_tokens_per_s",
           column=Column("pp tok/s", fixed(".0f"))),
    Metric("tokens_per_s", "tokens/s", False,
           "decode rate (per_request.engine_decode, else stream_decode: decode tokens / "
           "decode time); the summary's decode_tokens_per_s is over all requests, "
           "compare's the median per request",
           ("decode_tokens_per_s",), "min_decode_tokens_per_s", "tokens_per_s",
           column=Column("decode tok/s", fixed(".1f"))),
    Metric("stream_tokens_per_s", "tokens/s", False,
           "decode rate an application sees (per_request.stream_decode), over all requests",
           ("stream_tokens_per_s",), "min_stream_tokens_per_s",
           column=Column("stream tok/s", fixed(".1f"))),
    Metric("bytes_per_token", "B/token", True, "weight bytes one decode step reads",
           ("roofline", "bytes_per_token"), column=Column("MB/token", megabytes)),
    Metric("parse_rate", "", False, "valid outputs / measured requests (compare judges "
           "the successful requests' outputs)", ("parse_rate",),
           "min_parse_rate", "parse_rate", "mean", proportion=True, display=0.05,
           column=Column("parse", percent)),
    Metric("success_rate", "", False, "requests without error / measured requests",
           ("success_rate",), "min_success_rate", "success_rate", "mean", proportion=True,
           display=0.01, column=Column("success", percent)),
    Metric("energy_per_token", "J/token", True,
           "energy / completion tokens; compare's is the median per request",
           ("energy", "energy_per_token_j"), "max_energy_per_token_j", "energy_per_token",
           column=Column("J/token", fixed(".4g"))),
    Metric("tokens_per_s_per_w", "tokens/s/W", False, "generated tokens / energy",
           ("energy", "tokens_per_s_per_w"), "min_tokens_per_s_per_w",
           column=Column("tok/s/W", fixed(".3g"))),
    Metric("percent_of_roofline", "%", False,
           "decode rate as a percentage of the memory-bandwidth bound",
           ("roofline", "percent_of_bound"), column=Column("% roofline", fixed(".0f"))),
    Metric("requests_per_s", "requests/s", False,
           "successful requests / the measured requests' wall time", ("requests_per_s",),
           "min_requests_per_s"),
    # Serving figures, as `vllm bench serve` defines them (summary.METHODS).
    Metric("p50_tpot", "s", True, "median time per output token after the first, "
           "(E2EL - TTFT) / (output tokens - 1)", ("tpot_s", "median"), "max_tpot_p50_s",
           "tpot", "median", column=Column("TPOT p50 ms", millis, optional=True)),
    Metric("p95_tpot", "s", True, "95th percentile time per output token after the first",
           ("tpot_s", "p95"), "max_tpot_p95_s", "tpot", "p95"),
    Metric("p50_itl", "s", True, "median inter-token latency (gaps between content "
           "chunks, pooled over requests); compare's is the median of each request's mean gap",
           ("itl_s", "median"), "max_itl_p50_s", "itl", "median",
           column=Column("ITL p50 ms", millis, optional=True)),
    Metric("p95_itl", "s", True, "95th percentile inter-token latency (pooled gaps); "
           "compare's is the p95 of each request's mean gap", ("itl_s", "p95"),
           "max_itl_p95_s", "itl", "p95"),
    Metric("p99_itl", "s", True, "99th percentile inter-token latency (pooled gaps); "
           "compare's is the p99 of each request's mean gap", ("itl_s", "p99"),
           "max_itl_p99_s", "itl", "p99"),
    Metric("p95_client_lag", "s", True, "95th percentile of how late the client sent a "
           "request against its load pattern's schedule (t_start - scheduled)",
           ("client_lag_s", "p95"), "max_client_lag_p95_s"),
    Metric("output_tokens_per_s", "tokens/s", False, "completion tokens of successful "
           "requests / the measured requests' wall time (vLLM's output token throughput)",
           ("output_tokens_per_s",), "min_output_tokens_per_s",
           column=Column("out tok/s", fixed(".1f"), optional=True)),
    Metric("goodput", "requests/s", False, "successful requests meeting every per-request "
           "limit of the benchmark's SLOs (E2EL, TTFT, TPOT) / wall time (vLLM's goodput)",
           ("goodput_rps",), "min_goodput_rps",
           column=Column("goodput r/s", fixed(".2f"), optional=True)),
    # Offline throughput (a batch level, metrics/throughput.py): one sample per full batch.
    Metric("batch_requests_per_s", "requests/s", False, "offline throughput: successful "
           "requests / the wall time of a batch submitted together (median over batches)",
           ("throughput", "requests_per_s", "median"), "min_batch_requests_per_s",
           "batch_requests_per_s", "median",
           column=Column("batch req/s", fixed(".2f"), optional=True)),
    Metric("batch_output_tokens_per_s", "tokens/s", False, "offline throughput: completion "
           "tokens of a batch's successful requests / its wall time (median over batches)",
           ("throughput", "output_tokens_per_s", "median"), "min_batch_output_tokens_per_s",
           "batch_output_tokens_per_s", "median",
           column=Column("batch tok/s", fixed(".1f"), optional=True)),
    Metric("cold_latency", "s", True, "latency of the cold request, the first after the "
           "server loaded or swapped the model (one request: no compare sample)",
           ("cold", "latency_s"), "max_cold_latency_s",
           column=Column("cold s", fixed(".3f"), optional=True)),
    Metric("above_idle_energy_per_token", "J/token", True,
           "energy above the idle baseline / completion tokens",
           ("energy", "above_idle_energy_per_token_j"), "max_above_idle_energy_per_token_j"),
    Metric("energy_per_request", "J/request", True, "energy / measured requests",
           ("energy", "energy_per_request_j"), "max_energy_per_request_j"),
    Metric("avg_power", "W", True, "average power over the measured requests",
           ("energy", "avg_power_w"), "max_avg_power_w"),
    Metric("peak_power", "W", True, "highest power reading over the measured requests",
           ("energy", "peak_power_w"), "max_peak_power_w"),
    # Video scenes (metrics/video.py, summary.METHODS["video"]): the benchmark's figures
    # over its videos with complete figures. For one set of videos the VLM figures are
    # the mean scene latency times a constant, so compare judges them on the per-request
    # latencies scaled by that constant (compare/samples.py); the pipeline's add the
    # once-per-video detection and extraction, which have no per-request sample.
    Metric("real_time_factor", "x", True, "VLM seconds over the video (sum over scenes of "
           "the mean scene latency) / seconds of video; below 1 keeps up; compare's is the "
           "mean request latency x scenes / video seconds",
           ("video", "real_time_factor"), "max_real_time_factor", "real_time_factor", "mean"),
    Metric("seconds_per_scene", "s", True, "VLM seconds per scene (vlm_s / scenes); "
           "compare's is the mean request latency", ("video", "seconds_per_scene"),
           "max_seconds_per_scene", "seconds_per_scene", "mean"),
    Metric("vlm_s", "s", True, "VLM seconds over the videos: per scene the mean latency of "
           "its requests (repeats averaged, failures included), summed; compare's is the "
           "mean request latency x scenes", ("video", "vlm_s"), "max_vlm_s", "vlm_s", "mean"),
    Metric("pipeline_real_time_factor", "x", True, "(scene detection + frame extraction + "
           "preparation + VLM seconds) / seconds of video",
           ("video", "pipeline_real_time_factor"), "max_pipeline_real_time_factor"),
    Metric("pipeline_s", "s", True, "scene detection + frame extraction + preparation + "
           "VLM seconds", ("video", "pipeline_s"), "max_pipeline_s"),
    Metric("detection_s", "s", True, "decoding the videos and detecting their scenes (once "
           "per video per session, outside every request)", ("video", "detection_s"),
           "max_detection_s"),
    Metric("extraction_s", "s", True, "decoding the videos up to their last sampled frame "
           "and taking the sampled frames (once per video per session, outside every "
           "request)", ("video", "extraction_s"), "max_extraction_s"),
    # Descriptive: what was shown, not how well; no objective, never judged by compare.
    Metric("scenes", "scenes", False, "scenes of the videos with complete figures",
           ("video", "scenes"), machine_bound=False),
    Metric("frames_per_scene", "frames", False, "frames sent per request (mean)",
           ("video", "frames_per_scene"), machine_bound=False),
    Metric("window_energy", "J", True, "energy of one power window (vlm_power.measure): "
           "the meter's energy over its span; compare's is the median per window",
           ("energy_j",), sample="window_energy", applies_to="window"),
    Metric("window_duration", "s", True, "wall time of one power window (perf_counter_ns "
           "at its start and end); compare's is the median per window",
           ("duration_s",), sample="window_duration", applies_to="window"),
)


class MetricError(ValueError):
    """A declaration that clashes with one already registered."""


_registered: list[Metric] = []
_loaded: list[Metric] | None = None
_loading = False


def register(metric: Metric) -> Metric:
    """Declare a metric (from a conftest or a pytest plugin, before the session's
    benchmarks run). Its name and SLO name must be new; the same object twice is one
    declaration (a module imported again, or also named by an entry point). Returns it,
    so a module can keep it as a constant."""
    known = _loaded if _loaded is not None else [*BUILTIN, *_score_metrics(), *_registered]
    if any(m is metric for m in known):
        return metric
    clash = _clash(metric, known)
    if clash:
        raise MetricError(clash)
    _registered.append(metric)
    if _loaded is not None:
        _loaded.append(metric)
    return metric


def unregister(name: str) -> None:
    """Remove a metric `register` declared (tests; a plugin that unloads)."""
    for found in (_registered, _loaded or []):
        found[:] = [m for m in found if m.name != name or m in BUILTIN]


def _clash(metric: Metric, known: Iterable[Metric]) -> str | None:
    for other in known:
        if other.name == metric.name:
            return f"metric {metric.name!r} is already declared"
        if metric.slo is not None and other.slo == metric.slo:
            return f"SLO {metric.slo!r} of metric {metric.name!r} is already used by {other.name!r}"
        if metric.per_request is not None and other.sample == metric.sample:
            # its values would replace the other's per-request samples in compare
            return (f"metric {metric.name!r}: sample {metric.sample!r} is already used by "
                    f"{other.name!r}")
    return None


def _from_entry_points() -> list[Metric]:
    found: list[Metric] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        target = ep.load()  # its module may register() what it declares: that is fine
        items = target() if callable(target) and not isinstance(target, Metric) else target
        for item in [items] if isinstance(items, Metric) else items:
            if not isinstance(item, Metric):
                raise MetricError(f"entry point {ep.name} = {ep.value!r} ({ENTRY_POINT_GROUP})"
                                  f" gives {item!r}, not a pytest_vlmbench Metric")
            found.append(item)
    return found


def all_metrics() -> list[Metric]:
    """Built-ins, then those registered in this process, then the entry points' (read
    once; one whose name is taken is an error naming its entry point group)."""
    global _loaded, _loading
    if _loaded is None and _loading:  # an entry point's module reads the registry
        return [*BUILTIN, *_score_metrics(), *_registered]
    if _loaded is None:
        _loading = True
        try:
            declared = _from_entry_points()
        finally:
            _loading = False
        known = [*BUILTIN, *_score_metrics(), *_registered]
        for metric in declared:
            if any(m is metric for m in known):
                continue
            clash = _clash(metric, known)
            if clash:
                raise MetricError(f"{clash} (entry point group {ENTRY_POINT_GROUP})")
            known.append(metric)
        _loaded = known
    return list(_loaded)


def _score_metrics() -> list[Metric]:
    """The built-in scorers' figures (scoring/): imported here, not at the top, because
    the scoring package declares them from its ScoreSpecs."""
    from pytest_vlmbench.scoring.metrics import score_metrics

    return score_metrics()


def by_name() -> dict[str, Metric]:
    return {m.name: m for m in all_metrics()}


def slos() -> dict[str, Metric]:
    """SLO name -> metric, for every metric that can be an objective."""
    return {m.slo: m for m in all_metrics() if m.slo is not None}


def compared() -> dict[str, Metric]:
    """Compare/gate name -> metric, for every metric compare judges on a benchmark."""
    return {m.name: m for m in all_metrics() if m.sample and m.applies_to == "benchmark"}


def window_compared() -> dict[str, Metric]:
    """Compare/gate name -> metric, for every metric compare judges on power windows."""
    return {m.name: m for m in all_metrics() if m.sample and m.applies_to == "window"}


def ruled() -> dict[str, Metric]:
    """Every metric a gate rule may name: the benchmarks' and the windows'."""
    return {**compared(), **window_compared()}


def columns() -> list[Metric]:
    """The metrics shown in the terminal table, in declaration order."""
    return [m for m in all_metrics() if m.column is not None and m.applies_to == "benchmark"]


def computed() -> list[Metric]:
    """The metrics with a per-request computation of their own (not built in)."""
    return [m for m in all_metrics() if m.per_request is not None]


T = TypeVar("T")


class View(Mapping[str, T], Generic[T]):
    """A live, read-only mapping made from the registry (compare's METRICS, the SLO
    table): it includes metrics registered after it was made."""

    def __init__(self, select: Callable[[], dict[str, T]]) -> None:
        self._select = select

    def __getitem__(self, key: str) -> T:
        return self._select()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._select())

    def __len__(self) -> int:
        return len(self._select())
