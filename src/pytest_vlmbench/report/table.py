"""The end-of-session table: one row per benchmark, from the results entries.

`ok/n` is successful over measured requests: the latency, TTFT and token columns are
computed over the successful ones only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


HEADERS = ("benchmark", "model", "precision", "ok/n", "p50 s", "p95 s", "TTFT p50 s",
           "pp tok/s", "decode tok/s", "stream tok/s", "MB/token", "parse", "success",
           "J/token", "tok/s/W", "% roofline", "SLO")


def _mb(value: Any) -> str:
    return "-" if not value else f"{value / 1e6:.0f}"


def _get(summary: dict[str, Any], block: str, key: str) -> Any:
    inner = summary.get(block)
    return inner.get(key) if isinstance(inner, dict) else None


def rows(benchmarks: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for b in benchmarks:
        s = b["summary"]
        slo = "-" if b.get("slo_passed") is None else ("pass" if b["slo_passed"] else "FAIL")
        name = b["id"].split("::")[-1]
        out.append((
            name if b["status"] == "complete" else f"{name} ({b['status']})",
            b["model"], b["precision"], f"{s['succeeded']}/{s['requests']}",
            _num(s["latency_s"]["median"], ".3f"), _num(s["latency_s"]["p95"], ".3f"),
            _num(s["ttft_s"]["median"], ".3f"), _num(s.get("prompt_tokens_per_s"), ".0f"),
            _num(s["decode_tokens_per_s"], ".1f"), _num(s["stream_tokens_per_s"], ".1f"),
            _mb(_get(s, "roofline", "bytes_per_token")),
            _pct(s["parse_rate"]), _pct(s["success_rate"]),
            _num(_get(s, "energy", "energy_per_token_j"), ".4g"),
            _num(_get(s, "energy", "tokens_per_s_per_w"), ".3g"),
            _num(_get(s, "roofline", "percent_of_bound"), ".0f"), slo,
        ))
    return out


def render(benchmarks: Sequence[dict[str, Any]]) -> list[str]:
    table = [HEADERS, *rows(benchmarks)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
