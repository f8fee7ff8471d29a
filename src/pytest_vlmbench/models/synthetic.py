"""Synthetic GGUF files with seeded random weights.

The default suite must run without a hub or a GPU, so the models it drives
through llama.cpp are made here: a SigLIP-shaped ``gemma3`` projector that
plugs into the real gemma3-270m text model, and a tiny ``llama`` text model
with an ``mlp`` projector for fast tests. The outputs are meaningless; the
shapes, metadata and code paths are the real ones. Where the files are cached
is `weights.py`'s business (``ensure_generated``).

Every writer is deterministic: the same arguments give a byte-identical file.
Each tensor draws from its own generator seeded by ``(seed, crc32(name))``, so
the bytes do not depend on the order tensors are written in.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "gemma3_image_tokens",
    "mlp_image_tokens",
    "tiny_llama_vocab",
    "write_gemma3_projector",
    "write_mlp_projector",
    "write_tiny_llama",
]

_WEIGHT_STD = 0.02

# Rendered by llama-cpp-python with trim_blocks and lstrip_blocks; every tag strips
# whitespace and newlines are string literals, so the layout never leaks into the prompt.
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


def _describe(w: gguf.GGUFWriter, name: str, seed: int) -> None:
    """general.name and a description that no one takes the outputs for real ones."""
    w.add_name(name)
    w.add_description(f"synthetic random weights, seed {seed}; outputs are meaningless")


def _finish(writer: gguf.GGUFWriter, path: Path) -> Path:
    """Write header, metadata and tensors in the one order GGUF allows."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return path


@dataclass(frozen=True)
class _Tower:
    """A ViT's shape, checked where it is made for what clip.cpp would reject or misread."""

    image_size: int
    patch_size: int
    width: int
    blocks: int
    heads: int
    ffn: int

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.ffn == self.width:
            # clip.cpp swaps ffn_up/ffn_down when ffn_down's input width equals
            # the embedding width (a fix for old conversions); equal widths would
            # make that test ambiguous.
            raise ValueError("ffn must differ from width")

    @property
    def grid(self) -> int:
        """Patches per side of the image."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class _Projector:
    """What sets one clip projector type's header and tower apart from another's."""

    type: str
    name: str
    eps: float
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    use_gelu: bool
    post_ln: bool


_GEMMA3 = _Projector("gemma3", "vlmbench-synthetic-gemma3-mmproj", 1e-6,
                     (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), use_gelu=True, post_ln=True)
_MLP = _Projector("mlp", "vlmbench-synthetic-mlp-mmproj", 1e-5,
                  (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711),
                  use_gelu=False, post_ln=False)  # CLIP's normalisation, as LLaVA uses


def _vision_writer(
    path: Path, kind: _Projector, tower: _Tower, *, seed: int, projection_dim: int,
    matrix_dtype: type[np.floating], extra: Mapping[str, int],
) -> gguf.GGUFWriter:
    """A ``clip`` writer holding the header clip.cpp's loader reads (all keys but
    use_gelu are required), the ``extra`` uint32 keys, and the tower's tensors; the
    caller adds its projection (``mm.*``) and finishes the file."""
    w = gguf.GGUFWriter(path, "clip")
    _describe(w, kind.name, seed)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", kind.type)
    w.add_bool("clip.use_gelu", kind.use_gelu)
    w.add_uint32("clip.vision.image_size", tower.image_size)
    w.add_uint32("clip.vision.patch_size", tower.patch_size)
    w.add_uint32("clip.vision.embedding_length", tower.width)
    w.add_uint32("clip.vision.feed_forward_length", tower.ffn)
    w.add_uint32("clip.vision.block_count", tower.blocks)
    w.add_uint32("clip.vision.projection_dim", projection_dim)
    w.add_uint32("clip.vision.attention.head_count", tower.heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", kind.eps)
    w.add_array("clip.vision.image_mean", [float(v) for v in kind.image_mean])
    w.add_array("clip.vision.image_std", [float(v) for v in kind.image_std])
    for key, value in extra.items():
        w.add_uint32(key, value)
    _add_vision_tower(w, tower, seed=seed, post_ln=kind.post_ln, matrix_dtype=matrix_dtype)
    return w


def _add_vision_tower(
    w: gguf.GGUFWriter, tower: _Tower, *, seed: int, post_ln: bool,
    matrix_dtype: type[np.floating],
) -> None:
    """A ViT: conv patch embedding, learned positions, pre-norm blocks.

    numpy shapes are ggml's ``ne`` reversed: a ``(out, in)`` array is a
    weight that maps ``in`` features to ``out``.
    """
    width, ffn, patch = tower.width, tower.ffn, tower.patch_size
    # patch_embd and position_embd stay f32, as llama.cpp's converter keeps them
    _add_normal(w, seed, "v.patch_embd.weight", (width, 3, patch, patch))
    w.add_tensor("v.patch_embd.bias", _zeros((width,)))
    _add_normal(w, seed, "v.position_embd.weight", (tower.grid**2, width))
    for i in range(tower.blocks):
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
    path: Path, *, text_embd: int, seed: int = 0,
    image_size: int = 224, patch_size: int = 14, width: int = 128, blocks: int = 2,
    heads: int = 2, ffn: int = 512, scale_factor: int = 2, f16: bool = True,
) -> Path:
    """Write a ``clip``/``gemma3`` mmproj: a SigLIP tower, pool, RMS norm, projection.

    ``text_embd`` must equal the text model's embedding width (640 for
    gemma3-270m). ``scale_factor`` is the side of the average pool over the
    patch grid (real Gemma 3 uses 4 on a 64x64 grid; clip.cpp reads it from
    ``clip.vision.projector.scale_factor``), so the image costs
    ``(image_size // patch_size // scale_factor) ** 2`` tokens: 64 by default.
    ``f16`` stores the linear weights as f16 to halve the file.
    """
    tower = _Tower(image_size, patch_size, width, blocks, heads, ffn)
    if scale_factor < 1 or tower.grid % scale_factor:
        raise ValueError(
            f"patch grid {tower.grid} is not a multiple of scale_factor {scale_factor}")
    matrix_dtype: type[np.floating] = np.float16 if f16 else np.float32
    path = Path(path)
    w = _vision_writer(path, _GEMMA3, tower, seed=seed, projection_dim=text_embd,
                       matrix_dtype=matrix_dtype,
                       extra={"clip.vision.projector.scale_factor": scale_factor})
    w.add_tensor("mm.soft_emb_norm.weight", _ones((width,)))
    # clip.cpp multiplies by its transpose, so ne = [text_embd, width]
    _add_normal(w, seed, "mm.input_projection.weight", (width, text_embd), matrix_dtype)
    return _finish(w, path)


def mlp_image_tokens(*, image_size: int = 32, patch_size: int = 8) -> int:
    """Image tokens an mlp (LLaVA) projector yields: one per patch."""
    side = image_size // patch_size
    return side * side


def write_mlp_projector(
    path: Path, *, text_embd: int = 64, seed: int = 0,
    image_size: int = 32, patch_size: int = 8, width: int = 32, ffn: int = 64,
    blocks: int = 1, heads: int = 2,
) -> Path:
    """Write a ``clip``/``mlp`` (LLaVA-style) mmproj for fast tests.

    ``mm.0``/``mm.2`` map the tower width to ``text_embd``, which must equal
    the text model's ``n_embd``. The image costs one token per patch (16 by
    default). LLaVA uses the second-to-last block's output, so clip.cpp runs
    ``blocks - 1`` blocks: the default of 1 runs none, which is fastest.
    """
    tower = _Tower(image_size, patch_size, width, blocks, heads, ffn)
    path = Path(path)
    w = _vision_writer(path, _MLP, tower, seed=seed, projection_dim=text_embd,
                       matrix_dtype=np.float32, extra={})
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
    _describe(w, "vlmbench-synthetic-tiny-llama", seed)
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
