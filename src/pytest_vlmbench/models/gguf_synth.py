"""Synthetic GGUF files with seeded random weights.

The default suite must run without a hub or a GPU, so the models it drives
through llama.cpp are made here: a SigLIP-shaped ``gemma3`` projector that
plugs into the real gemma3-270m text model, and a tiny ``llama`` text model
with an ``mlp`` projector for fast tests. The outputs are meaningless; the
shapes, metadata and code paths are the real ones.

Every writer is deterministic: the same arguments give a byte-identical file.
Each tensor draws from its own generator seeded by ``(seed, crc32(name))``, so
the bytes do not depend on the order tensors are written in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

__all__ = [
    "GEMMA_CHAT_TEMPLATE",
    "TINY_CHAT_TEMPLATE",
    "ensure_generated",
    "gemma3_image_tokens",
    "mlp_image_tokens",
    "sha256_file",
    "tiny_llama_vocab",
    "write_gemma3_projector",
    "write_mlp_projector",
    "write_tiny_llama",
]

_WEIGHT_STD = 0.02

# Jinja templates are rendered by llama-cpp-python with trim_blocks and
# lstrip_blocks; every tag strips whitespace and newlines are emitted as
# string literals, so the layout below never leaks into the prompt.

TINY_CHAT_TEMPLATE: str = (
    r"{%- for message in messages -%}"
    r"{{- '<|' + message['role'] + '|>\n' -}}"
    r"{%- if message['content'] is string -%}"
    r"{{- message['content'] -}}"
    r"{%- elif message['content'] -%}"
    r"{%- for part in message['content'] -%}"
    r"{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- endif -%}"
    r"{{- '\n' -}}"
    r"{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)
"""A minimal role-tagged template; MTMDChatHandler needs one in the metadata."""

GEMMA_CHAT_TEMPLATE: str = (
    r"{%- set ns = namespace(system='') -%}"
    r"{%- for message in messages -%}"
    r"{%- if message['role'] == 'system' -%}"
    r"{%- if message['content'] is string -%}"
    r"{%- set ns.system = ns.system + message['content'] -%}"
    r"{%- elif message['content'] -%}"
    r"{%- for part in message['content'] -%}"
    r"{%- if part['type'] == 'text' -%}"
    r"{%- set ns.system = ns.system + part['text'] -%}"
    r"{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- endif -%}"
    r"{%- set ns.system = ns.system + '\n\n' -%}"
    r"{%- else -%}"
    r"{{- '<start_of_turn>'"
    r" + ('model' if message['role'] == 'assistant' else 'user') + '\n' -}}"
    r"{%- if message['role'] != 'assistant' -%}"
    r"{{- ns.system -}}{%- set ns.system = '' -%}"
    r"{%- endif -%}"
    r"{%- if message['content'] is string -%}"
    r"{{- message['content'] | trim -}}"
    r"{%- elif message['content'] -%}"
    r"{%- for part in message['content'] -%}"
    r"{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- endif -%}"
    r"{{- '<end_of_turn>\n' -}}"
    r"{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
)
"""Gemma turn template; gemma3-270m (a base model) ships none.

Content may be a string or a list of parts. MTMDChatHandler has already
turned image parts into ``{"type": "text", "text": <media marker>}``, and
mtmd wraps each image in ``<start_of_image>``/``<end_of_image>`` itself, so
only text parts are emitted. No BOS is written: mtmd tokenizes with
``add_special=True`` and adds it. System text is folded into the next user
turn, as Gemma has no system role.
"""


def _rng(seed: int, name: str) -> np.random.Generator:
    """One generator per tensor, so bytes do not depend on write order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _normal(
    seed: int, name: str, shape: Sequence[int], dtype: type[np.floating] = np.float32
) -> npt.NDArray[np.floating]:
    """Small-std weights keep activations finite through random layers."""
    values = _rng(seed, name).standard_normal(tuple(shape), dtype=np.float32)
    return (values * np.float32(_WEIGHT_STD)).astype(dtype)


def _add_normal(
    w: gguf.GGUFWriter,
    seed: int,
    name: str,
    shape: Sequence[int],
    dtype: type[np.floating] = np.float32,
) -> None:
    """Add one random weight tensor, seeded by its own name."""
    w.add_tensor(name, _normal(seed, name, shape, dtype))


def _ones(shape: Sequence[int]) -> npt.NDArray[np.float32]:
    """Norm weights of 1 make norms plain normalisation."""
    return np.ones(tuple(shape), dtype=np.float32)


def _zeros(shape: Sequence[int]) -> npt.NDArray[np.float32]:
    """Biases of 0 keep the random model centred."""
    return np.zeros(tuple(shape), dtype=np.float32)


def _finish(writer: gguf.GGUFWriter, path: Path) -> Path:
    """Write header, metadata and tensors in the one order GGUF allows."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return path


def _check_tower(image_size: int, patch_size: int, width: int, heads: int, ffn: int) -> None:
    """Fail early on shapes clip.cpp would reject or silently misread."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    if width % heads:
        raise ValueError(f"width {width} is not a multiple of heads {heads}")
    if ffn == width:
        # clip.cpp swaps ffn_up/ffn_down when ffn_down's input width equals
        # the embedding width (a fix for old conversions); equal widths would
        # make that test ambiguous.
        raise ValueError("ffn must differ from width")


def _add_vision_header(
    w: gguf.GGUFWriter,
    *,
    projector_type: str,
    image_size: int,
    patch_size: int,
    width: int,
    blocks: int,
    heads: int,
    ffn: int,
    projection_dim: int,
    eps: float,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    use_gelu: bool,
    name: str,
    seed: int,
) -> None:
    """The keys clip.cpp's loader reads; all but use_gelu are required."""
    w.add_name(name)
    w.add_description(f"synthetic random weights, seed {seed}; outputs are meaningless")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", projector_type)
    w.add_bool("clip.use_gelu", use_gelu)
    w.add_uint32("clip.vision.image_size", image_size)
    w.add_uint32("clip.vision.patch_size", patch_size)
    w.add_uint32("clip.vision.embedding_length", width)
    w.add_uint32("clip.vision.feed_forward_length", ffn)
    w.add_uint32("clip.vision.block_count", blocks)
    w.add_uint32("clip.vision.projection_dim", projection_dim)
    w.add_uint32("clip.vision.attention.head_count", heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", eps)
    w.add_array("clip.vision.image_mean", [float(v) for v in image_mean])
    w.add_array("clip.vision.image_std", [float(v) for v in image_std])


def _add_vision_tower(
    w: gguf.GGUFWriter,
    *,
    seed: int,
    image_size: int,
    patch_size: int,
    width: int,
    blocks: int,
    ffn: int,
    post_ln: bool,
    matrix_dtype: type[np.floating],
) -> None:
    """A ViT: conv patch embedding, learned positions, pre-norm blocks.

    numpy shapes are ggml's ``ne`` reversed: a ``(out, in)`` array is a
    weight that maps ``in`` features to ``out``.
    """
    n_patches = (image_size // patch_size) ** 2
    # patch_embd and position_embd stay f32, as llama.cpp's converter keeps them
    _add_normal(w, seed, "v.patch_embd.weight", (width, 3, patch_size, patch_size))
    w.add_tensor("v.patch_embd.bias", _zeros((width,)))
    _add_normal(w, seed, "v.position_embd.weight", (n_patches, width))
    for i in range(blocks):
        p = f"v.blk.{i}"
        for norm in ("ln1", "ln2"):
            w.add_tensor(f"{p}.{norm}.weight", _ones((width,)))
            w.add_tensor(f"{p}.{norm}.bias", _zeros((width,)))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            _add_normal(w, seed, f"{p}.{proj}.weight", (width, width), matrix_dtype)
            w.add_tensor(f"{p}.{proj}.bias", _zeros((width,)))
        _add_normal(w, seed, f"{p}.ffn_up.weight", (ffn, width), matrix_dtype)
        w.add_tensor(f"{p}.ffn_up.bias", _zeros((ffn,)))
        _add_normal(w, seed, f"{p}.ffn_down.weight", (width, ffn), matrix_dtype)
        w.add_tensor(f"{p}.ffn_down.bias", _zeros((width,)))
    if post_ln:
        w.add_tensor("v.post_ln.weight", _ones((width,)))
        w.add_tensor("v.post_ln.bias", _zeros((width,)))


def gemma3_image_tokens(
    *, image_size: int = 224, patch_size: int = 14, scale_factor: int = 2
) -> int:
    """Image tokens a gemma3 projector yields: patches per side, average-pooled."""
    side = image_size // patch_size // scale_factor
    return side * side


def write_gemma3_projector(
    path: Path,
    *,
    text_embd: int,
    seed: int = 0,
    image_size: int = 224,
    patch_size: int = 14,
    width: int = 128,
    blocks: int = 2,
    heads: int = 2,
    ffn: int = 512,
    scale_factor: int = 2,
    f16: bool = True,
) -> Path:
    """Write a ``clip``/``gemma3`` mmproj: a SigLIP tower, pool, RMS norm, projection.

    ``text_embd`` must equal the text model's embedding width (640 for
    gemma3-270m). ``scale_factor`` is the side of the average pool over the
    patch grid (real Gemma 3 uses 4 on a 64x64 grid; clip.cpp reads it from
    ``clip.vision.projector.scale_factor``), so the image costs
    ``(image_size // patch_size // scale_factor) ** 2`` tokens: 64 by default.
    ``f16`` stores the linear weights as f16 to halve the file.
    """
    _check_tower(image_size, patch_size, width, heads, ffn)
    grid = image_size // patch_size
    if scale_factor < 1 or grid % scale_factor:
        raise ValueError(f"patch grid {grid} is not a multiple of scale_factor {scale_factor}")
    matrix_dtype: type[np.floating] = np.float16 if f16 else np.float32
    path = Path(path)
    w = gguf.GGUFWriter(path, "clip")
    _add_vision_header(
        w,
        projector_type="gemma3",
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        blocks=blocks,
        heads=heads,
        ffn=ffn,
        projection_dim=text_embd,
        eps=1e-6,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        use_gelu=True,
        name="vlmbench-synthetic-gemma3-mmproj",
        seed=seed,
    )
    w.add_uint32("clip.vision.projector.scale_factor", scale_factor)
    _add_vision_tower(
        w,
        seed=seed,
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        blocks=blocks,
        ffn=ffn,
        post_ln=True,
        matrix_dtype=matrix_dtype,
    )
    w.add_tensor("mm.soft_emb_norm.weight", _ones((width,)))
    # clip.cpp multiplies by its transpose, so ne = [text_embd, width]
    _add_normal(w, seed, "mm.input_projection.weight", (width, text_embd), matrix_dtype)
    return _finish(w, path)


def mlp_image_tokens(*, image_size: int = 32, patch_size: int = 8) -> int:
    """Image tokens an mlp (LLaVA) projector yields: one per patch."""
    side = image_size // patch_size
    return side * side


def write_mlp_projector(
    path: Path,
    *,
    text_embd: int = 64,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 32,
    ffn: int = 64,
    blocks: int = 1,
    heads: int = 2,
) -> Path:
    """Write a ``clip``/``mlp`` (LLaVA-style) mmproj for fast tests.

    ``mm.0``/``mm.2`` map the tower width to ``text_embd``, which must equal
    the text model's ``n_embd``. The image costs one token per patch (16 by
    default). LLaVA uses the second-to-last block's output, so clip.cpp runs
    ``blocks - 1`` blocks: the default of 1 runs none, which is fastest.
    """
    _check_tower(image_size, patch_size, width, heads, ffn)
    path = Path(path)
    w = gguf.GGUFWriter(path, "clip")
    _add_vision_header(
        w,
        projector_type="mlp",
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        blocks=blocks,
        heads=heads,
        ffn=ffn,
        projection_dim=text_embd,
        eps=1e-5,
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
        use_gelu=False,
        name="vlmbench-synthetic-mlp-mmproj",
        seed=seed,
    )
    _add_vision_tower(
        w,
        seed=seed,
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        blocks=blocks,
        ffn=ffn,
        post_ln=False,
        matrix_dtype=np.float32,
    )
    _add_normal(w, seed, "mm.0.weight", (text_embd, width))
    w.add_tensor("mm.0.bias", _zeros((text_embd,)))
    _add_normal(w, seed, "mm.2.weight", (text_embd, text_embd))
    w.add_tensor("mm.2.bias", _zeros((text_embd,)))
    return _finish(w, path)


_SPM_SPACE = "\u2581"  # SentencePiece's word-boundary mark
_JSON_PIECES = ('{"', '":', '",', '"}', "[]", "{}", "0.", "1.", "true", "false", "null")


def tiny_llama_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types of the tiny SPM vocabulary.

    ``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens (so any text
    tokenizes through byte fallback), then printable ASCII, ``▁`` plus each
    lowercase letter, and a few JSON pieces. SPM merges adjacent symbols
    whose concatenation is a token, highest score first, so every
    multi-character piece here is reachable by pairwise merges.
    """
    tokens = ["<unk>", "<s>", "</s>"]
    types = [int(gguf.TokenType.UNKNOWN), int(gguf.TokenType.CONTROL), int(gguf.TokenType.CONTROL)]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [int(gguf.TokenType.BYTE)] * 256
    pieces = [_SPM_SPACE]
    pieces += [chr(c) for c in range(33, 127)]
    pieces += [_SPM_SPACE + chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += ["tr", "tru", "fa", "fal", "fals", "nu", "nul"]
    pieces += list(_JSON_PIECES)
    tokens += pieces
    types += [int(gguf.TokenType.NORMAL)] * len(pieces)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


def write_tiny_llama(
    path: Path,
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 4,
    n_ff: int = 128,
    n_ctx: int = 512,
    chat_template: str | None = TINY_CHAT_TEMPLATE,
) -> Path:
    """Write a random-weight ``llama`` text model with an SPM tokenizer.

    The output embedding is tied to ``token_embd`` (llama.cpp falls back to it
    when ``output.weight`` is absent), which keeps the file small.
    """
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head and n_head by n_head_kv")
    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    tokens, scores, types = tiny_llama_vocab()
    path = Path(path)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("vlmbench-synthetic-tiny-llama")
    w.add_description(f"synthetic random weights, seed {seed}; outputs are meaningless")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    _add_normal(w, seed, "token_embd.weight", (len(tokens), n_embd))
    for i in range(n_layer):
        p = f"blk.{i}"
        w.add_tensor(f"{p}.attn_norm.weight", _ones((n_embd,)))
        _add_normal(w, seed, f"{p}.attn_q.weight", (n_embd, n_embd))
        _add_normal(w, seed, f"{p}.attn_k.weight", (n_embd_kv, n_embd))
        _add_normal(w, seed, f"{p}.attn_v.weight", (n_embd_kv, n_embd))
        _add_normal(w, seed, f"{p}.attn_output.weight", (n_embd, n_embd))
        w.add_tensor(f"{p}.ffn_norm.weight", _ones((n_embd,)))
        _add_normal(w, seed, f"{p}.ffn_gate.weight", (n_ff, n_embd))
        _add_normal(w, seed, f"{p}.ffn_up.weight", (n_ff, n_embd))
        _add_normal(w, seed, f"{p}.ffn_down.weight", (n_embd, n_ff))
    w.add_tensor("output_norm.weight", _ones((n_embd,)))
    return _finish(w, path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks; recorded so runs name their weights."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_generated(cache_dir: Path, name: str, writer: Callable[[Path], Path]) -> Path:
    """Return ``cache_dir/name``, writing it with ``writer`` if it is missing.

    The file is written to a temporary name in the same directory and moved
    into place with ``os.replace``, so readers never see a partial file and
    two racing processes both end with one complete file (the later replace
    wins; the writers are deterministic, so the bytes are the same).
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:  # Ctrl-C anywhere in here (writing a large model takes a while) leaves no file
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        os.close(fd)
        writer(tmp)
        tmp.chmod(0o644)  # mkstemp makes 0600; the cache is meant to be read by others
        tmp.replace(target)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return target
