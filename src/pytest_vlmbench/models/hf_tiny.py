"""Tiny random-weight Hugging Face models, built here from a config, with no hub access.

The transformers and vLLM backends load directories in Hugging Face layout (config.json,
tokenizer files, safetensors weights, a processor for a VLM). The embedded test models for
them are made here, like the GGUF files of synthetic.py: the shapes, file formats, chat
templates and code paths are the real ones; the words are meaningless.

- **Tokenizer**: byte-level BPE trained by `tokenizers` on a small built-in corpus (so any
  text, JSON included, encodes), with `<pad>`, `<s>`, `</s>` and `<image>` specials and a
  role-tagged chat template.
- **Text model** (`write_tiny_llama`): LlamaForCausalLM, hidden 128, 2 layers, 2 heads of
  head_dim 64 (vLLM's CPU attention refused head_dim 16; 64 works), tied embeddings.
- **Vision model** (`write_tiny_llava`): LlavaForConditionalGeneration, a 2-layer CLIP
  vision tower on 64x64 images in 16 px patches (16 image tokens), a 2-layer GELU projector
  and the same text model; a CLIPImageProcessor (PIL variant: no torchvision needed) and a
  LlavaProcessor whose chat template places `<image>` where a message has an image part.
  Its weights are saved under the hub's tensor names, which both transformers and vLLM
  load.

Deterministic: the same seed gives the same weights (torch's generator seeded before the
model is built) and the same tokenizer, so the directory's hash names the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "write_tiny_llama", "write_tiny_llava"]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>")
PAD_ID, BOS_ID, EOS_ID, IMAGE_ID = range(4)
VOCAB_SIZE = 512
IMAGE_SIZE, PATCH_SIZE = 64, 16

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '</s>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)
"""Role tags, an image part as `<image>` (the processor expands it to the image's tokens),
`</s>` closing each turn (the model's EOS, so a reply can end like a real one)."""

# Enough varied text for the byte-level BPE to learn merges for prose and JSON; the
# tokenizer only has to cover every byte (the byte-level alphabet does) and be realistic in
# shape, not good.
_CORPUS = (
    "A photo of a cat sitting on a red mat beside a window.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Describe the image in one sentence. What objects are visible?",
    '{"caption": "a dog on a beach", "objects": ["dog", "ball"], "score": 7}',
    '{"sharpness": 8, "exposure": 6, "composition": 9, "keep": true}',
    "user assistant system: You are a helpful vision assistant.",
    "Scene 3 shows two people walking along a street at night under lights.",
)


def _tokenizer() -> Any:
    """A fast tokenizer (byte-level BPE trained here) with specials and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([line for line in _CORPUS for _ in range(20)], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", padding_side="left")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == [PAD_ID, BOS_ID, EOS_ID, IMAGE_ID], ids  # the configs below rely on them
    return tokenizer


def _text_config(vocab_size: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=2048, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, tie_word_embeddings=True,
    )


def _seeded(seed: int) -> None:
    """Seed torch's generator (the weights' draws) and silence save_pretrained's progress
    bars, which would otherwise interleave with pytest's output."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)


def _generation_config(out: Path) -> None:
    """Greedy by default, stopping at `</s>`, as a chat model's generation config says."""
    from transformers import GenerationConfig

    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                     do_sample=False).save_pretrained(out)


def write_tiny_llama(out: Path, seed: int = 0) -> Path:
    """Write the tiny text model's directory at `out` (created); returns it."""
    import torch
    from transformers import LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    _seeded(seed)
    model = LlamaForCausalLM(_text_config(len(tokenizer))).to(torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _generation_config(out)
    return out


def _hub_layout(weights: Path) -> None:
    """Rename the vision tower's tensors as LLaVA checkpoints on the hub name them
    (`vision_tower.vision_model.*`). transformers 5 saves them without `vision_model.`
    and loads either; vLLM's LLaVA loader accepts only the hub's names (seen: "There is
    no module or parameter named 'vision_tower.embeddings'")."""
    from safetensors.torch import load_file, save_file

    prefix, canonical = "vision_tower.", "vision_tower.vision_model."
    tensors = load_file(weights)
    renamed = {(canonical + key[len(prefix):] if key.startswith(prefix)
                and not key.startswith(canonical) else key): value
               for key, value in tensors.items()}
    save_file(renamed, weights, metadata={"format": "pt"})


def write_tiny_llava(out: Path, seed: int = 0) -> Path:
    """Write the tiny LLaVA-style VLM's directory (model, tokenizer, processor) at `out`."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    try:  # transformers 5: the PIL variant needs no torchvision (absent beside torch 2.13 CPU)
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers: the slow processor is the PIL one
        from transformers import CLIPImageProcessor as ImageProcessor

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    images = ImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, image_size=IMAGE_SIZE,
                              patch_size=PATCH_SIZE, projection_dim=64)
    config = LlavaConfig(vision_config=vision, text_config=_text_config(len(tokenizer)),
                         image_token_index=IMAGE_ID, vision_feature_layer=-2,
                         vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    _seeded(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(out)
    _hub_layout(out / "model.safetensors")
    processor.save_pretrained(out)
    _generation_config(out)
    return out
