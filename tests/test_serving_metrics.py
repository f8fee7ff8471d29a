"""The serving figures, defined as `vllm bench serve` defines them, on records built here.

TPOT = (E2EL - TTFT) / (output tokens - 1) for requests with at least 2 output tokens;
ITL = every gap between consecutive content chunks, pooled across requests (compare's
per-request sample is each request's mean gap); goodput = requests meeting every
per-request limit / wall time; output tokens/s = completion tokens / wall time. The
records here are constructed so each figure can be computed by hand; the same
definitions run on real requests in tests/test_load_patterns.py.
"""

from __future__ import annotations

import math
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_vlmbench import compare
from pytest_vlmbench.backends import Response
from pytest_vlmbench.compare.samples import columns_of, samples
from pytest_vlmbench.metrics import per_request, registry, serving, slo
from pytest_vlmbench.metrics.summary import METHODS, summarize
from pytest_vlmbench.power import Reading
from pytest_vlmbench.power.energy import attribute
from pytest_vlmbench.report import table
from pytest_vlmbench.results.document import validate, validate_record
from pytest_vlmbench.results.models import BenchmarkEntry, Record, Summary
from pytest_vlmbench.run.requests import ConstraintCheck
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ParseOutcome
from tests.test_results import benchmark_entry, minimal_doc

MS = 1_000_000


def rec(seq: int, *, start: int = 0, ttft_ms: float | None = 10.0, e2el_ms: float = 100.0,
        tokens: int | None = 10, chunks_ms: list[float] | None = None, phase: str = "measure",
        error: bool = False, **extra: Any) -> dict[str, Any]:
    """A record as the runner writes it; times in ms after `start` (ns)."""
    record: dict[str, Any] = {
        "run_id": "r", "benchmark": "b", "seq": seq, "phase": phase, "sample_id": f"s{seq}",
        "model": "m", "precision": "q4", "backend": "openai", "device": "cpu", "task": "t",
        "t_start_ns": start,
        "t_first_token_ns": None if ttft_ms is None or error else start + round(ttft_ms * MS),
        "t_end_ns": start + round(e2el_ms * MS), "prepare_ns": None, "prompt_tokens": 5,
        "completion_tokens": None if error else tokens, "finish_reason": "stop",
        "output": None if error else "x", "parse": "not_checked", "parse_detail": None,
        "stages_ns": {}, "counts": {}, "images": [],
        "error": {"stage": "request", "type": "E", "message": "boom"} if error else None,
    }
    if chunks_ms is not None:
        record["chunks_ns"] = [round(c * MS) for c in chunks_ms]
    record.update(extra)
    return record


def summary_of(records: list[dict[str, Any]], checks_output: bool = False,
               **slo_limits: float) -> dict[str, Any]:
    """The summary as a plain dict (the tests read keys a Summary may lack)."""
    return dict(summarize(cast("list[Record]", records), checks_output=checks_output,
                          load_s=None, peak_rss=None, slo=slo_limits))


# --- TPOT and ITL ---------------------------------------------------------------------


@given(ttft=st.integers(0, 10**9), decode=st.integers(0, 10**10), tokens=st.integers(0, 5000))
def test_tpot_is_e2el_minus_ttft_over_tokens_after_the_first(ttft: int, decode: int,
                                                             tokens: int) -> None:
    r = rec(0, start=123, ttft_ms=ttft / MS, e2el_ms=(ttft + decode) / MS, tokens=tokens)
    tpot = per_request.tpot_s(r)
    if tokens < 2:
        assert tpot is None  # vLLM leaves such requests out of TPOT
    else:
        assert tpot is not None
        e2el = (r["t_end_ns"] - r["t_start_ns"]) / 1e9
        ttft_s = (r["t_first_token_ns"] - r["t_start_ns"]) / 1e9
        assert math.isclose(tpot * (tokens - 1), e2el - ttft_s, rel_tol=1e-9, abs_tol=1e-12)


@given(st.lists(st.integers(0, 10**8), min_size=0, max_size=40))
def test_itl_gaps_and_the_requests_mean_gap(steps: list[int]) -> None:
    chunks = [sum(steps[: i + 1]) for i in range(len(steps))]  # non-decreasing arrivals
    r = rec(0, chunks_ms=[c / MS for c in chunks])
    gaps = per_request.itl_gaps_s(r)
    assert len(gaps) == max(0, len(chunks) - 1)
    assert all(g >= 0 for g in gaps)
    mean = per_request.mean_itl_s(r)
    if len(chunks) < 2:
        assert mean is None
    else:
        assert mean is not None
        assert math.isclose(math.fsum(gaps), (chunks[-1] - chunks[0]) / 1e9, abs_tol=1e-12)
        assert math.isclose(mean, math.fsum(gaps) / len(gaps), rel_tol=1e-9, abs_tol=1e-15)


def test_itl_pools_every_gap_across_requests_as_vllm_does() -> None:
    records = [rec(0, chunks_ms=[10, 20, 40]), rec(1, start=5 * MS, chunks_ms=[10, 11]),
               rec(2, chunks_ms=[10])]  # one chunk: no gap
    s = summary_of(records)
    assert s["itl_s"]["n"] == 3
    assert s["itl_s"]["max"] == pytest.approx(0.020)
    assert s["itl_s"]["min"] == pytest.approx(0.001)
    assert s["itl_s"]["mean"] == pytest.approx((0.010 + 0.020 + 0.001) / 3)


def test_tpot_distribution_and_output_token_rate() -> None:
    records = [rec(0, ttft_ms=10, e2el_ms=100, tokens=10),  # 90 ms / 9 = 10 ms
               rec(1, start=100 * MS, ttft_ms=20, e2el_ms=100, tokens=5),  # 80 / 4 = 20 ms
               rec(2, start=200 * MS, ttft_ms=20, e2el_ms=100, tokens=1),  # no TPOT
               rec(3, start=300 * MS, error=True)]
    s = summary_of(records)
    assert s["tpot_s"]["n"] == 2
    assert s["tpot_s"]["median"] == pytest.approx(0.015)
    assert s["wall_s"] == pytest.approx(0.4)
    assert s["output_tokens_per_s"] == pytest.approx(16 / 0.4)
    for absent in ("itl_s", "client_lag_s", "cold", "server", "retries", "tokens_source"):
        assert absent not in s  # nothing in these records gives them


# --- goodput --------------------------------------------------------------------------


def test_goodput_counts_requests_meeting_every_per_request_limit() -> None:
    records = [
        rec(0, ttft_ms=10, e2el_ms=100, tokens=10),  # good for all limits below
        rec(1, start=100 * MS, ttft_ms=60, e2el_ms=100, tokens=10),  # TTFT too slow
        rec(2, start=200 * MS, ttft_ms=10, e2el_ms=300, tokens=10),  # E2EL too slow
        rec(3, start=300 * MS, ttft_ms=10, e2el_ms=100, tokens=2),  # TPOT 90 ms too slow
        rec(4, start=400 * MS, ttft_ms=10, e2el_ms=100, tokens=1),  # TPOT 0 (vLLM): good
        rec(5, start=500 * MS, error=True),
    ]
    s = summary_of(records, max_latency_p95_s=0.5, max_latency_p50_s=0.2,
                   max_ttft_p95_s=0.05, max_tpot_p50_s=0.02, min_parse_rate=0.9)
    assert s["goodput_slo"] == {"e2el_s": 0.2, "ttft_s": 0.05, "tpot_s": 0.02}  # the smallest
    assert s["goodput_rps"] == pytest.approx(2 / s["wall_s"])
    assert s["goodput_absent_reason"] is None


def test_goodput_without_per_request_slo_is_null_with_a_reason() -> None:
    s = summary_of([rec(0)], min_parse_rate=0.9, max_itl_p99_s=0.1)
    assert s["goodput_rps"] is None
    assert s["goodput_slo"] == {}
    assert "no per-request SLO" in s["goodput_absent_reason"]


def test_a_request_without_ttft_cannot_meet_a_ttft_or_tpot_limit() -> None:
    records = [rec(0, ttft_ms=None, e2el_ms=50)]
    assert summary_of(records, max_ttft_p50_s=1.0)["goodput_rps"] == 0
    assert summary_of(records, max_tpot_p50_s=1.0)["goodput_rps"] == 0
    assert summary_of(records, max_latency_p50_s=1.0)["goodput_rps"] == pytest.approx(20.0)


# --- cold, lag, retries, token sources -------------------------------------------------


def test_cold_requests_are_summarised_apart_from_the_measured_ones() -> None:
    records = [rec(0, phase="cold", ttft_ms=900, e2el_ms=1500),
               rec(1, start=2000 * MS, e2el_ms=100), rec(2, start=2100 * MS, e2el_ms=100)]
    s = summary_of(records)
    assert s["cold"] == {"requests": 1, "failed": 0, "latency_s": 1.5, "ttft_s": 0.9}
    assert s["requests"] == 2
    assert s["latency_s"]["max"] == pytest.approx(0.1)  # never mixed into the warm figures
    assert s["wall_s"] == pytest.approx(0.2)
    failed_cold = summary_of([rec(0, phase="cold", error=True), rec(1, e2el_ms=10)])
    assert failed_cold["cold"] == {"requests": 1, "failed": 1, "latency_s": None,
                                   "ttft_s": None}


def test_client_lag_retries_and_token_sources() -> None:
    records = [rec(0, start=10 * MS, scheduled_ns=8 * MS, retries=1, rate_limited=1,
                   tokens_source="usage"),
               rec(1, start=20 * MS, scheduled_ns=20 * MS, retries=0, rate_limited=0,
                   tokens_source="counted"),
               rec(2, start=30 * MS, scheduled_ns=25 * MS, error=True, retries=2,
                   rate_limited=0)]
    s = summary_of(records)
    assert s["client_lag_s"]["n"] == 3
    assert s["client_lag_s"]["max"] == pytest.approx(0.005)
    assert s["client_lag_s"]["min"] == 0
    assert (s["retries"], s["rate_limited"]) == (3, 1)
    assert s["tokens_source"] == {"counted": 1, "usage": 1}
    assert serving.retry_warning(cast("Summary", s)) is not None


# --- documents, registry, compare, table ----------------------------------------------


def serving_entry() -> dict[str, Any]:
    records = [rec(i, start=i * 50 * MS, chunks_ms=[10, 30, 60, 100], scheduled_ns=i * 50 * MS,
                   level="c4", retries=0, rate_limited=0, tokens_source="usage")
               for i in range(4)]
    records.insert(0, rec(-1, phase="cold", e2el_ms=900))
    entry = benchmark_entry(records)
    entry["summary"] = summary_of(records, max_latency_p95_s=1.0)
    entry["summary"]["server"] = serving.server_summary(
        {"rss_bytes": 1, "rss_peak_bytes": 2, "cpu_s": 1.0, "processes": 1},
        {"rss_bytes": 10, "rss_peak_bytes": 20, "cpu_s": 1.5, "processes": 2}, 4)
    entry["load"] = {"pattern": "concurrency", "label": "c4", "concurrency": 4,
                     "rate_rps": None, "arrival": None, "burstiness": None,
                     "max_concurrency": None}
    entry["records"]["cold"] = 1
    return entry


def test_a_serving_entry_and_its_records_are_valid() -> None:
    entry = serving_entry()
    doc = minimal_doc()
    doc["benchmarks"] = [entry]
    validate(doc)
    server = entry["summary"]["server"]
    assert server["cpu_s"] == pytest.approx(0.5)
    assert server["cpu_s_per_request"] == pytest.approx(0.125)
    assert (server["rss_bytes"], server["processes"]) == (10, 2)
    for r in [rec(0, chunks_ms=[1, 2], scheduled_ns=5, level="r2.5", retries=1,
                  rate_limited=0, tokens_source="counted"),
              rec(1, phase="cold", parse="constraint_ignored")]:
        validate_record(r)


def test_server_counters_that_cannot_be_read_are_absent_with_a_reason() -> None:
    block = serving.server_summary(None, {"cpu_s": 1.0}, 3)
    assert block["cpu_s"] is None
    assert block["absent_reason"]


def test_the_new_figures_are_declared_once_for_every_consumer() -> None:
    names = registry.by_name()
    for name, slo_name, path in [
        ("p50_tpot", "max_tpot_p50_s", ("tpot_s", "median")),
        ("p95_tpot", "max_tpot_p95_s", ("tpot_s", "p95")),
        ("p50_itl", "max_itl_p50_s", ("itl_s", "median")),
        ("p95_itl", "max_itl_p95_s", ("itl_s", "p95")),
        ("p99_itl", "max_itl_p99_s", ("itl_s", "p99")),
        ("p95_client_lag", "max_client_lag_p95_s", ("client_lag_s", "p95")),
        ("output_tokens_per_s", "min_output_tokens_per_s", ("output_tokens_per_s",)),
        ("goodput", "min_goodput_rps", ("goodput_rps",)),
        ("cold_latency", "max_cold_latency_s", ("cold", "latency_s")),
    ]:
        assert names[name].slo == slo_name
        assert names[name].summary == path
        assert slo_name in slo.METRICS
    assert {"p50_tpot", "p95_tpot", "p50_itl", "p95_itl", "p99_itl"} <= set(compare.METRICS)
    assert "cold_latency" not in compare.METRICS  # one request: nothing to judge
    s = serving_entry()["summary"]
    verdicts = slo.evaluate({"min_goodput_rps": 1.0, "max_cold_latency_s": 0.5,
                             "max_tpot_p50_s": 0.05}, s)
    assert [v["passed"] for v in verdicts] == [True, False, True]


def test_compare_samples_tpot_and_the_requests_mean_itl() -> None:
    entry = serving_entry()
    records = [rec(i, chunks_ms=[10, 30, 60, 100], tokens=4) for i in range(3)]
    records.append(rec(3, tokens=1))  # no TPOT, no chunks
    (cols,) = columns_of(records).values()
    got = samples(entry, cols)
    assert list(got.values["tpot"]) == pytest.approx([0.030] * 3)  # (100 - 10) ms / 3
    assert list(got.values["itl"]) == pytest.approx([0.030] * 3)  # (100 - 10) ms / 3
    (plain,) = columns_of([rec(0)]).values()
    assert "p50_itl" in samples(entry, plain).unavailable


def test_the_table_shows_serving_columns_only_for_serving_benchmarks() -> None:
    plain = benchmark_entry([rec(i, start=i * 200 * MS) for i in range(3)])
    plain["summary"] = summary_of([rec(i, start=i * 200 * MS) for i in range(3)])
    entries = cast("list[BenchmarkEntry]", [plain, serving_entry()])
    assert table.headers(entries[:1]) == table.headers()  # as before
    assert table.render(entries[:1])[0].startswith("benchmark")
    lines = table.render(entries)
    head = lines[0]
    for column in ("level", "TPOT p50 ms", "ITL p50 ms", "out tok/s", "goodput r/s", "cold s"):
        assert column in head
    assert " c4 " in lines[3]
    assert " seq " in lines[2]


def test_every_new_figure_is_documented() -> None:
    for key in ("tpot", "itl", "client_lag", "output_tokens_per_s", "goodput", "cold",
                "server", "retries", "tokens_source", "constraint_ignored", "load"):
        assert METHODS[key]


# --- constraint ignored ---------------------------------------------------------------

SCHEMA_TASK = Task(name="yn", prompt="Answer.", expects_json=True, schema={
    "type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
    "required": ["answer"], "additionalProperties": False})


def response(text: str, finish: str, counts: dict[str, int] | None = None) -> Response:
    return Response(text, finish, 3, 2, 0, 5, 10, counts=counts or {}, chunk_ns=[5, 7],
                    tokens_source="usage")


@pytest.mark.parametrize(("text", "finish", "server", "outcome"), [
    ("not json at all", "stop", True, "constraint_ignored"),  # a sampler could not end there
    # a schema violation stays the model's: a server's schema-to-grammar may be looser
    ('{"answer": "maybe"}', "stop", True, "schema_violation"),
    ('{"answer": "yes"}', "stop", True, "valid"),
    ('{"answer": ', "length", True, "truncated"),  # cut by the token limit: the model's
    ("not json at all", "stop", False, "invalid_json"),  # in-process: the model's own
])
def test_a_server_that_ignored_the_constraint_is_told_apart(
        text: str, finish: str, server: bool, outcome: str) -> None:
    check = ConstraintCheck.of(SCHEMA_TASK, SCHEMA_TASK.checker(), object(), server=server)
    r = rec(0)
    check.fill(cast("Record", r), response(text, finish))
    assert r["parse"] == outcome
    if outcome == "constraint_ignored":
        assert "server ignored the schema constraint" in r["parse_detail"]
    validate_record(r)


def test_a_response_marked_constrained_counts_without_an_async_model() -> None:
    check = ConstraintCheck.of(SCHEMA_TASK, SCHEMA_TASK.checker(), object(), server=False)
    assert check.ignored(ParseOutcome.INVALID_JSON,
                         response("x", "stop", {"constrained": 1}))
    unconstrained = ConstraintCheck.of(SCHEMA_TASK, SCHEMA_TASK.checker(), None, server=True)
    assert not unconstrained.ignored(ParseOutcome.INVALID_JSON, response("x", "stop"))


def test_the_summary_counts_and_warns_about_ignored_constraints() -> None:
    records = [rec(0, parse="constraint_ignored"), rec(1, start=MS, parse="valid")]
    s = summary_of(records, checks_output=True)
    assert s["parse"]["constraint_ignored"] == 1
    assert s["parse_rate"] == 0.5
    warning = serving.ignored_warning(cast("Summary", s), "vllm")
    assert warning == ("the server ignored the constraint in 1 of 2 requests (dialect vllm); "
                       "check [model.endpoint] dialect")
    assert "constraint_ignored" not in summary_of([rec(0)])["parse"]  # old documents: as they were


# --- energy under overlapping requests ------------------------------------------------


def test_overlapping_requests_get_no_per_request_energy() -> None:
    """At a constant 10 W, two requests spanning the same second would each be given
    10 J by per-request attribution: 20 J from a meter that saw 10 J. The window's
    energy stays; per-request energy is dropped with a warning."""
    readings = [Reading(t_ns=t * 100 * MS, power_w=10.0) for t in range(-1, 13)]
    records = [rec(0, start=0, e2el_ms=1000), rec(1, start=1, e2el_ms=1000)]
    typed = cast("list[Record]", records)
    energy = attribute(readings, typed, resolution_s=0.1, idle_power_w=None, vision=False)
    assert energy["energy_j"] == pytest.approx(10.0, rel=1e-3)
    assert sum(p["energy_j"] for p in energy["per_request"]) == pytest.approx(20.0, rel=1e-3)
    s = summary_of(records)
    s["energy"] = energy
    assert serving.overlapping(typed) == 2
    serving.drop_overlapping_energy(cast("Summary", s), typed)
    assert s["energy"]["per_request"] == []
    assert s["energy"]["energy_j"] == pytest.approx(10.0, rel=1e-3)
    assert "overlapped" in s["energy"]["warnings"][-1]
    sequential = [rec(0, start=0, e2el_ms=500), rec(1, start=500 * MS, e2el_ms=500)]
    assert serving.overlapping(cast("list[Record]", sequential)) == 0
