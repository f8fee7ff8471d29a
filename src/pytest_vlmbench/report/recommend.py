"""Recommendations by use case and Pareto fronts, derived from the numbers by stated rules.

A recommendation answers one question ("which configuration is fastest?") for one
workload (task, dataset, load level): only configurations that did the same work
compete, and only complete benchmarks. Each rule says in words what it ranks, in which
direction and which configurations may compete (`Rule.statement`), so a reader can check
every pick against the tables. Values equal at 3 significant figures (what the tables
show, `figures.same`) are ties, and every tied configuration is named. A configuration
without the figure a rule ranks is named as not ranked, with the reason the summary
gives (no energy meter, a free-text task); never ranked as zero.

Pareto fronts show the trade-offs no single rule does: latency against each quality
score and against energy per token. A point is on the front when no other configuration
is at least as good on both figures and better on one (at 3 significant figures, so
identical points are all on the front).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_vlmbench.metrics import registry
from pytest_vlmbench.report import figures
from pytest_vlmbench.report.figures import Better, Figure
from pytest_vlmbench.report.model import Block, Bullets, Cell, Paragraph, Section, Table
from pytest_vlmbench.report.sources import Config

Workload = tuple[str, str, str]
"""(task, dataset name, load level or "seq"): `Config.workload`."""
Direction = Literal["lower", "higher"]

RELIABLE = 0.95
"""Success and parse rate a configuration needs to compete for the lowest latency: a
configuration that fails fast is not fast."""
CONSISTENT_MIN_REQUESTS = 5
"""Successful requests a latency CV needs to say anything about consistency."""
DIGITS = 3
"""Significant figures at which two values are equal (a tie), as the tables show them."""

Eligibility = Callable[[Config], str | None]
"""Why a configuration may not compete under a rule; None when it may."""
Applies = Callable[[Sequence[Config]], str | None]
"""Why a rule does not apply to a workload at all; None when it does."""


def _anyone(config: Config) -> str | None:
    return None


def _always(configs: Sequence[Config]) -> str | None:
    return None


@dataclass(frozen=True)
class Rule:
    """One use case's rule: rank `figure` (a figure name of figures.by_name(), or a
    function choosing it from the workload's configurations) in `direction` (None: the
    figure's own) among the eligible configurations; `then` names figures that break
    ties, in order, each in its own direction."""

    id: str
    use_case: str
    statement: str
    figure: str | Callable[[Sequence[Config]], Figure]
    direction: Better = None
    eligibility: Eligibility = _anyone
    then: tuple[str, ...] = ()
    applies: Applies = _always

    def figure_for(self, configs: Sequence[Config]) -> Figure:
        if isinstance(self.figure, str):
            return figures.by_name()[self.figure]
        return self.figure(configs)

    def direction_for(self, figure: Figure) -> Direction:
        better = self.direction or figure.better
        if better is None:
            raise ValueError(f"rule {self.id}: figure {figure.name} has no better direction")
        return better


@dataclass
class Recommendation:
    """A rule's answer for one workload. `picks` are tied at 3 significant figures (empty:
    no recommendation, `note` says why); `margin` compares them with the runner-up;
    `not_ranked` names each configuration left out and why."""

    rule: Rule
    workload: Workload
    figure: Figure | None
    picks: list[Config]
    value: str
    margin: str
    runner_up: list[Config] = field(default_factory=list)
    not_ranked: list[tuple[Config, str]] = field(default_factory=list)
    note: str | None = None


@dataclass
class ParetoFront:
    """The configurations of one workload on the front of `x` against `y`; each dominated
    one with the front configurations that dominate it; each excluded one with why."""

    workload: Workload
    x: Figure
    y: Figure
    front: list[Config]
    dominated: list[tuple[Config, list[Config]]]
    excluded: list[tuple[Config, str]]
    values: dict[str, tuple[float, float]]
    """Config key -> (x, y) for every configuration on or behind the front."""


# -- Why a figure is absent -------------------------------------------------------------

def _power(config: Config) -> Mapping[str, Any]:
    power = config.source.header_of(config.run_id).get("power")
    return power if isinstance(power, Mapping) else {}


def absent_reason(config: Config, figure: Figure) -> str:
    """Why `config` has no value of `figure`, from its summary and its run's header."""
    summary = config.summary
    head = figure.path[0]
    if head == "energy":
        energy = summary.get("energy")
        if not isinstance(energy, Mapping):
            reason = _power(config).get("absent_reason")
            return f"no energy reading: {reason}" if reason else "no energy reading"
        warnings = [str(w) for w in energy.get("warnings") or []]
        return f"{figure.source} is absent" + (f" ({'; '.join(warnings)})" if warnings else "")
    if figure.name == "parse_rate":
        return "free-text task: its output is not parse-checked"
    if head == "quality":
        quality = summary.get("quality")
        if not isinstance(quality, Mapping) or figure.path[2] not in (quality.get("scores")
                                                                       or {}):
            return f"not scored by {figure.header}"
        return f"no request scored by {figure.header}"
    if not summary.get("succeeded"):
        return "no successful request"
    if figure.name == "latency_cv":
        return "fewer than 2 successful requests"
    if head == "video":
        reason = (summary.get("video") or {}).get("absent_reason")
        return str(reason) if reason else f"{figure.source} is absent"
    return f"{figure.source} is absent"


# -- The rules --------------------------------------------------------------------------

def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def _reliable(config: Config) -> str | None:
    s = config.summary
    success = s.get("success_rate")
    if success is None:
        return "no measured request"
    if success < RELIABLE:
        return (f"unreliable: success rate {_pct(success)} is below {_pct(RELIABLE)} "
                "(failing fast is not fast)")
    parse = s.get("parse_rate")
    if parse is not None and parse < RELIABLE:
        return (f"unreliable: parse rate {_pct(parse)} is below {_pct(RELIABLE)} "
                "(failing fast is not fast)")
    return None


def _consistent(config: Config) -> str | None:
    n = int(config.summary.get("succeeded") or 0)
    if n < CONSISTENT_MIN_REQUESTS:
        return (f"{n} successful request{'s' if n != 1 else ''}: a latency CV needs at "
                f"least {CONSISTENT_MIN_REQUESTS}")
    return None


def _throughput(configs: Sequence[Config]) -> Figure:
    by = figures.by_name()
    level = configs[0].level if configs else None
    return by["decode_tokens_per_s"] if level is None else by["output_tokens_per_s"]


def quality_figure(configs: Sequence[Config]) -> Figure | None:
    """The workload's first quality score with a better direction (kind accuracy or
    error), in the order the summaries list them; None when it has none."""
    summaries = [c.summary for c in configs]
    for fig in figures.score_figures(summaries):
        kinds = {((c.summary.get("quality") or {}).get("scores") or {}).get(
            fig.path[2], {}).get("kind") for c in configs}
        if kinds & {"accuracy", "error"}:
            return fig
    return None


def _slo_figure(configs: Sequence[Config]) -> Figure:
    return quality_figure(configs) or figures.by_name()["p50_s"]


def check_slos(slos: Mapping[str, float]) -> dict[str, float]:
    """The SLO limits as floats; an unknown name or a non-number is a one-line
    ValueError listing the valid names (the CLI turns it into a usage error)."""
    known = registry.slos()
    out: dict[str, float] = {}
    for name, limit in slos.items():
        if name not in known:
            raise ValueError(f"unknown SLO {name!r}; valid SLO names: {', '.join(sorted(known))}")
        if isinstance(limit, bool) or not isinstance(limit, int | float) \
                or not math.isfinite(limit):
            raise ValueError(f"SLO {name!r} needs a finite number, got {limit!r}")
        out[name] = float(limit)
    return out


def _slo_text(slos: Mapping[str, float]) -> str:
    known = registry.slos()
    return ", ".join(f"{name} {known[name].op} {limit:g}" for name, limit in slos.items())


def _meets(slos: Mapping[str, float]) -> Eligibility:
    known = registry.slos()

    def eligible(config: Config) -> str | None:
        misses = []
        for name, limit in slos.items():
            metric = known[name]
            value = metric.value(config.summary)
            if value is None:
                misses.append(f"{name} not measured")
            elif not (value <= limit if metric.op == "<=" else value >= limit):
                bad = ">" if metric.op == "<=" else "<"
                misses.append(f"{name} = {value:.4g} {bad} {limit:g}")
        return f"misses the SLO: {'; '.join(misses)}" if misses else None

    return eligible


def _recorded_slo(config: Config) -> str | None:
    passed = config.entry.get("slo_passed")
    if passed is True:
        return None
    if passed is False:
        misses = [f"{v['metric']} = " + ("not measured" if v["measured"] is None
                                          else f"{v['measured']:.4g}")
                  + f" against {v['op']} {v['limit']:g}"
                  for v in config.entry["slo"] if not v["passed"]]
        return "missed its recorded SLOs" + (f": {'; '.join(misses)}" if misses else "")
    return "no SLO recorded"


def _any_recorded(configs: Sequence[Config]) -> str | None:
    if any(c.entry["slo"] or c.entry.get("slo_passed") is not None for c in configs):
        return None
    return "no SLO given: not applied (pass SLO limits, or run with vlm_slo)"


def rules(slos: Mapping[str, float] | None = None) -> list[Rule]:
    """The use cases' rules, in the order the report lists them. `slos` ({SLO name:
    limit}, registry names such as max_latency_p95_s) are the limits of the SLO rule;
    without them it uses each benchmark's recorded verdict (`slo_passed`)."""
    limits = None if slos is None else check_slos(slos)
    reliable = (f"success rate >= {_pct(RELIABLE)} and, where the task checks its output, "
                f"parse rate >= {_pct(RELIABLE)}")
    then = ("then the highest mean of the workload's first accuracy or error score "
            "(summary.quality.scores) if it has one, else the lowest median latency")
    if limits:
        slo_rule = Rule(
            "slo", "best under the SLO",
            f"configurations meeting every limit of the SLO ({_slo_text(limits)}), {then}",
            _slo_figure, None, _meets(limits))
    else:
        slo_rule = Rule(
            "slo", "best under the SLO",
            "configurations whose benchmark met every SLO it recorded (slo_passed), "
            f"{then}; no SLO given and none recorded: not applied",
            _slo_figure, None, _recorded_slo, applies=_any_recorded)
    return [
        Rule("latency", "lowest latency",
             f"lowest median (p50) request latency among reliable configurations: {reliable}",
             "p50_s", "lower", _reliable),
        Rule("throughput", "highest throughput",
             "highest decode rate (decode tokens/s, summary.decode_tokens_per_s); at a load "
             "level, highest output tokens/s over the measured wall time "
             "(summary.output_tokens_per_s)",
             _throughput, "higher"),
        Rule("energy", "most energy-efficient",
             "lowest energy per generated token (J/token, summary.energy.energy_per_token_j)",
             "energy_per_token_j", "lower"),
        Rule("consistency", "most consistent",
             "lowest coefficient of variation of the successful requests' latency (stdev / "
             f"mean), among configurations with at least {CONSISTENT_MIN_REQUESTS} successful "
             "requests", "latency_cv", "lower", _consistent),
        Rule("detail", "most detailed",
             "highest mean completion tokens of the successful requests "
             "(summary.completion_tokens_mean; each model's own tokenizer counts them, and "
             "longer is more detailed only where the answers stay on task)",
             "output_tokens_mean", "higher"),
        Rule("reliability", "most reliable",
             "highest success rate; a tie broken by the higher parse rate (where the task "
             "checks its output), then the lower p95 latency",
             "success_rate", "higher", then=("parse_rate", "p95_s")),
        slo_rule,
    ]


# -- Ranking ----------------------------------------------------------------------------

def _round(v: float) -> float:
    """The value at DIGITS significant figures: equal rounded values are a tie
    (`figures.same`); rounding keeps order, so ranking on it is consistent."""
    return float(f"{v:.{DIGITS}g}")


def _key(v: float, direction: Direction) -> float:
    """Lower is better."""
    return _round(v) if direction == "lower" else -_round(v)


def _labels(configs: Sequence[Config]) -> str:
    return ", ".join(c.label or c.key for c in configs)


def _proportion(fig: Figure) -> bool:
    metric = registry.by_name().get(fig.metric or "")
    return metric is not None and metric.proportion


def _with_unit(fig: Figure, v: float) -> str:
    unit = "" if _proportion(fig) or not fig.unit else f" {fig.unit}"
    return fig.cell(v) + unit


def margin_text(fig: Figure, direction: Direction, best: float, nxt: float,
                next_configs: Sequence[Config]) -> str:
    """How far the pick is ahead of the runner-up: percentage points for a rate, a ratio
    otherwise ("1.42x faster than next, B"), the two values where a ratio means nothing."""
    names = _labels(next_configs)
    if _proportion(fig):
        points = 100 * abs(best - nxt)
        return f"{points:.1f} points {'higher' if direction == 'higher' else 'lower'} " \
               f"{fig.header} than next, {names}"
    if best <= 0 or nxt <= 0:
        return f"{_with_unit(fig, best)} against {_with_unit(fig, nxt)} of next, {names}"
    ratio = nxt / best if direction == "lower" else best / nxt
    word = ("faster" if fig.unit == "s" and direction == "lower"
            else f"{'lower' if direction == 'lower' else 'higher'} {fig.header}")
    amount = f"{ratio:.2f}x" if ratio >= 1.1 else f"{100 * (ratio - 1):.2g}%"
    return f"{amount} {word} than next, {names}"


def _one_workload(configs: Sequence[Config]) -> Workload:
    found = {c.workload for c in configs}
    if len(found) != 1:
        raise ValueError("configurations of different workloads never compete: "
                         + "; ".join(sorted(" ".join(w) for w in found)) if found
                         else "no configurations")
    return found.pop()


def recommend(configs: Sequence[Config], rule: Rule) -> Recommendation:
    """The rule's answer among one workload's configurations (a ValueError when they
    span several workloads: those did different work)."""
    workload = _one_workload(configs)
    not_ranked: list[tuple[Config, str]] = []
    complete = []
    for c in configs:
        if c.complete:
            complete.append(c)
        else:
            not_ranked.append((c, f"status {c.entry['status']}: only complete benchmarks "
                                  "compete"))
    if not complete:
        return Recommendation(rule, workload, None, [], "-", "-", [], not_ranked,
                              "no recommendation: no complete benchmark in this workload")
    off = rule.applies(complete)
    if off is not None:
        return Recommendation(rule, workload, None, [], "-", "-", [], not_ranked, off)
    fig = rule.figure_for(complete)
    direction = rule.direction_for(fig)
    with_figure: list[tuple[Config, float]] = []
    missing: list[tuple[Config, str]] = []
    for c in complete:
        v = fig.value(c.summary)
        if v is None:
            missing.append((c, absent_reason(c, fig)))
        else:
            with_figure.append((c, v))
    not_ranked += [(c, f"no figure: {why}") for c, why in missing]
    if not with_figure:
        reasons = sorted({why for _, why in missing})
        reason = reasons[0] if len(reasons) == 1 else "; ".join(
            f"{_labels([c for c, w in missing if w == r])}: {r}" for r in reasons)
        return Recommendation(rule, workload, fig, [], "-", "-", [], not_ranked,
                              f"no recommendation: no configuration has {fig.header} "
                              f"({reason})")
    ranked: list[tuple[Config, float]] = []
    for c, v in with_figure:
        why = rule.eligibility(c)
        if why is None:
            ranked.append((c, v))
        else:
            not_ranked.append((c, why))
    if not ranked:
        return Recommendation(rule, workload, fig, [], "-", "-", [], not_ranked,
                              "no recommendation: no configuration meets the rule's "
                              "condition (see not ranked)")
    levels = [(fig, direction)]
    by = figures.by_name()
    for name in rule.then:  # a tie-break only where every ranked configuration has it
        tie_fig = by[name]
        if tie_fig.better and all(tie_fig.value(c.summary) is not None for c, _ in ranked):
            levels.append((tie_fig, tie_fig.better))

    def key(c: Config) -> tuple[float, ...]:
        values = [f.value(c.summary) for f, _ in levels]
        return tuple(_key(v, d) for v, (_, d) in zip(values, levels, strict=True)
                     if v is not None)

    groups: dict[tuple[float, ...], list[Config]] = {}
    for c, _ in sorted(ranked, key=lambda cv: key(cv[0])):
        groups.setdefault(key(c), []).append(c)
    ordered = list(groups.values())
    picks = ordered[0]
    shown = [(f, v) for f, _ in levels if (v := f.value(picks[0].summary)) is not None]
    value = (_with_unit(*shown[0]) if len(shown) == 1
             else ", ".join(f"{f.header} {f.cell(v)}" for f, v in shown))
    runner_up = ordered[1] if len(ordered) > 1 else []
    note = None
    if len(configs) == 1:
        margin = "-"
        note = "only one configuration in this workload: nothing to compare against"
    elif not runner_up:
        margin = "-"
        note = ("every ranked configuration is tied" if len(picks) > 1
                else "the only configuration ranked by this rule")
    else:
        margin = _margin(levels, picks[0], runner_up)
    return Recommendation(rule, workload, fig, picks, value, margin, runner_up, not_ranked,
                          note)


def _margin(levels: Sequence[tuple[Figure, Direction]], best: Config,
            runner_up: Sequence[Config]) -> str:
    """The margin on the first figure where the pick and the runner-up differ."""
    same_on: list[str] = []
    for fig, direction in levels:
        a, b = fig.value(best.summary), fig.value(runner_up[0].summary)
        if a is None or b is None:
            continue
        if _round(a) != _round(b):
            text = margin_text(fig, direction, a, b, runner_up)
            return f"same {', '.join(same_on)}; {text}" if same_on else text
        same_on.append(fig.header)
    return "-"


def workloads(configs: Sequence[Config]) -> dict[Workload, list[Config]]:
    """The configurations by workload, in the order the workloads first appear."""
    out: dict[Workload, list[Config]] = {}
    for c in configs:
        out.setdefault(c.workload, []).append(c)
    return out


def recommendations(configs: Sequence[Config], *, slos: Mapping[str, float] | None = None
                    ) -> dict[Workload, list[Recommendation]]:
    """Every rule's answer for every workload. `configs` are `sources.newest`'s: one run
    per configuration, so no configuration competes with itself."""
    chosen = rules(slos)
    return {w: [recommend(group, r) for r in chosen] for w, group in workloads(configs).items()}


# -- Pareto fronts ----------------------------------------------------------------------

Point = tuple[float, float]


def dominates(a: Point, b: Point, better: tuple[Direction, Direction]) -> bool:
    """`a` is at least as good as `b` on both figures and better on one (at DIGITS
    significant figures)."""
    ka = [_key(v, d) for v, d in zip(a, better, strict=True)]
    kb = [_key(v, d) for v, d in zip(b, better, strict=True)]
    return all(x <= y for x, y in zip(ka, kb, strict=True)) and ka != kb


def front_indices(points: Sequence[Point], better: tuple[Direction, Direction]
                  ) -> tuple[list[int], dict[int, list[int]]]:
    """The indices of the non-dominated points, and for each other point the front
    points that dominate it (dominance is transitive: each has at least one)."""
    front = [i for i, p in enumerate(points)
             if not any(dominates(q, p, better) for j, q in enumerate(points) if j != i)]
    behind = {i: [j for j in front if dominates(points[j], p, better)]
              for i, p in enumerate(points) if i not in front}
    return front, behind


def pareto(configs: Sequence[Config], x: Figure, y: Figure) -> ParetoFront:
    """The front of one workload's complete configurations on `x` against `y`, each in its
    figure's direction; a configuration without either figure is excluded with why."""
    workload = _one_workload(configs)
    if x.better is None or y.better is None:
        raise ValueError(f"a Pareto front needs figures with a better direction: "
                         f"{x.name}, {y.name}")
    excluded: list[tuple[Config, str]] = []
    points: list[tuple[Config, Point]] = []
    for c in configs:
        if not c.complete:
            excluded.append((c, f"status {c.entry['status']}"))
            continue
        vx, vy = x.value(c.summary), y.value(c.summary)
        if vx is None or vy is None:
            excluded.append((c, absent_reason(c, x if vx is None else y)))
            continue
        points.append((c, (vx, vy)))
    front, behind = front_indices([p for _, p in points], (x.better, y.better))
    return ParetoFront(
        workload, x, y, [points[i][0] for i in front],
        [(points[i][0], [points[j][0] for j in js]) for i, js in behind.items()],
        excluded, {c.key: p for c, p in points})


def fronts(configs: Sequence[Config]) -> tuple[list[ParetoFront], list[str]]:
    """One workload's fronts: p50 latency against each quality score (kind accuracy or
    error: a length is no quality, a rating has no better direction) and against
    J/token; with a note for each pair no two configurations have."""
    by = figures.by_name()
    latency = by["p50_s"]
    complete = [c for c in configs if c.complete]
    ys = [f for f in figures.score_figures([c.summary for c in complete])
          if _score_kind(complete, f) in ("accuracy", "error")]
    ys.append(by["energy_per_token_j"])
    out: list[ParetoFront] = []
    notes: list[str] = []
    if len(complete) < 2:
        return out, notes
    for y in ys:
        front = pareto(configs, latency, y)
        if len(front.values) >= 2:
            out.append(front)
            continue
        reasons = sorted({why for _, why in front.excluded})
        notes.append(f"no Pareto front of {latency.header} against {y.header}: fewer than two "
                     f"configurations have both ({'; '.join(reasons)})")
    return out, notes


def _score_kind(configs: Sequence[Config], fig: Figure) -> str | None:
    for c in configs:
        score = ((c.summary.get("quality") or {}).get("scores") or {}).get(fig.path[2])
        if isinstance(score, Mapping):
            return str(score.get("kind"))
    return None


# -- The section ------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def workload_text(workload: Workload) -> str:
    task, dataset, level = workload
    return (f"{task} on {dataset}, "
            + ("sequential requests" if level == "seq" else f"load level {level}"))


def _grouped(items: Sequence[tuple[Config, str]]) -> list[tuple[str, list[Config]]]:
    by: dict[str, list[Config]] = {}
    for c, why in items:
        by.setdefault(why, []).append(c)
    return [(why, cs) for why, cs in by.items()]


def _rec_table(n: int, workload: Workload, recs: Sequence[Recommendation]) -> Table:
    rows: list[list[Cell]] = []
    notes: list[str] = []
    for rec in recs:
        v = rec.figure.value(rec.picks[0].summary) if rec.figure and rec.picks else None
        pick = ("-" if not rec.picks else rec.picks[0].label if len(rec.picks) == 1
                else "tie: " + _labels(rec.picks))
        rows.append([
            Cell(rec.rule.use_case),
            Cell(pick, best=bool(rec.picks)),
            Cell(rec.value, v, title=rec.figure.source if rec.figure else None),
            Cell(rec.margin if rec.margin != "-" or rec.note is None else rec.note,
                 title=rec.rule.statement),
        ])
        if rec.note and not (rec.picks and rec.margin == "-"):
            notes.append(f"{rec.rule.use_case}: {rec.note}")
        nothing = not rec.picks and rec.figure is not None and rec.note is not None \
            and rec.note.startswith("no recommendation: no configuration has")
        for why, cs in _grouped(rec.not_ranked):
            if nothing and why.startswith("no figure:"):
                continue  # the note says it for all of them
            notes.append(f"{rec.rule.use_case}: not ranked: {_labels(cs)} ({why})")
    return Table(f"recommendations-{n}-{_slug(' '.join(workload))}",
                 f"Recommendations: {workload_text(workload)}",
                 ["use case", "pick", "value", "margin"], rows, {2},
                 ["each rule is stated above (and in the margin's tooltip)", *notes])


def _front_table(n: int, m: int, front: ParetoFront) -> Table:
    rows: list[list[Cell]] = []
    by_key = {c.key: c for c in front.front}
    for c in front.front:
        vx, vy = front.values[c.key]
        rows.append([Cell(c.label), Cell(front.x.cell(vx), vx), Cell(front.y.cell(vy), vy),
                     Cell("on front", 0, best=True)])
    for c, by in front.dominated:
        vx, vy = front.values[c.key]
        rows.append([Cell(c.label), Cell(front.x.cell(vx), vx), Cell(front.y.cell(vy), vy),
                     Cell("dominated by " + _labels([by_key[b.key] for b in by]), 1)])
    for c, why in front.excluded:
        rows.append([Cell(c.label), Cell("-"), Cell("-"), Cell(f"excluded: {why}", 2)])
    x, y = front.x, front.y
    return Table(
        f"pareto-{n}-{m}-{_slug(' '.join(front.workload))}-{_slug(y.name)}",
        f"Pareto front, {x.header} ({x.better} is better) against {y.header} "
        f"({y.better} is better): {workload_text(front.workload)}",
        ["config", f"{x.header}", f"{y.header}", "on front / dominated by"], rows, {1, 2},
        [f"{x.header}: {x.source}; {y.header}: {y.source}"])


def section(configs: Sequence[Config], *, slos: Mapping[str, float] | None = None) -> Section:
    """"Recommendations by use case": the rules in words, then per workload a table of
    picks and the Pareto fronts. `configs` are `sources.newest`'s."""
    chosen = rules(slos)
    blocks: list[Block] = [
        Paragraph(
            "Each recommendation comes from a stated rule applied to the figures below. "
            "Recommendations are made per workload (task, dataset and load level): only "
            "configurations that did the same work compete, and only complete benchmarks "
            f"(the newest run of each configuration). Values equal at {DIGITS} significant "
            "figures are ties, and every tied configuration is named. A configuration "
            "without a rule's figure is not ranked, and the notes say why. A margin is "
            "one run's figures side by side, on that run's requests: a few percent is "
            "within the noise of a shared machine, and a claim that must hold across runs "
            "needs repeated runs and `vlmbench compare`."),
        Bullets([f"{r.use_case}: {r.statement}" for r in chosen]),
    ]
    notes: list[str] = []
    single: list[str] = []
    for n, (workload, group) in enumerate(workloads(configs).items(), 1):
        if len(group) == 1:  # no table of seven "nothing to compare against" rows
            single.append(f"{workload_text(workload)}: {group[0].label}")
            continue
        blocks.append(_rec_table(n, workload, [recommend(group, r) for r in chosen]))
        found, missing = fronts(group)
        blocks += [_front_table(n, m, f) for m, f in enumerate(found, 1)]
        notes += [f"{workload_text(workload)}: {line}" for line in missing]
    if single:
        notes.append("only one configuration, so nothing to recommend between, in: "
                     + "; ".join(single))
    older = [c for c in configs if c.superseded]
    notes += [f"{c.label}: the newest of {len(c.superseded) + 1} runs is used "
              f"({', '.join(o.key for o in c.superseded)} left out)" for c in older]
    if len(workloads(configs)) > 1:
        notes.append("different workloads are never compared with each other: their "
                     "configurations did different work")
    if notes:
        blocks.append(Bullets(notes))
    return Section("recommendations", "Recommendations by use case", blocks)
