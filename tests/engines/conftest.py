"""The in-process engines' tests (transformers, vLLM): real inference on tiny random-weight
models generated here. They need the engines environment (tools/install_engines.sh, `make
test-engines`); in the default one, without torch, this directory is not collected (the
session header says so: tests/conftest.py) instead of failing on an import.

torch, transformers and vllm are imported here, in the outer process, for the reason
tests/conftest.py imports llama_cpp: pytester's in-process sessions restore sys.modules
afterwards, and extension modules refuse to be imported a second time in one process.
"""

from __future__ import annotations

import warnings

from tests.conftest import ENGINES_MISSING

if ENGINES_MISSING:
    collect_ignore_glob = ["test_*.py"]
else:
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import vllm  # noqa: F401

    # transformers and vLLM import their model modules lazily. A module first imported
    # inside an inner session is dropped when that session restores sys.modules, and the
    # next use imports it anew: two LlavaConfig classes, and the tiny LLaVA loaded with
    # the class default image token id (32000, "index out of range" in a 512-token
    # vocabulary). Importing them here keeps one of each.
    # (Their import warns of torch's own deprecations, which this suite's
    # filterwarnings=error would turn into a collection error.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformers import (  # noqa: F401
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
            CLIPVisionModel,
            LlamaForCausalLM,
            LlavaForConditionalGeneration,
            LlavaProcessor,
        )
        from vllm import LLM, SamplingParams  # noqa: F401
