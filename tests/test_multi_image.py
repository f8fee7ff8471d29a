"""Several images in one request (a video scene's frames sent together), end to end.

On real runs of the tiny generated models: llama.cpp's mtmd evaluates one image chunk per
image, in the request's order, so image tokens are k per image and the prompt grows by k
with each; the chat templates the tiny models use render one media marker per image; the
OpenAI client sends every image as its own part, in order, and llama.cpp's llama-server
counts their tokens in its usage as the in-process backend does; a model whose catalog
entry says `max_images` refuses a request with more, in one line, and the runner records
that request's error with every image it was given (none dropped).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends import BackendError, LoadContext, Request, get_backend
from pytest_vlmbench.backends.openai_http import ClientConfig
from pytest_vlmbench.backends.openai_http.body import ImageURLs, build
from pytest_vlmbench.datasets import ImagePrep, PreparedImage, Sample
from pytest_vlmbench.datasets.images import prepare_image
from pytest_vlmbench.datasets.synthetic import SyntheticScenes
from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG, load_catalog
from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.models.synthetic import (
    TINY_CHAT_TEMPLATE,
    gemma3_image_tokens,
    mlp_image_tokens,
)
from pytest_vlmbench.run.records import RecordWriter, read_records
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.tasks import GenerationParams, Task
from tests.conftest import TINY_CATALOG
from tests.fault_proxy import ask, client, load_context, needs_llama_server

CAPTION = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=2))
LIMITED = """
[[model]]
id = "tiny-vision-two"
backend = "llama_cpp"
modality = "vision"
chat_format = "model"
precisions = { fp32 = "generated:llama-tiny" }
projector = "generated:mlp-tiny"
max_images = 2
"""


@pytest.fixture(scope="module")
def frames() -> list[PreparedImage]:
    """Three different prepared images, as a scene's frames would be."""
    samples = list(SyntheticScenes(3, size=64).samples())
    images = [prepare_image(sample, ImagePrep(long_edge=64)) for sample in samples]
    assert len({image.sha256 for image in images}) == 3
    return images


@pytest.fixture(scope="module")
def models(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[str, Any]]:
    """The tiny text and vision models, and the vision one limited to 2 images."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "models.toml").write_text(TINY_CATALOG + LIMITED)
    catalog = load_catalog(root / "models.toml")
    ctx = LoadContext(device=PROFILES["cpu"], cache_dir=model_cache, threads=1)
    loaded = {name: get_backend("llama_cpp").load(catalog.get(name), "fp32", ctx)
              for name in ("tiny-text", "tiny-vision", "tiny-vision-two")}
    yield loaded
    for model in loaded.values():
        model.close()


def request(images: Sequence[PreparedImage], user: str = "Describe.") -> Request:
    return Request(system="", user=user, images=list(images), seed=0,
                   params=GenerationParams(max_tokens=2))


def steps(values: list[int]) -> list[int]:
    """How much each value grew from the one before."""
    return [b - a for a, b in itertools.pairwise(values)]


def scaling(model: Any, frames: list[PreparedImage]) -> list[tuple[int, int]]:
    """(image_tokens, prompt_tokens) for 1, 2 and 3 images in one request."""
    out = []
    for n in (1, 2, 3):
        response = model.generate(request(frames[:n]))
        assert response.stages_ns["image_encode"] > 0
        assert response.counts["prefill_tokens"] == response.prompt_tokens
        out.append((response.counts["image_tokens"], response.prompt_tokens))
    return out


# -- llama.cpp: one mtmd chunk per image, counted per request ------------------------------
def test_image_tokens_scale_with_the_number_of_images(models: dict[str, Any],
                                                      frames: list[PreparedImage]) -> None:
    """The mlp projector: 16 tokens an image, and nothing else added per image."""
    k = mlp_image_tokens()
    counts = scaling(models["tiny-vision"], frames)
    assert [tokens for tokens, _ in counts] == [k, 2 * k, 3 * k]
    prompts = [prompt for _, prompt in counts]
    assert steps(prompts) == [k, k]


def test_the_gemma_tiny_vlm_takes_several_images(model_cache: Path,
                                                 frames: list[PreparedImage]) -> None:
    """The embedded tiny-vlm (our Gemma template, the gemma3 projector): 64 tokens an
    image, each wrapped in <start_of_image> and <end_of_image> by mtmd."""
    ctx = LoadContext(device=PROFILES["cpu"], cache_dir=model_cache, threads=1)
    model = get_backend("llama_cpp").load(load_catalog(EMBEDDED_CATALOG).get("tiny-vlm"),
                                          "q4_k_m", ctx)
    try:
        counts = scaling(model, frames)
    finally:
        model.close()
    k = gemma3_image_tokens()
    assert [tokens for tokens, _ in counts] == [k, 2 * k, 3 * k]
    prompts = [prompt for _, prompt in counts]
    assert steps(prompts) == [k + 2, k + 2]


@pytest.mark.parametrize("template", [TINY_CHAT_TEMPLATE, GEMMA_CHAT_TEMPLATE],
                         ids=["tiny", "gemma"])
def test_the_tiny_models_templates_render_one_marker_per_image(template: str) -> None:
    """What MTMDChatHandler renders: each image part becomes a media marker (a text part),
    and mtmd pairs the markers with the images in order; a template that dropped one
    would fail the request (markers and images must be as many)."""
    import jinja2.sandbox
    from llama_cpp import mtmd_cpp
    from llama_cpp.llama_chat_format import MTMDChatHandler

    marker = mtmd_cpp.mtmd_default_marker().decode()
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{i}"}}
        for i in range(3)]
    parts.append({"type": "text", "text": "Describe."})
    message: Any = {"role": "user", "content": parts}
    messages = [MTMDChatHandler._convert_message_for_template(message, marker)]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(template).render(messages=messages, add_generation_prompt=True)
    assert text.count(marker) == 3
    assert text.index(marker * 3) < text.index("Describe.")  # images first, then the text


def _frames(images: list[PreparedImage]) -> Callable[[ImagePrep], list[PreparedImage]]:
    def prepare(prep: ImagePrep) -> list[PreparedImage]:
        return list(images)
    return prepare


@dataclass
class Scenes:
    """Samples that each make several images (as a video scene's `prepare` does)."""

    images: list[PreparedImage]
    name: str = "scenes"

    def samples(self) -> Iterator[Sample]:
        for i in range(2):
            order = self.images if i == 0 else self.images[::-1]
            yield Sample(id=f"scene-{i}", source=f"clip#scene {i}", load_image=None,
                         description=None, truth={}, prepare=_frames(order))

    def fingerprint(self) -> str:
        return hashlib.sha256(b"".join(i.jpeg for i in self.images)).hexdigest()


def run_scenes(tmp_path: Path, name: str, model: Any,
               images: list[PreparedImage]) -> list[Any]:
    case = ModelCase(name, "fp32", "cpu", "llama_cpp", "vision")
    plan = BenchmarkPlan(benchmark_id=f"{name}-scenes", test="t", task=CAPTION,
                         dataset=Scenes(images), prep=ImagePrep(long_edge=64), samples=2,
                         warmup=0, seed=0, run_id="r")
    path = tmp_path / f"{name}.jsonl"
    writer = RecordWriter(path)
    try:
        Runner(case, model, plan, writer, tick_s=None).run(lambda entry: None)
    finally:
        writer.close()
    return read_records(path)


def test_images_reach_mtmd_in_the_order_the_record_lists_them(
    tmp_path: Path, models: dict[str, Any], frames: list[PreparedImage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the runner: each record lists its images in the order they were made, and
    mtmd receives exactly those bytes in that order (a reversed scene reversed)."""
    model = models["tiny-vision"]
    received: list[str] = []
    load = model._handler.load_image

    def spy(url: str) -> bytes:
        data: bytes = load(url)
        received.append(hashlib.sha256(data).hexdigest())
        return data

    monkeypatch.setattr(model._handler, "load_image", spy)
    records = run_scenes(tmp_path, "tiny-vision", model, frames)
    assert [r["error"] for r in records] == [None, None]
    listed = [[image["sha256"] for image in r["images"]] for r in records]
    made = [image.sha256 for image in frames]
    assert made == [hashlib.sha256(image.jpeg).hexdigest() for image in frames]
    assert listed == [made, made[::-1]]
    assert received == made + made[::-1]
    assert all(r["counts"]["image_tokens"] == 3 * mlp_image_tokens() for r in records)


# -- the OpenAI client: every image a part of the user turn, in order -----------------------
@pytest.mark.parametrize("chat_format", ["model", "gemma"])
def test_the_openai_body_carries_every_image_in_order(frames: list[PreparedImage],
                                                      chat_format: str) -> None:
    import orjson

    config = ClientConfig(base_url="http://127.0.0.1:9/v1", model="m", vision=True,
                          chat_format=chat_format)
    body = orjson.loads(build(config, request(frames, "What happens?"), ImageURLs()))
    content = body["messages"][-1]["content"]
    assert [part["type"] for part in content] == ["image_url"] * 3 + ["text"]
    sent = [base64.b64decode(part["image_url"]["url"].removeprefix("data:image/jpeg;base64,"))
            for part in content[:3]]
    assert sent == [image.jpeg for image in frames]


@needs_llama_server
def test_llama_server_counts_every_image_in_its_usage(
    model_cache: Path, tmp_path: Path, models: dict[str, Any], frames: list[PreparedImage],
) -> None:
    """A managed llama-server with the tiny vision model: its usage's prompt_tokens grow
    by the image's tokens with each image, as the in-process backend counts them; the
    catalog's max_images is the client's, which refuses a fourth image itself."""
    from pytest_vlmbench.backends.openai_http import OpenAIBackend
    from pytest_vlmbench.servers import ServerManager

    path = tmp_path / "models.toml"
    path.write_text("""
[[server]]
id = "ls"
kind = "llama-server"
settings = { n_ctx = 1024, n_threads = 1 }

[[model]]
id = "tiny-vision-ls"
backend = "openai"
modality = "vision"
chat_format = "model"
precisions = { fp32 = "generated:llama-tiny" }
projector = "generated:mlp-tiny"
max_images = 3
[model.endpoint]
server = "ls"
""")
    manager = ServerManager(tmp_path / "logs", model_cache)
    try:
        model = OpenAIBackend().load(load_catalog(path).get("tiny-vision-ls"), "fp32",
                                     load_context(model_cache, manager))
        try:
            assert model.capabilities.max_images == 3
            served = [model.generate(ask("Describe.", images=frames[:n], max_tokens=2))
                      for n in (1, 2, 3)]
            with pytest.raises(BackendError) as refused:
                model.generate(ask("Describe.", images=[*frames, frames[0]], max_tokens=2))
        finally:
            model.close()
    finally:
        manager.close()
    assert all(r.tokens_source == "usage" for r in served)
    local = [models["tiny-vision"].generate(request(frames[:n])).prompt_tokens
             for n in (1, 2, 3)]
    assert [r.prompt_tokens for r in served] == local
    k = mlp_image_tokens()
    assert steps(local) == [k, k]
    assert str(refused.value) == ("model 'tiny-vision-ls' takes at most 3 images per request "
                                  "(its catalog entry's max_images); this request has 4")


# -- max_images: declared, and a request with more refused whole ------------------------------
def test_max_images_is_declared_as_the_catalog_says(models: dict[str, Any]) -> None:
    assert models["tiny-vision-two"].capabilities.max_images == 2
    assert models["tiny-vision"].capabilities.max_images is None  # mtmd: no limit
    assert models["tiny-text"].capabilities.max_images is None


def test_more_images_than_max_images_is_one_line(models: dict[str, Any],
                                                 frames: list[PreparedImage]) -> None:
    model = models["tiny-vision-two"]
    assert model.generate(request(frames[:2])).counts["image_tokens"] == 2 * mlp_image_tokens()
    with pytest.raises(BackendError) as info:
        model.generate(request(frames))
    assert str(info.value) == ("model 'tiny-vision-two' takes at most 2 images per request "
                               "(its catalog entry's max_images); this request has 3")


def test_the_openai_client_refuses_more_images_before_sending(
        frames: list[PreparedImage]) -> None:
    """Nothing listens at the address: the refusal comes before any connection."""
    model = client("http://127.0.0.1:9/v1", vision=True, max_images=1, label="one-image")
    try:
        assert model.capabilities.max_images == 1
        with pytest.raises(BackendError) as info:
            model.generate(ask(images=frames[:2]))
    finally:
        model.close()
    assert str(info.value) == ("model 'one-image' takes at most 1 image per request "
                               "(its catalog entry's max_images); this request has 2")
    with pytest.raises(ValueError, match="max_images 0: must be at least 1"):
        ClientConfig(base_url="http://127.0.0.1:9/v1", model="m", vision=True, max_images=0)


def test_the_runner_records_the_refusal_with_every_image(
        tmp_path: Path, models: dict[str, Any], frames: list[PreparedImage]) -> None:
    """A scene of 3 frames to a model that takes 2: each request is a record error of
    one line, and the record still lists the 3 images it was given: none dropped."""
    records = run_scenes(tmp_path, "tiny-vision-two", models["tiny-vision-two"], frames)
    assert len(records) == 2
    for record in records:
        assert record["error"] == {
            "stage": "request", "type": "BackendError",
            "message": "model 'tiny-vision-two' takes at most 2 images per request (its "
                       "catalog entry's max_images); this request has 3"}
        assert len(record["images"]) == 3
        assert record["counts"] == {}
