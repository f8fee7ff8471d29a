"""Bad input and first use, the llama.cpp backend's part: catalog settings, weight files
that are not what they claim, a context too small for the prompt, Ctrl-C during a load
or a request, and what the backend log keeps.

The table runs real inner pytest sessions on the tiny generated models (tests/bad_input.py);
the Ctrl-C tests send real SIGINTs to real sessions while llama.cpp is inside a native
call; the rest load the tiny models in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.backends import LoadContext, Progress, Request, native_log
from pytest_vlmbench.models.catalog import LLAMA_CPP_SETTINGS, load_catalog
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.plugin import options
from pytest_vlmbench.results.document import load
from pytest_vlmbench.run.records import read_records
from pytest_vlmbench.tasks import GenerationParams
from tests.bad_input import FAILED, Case, check_case, make_project, run_case
from tests.conftest import TINY_CATALOG


def catalog(settings: str = "", precisions: str = '{ fp32 = "generated:llama-tiny" }',
            vision: bool = False, projector: str = "generated:mlp-tiny") -> str:
    """A one-model catalog: tiny-text (or tiny-vision) with `settings` and `precisions`."""
    lines = ["[[model]]", f'id = "tiny-{"vision" if vision else "text"}"',
             'backend = "llama_cpp"', f'modality = "{"vision" if vision else "text"}"',
             'chat_format = "model"', "default = true", f"precisions = {precisions}"]
    if vision:
        lines.append(f'projector = "{projector}"')
    if settings:
        lines.append(f"settings = {{ {settings} }}")
    return "\n".join(lines) + "\n"


def weights(path: str) -> str:
    return f'{{ fp32 = "path:{path}" }}'


# A GGUF header that ends after its counts: 1 tensor and 5 metadata pairs announced,
# none there (an interrupted download). Only bytes below 0x80, so it can be a text file.
TRUNCATED_HEADER = "GGUF\x03\x00\x00\x00" + "\x01" + "\x00" * 7 + "\x05" + "\x00" * 7

CASES = [
    # -- settings: checked when the catalog is read (exit 4, one line) ---------------
    Case("settings-n-ctx-not-a-number",
         files={"models.toml": catalog('n_ctx = "big"')},
         words=("models.toml: model 'tiny-text': field 'settings.n_ctx' must be a whole "
                "number, got 'big'",)),
    Case("settings-misspelt",
         files={"models.toml": catalog("n_ctxx = 512")},
         words=("model 'tiny-text'", "unknown llama_cpp setting(s) 'n_ctxx'",
                "did you mean 'n_ctx'?", "allowed: flash_attn, n_batch, n_ctx")),
    Case("settings-bool-not-bool",
         files={"models.toml": catalog('flash_attn = "yes"')},
         words=("field 'settings.flash_attn' must be true or false, got 'yes'",)),
    Case("settings-float-count",
         files={"models.toml": catalog("n_threads = 2.5")},
         words=("field 'settings.n_threads' must be a whole number, got 2.5",)),
    Case("settings-n-batch-zero",
         files={"models.toml": catalog("n_batch = 0")},
         words=("field 'settings.n_batch' must be at least 1, got 0",)),
    Case("settings-n-gpu-layers-below-minus-one",
         files={"models.toml": catalog("n_gpu_layers = -2")},
         words=("field 'settings.n_gpu_layers' must be at least -1 (-1 means every layer)",)),
    Case("settings-n-ctx-one",
         files={"models.toml": catalog("n_ctx = 1")},
         words=("field 'settings.n_ctx' must be at least 2", "or 0 (the model's training "
                "context), got 1")),
    Case("settings-n-ctx-beyond-32-bits",
         files={"models.toml": catalog("n_ctx = 4294967296")},
         words=("field 'settings.n_ctx' must be at most 2147483647",)),
    # -- a context too small for the prompt: a request error, checked before any
    # evaluation; every request fails, so the test does (exit 1) -------------------
    Case("n-ctx-too-small-for-the-prompt",
         files={"models.toml": catalog("n_ctx = 16")}, exit=FAILED,
         words=("all 1 requests failed; first: prompt of ",
                " tokens does not fit the context (n_ctx 16 of model 'tiny-text'; raise "
                "settings.n_ctx in models.toml)"),
         absent=("broadcast",)),
    Case("n-ctx-too-small-for-the-image-tokens",
         files={"models.toml": catalog("n_ctx = 24", vision=True)}, exit=FAILED,
         words=(" tokens does not fit the context (n_ctx 24 of model 'tiny-vision'; raise "
                "settings.n_ctx in models.toml)",)),
    # -- weight files: a failed load errors the test (exit 1), one line of ours ---------
    Case("weights-path-is-a-directory",
         files={"models.toml": catalog(precisions=weights("weights/model.gguf")),
                "weights/model.gguf/README": "a folder, not a model\n"},
         exit=FAILED, words=("model 'tiny-text' (fp32): path:weights/model.gguf: ",
                             "weights/model.gguf is a directory, not a GGUF file")),
    Case("weights-file-missing",
         files={"models.toml": catalog(precisions=weights("weights/ghost.gguf"))},
         exit=FAILED, words=("path:weights/ghost.gguf: model file not found at ",)),
    Case("weights-not-gguf",
         files={"models.toml": catalog(precisions=weights("weights/notes.gguf")),
                "weights/notes.gguf": "hello, I am the README, not a model\n"},
         exit=FAILED, words=("model 'tiny-text' (fp32): path:weights/notes.gguf: ",
                             "notes.gguf is not a GGUF file (it begins with b'hell', a "
                             "GGUF file with b'GGUF')")),
    Case("weights-empty-file",
         files={"models.toml": catalog(precisions=weights("weights/empty.gguf")),
                "weights/empty.gguf": ""},
         exit=FAILED, words=("empty.gguf is empty (0 bytes), not a GGUF file",)),
    Case("weights-truncated-header",
         files={"models.toml": catalog(precisions=weights("weights/cut.gguf")),
                "weights/cut.gguf": TRUNCATED_HEADER},
         exit=FAILED,
         words=("model 'tiny-text' (fp32): llama.cpp could not load path:weights/cut.gguf (",
                "cut.gguf): gguf_init_from_reader: failed to read key-value pairs (cut.gguf "
                "is truncated: its 24 bytes end inside the GGUF header)")),
    Case("projector-not-gguf",
         files={"models.toml": catalog(vision=True, projector="path:weights/mmproj.gguf"),
                "weights/mmproj.gguf": "<html>404 Not Found</html>\n"},
         exit=FAILED, words=("model 'tiny-vision' (fp32): path:weights/mmproj.gguf: ",
                             "mmproj.gguf is not a GGUF file (it begins with b'<htm'")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, model_cache: Path) -> None:
    check_case(tmp_path, model_cache, case)


def test_truncated_tensor_data_names_the_tensor_and_the_missing_bytes(
    tmp_path: Path, model_cache: Path
) -> None:
    """A real model cut short inside its tensor data (a download that stopped)."""
    from pytest_vlmbench.models.catalog import WeightSource
    from pytest_vlmbench.models.weights import resolve

    whole = resolve(WeightSource.parse("generated:llama-tiny", "test"),
                    catalog_dir=tmp_path, cache_dir=model_cache)
    cut = tmp_path / "weights" / "cut.gguf"
    cut.parent.mkdir()
    cut.write_bytes(whole.path.read_bytes()[:400_000])
    done = check_case(tmp_path, model_cache, Case(
        "weights-truncated-data", exit=FAILED,
        files={"models.toml": catalog(precisions=weights("weights/cut.gguf"))},
        words=("llama.cpp could not load path:weights/cut.gguf (",
               "cut.gguf): llama_model_load: error loading model: tensor ",
               "data is not within the file bounds, model is corrupted or incomplete (cut.gguf "
               f"is truncated: 400000 bytes, but its header describes {whole.bytes}"),
    ))
    assert "Failed to load model from file" not in done.stdout


# -- the backend log ---------------------------------------------------------------
CANARY_BENCH = """
from pytest_vlmbench.tasks import GenerationParams, Task

CANARY = Task(name="canary", prompt="Describe ZEBRA-CANARY-7731.",
              params=GenerationParams(max_tokens=4))

def test_canary(vlm_bench):
    vlm_bench.run(CANARY, samples=2, warmup=0)

def test_bad_grammar(vlm_bench, tmp_path):
    from dataclasses import replace

    (tmp_path / "bad.gbnf").write_text("root ::= answer")
    vlm_bench.run(replace(CANARY, grammar_file=tmp_path / "bad.gbnf"), samples=1, warmup=0)
"""


def backend_log(root: Path) -> str:
    (log,) = (root / "out").glob("*backend.log")
    return log.read_text()


def test_backend_log_keeps_llama_cpp_diagnostics_but_no_prompt(
    tmp_path: Path, model_cache: Path
) -> None:
    check_case(tmp_path, model_cache, Case(
        "log", exit=FAILED, args=(f"{options.MODELS}=tiny-vision",),
        files={"test_bench.py": CANARY_BENCH}, words=("bad.gbnf: invalid GBNF grammar",),
        absent=("ZEBRA-CANARY",)))
    log = backend_log(tmp_path)
    assert "ZEBRA-CANARY" not in log  # mtmd echoed every prompt (`add_text: ...`)
    assert "llama_model_loader: loaded meta data" in log  # the load's own account
    assert "clip_model_loader: model name" in log  # the projector's
    assert log.count("encoding image slice") == 2  # the canary's two requests
    assert "parse: error parsing grammar" in log  # llama.cpp's reason for the grammar


# -- Ctrl-C ------------------------------------------------------------------------
# An inner conftest that presses Ctrl-C (a real SIGINT to its own process) from inside
# llama.cpp's log callback, at the AT-th line containing TRIGGER: the signal arrives
# while a native call runs, which is where a KeyboardInterrupt used to be lost.
SIGINT_AT_LINE = """
import os, signal
from pytest_vlmbench.backends.llama_cpp import callbacks as backend

_route, _seen = backend.route_line, [0]

def route_line(level, text):
    _route(level, text)
    if text and {trigger!r} in text.decode("utf-8", "replace"):
        _seen[0] += 1
        if _seen[0] == {at}:
            os.kill(os.getpid(), signal.SIGINT)

backend.route_line = route_line
"""

INTERRUPTED = int(pytest.ExitCode.INTERRUPTED)


def interrupted_run(root: Path, model_cache: Path, trigger: str, at: int, *args: str,
                    files: dict[str, str] | None = None) -> str:
    case = Case("ctrl-c", args=args, exit=INTERRUPTED, files={
        "conftest.py": SIGINT_AT_LINE.format(trigger=trigger, at=at), **(files or {})})
    make_project(root, model_cache, case)
    done = run_case(root, case)
    output = done.stdout + done.stderr
    assert done.returncode == INTERRUPTED, output[-4000:]
    assert "Exception ignored" not in output, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    return output


@pytest.mark.parametrize(
    ("trigger", "models", "later"),
    [
        # inside llama_model_load_from_file: the progress callback aborts the load
        ("llama_model_loader: loaded meta data", "tiny-text", "llama_context: constructing"),
        # creating the context (no progress callback): raised when it returns
        ("llama_context: constructing", "tiny-text", None),
        # the projector's load, inside mtmd_init_from_file
        ("clip_model_loader: model name", "tiny-vision", None),
    ],
    ids=["model-load", "context", "projector-load"],
)
def test_ctrl_c_during_a_load_stops_the_run(
    tmp_path: Path, model_cache: Path, trigger: str, models: str, later: str | None
) -> None:
    interrupted_run(tmp_path, model_cache, trigger, 1, f"{options.MODELS}={models}")
    doc = load(tmp_path / "out" / "results.json")
    assert doc["status"] == "interrupted"
    assert doc["benchmarks"] == []
    (entry,) = doc["loads"]
    assert entry["count"] == 0  # never loaded
    log = backend_log(tmp_path)
    assert trigger in log
    if later is not None:  # aborted there, not finished and then interrupted
        assert later not in log


def test_ctrl_c_during_a_request_keeps_the_finished_benchmark(
    tmp_path: Path, model_cache: Path
) -> None:
    """Ctrl-C inside a vision request (mtmd logs while it encodes the image) of the second
    benchmark: the first one's entry and records stay, the second is `interrupted`."""
    bench = """
from tiny_tasks import CAPTION

def test_one(vlm_bench):
    vlm_bench.run(CAPTION, samples=1, warmup=0)

def test_two(vlm_bench):
    vlm_bench.run(CAPTION, samples=100000, warmup=0)
"""
    # The 1st "encoding image slice" is test_one's request, the 3rd test_two's second.
    interrupted_run(tmp_path, model_cache, "encoding image slice", 3,
                    f"{options.MODELS}=tiny-vision", files={"test_bench.py": bench})
    out = tmp_path / "out" / "results.json"
    doc = load(out)
    assert doc["status"] == "interrupted"
    first, second = doc["benchmarks"]
    assert (first["status"], second["status"]) == ("complete", "interrupted")
    records = read_records(out.with_name("results.records.jsonl"))
    mine = [r for r in records if r["benchmark"] == first["id"]]
    assert len(mine) == 1
    assert mine[0]["error"] is None
    assert mine[0]["output"] is not None
    theirs = [r for r in records if r["benchmark"] == second["id"]]
    assert len(theirs) == second["summary"]["requests"] == 1  # the interrupted one: none


def test_ctrl_c_from_outside_while_weights_are_derived(tmp_path: Path,
                                                       model_cache: Path) -> None:
    """A real Ctrl-C from another process during a load that generates, hashes and
    requantises its weights (a fresh cache, so all of it runs): the run stops there."""
    case = Case("ctrl-c-derive", files={"models.toml": catalog(
        precisions='{ q8_0 = "quantized:q8_0:generated:llama-tiny@11" }')})
    make_project(tmp_path, model_cache, case)
    cache = tmp_path / "fresh-cache"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
               "--vlm-out=out/results.json", f"{options.CACHE_DIR}={cache}"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        deadline = time.monotonic() + 120
        while not any("== load" in p.read_text() for p in (tmp_path / "out").glob("*.log")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the inner session never began a load:\n{proc.communicate()[0]}")
            time.sleep(0.005)
        # One Ctrl-C must do (a second one would land in the session's own teardown,
        # which writes the results document: that is not what is tested here).
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the inner session did not stop on Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == INTERRUPTED, output[-4000:]
    assert "Exception ignored" not in output, output[-4000:]
    doc = load(tmp_path / "out" / "results.json")
    assert doc["status"] == "interrupted"
    assert doc["benchmarks"] == []
    assert doc["loads"][0]["count"] == 0
    leftovers = [p for p in cache.rglob("*") if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no partial generated or derived file


def _press_ctrl_c_inside(fail: bool) -> list[bool]:
    seen = []
    with native_log.sigint_deferred():
        signal.raise_signal(signal.SIGINT)
        seen.append(native_log.interrupt_pending())  # recorded, not raised, in the block
        if fail:
            raise ValueError("an aborted load fails; Ctrl-C is what the user gets")
    return seen


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "failing"])
def test_sigint_deferred_raises_when_the_block_ends(fail: bool) -> None:
    with pytest.raises(KeyboardInterrupt) as info:
        _press_ctrl_c_inside(fail)
    assert info.traceback[-1].name == "sigint_deferred"  # at the end, not inside
    assert not native_log.interrupt_pending()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- the backend in this process: context bounds and the live token count ---------
def tiny_model(tmp_path: Path, model_cache: Path, settings: str = "") -> Any:
    from pytest_vlmbench.backends.llama_cpp import LlamaCppBackend

    path = tmp_path / "models.toml"
    path.write_text(TINY_CATALOG.replace(
        'precisions = { fp32 = "generated:llama-tiny" }\n',
        f'precisions = {{ fp32 = "generated:llama-tiny" }}\nsettings = {{ {settings} }}\n',
        1) if settings else TINY_CATALOG)
    spec = load_catalog(path).get("tiny-text")
    ctx = LoadContext(device=PROFILES["cpu"], cache_dir=model_cache, threads=1)
    return LlamaCppBackend().load(spec, "fp32", ctx)


def ask(user: str, max_tokens: int, progress: Progress | None = None) -> Request:
    return Request(system="", user=user, images=(), seed=0, progress=progress,
                   params=GenerationParams(max_tokens=max_tokens))


def test_live_token_count_follows_the_sampled_tokens(tmp_path: Path, model_cache: Path) -> None:
    model: Any = tiny_model(tmp_path, model_cache)
    try:
        progress = Progress()
        response = model.generate(ask("Describe.", 12, progress))
        assert progress.tokens == response.counts["decode_tokens"] + 1 > 1
        assert response.completion_tokens in (progress.tokens, progress.tokens - 1)
        # Every setting the catalog accepts reaches llama.cpp and is recorded.
        assert set(LLAMA_CPP_SETTINGS) <= set(model.settings)
    finally:
        model.close()


def test_generation_stops_at_the_end_of_the_context(tmp_path: Path, model_cache: Path) -> None:
    """n_ctx 40 leaves a few tokens after the prompt; max_tokens 200 cannot be met, and
    the record says why (llama.cpp pads the context to 256 and would have gone on)."""
    model: Any = tiny_model(tmp_path, model_cache, "n_ctx = 40")
    try:
        response = model.generate(ask("Hi", 200))
        sampled = int(model._llm.sampled_tokens())
        # Seeded random weights, greedy: this model never samples its end token here.
        assert response.counts["context_full"] == 1
        assert response.finish_reason == "length"
        assert response.prompt_tokens + sampled == 40
        assert response.completion_tokens == sampled
        again = model.generate(ask("Hi", 3))  # max_tokens first: no context_full
        assert again.finish_reason == "length"
        assert "context_full" not in again.counts
    finally:
        model.close()


@pytest.mark.parametrize("n_ctx", [16, 256], ids=["below-llama-cpp-padding", "at-it"])
def test_a_prompt_that_does_not_fit_is_one_clear_request_error(
    tmp_path: Path, model_cache: Path, n_ctx: int
) -> None:
    """16: llama.cpp allocates 256 anyway (it pads), the check is ours; 256: the prompt is
    past llama.cpp's own context too, llama-cpp-python refuses it first, in other words."""
    from pytest_vlmbench.backends.llama_cpp import PromptTooLong

    model: Any = tiny_model(tmp_path, model_cache, f"n_ctx = {n_ctx}")
    try:
        with pytest.raises(PromptTooLong, match=(
            rf"^prompt of \d+ tokens does not fit the context \(n_ctx {n_ctx} of model "
            r"'tiny-text'; raise settings.n_ctx in models.toml\)$")):
            model.generate(ask("Describe this at length. " * 20, 8))
        if n_ctx > 27:  # the chat template makes "Hi" 27 tokens
            assert model.generate(ask("Hi", 4)).completion_tokens  # still serves what fits
    finally:
        model.close()
