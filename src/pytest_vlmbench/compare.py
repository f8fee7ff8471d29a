"""Compare two runs benchmark by benchmark: the regression gate of a CI pipeline.

A gate must fail on a real slowdown and stay quiet on an unchanged build, so every
figure is recomputed from the per-request records (never from two summaries), and a
metric is called regressed only when three things hold (see docs/compare.md):
(a) the point effect is beyond the rule's threshold in the worse direction,
(b) the test (Mann-Whitney U, or Fisher's exact test for rates) gives p < alpha, and
(c) the bootstrap confidence interval of the effect lies wholly on the worse side.

API, for the CLI (`vlmbench compare`) and the pytest options (`--vlm-compare`):
    run = load_run("baseline/")               # file, directory of saved runs, or "latest"
    rules = parse_rules(["p95_latency:+10%"])  # RuleError on a bad rule
    comparison = compare_runs(baseline_run, current_run, rules, alpha=0.01, min_samples=5)
    render_table(comparison), render_markdown(comparison), to_json(comparison)
    comparison.exit_status                    # EXIT_OK / EXIT_REGRESSION / EXIT_NOTHING_COMPARABLE
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pytest_vlmbench import noise
from pytest_vlmbench.noise import Effect, Statistic
from pytest_vlmbench.results import ResultsError, load, load_with_records

EXIT_OK = 0
"""No gated metric regressed."""
EXIT_REGRESSION = 1
"""At least one gated metric of a comparable benchmark regressed."""
EXIT_USAGE = 2
"""Bad arguments or bad input (unreadable, foreign or corrupt files, a bad rule)."""
EXIT_NOTHING_COMPARABLE = 3
"""No benchmark matched in both runs with the same prompt and dataset: nothing was gated."""

DEFAULT_DIR = Path(".vlmbench")  # the plugin's default output directory (options.DEFAULT_OUT_DIR)
LATEST = "latest"
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_SAMPLES = 5
DEFAULT_RULE_SPECS = (
    "p50_latency:+10%", "tokens_per_s:-10%", "parse_rate:-0.05", "success_rate:-0.01",
    "energy_per_token:+10%",
)
_EPS = 1e-12  # so that 0.99 - 1.0 is not "beyond" a 0.01 limit by rounding

Verdict = Literal["improved", "unchanged", "regressed", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("improved", "unchanged", "regressed", "inconclusive")


class RuleError(ValueError):
    """A --fail-on rule that cannot be parsed."""


@dataclass(frozen=True)
class Metric:
    """A compared figure: how it is computed per request and which way is worse."""

    name: str
    unit: str
    higher_is_worse: bool
    statistic: Statistic
    proportion: bool
    display: float
    """Threshold for metrics without a rule (relative, or absolute for proportions)."""
    description: str

    @property
    def worse(self) -> int:
        return 1 if self.higher_is_worse else -1


def _m(name: str, unit: str, higher_is_worse: bool, stat: Statistic, description: str, *,
       proportion: bool = False, display: float = 0.10) -> Metric:
    return Metric(name, unit, higher_is_worse, stat, proportion, display, description)


METRICS: dict[str, Metric] = {m.name: m for m in (
    _m("p50_latency", "s", True, "median", "median request latency"),
    _m("p90_latency", "s", True, "p90", "90th percentile latency"),
    _m("p95_latency", "s", True, "p95", "95th percentile latency"),
    _m("p99_latency", "s", True, "p99", "99th percentile latency"),
    _m("mean_latency", "s", True, "mean", "mean latency"),
    _m("p50_ttft", "s", True, "median", "median time to first token"),
    _m("p95_ttft", "s", True, "p95", "95th percentile time to first token"),
    _m("tokens_per_s", "tok/s", False, "median", "median per-request decode rate"),
    _m("parse_rate", "", False, "mean", "valid outputs / successful requests",
       proportion=True, display=0.05),
    _m("success_rate", "", False, "mean", "requests without error / measured requests",
       proportion=True, display=0.01),
    _m("energy_per_token", "J/token", True, "median",
       "median per-request energy / completion tokens"),
)}


@dataclass(frozen=True)
class Rule:
    """A gate: the metric may get worse by at most `threshold` (relative or absolute)."""

    metric: str
    threshold: float
    relative: bool
    text: str

    @property
    def limit(self) -> str:
        """The limit as the user writes it, signed in the worse direction."""
        sign = "+" if METRICS[self.metric].higher_is_worse else "-"
        if self.relative:
            return f"{sign}{100 * self.threshold:g}%"
        return f"{sign}{self.threshold:g}"


_AMOUNT = re.compile(r"^([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(%?)$")


def parse_rule(text: str) -> Rule:
    """`METRIC:+10%`, `METRIC:-5%`, `METRIC:10%` (worse direction), `parse_rate:-0.01`."""
    spec = text.strip()
    metric, sep, amount = spec.partition(":")
    metric, amount = metric.strip(), amount.strip().replace(" ", "")
    if not sep or not metric or not amount:
        raise RuleError(
            f"rule {text!r}: expected METRIC:LIMIT, e.g. p50_latency:+10% or parse_rate:-0.01"
        )
    if metric not in METRICS:
        raise RuleError(f"rule {text!r}: unknown metric {metric!r}; one of {', '.join(METRICS)}")
    m = METRICS[metric]
    match = _AMOUNT.match(amount)
    if match is None:
        raise RuleError(
            f"rule {text!r}: limit {amount!r} is not a number or a percentage "
            "(write +10%, -5% or an absolute -0.01)"
        )
    sign, number, percent = match.groups()
    worse_sign = "+" if m.higher_is_worse else "-"
    if sign and sign != worse_sign:
        direction = "rises" if m.higher_is_worse else "falls"
        raise RuleError(
            f"rule {text!r}: {metric} gets worse as it {direction}, so its limit is "
            f"{worse_sign}{number}{percent} (or {number}{percent} without a sign)"
        )
    if percent and m.proportion:
        raise RuleError(
            f"rule {text!r}: {metric} is a rate; give its limit as a difference, e.g. "
            f"{metric}:-{float(number) / 100:g} for {number} percentage points"
        )
    threshold = float(number) / (100.0 if percent else 1.0)
    if not math.isfinite(threshold):
        raise RuleError(f"rule {text!r}: limit {amount!r} is not finite")
    return Rule(metric, threshold, bool(percent), spec)


def parse_rules(specs: Iterable[str]) -> dict[str, Rule]:
    """Rules by metric from specs (each may hold several, comma-separated); later ones win."""
    rules: dict[str, Rule] = {}
    for spec in specs:
        parts = [p for p in spec.split(",") if p.strip()]
        if not parts:
            raise RuleError(f"rule {spec!r}: empty; expected METRIC:LIMIT, e.g. p50_latency:+10%")
        for part in parts:
            rule = parse_rule(part)
            rules[rule.metric] = rule
    return rules


DEFAULT_RULES: dict[str, Rule] = parse_rules(DEFAULT_RULE_SPECS)


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    """A loaded results document and its records grouped by (run_id, benchmark)."""

    path: Path
    doc: dict[str, Any]
    records: dict[tuple[str, str], list[dict[str, Any]]]
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.doc["run_id"])


def _when(stamp: Any) -> datetime:
    """An ISO timestamp as an aware datetime; unparsable ones sort first."""
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _newest(directory: Path, exclude_run_id: str | None) -> tuple[Path, list[str]]:
    """The newest finished results document in a directory (by started_at)."""
    if not directory.is_dir():
        raise ResultsError(f"{directory}: no such directory of results")
    candidates = sorted(directory.glob("results-*.json"))
    if not candidates:
        raise ResultsError(f"no results-*.json in {directory}")
    found: list[tuple[datetime, str, Path]] = []
    errors: list[str] = []
    for path in candidates:
        try:
            doc = load(path)
        except ResultsError as exc:
            errors.append(str(exc))
            continue
        if doc["status"] == "running" or doc["run_id"] == exclude_run_id:
            continue
        found.append((_when(doc["started_at"]), path.name, path))
    if not found:
        other = f" other than run {exclude_run_id}" if exclude_run_id else ""
        first = f"; {len(errors)} unreadable, the first: {errors[0]}" if errors else ""
        raise ResultsError(f"no finished results document{other} in {directory}{first}")
    notes = [f"skipped {len(errors)} unreadable results file{'s' if len(errors) > 1 else ''} "
             f"in {directory}; the first: {errors[0]}"] if errors else []
    return max(found)[2], notes


def load_run(spec: str | Path, default_dir: str | Path = DEFAULT_DIR, *,
             exclude_run_id: str | None = None) -> Run:
    """Load a run from a results file, a directory of saved runs (the newest finished
    one) or "latest" (the newest in default_dir), skipping run `exclude_run_id` when
    choosing from a directory. Any bad input raises one ResultsError naming the file."""
    notes: list[str] = []
    if str(spec) == LATEST:
        path, notes = _newest(Path(default_dir), exclude_run_id)
    elif Path(spec).is_dir():
        path, notes = _newest(Path(spec), exclude_run_id)
    else:
        path = Path(spec)
    doc, records = load_with_records(path, "a comparison")
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault((record["run_id"], record["benchmark"]), []).append(record)
    return Run(path, doc, grouped, notes)


# --------------------------------------------------------------------------- matching


class BenchmarkKey(NamedTuple):
    """What makes two entries the same benchmark."""

    id: str
    model: str
    precision: str
    device: str
    task: str

    @property
    def label(self) -> str:
        """The test's parametrised name, without its file."""
        return self.id.split("::")[-1]


def _key(entry: Mapping[str, Any]) -> BenchmarkKey:
    return BenchmarkKey(entry["id"], entry["model"], entry["precision"], entry["device"],
                        entry["task"])


def _entry_run(entry: Mapping[str, Any], run: Run) -> str:
    return str(entry.get("run_id") or run.run_id)


def _entries(run: Run, side: str) -> tuple[dict[BenchmarkKey, dict[str, Any]], list[str]]:
    """One entry per key: of several runs of a benchmark (a merged document), the latest."""
    groups: dict[BenchmarkKey, list[tuple[int, dict[str, Any]]]] = {}
    for i, entry in enumerate(run.doc["benchmarks"]):
        groups.setdefault(_key(entry), []).append((i, entry))
    chosen: dict[BenchmarkKey, dict[str, Any]] = {}
    notes: list[str] = []
    for key, items in groups.items():
        _, entry = max(items, key=lambda it: (_when(it[1]["started_at"]), it[0]))
        chosen[key] = entry
        if len(items) > 1:
            notes.append(
                f"{side}: {len(items)} runs of {key.id} in {run.path.name}; compared the "
                f"latest, run {_entry_run(entry, run)}"
            )
    return chosen, notes


# --------------------------------------------------------------------------- samples


@dataclass
class Samples:
    """Per-request values of every metric for one benchmark of one run."""

    values: dict[str, list[float]]
    unavailable: dict[str, str]
    decode_source: set[str]
    checks_output: bool


def _decode_tokens(record: Mapping[str, Any]) -> int:
    if "decode_tokens" in record["counts"]:
        return int(record["counts"]["decode_tokens"])
    return max(0, (record["completion_tokens"] or 0) - 1)


def _samples(entry: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Samples:
    measured = [r for r in records if r["phase"] == "measure"]
    ok = [r for r in measured if r["error"] is None]
    timed = [r for r in ok if r["t_start_ns"] is not None and r["t_end_ns"] is not None]
    latency = [(r["t_end_ns"] - r["t_start_ns"]) / 1e9 for r in timed]
    ttft = [(r["t_first_token_ns"] - r["t_start_ns"]) / 1e9
            for r in timed if r["t_first_token_ns"] is not None]
    rates: list[float] = []
    sources: set[str] = set()
    for r in ok:
        decode_ns = r["stages_ns"].get("decode")
        evals = r["counts"].get("decode_evals")
        if decode_ns and evals is not None:
            rates.append(evals / (decode_ns * 1e-9))
            sources.add("engine")
        elif (r["t_first_token_ns"] is not None and r["t_end_ns"] is not None
              and r["t_end_ns"] > r["t_first_token_ns"] and _decode_tokens(r) >= 1):
            rates.append(_decode_tokens(r) / ((r["t_end_ns"] - r["t_first_token_ns"]) * 1e-9))
            sources.add("stream")
    checked = [r for r in ok if r["parse"] != "not_checked"]
    values = {
        "latency": latency, "ttft": ttft, "tokens_per_s": rates,
        "parse_rate": [1.0 if r["parse"] == "valid" else 0.0 for r in checked],
        "success_rate": [1.0 if r["error"] is None else 0.0 for r in measured],
    }
    unavailable: dict[str, str] = {}
    energy = entry["summary"].get("energy")
    per_request = energy.get("per_request") if isinstance(energy, dict) else None
    if per_request:
        values["energy_per_token"] = [
            float(p["energy_j"]) / p["tokens"] for p in per_request if p.get("tokens")
        ]
    else:
        unavailable["energy_per_token"] = "no per-request energy"
    return Samples(values, unavailable, sources, bool(checked))


def _metric_values(samples: Samples, metric: str) -> list[float]:
    if metric.endswith("_latency"):
        return samples.values["latency"]
    if metric.endswith("_ttft"):
        return samples.values["ttft"]
    return samples.values.get(metric, [])


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class MetricResult:
    """The verdict on one metric of one benchmark, with the evidence behind it."""

    metric: str
    verdict: Verdict
    gated: bool
    rule: Rule
    baseline: float | None
    current: float | None
    n_baseline: int
    n_current: int
    effect: float | None
    effect_kind: Effect
    ci: tuple[float, float] | None
    p_value: float | None
    test: str | None
    note: str | None = None

    @property
    def change_pct(self) -> float | None:
        """Relative change current/baseline - 1, in percent (None without a positive baseline)."""
        if self.baseline is None or self.current is None or self.baseline <= 0:
            return None
        return 100.0 * (self.current / self.baseline - 1.0)


@dataclass(frozen=True)
class Settings:
    alpha: float = DEFAULT_ALPHA
    min_samples: int = DEFAULT_MIN_SAMPLES
    resamples: int = noise.DEFAULT_RESAMPLES
    confidence: float = noise.DEFAULT_CONFIDENCE
    seed: int = 0


def _evaluate(metric: Metric, rule: Rule, gated: bool, xs: Sequence[float],
              ys: Sequence[float], unavailable: str | None, s: Settings) -> MetricResult:
    kind: Effect = "ratio" if rule.relative and not metric.proportion else "difference"
    b = noise.statistic(xs, metric.statistic) if xs else None
    c = noise.statistic(ys, metric.statistic) if ys else None

    def result(verdict: Verdict, note: str | None, effect: float | None = None,
               ci: tuple[float, float] | None = None, p: float | None = None,
               test: str | None = None) -> MetricResult:
        return MetricResult(metric.name, verdict, gated, rule, b, c, len(xs), len(ys), effect,
                            kind, ci, p, test, note)

    if unavailable:
        return result("inconclusive", unavailable)
    if len(xs) < s.min_samples or len(ys) < s.min_samples:
        return result("inconclusive", f"too few samples (n={len(xs)} vs {len(ys)}, "
                                      f"need {s.min_samples} on each side)")
    effect = noise.effect(xs, ys, metric.statistic, kind)
    if effect is None:
        return result("inconclusive", "baseline value is 0: no ratio")
    ci = noise.bootstrap_ci(xs, ys, metric.statistic, kind, resamples=s.resamples,
                            confidence=s.confidence, seed=s.seed)
    if metric.proportion:
        test = "fisher"
        p = noise.fisher_exact(round(sum(xs)), len(xs), round(sum(ys)), len(ys))
    else:
        test = "mann-whitney"
        p = noise.mann_whitney_u(xs, ys).p_value
    if ci is None:
        return result("inconclusive", "no bootstrap interval", effect, None, p, test)
    none = 1.0 if kind == "ratio" else 0.0
    worse = metric.worse * (effect - none)  # > 0: worse than the baseline
    ci_worse = sorted(metric.worse * (bound - none) for bound in ci)
    if worse > rule.threshold + _EPS:
        credible = p < s.alpha and ci_worse[0] > 0
        verdict: Verdict = "regressed" if credible else "unchanged"
    elif -worse > rule.threshold + _EPS:
        credible = p < s.alpha and ci_worse[1] < 0
        verdict = "improved" if credible else "unchanged"
    else:
        return result("unchanged", None, effect, ci, p, test)
    note = None
    if not credible:
        note = (f"beyond threshold but within noise, p={p:.2g}" if p >= s.alpha else
                f"beyond threshold but the {100 * s.confidence:g}% CI includes no change")
    return result(verdict, note, effect, ci, p, test)


@dataclass
class Pair:
    """A benchmark found in both runs."""

    key: BenchmarkKey
    baseline: dict[str, Any]
    current: dict[str, Any]
    metrics: list[MetricResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    reason: str | None = None
    """Why the pair is not comparable (None when it is)."""

    @property
    def comparable(self) -> bool:
        return self.reason is None


@dataclass
class Comparison:
    """Everything `vlmbench compare` reports, and the exit status it implies."""

    baseline: Run
    current: Run
    pairs: list[Pair]
    not_comparable: list[Pair]
    new: list[BenchmarkKey]
    vanished: list[BenchmarkKey]
    notes: list[str]
    settings: Settings

    @property
    def gated(self) -> list[tuple[Pair, MetricResult]]:
        """Regressions in gated metrics: the ones that fail the build."""
        return [(p, m) for p in self.pairs for m in p.metrics
                if m.gated and m.verdict == "regressed"]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for p in self.pairs for m in p.metrics if m.verdict == verdict)

    @property
    def exit_status(self) -> int:
        if self.gated:
            return EXIT_REGRESSION
        if not self.pairs:
            return EXIT_NOTHING_COMPARABLE
        return EXIT_OK

    @property
    def headline(self) -> str:
        n, m = len(self.gated), len(self.pairs)
        return f"{n} regression{'s' if n != 1 else ''} / {m} benchmark{'s' if m != 1 else ''}"


def _not_comparable_reason(b: Mapping[str, Any], c: Mapping[str, Any]) -> str | None:
    reasons = []
    if b["prompt_version"] != c["prompt_version"]:
        reasons.append(f"prompt_version changed ({b['prompt_version']} -> {c['prompt_version']})")
    bd, cd = b["dataset"], c["dataset"]
    if bd["hash"] != cd["hash"]:
        reasons.append(f"dataset changed ({bd['name']} {bd['hash'][:12]} -> "
                       f"{cd['name']} {cd['hash'][:12]})")
    return "; ".join(reasons) or None


def _flags(side: str, run: Run, entry: Mapping[str, Any], n_measured: int) -> list[str]:
    flags = []
    if entry["status"] != "complete":
        error = f": {entry['error']}" if entry.get("error") else ""
        flags.append(f"{side} benchmark {entry['status']}{error}")
    if run.doc["status"] == "interrupted":
        flags.append(f"{side} run interrupted")
    if n_measured == 0:
        flags.append(f"{side} has no measured records")
    return flags


def _effective_rules(base: Mapping[str, Rule], entry: Mapping[str, Any],
                     run: Run) -> dict[str, Rule]:
    rules = dict(base)
    if entry.get("fail_on"):
        try:
            rules.update(parse_rules(entry["fail_on"]))
        except RuleError as exc:
            raise ResultsError(f"{run.path}: benchmark {entry['id']}: fail_on: {exc}") from None
    return rules


def _compare_pair(pair: Pair, baseline: Run, current: Run, rules: Mapping[str, Rule],
                  s: Settings) -> None:
    sides = []
    for side, run, entry in (("baseline", baseline, pair.baseline),
                             ("current", current, pair.current)):
        records = run.records.get((_entry_run(entry, run), entry["id"]), [])
        sides.append(_samples(entry, records))
        measured = sum(1 for r in records if r["phase"] == "measure")
        pair.flags.extend(_flags(side, run, entry, measured))
    sb, sc = sides
    effective = _effective_rules(rules, pair.current, current)
    for metric in METRICS.values():
        name = metric.name
        if name == "parse_rate" and not (sb.checks_output or sc.checks_output):
            continue  # a free-text task: there is no parse rate to compare
        unavailable = sb.unavailable.get(name) or sc.unavailable.get(name)
        if name == "parse_rate" and sb.checks_output != sc.checks_output:
            unavailable = "output checked in only one of the runs"
        if name == "tokens_per_s" and sb.decode_source and sc.decode_source \
                and sb.decode_source != sc.decode_source:
            unavailable = (f"decode rate measured differently ({'+'.join(sorted(sb.decode_source))}"
                           f" vs {'+'.join(sorted(sc.decode_source))})")
        rule = effective.get(name)
        gated = rule is not None
        if rule is None:
            rule = Rule(name, metric.display, not metric.proportion, "(display)")
        pair.metrics.append(_evaluate(metric, rule, gated, _metric_values(sb, name),
                                      _metric_values(sc, name), unavailable, s))


def compare_runs(
    baseline: Run, current: Run, rules: Mapping[str, Rule] | None = None, *,
    alpha: float = DEFAULT_ALPHA, min_samples: int = DEFAULT_MIN_SAMPLES,
    resamples: int = noise.DEFAULT_RESAMPLES, confidence: float = noise.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Comparison:
    """Match the runs' benchmarks and give every metric of every comparable pair a verdict.

    `rules` (from parse_rules) replace DEFAULT_RULES when given; a benchmark's own
    `fail_on` (in the current document) overrides both for the metrics it names.
    Raises ResultsError for a bad `fail_on` in the current document.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    s = Settings(alpha, min_samples, resamples, confidence, seed)
    base_rules = DEFAULT_RULES if rules is None else rules
    b_entries, b_notes = _entries(baseline, "baseline")
    c_entries, c_notes = _entries(current, "current")
    notes = [*baseline.notes, *current.notes, *b_notes, *c_notes]
    if baseline.path.resolve() == current.path.resolve():
        notes.append("baseline and current are the same results file")
    pairs: list[Pair] = []
    not_comparable: list[Pair] = []
    for key, entry in c_entries.items():
        if key not in b_entries:
            continue
        pair = Pair(key, b_entries[key], entry)
        pair.reason = _not_comparable_reason(pair.baseline, pair.current)
        if pair.reason:
            not_comparable.append(pair)
            continue
        _compare_pair(pair, baseline, current, base_rules, s)
        pairs.append(pair)
    new = [k for k in c_entries if k not in b_entries]
    vanished = [k for k in b_entries if k not in c_entries]
    return Comparison(baseline, current, pairs, not_comparable, new, vanished, notes, s)


# --------------------------------------------------------------------------- rendering


def _value(metric: Metric, v: float | None) -> str:
    if v is None:
        return "-"
    if metric.proportion:
        return f"{100 * v:.1f}%"
    return f"{v:.4g} {metric.unit}"


def _change(m: MetricResult) -> str:
    metric = METRICS[m.metric]
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
    metric = METRICS[m.metric]
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


def _verdict(m: MetricResult) -> str:
    if m.verdict == "regressed":
        return "REGRESSED" if m.gated else "regressed (not gated)"
    return m.verdict


_HEADERS = ("benchmark", "metric", "baseline", "current", "change", "CI", "p", "limit",
            "verdict", "note")


def _rows(comparison: Comparison) -> list[tuple[str, ...]]:
    return [
        (p.key.label, m.metric, _value(METRICS[m.metric], m.baseline),
         _value(METRICS[m.metric], m.current), _change(m), _ci(m), _p(m.p_value), _limit(m),
         _verdict(m), m.note or "")
        for p in comparison.pairs for m in p.metrics
    ]


def _describe(run: Run) -> str:
    return f"{run.run_id} ({run.path})"


def _lists(comparison: Comparison) -> list[tuple[str, list[str]]]:
    return [
        ("new (current only)", [k.id for k in comparison.new]),
        ("vanished (baseline only)", [k.id for k in comparison.vanished]),
        ("not comparable", [f"{p.key.id}: {p.reason}" for p in comparison.not_comparable]),
        ("flagged", [f"{p.key.id}: {f}" for p in comparison.pairs for f in p.flags]),
        ("notes", list(comparison.notes)),
    ]


def render_table(comparison: Comparison) -> list[str]:
    """Terminal lines: one row per benchmark x metric, gated regressions marked `!!`."""
    s = comparison.settings
    lines = [
        f"vlmbench compare: baseline {_describe(comparison.baseline)}",
        f"               -> current {_describe(comparison.current)}",
        f"alpha {s.alpha:g}, at least {s.min_samples} samples a side, "
        f"{100 * s.confidence:g}% bootstrap CI ({s.resamples} resamples)",
    ]
    rows = _rows(comparison)
    if rows:
        headers = (*_HEADERS[:5], f"{100 * s.confidence:g}% CI", *_HEADERS[6:])
        table = [headers, *rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
        marks = ["", *("!!" if r[8] == "REGRESSED" else "" for r in rows)]
        for n, (row, mark) in enumerate(zip(table, marks, strict=True)):
            cells = [c.ljust(w) if i < 2 else c.rjust(w) if i < 8 else c.ljust(w)
                     for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            lines.append(f"{mark:2} " + "  ".join(cells).rstrip())
            if n == 0:
                lines.append("   " + "  ".join("-" * w for w in widths))
    for title, items in _lists(comparison):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  {item}" for item in items)
    lines.append(f"{comparison.headline} compared; {_tally(comparison)}")
    return lines


def _tally(comparison: Comparison) -> str:
    counts = ", ".join(f"{comparison.count(v)} {v}" for v in VERDICTS)
    return (f"metrics: {counts}; {len(comparison.new)} new, {len(comparison.vanished)} vanished, "
            f"{len(comparison.not_comparable)} not comparable")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparison: Comparison) -> str:
    """A GitHub step summary: headline, the table, then new/vanished/not comparable."""
    s = comparison.settings
    status = {EXIT_OK: "passed", EXIT_REGRESSION: "FAILED",
              EXIT_NOTHING_COMPARABLE: "nothing comparable"}[comparison.exit_status]
    out = [
        f"### vlmbench compare: {comparison.headline} ({status})",
        "",
        f"Baseline `{comparison.baseline.run_id}` -> current `{comparison.current.run_id}`. "
        f"Regressed = beyond the limit, p < {s.alpha:g} and the {100 * s.confidence:g}% "
        f"bootstrap CI excludes no change; at least {s.min_samples} samples a side.",
        "",
        f"{_tally(comparison)}",
        "",
    ]
    rows = _rows(comparison)
    if rows:
        headers = (*_HEADERS[:5], f"{100 * s.confidence:g}% CI", *_HEADERS[6:])
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join(["---", "---", *["---:"] * 6, "---", "---"]) + "|")
        for row in rows:
            cells = [_md(c) for c in row]
            cells[0] = f"`{cells[0]}`"
            if row[8] == "REGRESSED":
                cells[8] = "**:x: REGRESSED**"
            elif row[8] == "improved":
                cells[8] = ":white_check_mark: improved"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    for title, items in _lists(comparison):
        if items:
            out.append(f"**{title[0].upper()}{title[1:]}** ({len(items)}):")
            out.extend(f"- {_md(item)}" for item in items)
            out.append("")
    return "\n".join(out)


def _key_json(key: BenchmarkKey) -> dict[str, str]:
    return dict(key._asdict())


def _metric_json(m: MetricResult) -> dict[str, Any]:
    return {
        "metric": m.metric, "verdict": m.verdict, "gated": m.gated,
        "rule": {"limit": m.rule.limit, "threshold": m.rule.threshold,
                 "relative": m.rule.relative, "text": m.rule.text},
        "baseline": m.baseline, "current": m.current,
        "n_baseline": m.n_baseline, "n_current": m.n_current,
        "effect": m.effect, "effect_kind": m.effect_kind,
        "ci": list(m.ci) if m.ci else None, "p_value": m.p_value, "test": m.test,
        "change_pct": m.change_pct, "note": m.note,
    }


def to_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as plain JSON data (for tools and artifacts)."""
    s = comparison.settings

    def run(r: Run) -> dict[str, Any]:
        return {"run_id": r.run_id, "path": str(r.path), "started_at": r.doc["started_at"],
                "status": r.doc["status"]}

    return {
        "baseline": run(comparison.baseline), "current": run(comparison.current),
        "settings": {"alpha": s.alpha, "min_samples": s.min_samples,
                     "resamples": s.resamples, "confidence": s.confidence, "seed": s.seed},
        "headline": comparison.headline,
        "exit_status": comparison.exit_status,
        "gated": [{"benchmark": p.key.id, "metric": m.metric} for p, m in comparison.gated],
        "pairs": [
            {"benchmark": _key_json(p.key), "flags": p.flags,
             "metrics": [_metric_json(m) for m in p.metrics]}
            for p in comparison.pairs
        ],
        "not_comparable": [{"benchmark": _key_json(p.key), "reason": p.reason}
                           for p in comparison.not_comparable],
        "new": [_key_json(k) for k in comparison.new],
        "vanished": [_key_json(k) for k in comparison.vanished],
        "notes": comparison.notes,
    }
