"""The serving figures of a benchmark, as `vllm bench serve` defines them, and what a
load pattern or a server adds: TPOT, ITL, the client's lag, output tokens/s, goodput,
the cold request, the server's own process counters, retries, where token counts came
from. Like summary.py it reads no clock: each figure is a function of the records (and,
for `server_summary`, of two readings of the server's counters), so a reader can
recompute it; METHODS, written into every results document, says each.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_vlmbench.metrics import per_request
from pytest_vlmbench.metrics.stats import distribution
from pytest_vlmbench.results.models import ColdSummary, Record, ServerSummary, Summary

METHODS = {
    "tpot": "time per output token, as vllm bench serve: (E2EL - TTFT) / (completion_tokens "
    "- 1) per successful measured request with completion_tokens >= 2 (E2EL = latency); "
    "tpot_s is their distribution",
    "itl": "inter-token latency, as vllm bench serve: every gap between consecutive content "
    "chunks (chunks_ns) of the successful measured requests, pooled across requests into "
    "itl_s; present only when the backend reports chunk arrival times. A chunk counts when it "
    "carries content (vLLM's chat client also counts a role-only first chunk and the final "
    "finish-reason chunk). Compare's per-request itl sample is each request's mean gap, "
    "(last chunk - first chunk) / (chunks - 1), since compare needs one value per request",
    "client_lag": "t_start_ns - scheduled_ns of measured requests under a load pattern: the "
    "open loop's drawn send time (a max_concurrency cap's wait for a slot included), or the "
    "instant a closed-loop worker took the request; E2EL starts at t_start_ns, so this delay "
    "is outside it and reported here",
    "output_tokens_per_s": "sum(completion_tokens of successful measured requests) / wall_s "
    "(vllm bench serve's output token throughput, over our wall_s); null when a successful "
    "request has no token count",
    "goodput": "goodput_rps = successful measured requests meeting every per-request limit "
    "in goodput_slo / wall_s (vllm bench serve's request goodput). The per-request limits come "
    "from the benchmark's SLOs: every max_latency_* limits the request's E2EL, every max_ttft_* "
    "its TTFT, every max_tpot_* its TPOT (a request with fewer than 2 output tokens has TPOT 0, "
    "as in vLLM); several limits on one figure: the smallest. A request without a TTFT cannot "
    "meet a TTFT or TPOT limit. ITL, rate and proportion SLOs (tokens/s, parse and success "
    "rates, energy) describe a benchmark, not a request, and do not count. Null, with "
    "goodput_absent_reason, when the benchmark has no per-request SLO",
    "cold": "the cold request: the first request after the server loaded or swapped the model "
    "(the backend's cold_pending), sent before the warm-ups as phase cold; summary.cold gives "
    "its latency and TTFT (mean when several), never mixed into the measured figures",
    "server": "the managed server's own process tree (all its processes, from /proc) read just "
    "before and after the measured requests: rss_bytes (sum of VmRSS at the end), "
    "rss_peak_bytes (sum of VmHWM at the end: each process's peak since it started), cpu_s "
    "(user+system CPU time, children included, consumed during the measured requests), "
    "cpu_s_per_request (cpu_s / measured requests), processes (at the end)",
    "retries": "retries and rate_limited: attempts the client repeated after a retryable "
    "failure (connect error, 5xx, 429) and 429 answers received, summed over measured requests; "
    "their time is inside each request's latency",
    "tokens_source": "where completion_tokens came from, counted over successful measured "
    "requests: usage (the server's usage block), counted (the client counted content chunks: "
    "the server sent no usage), engine (the in-process engine)",
    "constraint_ignored": "a constrained request (JSON schema or GBNF grammar) to a server "
    "that ended on its own (finish_reason stop) with an output the check refuses: a sampler "
    "obeying the constraint cannot end there, so the server ignored it. With a schema any "
    "refused output counts; with a grammar only invalid JSON (a grammar may be looser than the "
    "schema). Counted in parse.constraint_ignored (a key present only when some were) and as "
    "not valid in parse_rate",
    "load": "a load pattern sends the measured requests sequentially, with N concurrent "
    "workers (closed loop) or at drawn times (open loop, vLLM's get_request: gamma gaps with "
    "shape = burstiness and mean 1/rate, rescaled so the last send is at n / rate); all "
    "measured requests are prepared before the level starts. Under overlapping requests "
    "energy is the meter's over the level's window (first start to last end) and no "
    "per-request energy is attributed (each request's span would hold the others' power)",
}


def _present(figure: Callable[[Record], float | None], records: Sequence[Record]) -> list[float]:
    return [v for v in map(figure, records) if v is not None]


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


GOODPUT_LIMITS: tuple[tuple[str, str], ...] = (
    ("max_latency_", "e2el_s"), ("max_ttft_", "ttft_s"), ("max_tpot_", "tpot_s"))
"""SLO name prefix -> the per-request figure it limits in goodput (METHODS["goodput"])."""


def goodput_limits(slo: Mapping[str, float]) -> dict[str, float]:
    """The per-request limits of a benchmark's SLOs: the smallest limit on each figure."""
    limits: dict[str, float] = {}
    for name, limit in slo.items():
        for prefix, figure in GOODPUT_LIMITS:
            if name.startswith(prefix):
                limits[figure] = min(limit, limits.get(figure, math.inf))
    return limits


def meets(record: Record, limits: Mapping[str, float]) -> bool:
    """Whether a successful request meets every per-request limit (goodput)."""
    for figure, limit in limits.items():
        if figure == "e2el_s":
            value = per_request.latency_s(record)
        elif figure == "ttft_s":
            value = per_request.ttft_s(record)
        elif per_request.ttft_s(record) is None:
            value = None  # no TTFT, no TPOT
        else:  # vLLM: fewer than 2 output tokens is TPOT 0 for goodput
            value = per_request.tpot_s(record) or 0.0
        if value is None or value > limit:
            return False
    return True


def cold_summary(records: Sequence[Record]) -> ColdSummary | None:
    cold = [r for r in records if r["phase"] == "cold"]
    if not cold:
        return None
    ok = [r for r in cold if r["error"] is None]
    return {"requests": len(cold), "failed": len(cold) - len(ok),
            "latency_s": _mean(_present(per_request.latency_s, ok)),
            "ttft_s": _mean(_present(per_request.ttft_s, ok))}


def add_figures(summary: Summary, records: Sequence[Record], measured: Sequence[Record],
                 ok: Sequence[Record], wall_s: float | None,
                 slo: Mapping[str, float]) -> None:
    """The serving figures (METHODS: tpot, itl, client_lag, output_tokens_per_s, goodput,
    cold, retries, tokens_source); those a backend or pattern cannot give are absent."""
    summary["tpot_s"] = distribution(_present(per_request.tpot_s, ok))
    if any("chunks_ns" in r for r in ok):
        summary["itl_s"] = distribution([g for r in ok for g in per_request.itl_gaps_s(r)])
    if any(r.get("scheduled_ns") is not None for r in measured):
        summary["client_lag_s"] = distribution(_present(per_request.client_lag_s, measured))
    tokens = [r["completion_tokens"] for r in ok]
    summary["output_tokens_per_s"] = (
        sum(t for t in tokens if t is not None) / wall_s
        if wall_s and ok and None not in tokens else None)
    limits = goodput_limits(slo)
    summary["goodput_slo"] = limits
    reason = None
    if not limits:
        reason = ("the benchmark has no per-request SLO (max_latency_*, max_ttft_* or "
                  "max_tpot_*)")
    elif not wall_s:
        reason = "no measured request was timed"
    summary["goodput_rps"] = (sum(meets(r, limits) for r in ok) / wall_s
                              if wall_s and not reason else None)
    summary["goodput_absent_reason"] = reason
    cold = cold_summary(records)
    if cold is not None:
        summary["cold"] = cold
    if any("retries" in r or "rate_limited" in r for r in measured):
        summary["retries"] = sum(r.get("retries", 0) for r in measured)
        summary["rate_limited"] = sum(r.get("rate_limited", 0) for r in measured)
    sources = Counter(source for r in ok if (source := r.get("tokens_source")) is not None)
    if sources:
        summary["tokens_source"] = dict(sorted(sources.items()))


def server_summary(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                   requests: int) -> ServerSummary:
    """summary.server from the server's counters (rss_bytes, rss_peak_bytes, cpu_s,
    processes) read just before and after the measured requests."""
    block: ServerSummary = {"rss_bytes": None, "rss_peak_bytes": None, "cpu_s": None,
                            "cpu_s_per_request": None, "processes": None,
                            "absent_reason": None}
    cpu = [_number(u.get("cpu_s")) if u is not None else None for u in (before, after)]
    if after is None or cpu[0] is None or cpu[1] is None:
        block["absent_reason"] = ("the server's process counters could not be read (a server "
                                  "on another machine, or one that exited)")
        return block
    used = cpu[1] - cpu[0]
    if used < 0 or not _whole(after.get("processes")):
        block["absent_reason"] = "the server exited during the benchmark"
        return block
    block["rss_bytes"] = _whole(after.get("rss_bytes"))
    block["rss_peak_bytes"] = _whole(after.get("rss_peak_bytes"))
    block["processes"] = _whole(after.get("processes"))
    block["cpu_s"] = used
    block["cpu_s_per_request"] = used / requests if requests else None
    return block


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _whole(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def overlapping(records: Sequence[Record]) -> int:
    """How many measured requests ran while another one was running."""
    spans = sorted((r["t_start_ns"], r["t_end_ns"]) for r in records
                   if r["phase"] == "measure" and r["t_start_ns"] is not None
                   and r["t_end_ns"] is not None)
    hit = [False] * len(spans)
    end_max, at = -1, -1
    for i, (start, end) in enumerate(spans):
        if start < end_max:
            hit[i] = hit[at] = True
        if end > end_max:
            end_max, at = end, i
    return sum(hit)


def drop_overlapping_energy(summary: Summary, records: Sequence[Record]) -> None:
    """Per-request energy (power/energy.py) is the meter's energy over each request's
    span, right when requests run one at a time; under overlap each span holds the
    others' power too and the per-request joules add up to more than the meter saw. So
    none is attributed then; energy_j stays the meter's over the level's window."""
    energy = summary.get("energy")
    n = overlapping(records)
    if not isinstance(energy, dict) or not n or not energy.get("per_request"):
        return
    energy["per_request"] = []
    energy["per_request_j"] = distribution([])
    energy.setdefault("warnings", []).append(
        f"{n} measured requests overlapped: no per-request energy is attributed (each "
        "request's span would count the others' power); energy_j is the meter's over the "
        "level's window")


def retry_warning(summary: Summary, records: Sequence[Record] = ()) -> str | None:
    """One line when measured requests were retried or rate-limited (never hidden), with
    the reason given most often (the records keep every one)."""
    retries, limited = summary.get("retries", 0), summary.get("rate_limited", 0)
    if not retries and not limited:
        return None
    reasons = Counter(reason for r in records if r["phase"] == "measure"
                      for reason in r.get("retry_reasons", ()))
    common = ""
    if reasons:
        reason, n = reasons.most_common(1)[0]
        common = f"; most often ({n}x): {reason}"
    return (f"{retries} retries and {limited} rate-limited (429) answers in the measured "
            f"requests; their time is inside the latency{common}")


def ignored_warning(summary: Summary, dialect: str | None) -> str | None:
    """One line when the server ignored the constraint of some measured requests."""
    ignored = summary["parse"].get("constraint_ignored", 0)
    if not ignored:
        return None
    return (f"the server ignored the constraint in {ignored} of {summary['requests']} "
            "requests" + (f" (dialect {dialect})" if dialect else "")
            + "; check [model.endpoint] dialect")
