"""Shared helpers for the plugin's tests: a project layout for inner pytest sessions.

Inner sessions (pytester) run against tiny random-weight GGUF models generated at test
time (`generated:llama-tiny`, `generated:mlp-tiny`, about 0.5 MB) so that every
backend path runs for real in milliseconds. The embedded-defaults test uses the real
gemma3-270m.

llama_cpp, numpy and Pillow are imported here, in the outer process, because
pytester's in-process sessions restore sys.modules afterwards and numpy-based
extensions refuse to be imported a second time in one process.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp  # noqa: F401
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import pytest

from pytest_vlmbench.results import document as results
from pytest_vlmbench.run.records import read_records

if TYPE_CHECKING:
    from tests.fault_proxy import FaultProxy, LcpServer, LlamaServer

ENGINES_MISSING = [name for name in ("torch", "transformers", "vllm")
                   if importlib.util.find_spec(name) is None]
"""The in-process engines this environment lacks; tests/engines/ runs only without any
missing (the engines environment: make test-engines)."""


if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Started as a background job of a shell without job control (`cmd &` in a script),
    # this process ignores SIGINT, and so would every process it starts: the Ctrl-C tests'
    # inner sessions could not be interrupted. A handler, unlike SIG_IGN, is not inherited
    # across exec: the inner sessions get Python's default again.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header() -> str | None:
    if ENGINES_MISSING:
        return (f"tests/engines/ not collected: {', '.join(ENGINES_MISSING)} not installed "
                "(they run in the engines environment: make test-engines)")
    return None

TINY_CATALOG = """
[[model]]
id = "tiny-text"
backend = "llama_cpp"
modality = "text"
chat_format = "model"
default = true
precisions = { fp32 = "generated:llama-tiny" }

[[model]]
id = "tiny-vision"
backend = "llama_cpp"
modality = "vision"
chat_format = "model"
default = true
precisions = { fp32 = "generated:llama-tiny" }
projector = "generated:mlp-tiny"
"""

TINY_TASKS = '''
from pytest_vlmbench.tasks import GenerationParams, Task

CAPTION = Task(name="caption", prompt="Describe.", params=GenerationParams(max_tokens=8))
YES_NO = Task(
    name="yes_no",
    prompt="Answer as JSON.",
    schema={
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "ok": {"type": "boolean"}},
        "required": ["answer", "ok"],
        "additionalProperties": False,
    },
    expects_json=True,
    params=GenerationParams(max_tokens=32),
)
'''


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of generated tiny models for the whole test session."""
    return tmp_path_factory.mktemp("vlm-cache")


@dataclass
class Outcome:
    """An inner session's result and the files it wrote."""

    run: pytest.RunResult
    out: Path

    def doc(self) -> dict[str, Any]:
        return results.load(self.out)

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.out.with_name(self.out.stem + ".records.jsonl"))


@dataclass
class Project:
    """A benchmark project inside pytester's directory."""

    pytester: pytest.Pytester

    def run(self, *args: str) -> Outcome:
        out = self.pytester.path / "out" / "results.json"
        run = self.pytester.runpytest("-p", "no:cacheprovider", f"--vlm-out={out}", *args)
        return Outcome(run, out)


@pytest.fixture
def project(pytester: pytest.Pytester, model_cache: Path) -> Project:
    pytester.makeini(
        f"""
        [pytest]
        vlm_catalog = models.toml
        vlm_cache_dir = {model_cache}
        vlm_device = cpu
        """
    )
    (pytester.path / "models.toml").write_text(TINY_CATALOG)
    pytester.makepyfile(tiny_tasks=TINY_TASKS)
    pytester.syspathinsert()
    return Project(pytester)


def write_png(path: Path, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, "PNG")
    return path


def recompute_latency_p95(records: list[dict[str, Any]]) -> float:
    import numpy as np

    lat = [
        (r["t_end_ns"] - r["t_start_ns"]) / 1e9
        for r in records if r["phase"] == "measure" and r["error"] is None
    ]
    return float(np.percentile(lat, 95))


TEGRASTATS_REPLAY = Path(__file__).resolve().parent.parent / "fixtures" / "tegrastats"
"""The tegrastats replay: bin/tegrastats prints recorded Jetson lines at the asked interval."""


@pytest.fixture
def tegrastats(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Put the replay first on PATH; returns a function choosing the replayed file."""
    monkeypatch.setenv("PATH", f"{TEGRASTATS_REPLAY / 'bin'}{os.pathsep}{os.environ['PATH']}")

    def use(lines: Path) -> Path:
        monkeypatch.setenv("VLMBENCH_TEGRASTATS_REPLAY", str(lines))
        return lines

    return use


# -- a real llama-cpp-python server and a fault proxy in front of it (tests/fault_proxy.py:
# imported when a test asks, so that other tests do not import aiohttp) --------------------
@pytest.fixture(scope="session")
def lcp(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> LcpServer:
    """One llama-cpp-python server for the session, serving the tiny test models."""
    from tests.fault_proxy import LcpServer, shared, tiny_lcp_models, tiny_weights

    weights = tiny_weights(model_cache)
    server: LcpServer = shared("lcp", lambda: LcpServer(
        tiny_lcp_models(weights), tmp_path_factory.mktemp("lcp")))
    return server


@pytest.fixture
def proxy(lcp: LcpServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of `lcp`, a fresh one per test."""
    from tests.fault_proxy import FaultProxy

    p = FaultProxy(f"http://127.0.0.1:{lcp.port}")
    yield p
    p.close()


@pytest.fixture(scope="session")
def llama_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> LlamaServer:
    """One llama.cpp llama-server for the session (2 slots), serving the tiny test model;
    tests that use it carry fault_proxy.needs_llama_server."""
    from tests.fault_proxy import LlamaServer, shared, tiny_weights

    weights = tiny_weights(model_cache)
    server: LlamaServer = shared("llama-server", lambda: LlamaServer(
        weights, tmp_path_factory.mktemp("llama-server"), parallel=2))
    return server


def interrupt_after(project: Project, out: Path, *args: str, records: int = 5) -> tuple[int, str]:
    """A real pytest process in `project`, writing to `out`, sent a real SIGINT once its
    records file holds `records` lines (mid-benchmark); its exit status and output."""
    import subprocess
    import sys
    import time

    records_file = out.with_name(out.name.removesuffix(".json") + ".records.jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--vlm-out={out}", *args],
        cwd=project.pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if records_file.exists() and records_file.read_text().count("\n") >= records:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the inner benchmark never wrote {records} records")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reaped, its pipe closed: no warning in a later test
    return proc.returncode, output
