"""A benchmark's summary, computed only from its measured records.

Nothing here reads a clock: every figure is a function of the records on disk, so a
reader can recompute it (tests do). A request's latency, TTFT and rates are defined
once, in per_request.py; the figures are declared, with their units and directions, in
registry.py. Conventions, also written into each results document under `methods`:
- success: the request returned without an error; failed requests are counted in
  `failed` and `success_rate`, and excluded from latency/TTFT/tokens statistics;
- parse_rate: valid outputs / all measured requests (failures count as not valid);
  None for free-text tasks;
- decode_tokens_per_s: what llama.cpp's llama-bench (tg) means: single-token decode steps
  over the engine's decode time, sum(counts.decode_evals) / sum(stages_ns.decode), when the
  backend reports both for every successful request (`decode_source` "engine"); otherwise
  the streamed rate below (`decode_source` "stream");
- stream_tokens_per_s: what an application sees: sum(decode_tokens) / sum(t_end -
  t_first_token), decode_tokens (counts) being the tokens sampled after the first, an
  end-of-generation token included (each cost a step in that window), or else
  completion_tokens - 1. It includes sampling (grammar!), detokenising and streaming;
- prompt_tokens_per_s: what llama-bench (pp) means: sum(counts.prefill_tokens) /
  sum(stages_ns.prefill) over successful requests that report both;
- requests_per_s: successful requests / (last end - first start) of the measured ones,
  failed requests included in that window (the runner times every request);
- stages: disjoint parts of a request's latency (STAGE_INVARIANTS); what they leave of
  the latency is `unattributed`;
- serving figures as `vllm bench serve` defines them (TPOT, ITL, output tokens/s,
  goodput), the client's lag under a load pattern and the cold request: METHODS says each.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from pytest_vlmbench.metrics import per_request, serving, video
from pytest_vlmbench.metrics.registry import Statistic, computed
from pytest_vlmbench.metrics.stats import PERCENTILE_METHOD, STDEV_METHOD, distribution, percentile
from pytest_vlmbench.results.models import MetricFigure, Record, Summary
from pytest_vlmbench.tasks.structured import ParseOutcome

METHODS = {
    "percentile": PERCENTILE_METHOD,
    "stdev": STDEV_METHOD,
    "latency": "t_end_ns - t_start_ns of successful measured requests; warm-up excluded; "
    "image preparation (prepare_ns) is outside it",
    "ttft": "t_first_token_ns - t_start_ns: when the first token was seen (records' "
            "ttft_source: 'stream', first streamed chunk with content or streamer step; "
            "'engine', the engine's own timestamp, vLLM's first_token_ts)",
    "decode_tokens_per_s": "engine decode rate, as llama-bench tg: sum(counts.decode_evals) / "
    "sum(stages_ns.decode) over successful requests, when every one reports both "
    "(decode_source=engine); else equal to stream_tokens_per_s (decode_source=stream). "
    "Compare's tokens_per_s judges the same quotient request by request (its median), "
    "from the engine counters where a request has them, else from the stream",
    "stream_tokens_per_s": "sum(decode_tokens) / sum(t_end_ns - t_first_token_ns) over "
    "successful requests with decode_tokens >= 1; decode_tokens = counts.decode_tokens (tokens "
    "sampled after the first, end-of-generation included) or else completion_tokens - 1",
    "prompt_tokens_per_s": "prompt-processing rate, as llama-bench pp: "
    "sum(counts.prefill_tokens) / sum(stages_ns.prefill) over successful requests reporting "
    "both (image tokens included: their embeddings are decoded like prompt tokens); compare's "
    "prompt_tokens_per_s is the median of the same quotient per request",
    "metrics": "figures declared outside the package (metrics.registry.register or the "
    "pytest_vlmbench.metrics entry points): each metric's statistic over the values its "
    "per_request function gives the successful measured requests; null with absent_reason "
    "when none gives one",
    "success_rate": "requests without error / measured requests",
    "failures": "a failed request is timed by the runner from the call to the error "
    "(t_start_ns/t_end_ns of its record): it is inside wall_s, the energy window and "
    "requests_per_s's denominator, counted in failed and success_rate, and its duration is "
    "summarised apart in latency_failed_s, never mixed into latency_s; a sample that failed "
    "before any request was sent (image preparation) has prepare_ns and no request times",
    "parse_rate": "valid outputs / measured requests (errors count as not valid); null when "
    "the task does not check its output",
    "requests_per_s": "successful requests / (max t_end_ns - min t_start_ns) of measured "
    "requests, failed ones included",
    "peak_rss_bytes": "process resident-set high-water mark (VmHWM) when the benchmark ended; "
    "includes every model loaded so far",
    "stages": "disjoint parts of the latency, each timed between synchronised points: "
    "template (chat template, tokenising, image preprocessing), image_encode (the projector), "
    "prefill (prompt and image-token evaluation), decode (single-token evaluations after the "
    "first sampled token), sample (sampler chain and grammar), detokenize, and on vLLM "
    "queue (the engine's queued -> scheduled); unattributed = "
    "latency - sum(stages) (streaming, stop checks); prepare (image preparation) is outside "
    "the latency. Invariants checked on every record: " + "; ".join(
        f"{name}: {text}" for name, text in {
            "stages_within_latency": "sum(stages) <= latency + tolerance",
            "prompt_within_ttft": "template + image_encode + prefill <= TTFT + tolerance",
            "stage_tolerance": "1 ms + 1% of the latency (clocks read at slightly different "
            "points)",
        }.items()),
    **serving.METHODS,
    **video.METHODS,
}

STAGE_TOLERANCE_NS = 1_000_000
STAGE_TOLERANCE_FRACTION = 0.01
_PROMPT_STAGES = ("template", "image_encode", "prefill")


def stage_violations(record: Record) -> list[str]:
    """What breaks the stage invariants in one successful record (empty when none)."""
    if record["error"] is not None or record["t_start_ns"] is None or record["t_end_ns"] is None:
        return []
    stages = record["stages_ns"]
    latency = record["t_end_ns"] - record["t_start_ns"]
    tolerance = STAGE_TOLERANCE_NS + STAGE_TOLERANCE_FRACTION * latency
    out = []
    total = sum(stages.values())
    if total > latency + tolerance:
        out.append(f"stages add up to {total / 1e6:.1f} ms, more than the latency "
                   f"{latency / 1e6:.1f} ms")
    if record["t_first_token_ns"] is not None:
        ttft = record["t_first_token_ns"] - record["t_start_ns"]
        prompt = sum(stages.get(name, 0) for name in _PROMPT_STAGES)
        if prompt > ttft + tolerance:
            out.append(f"template + image_encode + prefill = {prompt / 1e6:.1f} ms, more than "
                       f"the TTFT {ttft / 1e6:.1f} ms")
    return out


def stage_warning(records: Sequence[Record]) -> str | None:
    """One warning when a backend's stages break the invariants in any measured record."""
    bad = [(r, v) for r in records if r["phase"] == "measure" for v in stage_violations(r)]
    if not bad:
        return None
    first, why = bad[0]
    n = len({id(r) for r, _ in bad})
    return (f"stage timings of {n} request(s) break the invariants (first, "
            f"{first['sample_id']}: {why}); the stage figures of this backend overlap")


def _present(figure: Callable[[Record], float | None], records: Sequence[Record]) -> list[float]:
    """A per-request figure of each record that has it."""
    return [v for v in map(figure, records) if v is not None]


def _unattributed_s(record: Record) -> float | None:
    """What the stages leave of the latency (streaming, stop checks)."""
    span = per_request.span_ns(record)
    return None if span is None else (span[1] - span[0] - sum(record["stages_ns"].values())) / 1e9


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _statistic(values: Sequence[float], statistic: Statistic) -> float:
    return math.fsum(values) / len(values) if statistic == "mean" \
        else percentile(values, 50.0 if statistic == "median" else float(statistic[1:]))


def declared_metrics(ok: Sequence[Record]) -> dict[str, MetricFigure]:
    """Each registered metric with a computation of its own (registry.computed): its
    statistic over the successful requests that give a value, or absent with why."""
    out: dict[str, MetricFigure] = {}
    for metric in computed():
        if not metric.declared:
            continue  # a score: its figure is the task's `quality` (scoring/aggregate.py)
        assert metric.per_request is not None
        failed = None
        try:
            values = [v for v in map(metric.per_request, ok)
                      if v is not None and math.isfinite(v)]
        except Exception as exc:  # the plugin's bug must not cost the benchmark its entry
            values, failed = [], f"its per_request raised {type(exc).__name__}: {exc}"
        out[metric.name] = {
            "value": _statistic(values, metric.statistic) if values else None,
            "unit": metric.unit, "statistic": metric.statistic, "n": len(values),
            "absent_reason": None if values else failed or
            ("no successful request" if not ok else "no request gave a value"),
        }
    return out


def summarize(
    records: Sequence[Record], *, checks_output: bool, load_s: float | None,
    peak_rss: int | None, slo: Mapping[str, float] | None = None,
) -> Summary:
    measured = [r for r in records if r["phase"] == "measure"]
    ok = [r for r in measured if r["error"] is None]
    n = len(measured)
    latency = _present(per_request.latency_s, ok)
    ttft = _present(per_request.ttft_s, ok)
    streamed = [w for w in map(per_request.stream_decode, ok) if w is not None]
    engine = [per_request.engine_decode(r) for r in ok]
    engine_rate = per_request.ratio_of_sums([w for w in engine if w is not None]) \
        if ok and None not in engine else None
    stream_rate = per_request.ratio_of_sums(streamed)
    spans = [s for s in map(per_request.span_ns, measured) if s is not None]
    wall_s = (max(end for _, end in spans) - min(start for start, _ in spans)) / 1e9 \
        if spans else None
    outcomes: Counter[str] = Counter(r["parse"] for r in measured)
    stage_names = sorted({k for r in ok for k in r["stages_ns"]})
    stages = {
        name: distribution([r["stages_ns"][name] / 1e9 for r in ok if name in r["stages_ns"]])
        for name in stage_names
    }
    if stage_names:
        stages["unattributed"] = distribution(_present(_unattributed_s, ok))
    prompt = [w for w in map(per_request.prefill, ok) if w is not None]
    prompt_rate = per_request.ratio_of_sums(prompt) if len(prompt) == len(ok) else None
    failed_latency = _present(per_request.latency_s, [r for r in measured if r["error"]])
    prepared = [r["prepare_ns"] / 1e9 for r in measured if r["prepare_ns"] is not None]
    if prepared:
        stages["prepare"] = distribution(prepared)
    summary: Summary = {
        "requests": n,
        "succeeded": len(ok),
        "failed": n - len(ok),
        "success_rate": len(ok) / n if n else None,
        "latency_s": distribution(latency),
        "latency_failed_s": distribution(failed_latency),
        "ttft_s": distribution(ttft),
        "decode_tokens_per_s": engine_rate if engine_rate is not None else stream_rate,
        "decode_source": "engine" if engine_rate is not None else "stream",
        "stream_tokens_per_s": stream_rate,
        "prompt_tokens_per_s": prompt_rate,
        "stream_tokens_per_s_per_request": distribution(
            [per_request.per_second(w) for w in streamed]),
        "requests_per_s": len(ok) / wall_s if wall_s else None,
        "wall_s": wall_s,
        "parse": {o.value: outcomes.get(o.value, 0) for o in ParseOutcome
                  if o is not ParseOutcome.CONSTRAINT_IGNORED or outcomes.get(o.value)},
        "parse_rate": (outcomes.get(ParseOutcome.VALID.value, 0) / n) if (checks_output and n)
        else None,
        "prompt_tokens_mean": _mean(
            [r["prompt_tokens"] for r in ok if r["prompt_tokens"] is not None]
        ),
        "completion_tokens_mean": _mean(
            [r["completion_tokens"] for r in ok if r["completion_tokens"] is not None]
        ),
        "output_chars_mean": _mean([len(r["output"]) for r in ok if r["output"] is not None]),
        "stages_s": stages,
        "peak_rss_bytes": peak_rss,
        "load_s": load_s,
    }
    serving.add_figures(summary, records, measured, ok, wall_s, slo or {})
    declared = declared_metrics(ok)
    if declared:  # only when a metric is declared: the built-in document is unchanged
        summary["metrics"] = declared
    return summary


def warmup_warning(
    records: Sequence[Record], head: int = 2, factor: float = 1.5
) -> str | None:
    """Warn when the first measured requests are clearly slower than the rest."""
    lat = _present(per_request.latency_s,
                   [r for r in records if r["phase"] == "measure" and r["error"] is None])
    if len(lat) < head + 3:
        return None
    first = percentile(lat[:head], 50)
    rest = percentile(lat[head:], 50)
    if rest > 0 and first > factor * rest:
        return (
            f"warm-up may be too short: the first {head} measured requests took {first:.3f} s "
            f"(median) against {rest:.3f} s for the rest; raise --vlm-warmup"
        )
    return None
