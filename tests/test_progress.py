"""Progress on the terminal: each request's line ends with the benchmark's ETA, and a
request that runs longer than `tick_s` gets a "running" line every `tick_s` seconds with
the tokens sampled so far, from a ticker thread stopped before the record is written.

The ticker is checked against the real llama.cpp backend on a tiny generated model
(random weights never sample end-of-text, so a long generation is easy to ask for).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends import (
    Capabilities,
    LoadContext,
    LoadedModel,
    Request,
    Response,
    get_backend,
)
from pytest_vlmbench.datasets import ImagePrep
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.models.catalog import load_catalog
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.run.records import RecordWriter, read_records
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.run.ticker import duration as _duration
from pytest_vlmbench.tasks import GenerationParams, Task
from tests.conftest import TINY_CATALOG

CASE = ModelCase("tiny-text", "fp32", "cpu", "llama_cpp", "text")
RUNNING = re.compile(
    r"^measure 1/1 scene-0000: running (?P<s>\d+\.\d) s(?:, (?P<tokens>\d+) tokens so far)?$"
)


@pytest.fixture(scope="module")
def tiny_text(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The generated tiny text model, loaded once for this module."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "models.toml").write_text(TINY_CATALOG)
    spec = load_catalog(root / "models.toml").get("tiny-text")
    ctx = LoadContext(device=PROFILES["cpu"], cache_dir=model_cache)
    model = get_backend("llama_cpp").load(spec, "fp32", ctx)
    yield model
    model.close()


def _plan(task: Task, samples: int = 1, warmup: int = 0) -> BenchmarkPlan:
    return BenchmarkPlan(
        benchmark_id="b", test="b", task=task, dataset=SyntheticScenes(4, size=64),
        prep=ImagePrep(long_edge=64), samples=samples, warmup=warmup, seed=0, run_id="r",
    )


TICK_S = 0.1


def _long_run(tmp_path: Path, model: Any) -> tuple[list[str], dict[str, Any], int]:
    """Run one request long enough for 8 ticks: machines (and their load) differ by 100x,
    so ask for more tokens until the request lasts 8 x TICK_S (the tiny model's random
    weights never sample end-of-text, and its context holds 2048 tokens)."""
    max_tokens = 64
    while True:
        task = Task(name="long", prompt="Describe.",
                    params=GenerationParams(max_tokens=max_tokens))
        lines: list[str] = []
        lock = threading.Lock()  # the plugin's writer is thread-safe too

        def write(line: str, lines: list[str] = lines, lock: threading.Lock = lock) -> None:
            with lock:
                lines.append(line)

        path = tmp_path / f"r{max_tokens}.jsonl"
        writer = RecordWriter(path)
        Runner(CASE, model, _plan(task), writer, write, tick_s=TICK_S).run(lambda entry: None)
        writer.close()
        record = read_records(path)[0]
        assert record["error"] is None, record["error"]
        latency = (record["t_end_ns"] - record["t_start_ns"]) / 1e9
        if latency >= 8 * TICK_S or max_tokens >= 1800:
            return lines, record, max_tokens
        max_tokens = min(1800, max_tokens * 4)


def test_a_long_request_ticks_with_growing_token_counts(tmp_path: Path, tiny_text: Any) -> None:
    lines, record, max_tokens = _long_run(tmp_path, tiny_text)
    assert record["completion_tokens"] == max_tokens
    ticks = [RUNNING.match(line) for line in lines[:-1]]
    assert all(ticks), lines  # every line before the result is a running line
    assert len(ticks) >= 3, lines
    # The result line comes last: the ticker stopped before the record was reported.
    assert lines[-1].startswith("measure 1/1 scene-0000: "), lines
    assert f"{max_tokens} tokens, not_checked" in lines[-1]
    elapsed = [float(m["s"]) for m in ticks if m]
    assert elapsed == sorted(elapsed)
    assert elapsed[0] >= TICK_S  # nothing is said about a request shorter than tick_s
    latency = (record["t_end_ns"] - record["t_start_ns"]) / 1e9
    assert elapsed[-1] <= latency + 0.1
    tokens = [int(m["tokens"] or 0) for m in ticks if m]
    assert tokens == sorted(tokens), lines
    assert tokens[-1] > tokens[0], lines  # the backend counts as it samples
    assert tokens[-1] <= max_tokens
    assert not [t for t in threading.enumerate() if t.name == "vlmbench-ticker"]


def test_a_short_request_prints_no_running_line(tmp_path: Path, tiny_text: Any) -> None:
    task = Task(name="short", prompt="Describe.", params=GenerationParams(max_tokens=4))
    lines: list[str] = []
    writer = RecordWriter(tmp_path / "r.jsonl")
    Runner(CASE, tiny_text, _plan(task, samples=2), writer, lines.append,
           tick_s=60.0).run(lambda entry: None)
    writer.close()
    assert len(lines) == 2
    assert not any("running" in line for line in lines)


class Sleeps:
    """A test double answering after a fixed delay, counting the ticks it would see."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.settings: dict[str, Any] = {}
        self.artifacts: list[dict[str, Any]] = []
        self.timings_ns = {"resolve": 0, "load": 1}
        self.capabilities = Capabilities(counts=("prefill_tokens",))
        self.requests: list[Request] = []

    def prepare(self, task: Task) -> None:
        return None

    def generate(self, request: Request) -> Response:
        self.requests.append(request)
        t0 = time.perf_counter_ns()
        for step in range(5):
            time.sleep(self.delay_s / 5)
            if request.progress is not None:
                request.progress.tokens = step + 1
        t1 = time.perf_counter_ns()
        return Response("ok", "stop", 3, 5, t0, t0 + 1, t1, {}, {"prefill_tokens": 3})

    def close(self) -> None:
        pass


def test_every_line_but_the_last_has_an_eta(tmp_path: Path) -> None:
    lines: list[str] = []
    writer = RecordWriter(tmp_path / "r.jsonl")
    model: LoadedModel = Sleeps(0.01)
    task = Task(name="t", prompt="Describe.")
    Runner(CASE, model, _plan(task, samples=3, warmup=1), writer, lines.append,
           tick_s=None).run(lambda entry: None)
    writer.close()
    assert [line.split(":")[0] for line in lines] == [
        "warmup 1/1 scene-0000", "measure 1/3 scene-0000", "measure 2/3 scene-0001",
        "measure 3/3 scene-0002"]
    assert all(re.search(r", ETA (<1|\d+) s$", line) for line in lines[:-1]), lines
    assert "ETA" not in lines[-1]


def test_eta_is_requests_left_times_the_mean_so_far(tmp_path: Path) -> None:
    runner = Runner(CASE, Sleeps(0), _plan(Task(name="t", prompt="p"), samples=10, warmup=2),
                    RecordWriter(tmp_path / "r.jsonl"))
    # In the warm-up: its own requests left plus every measured one, at the warm-up mean.
    assert runner._eta({"warmup": [4.0], "measure": []}, "warmup", 1) == 11 * 4.0
    # Measuring: the (cold) warm-up no longer counts.
    assert runner._eta({"warmup": [9.0, 9.0], "measure": [1.0, 2.0]}, "measure", 8) == 12.0
    assert runner._eta({"warmup": [], "measure": [1.0]}, "measure", 0) is None


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.4, "<1 s"), (1.0, "1 s"), (59.4, "59 s"), (60.0, "1 min 00 s"), (185.0, "3 min 05 s"),
    (3599.0, "59 min 59 s"), (7800.0, "2 h 10 min"),
])
def test_eta_reads_like_a_person_would_say_it(seconds: float, shown: str) -> None:
    assert _duration(seconds) == shown


def test_ticker_lines_come_from_the_request_counter(tmp_path: Path) -> None:
    """The double sets progress.tokens as it goes: the runner hands each request its own
    counter and the ticker reads it."""
    lines: list[str] = []
    model = Sleeps(0.5)
    writer = RecordWriter(tmp_path / "r.jsonl")
    Runner(CASE, model, _plan(Task(name="t", prompt="p")), writer, lines.append,
           tick_s=0.15).run(lambda entry: None)
    writer.close()
    assert model.requests[0].progress is not None
    assert model.requests[0].progress.tokens == 5
    running = [line for line in lines if "running" in line]
    assert running, lines
    assert all(RUNNING.match(line) for line in running), running
    assert lines[-1].startswith("measure 1/1 scene-0000: ")


def test_a_broken_writer_stops_the_ticker_not_the_run(tmp_path: Path) -> None:
    calls: list[str] = []

    def write(line: str) -> None:
        calls.append(line)
        if "running" in line:
            raise OSError("terminal went away")

    writer = RecordWriter(tmp_path / "r.jsonl")
    entries: list[dict[str, Any]] = []
    Runner(CASE, Sleeps(0.3), _plan(Task(name="t", prompt="p")), writer, write,
           tick_s=0.05).run(entries.append)
    writer.close()
    assert entries[0]["status"] == "complete"
    assert sum("running" in line for line in calls) == 1  # it gave up after the first
