"""The requests of a benchmark: which samples, and each one's record, made blank, its
input prepared, its response and check filled in.

The runner (sequential requests) and the load driver (concurrent ones) both build their
records here, so a record means the same whichever way it was sent. The image is
prepared before the request and timed apart (`prepare_ns`, outside the latency); a
failure at any step is the record's error, never a missing record.

A server can ignore the constraint it was sent (status 200 and unconstrained text: a
dialect the server does not know, or a field it drops silently, like vLLM's old
`guided_json`). A sampler that obeys a constraint cannot end the output on its own
(finish_reason "stop", not "length") with text the constraint forbids, so such an output
is `constraint_ignored`, not the model's parse failure: `ConstraintCheck` says so.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from pytest_vlmbench.backends import Progress, Request, Response
from pytest_vlmbench.datasets import (
    Dataset,
    DatasetArgumentError,
    ImagePrep,
    PreparedImage,
    Sample,
    dataset_label,
)
from pytest_vlmbench.datasets.images import prepare_image
from pytest_vlmbench.metrics.per_request import latency_s
from pytest_vlmbench.results.models import (
    ErrorStage,
    InputMode,
    Phase,
    Record,
    RecordError,
    SceneRef,
)
from pytest_vlmbench.run.ticker import duration
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ConstraintError, ParseOutcome

TOKENS_SOURCES = ("usage", "counted", "engine")
TTFT_SOURCES = ("stream", "engine")
ConstraintKind = Literal["schema", "grammar"]


def sample_stream(dataset: Dataset, n: int) -> Iterator[tuple[Sample, int]]:
    """n samples, cycling through the dataset lazily; yields (sample, repetition)."""
    produced = 0
    repetition = 0
    while produced < n:
        before = produced
        for sample in dataset.samples():
            yield sample, repetition
            produced += 1
            if produced >= n:
                return
        if produced == before:  # before any request: a usage mistake, one line
            raise DatasetArgumentError(f"dataset {dataset_label(dataset)!r} yields no samples")
        repetition += 1


def repeat_warning(dataset: Dataset, repetitions: list[int], warmups: int) -> str | None:
    """One line when the measured requests went round the dataset more than once.

    Repeating is kept (16 requests over 5 photos is a legitimate choice), but repeated
    samples are not independent measurements, so the benchmark says so; `repetitions`
    are the measured requests' repetition numbers (0: first use, 1: ``#1``...).
    """
    last = max(repetitions, default=0)
    if last == 0:
        return None
    size = repetitions.count(0)  # the measured stream starts at the first sample
    repeated = repetitions.count(1)
    samples = "sample" if size == 1 else "samples"
    warm = f" (+{warmups} warm-up)" if warmups else ""
    times = f" up to {last} times" if last > 1 else ""
    ids = "#1" if last == 1 else f"#1 to #{last}"
    return (f"dataset {dataset_label(dataset)!r} has {size} {samples}; {len(repetitions)} "
            f"measured requests{warm} repeat {repeated} of them{times} (sample ids {ids})")


def error_of(stage: ErrorStage, exc: BaseException) -> RecordError:
    return {"stage": stage, "type": type(exc).__name__, "message": str(exc) or repr(exc)}


_FAULTS = "pytest_vlmbench.backends.openai_http.faults"


def ends_benchmark(exc: BaseException | None) -> bool:
    """A request failure no later request can avoid: the constraint itself refused
    (ConstraintError, or the openai backend's ConstraintRejected: a server that answers
    400/422 to the catalog's dialect). The runner records the request, then stops.
    ConstraintRejected is looked up only where its module is loaded: no import of the
    HTTP client in an in-process session."""
    if isinstance(exc, ConstraintError):
        return True
    rejected = getattr(sys.modules.get(_FAULTS), "ConstraintRejected", None)
    return isinstance(rejected, type) and isinstance(exc, rejected)


@dataclass(frozen=True)
class Identity:
    """What every record of a benchmark shares: run, benchmark, model, task."""

    run_id: str
    benchmark: str
    model: str
    precision: str
    backend: str
    device: str
    task: str


def blank_record(who: Identity, seq: int, phase: Phase, sample: Sample, repetition: int,
                 level: str | None = None) -> Record:
    """A record before its request: ids, and nulls where the request will write."""
    record: Record = {
        "run_id": who.run_id, "benchmark": who.benchmark, "seq": seq, "phase": phase,
        "sample_id": sample.id if repetition == 0 else f"{sample.id}#{repetition}",
        "model": who.model, "precision": who.precision, "backend": who.backend,
        "device": who.device, "task": who.task,
        "t_start_ns": None, "t_first_token_ns": None, "t_end_ns": None, "prepare_ns": None,
        "prompt_tokens": None, "completion_tokens": None, "finish_reason": None,
        "output": None, "parse": ParseOutcome.NO_OUTPUT.value, "parse_detail": None,
        "stages_ns": {}, "counts": {}, "images": [], "error": None,
    }
    if level is not None:
        record["level"] = level
    return record


def request_for(record: Record, sample: Sample, task: Task, *, input_mode: InputMode,
                prep: ImagePrep, seed: int, constraint: Any) -> Request | None:
    """The sample as a request: its image prepared (timed, outside request latency) or
    its text description; None, with the record's error set, when it cannot be."""
    images: list[PreparedImage] = []
    if sample.scene is not None:
        record["scene"] = cast("SceneRef", dict(sample.scene))
    if input_mode == "image":
        t0 = time.perf_counter_ns()
        try:
            images = list(sample.prepare(prep)) if sample.prepare is not None \
                else [prepare_image(sample, prep)]
        except Exception as exc:  # ImageError, or anything Pillow raises: a record
            record["prepare_ns"] = time.perf_counter_ns() - t0
            record["error"] = error_of("prepare", exc)
            return None
        record["prepare_ns"] = time.perf_counter_ns() - t0
        record["images"] = [{"source": image.source, "sha256": image.sha256,
                             "width": image.width, "height": image.height}
                            for image in images]
        user = task.user_text(None)
    else:
        if sample.description is None:
            record["error"] = {"stage": "prepare", "type": "DatasetError", "message":
                               f"{sample.source}: no text description for a text-only model"}
            return None
        user = task.user_text(sample.description)
    return Request(system=task.system, user=user, images=images, params=task.params,
                   seed=seed, constraint=constraint, progress=Progress())


def failed(record: Record, exc: BaseException, t_call_ns: int, t_done_ns: int) -> None:
    """A request that raised: timed by the caller from the call to the error (it is in
    the wall time, requests/s's denominator and the energy window); the retries a
    client made before giving up are kept."""
    record["t_start_ns"], record["t_end_ns"] = t_call_ns, t_done_ns
    record["error"] = error_of("request", exc)
    retries, limited = getattr(exc, "retries", None), getattr(exc, "rate_limited", None)
    if isinstance(retries, int) and isinstance(limited, int):  # the HTTP client's failures
        record["retries"], record["rate_limited"] = max(0, retries), max(0, limited)


@dataclass(frozen=True)
class ConstraintCheck:
    """Fills records from responses: the task's output check, and whether the server
    ignored the constraint. `kind` is what the requests carry (None: no constraint);
    `server`: the model is a server client (Capabilities.asynchronous)."""

    checker: Any
    kind: ConstraintKind | None
    server: bool

    @classmethod
    def of(cls, task: Task, checker: Any, constraint: Any, server: bool) -> ConstraintCheck:
        kind: ConstraintKind | None = None
        if constraint is not None:
            kind = "grammar" if task.grammar_file is not None else \
                "schema" if task.schema is not None else None
        return cls(checker, kind, server)

    def ignored(self, outcome: ParseOutcome, response: Response) -> bool:
        """The server answered a constrained request with text its constraint forbids,
        ending it itself. Only text that is not JSON at all counts: a grammar may be
        looser than the schema the check applies, and a server's schema-to-grammar
        conversion may not enforce every keyword (llama.cpp's leaves out `format` and
        `uniqueItems`), so a schema violation stays the model's."""
        if self.kind is None or response.finish_reason != "stop":
            return False
        if not (self.server or response.counts.get("constrained")):
            return False
        return outcome is ParseOutcome.INVALID_JSON

    def fill(self, record: Record, response: Response) -> None:
        """The response and the check of its output, into the record."""
        check = self.checker.check(response.text, response.finish_reason)
        outcome: str = check.outcome.value
        detail = check.detail
        if self.ignored(check.outcome, response):
            outcome = ParseOutcome.CONSTRAINT_IGNORED.value
            detail = (f"the server ignored the {self.kind} constraint: it ended the output "
                      f"itself (finish_reason stop) with text the constraint cannot produce "
                      f"({check.outcome.value}: {detail})")
        start = response.t_start_ns
        record.update({
            "t_start_ns": start, "t_first_token_ns": response.t_first_token_ns,
            "t_end_ns": response.t_end_ns, "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
            "finish_reason": response.finish_reason, "output": response.text,
            "parse": cast("Any", outcome), "parse_detail": detail,
            "stages_ns": response.stages_ns, "counts": response.counts,
        })
        chunks = getattr(response, "chunk_ns", None)
        if chunks:
            record["chunks_ns"] = [t - start for t in chunks]
        source = getattr(response, "tokens_source", None)
        if source in TOKENS_SOURCES:
            record["tokens_source"] = source
        ttft_source = getattr(response, "ttft_source", None)
        if ttft_source in TTFT_SOURCES and response.t_first_token_ns is not None:
            record["ttft_source"] = ttft_source
        retries = getattr(response, "retries", 0) or 0
        limited = getattr(response, "rate_limited", 0) or 0
        if self.server or retries or limited:
            record["retries"], record["rate_limited"] = int(retries), int(limited)
        reasons = getattr(response, "retry_reasons", None)
        if reasons:
            record["retry_reasons"] = [str(reason) for reason in reasons]


def progress_line(record: Record, index: int, total: int, eta_s: float | None) -> str:
    """The terminal line of a completed request: phase (and level), its place, its
    latency, tokens and check, or its error; the benchmark's ETA."""
    if record["error"] is not None:
        what = f"ERROR ({record['error']['stage']}): {record['error']['message']}"
        if record["t_start_ns"] is not None and record["t_end_ns"] is not None:
            what += f" after {latency_s(record):.3f} s"
    else:
        what = (f"{latency_s(record):.3f} s, {record['completion_tokens']} tokens, "
                f"{record['parse']}")
    if eta_s is not None:
        what += f", ETA {duration(eta_s)}"
    level = record.get("level")
    phase = record["phase"] if level is None else f"{record['phase']} {level}"
    return f"{phase} {index}/{total} {record['sample_id']}: {what}"
