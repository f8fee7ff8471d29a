"""A Hugging Face model directory loaded in this process: weights, dtype, settings, load,
and what it can do (`capabilities`); its requests run in request.py.

- Weights and activations in the precision's dtype (fp32, bf16, fp16), or quantized
  while loading by bitsandbytes (int8, nf4, int4; compute in bf16 on a GPU, fp32 on
  the CPU). The model goes to "cuda" on a GPU device, "cpu" otherwise.
- torch's intra-op threads: --vlm-threads, else the catalog's `threads`, else every core
  this process may use (torch's own default is the physical cores); recorded as torch
  reports it. torch.set_num_threads is process-wide.
- Attention as transformers chooses it (sdpa where the model supports it) unless the
  catalog's `attn_implementation` says otherwise; recorded as the model reports it.
- Greedy decoding at temperature 0 (do_sample=False); a fresh KV cache per request.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_vlmbench.backends import (
    BackendError,
    Capabilities,
    LoadContext,
    Request,
    Response,
    model_directory,
)
from pytest_vlmbench.backends.hf_transformers.backend import (
    BNB_PRECISIONS,
    FLOAT_PRECISIONS,
    torch_device,
)
from pytest_vlmbench.backends.hf_transformers.constraint import ConstraintCompiler
from pytest_vlmbench.backends.hf_transformers.request import (
    CONSTRAINT_STAGES,
    IMAGE_COUNTS,
    IMAGE_STAGES,
    TEXT_COUNTS,
    TEXT_STAGES,
    Engine,
    serve,
    serve_batch,
)
from pytest_vlmbench.backends.hf_transformers.timing import vision_modules
from pytest_vlmbench.models.catalog import CatalogError, ModelSpec, SettingRule, check_settings
from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE
from pytest_vlmbench.models.weights import Artifact
from pytest_vlmbench.tasks import Task

import torch  # isort: skip  # the backend's modules are imported only when used
import transformers  # isort: skip

DECODE_BYTES_SOURCE = (
    "sum of numel x element size of the language model's parameters as loaded (vision "
    "encoder and projector excluded; tied embeddings once): every weight a decode step "
    "reads, counting the whole token embedding although a step reads one row of it; KV "
    "cache not counted"
)


@dataclass(frozen=True)
class ChoiceRule(SettingRule):
    """A setting that is one of a few names."""

    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any, where: str) -> None:
        if value not in self.choices:
            raise CatalogError(f"{where}: field 'settings.{name}' must be one of "
                               f"{', '.join(map(repr, self.choices))}, got {value!r}")


TRANSFORMERS_SETTINGS: dict[str, SettingRule] = {
    "threads": SettingRule(int, 1),
    "attn_implementation": ChoiceRule(str, choices=(
        "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")),
}
"""The settings the transformers backend reads from an entry's `settings` table."""


def speed_settings(spec: ModelSpec, ctx: LoadContext) -> dict[str, Any]:
    """Our defaults, then the catalog's settings, the overrides and --vlm-threads."""
    settings: dict[str, Any] = {"threads": None, "attn_implementation": None}
    for source, where in ((spec.settings, f"{spec.catalog_path}: model {spec.id!r}"),
                          (ctx.overrides, f"model {spec.id!r} (setting overrides)")):
        try:
            check_settings(dict(source), TRANSFORMERS_SETTINGS, "transformers", where)
        except CatalogError as exc:
            raise BackendError(str(exc)) from None
        settings.update(source)
    if ctx.threads is not None:  # the command line wins over the catalog
        settings["threads"] = ctx.threads
    if settings["threads"] is None:
        from pytest_vlmbench.models.devices import cpu_threads

        settings["threads"] = cpu_threads()
    return settings


def _first_line(exc: BaseException) -> str:
    """The library's first reason line (transformers' messages run to paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _quantization(precision: str, cuda: bool) -> tuple[Any, Any]:
    """(BitsAndBytesConfig, compute dtype) for a bitsandbytes precision."""
    native_bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    compute = torch.bfloat16 if native_bf16 else torch.float16 if cuda else torch.float32
    if precision == "int8":
        return transformers.BitsAndBytesConfig(load_in_8bit=True), compute
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4" if precision == "nf4" else "fp4",
        bnb_4bit_compute_dtype=compute), compute


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every end-of-generation id: the generation config's (one or a list) and the
    tokenizer's."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


class TransformersModel:
    """A loaded transformers model serving requests in this process."""

    def __init__(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> None:
        self.spec = spec
        self.precision = precision
        t0 = time.perf_counter_ns()
        self._weights = self._resolve_weights(ctx)
        self.artifacts = [self._weights.to_json()]
        resolve_ns = time.perf_counter_ns() - t0

        settings = speed_settings(spec, ctx)
        self._cuda = torch_device(ctx.device) == "cuda"
        torch.set_num_threads(int(settings["threads"]))
        t1 = time.perf_counter_ns()
        model, tokenizer, processor, float_dtype = self._load(settings)
        self.timings_ns = {"resolve": resolve_ns, "load": time.perf_counter_ns() - t1}
        self._engine = self._engine_of(model, tokenizer, processor, float_dtype)
        self._constraints = ConstraintCompiler(tokenizer, self._engine.vocab_size,
                                               sorted(self._engine.eos_ids))
        self.capabilities = self._capabilities()
        self.warnings = self._warnings()
        self.settings = self._recorded(settings)

    # -- load ---------------------------------------------------------------------
    def _resolve_weights(self, ctx: LoadContext) -> Artifact:
        """The model directory (found, fetched or generated into the cache)."""
        artifact: Artifact = model_directory(self.spec, self.precision, ctx)
        return artifact

    def _load(self, settings: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
        """(model, tokenizer, processor or None, dtype of floating inputs); a failure is
        one line naming the model, the precision, the directory and transformers' reason."""
        path = self._weights.path
        vision = self.spec.modality == "vision"
        device = "cuda" if self._cuda else "cpu"
        kwargs: dict[str, Any] = {}
        if self.precision in FLOAT_PRECISIONS:
            float_dtype = getattr(torch, FLOAT_PRECISIONS[self.precision])
            kwargs["dtype"] = float_dtype
        else:
            kwargs["quantization_config"], float_dtype = _quantization(self.precision,
                                                                       self._cuda)
            kwargs["dtype"] = float_dtype
            kwargs["device_map"] = {"": device}
        if settings["attn_implementation"] is not None:
            kwargs["attn_implementation"] = settings["attn_implementation"]
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" on stderr
        model: Any = None
        try:
            if vision:
                processor = transformers.AutoProcessor.from_pretrained(path)
                tokenizer = processor.tokenizer
                model = transformers.AutoModelForImageTextToText.from_pretrained(path, **kwargs)
            else:
                processor = None
                tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
            if "device_map" not in kwargs:
                model.to(device)
            model.eval()
        except Exception as exc:  # OSError, ValueError, safetensors' errors, ImportError...
            del model
            self._free()
            hint = ""
            if self.precision in BNB_PRECISIONS:
                hint = (f" (bitsandbytes {self._version('bitsandbytes')} quantizing "
                        f"{BNB_PRECISIONS[self.precision]} on {device})")
            raise BackendError(
                f"model {self.spec.id!r} ({self.precision}): transformers could not load "
                f"{self._weights.source} ({path}){hint}: {_first_line(exc)}") from None
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        self._check_template(processor if vision else tokenizer, path)
        if tokenizer.pad_token_id is None:  # a batch pads; models without a pad token
            tokenizer.pad_token = tokenizer.eos_token  # pad with EOS, as generate() does
        tokenizer.padding_side = "left"  # generate() continues after the last column
        return model, tokenizer, processor, float_dtype

    def _check_template(self, owner: Any, path: Path) -> None:
        if self.spec.chat_format == "model" and not getattr(owner, "chat_template", None):
            raise BackendError(
                f"model {self.spec.id!r} ({self.precision}): chat_format 'model' but {path} "
                "has no chat template (chat_template.jinja, or chat_template in "
                "tokenizer_config.json); set chat_format 'completion' or 'gemma' in the catalog")

    def _engine_of(self, model: Any, tokenizer: Any, processor: Any,
                   float_dtype: Any) -> Engine:
        image_token = getattr(processor, "image_token_id", None)
        if image_token is None:
            image_token = getattr(model.config, "image_token_id",
                                  getattr(model.config, "image_token_index", None))
        eos = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        return Engine(
            model_id=self.spec.id, model=model, tokenizer=tokenizer, processor=processor,
            device=model.device, float_dtype=float_dtype,
            template=GEMMA_CHAT_TEMPLATE if self.spec.chat_format == "gemma" else None,
            plain_text=self.spec.chat_format == "completion",
            eos_ids=eos, pad_id=int(pad) if pad is not None else min(eos),
            image_token_id=int(image_token) if image_token is not None else None,
            vision=tuple(vision_modules(model)) if processor is not None else (),
            vocab_size=int(model.config.get_text_config().vocab_size), cuda=self._cuda,
            max_images=self.spec.max_images if processor is not None else None,
        )

    def _capabilities(self) -> Capabilities:
        engine = self._engine
        vision = engine.processor is not None
        return Capabilities(
            streaming=True, images=vision, max_images=engine.max_images,
            grammar=True, json_schema=True,
            batch=True, concurrency=1,  # one model, one generate call at a time
            stages=TEXT_STAGES + CONSTRAINT_STAGES + (IMAGE_STAGES if engine.vision else ()),
            counts=TEXT_COUNTS + (IMAGE_COUNTS if vision else ()),
            decode_bytes_per_token=self._language_bytes(),
            decode_bytes_source=DECODE_BYTES_SOURCE,
        )

    def _language_bytes(self) -> int:
        """Parameter bytes outside the vision encoder and projector."""
        vision = {id(p) for module in self._engine.vision for p in module.parameters()}
        return sum(p.numel() * p.element_size() for p in self._engine.model.parameters()
                   if id(p) not in vision)

    def _warnings(self) -> list[str]:
        """Said in every benchmark of this model."""
        out = []
        engine = self._engine
        image_processor = getattr(engine.processor, "image_processor", None)
        if image_processor is not None and type(image_processor).__name__.endswith("Pil"):
            out.append(f"{self.spec.id}: image processor {type(image_processor).__name__} "
                       "(the PIL variant: torchvision is not importable here); the template "
                       "stage of image requests is slower than with torchvision")
        if engine.processor is not None and not engine.vision:
            out.append(f"{self.spec.id}: no vision encoder module found by name "
                       f"({type(engine.model).__name__}): image_encode is not separated from "
                       "prefill")
        return out

    def _recorded(self, settings: dict[str, Any]) -> dict[str, Any]:
        engine = self._engine
        model = engine.model
        return {
            "dtype": str(model.dtype).removeprefix("torch."),
            "quantization": (f"bitsandbytes {BNB_PRECISIONS[self.precision]}"
                             if self.precision in BNB_PRECISIONS else None),
            "device": str(model.device),
            "threads": torch.get_num_threads(),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "chat_format": self.spec.chat_format,
            "model_class": type(model).__name__,
            "processor_class": type(engine.processor or engine.tokenizer).__name__,
            "vision_modules": [type(m).__name__ for m in engine.vision],
            "cuda_sync_in_hooks": self._cuda,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "xgrammar": self._version("xgrammar"),
            "attn_implementation_requested": settings["attn_implementation"],
        }

    @staticmethod
    def _version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    # -- per task and per request -------------------------------------------------
    def prepare(self, task: Task) -> Any:
        """Compile the task's grammar or schema once; a bad one fails the test."""
        return self._constraints.compile(task)

    def generate(self, request: Request) -> Response:
        return serve(self._engine, request)

    def generate_batch(self, requests: Sequence[Request]) -> list[Response | Exception]:
        return serve_batch(self._engine, requests)

    def close(self) -> None:
        """Free the model: its tensors go when nothing refers to them any more."""
        engine = getattr(self, "_engine", None)
        if engine is None:
            return
        del self._engine, self._constraints, engine
        self._free()

    def _free(self) -> None:
        gc.collect()
        if self._cuda:
            torch.cuda.empty_cache()
