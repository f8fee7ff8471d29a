"""The engines' benchmarks need torch, transformers and vLLM (`make bench-engines` installs
them into .venv-engines); `make bench`'s environment has none of them, so there this
directory is not collected."""

from __future__ import annotations

import importlib.util

if any(importlib.util.find_spec(name) is None for name in ("torch", "transformers", "vllm")):
    collect_ignore_glob = ["test_*.py"]
