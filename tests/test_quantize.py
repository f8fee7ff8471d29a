"""Derived precisions: llama.cpp's own quantiser, through llama-cpp-python, on a real GGUF."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_vlmbench.models.catalog import CatalogError, WeightSource
from pytest_vlmbench.models.quantize import QuantizeError, quantize
from pytest_vlmbench.models.weights import resolve


def test_quantized_source_is_derived_once_hashed_and_deterministic(tmp_path: Path) -> None:
    source = WeightSource.parse("quantized:f16:generated:llama-tiny", "test")
    first = resolve(source, catalog_dir=tmp_path, cache_dir=tmp_path / "a")
    again = resolve(source, catalog_dir=tmp_path, cache_dir=tmp_path / "a")
    other = resolve(source, catalog_dir=tmp_path, cache_dir=tmp_path / "b")
    assert first.path == again.path  # cached: derived once
    assert first.path.parent.name == "derived"
    assert first.sha256 == other.sha256  # deterministic: a fresh derivation hashes the same
    assert first.source == "quantized:f16:generated:llama-tiny"
    base = resolve(source.inner, catalog_dir=tmp_path, cache_dir=tmp_path / "a")
    assert first.sha256 != base.sha256
    assert base.sha256[:12] in first.path.name  # keyed by the source's hash
    assert not list((tmp_path / "a" / "derived").glob(".*partial"))


def test_derived_file_loads_in_llama_cpp(tmp_path: Path) -> None:
    import llama_cpp

    source = WeightSource.parse("quantized:q8_0:generated:llama-tiny", "test")
    artifact = resolve(source, catalog_dir=tmp_path, cache_dir=tmp_path)
    llm = llama_cpp.Llama(model_path=str(artifact.path), verbose=False, n_ctx=64)
    try:
        assert llm.n_vocab() > 0
    finally:
        llm.close()


def test_quantiser_refusal_is_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf")
    with pytest.raises(QuantizeError, match="quantiser returned"):
        quantize(junk, tmp_path / "out.gguf", "q8_0")
    assert not (tmp_path / "out.gguf").exists()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    "text", ["quantized:q9_9:pypi:x", "quantized:q8_0", "quantized:q8_0:foo:x"]
)
def test_bad_quantized_sources_are_catalog_errors(text: str) -> None:
    with pytest.raises(CatalogError):
        WeightSource.parse(text, "models.toml: model 'm'")

