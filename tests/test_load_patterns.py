"""Load patterns: the `--vlm-load` and marker syntax, the arrival schedule, and the driver
on real requests.

The schedule is checked as properties (vLLM's `get_request`: gamma gaps of mean 1/rate,
shape = burstiness, rescaled to end at n / rate), on a fixed seed so that no draw can
make a test flaky. The driver runs real HTTP requests: `tools/null_server.py` (a bare
asyncio streaming server) in a subprocess, and the real client, `OpenAIModel`, streaming
from it with aiohttp. A thin wrapper counts the requests in flight around `agenerate`.
On those runs: a closed loop of N never has more than N in flight, an open loop sends at
its drawn times (a small lag uncapped, a growing one under a concurrency cap), every
request is recorded once, and chunk times lie within the latency. The Runner is then run
under a load level against the same server, and sequentially on the in-process
llama.cpp backend, whose document gains only optional keys.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vlmbench.backends import Capabilities, LoadContext, Request, Response, get_backend
from pytest_vlmbench.datasets import ImagePrep
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.models.catalog import load_catalog
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.results.document import validate, validate_record
from pytest_vlmbench.results.models import BenchmarkEntry
from pytest_vlmbench.run.load import (
    LoadLevel,
    LoadPatternError,
    Outcome,
    UnsupportedLoad,
    drive,
    gaps_s,
    highest_level_met,
    levels_from_marker,
    parse_load,
    schedule_s,
)
from pytest_vlmbench.run.records import RecordWriter, read_records
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.tasks import GenerationParams, Task
from tests.conftest import TINY_CATALOG
from tests.test_results import minimal_doc

openai_http = pytest.importorskip("pytest_vlmbench.backends.openai_http")
T = TypeVar("T")
NULL_SERVER = Path(__file__).resolve().parents[1] / "tools" / "null_server.py"
CHUNKS = 8
CAPTION = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=8))


# --- syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "labels"), [
    ("sequential", ["seq"]),
    ("concurrency:1,4,8", ["c1", "c4", "c8"]),
    ("rate:2,4", ["r2", "r4"]),
    ("rate:2.5", ["r2.5"]),
    ("rate:2,4:gamma:0.5", ["r2-gamma0.5", "r4-gamma0.5"]),
    ("rate:8:poisson:1:max=16", ["r8-max16"]),
    ("rate:3:constant", ["r3-constant"]),
])
def test_the_option_syntax(text: str, labels: list[str]) -> None:
    assert [level.label for level in parse_load(text)] == labels


def test_a_rate_level_says_what_it_is() -> None:
    (level,) = parse_load("rate:2:gamma:0.5:max=16")
    assert level.to_json() == {
        "pattern": "rate", "label": "r2-gamma0.5-max16", "concurrency": None, "rate_rps": 2.0,
        "arrival": "gamma", "burstiness": 0.5, "max_concurrency": 16}
    assert parse_load("concurrency:4")[0].to_json()["arrival"] is None


@pytest.mark.parametrize(("text", "says"), [
    ("rate:x", "rate 'x' is not a number"),
    ("concurrency:0", "concurrency must be a whole number >= 1, got 0"),
    ("rate:-1", "rate must be a finite number > 0"),
    ("rate:inf", "use concurrency:N"),
    ("rate:2:poisson:0.5", "poisson arrivals have burstiness 1"),
    ("rate:2:gamma", "gamma arrivals need a burstiness"),
    ("rate:2:uniform", "unknown arrival 'uniform'"),
    ("concurrency:4,4", "level c4 is given twice"),
    ("concurrency:2:max=3", "concurrency takes only a list"),
    ("burst:3", "unknown pattern 'burst'"),
    ("concurrency:", "concurrency needs values"),
])
def test_a_bad_pattern_is_one_line_naming_it(text: str, says: str) -> None:
    with pytest.raises(LoadPatternError) as info:
        parse_load(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"load pattern {text!r}: ")
    assert says in message


@given(st.text(max_size=30))
def test_any_text_parses_or_is_a_load_pattern_error(text: str) -> None:
    try:
        levels = parse_load(text)
    except LoadPatternError:
        return
    assert levels
    assert len({level.label for level in levels}) == len(levels)


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=8, unique=True))
def test_concurrency_lists_round_trip(counts: list[int]) -> None:
    text = "concurrency:" + ",".join(map(str, counts))
    assert [level.concurrency for level in parse_load(text)] == counts


def test_the_marker_keywords() -> None:
    assert [lv.label for lv in levels_from_marker({"concurrency": [1, 4, 8]})] == ["c1", "c4", "c8"]
    levels = levels_from_marker({"rate": [2, 4], "arrival": "gamma", "burstiness": 0.5,
                                 "max_concurrency": 16})
    assert [lv.label for lv in levels] == ["r2-gamma0.5-max16", "r4-gamma0.5-max16"]
    assert levels_from_marker({"concurrency": 4}) == [LoadLevel("concurrency", concurrency=4)]
    assert levels_from_marker({}, ["rate:2"]) == parse_load("rate:2")


@pytest.mark.parametrize(("kwargs", "says"), [
    ({}, "give concurrency=[...] or rate=[...]"),
    ({"concurrency": [1], "rate": [2]}, "max_concurrency=N"),
    ({"concurrency": [2], "max_concurrency": 3}, "max_concurrency applies to rate=[...] only"),
    ({"rate": ["2"]}, "rate must be a finite number > 0 (requests/s), got '2'"),
    ({"rate": [2], "arrival": "gamma"}, "arrival='gamma' needs burstiness=B"),
    ({"concurrency": [1, 1]}, "level c1 is given twice"),
    ({"concurency": [1]}, "unknown argument(s) concurency"),
])
def test_a_bad_marker_is_one_line(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(LoadPatternError) as info:
        levels_from_marker(kwargs)
    assert str(info.value).startswith("@pytest.mark.vlm_load: ")
    assert says in str(info.value)


def test_the_highest_level_that_met_its_slos() -> None:
    def entry(label: str, n: int, passed: bool | None) -> dict[str, Any]:
        return {"load": {"label": label, "concurrency": n, "rate_rps": None},
                "slo_passed": passed}
    assert highest_level_met([entry("c1", 1, True), entry("c8", 8, False),
                              entry("c4", 4, True)]) == "c4"
    assert highest_level_met([entry("c1", 1, False), entry("c2", 2, None)]) is None


# --- the arrival schedule -------------------------------------------------------------

BURSTINESS = (0.25, 0.5, 1.0, 2.0, 4.0)


@settings(max_examples=60)
@given(n=st.integers(1, 400), rate=st.floats(0.01, 1e4),
       arrival=st.sampled_from(["poisson", "gamma", "constant"]),
       burstiness=st.sampled_from(BURSTINESS), seed=st.integers(0, 2**32))
def test_sends_rise_and_the_last_is_at_n_over_rate(n: int, rate: float, arrival: str,
                                                   burstiness: float, seed: int) -> None:
    b = burstiness if arrival == "gamma" else 1.0
    level = LoadLevel("rate", rate=rate, arrival=arrival, burstiness=b)  # type: ignore[arg-type]
    times = schedule_s(n, level, seed)
    assert len(times) == n
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert times[0] > 0  # vLLM waits a gap before the first request too
    assert math.isclose(times[-1], n / rate, rel_tol=1e-9)
    assert schedule_s(n, level, seed) == times  # seeded: the same schedule again
    if arrival == "constant":
        assert times == pytest.approx([(i + 1) / rate for i in range(n)], rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(rate=st.floats(0.05, 5000.0), burstiness=st.sampled_from(BURSTINESS))
def test_gaps_average_one_over_rate_and_burstiness_sets_their_spread(
        rate: float, burstiness: float) -> None:
    """Gamma(shape b, scale 1/(rate b)): mean 1/rate, CV 1/sqrt(b). One fixed seed (the
    draw scales with 1/rate, so every rate sees the same 10,000 draws): a deterministic
    check with bounds of several standard errors."""
    gaps = gaps_s(10_000, rate, burstiness, random.Random(1234))
    mean = statistics.fmean(gaps)
    assert mean * rate == pytest.approx(1.0, rel=0.05)
    assert statistics.stdev(gaps) / mean == pytest.approx(1 / math.sqrt(burstiness), rel=0.10)


def test_burstier_arrivals_bunch_up() -> None:
    cvs = []
    for b in BURSTINESS:
        gaps = gaps_s(5000, 2.0, b, random.Random(7))
        cvs.append(statistics.stdev(gaps) / statistics.fmean(gaps))
    assert cvs == sorted(cvs, reverse=True)
    assert gaps_s(5, 2.0, math.inf, random.Random(7)) == [0.5] * 5


# --- the driver on real requests ------------------------------------------------------


@pytest.fixture(scope="module")
def null_server() -> Iterator[str]:
    """tools/null_server.py on a free loopback port; its base URL."""
    proc = subprocess.Popen([sys.executable, str(NULL_SERVER), "--port", "0", "--chunks",
                             str(CHUNKS)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


class Counting:
    """The real client, with the requests in flight counted around `agenerate`."""

    def __init__(self, base_url: str, **config: Any) -> None:
        self.inner = openai_http.OpenAIModel(openai_http.ClientConfig(
            base_url=base_url, model="null", **config))
        self.capabilities = self.inner.capabilities
        self.settings, self.artifacts = self.inner.settings, self.inner.artifacts
        self.timings_ns = self.inner.timings_ns
        self.in_flight = self.peak = self.calls = 0

    @property
    def cold_pending(self) -> bool:
        return bool(self.inner.cold_pending)

    @cold_pending.setter
    def cold_pending(self, value: bool) -> None:
        self.inner.cold_pending = value

    async def agenerate(self, request: Request) -> Response:
        self.in_flight += 1
        self.calls += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            response: Response = await self.inner.agenerate(request)
            return response
        finally:
            self.in_flight -= 1

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = self.inner.run_async(coro)
        return result

    def generate(self, request: Request) -> Response:
        return self.run_async(self.agenerate(request))

    def prepare(self, task: Task) -> Any:
        return self.inner.prepare(task)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def client(null_server: str) -> Iterator[Counting]:
    model = Counting(null_server)
    yield model
    model.close()


def _request() -> Request:
    return Request(system="", user="Describe.", images=[], params=CAPTION.params, seed=0)


def _drive(model: Counting, n: int, level: LoadLevel) -> list[Outcome]:
    outcomes: list[Outcome] = []
    model.peak = model.calls = 0
    stats = model.run_async(drive(model, [_request() for _ in range(n)], level,
                                  outcomes.append, seed=3))
    assert stats.sent == model.calls == n
    assert stats.peak_in_flight == model.peak
    return outcomes


def _check_outcomes(outcomes: list[Outcome], n: int) -> list[Response]:
    """Every request once, each a success with its chunks within its latency."""
    assert sorted(o.index for o in outcomes) == list(range(n))
    responses = []
    for o in outcomes:
        assert o.error is None, o.error
        r = o.response
        assert r is not None
        assert o.t_call_ns <= r.t_start_ns <= (r.t_first_token_ns or 0) <= r.t_end_ns
        assert r.t_end_ns <= o.t_done_ns
        assert len(r.chunk_ns) == CHUNKS
        assert r.t_start_ns <= r.chunk_ns[0]
        assert r.chunk_ns[-1] <= r.t_end_ns
        responses.append(r)
    return responses


def _max_overlap(responses: list[Response]) -> int:
    """The most requests whose [t_start, t_end] spans overlap at one instant."""
    events = sorted([(r.t_start_ns, 1) for r in responses] + [(r.t_end_ns, -1) for r in responses],
                    key=lambda e: (e[0], e[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("workers", [1, 4])
def test_a_closed_loop_keeps_n_in_flight_and_no_more(client: Counting, workers: int) -> None:
    outcomes = _drive(client, 40, LoadLevel("concurrency", concurrency=workers))
    responses = _check_outcomes(outcomes, 40)
    assert client.peak == workers  # all N start at once
    assert _max_overlap(responses) <= workers
    for o in outcomes:  # scheduled: when the worker took it, just before the request
        assert o.response is not None
        assert o.scheduled_ns <= o.t_call_ns <= o.response.t_start_ns


def test_an_open_loop_sends_at_the_drawn_times(client: Counting) -> None:
    level = LoadLevel("rate", rate=25.0)
    outcomes = _drive(client, 15, level)
    responses = {o.index: r for o, r in zip(outcomes, _check_outcomes(outcomes, 15),
                                             strict=True)}
    by_index = sorted(outcomes, key=lambda o: o.index)
    offsets = schedule_s(15, level, seed=3)
    base = by_index[0].scheduled_ns - round(offsets[0] * 1e9)
    for o, offset in zip(by_index, offsets, strict=True):
        assert abs(o.scheduled_ns - base - offset * 1e9) <= 1
    lags = [(responses[o.index].t_start_ns - o.scheduled_ns) / 1e9 for o in by_index]
    assert min(lags) >= -0.001  # never sent early


def test_a_concurrency_cap_makes_the_lag_grow(client: Counting) -> None:
    """10,000 requests/s with one slot: each request waits for the previous one to end
    (a request takes a millisecond or more, the gaps a tenth of that), so it is sent
    later and later against its drawn time; that wait is the lag the records keep, and
    never more than one request is in flight."""
    n, rate = 80, 10_000.0
    outcomes = _drive(client, n, LoadLevel("rate", rate=rate, max_concurrency=1))
    responses = _check_outcomes(outcomes, n)
    assert client.peak == 1
    ordered = sorted(zip(outcomes, responses, strict=True), key=lambda p: p[0].index)
    for (_, previous), (_, current) in itertools.pairwise(ordered):
        assert current.t_start_ns >= previous.t_end_ns  # one at a time
    lags = [(r.t_start_ns - o.scheduled_ns) / 1e9 for o, r in ordered]
    assert min(lags) >= -0.001
    schedule = n / rate
    first, last = ordered[0][1], ordered[-1][1]
    overrun = (last.t_start_ns - first.t_start_ns) / 1e9 - schedule
    assert overrun > 0  # the requests took longer than the schedule allowed
    # The last request waited for all the others: its lag is at least the overrun.
    assert lags[-1] >= overrun - 0.001


def test_a_failed_request_is_an_outcome_timed_by_the_driver(null_server: str) -> None:
    dead = Counting("http://127.0.0.1:9/v1", retries=0, timeout_s=5.0)  # discard port
    try:
        outcomes = _drive(dead, 3, LoadLevel("concurrency", concurrency=2))
    finally:
        dead.close()
    assert sorted(o.index for o in outcomes) == [0, 1, 2]
    for o in outcomes:
        assert o.response is None
        assert isinstance(o.error, Exception)
        assert o.t_call_ns <= o.t_done_ns


# --- the runner under a load level ----------------------------------------------------


def _plan(samples: int, level: LoadLevel | None, **fields: Any) -> BenchmarkPlan:
    return BenchmarkPlan(
        benchmark_id="b", test="t", task=fields.pop("task", CAPTION),
        dataset=SyntheticScenes(5, size=64), prep=ImagePrep(long_edge=64), samples=samples,
        warmup=fields.pop("warmup", 1), seed=0, run_id="r", load=level, **fields)


def _run(tmp_path: Path, model: Any, plan: BenchmarkPlan, backend: str = "openai",
         lines: list[str] | None = None) -> tuple[BenchmarkEntry, list[Any]]:
    path = tmp_path / "records.jsonl"
    writer = RecordWriter(path)
    entries: list[BenchmarkEntry] = []
    try:
        Runner(ModelCase("m", "fp32", "cpu", backend, "text"), model, plan, writer,
               progress=None if lines is None else lines.append, tick_s=None).run(entries.append)
    finally:
        writer.close()
    return entries[0], read_records(path) if path.exists() else []


def _valid(entry: BenchmarkEntry, records: list[Any]) -> None:
    doc: dict[str, Any] = minimal_doc()
    doc["benchmarks"] = [entry]
    validate(doc)
    for record in records:
        validate_record(record)


def test_the_runner_drives_a_level_and_records_each_request_once(
        tmp_path: Path, client: Counting) -> None:
    client.inner.cold_pending = True  # as after a model switch on a swapping server
    lines: list[str] = []
    entry, records = _run(tmp_path, client, _plan(24, LoadLevel("concurrency", concurrency=4),
                                                  slo={"max_latency_p95_s": 60.0}), lines=lines)
    _valid(entry, records)
    phases = [r["phase"] for r in records]
    assert phases == ["cold", "warmup"] + ["measure"] * 24
    assert client.inner.cold_pending is False
    measured = [r for r in records if r["phase"] == "measure"]
    assert sorted(r["seq"] for r in measured) == list(range(2, 26))  # each once
    assert client.peak == 4
    assert entry["load"]["label"] == "c4"
    assert entry["records"] == {"file": "records.jsonl", "measured": 24, "warmup": 1, "cold": 1}
    for r in measured:
        assert r["level"] == "c4"
        assert r["error"] is None
        assert r["scheduled_ns"] <= r["t_start_ns"]
        assert r["tokens_source"] == "usage"
        assert (r["retries"], r["rate_limited"]) == (0, 0)
        assert len(r["chunks_ns"]) == CHUNKS
        assert 0 <= r["chunks_ns"][0] <= r["chunks_ns"][-1] <= r["t_end_ns"] - r["t_start_ns"]
    assert "level" not in records[0]
    assert "scheduled_ns" not in records[1]  # cold and warm-up: sent one at a time
    s: dict[str, Any] = dict(entry["summary"])
    assert s["requests"] == s["succeeded"] == 24
    assert s["itl_s"]["n"] == 24 * (CHUNKS - 1)  # every gap, pooled
    assert s["tpot_s"]["n"] == 24
    assert s["client_lag_s"]["n"] == 24
    assert s["output_tokens_per_s"] == pytest.approx(24 * CHUNKS / s["wall_s"])
    assert s["goodput_rps"] == pytest.approx(24 / s["wall_s"])  # all within 60 s
    assert s["cold"]["requests"] == 1
    assert s["cold"]["latency_s"] is not None
    assert s["tokens_source"] == {"usage": 24}
    assert sum(line.startswith("measure c4 ") for line in lines) == 24
    assert any(line.startswith("cold 1/1 ") for line in lines)


def test_an_open_loop_level_through_the_runner(tmp_path: Path, client: Counting) -> None:
    level = parse_load("rate:40:gamma:0.5:max=8")[0]
    entry, records = _run(tmp_path, client, _plan(20, level, warmup=0))
    _valid(entry, records)
    assert [r["phase"] for r in records] == ["measure"] * 20  # no cold request pending
    assert entry["load"] == level.to_json()
    assert client.peak <= 8
    assert {r["level"] for r in records} == {"r40-gamma0.5-max8"}
    assert entry["summary"]["goodput_rps"] is None  # no per-request SLO
    lags = [r["t_start_ns"] - r["scheduled_ns"] for r in records]
    assert min(lags) >= -1_000_000


def test_a_failing_server_under_load_gives_error_records(tmp_path: Path) -> None:
    dead = Counting("http://127.0.0.1:9/v1", retries=0, timeout_s=5.0)
    try:
        entry, records = _run(tmp_path, dead, _plan(6, LoadLevel("concurrency", concurrency=3),
                                                     warmup=0))
    finally:
        dead.close()
    _valid(entry, records)
    assert len(records) == 6
    for r in records:
        assert r["error"]["stage"] == "request"
        assert r["t_start_ns"] <= r["t_end_ns"]
        assert r["retries"] == 0
    assert entry["summary"]["failed"] == 6
    assert "6 of 6 requests failed" in entry["warnings"]


# --- the runner on the in-process backend ---------------------------------------------

OLD_SUMMARY_KEYS = {
    "requests", "succeeded", "failed", "success_rate", "latency_s", "ttft_s",
    "decode_tokens_per_s", "stream_tokens_per_s_per_request", "requests_per_s", "wall_s",
    "parse", "parse_rate", "prompt_tokens_mean", "completion_tokens_mean",
    "output_chars_mean", "stages_s", "peak_rss_bytes", "load_s", "decode_source",
    "stream_tokens_per_s", "prompt_tokens_per_s", "latency_failed_s", "roofline"}
NEW_OPTIONAL = {"tpot_s", "output_tokens_per_s", "goodput_rps", "goodput_slo",
                "goodput_absent_reason"}
OLD_RECORD_KEYS = {
    "run_id", "benchmark", "seq", "phase", "sample_id", "model", "precision", "backend",
    "device", "task", "t_start_ns", "t_first_token_ns", "t_end_ns", "prepare_ns",
    "prompt_tokens", "completion_tokens", "finish_reason", "output", "parse", "parse_detail",
    "stages_ns", "counts", "images", "error"}


@pytest.fixture(scope="module")
def tiny_text(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("catalog")
    (root / "models.toml").write_text(TINY_CATALOG)
    spec = load_catalog(root / "models.toml").get("tiny-text")
    model = get_backend("llama_cpp").load(spec, "fp32", LoadContext(
        device=PROFILES["cpu"], cache_dir=model_cache, threads=1))
    yield model
    model.close()


def test_a_sequential_in_process_document_only_gains_optional_keys(
        tmp_path: Path, tiny_text: Any) -> None:
    entry, records = _run(tmp_path, tiny_text, _plan(3, None), backend="llama_cpp")
    _valid(entry, records)
    s = entry["summary"]
    assert set(s) == OLD_SUMMARY_KEYS | NEW_OPTIONAL
    assert s["tpot_s"]["n"] == sum((r["completion_tokens"] or 0) >= 2 for r in records[1:])
    assert s["goodput_rps"] is None
    assert "constraint_ignored" not in s["parse"]
    assert "load" not in entry
    assert set(entry["records"]) == {"file", "measured", "warmup"}
    for record in records:
        # No serving keys from an in-process engine; where its TTFT came from (the first
        # streamed piece) is the one key it gained, on requests that had a first token.
        assert set(record) - {"ttft_source"} == OLD_RECORD_KEYS
        assert record.get("ttft_source") == ("stream" if record["t_first_token_ns"] else None)


def test_an_in_process_model_with_a_pending_load_gets_a_cold_request(
        tmp_path: Path, tiny_text: Any) -> None:
    tiny_text.cold_pending = True
    try:
        entry, records = _run(tmp_path, tiny_text, _plan(2, None, warmup=1),
                              backend="llama_cpp")
    finally:
        cold_left = tiny_text.cold_pending
        del tiny_text.cold_pending
    assert cold_left is False
    _valid(entry, records)
    assert [r["phase"] for r in records] == ["cold", "warmup", "measure", "measure"]
    assert entry["summary"]["cold"]["requests"] == 1
    assert entry["summary"]["cold"]["latency_s"] == pytest.approx(
        (records[0]["t_end_ns"] - records[0]["t_start_ns"]) / 1e9)
    assert entry["summary"]["requests"] == 2
    assert entry["warmup"]["latency_s"]
    assert len(entry["warmup"]["latency_s"]) == 1
    assert entry["records"]["cold"] == 1
    no_cold = _run(tmp_path / "b", tiny_text, _plan(1, None, warmup=0, cold=False),
                   backend="llama_cpp")
    assert "cold" not in no_cold[0]["summary"]


def test_a_load_pattern_on_an_in_process_model_is_one_line_before_any_request(
        tmp_path: Path, tiny_text: Any) -> None:
    with pytest.raises(UnsupportedLoad) as info:
        _run(tmp_path, tiny_text, _plan(4, LoadLevel("concurrency", concurrency=4)),
             backend="llama_cpp")
    assert str(info.value) == (
        "load level c4: backend 'llama_cpp' (model 'm') runs one request at a time; load "
        "patterns need a server backend (asynchronous requests)")
    assert not (tmp_path / "records.jsonl").exists()  # refused before any request
    entry, _ = _run(tmp_path / "seq", tiny_text, _plan(1, LoadLevel(), warmup=0),
                    backend="llama_cpp")  # an explicit sequential level is fine
    assert cast(dict[str, Any], entry)["load"]["label"] == "seq"


# --- a server that refuses the constraint ends the benchmark --------------------------

YES_NO = Task(name="yes_no", prompt="Answer.", expects_json=True, schema={
    "type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
    "required": ["answer"], "additionalProperties": False}, params=CAPTION.params)


class RefusesTheConstraint:
    """A test double for what a real server cannot be made to do on a null server:
    answer 400 to the constraint's dialect. It raises the real client's exception."""

    def __init__(self) -> None:
        self.capabilities = Capabilities(streaming=True, json_schema=True, asynchronous=True)
        self.settings: dict[str, Any] = {"dialect": "vllm"}
        self.artifacts: list[dict[str, Any]] = []
        self.timings_ns = {"resolve": 0, "load": 0}
        self.calls = 0

    def prepare(self, task: Task) -> Any:
        return object()

    async def agenerate(self, request: Request) -> Response:
        self.calls += 1
        raise openai_http.ConstraintRejected(
            "server http://127.0.0.1:1/v1/chat/completions (dialect vllm) rejected the "
            "constraint (400): unknown field; check [model.endpoint] dialect")

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def generate(self, request: Request) -> Response:
        return self.run_async(self.agenerate(request))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("level", [None, LoadLevel("concurrency", concurrency=2)],
                         ids=["sequential", "c2"])
def test_a_rejected_constraint_ends_the_benchmark_after_its_record(
        tmp_path: Path, level: LoadLevel | None) -> None:
    model = RefusesTheConstraint()
    path = tmp_path / "records.jsonl"
    writer = RecordWriter(path)
    entries: list[BenchmarkEntry] = []
    runner = Runner(ModelCase("m", "fp32", "cpu", "openai", "text"), model,
                    _plan(6, level, task=YES_NO, warmup=0), writer, tick_s=None)
    with pytest.raises(openai_http.ConstraintRejected, match="rejected the constraint"):
        runner.run(entries.append)
    writer.close()
    records = read_records(path)
    assert 1 <= len(records) <= 2 < 6
    assert records[0]["error"]["type"] == "ConstraintRejected"
    assert entries[0]["status"] == "error"
    assert "rejected the constraint" in (entries[0]["error"] or "")
