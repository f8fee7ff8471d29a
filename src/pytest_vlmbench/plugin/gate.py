"""The regression gate inside pytest: `--vlm-compare=BASELINE` and `--vlm-fail-on`.

The baseline is loaded at session start, so a missing, corrupt or foreign baseline is
a usage error before any model loads. A directory (or `latest`) gives its newest
`--vlm-baseline-runs` finished runs of one commit: with two or more, timing metrics are
judged against the machine's measured drift between runs; with one, only beyond the
limit plus `--vlm-drift-allowance` (docs/compare.md). `latest` is the output directory,
the folder of this run's results file, and a directory's runs are found by content, so
a custom `--vlm-out`/`vlm_out` name is found too. Each benchmark is compared with its baseline
entry as soon as it finishes: the verdicts become JUnit XML properties
(`record_property`), and a gated regression fails that test with one line. At the end
the whole run is compared (new, vanished and not-comparable benchmarks included): the
table goes to the terminal summary, the markdown to $GITHUB_STEP_SUMMARY when set and
beside the results file otherwise. The verdicts are the same both times: the
comparison is deterministic (seeded bootstrap).

`history:N` takes the baseline from the results history (`--vlm-history`): per
benchmark, its last N complete runs on its device with the same prompt and dataset, as
Bencher does, so the between-run drift is measured from data the history already holds.
The history is opened at session start (a bad URL or an unreadable store is a usage
error); the runs are chosen when a benchmark is compared, since only then are its keys
known. A history without earlier runs of a benchmark makes it "new", never a failure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pytest_vlmbench.compare import (
    DEFAULT_ALPHA,
    DEFAULT_BASELINE_RUNS,
    DEFAULT_DRIFT_ALLOWANCE,
    Baseline,
    Comparison,
    MetricResult,
    Rule,
    Run,
    compare_runs,
    evidence,
    load_baseline,
    load_run,
    mde_text,
    parse_rules,
    render_markdown,
)
from pytest_vlmbench.history import History, HistoryError
from pytest_vlmbench.results import naming
from pytest_vlmbench.results.document import ResultsError
from pytest_vlmbench.results.models import BenchmarkEntry, Record, ResultsDocument

LATEST_FROM = "the output directory, where this run's results file goes (--vlm-out)"
"""What `latest` is, in an error: the user did not name the directory searched."""


HISTORY_PREFIX = "history"


class GateError(Exception):
    """A baseline or rule that cannot be used: a usage error."""


def history_runs(spec: str, default: int) -> int | None:
    """N of `history:N` (`history:` alone: `default`), None when spec names no history
    (a results file or directory called `history` is still that)."""
    name, colon, count = spec.partition(":")
    if name != HISTORY_PREFIX or not colon:
        return None
    if not count:
        return default
    if not count.isdigit() or int(count) < 1:
        raise GateError(f"--vlm-compare={spec}: N in history:N must be a whole number of "
                        "runs, at least 1 (e.g. history:10)")
    return int(count)


class Gate:
    """The baseline (one run or several), the rules, and what was compared."""

    def __init__(self, spec: str, default_dir: Path, rules: list[str], run_id: str,
                 alpha: float = DEFAULT_ALPHA, *, baseline_runs: int = DEFAULT_BASELINE_RUNS,
                 drift_allowance: float = DEFAULT_DRIFT_ALLOWANCE,
                 latest_from: str = LATEST_FROM, history: str | None = None,
                 history_base: Path | None = None) -> None:
        """`default_dir` is the output directory (`latest`): the folder of this run's
        results file (its parent's, in a pytest-xdist worker, which writes below it).
        `history` (and the directory a relative SQLite path is relative to) is
        --vlm-history, needed by `history:N`."""
        try:
            self.rules: dict[str, Rule] | None = parse_rules(rules) if rules else None
        except ValueError as exc:
            raise GateError(f"--vlm-fail-on: {exc}") from None
        self.run_id = run_id
        self.history_runs = history_runs(spec, baseline_runs)
        self.history_at: tuple[str, Path | None] | None = None
        self.baseline: Baseline | None = None
        self.history_display = ""
        if self.history_runs is not None:
            with open_for_gate(spec, history, history_base) as opened:  # checked now
                self.history_display = opened.url.display
            assert history is not None
            self.history_at = (history, history_base)
        else:
            try:
                self.baseline = load_baseline(spec, default_dir, runs=baseline_runs,
                                              exclude_run_id=run_id, latest_from=latest_from)
            except (ResultsError, ValueError) as exc:
                raise GateError(f"--vlm-compare={spec}: {exc}") from None
        self.spec = spec
        self.alpha = alpha
        self.drift_allowance = drift_allowance
        self.comparison: Comparison | None = None
        self.summary_path: Path | None = None
        self.error: str | None = None

    @property
    def baseline_name(self) -> str:
        """How a failure line names the baseline: its file, or history:N."""
        if self.baseline is None:
            return f"{HISTORY_PREFIX}:{self.history_runs}"
        return self.baseline.path.name

    @property
    def described(self) -> str:
        """The baseline in the terminal's "compared with ..." line."""
        if self.baseline is not None:
            return str(self.baseline.path)
        return f"{HISTORY_PREFIX}:{self.history_runs} ({self.history_display})"

    def _baseline_for(self, current: Run) -> Baseline:
        """The baseline runs: the loaded ones, or the history's for this run's benchmarks
        (opened for each comparison: a session holds no database connection for hours)."""
        if self.baseline is not None:
            return self.baseline
        assert self.history_at is not None
        assert self.history_runs is not None
        try:
            with History.open(*self.history_at) as history:
                return history.baseline(current.doc, self.history_runs,
                                        exclude_run_id=self.run_id)
        except HistoryError as exc:
            raise ResultsError(f"--vlm-compare={self.spec}: {exc}") from None

    def _compare(self, current: Run) -> Comparison:
        return compare_runs(self._baseline_for(current), current, self.rules, alpha=self.alpha,
                            drift_allowance=self.drift_allowance)


    def check(self, document: ResultsDocument, results_path: Path, entry: BenchmarkEntry,
              records: Sequence[Record]) -> tuple[list[tuple[str, str]], str | None]:
        """Compare one benchmark now: JUnit properties, and a failure line if it regressed."""
        doc: ResultsDocument = {**document, "benchmarks": [entry]}
        current = Run.from_records(results_path, doc, records)
        try:
            comparison = self._compare(current)
        except (ResultsError, ValueError) as exc:  # the history went away (or a stored
            # row is unreadable): the run's end says so too, and fails the run
            return [("vlm_compare", f"not compared: {exc}")], None
        props: list[tuple[str, str]] = []
        if comparison.not_comparable:
            props.append(("vlm_compare", f"not comparable: {comparison.not_comparable[0].reason}"))
            return props, None
        if not comparison.pairs:
            props.append(("vlm_compare", "new: no baseline entry"))
            return props, None
        pair = comparison.pairs[0]
        for m in pair.metrics:
            props.append((f"vlm_compare_{m.metric}", describe(m)))
        regressed = [m for m in pair.metrics if m.gated and m.verdict == "regressed"]
        if not regressed:
            return props, None
        return props, "regression against the baseline " + f"({self.baseline_name}): " + \
            "; ".join(describe(m) for m in regressed)

    def finish(self, results_path: Path) -> Comparison | None:
        """Compare the whole run; write the markdown summary. None if it cannot be read."""
        try:
            current = load_run(results_path)
            self.comparison = self._compare(current)
        except (ResultsError, ValueError) as exc:
            self.error = str(exc)
            return None
        markdown = render_markdown(self.comparison)
        step = os.environ.get("GITHUB_STEP_SUMMARY")
        if step:
            with Path(step).open("a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
            self.summary_path = Path(step)
        else:
            self.summary_path = naming.compare_summary_file(results_path)
            self.summary_path.write_text(markdown + "\n", encoding="utf-8")
        return self.comparison


def open_for_gate(spec: str, history: str | None, base: Path | None) -> History:
    """The history `history:N` compares with: a usage error when none is given or it
    cannot be opened (the message names the history without its password)."""
    if not history:
        raise GateError(f"--vlm-compare={spec} needs a results history: give --vlm-history=URL "
                        "(ini vlm_history), e.g. .vlmbench/history.sqlite")
    try:
        return History.open(history, base)
    except HistoryError as exc:
        raise GateError(f"--vlm-compare={spec}: {exc}") from None


def describe(m: MetricResult) -> str:
    """`p50_latency regressed +43.1% (CI +18.0..+73.4%, p=0.0002, MDE +22.0%, 5 runs, drift
    CV 3.9%, per-request p=<1e-6, limit +10%)`."""
    parts = [f"{m.metric} {m.verdict}"]
    if m.effect is not None:
        if m.effect_kind == "ratio":
            parts.append(f"{100 * (m.effect - 1):+.1f}%")
        else:
            parts.append(f"{m.effect:+.4g}")
    details = []
    if m.ci is not None:
        lo, hi = m.ci
        if m.effect_kind == "ratio":
            details.append(f"CI {100 * (lo - 1):+.1f}..{100 * (hi - 1):+.1f}%")
        else:
            details.append(f"CI {lo:+.4g}..{hi:+.4g}")
    if m.p_value is not None:
        details.append(f"p={m.p_value:.2g}")
    if m.verdict != "inconclusive":
        if m.gated and m.mde is not None:
            details.append(f"MDE {mde_text(m)}")
        details.append(evidence(m))
    if m.gated:
        details.append(f"limit {m.rule.limit}")
    if m.note:
        details.append(m.note)
    if details:
        parts.append(f"({', '.join(details)})")
    return " ".join(parts)
