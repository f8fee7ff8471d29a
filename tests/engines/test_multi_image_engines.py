"""Several images in one request on the in-process engines (transformers, vLLM), on the
tiny random-weight LLaVA (generated:hf-tiny-llava: 16 image tokens an image).

transformers: the processor takes the request's images as one list, one image part each in
the chat template, in order; image tokens are 16 per image, alone and in a padded batch of
requests with different image counts; a catalog `max_images` is declared and refuses a
request with more, in one line (in a batch, that request alone). vLLM (one test: an
engine start costs 20-60 s, and vLLM's multimodal models need torchvision, which the
engines environment may lack: tools/install_vllm_vision.sh): the catalog's max_images is
vLLM's image limit per prompt, declared, and a request with more fails alone in its batch
instead of failing vLLM's whole call.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends import BackendError, LoadContext, Request, Response
from pytest_vlmbench.backends.hf_transformers import TransformersBackend
from pytest_vlmbench.backends.vllm_engine.settings import engine_arguments, engine_settings
from pytest_vlmbench.datasets import PreparedImage
from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG, ModelSpec, WeightSource, load_catalog
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.tasks import GenerationParams

K = 16  # image tokens of the tiny LLaVA: 64x64 px in 16 px patches
COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]


def jpeg(colour: tuple[int, int, int]) -> PreparedImage:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 72), colour).save(buf, "JPEG")
    return PreparedImage(jpeg=buf.getvalue(), sha256=str(colour), width=96, height=72,
                         source="test")


FRAMES = [jpeg(c) for c in COLOURS]


def ask(n: int) -> Request:
    return Request(system="", user="Describe.", images=FRAMES[:n], seed=0,
                   params=GenerationParams(max_tokens=2))


def steps(values: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(values)]


def spec_of(model_id: str, **changes: Any) -> ModelSpec:
    return replace(load_catalog(EMBEDDED_CATALOG).get(model_id), **changes)


def context(cache: Path, log: Path | None = None) -> LoadContext:
    return LoadContext(device=PROFILES["cpu"], cache_dir=cache, threads=1, log_path=log)


@pytest.fixture(scope="module")
def llava(model_cache: Path) -> Iterator[dict[str, Any]]:
    """The tiny LLaVA in transformers, as the catalog has it and limited to 2 images."""
    models = {limit: TransformersBackend().load(spec_of("tiny-llava-hf", max_images=limit),
                                                "fp32", context(model_cache))
              for limit in (None, 2)}
    yield models
    for model in models.values():
        model.close()


def image_tokens(responses: list[Response | Exception]) -> list[int | None]:
    return [r.counts.get("image_tokens") if isinstance(r, Response) else None
            for r in responses]


# -- transformers -----------------------------------------------------------------------
def test_transformers_image_tokens_scale_with_the_images(llava: dict[str, Any]) -> None:
    responses = [llava[None].generate(ask(n)) for n in (1, 2, 3)]
    assert image_tokens(list(responses)) == [K, 2 * K, 3 * K]
    prompts = [r.prompt_tokens for r in responses]
    assert steps(prompts) == [K, K]  # one <image> part per image, nothing more
    assert all(r.stages_ns["image_encode"] > 0 for r in responses)


def test_transformers_batch_counts_each_requests_images(llava: dict[str, Any]) -> None:
    """One padded generate call for requests of 1, 3, 0 and 2 images: each response
    counts its own image tokens and prompt (padding left out)."""
    alone = [llava[None].generate(ask(n)).prompt_tokens for n in (1, 3, 0, 2)]
    batch = llava[None].generate_batch([ask(n) for n in (1, 3, 0, 2)])
    assert image_tokens(batch) == [K, 3 * K, None, 2 * K]
    assert [r.prompt_tokens for r in batch if isinstance(r, Response)] == alone


def test_transformers_processor_gets_the_images_in_order(
        llava: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    model = llava[None]
    engine = model._engine
    seen: list[tuple[int, int, int]] = []

    class Spy:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            for image in kwargs.get("images") or []:
                seen.append(image.resize((1, 1)).getpixel((0, 0)))
            return self._inner(*args, **kwargs)

    monkeypatch.setattr(model, "_engine", replace(engine, processor=Spy(engine.processor)))
    model.generate(ask(3))
    # the strongest channel of each image the processor got: red, green, blue
    assert [max(range(3), key=lambda c, p=p: p[c]) for p in seen] == [0, 1, 2]


def test_transformers_max_images_is_declared_and_refused_alone(
        llava: dict[str, Any]) -> None:
    model = llava[2]
    assert model.capabilities.max_images == 2
    assert llava[None].capabilities.max_images is None
    said = ("model 'tiny-llava-hf' takes at most 2 images per request (its catalog entry's "
            "max_images); this request has 3")
    with pytest.raises(BackendError) as info:
        model.generate(ask(3))
    assert str(info.value) == said
    batch = model.generate_batch([ask(3), ask(2)])
    assert isinstance(batch[0], BackendError)
    assert str(batch[0]) == said
    assert image_tokens(batch) == [None, 2 * K]


# -- vLLM ----------------------------------------------------------------------------------
def test_vllm_engine_arguments_carry_max_images(model_cache: Path) -> None:
    spec = spec_of("tiny-llama-vllm")
    settings = engine_settings(spec, context(model_cache), on_cpu=True)
    assert "limit_mm_per_prompt" not in engine_arguments(Path("m"), "float32", settings, 0)
    assert engine_arguments(Path("m"), "float32", settings, 0, max_images=3)[
        "limit_mm_per_prompt"] == {"image": 3}


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="vLLM's multimodal models need torchvision, which is not "
                           "importable in this environment (tools/install_vllm_vision.sh)")
def test_vllm_takes_up_to_max_images_and_refuses_more_alone(model_cache: Path,
                                                            tmp_path: Path) -> None:
    from pytest_vlmbench.backends.vllm_engine import VllmBackend

    spec = spec_of("tiny-llama-vllm", id="tiny-llava-vllm", modality="vision", max_images=3,
                   precisions={"fp32": WeightSource("generated", "hf-tiny-llava")})
    model = VllmBackend().load(spec, "fp32", context(model_cache, tmp_path / "backend.log"))
    try:
        assert model.capabilities.max_images == 3
        assert model.settings["images_per_prompt"] == 3
        config = model._llm.llm_engine.model_config.multimodal_config
        assert config.get_limit_per_prompt("image") == 3  # vLLM's own limit
        responses = [model.generate(ask(n)) for n in (1, 2, 3)]
        batch = model.generate_batch([ask(4), ask(1)])
    finally:
        model.close()
    assert image_tokens(list(responses)) == [K, 2 * K, 3 * K]
    assert steps([r.prompt_tokens for r in responses]) == [K, K]
    assert isinstance(batch[0], BackendError)
    assert str(batch[0]) == ("model 'tiny-llava-vllm' takes at most 3 images per request "
                             "(its catalog entry's max_images); this request has 4")
    assert image_tokens(batch) == [None, K]
