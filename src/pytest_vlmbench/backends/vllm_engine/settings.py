"""The speed-deciding settings of a vllm model: what a catalog entry's `settings` table
(and the overrides) may give, our defaults, and `vllm.LLM`'s keyword arguments for them.

Each setting is checked when a model loads, before any engine process starts, and a bad
one is one line naming it (the catalog checks llama_cpp's own; a backend checks its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_vlmbench.backends import BackendError, LoadContext
from pytest_vlmbench.models.catalog import ModelSpec, did_you_mean

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""Precision -> the dtype vLLM loads the weights at; vLLM does not quantise at load."""
GiB = 1 << 30
STRUCTURED_BACKENDS = ("auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer")


@dataclass(frozen=True)
class Rule:
    """What one vLLM setting accepts, said in one line when it is refused."""

    kind: str  # "bool", "int", "number" or "choice"
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is refused (a number > minimum)
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "choice":
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}"
        whole = self.kind == "int"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            return "must be a whole number" if whole else "must be a number"
        low, high = self.minimum, self.maximum
        if low is not None and (value <= low if self.above else value < low):
            return f"must be {'greater than' if self.above else 'at least'} {low:g}"
        if high is not None and value > high:
            return f"must be at most {high:g}"
        return None


VLLM_SETTINGS: dict[str, Rule] = {
    "max_model_len": Rule("int", 2),  # a prompt token and a generated one
    "max_num_seqs": Rule("int", 1),
    "max_num_batched_tokens": Rule("int", 1),
    "gpu_memory_utilization": Rule("number", 0, 1, above=True),
    "kv_cache_space_gib": Rule("number", 0, above=True),
    "enforce_eager": Rule("bool"),
    "enable_prefix_caching": Rule("bool"),
    "structured_outputs_backend": Rule("choice", choices=STRUCTURED_BACKENDS),
    "disable_any_whitespace": Rule("bool"),
}
"""The settings a vllm model's catalog entry (and the overrides) may give."""


def _shown(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def check_vllm_settings(settings: Mapping[str, Any], where: str) -> None:
    """BackendError naming the first setting vLLM does not know or cannot use."""
    for name, value in settings.items():
        rule = VLLM_SETTINGS.get(name)
        if rule is None:
            raise BackendError(
                f"{where}: field 'settings' has unknown vllm setting {name!r}"
                f"{did_you_mean(name, VLLM_SETTINGS, n=1)}; allowed: "
                f"{', '.join(sorted(VLLM_SETTINGS))}")
        problem = rule.problem(value)
        if problem is not None:
            raise BackendError(f"{where}: field 'settings.{name}' {problem}, got {_shown(value)}")


def engine_settings(spec: ModelSpec, ctx: LoadContext, on_cpu: bool) -> dict[str, Any]:
    """Our defaults, then the catalog's settings and the overrides, checked.

    None leaves a value to vLLM (the recorded settings then say what it chose). On a CPU
    build: a 1 GiB KV cache (vLLM would otherwise size it from free memory, a figure
    that changes from run to run) and eager mode (torch.compile of a CPU graph costs
    minutes per load). Prefix caching is off, as llama_cpp's prompt cache is: every
    request pays its full prefill, so requests of one benchmark are comparable."""
    settings: dict[str, Any] = {
        "max_model_len": None,
        "max_num_seqs": None,
        "max_num_batched_tokens": None,
        "gpu_memory_utilization": None,
        "kv_cache_space_gib": 1 if on_cpu else None,
        "enforce_eager": on_cpu,
        "enable_prefix_caching": False,
        "structured_outputs_backend": "auto",
        "disable_any_whitespace": False,
    }
    for source, where in ((spec.settings, f"{spec.catalog_path}: model {spec.id!r}"),
                          (ctx.overrides, f"model {spec.id!r} (setting overrides)")):
        check_vllm_settings(source, where)
        settings.update(source)
    if settings["disable_any_whitespace"] and \
            settings["structured_outputs_backend"] not in ("xgrammar", "guidance"):
        raise BackendError(
            f"model {spec.id!r}: settings.disable_any_whitespace = true needs "
            "settings.structured_outputs_backend \"xgrammar\" or \"guidance\" (vLLM's other "
            f"backends cannot), got {settings['structured_outputs_backend']!r}")
    return settings


def engine_arguments(path: Path, dtype: str, settings: Mapping[str, Any],
                     seed: int, max_images: int | None = None) -> dict[str, Any]:
    """`vllm.LLM`'s keyword arguments for these settings; `max_images` (a vision model's
    catalog limit) becomes vLLM's image limit per prompt, which also bounds the images
    its start-up profiling reserves memory for (vLLM's default: 999 a prompt)."""
    kwargs: dict[str, Any] = {
        "model": str(path), "dtype": dtype, "seed": seed,
        "disable_log_stats": False,  # else RequestOutput.metrics is None: no engine times
        "enforce_eager": settings["enforce_eager"],
        "enable_prefix_caching": settings["enable_prefix_caching"],
        "structured_outputs_config": {
            "backend": settings["structured_outputs_backend"],
            "disable_any_whitespace": settings["disable_any_whitespace"]},
    }
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens",
                 "gpu_memory_utilization"):
        if settings[name] is not None:
            kwargs[name] = settings[name]
    if settings["kv_cache_space_gib"] is not None:
        kwargs["kv_cache_memory_bytes"] = int(settings["kv_cache_space_gib"] * GiB)
    if max_images is not None:
        kwargs["limit_mm_per_prompt"] = {"image": max_images}
    return kwargs
