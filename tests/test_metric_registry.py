"""The metric registry: one declaration serves the SLOs, compare, the gate and the table.

The end-to-end test declares a metric the way a third-party plugin would (a module
loaded with `-p`, and the same metric as an entry point for `vlmbench compare`), runs
real benchmarks with it, and finds it in an SLO breach, the results, the terminal
table, a `--vlm-compare` verdict and the CLI's comparison.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench import compare
from pytest_vlmbench.compare.samples import columns_of, samples
from pytest_vlmbench.metrics import registry, slo
from pytest_vlmbench.metrics.registry import Column, Metric, MetricError, fixed
from pytest_vlmbench.metrics.summary import summarize
from pytest_vlmbench.plugin import options
from pytest_vlmbench.report import table
from tests.conftest import Project

# What the table, the SLOs and compare offered before the registry: it must not change.
SCORES = ["count_accuracy", "count_abs_error", "total_accuracy", "colour_accuracy",
          "shape_accuracy", "position_accuracy", "spatial_accuracy", "background_accuracy",
          "gradient_accuracy", "scene_total_accuracy", "colour_precision", "shape_recall",
          "shape_precision", "output_chars", "output_words", "variants", "variant_chars"]
LOWER_IS_BETTER = {"count_abs_error", "output_chars", "output_words", "variant_chars"}
TABLE_HEADERS = ("benchmark", "model", "precision", "ok/n", "p50 s", "p95 s", "TTFT p50 s",
                 "pp tok/s", "decode tok/s", "stream tok/s", "MB/token", "parse", "success",
                 "J/token", "tok/s/W", "% roofline", "SLO")
SLO_NAMES = {
    "max_latency_p50_s", "max_latency_p90_s", "max_latency_p95_s", "max_latency_p99_s",
    "max_latency_mean_s", "max_ttft_p50_s", "max_ttft_p95_s", "min_decode_tokens_per_s",
    "min_prompt_tokens_per_s", "min_stream_tokens_per_s", "min_requests_per_s",
    "min_parse_rate", "min_success_rate", "max_energy_per_token_j",
    "max_above_idle_energy_per_token_j", "max_energy_per_request_j", "min_tokens_per_s_per_w",
    "max_avg_power_w", "max_peak_power_w",
    # The serving figures (OpenAI-compatible servers, load patterns): new objectives only.
    "max_tpot_p50_s", "max_tpot_p95_s", "max_itl_p50_s", "max_itl_p95_s", "max_itl_p99_s",
    "max_client_lag_p95_s", "min_output_tokens_per_s", "min_goodput_rps", "max_cold_latency_s",
    # Offline throughput (batch levels on in-process engines): new objectives only.
    "min_batch_requests_per_s", "min_batch_output_tokens_per_s",
    # Video scenes (metrics/video.py): new objectives only.
    "max_real_time_factor", "max_seconds_per_scene", "max_vlm_s",
    "max_pipeline_real_time_factor", "max_pipeline_s", "max_detection_s",
    "max_extraction_s",
    # The built-in scorers' scores (scoring/metrics.py): new objectives only.
    *(f"{'max' if name in LOWER_IS_BETTER else 'min'}_{name}" for name in SCORES),
}
COMPARED = ["p50_latency", "p90_latency", "p95_latency", "p99_latency", "mean_latency",
            "p50_ttft", "p95_ttft", "prompt_tokens_per_s", "tokens_per_s", "parse_rate",
            "success_rate", "energy_per_token",
            # the serving figures, judged per request as vLLM defines them
            "p50_tpot", "p95_tpot", "p50_itl", "p95_itl", "p99_itl",
            # offline throughput, judged per batch
            "batch_requests_per_s", "batch_output_tokens_per_s",
            # video figures, judged on per-request latencies scaled (video benchmarks only)
            "real_time_factor", "seconds_per_scene", "vlm_s",
            # the scores of the built-in scorers, judged per request
            *SCORES]


def test_builtin_figures_are_unchanged() -> None:
    assert table.headers() == TABLE_HEADERS
    assert set(slo.METRICS) == SLO_NAMES
    assert list(compare.METRICS) == COMPARED


def test_slo_names_say_the_direction() -> None:
    for metric in registry.all_metrics():
        if metric.slo is not None:
            assert metric.slo.startswith("max_" if metric.higher_is_worse else "min_")
    with pytest.raises(ValueError, match="must start with 'min_'"):
        Metric("x", "s", False, "x", ("x",), slo="max_x")


def test_a_declaration_is_refused_when_its_names_are_taken() -> None:
    with pytest.raises(MetricError, match="'p95_latency' is already declared"):
        registry.register(Metric("p95_latency", "s", True, "again", ("latency_s", "p95")))
    with pytest.raises(MetricError, match="SLO 'max_latency_p95_s'"):
        registry.register(Metric("other", "s", True, "again", ("latency_s", "p95"),
                                 slo="max_latency_p95_s"))
    with pytest.raises(ValueError, match="summary path or a per_request"):
        Metric("nowhere", "s", True, "no value anywhere")


def test_a_registered_metric_reaches_every_consumer_and_leaves_cleanly() -> None:
    metric = Metric("chars_per_token", "chars/token", False, "output characters per token",
                    slo="min_chars_per_token", statistic="median",
                    column=Column("chars/tok", fixed(".2f")),
                    per_request=lambda r: len(r["output"]) / r["completion_tokens"]
                    if r["output"] and r["completion_tokens"] else None)
    registry.register(metric)
    try:
        assert registry.register(metric) is metric  # the same object twice: no clash
        assert slo.METRICS["min_chars_per_token"] == (
            ("metrics", "chars_per_token", "value"), ">=", "chars/token")
        assert compare.METRICS["chars_per_token"] is metric
        assert table.headers()[-2] == "chars/tok"
        rule = compare.parse_rule("chars_per_token:-10%")
        assert (rule.metric, rule.threshold, rule.relative) == ("chars_per_token", 0.1, True)
        verdicts = slo.evaluate({"min_chars_per_token": 3.0},
                                {"metrics": {"chars_per_token": {"value": 2.5}}})
        assert verdicts[0]["passed"] is False
        assert verdicts[0]["measured"] == 2.5
    finally:
        registry.unregister("chars_per_token")
    assert "chars_per_token" not in compare.METRICS
    assert table.headers() == TABLE_HEADERS


# A third-party plugin: loaded with -p in the pytest runs, and found through its entry
# point by `vlmbench compare` (the same object: declared once).
PLUGIN = '''
from pytest_vlmbench.metrics.registry import Column, Metric, fixed, register, unregister


def chars_per_token(record):
    if not record["output"] or not record["completion_tokens"]:
        return None
    return len(record["output"]) / record["completion_tokens"]


CHARS_PER_TOKEN = register(Metric(
    "chars_per_token", "chars/token", False, "output characters per completion token",
    slo="min_chars_per_token", column=Column("chars/tok", fixed(".2f")),
    per_request=chars_per_token,
))


def pytest_unconfigure(config):
    unregister("chars_per_token")
'''

BENCH = """
import pytest
from tiny_tasks import CAPTION

@pytest.mark.vlm_slo(min_chars_per_token={limit})
def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""


def _entry_point(folder: Path) -> None:
    info = folder / "vlm_extra_metric-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vlm-extra-metric\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pytest_vlmbench.metrics]\nchars = vlm_extra_metric:CHARS_PER_TOKEN\n")


def test_a_plugin_metric_in_slo_results_table_and_compare(project: Project) -> None:
    pt = project.pytester
    pt.makepyfile(vlm_extra_metric=PLUGIN, test_bench=BENCH.format(limit=1e6))
    first = project.run("-p", "vlm_extra_metric", f"{options.SAMPLES}=6",
                        f"{options.MODELS}=tiny-text")
    first.run.assert_outcomes(failed=1)
    first.run.stdout.fnmatch_lines([
        "SLO breached (n=6): min_chars_per_token = * chars/token < limit 1e+06 chars/token"])
    first.run.stdout.fnmatch_lines(["*p50 s*% roofline*chars/tok*SLO*"])
    doc = first.doc()
    [bench] = doc["benchmarks"]
    figure = bench["summary"]["metrics"]["chars_per_token"]
    records = [r for r in first.records() if r["phase"] == "measure" and r["error"] is None]
    values = sorted(len(r["output"]) / r["completion_tokens"] for r in records
                    if r["output"] and r["completion_tokens"])
    assert figure["n"] == len(values) > 0
    assert figure["value"] == pytest.approx(statistics.median(values))
    assert figure["absent_reason"] is None
    assert {v["metric"] for v in bench["slo"]} == {"min_chars_per_token"}
    saved = pt.path / "baseline"
    saved.mkdir()
    for name in ("results.json", "results.records.jsonl"):
        shutil.copy(first.out.with_name(name), saved / name)
    baseline = saved / "results.json"

    pt.makepyfile(test_bench=BENCH.format(limit=0.5))
    # Only the plugin's metric gates ("none" drops the default rules first): the default
    # latency rule would fail this test whenever the machine is busier in the second run
    # than in the first (seen: p50 +42% while another benchmark ran beside it).
    second = project.run("-p", "vlm_extra_metric", f"{options.SAMPLES}=6",
                         f"{options.MODELS}=tiny-text", f"--vlm-compare={baseline}",
                         "--vlm-fail-on=none,chars_per_token:-50%")
    second.run.assert_outcomes(passed=1)
    second.run.stdout.fnmatch_lines(["*test_caption*chars_per_token*-50% gate*"])

    _entry_point(pt.path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pt.path), *sys.path])}
    cli = subprocess.run([sys.executable, "-m", "pytest_vlmbench.cli", "compare",
                          str(baseline), str(second.out), "--fail-on=none,chars_per_token:-50%"],
                         capture_output=True, text=True, env=env, cwd=pt.path, check=False)
    assert cli.returncode in (0, 3), cli.stderr
    assert any("chars_per_token" in line and "-50% gate" in line
               for line in cli.stdout.splitlines()), cli.stdout


def test_a_computed_metric_may_not_take_a_builtin_sample() -> None:
    with pytest.raises(MetricError, match="sample 'latency' is already used by 'p50_latency'"):
        registry.register(Metric("my_latency", "s", True, "x", sample="latency",
                                 per_request=lambda r: 1.0))


def _raises(record: Any) -> float:
    raise ZeroDivisionError("no tokens")


def test_a_failing_computation_is_an_absent_figure_not_a_lost_benchmark() -> None:
    from tests.test_summary import rec

    metric = registry.register(Metric("fragile", "x", True, "raises", per_request=_raises))
    try:
        records = [rec(i, start=0, first=10, end=100, completion_tokens=3, output="abc")
                   for i in range(3)]
        summary = summarize(records, checks_output=False, load_s=None, peak_rss=None)
        figure = summary["metrics"]["fragile"]
        assert figure["value"] is None
        assert figure["absent_reason"] == "its per_request raised ZeroDivisionError: no tokens"
        found = samples({"summary": summary}, columns_of(records)[("run-1", "bench")])
        assert found.unavailable["fragile"] == "its per_request raised ZeroDivisionError: no tokens"
        assert len(found.of(metric)) == 0
    finally:
        registry.unregister("fragile")
