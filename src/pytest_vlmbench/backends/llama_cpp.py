"""llama.cpp in-process, through llama-cpp-python.

Choices that decide what the numbers mean (measured on 2 cores, see DESIGN.md):
- llama-cpp-python defaults to half the cores and flash attention off; that alone
  halved gemma3-270m decode (27 vs 45-50 tokens/s). We set threads to every core this
  process may use and flash attention on, and record both.
- Requests stream: time to first token is the first chunk with content.
- Streaming chunks carry no token usage, so `_CountingLlama.generate` counts the tokens
  llama.cpp actually sampled (exact, and it costs one list append per token).
- Stages are disjoint and timed on our clock: `_CountingLlama` synchronises the
  context after every evaluation (llama.cpp accounts work only when it synchronises,
  and a GPU decode returns before it is done), so template (rendering, tokenising,
  image preprocessing), image_encode, prefill, decode, sample (the sampler chain,
  grammar-constrained sampling included) and detokenize never hold each other's time.
  On the vision path `mtmd_helper_eval_chunk_single` encodes the image and decodes its
  embeddings; llama.cpp's prompt-eval counter, read between two synchronisations,
  gives the decode part (prefill) and the rest of the chunk is the image encode.
- Each request pays its full prompt (no prefix reuse across requests) unless the
  model's settings say `prompt_cache = true`, so per-request prefill is comparable.
- The context is the catalog's `n_ctx`, enforced here: llama.cpp pads a context to a
  multiple of 256 while llama-cpp-python sizes its token buffer by the requested one, so
  `n_ctx = 16` failed every request with a numpy broadcast error. A prompt that does not
  fit is a request error naming its size, before anything is evaluated; a generation
  that reaches the end of the context stops there with finish_reason "length" (and
  `counts.context_full`).
- llama.cpp's, ggml's and mtmd's log lines go through `native_log.route_line` (the
  backend log, DEBUG lines and so prompts left out; ERROR lines quoted in load errors),
  and native calls run under `native_log.sigint_deferred`, with llama.cpp's and mtmd's
  load progress callbacks aborting a load on Ctrl-C (see native_log.py).
"""

from __future__ import annotations

import ctypes
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_vlmbench.backends import BackendError, LoadContext, Progress, Request, Response
from pytest_vlmbench.backends.native_log import (
    error_mark,
    errors_since,
    interrupt_pending,
    keep_alive,
    native_stderr_to,
    raise_if_interrupted,
    route_line,
    sigint_deferred,
)
from pytest_vlmbench.models import gguf_synth
from pytest_vlmbench.models.catalog import CatalogError, ModelSpec, check_llama_cpp_settings
from pytest_vlmbench.models.devices import DeviceProfile
from pytest_vlmbench.models.weights import (
    Artifact,
    WeightsError,
    gguf_header_problem,
    gguf_magic_problem,
    resolve,
)
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ConstraintError

import llama_cpp  # isort: skip  # the backend module is imported only when used
from llama_cpp.llama_chat_format import MTMDChatHandler  # isort: skip
from llama_cpp.llama_grammar import LlamaGrammar  # isort: skip


class PromptTooLong(BackendError):
    """A request whose prompt does not fit the model's context (n_ctx)."""


def _log_line(level: int, text: bytes | None, user_data: Any) -> None:
    """llama.cpp's (and ggml's, mtmd's) log callback: see native_log.route_line."""
    route_line(level, text)


def _continue_load(progress: float, user_data: Any) -> bool:
    """A load's progress callback: False (Ctrl-C pressed) makes llama.cpp abort the load."""
    return not interrupt_pending()


_LOG_CALLBACK = llama_cpp.llama_log_callback(_log_line)
_LOAD_PROGRESS = llama_cpp.llama_progress_callback(_continue_load)
keep_alive(_LOG_CALLBACK, _LOAD_PROGRESS)  # llama.cpp keeps the pointers
llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
_MTMD_PROGRESS: list[Any] = []  # set up with the first vision model (see _mtmd_hooks)


def _mtmd_hooks(mtmd: Any) -> Any:
    """Route mtmd's own log hooks (it has its own, and its helpers too) like llama.cpp's,
    once; return the progress callback for projector loads."""
    if not _MTMD_PROGRESS:
        mtmd.mtmd_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        progress = mtmd.mtmd_progress_callback(_continue_load)
        keep_alive(progress)
        _MTMD_PROGRESS.append(progress)
    return _MTMD_PROGRESS[0]


# llama-cpp-python's own context checks, in 0.3.36's words (a fallback: ours come first).
_REQUESTED_TOKENS = re.compile(r"Requested tokens \((\d+)\) exceed context window")


@dataclass
class _Stages:
    """One request's disjoint stage times (ns), timed on our clock with the context
    synchronised at every boundary (see the module docstring)."""

    first_eval_ns: int | None = None  # when the first evaluation of the prompt began
    prefill_ns: int = 0
    prefill_tokens: int = 0
    image_encode_ns: int = 0
    image_tokens: int = 0
    decode_ns: int = 0
    decode_evals: int = 0
    sample_ns: int = 0
    detokenize_ns: int = 0
    sampled: int = 0  # tokens sampled so far (the first one ends the prefill)
    before_eval_ns: int = 0  # sample/detokenize time spent before the first evaluation

    def mark_eval_start(self, t_ns: int) -> None:
        if self.first_eval_ns is None:
            self.first_eval_ns = t_ns

    def add_sample(self, dt: int) -> None:
        self.sample_ns += dt
        if self.first_eval_ns is None:
            self.before_eval_ns += dt

    def add_detokenize(self, dt: int) -> None:
        self.detokenize_ns += dt
        if self.first_eval_ns is None:
            self.before_eval_ns += dt


class _CountingLlama(llama_cpp.Llama):
    """Llama that times and counts what one request does, stage by stage.

    llama.cpp accounts an evaluation only when the context synchronises, and on a GPU
    `llama_decode` returns before the work is done; so every evaluation here is followed
    by `llama_synchronize`, and the time of each stage is read on our own clock between
    two synchronised points: it cannot leak into the next stage.
    """

    last_prompt_tokens: int = 0
    last_sampled: list[int]
    stages: _Stages | None = None  # set for the duration of one measured request
    progress: Progress | None = None  # the request's live token count, if it has one
    context_full = False  # the last generation stopped at the end of the context
    context_owner = "this model"  # for the message of a prompt that does not fit
    context_hint = "raise settings.n_ctx"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The context requests may use: llama-cpp-python's token buffer is sized by the
        # n_ctx asked for, llama.cpp's context by that padded to a multiple of 256.
        self.context_limit = min(len(self.input_ids), int(llama_cpp.llama_n_ctx(self.ctx)))

    # llama-cpp-python builds its model parameters inside __init__ and gives no way to
    # pass a progress callback; this property hands it ours as they are assigned.
    @property
    def model_params(self) -> Any:
        return self._vlm_model_params

    @model_params.setter
    def model_params(self, params: Any) -> None:
        params.progress_callback = _LOAD_PROGRESS
        self._vlm_model_params = params

    def check_prompt(self, n_tokens: int) -> None:
        """Refuse a prompt that leaves no room in the context, before it is evaluated."""
        if n_tokens >= self.context_limit:
            raise PromptTooLong(
                f"prompt of {n_tokens} tokens does not fit the context (n_ctx "
                f"{self.context_limit} of {self.context_owner}; {self.context_hint})"
            )

    def generate(  # type: ignore[override]  # same call, counted and bounded
        self, tokens: Any, *args: Any, **kwargs: Any
    ) -> Iterator[int]:
        n_prompt = len(tokens)
        self.check_prompt(n_prompt)
        self.last_prompt_tokens = n_prompt
        self.last_sampled = sampled = []
        self.context_full = False
        room = self.context_limit - n_prompt  # as llama-cpp-python bounds max_tokens
        progress = self.progress
        for token in super().generate(tokens, *args, **kwargs):
            sampled.append(token)
            if progress is not None:
                progress.tokens = len(sampled)
            raise_if_interrupted()  # Ctrl-C during the request (see sigint_deferred)
            yield token
            if len(sampled) >= room:  # the next token would not fit: stop, "length"
                self.context_full = True
                return

    def eval(self, tokens: Sequence[int]) -> None:
        st = self.stages
        if st is None:
            super().eval(tokens)
            return
        t0 = time.perf_counter_ns()
        st.mark_eval_start(t0)
        super().eval(tokens)
        llama_cpp.llama_synchronize(self.ctx)
        dt = time.perf_counter_ns() - t0
        if st.sampled == 0:  # still the prompt (llama-cpp-python re-evaluates its last token)
            st.prefill_ns += dt
            st.prefill_tokens += len(tokens)
        else:
            st.decode_ns += dt
            st.decode_evals += 1

    def _init_sampler(self, *args: Any, **kwargs: Any) -> Any:
        # Building the sampler chain parses a grammar: sampling work, inside the request.
        st = self.stages
        t0 = time.perf_counter_ns()
        sampler = super()._init_sampler(*args, **kwargs)
        if st is not None:
            st.add_sample(time.perf_counter_ns() - t0)
        return sampler

    def sample(self, *args: Any, **kwargs: Any) -> int:
        st = self.stages
        t0 = time.perf_counter_ns()
        token: int = super().sample(*args, **kwargs)
        if st is not None:
            st.add_sample(time.perf_counter_ns() - t0)
            st.sampled += 1
        return token

    def detokenize(self, *args: Any, **kwargs: Any) -> bytes:
        st = self.stages
        t0 = time.perf_counter_ns()
        text: bytes = super().detokenize(*args, **kwargs)
        if st is not None:
            st.add_detokenize(time.perf_counter_ns() - t0)
        return text

    def sampled_tokens(self) -> int:
        return len(getattr(self, "last_sampled", []))

    def completion_tokens(self) -> int:
        sampled = getattr(self, "last_sampled", [])
        if sampled and llama_cpp.llama_vocab_is_eog(self._model.vocab, sampled[-1]):
            return len(sampled) - 1
        return len(sampled)


class _TimedMtmd:
    """Stands in for `llama_cpp.mtmd_cpp` inside the handler to time the image path.

    `mtmd_helper_eval_chunk_single` encodes the image with the projector, then decodes
    the image embeddings into the language model's context. The context is
    synchronised after it, so llama.cpp's prompt-eval counter has accounted that
    decode; its delta is the image tokens' prefill and the rest of the chunk's wall time
    is the image encode. (Without the synchronisation the decode was accounted only at
    the first sample, and both stages held the other's time.)

    It also gives the projector's load our progress callback (Ctrl-C aborts it) and
    checks that a tokenised prompt, image tokens included, fits the context before any
    of it is evaluated.
    """

    def __init__(self, module: Any) -> None:
        self._module = module
        self.stages: _Stages | None = None
        self.check_prompt: Callable[[int], None] | None = None
        self._progress = _mtmd_hooks(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def mtmd_context_params_default(self) -> Any:
        params = self._module.mtmd_context_params_default()
        params.progress_callback = self._progress
        return params

    def mtmd_tokenize(self, mctx: Any, chunks: Any, *rest: Any) -> Any:
        result = self._module.mtmd_tokenize(mctx, chunks, *rest)
        if result == 0 and self.check_prompt is not None:
            self.check_prompt(int(self._module.mtmd_helper_get_n_tokens(chunks)))
        return result

    def mtmd_helper_eval_chunk_single(self, mctx: Any, lctx: Any, chunk: Any, *rest: Any) -> Any:
        st = self.stages
        if st is None:
            return self._module.mtmd_helper_eval_chunk_single(mctx, lctx, chunk, *rest)
        llama_cpp.llama_synchronize(lctx)
        before = llama_cpp.llama_perf_context(lctx).t_p_eval_ms
        t0 = time.perf_counter_ns()
        st.mark_eval_start(t0)
        result = self._module.mtmd_helper_eval_chunk_single(mctx, lctx, chunk, *rest)
        llama_cpp.llama_synchronize(lctx)
        wall = time.perf_counter_ns() - t0
        decode_ns = min(wall, max(0, round(
            (llama_cpp.llama_perf_context(lctx).t_p_eval_ms - before) * 1e6)))
        n_tokens = int(self._module.mtmd_input_chunk_get_n_tokens(chunk))
        st.image_encode_ns += wall - decode_ns
        st.image_tokens += n_tokens
        st.prefill_ns += decode_ns
        st.prefill_tokens += n_tokens
        return result


class _VisionHandler(MTMDChatHandler):
    """MTMDChatHandler with an explicit template (base models ship none) and stage timing."""

    def __init__(self, clip_model_path: str, template: str | None, use_gpu: bool) -> None:
        super().__init__(clip_model_path=clip_model_path, verbose=False, use_gpu=use_gpu)
        self._template = template
        self.timed = _TimedMtmd(self._mtmd_cpp)
        self._mtmd_cpp = self.timed  # type: ignore[assignment]  # a timing proxy

    def _get_chat_template(self, llama_model: Any) -> str:
        if self._template is not None:
            return self._template
        template: str = super()._get_chat_template(llama_model)
        return template


def _compile(template: str) -> Any:
    """Compile a chat template once per model: compiling costs ~12 ms, rendering ~0.07 ms,
    and a per-request compile would sit inside the measured latency and TTFT."""
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template)


class LlamaCppModel:
    """A loaded GGUF model (and projector) serving requests in this process."""

    def __init__(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> None:
        self.spec = spec
        self.precision = precision
        self._log_path = ctx.log_path
        t0 = time.perf_counter_ns()
        try:
            self._weights = resolve(
                spec.precisions[precision], catalog_dir=spec.catalog_path.parent,
                cache_dir=ctx.cache_dir,
            )
            self._projector: Artifact | None = None
            if spec.modality == "vision" and spec.projector is not None:
                self._projector = resolve(
                    spec.projector, catalog_dir=spec.catalog_path.parent, cache_dir=ctx.cache_dir
                )
        except (WeightsError, OSError, ValueError) as exc:
            raise BackendError(f"model {spec.id!r} ({precision}): {exc}") from None
        self.artifacts = [a.to_json() for a in (self._weights, self._projector) if a]
        resolve_ns = time.perf_counter_ns() - t0

        settings: dict[str, Any] = {
            "n_ctx": 2048,
            "n_batch": 512,
            "n_ubatch": 512,
            "n_threads": None,
            "n_threads_batch": None,
            "flash_attn": True,
            "n_gpu_layers": 0 if ctx.device.accelerator == "cpu" else -1,
            "use_mmap": True,
            "prompt_cache": False,
        }
        for source, where in ((spec.settings, f"{spec.catalog_path}: model {spec.id!r}"),
                              (ctx.overrides, f"model {spec.id!r} (setting overrides)")):
            try:  # the catalog checked its own already; a ModelSpec may come from code
                check_llama_cpp_settings(dict(source), where)
            except CatalogError as exc:
                raise BackendError(str(exc)) from None
            settings.update(source)
        if ctx.threads is not None:  # the command line wins over the catalog
            settings["n_threads"] = settings["n_threads_batch"] = ctx.threads
        if settings["n_threads"] is None:
            from pytest_vlmbench.models.devices import cpu_threads

            settings["n_threads"] = settings["n_threads_batch"] = cpu_threads()
        self._prompt_cache = bool(settings.pop("prompt_cache"))
        for artifact in (self._weights, self._projector):
            self._check_gguf(artifact)

        template: str | None = None
        if spec.chat_format == "gemma":
            template = gguf_synth.GEMMA_CHAT_TEMPLATE
        self._template = template
        self._compiled = _compile(template) if template is not None else None
        self._handler: _VisionHandler | None = None
        t1 = time.perf_counter_ns()
        mark = error_mark()
        llm: _CountingLlama | None = None
        try:
            with sigint_deferred():  # Ctrl-C aborts the load (progress callbacks), then raises
                try:
                    if self._projector is not None:
                        self._handler = _VisionHandler(
                            str(self._projector.path), template,
                            use_gpu=settings["n_gpu_layers"] != 0,
                        )
                    llm = _CountingLlama(
                        model_path=str(self._weights.path),
                        seed=ctx.seed,
                        verbose=False,
                        chat_handler=self._handler,
                        **settings,
                    )
                    if self._handler is not None:
                        # Otherwise the projector loads inside the first request.
                        self._handler._init_mtmd_context(llm)
                except Exception as exc:  # ValueError, RuntimeError, TypeError...
                    raise_if_interrupted()  # an aborted load: the Ctrl-C, not its failure
                    raise BackendError(self._load_failure(exc, mark)) from None
        except BaseException:  # Ctrl-C or a failure: free what was loaded already
            if llm is not None:
                llm.close()
            raise
        self._llm = llm
        llm.context_owner = f"model {spec.id!r}"
        llm.context_hint = f"raise settings.n_ctx in {spec.catalog_path.name}"
        if self._handler is not None:
            self._handler.timed.check_prompt = llm.check_prompt
        load_ns = time.perf_counter_ns() - t1
        self.timings_ns = {"resolve": resolve_ns, "load": load_ns}
        # For the roofline: llama.cpp's own count of the text model's weight bytes. A
        # decode step reads all of them when the output layer is tied to the token
        # embeddings (Gemma), one embedding row otherwise (then the bound is conservative).
        self.decode_bytes_per_token: int | None = int(llama_cpp.llama_model_size(self._llm.model))
        self.decode_bytes_source = (
            "llama_model_size: every weight tensor of the text model (exact for tied "
            "embeddings; counts the whole token embedding otherwise); KV cache not counted"
        )
        # Said in every benchmark of this model: a GPU device's label and roofline on a
        # run the settings keep on the CPU would mislead (use --device=cpu for that).
        self.warnings: list[str] = []
        if ctx.device.accelerator != "cpu" and settings["n_gpu_layers"] == 0:
            self.warnings.append(
                f"n_gpu_layers = 0 keeps {spec.id} on the CPU although device "
                f"{ctx.device.name} has a GPU: its figures are CPU figures under a GPU label "
                "(run with --device=cpu to label them so)"
            )
        self.settings = {
            **settings,
            "prompt_cache": self._prompt_cache,
            "chat_format": spec.chat_format,
            "llama_cpp_python": llama_cpp.__version__,
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "gpu_offload_supported": bool(llama_cpp.llama_supports_gpu_offload()),
        }

    def _check_gguf(self, artifact: Artifact | None) -> None:
        """Refuse a file that is not a GGUF before llama.cpp sees it: its answer reached
        users as "Failed to load model from file" and nothing else."""
        if artifact is None:
            return
        try:
            problem = gguf_magic_problem(artifact.path)
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror})"
        if problem is not None:
            raise BackendError(f"model {self.spec.id!r} ({self.precision}): {artifact.source}: "
                               f"{artifact.path} {problem}")

    def _load_failure(self, exc: Exception, mark: int) -> str:
        """One line: the files, llama.cpp's own first reason (it logs why, then the
        binding raises "Failed to load model from file"), and what is wrong with the
        file if its header can tell."""
        weights = self._weights
        files = f"{weights.source} ({weights.path})"
        if self._projector is not None:
            files += f" with projector {self._projector.source} ({self._projector.path})"
        said = errors_since(mark)
        reason = said[0] if said else str(exc)
        for artifact in (self._weights, self._projector):
            problem = gguf_header_problem(artifact.path) if artifact is not None else None
            if artifact is not None and problem is not None:
                reason += f" ({artifact.path.name} {problem})"
                break
        return (f"model {self.spec.id!r} ({self.precision}): llama.cpp could not load "
                f"{files}: {reason}")

    # -- per task -----------------------------------------------------------------
    def _check_grammar(self, grammar: LlamaGrammar, source: str) -> LlamaGrammar:
        """Parse the grammar with llama.cpp now, once.

        llama-cpp-python 0.3.36's LlamaGrammar.from_string only stores the text; the
        parse happens when a request builds its sampler, and a grammar llama.cpp rejects
        then crashes the process (seen: `root ::= answer` segfaulted). So we build the
        grammar sampler here, where a NULL is a clear error, and free it again.
        """
        mark = error_mark()
        with (native_stderr_to(self._log_path, f"grammar check {source}") as capture,
              sigint_deferred()):
            sampler = llama_cpp.llama_sampler_init_grammar(
                self._llm._model.vocab, grammar._grammar.encode("utf-8"),
                grammar._root.encode("utf-8"),
            )
        if not sampler:
            # llama.cpp prints the parse error itself (fd 2, so the log) and logs the
            # rest; with --vlm-backend-logs only the logged part can be quoted.
            said = (capture.text(max_lines=4).replace("\n", "; ")
                    or "; ".join(errors_since(mark)[:4]))
            raise ConstraintError(
                f"{source}: invalid GBNF grammar" + (f" (llama.cpp: {said})" if said else "")
            )
        llama_cpp.llama_sampler_free(sampler)
        return grammar

    def prepare(self, task: Task) -> Any:
        """Compile and check the task's grammar or schema once; a bad one fails the test."""
        grammar_text = task.grammar_text()
        if grammar_text is not None:
            return self._check_grammar(
                LlamaGrammar.from_string(grammar_text, verbose=False), str(task.grammar_file)
            )
        if task.schema is not None:
            import json

            try:
                grammar = LlamaGrammar.from_json_schema(json.dumps(task.schema), verbose=False)
            except Exception as exc:  # the converter raises Assertion/Type/Key/ValueError
                raise ConstraintError(
                    f"task {task.name!r}: llama.cpp cannot turn its JSON schema into a "
                    f"grammar ({exc})"
                ) from None
            return self._check_grammar(grammar, f"task {task.name!r} (from its JSON schema)")
        return None

    # -- per request --------------------------------------------------------------
    def generate(self, request: Request) -> Response:
        llm: Any = self._llm  # llama-cpp-python's stream types are unions of dict shapes
        if request.images and self._handler is None:
            raise BackendError(f"model {self.spec.id!r} is a text model; it cannot take images")
        p = request.params
        common: dict[str, Any] = {
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_k": p.top_k,
            "top_p": p.top_p,
            "min_p": p.min_p,
            "repeat_penalty": p.repeat_penalty,
            "stop": list(p.stop),
            "seed": request.seed,
            "grammar": request.constraint,
            "stream": True,
        }
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        if not self._prompt_cache:
            llm.reset()
        st = _Stages()
        llm.stages = st
        llm.progress = request.progress
        llm.context_full = False
        if self._handler is not None:
            self._handler.timed.stages = st
        llama_cpp.llama_perf_context_reset(llm.ctx)
        try:
            # Ctrl-C: raised between tokens, or when llama.cpp returns (native_log.py).
            with sigint_deferred():
                t_start, t_first, t_end, finish, parts = self._stream(
                    llm, request, messages, common)
        except ValueError as exc:  # llama-cpp-python's own check, for a prompt past its
            found = _REQUESTED_TOKENS.match(str(exc))  # (padded) context: say it as ours
            if found is None:
                raise
            try:
                llm.check_prompt(int(found.group(1)))
            except PromptTooLong as ours:
                raise ours from None
            raise
        finally:
            llm.stages = None
            llm.progress = None
            if self._handler is not None:
                self._handler.timed.stages = None

        # Disjoint stages: each is timed between synchronised points, and none of them
        # holds another. What is left of the latency (Python streaming, stop checks) is
        # not a stage; summary.py reports it as unattributed.
        before = (st.first_eval_ns if st.first_eval_ns is not None else t_end) - t_start
        stages = {
            "template": max(0, before - st.before_eval_ns),
            "prefill": st.prefill_ns,
            "decode": st.decode_ns,
            "sample": st.sample_ns,
            "detokenize": st.detokenize_ns,
        }
        # decode_tokens: tokens sampled after the first one (an end-of-generation token
        # included): each cost a decode step inside the window from first token to end.
        counts = {
            "prefill_tokens": st.prefill_tokens,
            "decode_evals": st.decode_evals,
            "decode_tokens": max(0, llm.sampled_tokens() - 1),
        }
        if llm.context_full:  # finish_reason "length" came from n_ctx, not max_tokens
            counts["context_full"] = 1
        if self._handler is not None and request.images:
            stages["image_encode"] = st.image_encode_ns
            counts["image_tokens"] = st.image_tokens
        response = Response(
            text="".join(parts),
            finish_reason=finish,
            prompt_tokens=llm.last_prompt_tokens,
            completion_tokens=llm.completion_tokens(),
            t_start_ns=t_start,
            t_first_token_ns=t_first,
            t_end_ns=t_end,
            stages_ns=stages,
            counts=counts,
        )
        return response

    def _stream(
        self, llm: Any, request: Request, messages: list[dict[str, Any]],
        common: dict[str, Any],
    ) -> tuple[int, int | None, int, str | None, list[str]]:
        """Send the request and drain the stream: (start, first content, end, finish, text)."""
        stream: Any
        t_start = time.perf_counter_ns()
        if request.images:
            content: list[dict[str, Any]] = [
                {"type": "image_url", "image_url": {"url": img.data_url()}}
                for img in request.images
            ]
            content.append({"type": "text", "text": request.user})
            messages.append({"role": "user", "content": content})
            stream = llm.create_chat_completion(messages=messages, **common)
        elif self.spec.chat_format == "completion":
            prompt = f"{request.system}\n\n{request.user}" if request.system else request.user
            stream = llm.create_completion(prompt=prompt, **common)
        else:
            messages.append({"role": "user", "content": request.user})
            if self._compiled is not None:
                prompt = self._compiled.render(messages=messages, add_generation_prompt=True)
                stream = llm.create_completion(prompt=prompt, **common)
            else:
                stream = llm.create_chat_completion(messages=messages, **common)
        t_first: int | None = None
        finish: str | None = None
        parts: list[str] = []
        for chunk in stream:
            choice = chunk["choices"][0]
            piece = choice.get("text")
            if piece is None:
                piece = (choice.get("delta") or {}).get("content")
            if piece:
                if t_first is None:
                    t_first = time.perf_counter_ns()
                parts.append(piece)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        return t_start, t_first, time.perf_counter_ns(), finish, parts

    def close(self) -> None:
        self._llm.close()


class LlamaCppBackend:
    name = "llama_cpp"

    # ggml backends that put work on a GPU, as their shared libraries are named.
    _GPU_KINDS = ("cuda", "hip", "musa", "vulkan", "sycl", "metal", "opencl")

    def check_device(self, device: DeviceProfile) -> str | None:
        """Whether this llama-cpp-python can offload to the device's GPU.

        A CPU-only build (the default of `pip install llama-cpp-python`) loads with
        n_gpu_layers=-1 without complaint and runs every layer on the CPU; the only
        trace was `gpu_offload_supported=false` in the settings.
        """
        if device.accelerator == "cpu" or llama_cpp.llama_supports_gpu_offload():
            return None
        version = llama_cpp.__version__
        shipped = self._gpu_libraries()
        if shipped:
            return (
                f"llama-cpp-python {version} is a GPU build ({', '.join(shipped)}) but "
                "llama_supports_gpu_offload() is false: it found no usable GPU for device "
                f"{device.name} (check the NVIDIA driver and that CUDA_VISIBLE_DEVICES "
                "does not hide the GPU)"
            )
        return (
            f"llama-cpp-python {version} was built without GPU offload "
            f"(llama_supports_gpu_offload() is false) but device {device.name} has a "
            f"{device.accelerator} GPU; rebuild it with CUDA: CMAKE_ARGS=-DGGML_CUDA=on pip "
            "install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python "
            f"llama-cpp-python=={version} (tools/install.sh does this where nvcc and an NVIDIA "
            "driver are present)"
        )

    @classmethod
    def _gpu_libraries(cls) -> list[str]:
        """The GPU backend libraries shipped in llama_cpp/lib (libggml-cuda.so, ...)."""
        lib = Path(llama_cpp.__file__).parent / "lib"
        return sorted(
            path.name for path in lib.glob("*ggml-*")
            if any(f"ggml-{kind}." in path.name for kind in cls._GPU_KINDS)
            and path.suffix in (".so", ".dll", ".dylib")
        )

    def load(self, spec: ModelSpec, precision: str, ctx: LoadContext) -> LlamaCppModel:
        if precision not in spec.precisions:
            raise BackendError(f"model {spec.id!r} has no {precision!r} variant")
        return LlamaCppModel(spec, precision, ctx)

