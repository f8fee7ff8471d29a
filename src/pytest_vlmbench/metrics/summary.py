"""A benchmark's summary, computed only from its measured records.

Nothing here reads a clock: every figure is a function of the records on disk, so a
reader can recompute it (tests do). Conventions, also written into each results
document under `methods`:
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
  the latency is `unattributed`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pytest_vlmbench.metrics.stats import PERCENTILE_METHOD, STDEV_METHOD, distribution, percentile
from pytest_vlmbench.tasks.structured import ParseOutcome

METHODS = {
    "percentile": PERCENTILE_METHOD,
    "stdev": STDEV_METHOD,
    "latency": "t_end_ns - t_start_ns of successful measured requests; warm-up excluded; "
    "image preparation (prepare_ns) is outside it",
    "ttft": "t_first_token_ns - t_start_ns: first streamed chunk with content",
    "decode_tokens_per_s": "engine decode rate, as llama-bench tg: sum(counts.decode_evals) / "
    "sum(stages_ns.decode) over successful requests, when every one reports both "
    "(decode_source=engine); else equal to stream_tokens_per_s (decode_source=stream)",
    "stream_tokens_per_s": "sum(decode_tokens) / sum(t_end_ns - t_first_token_ns) over "
    "successful requests with decode_tokens >= 1; decode_tokens = counts.decode_tokens (tokens "
    "sampled after the first, end-of-generation included) or else completion_tokens - 1",
    "prompt_tokens_per_s": "prompt-processing rate, as llama-bench pp: "
    "sum(counts.prefill_tokens) / sum(stages_ns.prefill) over successful requests reporting "
    "both (image tokens included: their embeddings are decoded like prompt tokens)",
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
    "first sampled token), sample (sampler chain and grammar), detokenize; unattributed = "
    "latency - sum(stages) (streaming, stop checks); prepare (image preparation) is outside "
    "the latency. Invariants checked on every record: " + "; ".join(
        f"{name}: {text}" for name, text in {
            "stages_within_latency": "sum(stages) <= latency + tolerance",
            "prompt_within_ttft": "template + image_encode + prefill <= TTFT + tolerance",
            "stage_tolerance": "1 ms + 1% of the latency (clocks read at slightly different "
            "points)",
        }.items()),
}

STAGE_TOLERANCE_NS = 1_000_000
STAGE_TOLERANCE_FRACTION = 0.01
_PROMPT_STAGES = ("template", "image_encode", "prefill")


def stage_violations(record: dict[str, Any]) -> list[str]:
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


def stage_warning(records: Sequence[dict[str, Any]]) -> str | None:
    """One warning when a backend's stages break the invariants in any measured record."""
    bad = [(r, v) for r in records if r["phase"] == "measure" for v in stage_violations(r)]
    if not bad:
        return None
    first, why = bad[0]
    n = len({id(r) for r, _ in bad})
    return (f"stage timings of {n} request(s) break the invariants (first, "
            f"{first['sample_id']}: {why}); the stage figures of this backend overlap")


def _decode_tokens(record: dict[str, Any]) -> int:
    """Tokens produced inside the decode window (after the first token)."""
    if "decode_tokens" in record["counts"]:
        return int(record["counts"]["decode_tokens"])
    return max(0, (record["completion_tokens"] or 0) - 1)


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def summarize(
    records: Sequence[dict[str, Any]], *, checks_output: bool, load_s: float | None,
    peak_rss: int | None,
) -> dict[str, Any]:
    measured = [r for r in records if r["phase"] == "measure"]
    ok = [r for r in measured if r["error"] is None]
    n = len(measured)
    latency = [(r["t_end_ns"] - r["t_start_ns"]) / 1e9 for r in ok]
    ttft = [
        (r["t_first_token_ns"] - r["t_start_ns"]) / 1e9
        for r in ok if r["t_first_token_ns"] is not None
    ]
    decoding = [
        r for r in ok
        if r["t_first_token_ns"] is not None and _decode_tokens(r) >= 1
        and r["t_end_ns"] > r["t_first_token_ns"]
    ]
    per_request_rate = [
        _decode_tokens(r) / ((r["t_end_ns"] - r["t_first_token_ns"]) / 1e9) for r in decoding
    ]
    decode_ns = sum(r["t_end_ns"] - r["t_first_token_ns"] for r in decoding)
    decode_tokens = sum(_decode_tokens(r) for r in decoding)
    stream_rate = decode_tokens / (decode_ns / 1e9) if decode_ns > 0 else None
    engine = ok and all(
        "decode" in r["stages_ns"] and "decode_evals" in r["counts"] for r in ok
    )
    engine_ns = sum(r["stages_ns"]["decode"] for r in ok) if engine else 0
    engine_rate = (
        sum(r["counts"]["decode_evals"] for r in ok) / (engine_ns / 1e9) if engine_ns else None
    )
    timed = [r for r in measured if r["t_start_ns"] is not None and r["t_end_ns"] is not None]
    wall_s = (
        (max(r["t_end_ns"] for r in timed) - min(r["t_start_ns"] for r in timed)) / 1e9
        if timed else None
    )
    outcomes = Counter(r["parse"] for r in measured)
    stage_names = sorted({k for r in ok for k in r["stages_ns"]})
    stages = {
        name: distribution([r["stages_ns"][name] / 1e9 for r in ok if name in r["stages_ns"]])
        for name in stage_names
    }
    if stage_names:
        stages["unattributed"] = distribution([
            (r["t_end_ns"] - r["t_start_ns"] - sum(r["stages_ns"].values())) / 1e9 for r in ok
        ])
    prompt = [r for r in ok if r["stages_ns"].get("prefill") and "prefill_tokens" in r["counts"]]
    prompt_ns = sum(r["stages_ns"]["prefill"] for r in prompt)
    prompt_rate = (
        sum(r["counts"]["prefill_tokens"] for r in prompt) / (prompt_ns / 1e9)
        if prompt and len(prompt) == len(ok) and prompt_ns > 0 else None
    )
    failed_latency = [
        (r["t_end_ns"] - r["t_start_ns"]) / 1e9 for r in measured
        if r["error"] is not None and r["t_start_ns"] is not None and r["t_end_ns"] is not None
    ]
    prepared = [r["prepare_ns"] / 1e9 for r in measured if r["prepare_ns"] is not None]
    if prepared:
        stages["prepare"] = distribution(prepared)
    return {
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
        "stream_tokens_per_s_per_request": distribution(per_request_rate),
        "requests_per_s": len(ok) / wall_s if wall_s else None,
        "wall_s": wall_s,
        "parse": {o.value: outcomes.get(o.value, 0) for o in ParseOutcome},
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


def warmup_warning(
    records: Sequence[dict[str, Any]], head: int = 2, factor: float = 1.5
) -> str | None:
    """Warn when the first measured requests are clearly slower than the rest."""
    lat = [
        (r["t_end_ns"] - r["t_start_ns"]) / 1e9
        for r in records if r["phase"] == "measure" and r["error"] is None
    ]
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
