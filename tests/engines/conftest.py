"""The in-process engines' tests (transformers, vLLM): real inference on tiny random-weight
models generated here. They need the engines environment (tools/install_engines.sh, `make
test-engines`); in the default one, without torch, this directory is not collected (the
session header says so: tests/conftest.py) instead of failing on an import.

torch, transformers and vllm are imported here, in the outer process, for the reason
tests/conftest.py imports llama_cpp: pytester's in-process sessions restore sys.modules
afterwards, and extension modules refuse to be imported a second time in one process.
"""

from __future__ import annotations

from tests.conftest import ENGINES_MISSING

if ENGINES_MISSING:
    collect_ignore_glob = ["test_*.py"]
else:
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import vllm  # noqa: F401
