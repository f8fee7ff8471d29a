"""What one request gives, defined once: its latency, TTFT and rates, which the
summary aggregates, compare samples and the pytest-benchmark bridge replays.

The times are in seconds, None for a request without them (one that failed before it
was sent). Each rate function takes a successful measured record and returns (tokens,
nanoseconds), or None when the request cannot give that rate. The summary's rate over a benchmark is
the ratio of the sums (as llama-bench computes pp and tg); compare judges the
per-request ratios (median by default). Both therefore count the same tokens over the
same time, request by request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

Window = tuple[int, int]
"""(tokens, nanoseconds) of one request."""


def span_ns(record: Mapping[str, Any]) -> tuple[int, int] | None:
    """(t_start_ns, t_end_ns): from the call to the last token or the error; None for a
    sample that failed before its request was sent."""
    start, end = record["t_start_ns"], record["t_end_ns"]
    return None if start is None or end is None else (int(start), int(end))


def latency_s(record: Mapping[str, Any]) -> float | None:
    """t_end_ns - t_start_ns, in seconds."""
    span = span_ns(record)
    return None if span is None else (span[1] - span[0]) / 1e9


def ttft_s(record: Mapping[str, Any]) -> float | None:
    """t_first_token_ns - t_start_ns: the first streamed chunk with content."""
    start, first = record["t_start_ns"], record["t_first_token_ns"]
    return None if start is None or first is None else (first - start) / 1e9


def decode_tokens(record: Mapping[str, Any]) -> int:
    """Tokens produced inside the stream's decode window (after the first token): the
    backend's `counts.decode_tokens` (an end-of-generation token included), else
    completion_tokens - 1."""
    counts = record["counts"]
    if "decode_tokens" in counts:
        return int(counts["decode_tokens"])
    return max(0, (record["completion_tokens"] or 0) - 1)


def engine_decode(record: Mapping[str, Any]) -> Window | None:
    """llama-bench's tg: single-token decode evaluations over the engine's decode time
    (`counts.decode_evals`, `stages_ns.decode`), when the backend reports both."""
    decode_ns = record["stages_ns"].get("decode")
    evals = record["counts"].get("decode_evals")
    if evals is None or decode_ns is None:
        return None
    return int(evals), int(decode_ns)


def stream_decode(record: Mapping[str, Any]) -> Window | None:
    """What an application sees: decode_tokens over t_end - t_first_token (sampling,
    grammar, detokenising and streaming included), when a token came after the first."""
    first, end = record["t_first_token_ns"], record["t_end_ns"]
    if first is None or end is None or end <= first:
        return None
    tokens = decode_tokens(record)
    return (tokens, end - first) if tokens >= 1 else None


def prefill(record: Mapping[str, Any]) -> Window | None:
    """llama-bench's pp: prompt tokens (image tokens included) over the prefill stage,
    when the backend reports both and the stage took time."""
    prefill_ns = record["stages_ns"].get("prefill")
    tokens = record["counts"].get("prefill_tokens")
    if not prefill_ns or tokens is None:
        return None
    return int(tokens), int(prefill_ns)


def per_second(window: Window) -> float:
    """A window's rate in tokens per second (its time is never zero: callers pass
    windows with time)."""
    tokens, ns = window
    return tokens / (ns * 1e-9)


def ratio_of_sums(windows: list[Window]) -> float | None:
    """sum(tokens) / sum(time) of the windows; None without time."""
    ns = sum(w[1] for w in windows)
    return sum(w[0] for w in windows) / (ns / 1e9) if ns > 0 else None


# -- serving figures, as `vllm bench serve` defines them ---------------------------------


def tpot_s(record: Mapping[str, Any]) -> float | None:
    """Time per output token after the first: (E2EL - TTFT) / (completion_tokens - 1),
    for a request with at least 2 output tokens and a TTFT (vLLM's TPOT)."""
    start, first, end = record["t_start_ns"], record["t_first_token_ns"], record["t_end_ns"]
    tokens = record["completion_tokens"]
    if start is None or first is None or end is None or tokens is None or tokens < 2:
        return None
    return float((end - first) / 1e9 / (tokens - 1))


def itl_gaps_s(record: Mapping[str, Any]) -> list[float]:
    """Inter-token latencies: the gaps between consecutive content chunks' arrivals
    (`chunks_ns`), in seconds; none without chunk times or with fewer than 2 chunks."""
    chunks = record.get("chunks_ns") or ()
    return [(b - a) / 1e9 for a, b in pairwise(chunks)]


def mean_itl_s(record: Mapping[str, Any]) -> float | None:
    """One request's mean inter-token latency, (last chunk - first chunk) / (chunks - 1):
    compare's per-request ITL sample (a run's ITL distribution pools every gap)."""
    chunks: Sequence[int] = record.get("chunks_ns") or ()
    return (chunks[-1] - chunks[0]) / 1e9 / (len(chunks) - 1) if len(chunks) >= 2 else None


def client_lag_s(record: Mapping[str, Any]) -> float | None:
    """t_start_ns - scheduled_ns: how late the client sent the request, against the time
    its load pattern meant (a concurrency cap's wait included); None without a schedule."""
    scheduled, start = record.get("scheduled_ns"), record["t_start_ns"]
    return None if scheduled is None or start is None else (start - scheduled) / 1e9
