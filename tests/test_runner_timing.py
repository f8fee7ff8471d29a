"""The runner's own timing: failed requests keep their start and end, stages are checked.

A failed request used to come back without times, so it was missing from the wall time,
requests/s and the energy window, and a run of slow timeouts could improve p95. The
backend here is a test double for what a real backend cannot be made to do on demand:
fail after a known delay. Real llama.cpp runs check the stage invariants in
tests/test_plugin_run.py and tests/test_embedded_defaults.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_vlmbench.backends import BackendError, Capabilities, Request, Response
from pytest_vlmbench.datasets import ImagePrep
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.metrics.summary import (
    STAGE_TOLERANCE_FRACTION,
    STAGE_TOLERANCE_NS,
    stage_violations,
    summarize,
)
from pytest_vlmbench.run import machine_load
from pytest_vlmbench.run.records import RecordWriter, read_records
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.tasks import GenerationParams, Task

DELAY_S = 0.2


class SlowThenFails:
    """Every other request fails after DELAY_S; the others answer in about 10 ms."""

    def __init__(self) -> None:
        self.calls = 0
        self.settings: dict[str, Any] = {}
        self.artifacts: list[dict[str, Any]] = []
        self.timings_ns = {"resolve": 0, "load": 1}
        self.capabilities = Capabilities(stages=("prefill",), counts=("prefill_tokens",))

    def prepare(self, task: Task) -> None:
        return None

    def generate(self, request: Request) -> Response:
        self.calls += 1
        t0 = time.perf_counter_ns()
        if self.calls % 2 == 0:
            time.sleep(DELAY_S)
            raise BackendError("the server went away (test double)")
        time.sleep(0.01)
        t1 = time.perf_counter_ns()
        return Response("ok", "stop", 3, 2, t0, t0 + (t1 - t0) // 2, t1,
                        {"prefill": (t1 - t0) // 4}, {"prefill_tokens": 3})

    def close(self) -> None:
        pass


def _run(tmp_path: Path, samples: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    task = Task(name="t", prompt="Describe.", params=GenerationParams(max_tokens=4))
    plan = BenchmarkPlan(
        benchmark_id="b", test="b", task=task, dataset=SyntheticScenes(4, size=64),
        prep=ImagePrep(long_edge=64), samples=samples, warmup=0, seed=0, run_id="r",
    )
    writer = RecordWriter(tmp_path / "r.jsonl")
    runner = Runner(ModelCase("m", "fp32", "cpu", "test", "text"), SlowThenFails(), plan, writer)
    entries: list[dict[str, Any]] = []
    runner.run(entries.append)
    writer.close()
    return entries[0], read_records(tmp_path / "r.jsonl")


def test_a_failed_request_is_timed_and_inside_the_wall_time(tmp_path: Path) -> None:
    entry, records = _run(tmp_path, samples=4)
    failed = [r for r in records if r["error"] is not None]
    assert len(failed) == 2
    for r in failed:
        assert r["error"]["stage"] == "request"
        duration = (r["t_end_ns"] - r["t_start_ns"]) / 1e9
        assert DELAY_S <= duration < DELAY_S + 1.0
    s = entry["summary"]
    assert s["failed"] == 2
    assert s["succeeded"] == 2
    # The wall time spans the failures: at least their delays, and the last record
    # (a failure) ends it.
    assert s["wall_s"] >= 2 * DELAY_S
    assert s["wall_s"] * 1e9 == max(r["t_end_ns"] for r in records) - min(
        r["t_start_ns"] for r in records)
    assert s["requests_per_s"] == 2 / s["wall_s"]
    # Failures are summarised apart, never mixed into the latency of successes.
    assert s["latency_failed_s"]["n"] == 2
    assert s["latency_failed_s"]["min"] >= DELAY_S
    assert s["latency_s"]["max"] < DELAY_S
    assert "2 of 4 requests failed" in entry["warnings"]


def test_machine_block_is_recorded(tmp_path: Path) -> None:
    entry, _ = _run(tmp_path, samples=2)
    machine = entry["machine"]
    assert machine["window_s"] > 0
    if Path("/proc/stat").exists():
        assert 0.0 <= machine["other_cpu_fraction"] <= 1.0
        # About 0.25 s: too short for the counters' 10 ms ticks to say either way.
        assert machine["busy"] is None
        assert "too short" in machine["note"]


def _record(start: int, stages: dict[str, int], latency: int, ttft: int) -> dict[str, Any]:
    return {"error": None, "phase": "measure", "sample_id": "s", "t_start_ns": start,
            "t_first_token_ns": start + ttft, "t_end_ns": start + latency,
            "stages_ns": stages}


@given(st.lists(st.integers(0, 10**8), min_size=1, max_size=6),
       st.integers(0, 10**8), st.integers(0, 5))
def test_disjoint_stages_never_violate(parts: list[int], slack: int, prompt_parts: int) -> None:
    """Stages cut from one latency, with the prompt ones before the first token, pass."""
    names = ["template", "image_encode", "prefill", "decode", "sample", "detokenize"]
    stages = dict(zip(names, parts, strict=False))
    prompt = sum(stages.get(n, 0) for n in ("template", "image_encode", "prefill"))
    latency = sum(stages.values()) + slack
    ttft = prompt + min(slack, prompt_parts)
    assert stage_violations(_record(10**12, stages, latency, ttft)) == []


@given(st.integers(1, 10**9), st.floats(0.05, 3.0))
def test_overlapping_stages_are_caught(latency: int, excess: float) -> None:
    """Stages adding up to more than latency + tolerance are reported, as are prompt
    stages longer than the TTFT (the double-counted image encode that was measured)."""
    tolerance = STAGE_TOLERANCE_NS + STAGE_TOLERANCE_FRACTION * latency
    over = int(latency + tolerance * (1 + excess)) + 1
    found = stage_violations(_record(0, {"prefill": over}, latency, latency))
    assert any("more than the latency" in v for v in found)
    assert any("more than the TTFT" in v for v in found)


def test_failed_and_untimed_records_are_not_checked() -> None:
    bad = _record(0, {"prefill": 10**9}, 10, 5)
    assert stage_violations({**bad, "error": {"stage": "request"}}) == []
    assert stage_violations({**bad, "t_start_ns": None}) == []


def test_summary_unattributed_is_latency_minus_stages() -> None:
    r = {**_record(0, {"prefill": 300, "decode": 500}, 1000, 400), "prepare_ns": None,
         "counts": {"prefill_tokens": 3}, "prompt_tokens": 3, "completion_tokens": 2,
         "output": "x", "parse": "not_checked"}
    s = summarize([r], checks_output=False, load_s=None, peak_rss=None)
    assert s["stages_s"]["unattributed"]["median"] == 200 / 1e9
    assert s["prompt_tokens_per_s"] == 3 / (300 / 1e9)


def _stat(cpu0: str, cpu1: str, cpu2: str) -> str:
    return f"cpu  1 1 1 1 0 0 0 0 0 0\ncpu0 {cpu0}\ncpu1 {cpu1}\ncpu2 {cpu2}\nintr 5 6\n"


def test_machine_load_counts_only_our_cpus(tmp_path: Path) -> None:
    """Others' time on the CPUs we may use, over those CPUs; load elsewhere is not ours."""
    stat = tmp_path / "stat"
    ours = frozenset({0, 1})
    stat.write_text(_stat("100 0 50 1000 0 0 0 0 0 0", "0 0 0 1150 0 0 0 0 0 0",
                          "0 0 0 0 0 0 0 0 0 0"))
    before = machine_load.read(stat, ours)
    assert before.cpus == 2
    # 10 s later at 10 Hz: 150 busy jiffies on cpu0 and 40 on cpu1 (plus 10 of steal on
    # cpu1), and cpu2, which we may not use, fully busy.
    stat.write_text(_stat("200 0 100 1050 0 0 0 0 0 0", "40 0 0 1200 0 0 0 10 0 0",
                          "100 0 0 0 0 0 0 0 0 0"))
    after = machine_load.read(stat, ours)
    after = replace(after, own_cpu_s=before.own_cpu_s, wall_ns=before.wall_ns + 10 * 10**9)
    block = machine_load.assess(before, after, hz=10)
    assert block["cpus"] == 2
    assert block["other_cpu_fraction"] == pytest.approx((150 + 40) / 10 / (10 * 2))
    assert block["steal_fraction"] == pytest.approx(10 / (200 + 100))
    assert block["busy"] is True
    assert "busy" in block["note"]
    # Our own CPU time is not "others": the same window, all of it ours, is quiet.
    mine = replace(after, own_cpu_s=before.own_cpu_s + 19.0)
    quiet = machine_load.assess(before, mine, hz=10)
    assert quiet["other_cpu_fraction"] == pytest.approx(0.0, abs=1e-9)
    assert quiet["busy"] is False  # and steal, 3.3%, is under the 5% bar


def test_machine_load_unknown_without_proc_stat(tmp_path: Path) -> None:
    missing = machine_load.read(tmp_path / "none")
    block = machine_load.assess(missing, missing)
    assert block["busy"] is None
    assert block["other_cpu_fraction"] is None
    assert "unknown" in block["note"]


def test_more_requests_than_samples_repeat_them_and_say_so(tmp_path: Path) -> None:
    """16 requests over 5 photos is a legitimate choice, so samples repeat (``#1``), but
    repeats are not independent measurements: the benchmark's warnings say so, once."""
    entry, records = _run(tmp_path, samples=6)
    assert [r["sample_id"] for r in records] == [
        "scene-0000", "scene-0001", "scene-0002", "scene-0003", "scene-0000#1", "scene-0001#1"]
    repeats = [w for w in entry["warnings"] if "repeat" in w]
    assert repeats == [
        "dataset 'synthetic' has 4 samples; 6 measured requests repeat 2 of them (sample ids #1)"]


def test_enough_samples_no_repeat_warning(tmp_path: Path) -> None:
    entry, _ = _run(tmp_path, samples=4)
    assert not [w for w in entry["warnings"] if "repeat" in w]


def test_repeat_warning_names_the_folder_and_the_warmup() -> None:
    from pytest_vlmbench.datasets import FolderDataset
    from pytest_vlmbench.run.runner import repeat_warning

    photos = FolderDataset("fixtures/images")
    assert repeat_warning(photos, [0, 0, 0, 0, 0, 1, 1, 1], warmups=1) == (
        "dataset 'folder:fixtures/images' has 5 samples; 8 measured requests (+1 warm-up) "
        "repeat 3 of them (sample ids #1)")
    assert repeat_warning(photos, [0] * 5 + [1] * 5 + [2] * 5 + [3], warmups=0) == (
        "dataset 'folder:fixtures/images' has 5 samples; 16 measured requests repeat 5 of "
        "them up to 3 times (sample ids #1 to #3)")
    assert repeat_warning(photos, [0, 0, 0], warmups=2) is None
    assert repeat_warning(SyntheticScenes(1), [0, 1], warmups=0) == (
        "dataset 'synthetic' has 1 sample; 2 measured requests repeat 1 of them (sample ids #1)")


class Empty:
    """A third-party dataset that yields nothing."""

    name = "empty"

    def samples(self) -> Any:
        return iter(())

    def fingerprint(self) -> str:
        return "0" * 64


def test_a_dataset_without_samples_is_a_usage_mistake_before_any_request(
    tmp_path: Path,
) -> None:
    from pytest_vlmbench.datasets import DatasetArgumentError
    from pytest_vlmbench.errors import UsageMistake

    task = Task(name="t", prompt="Describe.", params=GenerationParams(max_tokens=4))
    plan = BenchmarkPlan(benchmark_id="b", test="b", task=task, dataset=Empty(),
                         prep=ImagePrep(long_edge=64), samples=2, warmup=0, seed=0, run_id="r")
    model = SlowThenFails()
    writer = RecordWriter(tmp_path / "r.jsonl")
    entries: list[dict[str, Any]] = []
    with pytest.raises(DatasetArgumentError, match=r"^dataset 'empty' yields no samples$") as e:
        Runner(ModelCase("m", "fp32", "cpu", "test", "text"), model, plan, writer).run(
            entries.append)
    assert isinstance(e.value, UsageMistake)
    assert model.calls == 0
    assert entries[0]["status"] == "error"


def test_an_unsatisfiable_schema_is_refused_when_the_task_is_made() -> None:
    """Before any model is asked to compile it: our one line, not the grammar
    converter's complaint (the runner's checker says the same for a schema it gets)."""
    from pytest_vlmbench.tasks import TaskError
    from pytest_vlmbench.tasks.structured import ConstraintError, OutputChecker, schema_problem

    schema = {"type": "integer", "minimum": 3, "maximum": 2}
    with pytest.raises(TaskError, match=r"^task 'score': schema can never be satisfied: "
                       r"minimum 3 > maximum 2$"):
        Task(name="score", prompt="Rate.", schema=schema)
    assert schema_problem(schema) == "schema can never be satisfied: minimum 3 > maximum 2"
    with pytest.raises(ConstraintError, match="never be satisfied"):
        OutputChecker(expects_json=True, schema=schema, source="task 'score'")
