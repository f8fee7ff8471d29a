"""Tests for slo.py: spec checking, verdicts in both directions, the one-line message."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_vlmbench.metrics.slo import METRICS, SLOError, breach_message, check_spec, evaluate


def summary(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "latency_s": {"median": 1.0, "p90": 1.5, "p95": 2.0, "p99": 3.0, "mean": 1.2},
        "ttft_s": {"median": 0.1, "p95": 0.3},
        "decode_tokens_per_s": 40.0,
        "requests_per_s": 0.8,
        "parse_rate": 0.96,
        "success_rate": 1.0,
    }
    base.update(overrides)
    return base


# --- check_spec ----------------------------------------------------------------------------


def test_check_spec_converts_limits_to_float() -> None:
    spec = check_spec({"max_latency_p95_s": 2, "min_parse_rate": 0.95}, "bench")
    assert spec == {"max_latency_p95_s": 2.0, "min_parse_rate": 0.95}
    assert all(isinstance(v, float) for v in spec.values())


def test_check_spec_empty() -> None:
    assert check_spec({}, "bench") == {}


def test_check_spec_unknown_metric_names_it_and_lists_known() -> None:
    with pytest.raises(SLOError) as info:
        check_spec({"max_latency_p96_s": 1.0}, "test_caption[m]")
    message = str(info.value)
    assert message.startswith("test_caption[m]: ")
    assert "'max_latency_p96_s'" in message
    for name in METRICS:
        assert name in message


@pytest.mark.parametrize("limit", ["2s", None, True, False, [1.0], {"p95": 1}])
def test_check_spec_rejects_non_numbers(limit: Any) -> None:
    with pytest.raises(SLOError) as info:
        check_spec({"max_latency_p95_s": limit}, "bench")
    message = str(info.value)
    assert "'max_latency_p95_s' needs a number" in message
    assert repr(limit) in message


@pytest.mark.parametrize("limit", [float("nan"), float("inf"), float("-inf")])
def test_check_spec_rejects_non_finite_limits(limit: float) -> None:
    # A NaN limit breaches against every measurement ("1 s > limit nan s"), and a
    # non-finite limit cannot be written to the results document at all
    # (json.dump(allow_nan=False) in results.write_atomic raises ValueError).
    with pytest.raises(SLOError, match="'max_latency_p95_s'"):
        check_spec({"max_latency_p95_s": limit}, "bench")


# --- evaluate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "limit", "passed"),
    [
        ("max_latency_p95_s", 2.5, True),
        ("max_latency_p95_s", 2.0, True),  # equal meets a max
        ("max_latency_p95_s", 1.9, False),
        ("max_latency_p50_s", 0.9, False),
        ("max_latency_p90_s", 1.5, True),
        ("max_latency_p99_s", 2.9, False),
        ("max_latency_mean_s", 1.2, True),
        ("max_ttft_p50_s", 0.05, False),
        ("max_ttft_p95_s", 0.5, True),
        ("min_parse_rate", 0.95, True),
        ("min_parse_rate", 0.96, True),  # equal meets a min
        ("min_parse_rate", 0.99, False),
        ("min_success_rate", 1.0, True),
        ("min_decode_tokens_per_s", 50.0, False),
        ("min_decode_tokens_per_s", 30.0, True),
        ("min_requests_per_s", 1.0, False),
    ],
)
def test_evaluate_direction(name: str, limit: float, passed: bool) -> None:
    [verdict] = evaluate({name: limit}, summary())
    path, op, _ = METRICS[name]
    expected_measured: Any = summary()
    for key in path:
        expected_measured = expected_measured[key]
    assert verdict == {
        "metric": name, "op": op, "limit": limit, "measured": expected_measured,
        "passed": passed,
    }


def test_max_metrics_use_le_and_min_metrics_use_ge() -> None:
    for name, (_path, op, _unit) in METRICS.items():
        assert op == ("<=" if name.startswith("max_") else ">=")


@pytest.mark.parametrize(
    ("name", "summ"),
    [
        ("min_parse_rate", summary(parse_rate=None)),
        ("min_parse_rate", {}),
        ("max_latency_p95_s", summary(latency_s={"median": None, "p95": None})),
        ("max_latency_p95_s", summary(latency_s=None)),
        ("max_latency_p95_s", {}),
        ("max_ttft_p95_s", summary(ttft_s={})),
    ],
)
def test_unmeasured_metric_is_a_breach(name: str, summ: dict[str, Any]) -> None:
    # A limit every measurement would meet: only the missing measurement can fail it.
    limit = 1e9 if name.startswith("max_") else 0.0
    [verdict] = evaluate({name: limit}, summ)
    assert verdict["measured"] is None
    assert verdict["passed"] is False


def test_integer_measurements_are_compared_as_floats() -> None:
    [verdict] = evaluate({"min_success_rate": 1.0}, summary(success_rate=1))
    assert verdict["measured"] == 1.0
    assert verdict["passed"]


def test_evaluate_keeps_spec_order() -> None:
    spec = {"min_parse_rate": 0.5, "max_latency_p95_s": 9.0, "min_success_rate": 0.5}
    assert [v["metric"] for v in evaluate(spec, summary())] == list(spec)


# --- breach_message ------------------------------------------------------------------------


def test_breach_message_none_when_all_pass() -> None:
    verdicts = evaluate({"max_latency_p95_s": 5.0, "min_parse_rate": 0.5}, summary())
    assert breach_message(verdicts, 20) is None
    assert breach_message([], 20) is None


def test_breach_message_names_metric_limit_and_measured() -> None:
    verdicts = evaluate({"max_latency_p95_s": 1.5, "min_parse_rate": 0.5}, summary())
    message = breach_message(verdicts, 20)
    assert message == "SLO breached (n=20): max_latency_p95_s = 2 s > limit 1.5 s"


def test_breach_message_min_metric_and_unitless() -> None:
    verdicts = evaluate({"min_parse_rate": 0.99}, summary(parse_rate=0.912345))
    assert breach_message(verdicts, 100) == (
        "SLO breached (n=100): min_parse_rate = 0.9123 < limit 0.99"
    )


def test_breach_message_tokens_per_second_unit() -> None:
    verdicts = evaluate({"min_decode_tokens_per_s": 50}, summary())
    message = breach_message(verdicts, 5)
    assert message is not None
    assert "min_decode_tokens_per_s = 40 tokens/s < limit 50 tokens/s" in message


def test_breach_message_unmeasured() -> None:
    verdicts = evaluate({"max_ttft_p95_s": 0.5}, summary(ttft_s={"p95": None}))
    message = breach_message(verdicts, 0)
    assert message == "SLO breached (n=0): max_ttft_p95_s = not measured > limit 0.5 s"


def test_breach_message_is_one_line_listing_only_breaches() -> None:
    verdicts = evaluate(
        {"max_latency_p95_s": 1.0, "min_parse_rate": 0.5, "min_success_rate": 1.5,
         "max_ttft_p50_s": 0.01},
        summary(),
    )
    message = breach_message(verdicts, 7)
    assert message is not None
    assert "\n" not in message
    assert "max_latency_p95_s" in message
    assert "min_success_rate" in message
    assert "max_ttft_p50_s" in message
    assert "min_parse_rate" not in message
    assert message.count("; ") == 2


# --- video figures (metrics/video.py) ------------------------------------------------------


def _video(**figures: Any) -> dict[str, Any]:
    """A summary with a video benchmark's figures (summary.video)."""
    video = {"real_time_factor": 0.5, "seconds_per_scene": 2.0, "vlm_s": 6.0,
             "pipeline_real_time_factor": 0.565, "pipeline_s": 6.78, "detection_s": 0.5,
             "scenes": 3, "frames_per_scene": 2.0, "absent_reason": None}
    video.update(figures)
    return summary(video=video)


@pytest.mark.parametrize(
    ("name", "limit", "passed"),
    [
        ("max_real_time_factor", 1.0, True),
        ("max_real_time_factor", 0.5, True),
        ("max_real_time_factor", 0.4, False),
        ("max_seconds_per_scene", 1.5, False),
        ("max_vlm_s", 6.0, True),
        ("max_pipeline_real_time_factor", 0.5, False),
        ("max_pipeline_s", 10.0, True),
        ("max_detection_s", 0.1, False),
    ],
)
def test_video_slos(name: str, limit: float, passed: bool) -> None:
    [verdict] = evaluate({name: limit}, _video())
    assert verdict["passed"] is passed
    assert verdict["op"] == "<="


def test_video_slo_breach_is_one_line() -> None:
    verdicts = evaluate({"max_real_time_factor": 0.4, "max_seconds_per_scene": 1.5},
                        _video())
    assert breach_message(verdicts, 3) == (
        "SLO breached (n=3): max_real_time_factor = 0.5 x > limit 0.4 x; "
        "max_seconds_per_scene = 2 s > limit 1.5 s")


@pytest.mark.parametrize("summ", [summary(), _video(real_time_factor=None)],
                         ids=["no video", "figure absent"])
def test_an_absent_video_figure_breaches(summ: dict[str, Any]) -> None:
    [verdict] = evaluate({"max_real_time_factor": 1e9}, summ)
    assert (verdict["measured"], verdict["passed"]) == (None, False)
    assert breach_message([verdict], 2) == (
        "SLO breached (n=2): max_real_time_factor = not measured "
        "(summary.video.absent_reason says why) > limit 1e+09 x")


def test_descriptive_video_figures_are_no_objectives() -> None:
    with pytest.raises(SLOError, match="unknown SLO 'max_scenes'"):
        check_spec({"max_scenes": 3}, "bench")
    with pytest.raises(SLOError, match="unknown SLO 'min_frames_per_scene'"):
        check_spec({"min_frames_per_scene": 3}, "bench")
