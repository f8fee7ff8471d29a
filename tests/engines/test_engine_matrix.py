"""The matrix on the engines: a precision the installed engine cannot run on the device is
a reasoned skip (not a failure, nothing loaded), and one the device lacks is skipped by the
device profile as for every backend."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import Project

CATALOG = """
[[model]]
id = "hf-text"
backend = "transformers"
modality = "text"
precisions = { fp32 = "generated:hf-tiny-llama", int8 = "generated:hf-tiny-llama", \
nf4 = "generated:hf-tiny-llama" }
default = true
"""

BENCH = '''
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=2)
'''


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None,
                    reason="bitsandbytes is installed here: int8 may load")
def test_a_precision_the_engine_cannot_run_is_a_reasoned_skip(project: Project) -> None:
    (project.pytester.path / "models.toml").write_text(CATALOG)
    project.pytester.makepyfile(test_bench=BENCH)
    outcome = project.run("--vlm-precisions=fp32,int8,nf4", "--vlm-warmup=0", "-rs")
    outcome.run.assert_outcomes(passed=1, skipped=2)
    text = outcome.run.stdout.str()
    # int8: the cpu profile has it, this install has no bitsandbytes to load it with.
    assert "model 'hf-text' (int8):" in text
    assert "bitsandbytes" in text
    # nf4: the device profile has no 4-bit formats at all.
    assert "device cpu does not support nf4" in text
    doc = outcome.doc()
    loads = {(entry["precision"]): entry for entry in doc["loads"]}
    assert "bitsandbytes" in loads["int8"]["skipped"]
    assert loads["int8"]["count"] == 0
    assert loads["fp32"]["count"] == 1
    assert [b["precision"] for b in doc["benchmarks"]] == ["fp32"]
