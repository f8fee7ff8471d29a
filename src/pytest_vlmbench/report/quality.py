"""The scores in the terminal: one line per benchmark whose task has scorers, and one per
pair of models whose ratings were compared, so a run says what the models answered, not
only how fast (the results file holds every figure: summary.quality, agreement)."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_vlmbench.results.models import Agreement, BenchmarkEntry


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def quality_lines(benchmarks: Sequence[BenchmarkEntry]) -> list[str]:
    """`quality: <id>: count_accuracy 0.26 (chance 0.131, n=9), ...; distinct-2 0.41,
    repeated outputs 3; instagram mean 5.2, top share 0.4`."""
    lines = []
    for entry in benchmarks:
        quality = entry["summary"].get("quality")
        if quality is None:
            continue
        parts = []
        for name, figure in quality["scores"].items():
            if figure["kind"] == "value":
                continue  # a rating: its histogram below
            chance = "" if figure["chance"] is None else f"chance {_number(figure['chance'])}, "
            parts.append(f"{name} {_number(figure['mean'])} ({chance}n={figure['n']})")
        text = quality["text"]
        if text is not None and text["n"]:
            parts.append(f"distinct-2 {_number(text['distinct_2'])}, repeated outputs "
                         f"{text['repeated_outputs']}")
        for name, histogram in quality["histograms"].items():
            parts.append(f"{name} mean {_number(histogram['mean'])}, top share "
                         f"{_number(histogram['top_share'])}")
        if parts:
            lines.append(f"quality: {entry['id']}: " + "; ".join(parts))
    return lines


AGREEMENT_LINES = 8
"""At most this many agreement lines in the terminal (six models give 15 pairs per
rating); the results file holds them all."""


def agreement_lines(agreement: Sequence[Agreement]) -> list[str]:
    """`agreement: photo_score instagram: tiny-vlm q4_k_m vs gemma3-270m q4_k_m: Kendall's
    tau-b 0.12, top-1 0, top-3 0.67 (n=5)`, then how many more the results file holds."""
    lines = []
    for a in agreement[:AGREEMENT_LINES]:
        tops = ", ".join(f"top-{k} {_number(v)}" for k, v in a["top_k"].items())
        lines.append(
            f"agreement: {a['task']} {a['score']}: {a['a']['model']} {a['a']['precision']} vs "
            f"{a['b']['model']} {a['b']['precision']}: Kendall's tau-b "
            f"{_number(a['kendall_tau_b'])}"
            + (f" ({a['kendall_absent_reason']})" if a["kendall_absent_reason"] else "")
            + (f", {tops}" if tops else "")
            + f" (n={a['n']})")
    if len(agreement) > AGREEMENT_LINES:
        lines.append(f"agreement: {len(agreement) - AGREEMENT_LINES} more pairs in the "
                     f"results file (agreement)")
    return lines
