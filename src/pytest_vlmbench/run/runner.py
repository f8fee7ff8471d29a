"""The request loop: cold, warm-up, then N measured requests, each recorded as it completes.

The loop is kept lean: the task's constraint and output checker are built once before
it; inside it there is only image preparation (timed separately, outside request
latency), the request, the check and one flushed line of JSON. A failing sample
(corrupt image, backend error) becomes an error record and the loop goes on; Ctrl-C
ends it, and the benchmark is still summarised from what completed.

Progress goes to the `progress` line writer: one line per request with the benchmark's
ETA, and, while a request runs longer than `tick_s`, a line every `tick_s` seconds with
its elapsed time and the tokens sampled so far (ticker.py; the writer must be
thread-safe).

Phases: a model whose server will load or swap it on the next request (`cold_pending`)
first gets one request of its own, phase "cold", kept out of the measured figures
(summary.cold). The measured requests are sent as the plan's load level says
(load.py): one at a time, or, on a model with asynchronous requests, all prepared first
and then driven by N workers or at drawn times on the model's event loop, each recorded
as it completes. Records are built in requests.py either way.

A video dataset (datasets/video.py) is first adapted to what the model takes (layout
"auto": several frames, or a panorama for a single-image model) and its videos decoded
and split into scenes before measuring starts, outside the power window and every
request; the entry keeps them (dataset.video) and the summary their figures
(summary.video: seconds per scene, real-time factor; metrics/video.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pytest_vlmbench.backends import LoadedModel, Request, Response
from pytest_vlmbench.datasets import (
    Dataset,
    ImagePrep,
    Sample,
    VideoSource,
    dataset_for_model,
    dataset_hash,
    dataset_notes,
    dataset_selection,
    prep_fields,
)
from pytest_vlmbench.metrics import serving, throughput
from pytest_vlmbench.metrics.per_request import latency_s
from pytest_vlmbench.metrics.roofline import roofline
from pytest_vlmbench.metrics.summary import stage_warning, summarize, warmup_warning
from pytest_vlmbench.metrics.video import video_summary
from pytest_vlmbench.power.monitor import PowerMonitor, Window
from pytest_vlmbench.results.models import (
    BenchmarkEntry,
    InputMode,
    MachineLoad,
    Phase,
    Record,
    RecordError,
    ServerSummary,
    Status,
    Summary,
    VideoRef,
)
from pytest_vlmbench.run import machine_load, memory
from pytest_vlmbench.run.load import LoadLevel, Outcome, drive, refuse_unsupported
from pytest_vlmbench.run.records import RecordWriter
from pytest_vlmbench.run.requests import (  # repeat_warning: also the runner's, as before
    ConstraintCheck,
    Identity,
    blank_record,
    ends_benchmark,
    failed,
    progress_line,
    repeat_warning,
    request_for,
    sample_stream,
)
from pytest_vlmbench.run.ticker import Ticker
from pytest_vlmbench.tasks import Task

if TYPE_CHECKING:
    from pytest_vlmbench.scoring import Scorer
from pytest_vlmbench.tasks.structured import ConstraintError


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
    load: LoadLevel | None = None
    """How the measured requests are sent (load.py); None: sequentially, and the
    entry has no `load` block (the document of a plain run is unchanged)."""
    cold: bool = True
    """Whether a model whose server must load it first (`cold_pending`) gets a cold
    request of its own; False: the first warm-up pays the load."""


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
        self._server_cpu_before: float | None = None  # the managed server's, at the start
        self.records: list[Record] = []
        self._repetitions: list[int] = []  # of the measured requests, for repeat_warning
        self._warm_latency: list[float | None] = []  # of the warm-ups, None: failed
        self.input_mode: InputMode = "image" if case.modality == "vision" else "text"
        if self.input_mode == "image":  # a video's layout "auto": what this model takes
            plan.dataset = dataset_for_model(plan.dataset, model.capabilities.max_images)
        self._video: VideoRef | None = None  # a video dataset's, read before measuring
        self._who = Identity(plan.run_id, plan.benchmark_id, case.model, case.precision,
                             case.backend, case.device, plan.task.name)
        self._check: ConstraintCheck | None = None  # made by _prepare_task
        self._server: list[Mapping[str, Any] | None] = []  # server_usage() before, after
        self._truths: dict[str, Mapping[str, Any]] = {}  # ground truth by sample id
        self._scorers: list[Scorer] = []  # the task's, resolved by _prepare_task

    # -- one request ----------------------------------------------------------------
    def _one(self, seq: int, phase: Phase, sample: Sample, repetition: int,
             constraint: Any, label: str = "") -> Record:
        """One request's record: its input prepared, the model asked, the output checked;
        a failure at any step is the record's error."""
        level = self.plan.load.label if self.plan.load and phase == "measure" else None
        record = blank_record(self._who, seq, phase, sample, repetition, level)
        request = self._request_for(record, sample, constraint)
        if request is None:  # the sample could not be prepared: the record says why
            return record
        response = self._ask(request, record, label or record["sample_id"])
        if response is not None:
            assert self._check is not None
            self._check.fill(record, response)
        return record

    def _request_for(self, record: Record, sample: Sample, constraint: Any) -> Request | None:
        plan = self.plan
        self._truths[sample.id] = sample.truth  # every mode prepares each sample here
        return request_for(record, sample, plan.task, input_mode=self.input_mode,
                           prep=plan.prep, seed=plan.seed, constraint=constraint)

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
            failed(record, exc, t_call, time.perf_counter_ns())
            self._fatal = exc if ends_benchmark(exc) else None
            return None
        finally:
            if ticker is not None:  # idle before the record is written or reported
                ticker.idle()

    _fatal: Exception | None = None
    """A request failure that ends the benchmark once its record is written."""

    def _keep(self, record: Record, repetition: int) -> None:
        """Score the record (a measured, successful one, when the task names scorers),
        write it (flushed, at once) and note it."""
        if self._scorers and record["phase"] == "measure" and record["error"] is None:
            self._score(record)
        self.writer.write(record)
        self.records.append(record)
        self._note_phase(record, repetition)

    def _score(self, record: Record) -> None:
        """The task's scorers on one output: `scores`, `chance` and `read_as` of the
        record. The output is parsed again here (cheap) rather than carried from the
        check, so the record on disk is all a scorer needs to be rerun. JSON that breaks
        the schema is still read as JSON (by the scorers' rules for its fields, where a
        missing field is a wrong answer); output that is not JSON at all is read as free
        text."""
        from pytest_vlmbench.scoring import score_record

        output = record["output"] or ""
        parsed: Any = None
        if self.plan.task.checks_output and record["parse"] in ("valid", "schema_violation"):
            with suppress(ValueError):
                parsed = json.loads(output)
        result = score_record(
            self._scorers, sample_id=record["sample_id"], output=output, parsed=parsed,
            truth=self._truths.get(record["sample_id"], {}),
            finish_reason=record["finish_reason"])
        record["scores"] = dict(result.scores)
        if result.chance:
            record["chance"] = dict(result.chance)
        if result.read_as is not None:
            record["read_as"] = result.read_as

    def _stop_if_fatal(self) -> None:
        """End the benchmark after a request failed as every later one would."""
        fatal, self._fatal = self._fatal, None
        if fatal is not None:
            raise fatal

    def _report(self, record: Record, index: int, total: int,
                eta_s: float | None = None) -> None:
        if self.progress is not None:
            self.progress(progress_line(record, index, total, eta_s))

    # -- the benchmark ----------------------------------------------------------------
    def run(self, sink: Callable[[BenchmarkEntry], None]) -> BenchmarkEntry:
        """Run cold, warm-up and measured requests; hand the benchmark entry to `sink`
        always."""
        plan = self.plan
        started = datetime.now(UTC).isoformat(timespec="seconds")
        status: Status = "complete"
        error: str | None = None
        prompt_version = plan.task.prompt_version(seed=plan.seed, input_mode=self.input_mode)
        data_hash = dataset_hash(plan.dataset, plan.prep)
        try:
            constraint = self._prepare_task()
            self._read_video()
            self._start_measuring()
            self._run_phases(constraint)
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

    # -- driven from outside, one request at a time (plugin/pipeline.py) -------------
    def open(self) -> None:
        """Start a benchmark whose requests the caller sends one at a time (`request`)
        and ends with `close`: what `run` does around its phases, for a caller that
        interleaves two benchmarks (a two-stage pipeline)."""
        plan = self.plan
        self._opened = (datetime.now(UTC).isoformat(timespec="seconds"),
                        plan.task.prompt_version(seed=plan.seed, input_mode=self.input_mode),
                        dataset_hash(plan.dataset, plan.prep))
        self._constraint = self._prepare_task()
        self._read_video()
        self._start_measuring()
        self._server.append(self._server_usage())

    def request(self, phase: Phase, sample: Sample, repetition: int = 0, *,
                fields: Mapping[str, Any] | None = None, error: RecordError | None = None,
                index: int = 0, total: int = 0) -> Record:
        """One request of an opened benchmark, recorded, written and reported; a model
        whose server loads it on the next request gets its cold request first, as in
        `run`. `fields` go into the record before it is written (a pipeline's lineage);
        with `error` nothing is sent and the record fails with it (its input could not
        be made: an upstream stage failed)."""
        if getattr(self.model, "cold_pending", False):
            if self.plan.cold:
                self._driven("cold", sample, repetition, fields, error, 1, 1)
            with suppress(AttributeError):
                self.model.cold_pending = False  # type: ignore[attr-defined]
        return self._driven(phase, sample, repetition, fields, error, index, total)

    def _driven(self, phase: Phase, sample: Sample, repetition: int,
                fields: Mapping[str, Any] | None, error: RecordError | None,
                index: int, total: int) -> Record:
        seq = len(self.records)
        if error is None:
            record = self._one(seq, phase, sample, repetition, self._constraint,
                               f"{phase} {index}/{total} {sample.id}")
        else:
            record = blank_record(self._who, seq, phase, sample, repetition)
            record["error"] = error
        record.update(fields or {})  # type: ignore[typeddict-item]
        self._keep(record, repetition)
        self._report(record, index, total)
        self._stop_if_fatal()
        return record

    def close(self, sink: Callable[[BenchmarkEntry], None], status: Status = "complete",
              error: str | None = None) -> BenchmarkEntry:
        """End an opened benchmark: its entry, handed to `sink` (as `run` does)."""
        self._server.append(self._server_usage())
        self._stop_ticker()
        started, prompt_version, data_hash = self._opened
        entry = self._entry(started, status, error, prompt_version, data_hash)
        self._hand_over(entry, sink, status)
        return entry

    _opened: tuple[str, str, str] = ("", "", "")  # open(): started, prompt version, hash
    _constraint: Any = None

    def _prepare_task(self) -> Any:
        """The task's output checker and the model's constraint, built once; the checker
        first: an unsatisfiable schema is one line of ours, not the grammar converter's.
        A load pattern the model cannot be driven with is refused here too."""
        checker = self.plan.task.checker()
        if self.plan.task.scorers:
            from pytest_vlmbench.scoring import resolve_scorers

            self._scorers = resolve_scorers(self.plan.task.scorers,
                                            text_field=self.plan.task.text_field)
        self._refuse_an_unsupported_constraint()
        self._refuse_an_unsupported_load()
        constraint = self.model.prepare(self.plan.task)
        self._check = ConstraintCheck.of(self.plan.task, checker, constraint,
                                         server=self.model.capabilities.asynchronous)
        return constraint

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

    def _refuse_an_unsupported_load(self) -> None:
        level, capabilities = self.plan.load, self.model.capabilities
        if level is not None:
            refuse_unsupported(level, self.case.backend, self.case.model,
                               asynchronous=capabilities.asynchronous, batch=capabilities.batch)

    def _read_video(self) -> None:
        """A video dataset's videos, decoded and split into scenes now (once per session:
        the dataset caches them), outside the power window and every request; kept for
        the entry's dataset.video and the summary's video figures."""
        dataset = self.plan.dataset
        if isinstance(dataset, VideoSource):
            self._video = dataset.video_ref()

    def _start_measuring(self) -> None:
        """The ticker, the power window (idle baseline, memory peak reset), CPU counters."""
        if self.progress is not None and self.tick_s is not None and self.tick_s > 0:
            self._ticker = Ticker(self.tick_s, self.progress)
            self._ticker.start()
        if self.monitor is not None:  # idle baseline (first time), memory peak reset
            self._window = self.monitor.begin()
        self._cpu_before = machine_load.read()
        self._server_cpu_before = _cpu_s(self._server_usage())

    def _run_phases(self, constraint: Any) -> None:
        """Cold, warm-up, then measured requests, each recorded and reported as it
        completes; the server's counters read around the measured ones."""
        plan = self.plan
        # Seconds per request (prepare + request + check), per phase, for the ETA.
        spent: dict[str, list[float]] = {"cold": [], "warmup": [], "measure": []}
        seq = 0
        if getattr(self.model, "cold_pending", False):
            if plan.cold:
                seq = self._sequential("cold", 1, seq, constraint, spent)
            with suppress(AttributeError):  # sent, or the first warm-up pays the load
                self.model.cold_pending = False  # type: ignore[attr-defined]
        seq = self._sequential("warmup", plan.warmup, seq, constraint, spent)
        self._server.append(self._server_usage())
        if plan.load is None or plan.load.sequential:
            self._sequential("measure", plan.samples, seq, constraint, spent)
        elif plan.load.pattern == "batch":
            self._in_batches(plan.load, seq, constraint)
        else:
            self._under_load(plan.load, seq, constraint)
        self._server.append(self._server_usage())

    def _sequential(self, phase: Phase, count: int, seq: int, constraint: Any,
                    spent: dict[str, list[float]]) -> int:
        """`count` requests of a phase, one at a time; returns the next seq."""
        for i, (sample, rep) in enumerate(sample_stream(self.plan.dataset, count), 1):
            label = f"{phase} {i}/{count} {sample.id}" + (f"#{rep}" if rep else "")
            t0 = time.perf_counter()
            record = self._one(seq, phase, sample, rep, constraint, label)
            self._keep(record, rep)
            spent[phase].append(time.perf_counter() - t0)
            seq += 1
            self._report(record, i, count, self._eta(spent, phase, count - i))
            self._stop_if_fatal()
        return seq

    def _under_load(self, level: LoadLevel, seq: int, constraint: Any) -> None:
        """The measured requests under a concurrency or rate level: all prepared first
        (images outside any latency), then driven on the model's event loop; each record
        written the moment its request completes."""
        plan, total = self.plan, self.plan.samples
        pending, done = self._prepare_all(level, total, seq, constraint)
        check = self._check
        assert check is not None
        t0 = time.perf_counter()

        def on_done(outcome: Outcome) -> None:
            nonlocal done
            record, _, rep = pending[outcome.index]
            record["scheduled_ns"] = outcome.scheduled_ns
            if outcome.response is not None:
                check.fill(record, outcome.response)
            elif outcome.error is not None:
                failed(record, outcome.error, outcome.t_call_ns, outcome.t_done_ns)
            self._keep(record, rep)
            done += 1
            left = total - done
            self._report(record, done, total,
                         (time.perf_counter() - t0) / done * left if left else None)
            if ends_benchmark(outcome.error):
                assert outcome.error is not None
                raise outcome.error

        run_async = self.model.run_async  # type: ignore[attr-defined]  # asynchronous
        run_async(drive(self.model, [r for _, r, _ in pending], level,  # type: ignore[arg-type]
                        on_done, seed=plan.seed))

    def _prepare_all(self, level: LoadLevel, total: int, seq: int,
                     constraint: Any) -> tuple[list[tuple[Record, Request, int]], int]:
        """The level's `total` measured requests, each prepared (images outside any
        latency) as (record, request, repetition); a sample that cannot be prepared is
        never sent and recorded now. Returns the prepared ones and how many were
        recorded already."""
        pending: list[tuple[Record, Request, int]] = []
        done = 0
        for sample, rep in sample_stream(self.plan.dataset, total):
            record = blank_record(self._who, seq, "measure", sample, rep, level.label)
            seq += 1
            request = self._request_for(record, sample, constraint)
            if request is None:
                self._keep(record, rep)
                done += 1
                self._report(record, done, total)
            else:
                pending.append((record, request, rep))
        return pending, done

    def _batch_total(self, level: LoadLevel) -> int:
        """The measured requests of a batch level: the samples rounded up to whole batches
        (a partial batch's throughput is not the level's)."""
        size = level.batch or 1
        return -(-self.plan.samples // size) * size

    def _in_batches(self, level: LoadLevel, seq: int, constraint: Any) -> None:
        """Offline throughput: the measured requests prepared first (images outside any
        latency), then submitted in batches of `level.batch`, each in one
        `generate_batch` call timed by us (the batch's wall time, kept in each of its
        records as `batch_ns`); every record written as its batch completes."""
        size, total = level.batch or 1, self._batch_total(level)
        pending, done = self._prepare_all(level, total, seq, constraint)
        check = self._check
        assert check is not None
        generate_batch = self.model.generate_batch  # type: ignore[attr-defined]  # batch
        for index, start in enumerate(range(0, len(pending), size)):
            group = pending[start:start + size]
            t_call = time.perf_counter_ns()
            try:
                results: list[Response | Exception] = list(
                    generate_batch([request for _, request, _ in group]))
                if len(results) != len(group):
                    raise RuntimeError(f"generate_batch returned {len(results)} results for "
                                       f"{len(group)} requests")
            except Exception as exc:  # the whole batch failed: each request says why
                results = [exc] * len(group)
            t_done = time.perf_counter_ns()
            fatal: Exception | None = None
            for (record, _, rep), result in zip(group, results, strict=True):
                record["batch"], record["batch_ns"] = index, [t_call, t_done]
                if isinstance(result, Exception):
                    failed(record, result, t_call, t_done)
                    fatal = fatal or (result if ends_benchmark(result) else None)
                else:
                    check.fill(record, result)
                self._keep(record, rep)
                done += 1
                self._report(record, done, total)
            if fatal is not None:
                raise fatal

    def _server_usage(self) -> Mapping[str, Any] | None:
        """The managed server's process-tree counters, when the model has a server."""
        try:
            usage = self.model.server_usage()  # type: ignore[attr-defined]
        except Exception:  # none, or a server gone: the summary says the counters are absent
            return None
        return usage if isinstance(usage, Mapping) else None

    def _note_phase(self, record: Record, repetition: int) -> None:
        """A warm-up's latency (None: it failed), a measured request's repetition."""
        if record["phase"] == "measure":
            self._repetitions.append(repetition)
        elif record["phase"] == "cold":
            return
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
        if phase == "cold":
            left += self.plan.warmup
            phase = "warmup"
        if phase == "warmup":
            left += self.plan.samples
        basis = spent.get("measure") or spent.get("warmup")
        if left <= 0 or not basis:
            return None
        return left * sum(basis) / len(basis)

    def _entry(self, started: str, status: Status, error: str | None, prompt_version: str,
               data_hash: str) -> BenchmarkEntry:
        """The benchmark's entry in the results document, from the records so far."""
        plan, case = self.plan, self.case
        measured = sum(r["phase"] == "measure" for r in self.records)
        cold = sum(r["phase"] == "cold" for r in self.records)
        warmups = len(self.records) - measured - cold
        summary = self._summary(status)
        server_cpu = _cpu_s(self._server_usage())
        server_cpu_s = (server_cpu - self._server_cpu_before if server_cpu is not None
                        and self._server_cpu_before is not None else None)
        machine = (machine_load.assess(self._cpu_before, machine_load.read(),
                                       server_cpu_s=server_cpu_s)
                   if self._cpu_before is not None else None)
        entry: BenchmarkEntry = {
            "id": plan.benchmark_id, "run_id": plan.run_id, "test": plan.test,
            "model": case.model, "backend": case.backend, "precision": case.precision,
            "device": case.device, "task": plan.task.name,
            "prompt_version": prompt_version, "input_mode": self.input_mode,
            "dataset": {"name": plan.dataset.name, "hash": data_hash,
                        "prep": prep_fields(plan.prep)},
            "samples": plan.samples,
            "warmup": {"requests": plan.warmup, "latency_s": self._warm_latency},
            "status": status, "error": error, "summary": summary,
            "slo": [], "slo_passed": None,
            "warnings": self._warnings(summary, machine, warmups),
            "records": {"file": self.writer.path.name, "measured": measured,
                        "warmup": warmups},
            "settings": dict(self.model.settings),
            "machine": machine,
            "started_at": started,
        }
        if cold:
            entry["records"]["cold"] = cold
        selection = dataset_selection(plan.dataset)
        if selection is not None:
            entry["dataset"]["selection"] = selection
        if plan.load is not None:
            entry["load"] = plan.load.to_json()  # type: ignore[typeddict-item]
        if self._video is not None:
            entry["dataset"]["video"] = self._video
        return entry

    def _summary(self, status: Status) -> Summary:
        """The records summarised, with energy (when metered), the roofline and the
        server's counters."""
        summary = summarize(
            self.records, checks_output=self.plan.task.checks_output,
            load_s=self.model.timings_ns.get("load", 0) / 1e9 or None,
            peak_rss=memory.peak_rss_bytes(), slo=self.plan.slo,
        )
        if self._scorers:
            from pytest_vlmbench.scoring.aggregate import quality_summary

            quality = quality_summary(self.records, text_field=self.plan.task.text_field,
                                      scorers=self._scorers)
            if quality is not None:
                summary["quality"] = quality
        if self.monitor is not None and self._window is not None:
            measured = self.monitor.finish(
                self._window, self.records, vision=self.input_mode == "image",
                interrupted=status == "interrupted",
            )
            summary["energy"], summary["memory"] = measured["energy"], measured["memory"]
            serving.drop_overlapping_energy(summary, self.records)
        capabilities = self.model.capabilities
        summary["roofline"] = roofline(
            bandwidth_gbs=self.plan.bandwidth_gbs, bandwidth_source=self.plan.bandwidth_source,
            bytes_per_token=capabilities.decode_bytes_per_token,
            bytes_source=capabilities.decode_bytes_source,
            achieved_tokens_per_s=summary["decode_tokens_per_s"],
        )
        level = self.plan.load
        if level is not None and level.pattern == "batch":
            summary["throughput"] = throughput.throughput(self.records, level.batch or 1)
            # A batch's rows share one prefill window: a row's prefill tokens over it is
            # not the prefill rate (llama-bench's pp), so the figure is left out here.
            summary["prompt_tokens_per_s"] = None
        server = self._server_summary(summary["requests"])
        if server is not None:
            summary["server"] = server
        if self._video is not None:  # a video dataset: seconds per scene, real-time factor
            level = self.plan.load
            overlapped = level.label if level is not None and not level.sequential else None
            summary["video"] = video_summary(self.records, self._video, overlapped)
        return summary

    def _server_summary(self, requests: int) -> ServerSummary | None:
        """summary.server from the counters read around the measured requests (read now
        when the benchmark ended before its measured phase did); None without a server."""
        if not hasattr(self.model, "server_usage"):
            return None
        before = self._server[0] if self._server else None
        after = self._server[1] if len(self._server) > 1 else self._server_usage()
        return serving.server_summary(before, after, requests)

    def _batch_note(self, summary: Summary) -> str | None:
        """Said of a batch level: samples rounded up to whole batches, short batches left
        out of the statistics (requests that could not be prepared were never sent), and
        the prefill rate left out."""
        level = self.plan.load
        if level is None or level.pattern != "batch":
            return None
        size, total = level.batch or 1, self._batch_total(level)
        notes = ["prompt tokens/s is left out at a batch level (its rows share one prefill)"]
        if total != self.plan.samples:
            notes.append(_batch_note_text(self.plan.samples, total, size))
        block = summary.get("throughput")
        short = block["partial_batches"] if block else 0
        if short:
            notes.append(f"{short} batch{'es' if short > 1 else ''} of fewer than {size} "
                         "requests (samples that could not be prepared were never sent) "
                         "left out of the throughput statistics")
        return "; ".join(notes)

    def _warnings(self, summary: Summary, machine: MachineLoad | None,
                  warmups: int) -> list[str]:
        """What a reader of the figures should know: dataset notes, repeated samples, the
        model's own warnings, a cold warm-up, stage sums, a busy machine, failures, an
        ignored constraint, retries."""
        plan, records = self.plan, self.records
        notes = [
            *dataset_notes(plan.dataset),  # e.g. files a folder dataset skipped
            repeat_warning(plan.dataset, self._repetitions, warmups),
            *getattr(self.model, "warnings", []),  # e.g. a GPU device kept on the CPU
            warmup_warning(records), stage_warning(records),
            machine["note"] if machine and machine["busy"] else None,
            f"{summary['failed']} of {summary['requests']} requests failed"
            if summary["failed"] else None,
            serving.ignored_warning(summary, self.model.settings.get("dialect")),
            serving.retry_warning(summary, records),
            self._batch_note(summary),
        ]
        return [note for note in notes if note]


def _batch_note_text(samples: int, total: int, size: int) -> str:
    return (f"{samples} samples rounded up to {total} measured requests: whole batches of "
            f"{size} (offline throughput is measured per full batch)")


def _cpu_s(usage: Mapping[str, Any] | None) -> float | None:
    """A server usage reading's CPU seconds, None when there is none."""
    value = None if usage is None else usage.get("cpu_s")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None
