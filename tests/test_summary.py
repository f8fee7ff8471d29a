"""Tests for summary.py: every figure checked by hand, then against numpy on random records."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pytest_vlmbench.metrics.summary import METHODS, summarize, warmup_warning
from pytest_vlmbench.results import document as results
from pytest_vlmbench.tasks.structured import ParseOutcome

S = 1_000_000_000  # ns per second
MS = 1_000_000


def rec(
    seq: int,
    *,
    phase: str = "measure",
    start: int | None = None,
    first: int | None = None,
    end: int | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    output: str | None = None,
    parse: str = "valid",
    stages: dict[str, int] | None = None,
    prepare: int | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A record shaped like runner.Runner._one's; an error record carries no timings."""
    return {
        "run_id": "run-1",
        "benchmark": "bench",
        "seq": seq,
        "phase": phase,
        "sample_id": f"s{seq}",
        "model": "m",
        "precision": "q4_k_m",
        "backend": "llama_cpp",
        "device": "cpu",
        "task": "t",
        "t_start_ns": start,
        "t_first_token_ns": first,
        "t_end_ns": end,
        "prepare_ns": prepare,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "finish_reason": None if error else "stop",
        "output": output,
        "parse": parse,
        "parse_detail": None,
        "stages_ns": stages or {},
        "counts": {},
        "images": [],
        "error": error,
    }


def failed(seq: int, *, phase: str = "measure", prepare: int | None = None) -> dict[str, Any]:
    return rec(
        seq, phase=phase, prepare=prepare, parse=ParseOutcome.NO_OUTPUT.value,
        error={"stage": "request", "type": "RuntimeError", "message": "boom"},
    )


def timed(seq: int, latency_s: float, *, phase: str = "measure", start_s: float = 0.0,
          error: bool = False) -> dict[str, Any]:
    if error:
        return failed(seq, phase=phase)
    start = int(start_s * S)
    return rec(seq, phase=phase, start=start, first=start, end=start + int(latency_s * S),
               completion_tokens=1, output="x")


def _validate_summary(summary: dict[str, Any]) -> None:
    sub = {"$defs": results.schema()["$defs"], "$ref": "#/$defs/summary"}
    Draft202012Validator(sub).validate(summary)


@pytest.fixture
def worked() -> list[dict[str, Any]]:
    """A warm-up request and four measured ones: three succeed, one fails."""
    return [
        # Warm-up: slow, and it must leave no trace in the measured figures.
        rec(0, phase="warmup", start=0, first=5 * S, end=10 * S, prompt_tokens=999,
            completion_tokens=999, output="w" * 100, stages={"image_encode": 3 * S},
            prepare=900 * MS),
        rec(1, start=100 * S, first=100 * S + 200 * MS, end=101 * S, prompt_tokens=20,
            completion_tokens=9, output='{"a":1}', parse="valid",
            stages={"prefill": 150 * MS, "decode": 800 * MS}, prepare=5 * MS),
        rec(2, start=101 * S, first=101 * S + 500 * MS, end=103 * S, prompt_tokens=30,
            completion_tokens=31, output="xx", parse="schema_violation",
            stages={"prefill": 450 * MS, "decode": 1500 * MS}, prepare=7 * MS),
        failed(3, prepare=6 * MS),
        # No streamed content (no first token) and a single token: latency only.
        rec(4, start=103 * S, first=None, end=103 * S + 500 * MS, prompt_tokens=10,
            completion_tokens=1, output="", parse="invalid_json",
            stages={"prefill": 400 * MS}),
    ]


def test_counts_and_rates(worked: list[dict[str, Any]]) -> None:
    s = summarize(worked, checks_output=True, load_s=0.75, peak_rss=123456)
    assert s["requests"] == 4
    assert s["succeeded"] == 3
    assert s["failed"] == 1
    assert s["success_rate"] == pytest.approx(0.75)
    assert s["parse"] == {
        "valid": 1, "invalid_json": 1, "schema_violation": 1, "truncated": 0,
        "not_checked": 0, "no_output": 1,
    }
    # The failed request counts as not valid: 1 valid of 4 measured.
    assert s["parse_rate"] == pytest.approx(0.25)
    assert s["load_s"] == 0.75
    assert s["peak_rss_bytes"] == 123456
    _validate_summary(s)


def test_latency_excludes_failed_and_warmup(worked: list[dict[str, Any]]) -> None:
    lat = summarize(worked, checks_output=True, load_s=None, peak_rss=None)["latency_s"]
    # Latencies 1.0, 2.0, 0.5 s; sorted [0.5, 1.0, 2.0].
    assert lat["n"] == 3
    assert lat["mean"] == pytest.approx(3.5 / 3)
    assert lat["min"] == pytest.approx(0.5)
    assert lat["max"] == pytest.approx(2.0)
    assert lat["median"] == pytest.approx(1.0)
    assert lat["p90"] == pytest.approx(1.8)  # h = 2 * 0.9 = 1.8 -> 1.0 + 0.8 * 1.0
    assert lat["p95"] == pytest.approx(1.9)
    assert lat["p99"] == pytest.approx(1.98)
    # deviations from 7/6: -1/6, 5/6, -2/3 -> (1 + 25 + 16)/36 / 2 = 7/12
    assert lat["stdev"] == pytest.approx(math.sqrt(7 / 12))
    assert lat["cv"] == pytest.approx(math.sqrt(7 / 12) / (7 / 6))


def test_ttft_skips_requests_without_a_first_token(worked: list[dict[str, Any]]) -> None:
    ttft = summarize(worked, checks_output=True, load_s=None, peak_rss=None)["ttft_s"]
    assert ttft["n"] == 2
    assert ttft["mean"] == pytest.approx(0.35)
    assert ttft["min"] == pytest.approx(0.2)
    assert ttft["max"] == pytest.approx(0.5)


def test_decode_rate_is_total_tokens_over_total_decode_time(
    worked: list[dict[str, Any]],
) -> None:
    s = summarize(worked, checks_output=True, load_s=None, peak_rss=None)
    # (9-1) tokens in 0.8 s and (31-1) in 1.5 s: 38 tokens / 2.3 s, not the mean of 10 and 20.
    assert s["decode_tokens_per_s"] == pytest.approx(38 / 2.3)
    per = s["stream_tokens_per_s_per_request"]
    assert per["n"] == 2
    assert per["min"] == pytest.approx(10.0)
    assert per["max"] == pytest.approx(20.0)
    assert per["mean"] == pytest.approx(15.0)


def test_wall_and_requests_per_second(worked: list[dict[str, Any]]) -> None:
    s = summarize(worked, checks_output=True, load_s=None, peak_rss=None)
    # First measured start 100 s, last end 103.5 s; the warm-up at 0 s is not counted.
    assert s["wall_s"] == pytest.approx(3.5)
    assert s["requests_per_s"] == pytest.approx(3 / 3.5)


def test_means_over_successful_requests(worked: list[dict[str, Any]]) -> None:
    s = summarize(worked, checks_output=True, load_s=None, peak_rss=None)
    assert s["prompt_tokens_mean"] == pytest.approx(20.0)  # (20 + 30 + 10) / 3
    assert s["completion_tokens_mean"] == pytest.approx(41 / 3)  # (9 + 31 + 1) / 3
    assert s["output_chars_mean"] == pytest.approx(3.0)  # (7 + 2 + 0) / 3


def test_stage_distributions(worked: list[dict[str, Any]]) -> None:
    stages = summarize(worked, checks_output=True, load_s=None, peak_rss=None)["stages_s"]
    # image_encode appeared only in the warm-up record.
    assert set(stages) == {"prefill", "decode", "prepare", "unattributed"}
    # What the stages leave of each successful request's latency.
    assert stages["unattributed"]["n"] == 3
    assert stages["prefill"]["n"] == 3
    assert stages["prefill"]["mean"] == pytest.approx((0.15 + 0.45 + 0.4) / 3)
    assert stages["prefill"]["median"] == pytest.approx(0.4)
    assert stages["decode"]["n"] == 2
    assert stages["decode"]["mean"] == pytest.approx(1.15)
    # prepare counts every measured request that prepared an image, failed ones too.
    assert stages["prepare"]["n"] == 3
    assert stages["prepare"]["mean"] == pytest.approx(0.006)
    assert stages["prepare"]["max"] == pytest.approx(0.007)


def test_parse_rate_is_none_for_free_text_tasks(worked: list[dict[str, Any]]) -> None:
    s = summarize(worked, checks_output=False, load_s=None, peak_rss=None)
    assert s["parse_rate"] is None
    assert s["success_rate"] == pytest.approx(0.75)


def test_all_requests_failed() -> None:
    s = summarize([failed(0), failed(1)], checks_output=True, load_s=None, peak_rss=None)
    assert (s["requests"], s["succeeded"], s["failed"]) == (2, 0, 2)
    assert s["success_rate"] == 0.0
    assert s["parse_rate"] == 0.0
    assert s["latency_s"]["n"] == 0
    assert s["latency_s"]["median"] is None
    assert s["decode_tokens_per_s"] is None
    assert s["requests_per_s"] is None
    assert s["wall_s"] is None
    assert s["prompt_tokens_mean"] is None
    assert s["stages_s"] == {}
    _validate_summary(s)


@pytest.mark.parametrize("records", [[], [timed(0, 1.0, phase="warmup")]])
def test_nothing_measured(records: list[dict[str, Any]]) -> None:
    s = summarize(records, checks_output=True, load_s=None, peak_rss=None)
    assert s["requests"] == 0
    assert s["success_rate"] is None
    assert s["parse_rate"] is None
    assert s["latency_s"]["n"] == 0
    assert s["requests_per_s"] is None
    _validate_summary(s)


def test_methods_document_every_convention() -> None:
    for key in ("percentile", "stdev", "latency", "ttft", "decode_tokens_per_s",
                "success_rate", "parse_rate", "requests_per_s"):
        assert isinstance(METHODS[key], str)
        assert METHODS[key]


# --- warm-up warning -------------------------------------------------------------------


def test_warmup_warning_fires_when_first_requests_are_slow() -> None:
    records = [timed(i, lat) for i, lat in enumerate([3.0, 2.5, 1.0, 1.1, 0.9, 1.0])]
    message = warmup_warning(records)
    assert message is not None
    assert "--vlm-warmup" in message
    assert "first 2" in message


@pytest.mark.parametrize(
    "latencies",
    [
        [1.0, 1.1, 1.0, 0.9, 1.0, 1.2],  # steady
        [0.2, 0.3, 1.0, 1.0, 1.0],  # faster at first
        [1.5, 1.5, 1.0, 1.0, 1.0],  # exactly factor 1.5: not "clearly" slower
        [5.0, 5.0, 1.0, 1.0],  # too few requests to judge
    ],
)
def test_warmup_warning_quiet_otherwise(latencies: list[float]) -> None:
    assert warmup_warning([timed(i, lat) for i, lat in enumerate(latencies)]) is None


def test_warmup_warning_just_above_factor() -> None:
    assert warmup_warning([timed(i, lat) for i, lat in enumerate([1.6, 1.6, 1, 1, 1])])


def test_warmup_warning_ignores_warmup_phase_and_failures() -> None:
    records = [
        timed(0, 9.0, phase="warmup"),
        timed(1, 9.0, phase="warmup"),
        timed(2, 0.0, error=True),
        timed(3, 1.0),
        timed(4, 1.0),
        timed(5, 1.0),
        timed(6, 1.1),
        timed(7, 0.9),
    ]
    assert warmup_warning(records) is None
    # The same slow requests measured instead would be flagged.
    records[0]["phase"] = records[1]["phase"] = "measure"
    assert warmup_warning(records) is not None


def test_warmup_warning_respects_head_and_factor() -> None:
    records = [timed(i, lat) for i, lat in enumerate([2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0])]
    assert warmup_warning(records, head=3, factor=1.5) is not None
    assert warmup_warning(records, head=3, factor=2.5) is None


def test_warmup_warning_reports_true_medians() -> None:
    # The message labels both figures "median": for the first two requests (4 s, 2 s)
    # that is 3 s, and for the rest (1, 1, 2, 2 s) it is 1.5 s.
    records = [timed(i, lat) for i, lat in enumerate([4.0, 2.0, 1.0, 1.0, 2.0, 2.0])]
    message = warmup_warning(records)
    assert message is not None
    assert "took 3.000 s (median) against 1.500 s" in message


# --- property: summary equals an independent recomputation with numpy -------------------

PARSE_OK = [o.value for o in ParseOutcome if o is not ParseOutcome.NO_OUTPUT]
STAGES = ["prefill", "decode", "image_encode"]


@st.composite
def records_strategy(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    n = draw(st.integers(0, 25))
    for seq in range(n):
        phase = draw(st.sampled_from(["warmup", "measure", "measure", "measure"]))
        prepare = draw(st.none() | st.integers(0, 10 * S))
        if draw(st.integers(0, 4)) == 0:
            out.append(failed(seq, phase=phase, prepare=prepare))
            continue
        start = draw(st.integers(0, 10**12))
        duration = draw(st.integers(1, 100 * S))
        first = draw(st.none() | st.integers(start, start + duration))
        out.append(rec(
            seq, phase=phase, start=start, first=first, end=start + duration,
            prompt_tokens=draw(st.none() | st.integers(0, 4096)),
            completion_tokens=draw(st.none() | st.integers(0, 2048)),
            output=draw(st.none() | st.text(max_size=20)),
            parse=draw(st.sampled_from(PARSE_OK)),
            stages=draw(st.dictionaries(st.sampled_from(STAGES), st.integers(0, 10 * S))),
            prepare=prepare,
        ))
    return out


def _assert_distribution(d: dict[str, Any], values: list[float]) -> None:
    assert d["n"] == len(values)
    if not values:
        assert d["mean"] is None
        return
    arr = np.array(values, dtype=float)
    assert d["mean"] == pytest.approx(arr.mean(), rel=1e-9)
    assert d["min"] == pytest.approx(arr.min(), rel=1e-12)
    assert d["max"] == pytest.approx(arr.max(), rel=1e-12)
    for key, q in (("median", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert d[key] == pytest.approx(np.percentile(arr, q), rel=1e-9, abs=1e-12), key
    if len(values) > 1:
        sd = float(np.std(arr, ddof=1))
        assert d["stdev"] == pytest.approx(sd, rel=1e-7, abs=1e-12 * arr.max())
    else:
        assert d["stdev"] is None


@settings(max_examples=40, deadline=None)
@given(records=records_strategy(), checks_output=st.booleans())
def test_summary_equals_numpy_recomputation(
    records: list[dict[str, Any]], checks_output: bool
) -> None:
    s = summarize(records, checks_output=checks_output, load_s=None, peak_rss=None)
    measured = [r for r in records if r["phase"] == "measure"]
    ok = [r for r in measured if r["error"] is None]
    n = len(measured)

    assert s["requests"] == n
    assert s["succeeded"] == len(ok)
    assert s["failed"] == n - len(ok)
    assert s["success_rate"] == (len(ok) / n if n else None)

    start = np.array([r["t_start_ns"] for r in ok], dtype=np.int64)
    end = np.array([r["t_end_ns"] for r in ok], dtype=np.int64)
    _assert_distribution(s["latency_s"], list((end - start) / 1e9))

    with_first = [r for r in ok if r["t_first_token_ns"] is not None]
    _assert_distribution(
        s["ttft_s"], [(r["t_first_token_ns"] - r["t_start_ns"]) / 1e9 for r in with_first]
    )

    dec = [r for r in with_first
           if (r["completion_tokens"] or 0) >= 2 and r["t_end_ns"] > r["t_first_token_ns"]]
    tokens = np.array([r["completion_tokens"] - 1 for r in dec], dtype=np.int64)
    spans = np.array([r["t_end_ns"] - r["t_first_token_ns"] for r in dec], dtype=np.int64)
    if dec:
        assert s["decode_tokens_per_s"] == pytest.approx(
            tokens.sum() / (spans.sum() / 1e9), rel=1e-9
        )
    else:
        assert s["decode_tokens_per_s"] is None
    _assert_distribution(s["stream_tokens_per_s_per_request"], list(tokens / (spans / 1e9)))

    if ok:
        wall = (end.max() - start.min()) / 1e9
        assert s["wall_s"] == pytest.approx(wall, rel=1e-12)
        assert s["requests_per_s"] == (pytest.approx(len(ok) / wall) if wall else None)
    else:
        assert s["wall_s"] is None
        assert s["requests_per_s"] is None

    valid = sum(r["parse"] == "valid" for r in measured)
    assert s["parse"]["valid"] == valid
    assert sum(s["parse"].values()) == n
    assert s["parse"]["no_output"] == n - len(ok)
    assert s["parse_rate"] == (valid / n if checks_output and n else None)

    for key, field in (("prompt_tokens_mean", "prompt_tokens"),
                       ("completion_tokens_mean", "completion_tokens")):
        vals = [r[field] for r in ok if r[field] is not None]
        assert s[key] == (pytest.approx(np.mean(vals)) if vals else None)

    for name in STAGES:
        vals = [r["stages_ns"][name] / 1e9 for r in ok if name in r["stages_ns"]]
        if vals:
            _assert_distribution(s["stages_s"][name], vals)
        else:
            assert name not in s["stages_s"]
    prepared = [r["prepare_ns"] / 1e9 for r in measured if r["prepare_ns"] is not None]
    if prepared:
        _assert_distribution(s["stages_s"]["prepare"], prepared)
    else:
        assert "prepare" not in s["stages_s"]
    _validate_summary(s)


def test_decode_rate_counts_the_end_of_generation_step() -> None:
    """A request that stops on end-of-generation sampled one more token than it returned.

    25 content tokens + EOG: 25 tokens were sampled after the first, each a decode step
    inside the first-token-to-end window, so the rate is 25 / window, not 24 / window.
    """
    stopped = rec(0, start=0, first=100_000_000, end=600_000_000, completion_tokens=25)
    stopped["finish_reason"] = "stop"
    stopped["counts"] = {"decode_tokens": 25}
    summary = summarize([stopped], checks_output=False, load_s=None, peak_rss=None)
    assert summary["decode_tokens_per_s"] == pytest.approx(25 / 0.5)
    # Without the backend's count, completion_tokens - 1 is the documented fallback.
    stopped["counts"] = {}
    summary = summarize([stopped], checks_output=False, load_s=None, peak_rss=None)
    assert summary["decode_tokens_per_s"] == pytest.approx(24 / 0.5)


def test_engine_decode_rate_comes_from_the_backend_counters() -> None:
    """With llama.cpp's counters on every request, decode rate is the engine's (as
    llama-bench tg), and the streamed rate, which includes sampling, stays separate."""
    a = rec(0, start=0, first=100_000_000, end=1_100_000_000, completion_tokens=11)
    a["stages_ns"] = {"decode": 500_000_000}
    a["counts"] = {"decode_evals": 10, "decode_tokens": 10}
    b = rec(1, start=0, first=100_000_000, end=1_100_000_000, completion_tokens=21)
    b["stages_ns"] = {"decode": 500_000_000}
    b["counts"] = {"decode_evals": 20, "decode_tokens": 20}
    s = summarize([a, b], checks_output=False, load_s=None, peak_rss=None)
    assert s["decode_source"] == "engine"
    assert s["decode_tokens_per_s"] == pytest.approx(30 / 1.0)
    assert s["stream_tokens_per_s"] == pytest.approx(30 / 2.0)
    b["counts"] = {"decode_tokens": 20}  # one request without counters: no engine figure
    s = summarize([a, b], checks_output=False, load_s=None, peak_rss=None)
    assert s["decode_source"] == "stream"
    assert s["decode_tokens_per_s"] == s["stream_tokens_per_s"] == pytest.approx(15.0)
