"""The tiny random-weight Hugging Face models (models/hf_tiny.py), generated for real: the
same seed gives the same bytes, the files are what transformers and vLLM load, and the
LLaVA processor turns one image into its image tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pytest_vlmbench.models.catalog import WeightSource
from pytest_vlmbench.models.weights import resolve


def _build(cache: Path, name: str) -> Path:
    return resolve(WeightSource("generated", name), catalog_dir=cache, cache_dir=cache,
                   directory=True).path


@pytest.mark.parametrize("name", ["hf-tiny-llama", "hf-tiny-llava"])
def test_the_same_seed_gives_the_same_model(tmp_path: Path, name: str) -> None:
    a = resolve(WeightSource("generated", name), catalog_dir=tmp_path,
                cache_dir=tmp_path / "a", directory=True)
    b = resolve(WeightSource("generated", name), catalog_dir=tmp_path,
                cache_dir=tmp_path / "b", directory=True)
    other = resolve(WeightSource("generated", f"{name}@1"), catalog_dir=tmp_path,
                    cache_dir=tmp_path / "a", directory=True)
    assert a.sha256 == b.sha256
    assert other.sha256 != a.sha256
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "generation_config.json"} <= {p.name for p in a.path.iterdir()}
    assert not [p for p in (tmp_path / "a" / "generated").iterdir() if p.name.startswith(".")]


def test_the_text_model_loads_and_generates_greedily(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _build(tmp_path, "hf-tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert model.config.head_dim == 64  # vLLM's CPU attention refuses 16
    text = tokenizer.apply_chat_template([{"role": "user", "content": '{"a": 1}'}],
                                         add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|assistant|>\n")
    ids = tokenizer(text, return_tensors="pt")
    assert tokenizer.decode(ids["input_ids"][0]) == text  # byte-level: round trip
    out = [model.generate(**ids, max_new_tokens=4, do_sample=False) for _ in range(2)]
    assert torch.equal(out[0], out[1])  # greedy by default, deterministic


def test_the_llava_processor_expands_an_image_into_its_tokens(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = _build(tmp_path, "hf-tiny-llava")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Compare."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    images = [Image.new("RGB", (96, 64), (200, 10, 10)), Image.new("RGB", (64, 64), "blue")]
    inputs = processor(images=images, text=[text], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert tuple(inputs["pixel_values"].shape) == (2, 3, 64, 64)
    assert image_tokens == 2 * 16  # 64 px / 16 px patches = 16 tokens an image
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3 or out[0, -1] == 2
