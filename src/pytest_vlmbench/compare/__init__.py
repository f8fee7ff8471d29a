"""Compare runs benchmark by benchmark: the regression gate of a CI pipeline.

A gate must fail on a real slowdown and stay quiet on an unchanged build, so every
figure is recomputed from the per-request records (never from two summaries), and a
metric is called regressed only when three things hold (see docs/compare.md):
(a) the effect is beyond the rule's limit in the worse direction,
(b) a test gives p < alpha, and
(c) an interval of the effect lies wholly on the worse side.
Which test and which interval depends on what the baseline can tell: timing metrics
with several baseline runs are judged run by run against the machine's measured drift
(Student t prediction interval); with one baseline run, per request (Mann-Whitney U,
bootstrap interval) beyond the limit plus a drift allowance; rates (parse, success)
always per request (Fisher's exact test).

API, for the CLI (`vlmbench compare`) and the pytest options (`--vlm-compare`):
    current = load_run("latest", out_dir)              # file, directory or "latest"
    baseline = load_baseline(["baseline/"], runs=5, exclude_run_id=current.run_id)
    rules = parse_rules(["p95_latency:+10%"])           # the defaults plus this; RuleError
    comparison = compare_runs(baseline, current, rules, alpha=0.01, min_samples=5)
    render_table(comparison), render_markdown(comparison), to_json(comparison)
    comparison.exit_status          # EXIT_OK / EXIT_REGRESSION / EXIT_NOTHING_COMPARABLE

Power windows (`vlm_power.measure(name)`, the document's `windows`) are compared too:
paired by (test, window name), each window one sample of the registry's window metrics
(window_energy, window_duration), judged the same ways; none gates unless a rule names
it (`window_energy:+10%`). comparison.windows, .new_windows, .vanished_windows.

Modules: rules (metrics and rules), samples (records to per-request values), runs
(loading, baselines), verdicts (the three ways to judge), core (matching), windows
(power windows), render.
"""

from pytest_vlmbench.compare.core import (
    EXIT_NOTHING_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    Comparison,
    Pair,
    compare_runs,
)
from pytest_vlmbench.compare.render import (
    evidence,
    mde_text,
    render_markdown,
    render_table,
    to_json,
)
from pytest_vlmbench.compare.rules import (
    CLEAR,
    DEFAULT_RULE_SPECS,
    DEFAULT_RULES,
    METRICS,
    OFF,
    RULED,
    WINDOW_METRICS,
    Rule,
    RuleError,
    parse_rule,
    parse_rules,
)
from pytest_vlmbench.compare.runs import (
    DEFAULT_BASELINE_RUNS,
    DEFAULT_DIR,
    LATEST,
    Baseline,
    BenchmarkKey,
    Instance,
    Run,
    load_baseline,
    load_run,
    results_files,
)
from pytest_vlmbench.compare.samples import Columns, Samples
from pytest_vlmbench.compare.verdicts import (
    DEFAULT_ALPHA,
    DEFAULT_DRIFT_ALLOWANCE,
    DEFAULT_MIN_SAMPLES,
    VERDICTS,
    MetricResult,
    Mode,
    Settings,
    Verdict,
)
from pytest_vlmbench.compare.windows import WindowKey, WindowPair
from pytest_vlmbench.metrics.registry import Metric

__all__ = [
    "CLEAR",
    "DEFAULT_ALPHA",
    "DEFAULT_BASELINE_RUNS",
    "DEFAULT_DIR",
    "DEFAULT_DRIFT_ALLOWANCE",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_RULES",
    "DEFAULT_RULE_SPECS",
    "EXIT_NOTHING_COMPARABLE",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "EXIT_USAGE",
    "LATEST",
    "METRICS",
    "OFF",
    "RULED",
    "VERDICTS",
    "WINDOW_METRICS",
    "Baseline",
    "BenchmarkKey",
    "Columns",
    "Comparison",
    "Instance",
    "Metric",
    "MetricResult",
    "Mode",
    "Pair",
    "Rule",
    "RuleError",
    "Run",
    "Samples",
    "Settings",
    "Verdict",
    "WindowKey",
    "WindowPair",
    "compare_runs",
    "evidence",
    "load_baseline",
    "load_run",
    "mde_text",
    "parse_rule",
    "parse_rules",
    "render_markdown",
    "render_table",
    "results_files",
    "to_json",
]
