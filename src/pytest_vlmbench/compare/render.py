"""A comparison as a terminal table, a GitHub step summary (markdown) or JSON.

Power windows have rows of their own after the benchmarks', labelled
`<test> [window <name>]`, and are listed with the new and vanished benchmarks."""

from __future__ import annotations

import math
from typing import Any

from pytest_vlmbench.compare.core import (
    EXIT_NOTHING_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    Comparison,
)
from pytest_vlmbench.compare.rules import RULED
from pytest_vlmbench.compare.runs import Baseline, BenchmarkKey, Run
from pytest_vlmbench.compare.verdicts import VERDICTS, MetricResult
from pytest_vlmbench.compare.windows import WindowKey
from pytest_vlmbench.metrics import registry
from pytest_vlmbench.metrics.registry import Metric
from pytest_vlmbench.report.table import aligned, markdown


def _value(metric: Metric, v: float | None) -> str:
    if v is None:
        return "-"
    if metric.proportion:
        return f"{100 * v:.1f}%"
    return f"{v:.4g} {metric.unit}"


def _change(m: MetricResult) -> str:
    metric = RULED[m.metric]
    if m.baseline is None or m.current is None:
        return "-"
    if metric.proportion:
        return f"{100 * (m.current - m.baseline):+.1f} pp"
    if m.effect_kind == "difference":
        return f"{m.current - m.baseline:+.4g} {metric.unit}"
    pct = m.change_pct
    return "-" if pct is None else f"{pct:+.1f}%"


def _ci(m: MetricResult) -> str:
    if m.ci is None:
        return "-"
    lo, hi = m.ci
    metric = RULED[m.metric]
    if metric.proportion:
        return f"[{100 * lo:+.1f}, {100 * hi:+.1f}] pp"
    if m.effect_kind == "difference":
        return f"[{lo:+.4g}, {hi:+.4g}] {metric.unit}"
    return f"[{100 * (lo - 1):+.1f}%, {100 * (hi - 1):+.1f}%]"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<1e-6" if p < 1e-6 else f"{p:.2g}"


def _limit(m: MetricResult) -> str:
    return f"{m.rule.limit} gate" if m.gated else f"({m.rule.limit})"


def mde_text(m: MetricResult) -> str:
    """The minimum detectable change, signed in the worse direction: `+32.0%`."""
    if m.mde is None or not math.isfinite(m.mde):
        return "-"
    metric = RULED[m.metric]
    sign = "+" if metric.higher_is_worse else "-"
    if metric.proportion:
        return f"{sign}{100 * m.mde:.1f} pp"
    if m.effect_kind == "difference":
        return f"{sign}{m.mde:.4g} {metric.unit}"
    return f"{sign}{100 * m.mde:.1f}%"


def evidence(m: MetricResult) -> str:
    """How the verdict was reached: `5 runs, drift CV 8.1%, per-request p=0.003`."""
    if m.mode == "runs":
        if m.runs is None:
            return f"{m.k} runs"
        p = _p(m.request_p_value)
        extra = "" if m.request_p_value is None else \
            f", per-request p{p}" if p.startswith("<") else f", per-request p={p}"
        rl = m.runs
        low, high = rl.center * math.exp(-rl.half_width), rl.center * math.exp(rl.half_width)
        metric = registry.ruled().get(m.metric)
        unit = f" {metric.unit}" if metric is not None and metric.unit else ""
        return (f"{rl.k} runs, drift CV {100 * rl.cv:.1f}%, unchanged run "
                f"{low:.4g}..{high:.4g}{unit}{extra}")
    if m.mode == "one-run":
        return f"1 run, +{100 * m.allowance:g}% drift allowance"
    return f"per request, {m.k} runs pooled" if m.k > 1 else "per request"


def _verdict(m: MetricResult) -> str:
    if m.verdict == "regressed":
        return "REGRESSED" if m.gated else "regressed (not gated)"
    return m.verdict


_HEADERS = ("benchmark", "metric", "baseline", "current", "change", "CI", "p", "limit",
            "MDE", "evidence", "verdict", "note")
_VERDICT = _HEADERS.index("verdict")
_RIGHT = range(2, _HEADERS.index("MDE") + 1)  # right-aligned columns


def _rows(comparison: Comparison) -> list[tuple[str, ...]]:
    return [
        (p.key.label, m.metric, _value(RULED[m.metric], m.baseline),
         _value(RULED[m.metric], m.current), _change(m), _ci(m), _p(m.p_value), _limit(m),
         mde_text(m), evidence(m), _verdict(m), m.note or "")
        for p in comparison.judged for m in p.metrics
    ]


def _headers(comparison: Comparison) -> tuple[str, ...]:
    ci = f"{100 * comparison.settings.confidence:g}% CI"
    return tuple(ci if h == "CI" else h for h in _HEADERS)


def _describe_run(run: Run) -> str:
    return f"{run.run_id} ({run.path})"


SHOWN_RUN_IDS = 6
"""Baseline run ids named in a headline at most (a history gives many)."""


def _run_ids(baseline: Baseline, quote: str = "") -> str:
    ids = [f"{quote}{r.run_id}{quote}" for r in baseline.runs]
    if len(ids) > SHOWN_RUN_IDS:
        return f"{', '.join(ids[:SHOWN_RUN_IDS])} and {len(ids) - SHOWN_RUN_IDS} more"
    return ", ".join(ids)


def _describe(baseline: Baseline) -> str:
    if not baseline.runs:
        return f"no runs ({baseline.path})"
    if len(baseline.runs) == 1:
        return _describe_run(baseline.runs[0])
    return f"{len(baseline.runs)} runs, {_run_ids(baseline)} ({baseline.path})"


def _lists(comparison: Comparison) -> list[tuple[str, list[str]]]:
    new: list[BenchmarkKey | WindowKey] = [*comparison.new, *comparison.new_windows]
    gone: list[BenchmarkKey | WindowKey] = [*comparison.vanished, *comparison.vanished_windows]
    return [
        ("new (current only)", [k.id for k in new]),
        ("vanished (baseline only)", [k.id for k in gone]),
        ("not comparable", [f"{p.key.id}: {p.reason}" for p in comparison.not_comparable]),
        ("flagged", [f"{p.key.id}: {f}" for p in comparison.judged for f in p.flags]),
        ("notes", list(comparison.notes)),
    ]


def _method(comparison: Comparison) -> str:
    s = comparison.settings
    return (f"alpha {s.alpha:g}, at least {s.min_samples} samples a side, "
            f"{100 * s.confidence:g}% intervals (bootstrap: {s.resamples} resamples); timing "
            f"judged run by run with 2+ baseline runs, else beyond the limit "
            f"+{100 * s.drift_allowance:g}%")


def render_table(comparison: Comparison) -> list[str]:
    """Terminal lines: one row per benchmark x metric, gated regressions marked `!!`."""
    lines = [
        f"vlmbench compare: baseline {_describe(comparison.baseline)}",
        f"               -> current {_describe_run(comparison.current)}",
        _method(comparison),
    ]
    rows = _rows(comparison)
    if rows:
        marks = ["!!" if r[_VERDICT] == "REGRESSED" else "" for r in rows]
        lines.extend(aligned(_headers(comparison), rows, right=_RIGHT, marks=marks))
    for title, items in _lists(comparison):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  {item}" for item in items)
    lines.append(f"{comparison.headline} compared; {_tally(comparison)}")
    return lines


def _tally(comparison: Comparison) -> str:
    counts = ", ".join(f"{comparison.count(v)} {v}" for v in VERDICTS)
    new = len(comparison.new) + len(comparison.new_windows)
    vanished = len(comparison.vanished) + len(comparison.vanished_windows)
    return (f"metrics: {counts}; {new} new, {vanished} vanished, "
            f"{len(comparison.not_comparable)} not comparable")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparison: Comparison) -> str:
    """A GitHub step summary: headline, the table, then new/vanished/not comparable."""
    s = comparison.settings
    status = {EXIT_OK: "passed", EXIT_REGRESSION: "FAILED",
              EXIT_NOTHING_COMPARABLE: "nothing comparable"}[comparison.exit_status]
    base = comparison.baseline
    runs = _run_ids(base, "`") or f"(no runs in {base.path})"
    out = [
        f"### vlmbench compare: {comparison.headline} ({status})",
        "",
        f"Baseline {runs} -> current `{comparison.current.run_id}`. Regressed = beyond the "
        f"limit, p < {s.alpha:g} and the {100 * s.confidence:g}% interval excludes no change. "
        "Timing metrics with 2+ baseline runs: judged run by run against the runs' drift "
        f"(Student t prediction interval); with one: beyond the limit plus a "
        f"+{100 * s.drift_allowance:g}% drift allowance. Rates: Fisher's exact test per "
        f"request. At least {s.min_samples} samples a side; MDE = the smallest change the "
        "gate can call a regression.",
        "",
        f"{_tally(comparison)}",
        "",
    ]
    rows = []
    for row in _rows(comparison):
        cells = [_md(c) for c in row]
        cells[0] = f"`{cells[0]}`"
        if row[_VERDICT] == "REGRESSED":
            cells[_VERDICT] = "**:x: REGRESSED**"
        elif row[_VERDICT] == "improved":
            cells[_VERDICT] = ":white_check_mark: improved"
        rows.append(cells)
    if rows:
        out.extend(markdown(_headers(comparison), rows, right=_RIGHT))
        out.append("")
    for title, items in _lists(comparison):
        if items:
            out.append(f"**{title[0].upper()}{title[1:]}** ({len(items)}):")
            out.extend(f"- {_md(item)}" for item in items)
            out.append("")
    return "\n".join(out)


def _key_json(key: BenchmarkKey | WindowKey) -> dict[str, str]:
    return dict(key._asdict())


def _metric_json(m: MetricResult) -> dict[str, Any]:
    rl = m.runs
    return {
        "metric": m.metric, "verdict": m.verdict, "gated": m.gated,
        "rule": {"limit": m.rule.limit, "threshold": m.rule.threshold,
                 "relative": m.rule.relative, "text": m.rule.text},
        "baseline": m.baseline, "current": m.current,
        "n_baseline": m.n_baseline, "n_current": m.n_current,
        "effect": m.effect, "effect_kind": m.effect_kind,
        "ci": list(m.ci) if m.ci else None, "p_value": m.p_value, "test": m.test,
        "change_pct": m.change_pct, "note": m.note,
        "mode": m.mode, "baseline_runs": m.k, "mde": m.mde, "mde_text": mde_text(m),
        "drift_allowance": m.allowance, "request_p_value": m.request_p_value,
        "run_level": None if rl is None else {
            "k": rl.k, "values": list(rl.values), "center": rl.center, "log_sd": rl.log_sd,
            "cv": rl.cv, "df": rl.df, "t": rl.t if math.isfinite(rl.t) else None,
            "p_value": rl.p_value, "ratio": rl.ratio, "interval": list(rl.interval),
            "half_width": rl.half_width, "detectable": rl.detectable,
        },
    }


def _run_json(r: Run) -> dict[str, Any]:
    return {"run_id": r.run_id, "path": str(r.path), "started_at": r.doc["started_at"],
            "status": r.doc["status"], "commit": r.commit}


def to_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as plain JSON data (for tools and artifacts)."""
    s = comparison.settings
    base = comparison.baseline
    return {
        "baseline": {**(_run_json(base.runs[0]) if base.runs else
                        {"run_id": None, "started_at": None, "status": None, "commit": None}),
                     "path": str(base.path),
                     "runs": [_run_json(r) for r in base.runs], "max_runs": base.max_runs},
        "current": _run_json(comparison.current),
        "settings": {"alpha": s.alpha, "min_samples": s.min_samples,
                     "resamples": s.resamples, "confidence": s.confidence, "seed": s.seed,
                     "drift_allowance": s.drift_allowance},
        "headline": comparison.headline,
        "exit_status": comparison.exit_status,
        "gated": [{"benchmark": p.key.id, "metric": m.metric} for p, m in comparison.gated],
        "pairs": [
            {"benchmark": _key_json(p.key), "flags": p.flags,
             "baseline_runs": [i.run_id for i in p.baselines],
             "metrics": [_metric_json(m) for m in p.metrics]}
            for p in comparison.pairs
        ],
        "not_comparable": [{"benchmark": _key_json(p.key), "reason": p.reason}
                           for p in comparison.not_comparable],
        "new": [_key_json(k) for k in comparison.new],
        "vanished": [_key_json(k) for k in comparison.vanished],
        "windows": [
            {"window": _key_json(w.key), "label": w.key.label, "flags": w.flags,
             "baseline_runs": [r.run_id for r in w.baselines],
             "metrics": [_metric_json(m) for m in w.metrics]}
            for w in comparison.windows
        ],
        "new_windows": [_key_json(k) for k in comparison.new_windows],
        "vanished_windows": [_key_json(k) for k in comparison.vanished_windows],
        "notes": comparison.notes,
    }
