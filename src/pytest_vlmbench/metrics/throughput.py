"""Offline throughput: figures of a batch level, whose sample unit is the batch.

`vllm bench throughput` submits every request at once and reports requests/s and output
tokens/s over the whole run; MLPerf's offline scenario does the same. We submit the
measured requests in batches of N (run/load.py, pattern "batch") and measure each batch:

- **wall** = perf_counter_ns after `generate_batch` returned - before it was called (the
  runner reads both; the records of a batch carry them as `batch_ns`);
- **requests/s** = requests of the batch that succeeded / wall;
- **output tokens/s** = completion tokens of those requests / wall (absent for a batch
  where a successful request has no token count);

and summarise them over the repeated batches (median, mean, spread), so a run has a
sample for compare and the gate to judge, like per-request latency in latency mode. A
failed request stays in its batch's wall time and out of its numerators; the figures of a
batch where every request failed are 0 requests/s (it did take that time). A batch smaller
than the level's size (a run whose samples were not a multiple of it) is measured but kept
out of the statistics, and the summary counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_vlmbench.metrics.stats import distribution
from pytest_vlmbench.results.models import BatchFigure, Record, ThroughputSummary

METHOD = ("per batch of N requests submitted together (generate_batch): successful requests "
          "/ wall time and their completion tokens / wall time, wall = perf_counter_ns around "
          "the engine call; statistics over the full batches")


def batch_figures(records: Sequence[Record]) -> list[BatchFigure]:
    """Each batch's figures, in batch order, from the measured records that carry one."""
    groups: dict[int, list[Record]] = {}
    for record in records:
        index = record.get("batch")
        if record["phase"] == "measure" and isinstance(index, int):
            groups.setdefault(index, []).append(record)
    figures: list[BatchFigure] = []
    for index in sorted(groups):
        group = groups[index]
        start, end = group[0]["batch_ns"]
        wall_s = (end - start) / 1e9
        ok = [r for r in group if r["error"] is None]
        tokens = [r["completion_tokens"] for r in ok]
        counted = all(isinstance(t, int) for t in tokens)
        figures.append({
            "batch": index, "requests": len(group), "succeeded": len(ok), "wall_s": wall_s,
            "requests_per_s": len(ok) / wall_s if wall_s > 0 else 0.0,
            "output_tokens_per_s": (sum(t for t in tokens if t is not None) / wall_s
                                    if counted and wall_s > 0 else None),
        })
    return figures


def throughput(records: Sequence[Record], batch_size: int) -> ThroughputSummary:
    """summary.throughput: the full batches' figures and their statistics."""
    figures = batch_figures(records)
    full = [f for f in figures if f["requests"] == batch_size]
    tokens = [f["output_tokens_per_s"] for f in full]
    return {
        "batch_size": batch_size,
        "batches": len(full),
        "partial_batches": len(figures) - len(full),
        "requests_per_s": distribution([f["requests_per_s"] for f in full]),
        "output_tokens_per_s": distribution([t for t in tokens if t is not None]),
        "per_batch": figures,
        "method": METHOD,
    }


def batch_samples(summary: Any) -> dict[str, list[float]]:
    """Compare's samples of a batch level: one value per full batch (empty otherwise)."""
    block = summary.get("throughput") if isinstance(summary, dict) else None
    if not isinstance(block, dict):
        return {}
    size = block.get("batch_size")
    full = [f for f in block.get("per_batch", []) if f.get("requests") == size]
    return {
        "batch_requests_per_s": [float(f["requests_per_s"]) for f in full],
        "batch_output_tokens_per_s": [float(f["output_tokens_per_s"]) for f in full
                                      if f.get("output_tokens_per_s") is not None],
    }
