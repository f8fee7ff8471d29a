"""Offline throughput mode (load level `batch:N`): parsing, refusal on engines that cannot
batch, and the per-batch figures. Real batched runs on vLLM and transformers are in
tests/engines/ (the engines environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.compare.samples import samples
from pytest_vlmbench.metrics import throughput
from pytest_vlmbench.run.load import (
    LoadLevel,
    LoadPatternError,
    UnsupportedLoad,
    highest_level_met,
    levels_from_marker,
    parse_load,
)
from tests.test_load_patterns import _plan, _run
from tests.test_load_patterns import tiny_text as tiny_text  # the module-scoped fixture


def test_batch_levels_parse_from_the_option_and_the_marker() -> None:
    levels = parse_load("batch:4,16")
    assert [lv.label for lv in levels] == ["b4", "b16"]
    assert levels[0].to_json()["batch_size"] == 4
    assert levels[0].to_json()["pattern"] == "batch"
    assert "batch_size" not in LoadLevel("concurrency", concurrency=2).to_json()
    assert [lv.label for lv in levels_from_marker({"batch": [8]})] == ["b8"]
    assert [lv.label for lv in levels_from_marker({"batch": 2})] == ["b2"]
    assert [lv.label for lv in levels_from_marker({}, ("batch:3",))] == ["b3"]


@pytest.mark.parametrize(("text", "why"), [
    ("batch:0", "batch size must be a whole number >= 1, got 0"),
    ("batch:x", "batch size 'x' is not a number"),
    ("batch:4:8", "batch takes only a list of batch sizes"),
    ("batch:4,4", "level b4 is given twice"),
    ("batch:", "batch needs values"),
])
def test_a_bad_batch_level_is_one_line(text: str, why: str) -> None:
    with pytest.raises(LoadPatternError) as info:
        parse_load(text)
    assert why in str(info.value)
    assert str(info.value).startswith(f"load pattern {text!r}")


def test_a_batch_marker_takes_nothing_else() -> None:
    with pytest.raises(LoadPatternError, match=r"batch=.* takes no concurrency"):
        levels_from_marker({"batch": [4], "concurrency": [2]})
    with pytest.raises(LoadPatternError, match="only a batch level has a batch size"):
        LoadLevel("concurrency", concurrency=2, batch=4)


def test_a_sweep_of_batches_names_the_largest_that_met_its_slos() -> None:
    entries = [{"load": LoadLevel("batch", batch=n).to_json(), "slo_passed": ok}
               for n, ok in ((2, True), (8, True), (32, False))]
    assert highest_level_met(entries) == "b8"


def test_a_batch_level_on_an_engine_that_cannot_batch_is_one_line_before_any_request(
        tmp_path: Path, tiny_text: Any) -> None:
    with pytest.raises(UnsupportedLoad) as info:
        _run(tmp_path, tiny_text, _plan(4, LoadLevel("batch", batch=2)), backend="llama_cpp")
    assert str(info.value) == (
        "load level b2: backend 'llama_cpp' (model 'm') cannot submit a batch of requests "
        "together (offline throughput needs an engine with generate_batch: vllm, "
        "transformers)")
    assert not (tmp_path / "records.jsonl").exists()


def _record(batch: int, start: int, end: int, tokens: int | None,
            error: bool = False) -> dict[str, Any]:
    return {"phase": "measure", "batch": batch, "batch_ns": [start, end],
            "error": {"stage": "request", "type": "X", "message": "m"} if error else None,
            "completion_tokens": None if error else tokens}


def test_each_batch_is_one_sample_and_failures_stay_in_its_wall_time() -> None:
    second = 1_000_000_000
    records: list[Any] = [
        _record(0, 0, 2 * second, 10), _record(0, 0, 2 * second, 30),
        _record(1, 3 * second, 4 * second, 20), _record(1, 3 * second, 4 * second, 0,
                                                        error=True),
        _record(2, 5 * second, 6 * second, 5),  # a partial batch: measured, not counted
        {"phase": "warmup", "error": None, "completion_tokens": 3},
    ]
    block = throughput.throughput(records, batch_size=2)
    assert [f["requests_per_s"] for f in block["per_batch"]] == [1.0, 1.0, 1.0]
    assert [f["output_tokens_per_s"] for f in block["per_batch"]] == [20.0, 20.0, 5.0]
    assert [f["succeeded"] for f in block["per_batch"]] == [2, 1, 1]
    assert block["batches"] == 2
    assert block["partial_batches"] == 1
    assert block["requests_per_s"]["n"] == 2
    assert block["output_tokens_per_s"]["median"] == 20.0
    assert throughput.batch_samples({"throughput": block}) == {
        "batch_requests_per_s": [1.0, 1.0], "batch_output_tokens_per_s": [20.0, 20.0]}
    assert throughput.batch_samples({}) == {}


def test_a_batch_without_token_counts_has_no_token_rate() -> None:
    records: list[Any] = [_record(0, 0, 10**9, None), _record(0, 0, 10**9, 4)]
    block = throughput.throughput(records, batch_size=2)
    assert block["per_batch"][0]["output_tokens_per_s"] is None
    assert block["output_tokens_per_s"]["n"] == 0
    assert block["requests_per_s"]["median"] == 2.0


def test_compare_reads_one_sample_per_batch() -> None:
    block = throughput.throughput([_record(0, 0, 10**9, 4), _record(0, 0, 10**9, 4),
                                   _record(1, 0, 2 * 10**9, 4), _record(1, 0, 2 * 10**9, 4)],
                                  batch_size=2)
    entry: Any = {"summary": {"throughput": block}}
    got = samples(entry, None)
    assert list(got.values["batch_requests_per_s"]) == [2.0, 1.0]
    assert list(got.values["batch_output_tokens_per_s"]) == [8.0, 4.0]
