"""The request loop: warm-up, then N measured requests, each recorded as it completes.

The loop is kept lean: the task's constraint and output checker are built once before
it; inside it there is only image preparation (timed separately, outside request
latency), the request, the check and one flushed line of JSON. A failing sample
(corrupt image, backend error) becomes an error record and the loop goes on; Ctrl-C
ends it, and the benchmark is still summarised from what completed.

Progress goes to the `progress` line writer: one line per request with the benchmark's
ETA, and, while a request runs longer than `tick_s`, a line every `tick_s` seconds with
its elapsed time and the tokens sampled so far (ticker.py; the writer must be
thread-safe).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pytest_vlmbench.backends import LoadedModel, Progress, Request, Response
from pytest_vlmbench.datasets import (
    Dataset,
    DatasetArgumentError,
    ImagePrep,
    Sample,
    dataset_hash,
    dataset_label,
    dataset_notes,
)
from pytest_vlmbench.datasets.images import prepare_image
from pytest_vlmbench.metrics.per_request import latency_s
from pytest_vlmbench.metrics.roofline import roofline
from pytest_vlmbench.metrics.summary import stage_warning, summarize, warmup_warning
from pytest_vlmbench.power.monitor import PowerMonitor, Window
from pytest_vlmbench.results.models import (
    BenchmarkEntry,
    ErrorStage,
    InputMode,
    MachineLoad,
    Phase,
    Record,
    RecordError,
    Status,
    Summary,
)
from pytest_vlmbench.run import machine_load, memory
from pytest_vlmbench.run.records import RecordWriter
from pytest_vlmbench.run.ticker import Ticker, duration
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ConstraintError, ParseOutcome


@dataclass(frozen=True)
class ModelCase:
    """One cell of the matrix: which model, at which precision, on which device."""

    model: str
    precision: str
    device: str
    backend: str
    modality: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.precision}-{self.device}"


@dataclass
class BenchmarkPlan:
    """What one benchmark runs; the fixtures fill it from options and markers."""

    benchmark_id: str
    test: str
    task: Task
    dataset: Dataset
    prep: ImagePrep
    samples: int
    warmup: int
    seed: int
    run_id: str
    slo: dict[str, float] = field(default_factory=dict)
    bandwidth_gbs: float | None = None  # peak memory bandwidth, for the roofline
    bandwidth_source: str = "unknown"


def _stream(dataset: Dataset, n: int) -> Iterator[tuple[Sample, int]]:
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


def _error(stage: ErrorStage, exc: BaseException) -> RecordError:
    return {"stage": stage, "type": type(exc).__name__, "message": str(exc) or repr(exc)}


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


class Runner:
    """Runs one benchmark plan against one loaded model and writes its records."""

    def __init__(self, case: ModelCase, model: LoadedModel, plan: BenchmarkPlan,
                 writer: RecordWriter, progress: Callable[[str], None] | None = None,
                 monitor: PowerMonitor | None = None, tick_s: float | None = 5.0) -> None:
        """`progress` writes one terminal line (it must be thread-safe: the ticker of a
        long request calls it from another thread); `tick_s` is how long a request runs
        before its first "running" line and between them (None: never)."""
        self.case, self.model, self.plan, self.writer = case, model, plan, writer
        self.progress, self.monitor, self.tick_s = progress, monitor, tick_s
        self._ticker: Ticker | None = None  # while run() runs, with progress and tick_s
        self._window: Window | None = None
        self._cpu_before: machine_load.CpuTimes | None = None
        self.records: list[Record] = []
        self._repetitions: list[int] = []  # of the measured requests, for repeat_warning
        self._warm_latency: list[float | None] = []  # of the warm-ups, None: failed
        self.input_mode: InputMode = "image" if case.modality == "vision" else "text"

    # -- one request ----------------------------------------------------------------
    def _one(self, seq: int, phase: Phase, sample: Sample, repetition: int,
             constraint: Any, checker: Any, label: str = "") -> Record:
        """One request's record: its input prepared, the model asked, the output checked;
        a failure at any step is the record's error."""
        record = self._blank_record(seq, phase, sample, repetition)
        request = self._request_for(record, sample, constraint)
        if request is None:  # the sample could not be prepared: the record says why
            return record
        response = self._ask(request, record, label or record["sample_id"])
        if response is not None:
            self._fill(record, response, checker)
        return record

    def _blank_record(self, seq: int, phase: Phase, sample: Sample,
                      repetition: int) -> Record:
        plan, case = self.plan, self.case
        sample_id = sample.id if repetition == 0 else f"{sample.id}#{repetition}"
        record: Record = {
            "run_id": plan.run_id, "benchmark": plan.benchmark_id, "seq": seq,
            "phase": phase, "sample_id": sample_id, "model": case.model,
            "precision": case.precision, "backend": case.backend, "device": case.device,
            "task": plan.task.name,
            "t_start_ns": None, "t_first_token_ns": None, "t_end_ns": None, "prepare_ns": None,
            "prompt_tokens": None, "completion_tokens": None, "finish_reason": None,
            "output": None, "parse": ParseOutcome.NO_OUTPUT.value, "parse_detail": None,
            "stages_ns": {}, "counts": {}, "images": [], "error": None,
        }
        return record

    def _request_for(self, record: Record, sample: Sample,
                     constraint: Any) -> Request | None:
        """The sample as a request: its image prepared (timed, outside request latency)
        or its text description; None, with the record's error set, when it cannot be."""
        task = self.plan.task
        images = []
        if self.input_mode == "image":
            t0 = time.perf_counter_ns()
            try:
                prepared = prepare_image(sample, self.plan.prep)
            except Exception as exc:  # ImageError, or anything Pillow raises: a record
                record["prepare_ns"] = time.perf_counter_ns() - t0
                record["error"] = _error("prepare", exc)
                return None
            record["prepare_ns"] = time.perf_counter_ns() - t0
            images.append(prepared)
            record["images"] = [{"source": prepared.source, "sha256": prepared.sha256,
                                 "width": prepared.width, "height": prepared.height}]
            user = task.user_text(None)
        else:
            if sample.description is None:
                record["error"] = {"stage": "prepare", "type": "DatasetError", "message":
                                   f"{sample.source}: no text description for a text-only model"}
                return None
            user = task.user_text(sample.description)
        return Request(
            system=task.system, user=user, images=images, params=task.params,
            seed=self.plan.seed, constraint=constraint, progress=Progress(),
        )

    def _ask(self, request: Request, record: Record, label: str) -> Response | None:
        """The model's response, the ticker watching it; None, with the record's error
        and times set, when the request failed."""
        ticker = self._ticker
        if ticker is not None and request.progress is not None:
            ticker.watch(label, request.progress)
        t_call = time.perf_counter_ns()
        try:
            return self.model.generate(request)
        except Exception as exc:  # a failed request is a record, not the end of the run
            # Timed by us from the call to the error: it is in the wall time, the rate's
            # denominator and the energy window (summary.METHODS["failures"]).
            record["t_start_ns"], record["t_end_ns"] = t_call, time.perf_counter_ns()
            record["error"] = _error("request", exc)
            return None
        finally:
            if ticker is not None:  # idle before the record is written or reported
                ticker.idle()

    @staticmethod
    def _fill(record: Record, response: Response, checker: Any) -> None:
        """The response and the check of its output, into the record."""
        check = checker.check(response.text, response.finish_reason)
        record.update({
            "t_start_ns": response.t_start_ns, "t_first_token_ns": response.t_first_token_ns,
            "t_end_ns": response.t_end_ns, "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
            "finish_reason": response.finish_reason, "output": response.text,
            "parse": check.outcome.value, "parse_detail": check.detail,
            "stages_ns": response.stages_ns, "counts": response.counts,
        })

    def _report(self, record: Record, index: int, total: int,
                eta_s: float | None = None) -> None:
        if self.progress is None:
            return
        if record["error"] is not None:
            what = f"ERROR ({record['error']['stage']}): {record['error']['message']}"
            if record["t_start_ns"] is not None and record["t_end_ns"] is not None:
                what += f" after {latency_s(record):.3f} s"
        else:
            what = (f"{latency_s(record):.3f} s, {record['completion_tokens']} tokens, "
                    f"{record['parse']}")
        if eta_s is not None:
            what += f", ETA {duration(eta_s)}"
        self.progress(f"{record['phase']} {index}/{total} {record['sample_id']}: {what}")

    # -- the benchmark ----------------------------------------------------------------
    def run(self, sink: Callable[[BenchmarkEntry], None]) -> BenchmarkEntry:
        """Run warm-up and measured requests; hand the benchmark entry to `sink` always."""
        plan = self.plan
        started = datetime.now(UTC).isoformat(timespec="seconds")
        status: Status = "complete"
        error: str | None = None
        prompt_version = plan.task.prompt_version(seed=plan.seed, input_mode=self.input_mode)
        data_hash = dataset_hash(plan.dataset, plan.prep)
        try:
            checker, constraint = self._prepare_task()
            self._start_measuring()
            self._run_phases(checker, constraint)
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user (KeyboardInterrupt)"
            raise
        except Exception as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._stop_ticker()
            entry = self._entry(started, status, error, prompt_version, data_hash)
            self._hand_over(entry, sink, status)
        return entry

    def _prepare_task(self) -> tuple[Any, Any]:
        """The task's output checker and the model's constraint, built once; the checker
        first: an unsatisfiable schema is one line of ours, not the grammar converter's."""
        checker = self.plan.task.checker()
        self._refuse_an_unsupported_constraint()
        return checker, self.model.prepare(self.plan.task)

    def _refuse_an_unsupported_constraint(self) -> None:
        """A task that constrains generation on a model that cannot: one line, before any
        request (its outputs would be judged against a constraint never applied)."""
        task, capabilities = self.plan.task, self.model.capabilities
        if task.grammar_file is not None:  # the grammar constrains; a schema only checks
            kind, able = "a GBNF grammar", capabilities.grammar
        elif task.schema is not None:
            kind, able = "a JSON schema", capabilities.json_schema
        else:
            return
        if not able:
            raise ConstraintError(
                f"task {task.name!r} constrains generation with {kind}; backend "
                f"{self.case.backend!r} cannot (model {self.case.model!r}, its capabilities)"
            )

    def _start_measuring(self) -> None:
        """The ticker, the power window (idle baseline, memory peak reset), CPU counters."""
        if self.progress is not None and self.tick_s is not None and self.tick_s > 0:
            self._ticker = Ticker(self.tick_s, self.progress)
            self._ticker.start()
        if self.monitor is not None:  # idle baseline (first time), memory peak reset
            self._window = self.monitor.begin()
        self._cpu_before = machine_load.read()

    def _run_phases(self, checker: Any, constraint: Any) -> None:
        """Warm-up then measured requests, each recorded and reported as it completes."""
        plan = self.plan
        seq = 0
        # Seconds per request (prepare + request + check), per phase, for the ETA.
        spent: dict[str, list[float]] = {"warmup": [], "measure": []}
        phases: tuple[tuple[Phase, int], ...] = (("warmup", plan.warmup), ("measure", plan.samples))
        for phase, count in phases:
            for i, (sample, rep) in enumerate(_stream(plan.dataset, count), 1):
                label = f"{phase} {i}/{count} {sample.id}" + (f"#{rep}" if rep else "")
                t0 = time.perf_counter()
                record = self._one(seq, phase, sample, rep, constraint, checker, label)
                self.writer.write(record)
                self.records.append(record)
                spent[phase].append(time.perf_counter() - t0)
                seq += 1
                self._note_phase(record, rep)
                self._report(record, i, count, self._eta(spent, phase, count - i))

    def _note_phase(self, record: Record, repetition: int) -> None:
        """A warm-up's latency (None: it failed), a measured request's repetition."""
        if record["phase"] == "measure":
            self._repetitions.append(repetition)
        elif record["error"] is None:
            self._warm_latency.append(latency_s(record))
        else:
            self._warm_latency.append(None)

    def _stop_ticker(self) -> None:  # its thread lives as long as the benchmark runs
        if self._ticker is not None:
            self._ticker.close()
            self._ticker = None

    def _hand_over(self, entry: BenchmarkEntry, sink: Callable[[BenchmarkEntry], None],
                   status: Status) -> None:
        """`sink(entry)`; when something (Ctrl-C, an error) is already propagating, a
        failing sink is said on stderr and does not replace it."""
        try:
            sink(entry)
        except Exception as exc:
            if status == "complete":
                raise
            print(f"pytest-vlmbench: could not record {self.plan.benchmark_id}: {exc}",
                  file=sys.__stderr__)

    def _eta(self, spent: dict[str, list[float]], phase: str, left: int) -> float | None:
        """Seconds until this benchmark ends: requests left x the mean so far (of the
        measured requests once there are some: the cold first warm-up would inflate it)."""
        if phase == "warmup":
            left += self.plan.samples
        if left <= 0:
            return None
        basis = spent["measure"] or spent["warmup"]
        return left * sum(basis) / len(basis)

    def _entry(self, started: str, status: Status, error: str | None, prompt_version: str,
               data_hash: str) -> BenchmarkEntry:
        """The benchmark's entry in the results document, from the records so far."""
        plan, case = self.plan, self.case
        measured = sum(r["phase"] == "measure" for r in self.records)
        summary = self._summary(status)
        machine = (machine_load.assess(self._cpu_before, machine_load.read())
                   if self._cpu_before is not None else None)
        entry: BenchmarkEntry = {
            "id": plan.benchmark_id, "run_id": plan.run_id, "test": plan.test,
            "model": case.model, "backend": case.backend, "precision": case.precision,
            "device": case.device, "task": plan.task.name,
            "prompt_version": prompt_version, "input_mode": self.input_mode,
            "dataset": {"name": plan.dataset.name, "hash": data_hash, "prep": {
                "long_edge": plan.prep.long_edge, "jpeg_quality": plan.prep.jpeg_quality}},
            "samples": plan.samples,
            "warmup": {"requests": plan.warmup, "latency_s": self._warm_latency},
            "status": status, "error": error, "summary": summary,
            "slo": [], "slo_passed": None,
            "warnings": self._warnings(summary, machine, len(self.records) - measured),
            "records": {"file": self.writer.path.name, "measured": measured,
                        "warmup": len(self.records) - measured},
            "settings": dict(self.model.settings),
            "machine": machine,
            "started_at": started,
        }
        return entry

    def _summary(self, status: Status) -> Summary:
        """The records summarised, with energy (when metered) and the roofline."""
        summary = summarize(
            self.records, checks_output=self.plan.task.checks_output,
            load_s=self.model.timings_ns.get("load", 0) / 1e9 or None,
            peak_rss=memory.peak_rss_bytes(),
        )
        if self.monitor is not None and self._window is not None:
            measured = self.monitor.finish(
                self._window, self.records, vision=self.input_mode == "image",
                interrupted=status == "interrupted",
            )
            summary["energy"], summary["memory"] = measured["energy"], measured["memory"]
        capabilities = self.model.capabilities
        summary["roofline"] = roofline(
            bandwidth_gbs=self.plan.bandwidth_gbs, bandwidth_source=self.plan.bandwidth_source,
            bytes_per_token=capabilities.decode_bytes_per_token,
            bytes_source=capabilities.decode_bytes_source,
            achieved_tokens_per_s=summary["decode_tokens_per_s"],
        )
        return summary

    def _warnings(self, summary: Summary, machine: MachineLoad | None,
                  warmups: int) -> list[str]:
        """What a reader of the figures should know: dataset notes, repeated samples, the
        model's own warnings, a cold warm-up, stage sums, a busy machine, failures."""
        plan, records = self.plan, self.records
        notes = [
            *dataset_notes(plan.dataset),  # e.g. files a folder dataset skipped
            repeat_warning(plan.dataset, self._repetitions, warmups),
            *getattr(self.model, "warnings", []),  # e.g. a GPU device kept on the CPU
            warmup_warning(records), stage_warning(records),
            machine["note"] if machine and machine["busy"] else None,
            f"{summary['failed']} of {summary['requests']} requests failed"
            if summary["failed"] else None,
        ]
        return [note for note in notes if note]
